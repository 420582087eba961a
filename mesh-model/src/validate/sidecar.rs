//! Sidecar rules (`ValidateSidecar`).

use std::collections::BTreeSet;

use crate::networking::gateway::{Port, ServerTlsMode};
use crate::networking::sidecar::{CaptureMode, OutboundTrafficPolicyMode, Sidecar};
use crate::validate::Report;
use crate::validate::common::{
    SERVER_PROTOCOLS, check_port, check_selector, check_wildcard_host, is_dns1123_label,
    is_partial_wildcard, is_protocol,
};
use crate::validate::virtual_service::validate_destination;

pub(crate) fn validate(sc: &Sidecar, r: &mut Report) {
    let spec = &sc.spec;
    if spec.workload_selector.is_none()
        && spec.ingress.is_empty()
        && spec.egress.is_empty()
        && spec.inbound_connection_pool.is_none()
        && spec.outbound_traffic_policy.is_none()
    {
        r.error("spec", "a Sidecar must set at least one of workloadSelector, ingress, egress, inboundConnectionPool or outboundTrafficPolicy");
    }
    if let Some(sel) = &spec.workload_selector {
        check_selector(&sel.labels, "spec.workloadSelector.labels", r);
    }

    let mut ingress_ports = BTreeSet::new();
    for (i, ing) in spec.ingress.iter().enumerate() {
        let at = format!("spec.ingress[{i}]");
        let unix = ing
            .bind
            .as_deref()
            .is_some_and(|b| b.starts_with("unix://"));
        validate_port(&ing.port, &format!("{at}.port"), unix, r);
        if !ingress_ports.insert(ing.port.number) {
            r.error(
                format!("{at}.port.number"),
                format!(
                    "ingress port {} is declared more than once",
                    ing.port.number
                ),
            );
        }
        validate_bind(ing.bind.as_deref(), &format!("{at}.bind"), r);
        if let Some(ep) = &ing.default_endpoint {
            check_default_endpoint(ep, &format!("{at}.defaultEndpoint"), r);
        }
        if let Some(tls) = &ing.tls {
            let tat = format!("{at}.tls");
            if !matches!(tls.mode, ServerTlsMode::Simple | ServerTlsMode::Mutual) {
                r.error(
                    format!("{tat}.mode"),
                    format!(
                        "ingress TLS mode must be SIMPLE or MUTUAL, not {}",
                        tls.mode
                    ),
                );
            }
            if tls.credential_name.is_some() || !tls.credential_names.is_empty() {
                r.error(
                    format!("{tat}.credentialName"),
                    "credentialName is not supported on Sidecar ingress",
                );
            }
            if !tls.subject_alt_names.is_empty() {
                r.error(
                    format!("{tat}.subjectAltNames"),
                    "subjectAltNames is not supported on Sidecar ingress",
                );
            }
            if tls.https_redirect {
                r.error(
                    format!("{tat}.httpsRedirect"),
                    "httpsRedirect is not supported on Sidecar ingress",
                );
            }
            if tls.server_certificate.is_none() || tls.private_key.is_none() {
                r.error(&tat, "serverCertificate and privateKey are required");
            }
            if tls.mode == ServerTlsMode::Mutual && tls.ca_certificates.is_none() {
                r.error(
                    format!("{tat}.caCertificates"),
                    "MUTUAL requires caCertificates",
                );
            }
        }
    }

    let mut catch_all_seen = false;
    let mut egress_ports = BTreeSet::new();
    for (i, eg) in spec.egress.iter().enumerate() {
        let at = format!("spec.egress[{i}]");
        let unix = eg.bind.as_deref().is_some_and(|b| b.starts_with("unix://"));
        match &eg.port {
            None => {
                if catch_all_seen {
                    r.error(&at, "at most one egress listener may omit the port");
                }
                catch_all_seen = true;
            }
            Some(p) => {
                if catch_all_seen {
                    r.error(
                        &at,
                        "the egress listener without a port must be the last one",
                    );
                }
                if p.number == 0 {
                    if !unix {
                        r.error(
                            format!("{at}.port.number"),
                            "an egress listener with port 0 must bind a unix:// socket",
                        );
                    }
                    if !matches!(eg.capture_mode, CaptureMode::Default | CaptureMode::None) {
                        r.error(
                            format!("{at}.captureMode"),
                            "a unix socket listener needs captureMode DEFAULT or NONE",
                        );
                    }
                }
                validate_port(p, &format!("{at}.port"), unix, r);
                let key = (eg.bind.clone().unwrap_or_default(), p.number);
                if !egress_ports.insert(key) {
                    r.error(
                        format!("{at}.port.number"),
                        format!(
                            "egress port {} is declared more than once for the same bind",
                            p.number
                        ),
                    );
                }
            }
        }
        validate_bind(eg.bind.as_deref(), &format!("{at}.bind"), r);
        if eg.hosts.is_empty() {
            r.error(format!("{at}.hosts"), "egress hosts are required");
        }
        let mut seen = BTreeSet::new();
        let has_all = eg.hosts.iter().any(|h| h == "*/*");
        for (j, h) in eg.hosts.iter().enumerate() {
            let hat = format!("{at}.hosts[{j}]");
            if !seen.insert(h.as_str()) {
                r.warn(&hat, format!("duplicate egress host {h:?}"));
            }
            if has_all && h != "*/*" {
                r.warn(&hat, format!("{h:?} is redundant next to \"*/*\""));
            }
            check_egress_host(h, &hat, r);
        }
    }

    if let Some(otp) = &spec.outbound_traffic_policy
        && let Some(proxy) = &otp.egress_proxy
    {
        if otp.mode != OutboundTrafficPolicyMode::AllowAny {
            r.error(
                "spec.outboundTrafficPolicy.egressProxy",
                "egressProxy is only allowed with mode ALLOW_ANY",
            );
        }
        validate_destination(proxy, "spec.outboundTrafficPolicy.egressProxy", r);
        if proxy.port.is_none() {
            r.error(
                "spec.outboundTrafficPolicy.egressProxy.port",
                "egressProxy port is required",
            );
        }
    }
}

