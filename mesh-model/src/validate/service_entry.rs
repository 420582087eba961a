//! ServiceEntry rules (`ValidateServiceEntry`).

use std::collections::BTreeSet;

use crate::networking::service_entry::{Resolution, ServiceEntry};
use crate::validate::Report;
use crate::validate::common::{
    SE_PROTOCOLS, check_export_to, check_ip_or_cidr, check_port, check_selector,
    check_wildcard_host, is_partial_wildcard, is_protocol,
};
use crate::validate::workload;

pub(crate) fn validate(se: &ServiceEntry, r: &mut Report) {
    let spec = &se.spec;
    let res = spec.resolution;
    if spec.hosts.is_empty() {
        r.error("spec.hosts", "at least one host is required");
    }
    if spec.hosts.len() > 256 {
        r.error("spec.hosts", "at most 256 hosts are allowed");
    }
    for (i, h) in spec.hosts.iter().enumerate() {
        let at = format!("spec.hosts[{i}]");
        if h == "*" {
            r.error(&at, "host \"*\" is not allowed in a ServiceEntry");
        } else if is_partial_wildcard(h) {
            let resolved = matches!(res, Resolution::Dns | Resolution::DnsRoundRobin)
                && spec.endpoints.is_empty()
                && spec.workload_selector.is_none();
            if !resolved {
                r.warn(
                    &at,
                    format!(
                        "host {h:?} uses a partial wildcard, which only works as an exact string"
                    ),
                );
            }
        } else {
            r.check(&at, check_wildcard_host(h).map(|_| ()));
        }
        if res == Resolution::DynamicDns && !h.starts_with("*.") {
            r.error(&at, "DYNAMIC_DNS hosts must be wildcards (*.domain)");
        }
    }
    if spec.addresses.len() > 256 {
        r.error("spec.addresses", "at most 256 addresses are allowed");
    }
    for (i, a) in spec.addresses.iter().enumerate() {
        let at = format!("spec.addresses[{i}]");
        r.check(&at, check_ip_or_cidr(a));
        if a.contains('/') && !matches!(res, Resolution::None | Resolution::Static) {
            r.error(
                &at,
                "CIDR addresses are only allowed with resolution NONE or STATIC",
            );
        }
    }
    if res == Resolution::DynamicDns && !spec.addresses.is_empty() {
        r.error("spec.addresses", "DYNAMIC_DNS may not set addresses");
    }

    let mut numbers = BTreeSet::new();
    let mut names = BTreeSet::new();
    if spec.ports.is_empty() {
        r.error("spec.ports", "at least one port is required");
    }
    for (i, p) in spec.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        r.check(format!("{at}.number"), check_port(p.number));
        if !numbers.insert(p.number) {
            r.error(
                format!("{at}.number"),
                format!("port number {} is declared more than once", p.number),
            );
        }
        if p.name.is_empty() {
            r.error(format!("{at}.name"), "port name is required");
        } else if !names.insert(p.name.as_str()) {
            r.error(
                format!("{at}.name"),
                format!("port name {:?} is declared more than once", p.name),
            );
        }
        if !p.protocol.is_empty() && !is_protocol(&p.protocol, SE_PROTOCOLS) {
            r.error(
                format!("{at}.protocol"),
                format!("unknown protocol {:?}", p.protocol),
            );
        }
        if let Some(t) = p.target_port {
            r.check(format!("{at}.targetPort"), check_port(t));
        }
        let proto = p.protocol.to_ascii_uppercase();
        if res == Resolution::DynamicDns
            && !matches!(proto.as_str(), "HTTP" | "TLS" | "GRPC" | "HTTP2")
        {
            r.error(
                format!("{at}.protocol"),
                "DYNAMIC_DNS supports only HTTP, TLS, GRPC and HTTP2 ports",
            );
        }
        if res != Resolution::None
            && spec.hosts.len() > 1
            && !matches!(
                proto.as_str(),
                "HTTP" | "TLS" | "HTTPS" | "GRPC" | "GRPC-WEB" | "HTTP2"
            )
        {
            r.error(
                format!("{at}.protocol"),
                "with several hosts and resolution other than NONE every port must be HTTP or TLS",
            );
        }
        if matches!(proto.as_str(), "TCP" | "MONGO" | "MYSQL" | "REDIS" | "")
            && spec.addresses.is_empty()
            && res != Resolution::DynamicDns
        {
            r.warn(
                format!("{at}.protocol"),
                "a TCP port without addresses listens on 0.0.0.0 and may conflict with other services on the same port",
            );
        }
    }

    if !spec.endpoints.is_empty() && spec.workload_selector.is_some() {
        r.error(
            "spec.workloadSelector",
            "endpoints and workloadSelector are mutually exclusive",
        );
    }
    if spec.endpoints.len() > 4096 {
        r.error("spec.endpoints", "at most 4096 endpoints are allowed");
    }
    if let Some(sel) = &spec.workload_selector {
        check_selector(&sel.labels, "spec.workloadSelector.labels", r);
        if res == Resolution::None {
            r.warn(
                "spec.workloadSelector",
                "a workloadSelector has no effect with resolution NONE",
            );
        }
    }
    match res {
        Resolution::None if !spec.endpoints.is_empty() => {
            r.error(
                "spec.endpoints",
                "endpoints are not allowed with resolution NONE",
            );
        }
        Resolution::Dns | Resolution::DnsRoundRobin
            if spec.endpoints.is_empty() && spec.workload_selector.is_none() =>
        {
            // The hosts themselves are resolved: names or *.domain, never patterns.
            for (i, h) in spec.hosts.iter().enumerate() {
                if is_partial_wildcard(h) {
                    r.error(
                        format!("spec.hosts[{i}]"),
                        "hosts must be FQDNs or *.domain when DNS resolution has no endpoints",
                    );
                }
            }
        }
        Resolution::DynamicDns if !spec.endpoints.is_empty() => {
            r.error("spec.endpoints", "DYNAMIC_DNS may not have endpoints");
        }
        _ => {}
    }
    if res == Resolution::DnsRoundRobin && spec.endpoints.len() > 1 {
        r.error(
            "spec.endpoints",
            "DNS_ROUND_ROBIN allows at most one endpoint",
        );
    }

    let port_names: BTreeSet<&str> = spec.ports.iter().map(|p| p.name.as_str()).collect();
    for (i, ep) in spec.endpoints.iter().enumerate() {
        let at = format!("spec.endpoints[{i}]");
        let unix = ep.address.starts_with("unix://");
        match res {
            Resolution::Static if !unix && ep.address.parse::<std::net::IpAddr>().is_err() => {
                r.error(
                    format!("{at}.address"),
                    format!(
                        "STATIC endpoint address {:?} must be an IP or unix:// address",
                        ep.address
                    ),
                );
            }
            Resolution::Dns | Resolution::DnsRoundRobin
                if !unix && ep.address.parse::<std::net::IpAddr>().is_err() =>
            {
                r.check(
                    format!("{at}.address"),
                    crate::validate::common::check_fqdn(&ep.address),
                );
            }
            _ => {}
        }
        if unix {
            if !ep.ports.is_empty() {
                r.error(
                    format!("{at}.ports"),
                    "a unix:// endpoint may not have ports",
                );
            }
            if spec.ports.len() != 1 {
                r.error(
                    format!("{at}.address"),
                    "a unix:// endpoint requires exactly one ServiceEntry port",
                );
            }
        }
        for name in ep.ports.keys() {
            if !port_names.contains(name.as_str()) {
                r.error(
                    format!("{at}.ports[{name}]"),
                    format!("port {name:?} is not a port of this ServiceEntry"),
                );
            }
        }
        workload::validate_entry(ep, &at, true, r);
    }
    for (i, san) in spec.subject_alt_names.iter().enumerate() {
        if san.is_empty() {
            r.error(
                format!("spec.subjectAltNames[{i}]"),
                "subject alt name must not be empty",
            );
        }
    }
    check_export_to(
        &spec.export_to,
        se.metadata.namespace(),
        true,
        "spec.exportTo",
        r,
    );
}
