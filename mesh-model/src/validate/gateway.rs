//! Gateway rules (`ValidateGateway`).

use std::collections::BTreeSet;

use crate::networking::gateway::{Gateway, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol};
use crate::validate::Report;
use crate::validate::common::{
    SERVER_PROTOCOLS, check_port, check_wildcard_host, is_dns1123_label, is_partial_wildcard,
    is_protocol,
};

/// Cipher suite names Envoy (BoringSSL) accepts.
const CIPHERS: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "PSK-AES128-CBC-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
];

pub(crate) fn validate(gw: &Gateway, r: &mut Report) {
    let spec = &gw.spec;
    if spec.servers.is_empty() {
        r.error("spec.servers", "a Gateway must have at least one server");
    }
    let mut port_names = BTreeSet::new();
    let mut server_names = BTreeSet::new();
    for (i, s) in spec.servers.iter().enumerate() {
        let at = format!("spec.servers[{i}]");
        validate_server(s, &at, r);
        if !s.port.name.is_empty() && !port_names.insert(s.port.name.as_str()) {
            r.error(
                format!("{at}.port.name"),
                format!(
                    "port name {:?} is used by more than one server",
                    s.port.name
                ),
            );
        }
        if let Some(n) = &s.name
            && !server_names.insert(n.as_str())
        {
            r.error(
                format!("{at}.name"),
                format!("server name {n:?} is not unique"),
            );
        }
    }
}

fn validate_server(s: &Server, at: &str, r: &mut Report) {
    let unix_bind = s.bind.as_deref().is_some_and(|b| b.starts_with("unix://"));
    if s.port.number == 0 && unix_bind {
        // A unix socket server has no port.
    } else {
        r.check(format!("{at}.port.number"), check_port(s.port.number));
    }
    if unix_bind && s.port.number != 0 {
        r.error(
            format!("{at}.port.number"),
            "a server bound to a unix socket must use port 0",
        );
    }
    if s.port.protocol.is_empty() {
        r.error(format!("{at}.port.protocol"), "protocol is required");
    } else if !is_protocol(&s.port.protocol, SERVER_PROTOCOLS) {
        r.error(
            format!("{at}.port.protocol"),
            format!(
                "unknown protocol {:?}; expected one of {}",
                s.port.protocol,
                SERVER_PROTOCOLS.join(", ")
            ),
        );
    }
    if s.port.name.is_empty() {
        r.error(format!("{at}.port.name"), "port name is required");
    }
    if s.port.target_port.is_some() {
        r.error(
            format!("{at}.port.targetPort"),
            "targetPort is not supported on Gateway servers",
        );
    }
    if let Some(b) = &s.bind
        && !unix_bind
        && b.parse::<std::net::IpAddr>().is_err()
    {
        r.error(
            format!("{at}.bind"),
            format!("bind {b:?} must be an IP address or unix:// socket"),
        );
    }
    if s.hosts.is_empty() {
        r.error(format!("{at}.hosts"), "at least one host is required");
    }
    for (i, h) in s.hosts.iter().enumerate() {
        let hat = format!("{at}.hosts[{i}]");
        let (ns, dns) = match h.split_once('/') {
            Some((ns, dns)) => (Some(ns), dns),
            None => (None, h.as_str()),
        };
        if let Some(ns) = ns
            && ns != "*"
            && ns != "."
            && !is_dns1123_label(ns)
        {
            r.error(
                &hat,
                format!("invalid namespace {ns:?} in host {h:?}: must be *, . or a namespace"),
            );
        }
        if dns.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        if is_partial_wildcard(dns) {
            r.error(
                &hat,
                format!("host {dns:?}: partial wildcards are not allowed; use *.domain"),
            );
        } else {
            r.check(&hat, check_wildcard_host(dns).map(|_| ()));
        }
    }
    let proto = s.port.protocol.to_ascii_uppercase();
    match (&s.tls, proto.as_str()) {
        (None, "HTTPS" | "TLS") => {
            r.error(
                format!("{at}.tls"),
                format!("a server with protocol {proto} must have tls settings"),
            );
        }
        (Some(tls), "HTTP") => {
            let only_redirect = ServerTlsSettings {
                https_redirect: tls.https_redirect,
                ..Default::default()
            };
            if tls != &only_redirect {
                r.error(
                    format!("{at}.tls"),
                    "an HTTP server may only set tls.httpsRedirect",
                );
            }
        }
        (Some(tls), "HTTPS" | "TLS") => validate_server_tls(tls, &format!("{at}.tls"), r),
        (Some(tls), _) => {
            if tls.https_redirect {
                r.warn(
                    format!("{at}.tls.httpsRedirect"),
                    "httpsRedirect only has an effect on HTTP servers",
                );
            }
            r.error(
                format!("{at}.tls"),
                format!("tls settings are only allowed on HTTPS and TLS servers, not {proto}"),
            );
        }
        (None, _) => {}
    }
}

