//! WorkloadEntry and WorkloadGroup rules.

use crate::networking::workload::{WorkloadEntrySpec, WorkloadGroup};
use crate::validate::Report;
use crate::validate::common::{
    check_fqdn, check_labels, check_port, is_dns1123_label, is_dns1123_subdomain,
};

/// Checks a WorkloadEntry spec at `at`; `in_service_entry` relaxes the address rules that the
/// ServiceEntry checks against its resolution.
pub(crate) fn validate_entry(
    we: &WorkloadEntrySpec,
    at: &str,
    in_service_entry: bool,
    r: &mut Report,
) {
    if we.address.is_empty() {
        if we.network.is_empty() {
            r.error(
                format!("{at}.address"),
                "address is required unless network is set",
            );
        }
    } else if we.address.len() > 256 {
        r.error(
            format!("{at}.address"),
            "address is longer than 256 characters",
        );
    } else if !in_service_entry
        && !we.address.starts_with("unix://")
        && we.address.parse::<std::net::IpAddr>().is_err()
    {
        r.check(format!("{at}.address"), check_fqdn(&we.address));
    }
    if we.ports.len() > 128 {
        r.error(format!("{at}.ports"), "at most 128 ports are allowed");
    }
    for (name, port) in &we.ports {
        let pat = format!("{at}.ports[{name}]");
        if !is_dns1123_label(name) {
            r.error(&pat, format!("port name {name:?} must be a DNS-1123 label"));
        }
        r.check(&pat, check_port(*port));
    }
    if we.labels.len() > 256 {
        r.error(format!("{at}.labels"), "at most 256 labels are allowed");
    }
    check_labels(&we.labels, &format!("{at}.labels"), r);
    if !we.locality.is_empty() {
        let parts: Vec<&str> = we.locality.split('/').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            r.error(
                format!("{at}.locality"),
                format!("locality {:?} must be region[/zone[/subzone]]", we.locality),
            );
        }
    }
    if !we.service_account.is_empty() && !is_dns1123_subdomain(&we.service_account) {
        r.error(
            format!("{at}.serviceAccount"),
            format!(
                "service account {:?} must be a name in the same namespace",
                we.service_account
            ),
        );
    }
}

pub(crate) fn validate_group(wg: &WorkloadGroup, r: &mut Report) {
    let spec = &wg.spec;
    if !spec.template.address.is_empty() {
        r.error(
            "spec.template.address",
            "address is not allowed in a WorkloadGroup template",
        );
    }
    let mut template = spec.template.clone();
    // The template has no address of its own; check the rest.
    template.network = "template".into();
    validate_entry(&template, "spec.template", false, r);
    if let Some(meta) = &spec.metadata {
        check_labels(&meta.labels, "spec.metadata.labels", r);
    }
    if let Some(p) = &spec.probe {
        let at = "spec.probe";
        for (name, v) in [
            ("initialDelaySeconds", p.initial_delay_seconds),
            ("timeoutSeconds", p.timeout_seconds),
            ("periodSeconds", p.period_seconds),
            ("successThreshold", p.success_threshold),
            ("failureThreshold", p.failure_threshold),
        ] {
            if v.is_some_and(|v| v < 0) {
                r.error(format!("{at}.{name}"), "must not be negative");
            }
        }
        let kinds = [
            p.http_get.is_some(),
            p.tcp_socket.is_some(),
            p.exec.is_some(),
            p.grpc.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if kinds != 1 {
            r.error(
                at,
                "exactly one of httpGet, tcpSocket, exec or grpc must be set",
            );
        }
        if let Some(h) = &p.http_get {
            r.check(format!("{at}.httpGet.port"), check_port(h.port));
            if let Some(s) = &h.scheme
                && s != "HTTP"
                && s != "HTTPS"
            {
                r.error(
                    format!("{at}.httpGet.scheme"),
                    format!("scheme {s:?} must be HTTP or HTTPS"),
                );
            }
            for (i, hdr) in h.http_headers.iter().enumerate() {
                r.check(
                    format!("{at}.httpGet.httpHeaders[{i}].name"),
                    crate::validate::common::check_header_name(&hdr.name),
                );
            }
        }
        if let Some(t) = &p.tcp_socket {
            r.check(format!("{at}.tcpSocket.port"), check_port(t.port));
        }
        if let Some(e) = &p.exec
            && e.command.is_empty()
        {
            r.error(format!("{at}.exec.command"), "command is required");
        }
        if let Some(g) = &p.grpc {
            r.check(format!("{at}.grpc.port"), check_port(g.port));
        }
    }
}
