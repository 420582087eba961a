//! `envoy.filters.http.cors`: preflight answers and response headers for allowed origins.

use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};

use super::{Body, empty};
use crate::config::route::CorsPolicy;

/// What the CORS filter does with a request.
#[derive(Debug)]
pub enum CorsAction {
    /// Nothing (no policy, no `Origin`, or not enabled).
    Pass,
    /// A preflight answered here.
    Preflight(Response<Body>),
    /// Forward, then add these headers to the response.
    Decorate(Vec<(&'static str, HeaderValue)>),
}

/// Decides for a request under `policy`.
pub fn decide(policy: Option<&CorsPolicy>, method: &Method, headers: &HeaderMap) -> CorsAction {
    let Some(p) = policy else {
        return CorsAction::Pass;
    };
    if !p.filter_enabled.sample() {
        return CorsAction::Pass;
    }
    let Some(origin) = headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return CorsAction::Pass;
    };
    if origin.is_empty() {
        return CorsAction::Pass;
    }
    let allowed = p.allow_origin.iter().any(|m| m.matches(origin));
    let preflight = method == Method::OPTIONS
        && headers
            .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
            .is_some_and(|v| !v.is_empty());
    let origin_v = match HeaderValue::from_str(origin) {
        Ok(v) => v,
        Err(_) => return CorsAction::Pass,
    };
    if preflight {
        if !allowed {
            return if p.forward_not_matching_preflights {
                CorsAction::Pass
            } else {
                let mut r = Response::new(empty());
                *r.status_mut() = StatusCode::OK;
                CorsAction::Preflight(r)
            };
        }
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        h.insert("access-control-allow-origin", origin_v);
        if p.allow_credentials == Some(true) {
            h.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
        }
        for (name, v) in [
            ("access-control-allow-methods", &p.allow_methods),
            ("access-control-allow-headers", &p.allow_headers),
            ("access-control-max-age", &p.max_age),
        ] {
            if let Some(v) = v.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                h.insert(name, v);
            }
        }
        if p.allow_private_network_access
            && headers
                .get("access-control-request-private-network")
                .is_some_and(|v| v == "true")
        {
            h.insert(
                "access-control-allow-private-network",
                HeaderValue::from_static("true"),
            );
        }
        r.headers_mut()
            .insert("content-length", HeaderValue::from_static("0"));
        return CorsAction::Preflight(r);
    }
    if !allowed {
        return CorsAction::Pass;
    }
    let mut out = vec![("access-control-allow-origin", origin_v)];
    if p.allow_credentials == Some(true) {
        out.push((
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        ));
    }
    if let Some(v) = p
        .expose_headers
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        out.push(("access-control-expose-headers", v));
    }
    CorsAction::Decorate(out)
}
