//! One HTTP(S) GET for the JWKS resolver: HTTP/1.1 over tokio, TLS with rustls, a deadline
//! for the whole exchange (redirects included), a size limit on the body, and redirects
//! followed a few times (as Go's `http.Client`, which istiod uses, does).
//!
//! Deliberately small: no connection reuse (istiod's client disables keep-alives too), no
//! proxies, no compression.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a GET failed. Every message names the URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL does not parse, or has no host.
    #[error("{url}: not a usable URL: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither `http` nor `https`.
    #[error("{url}: scheme {scheme:?} is not http or https")]
    Scheme {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// No TCP connection.
    #[error("{url}: connecting to {authority}: {source}")]
    Connect {
        /// The URL.
        url: String,
        /// `host:port`.
        authority: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, ...).
    #[error("{url}: TLS: {source}")]
    Tls {
        /// The URL.
        url: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("{url}: HTTP: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The error.
        #[source]
        source: hyper::Error,
    },
    /// The server answered with a status other than 2xx (and not a redirect it could follow).
    #[error("{url}: status {status}{}", if body.is_empty() { String::new() } else { format!(", body {body:?}") })]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body (at most 100 bytes), as istiod reports it.
        body: String,
    },
    /// More redirects than allowed, or one without a usable `Location`.
    #[error("{url}: {reason}")]
    Redirect {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The body is larger than the limit.
    #[error("{url}: the body is larger than {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: usize,
    },
    /// The body is not UTF-8.
    #[error("{url}: the body is not UTF-8")]
    NotUtf8 {
        /// The URL.
        url: String,
    },
    /// Nothing complete within the deadline.
    #[error("{url}: no complete answer within {after:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The deadline.
        after: Duration,
    },
}

/// Settings of a [`Fetcher`].
#[derive(Clone, Debug)]
pub struct Fetcher {
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    max_size: usize,
    max_redirects: usize,
}

/// Anything a request can go over: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

impl Fetcher {
    /// A client verifying servers with `tls`, giving every GET `timeout` in all, refusing bodies
    /// over `max_size` bytes, following at most `max_redirects` redirects.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
        max_size: usize,
        max_redirects: usize,
    ) -> Fetcher {
        Fetcher {
            tls,
            timeout,
            max_size,
            max_redirects,
        }
    }

    /// GETs `url` and returns its body.
    pub async fn get(&self, url: &str) -> Result<String, FetchError> {
        match tokio::time::timeout(self.timeout, self.follow(url)).await {
            Ok(r) => r,
            Err(_) => Err(FetchError::Timeout {
                url: url.to_string(),
                after: self.timeout,
            }),
        }
    }

    async fn follow(&self, url: &str) -> Result<String, FetchError> {
        let mut current = url.to_string();
        for _ in 0..=self.max_redirects {
            match self.once(&current).await? {
                Answer::Body(b) => return Ok(b),
                Answer::Redirect(next) => current = next,
            }
        }
        Err(FetchError::Redirect {
            url: url.to_string(),
            reason: format!("more than {} redirects", self.max_redirects),
        })
    }

    async fn once(&self, url: &str) -> Result<Answer, FetchError> {
        let invalid = |reason: String| FetchError::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|e| invalid(format!("{e}")))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => {
                return Err(FetchError::Scheme {
                    url: url.to_string(),
                    scheme: other.unwrap_or_default().to_string(),
                });
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host".into()))?;
        // IPv6 literals come bracketed.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let authority = if bare.contains(':') {
            format!("[{bare}]:{port}")
        } else {
            format!("{bare}:{port}")
        };
        let tcp = tokio::net::TcpStream::connect((bare, port))
            .await
            .map_err(|source| FetchError::Connect {
                url: url.to_string(),
                authority: authority.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if tls {
            let name = rustls_pki_types::ServerName::try_from(bare.to_string())
                .map_err(|e| invalid(format!("host {bare:?}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|source| FetchError::Tls {
                    url: url.to_string(),
                    source,
                })?;
            Box::new(stream)
        } else {
            Box::new(tcp)
        };
        let http = |source| FetchError::Http {
            url: url.to_string(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(http)?;
        // The connection task ends with the exchange (or when the future is dropped at the
        // deadline, which drops the sender and so the connection).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str);
        let host_header = match uri.port_u16() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, host_header)
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::USER_AGENT, "mesh-jwks-resolver")
            .header(hyper::header::CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| invalid(format!("{e}")))?;
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status();
        if status.is_redirection()
            && let Some(location) = resp.headers().get(hyper::header::LOCATION)
        {
            let location = location.to_str().map_err(|_| FetchError::Redirect {
                url: url.to_string(),
                reason: "a Location header that is not text".into(),
            })?;
            return Ok(Answer::Redirect(resolve(&uri, location)));
        }
        let body = Limited::new(resp.into_body(), self.max_size)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => http(*e),
                Err(_) => FetchError::TooLarge {
                    url: url.to_string(),
                    limit: self.max_size,
                },
            })?
            .to_bytes();
        if !status.is_success() {
            let snippet = String::from_utf8_lossy(&body[..body.len().min(100)]).into_owned();
            return Err(FetchError::Status {
                url: url.to_string(),
                status: status.as_u16(),
                body: snippet,
            });
        }
        String::from_utf8(body.to_vec())
            .map(Answer::Body)
            .map_err(|_| FetchError::NotUtf8 {
                url: url.to_string(),
            })
    }
}

enum Answer {
    Body(String),
    Redirect(String),
}

/// A `Location` against the URL it came from: absolute as is, `//host/...` with the same
/// scheme, `/path` on the same origin, anything else relative to the directory of the path.
fn resolve(base: &Uri, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme = base.scheme_str().unwrap_or("http");
    if let Some(rest) = location.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    let origin = format!("{scheme}://{}", base.authority().map_or("", |a| a.as_str()));
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let dir = base.path().rsplit_once('/').map_or("", |(d, _)| d);
    format!("{origin}{dir}/{location}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_request() {
        let base: Uri = "https://idp.example:8443/tenant/keys?x=1".parse().unwrap();
        assert_eq!(resolve(&base, "http://other/k"), "http://other/k");
        assert_eq!(resolve(&base, "//cdn.example/k"), "https://cdn.example/k");
        assert_eq!(
            resolve(&base, "/v2/keys"),
            "https://idp.example:8443/v2/keys"
        );
        assert_eq!(resolve(&base, "v2"), "https://idp.example:8443/tenant/v2");
    }
}
