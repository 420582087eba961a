//! Request and response header mutations at the four route levels, with `%COMMAND%`
//! substitutions and Envoy's append actions.

use std::net::SocketAddr;

use http::header::{HeaderMap, HeaderValue};

use crate::config::route::{
    AppendAction, HeaderMutations, HeaderTemplate, HeaderValueOption, TemplatePart,
};

/// Values a header template can refer to.
#[derive(Clone, Debug)]
pub struct TemplateContext<'a> {
    /// Downstream peer.
    pub downstream_remote: SocketAddr,
    /// Downstream local address.
    pub downstream_local: SocketAddr,
    /// Upstream host (responses only).
    pub upstream_remote: Option<SocketAddr>,
    /// `HTTP/1.1`, `HTTP/2`.
    pub protocol: &'a str,
    /// The machine's host name.
    pub hostname: &'a str,
    /// The downstream request's headers (for `%REQ(...)%`).
    pub request_headers: Option<&'a HeaderMap>,
}

/// Renders a template.
pub fn render(t: &HeaderTemplate, ctx: &TemplateContext<'_>) -> String {
    if let Some(l) = t.as_literal() {
        return l.to_string();
    }
    let mut s = String::new();
    for p in &t.parts {
        match p {
            TemplatePart::Literal(l) => s.push_str(l),
            TemplatePart::DownstreamRemoteAddress => s.push_str(&ctx.downstream_remote.to_string()),
            TemplatePart::DownstreamRemoteAddressWithoutPort => {
                s.push_str(&ctx.downstream_remote.ip().to_string())
            }
            TemplatePart::DownstreamLocalAddress => s.push_str(&ctx.downstream_local.to_string()),
            TemplatePart::DownstreamLocalAddressWithoutPort => {
                s.push_str(&ctx.downstream_local.ip().to_string())
            }
            TemplatePart::UpstreamRemoteAddress => {
                if let Some(u) = ctx.upstream_remote {
                    s.push_str(&u.to_string());
                }
            }
            TemplatePart::Hostname => s.push_str(ctx.hostname),
            TemplatePart::Protocol => s.push_str(ctx.protocol),
            TemplatePart::Request(name) => {
                if let Some(v) = ctx
                    .request_headers
                    .and_then(|h| h.get(name))
                    .and_then(|v| v.to_str().ok())
                {
                    s.push_str(v);
                }
            }
            TemplatePart::StartTime => s.push_str(&httpdate_now()),
        }
    }
    s
}

fn httpdate_now() -> String {
    // RFC 3339 in UTC, as Envoy's default START_TIME format is close enough for headers.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", now.as_secs(), now.subsec_millis())
}

/// Applies one header option.
pub fn apply_option(headers: &mut HeaderMap, o: &HeaderValueOption, ctx: &TemplateContext<'_>) {
    let value = render(&o.value, ctx);
    if value.is_empty() && !o.keep_empty_value {
        return;
    }
    let Ok(v) = HeaderValue::from_str(&value) else {
        return;
    };
    let exists = headers.contains_key(&o.name);
    match o.action {
        AppendAction::AppendIfExistsOrAdd => {
            headers.append(o.name.clone(), v);
        }
        AppendAction::AddIfAbsent => {
            if !exists {
                headers.insert(o.name.clone(), v);
            }
        }
        AppendAction::OverwriteIfExistsOrAdd => {
            headers.insert(o.name.clone(), v);
        }
        AppendAction::OverwriteIfExists => {
            if exists {
                headers.insert(o.name.clone(), v);
            }
        }
    }
}

/// Which half of a mutation list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Request headers.
    Request,
    /// Response headers.
    Response,
}

/// Applies the levels' mutations in order (the caller orders them: most specific first by
/// default, so the route configuration level wins). Within a level, removals come first.
pub fn apply_levels(
    headers: &mut HeaderMap,
    levels: &[&HeaderMutations],
    side: Side,
    ctx: &TemplateContext<'_>,
) {
    for level in levels {
        let (remove, add) = match side {
            Side::Request => (&level.request_remove, &level.request_add),
            Side::Response => (&level.response_remove, &level.response_add),
        };
        for name in remove {
            headers.remove(name);
        }
        for o in add {
            apply_option(headers, o, ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    fn ctx() -> TemplateContext<'static> {
        TemplateContext {
            downstream_remote: "10.0.0.1:5000".parse().unwrap(),
            downstream_local: "10.0.0.2:80".parse().unwrap(),
            upstream_remote: None,
            protocol: "HTTP/1.1",
            hostname: "h",
            request_headers: None,
        }
    }

    fn opt(name: &str, value: HeaderTemplate, action: AppendAction) -> HeaderValueOption {
        HeaderValueOption {
            name: HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value,
            action,
            keep_empty_value: false,
        }
    }

    #[test]
    fn append_actions() {
        let mut h = HeaderMap::new();
        h.insert("a", "1".parse().unwrap());
        h.insert("b", "1".parse().unwrap());
        let c = ctx();
        apply_option(
            &mut h,
            &opt(
                "a",
                HeaderTemplate::literal("2"),
                AppendAction::AppendIfExistsOrAdd,
            ),
            &c,
        );
        apply_option(
            &mut h,
            &opt("b", HeaderTemplate::literal("2"), AppendAction::AddIfAbsent),
            &c,
        );
        apply_option(
            &mut h,
            &opt("c", HeaderTemplate::literal("3"), AppendAction::AddIfAbsent),
            &c,
        );
        apply_option(
            &mut h,
            &opt(
                "d",
                HeaderTemplate::literal("4"),
                AppendAction::OverwriteIfExists,
            ),
            &c,
        );
        apply_option(
            &mut h,
            &opt(
                "b",
                HeaderTemplate::literal("5"),
                AppendAction::OverwriteIfExistsOrAdd,
            ),
            &c,
        );
        apply_option(
            &mut h,
            &opt(
                "e",
                HeaderTemplate::literal(""),
                AppendAction::OverwriteIfExistsOrAdd,
            ),
            &c,
        );
        let all = |n: &str| {
            h.get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(all("a"), ["1", "2"]);
        assert_eq!(all("b"), ["5"]);
        assert_eq!(all("c"), ["3"]);
        assert!(all("d").is_empty() && all("e").is_empty());
    }

    #[test]
    fn templates_and_level_order() {
        let t = HeaderTemplate {
            parts: vec![
                TemplatePart::Literal("ip=".into()),
                TemplatePart::DownstreamRemoteAddressWithoutPort,
            ],
        };
        assert_eq!(render(&t, &ctx()), "ip=10.0.0.1");
        let route = HeaderMutations {
            request_add: vec![opt(
                "x",
                HeaderTemplate::literal("route"),
                AppendAction::OverwriteIfExistsOrAdd,
            )],
            ..Default::default()
        };
        let config = HeaderMutations {
            request_add: vec![opt(
                "x",
                HeaderTemplate::literal("config"),
                AppendAction::OverwriteIfExistsOrAdd,
            )],
            request_remove: vec![HeaderName::from_static("gone")],
            ..Default::default()
        };
        let mut h = HeaderMap::new();
        h.insert("gone", "1".parse().unwrap());
        apply_levels(&mut h, &[&route, &config], Side::Request, &ctx());
        assert_eq!(h.get("x").unwrap(), "config");
        assert!(h.get("gone").is_none());
    }
}