fn validate_server_tls(tls: &ServerTlsSettings, at: &str, r: &mut Report) {
    let has_files = tls.server_certificate.is_some()
        || tls.private_key.is_some()
        || tls.ca_certificates.is_some();
    let has_credential = tls.credential_name.is_some() || !tls.credential_names.is_empty();
    let sources = [
        tls.server_certificate.is_some() || tls.private_key.is_some(),
        tls.credential_name.is_some(),
        !tls.credential_names.is_empty(),
        !tls.tls_certificates.is_empty(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources > 1 {
        r.error(
            at,
            "only one certificate source may be used: serverCertificate/privateKey, credentialName, credentialNames or tlsCertificates",
        );
    }
    if tls.credential_names.len() > 2 {
        r.error(
            format!("{at}.credentialNames"),
            "at most 2 credential names are allowed",
        );
    }
    if tls.tls_certificates.len() > 2 {
        r.error(
            format!("{at}.tlsCertificates"),
            "at most 2 certificates are allowed",
        );
    }
    for (i, c) in tls.tls_certificates.iter().enumerate() {
        if c.server_certificate.is_none() || c.private_key.is_none() {
            r.error(
                format!("{at}.tlsCertificates[{i}]"),
                "serverCertificate and privateKey are required",
            );
        }
    }
    match tls.mode {
        ServerTlsMode::IstioMutual => {
            if has_files
                || has_credential
                || !tls.tls_certificates.is_empty()
                || tls.ca_cert_credential_name.is_some()
            {
                r.error(at, "ISTIO_MUTUAL may not set serverCertificate, privateKey, caCertificates or credential names");
            }
        }
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if !has_credential && tls.tls_certificates.is_empty() {
                if tls.server_certificate.is_none() {
                    r.error(
                        format!("{at}.serverCertificate"),
                        format!(
                            "{} mode requires serverCertificate (or credentialName)",
                            tls.mode
                        ),
                    );
                }
                if tls.private_key.is_none() {
                    r.error(
                        format!("{at}.privateKey"),
                        format!("{} mode requires privateKey (or credentialName)", tls.mode),
                    );
                }
                if tls.mode != ServerTlsMode::Simple
                    && tls.ca_certificates.is_none()
                    && tls.ca_cert_credential_name.is_none()
                {
                    r.error(
                        format!("{at}.caCertificates"),
                        format!(
                            "{} mode requires caCertificates (or credentialName)",
                            tls.mode
                        ),
                    );
                }
            }
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            if has_files || has_credential || !tls.tls_certificates.is_empty() {
                r.warn(at, format!("certificates are ignored in {} mode", tls.mode));
            }
        }
    }
    if tls.ca_crl.is_some() {
        if tls.credential_name.is_some() || !tls.credential_names.is_empty() {
            r.error(
                format!("{at}.caCrl"),
                "caCrl cannot be combined with credentialName",
            );
        }
        if tls.mode == ServerTlsMode::Simple {
            r.error(format!("{at}.caCrl"), "caCrl is not allowed in SIMPLE mode");
        }
    }
    let below_12 = matches!(
        tls.min_protocol_version,
        Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1)
    );
    if below_12 && tls.cipher_suites.is_empty() {
        r.warn(
            format!("{at}.minProtocolVersion"),
            "a minimum TLS version below 1.2 with the default cipher list allows weak ciphers",
        );
    }
    if let (Some(min), Some(max)) = (tls.min_protocol_version, tls.max_protocol_version)
        && min != TlsProtocol::TlsAuto
        && max != TlsProtocol::TlsAuto
        && min > max
    {
        r.error(
            format!("{at}.minProtocolVersion"),
            "minProtocolVersion is above maxProtocolVersion",
        );
    }
    for (i, c) in tls.cipher_suites.iter().enumerate() {
        let name = c.trim_start_matches('[').trim_end_matches(']');
        if name.split('|').any(|n| !CIPHERS.contains(&n)) {
            r.warn(
                format!("{at}.cipherSuites[{i}]"),
                format!("unknown cipher suite {c:?}; it will be ignored"),
            );
        }
    }
}