fn validate_port(p: &Port, at: &str, unix: bool, r: &mut Report) {
    if !(unix && p.number == 0) {
        r.check(format!("{at}.number"), check_port(p.number));
    }
    if !p.protocol.is_empty() && !is_protocol(&p.protocol, SERVER_PROTOCOLS) {
        r.error(
            format!("{at}.protocol"),
            format!("unknown protocol {:?}", p.protocol),
        );
    }
    if p.target_port.is_some() {
        r.error(
            format!("{at}.targetPort"),
            "targetPort is not supported on Sidecar listeners",
        );
    }
}

fn validate_bind(bind: Option<&str>, at: &str, r: &mut Report) {
    if let Some(b) = bind
        && !b.starts_with("unix://")
        && b.parse::<std::net::IpAddr>().is_err()
    {
        r.error(
            at,
            format!("bind {b:?} must be an IP address or unix:// socket"),
        );
    }
}

fn check_default_endpoint(ep: &str, at: &str, r: &mut Report) {
    if ep.starts_with("unix://") {
        if ep.len() == "unix://".len() {
            r.error(at, "unix:// endpoint needs a path");
        }
        return;
    }
    let ok = ["127.0.0.1:", "0.0.0.0:", "[::1]:", "[::]:"]
        .iter()
        .find_map(|prefix| ep.strip_prefix(prefix))
        .and_then(|port| port.parse::<u32>().ok())
        .is_some_and(|p| check_port(p).is_ok());
    if !ok {
        r.error(at, format!("defaultEndpoint {ep:?} must be 127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix://PATH"));
    }
}

fn check_egress_host(h: &str, at: &str, r: &mut Report) {
    let h = h.strip_prefix('~').unwrap_or(h);
    let Some((ns, dns)) = h.split_once('/') else {
        r.error(
            at,
            format!("egress host {h:?} must be namespace/dnsName (short names are not allowed)"),
        );
        return;
    };
    if ns != "*" && ns != "." && ns != "~" && !is_dns1123_label(ns) {
        r.error(
            at,
            format!("invalid namespace {ns:?}: must be *, ., ~ or a namespace"),
        );
    }
    if dns.is_empty() {
        r.error(at, "egress host name must not be empty");
    } else if is_partial_wildcard(dns) {
        r.error(
            at,
            format!("host {dns:?}: partial wildcards are not allowed"),
        );
    } else if dns.parse::<std::net::IpAddr>().is_err() {
        r.check(at, check_wildcard_host(dns).map(|_| ()));
    }
}
