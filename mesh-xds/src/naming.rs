//! Istio's names for xDS resources (reference §3.1). `istioctl proxy-config` splits these, so
//! they are load-bearing.

/// Outbound cluster: `outbound|PORT|SUBSET|HOST` (empty subset for the service itself).
pub fn outbound_cluster(port: u32, subset: &str, host: &str) -> String {
    joined(&["outbound|", "|", "|"], port, subset, host)
}

/// The SNI / SNI-DNAT cluster name: `outbound_.PORT_.SUBSET_.HOST`.
pub fn outbound_sni(port: u32, subset: &str, host: &str) -> String {
    joined(&["outbound_.", "_.", "_."], port, subset, host)
}

/// `SEP0 PORT SEP1 SUBSET SEP2 HOST`, sized once. Names are built for every cluster, route
/// and endpoint assignment of a push; `format!` was 4% of a 10,000-service push.
fn joined(seps: &[&str; 3], port: u32, subset: &str, host: &str) -> String {
    let mut s = String::with_capacity(
        seps.iter().map(|p| p.len()).sum::<usize>() + 10 + subset.len() + host.len(),
    );
    s.push_str(seps[0]);
    push_decimal(&mut s, port);
    s.push_str(seps[1]);
    s.push_str(subset);
    s.push_str(seps[2]);
    s.push_str(host);
    s
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    loop {
        at -= 1;
        // `n % 10` is below 10: the cast cannot truncate.
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: always UTF-8.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// Inbound cluster: `inbound|TARGETPORT||`.
pub fn inbound_cluster(port: u32) -> String {
    format!("inbound|{port}||")
}

/// Parses `outbound|PORT|SUBSET|HOST` into its parts.
pub fn parse_outbound_cluster(name: &str) -> Option<(u32, &str, &str)> {
    let mut parts = name.splitn(4, '|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    Some((port, parts.next()?, parts.next()?))
}

/// The cluster that drops traffic.
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// The cluster that forwards to the original destination.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// The inbound passthrough cluster.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
/// Outbound capture listener.
pub const VIRTUAL_OUTBOUND_LISTENER: &str = "virtualOutbound";
/// Inbound capture listener.
pub const VIRTUAL_INBOUND_LISTENER: &str = "virtualInbound";

/// A listener bound to `bind:port`: `BIND_PORT`.
pub fn listener(bind: &str, port: u32) -> String {
    format!("{bind}_{port}")
}

/// Gateway HTTP route config: `http.PORT` or `http.PORT.BIND`.
pub fn gateway_http_route(port: u32, bind: Option<&str>) -> String {
    match bind {
        Some(b) if b != "0.0.0.0" => format!("http.{port}.{b}"),
        _ => format!("http.{port}"),
    }
}

/// Gateway HTTPS route config: `https.PORT.PORTNAME.GATEWAY.NAMESPACE`.
pub fn gateway_https_route(port: u32, port_name: &str, gateway: &str, namespace: &str) -> String {
    format!("https.{port}.{port_name}.{gateway}.{namespace}")
}

/// Virtual host: `HOST:PORT`.
pub fn virtual_host(host: &str, port: u32) -> String {
    let mut s = String::with_capacity(host.len() + 6);
    s.push_str(host);
    s.push(':');
    push_decimal(&mut s, port);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_print_in_decimal() {
        for port in [0, 7, 10, 80, 9080, 15443, 65535, u32::MAX] {
            assert_eq!(
                outbound_cluster(port, "", "h"),
                format!("outbound|{port}||h")
            );
            assert_eq!(
                outbound_sni(port, "v1", "h"),
                format!("outbound_.{port}_.v1_.h")
            );
            assert_eq!(virtual_host("h", port), format!("h:{port}"));
        }
    }

    #[test]
    fn round_trip() {
        let n = outbound_cluster(9080, "v1", "reviews.default.svc.cluster.local");
        assert_eq!(n, "outbound|9080|v1|reviews.default.svc.cluster.local");
        assert_eq!(
            parse_outbound_cluster(&n),
            Some((9080, "v1", "reviews.default.svc.cluster.local"))
        );
        assert_eq!(parse_outbound_cluster("inbound|80||"), None);
    }
}
