//! Upstream HTTP servers that answer with their own name and count what they receive, and a
//! one-request HTTP/1.1 client.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};

/// What an upstream saw.
#[derive(Default)]
pub struct Seen {
    /// Requests received.
    pub requests: AtomicU64,
    /// The path and query of each request, in order.
    pub paths: Mutex<Vec<String>>,
    /// The headers of each request, in order (repeated ones joined with `, `).
    pub headers: Mutex<Vec<BTreeMap<String, String>>>,
    /// Answer the first N requests with 503.
    pub fail_first: AtomicU64,
    /// Delay every response by this many milliseconds.
    pub delay_ms: AtomicU64,
}

/// A running upstream server (it stops with the test's runtime).
pub struct Upstream {
    /// What it answers with (body and `x-upstream`).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub seen: Arc<Seen>,
}

impl Upstream {
    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// How many requests it received.
    pub fn count(&self) -> u64 {
        self.seen.requests.load(Ordering::SeqCst)
    }
}

/// Starts an HTTP/1.1 keep-alive server on 127.0.0.1 answering `200 <name>` (with
/// `x-upstream: <name>`), recording each request.
pub async fn start(name: &str) -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let name_s = name.to_string();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let seen = seen2.clone();
            let name = name_s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    let name = name.clone();
                    async move {
                        seen.requests.fetch_add(1, Ordering::SeqCst);
                        seen.paths.lock().unwrap().push(
                            req.uri()
                                .path_and_query()
                                .map(|p| p.to_string())
                                .unwrap_or_default(),
                        );
                        // Repeated headers are joined with ", " as HTTP allows.
                        let mut headers: BTreeMap<String, String> = BTreeMap::new();
                        for (k, v) in req.headers() {
                            let v = v.to_str().unwrap_or_default();
                            headers
                                .entry(k.to_string())
                                .and_modify(|e| {
                                    e.push_str(", ");
                                    e.push_str(v);
                                })
                                .or_insert_with(|| v.to_string());
                        }
                        seen.headers.lock().unwrap().push(headers);
                        let _ = req.into_body().collect().await;
                        let delay = seen.delay_ms.load(Ordering::SeqCst);
                        if delay > 0 {
                            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                        }
                        let fail = seen
                            .fail_first
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        let status = if fail {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("x-upstream", name.clone())
                                .body(Full::new(Bytes::from(name.clone())))
                                .unwrap(),
                        )
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Upstream {
        name: name.to_string(),
        addr,
        seen,
    }
}

/// The answer to one request (sent through a proxy, say).
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: BTreeMap<String, String>,
    /// The body, as (lossy) UTF-8.
    pub body: String,
}

/// Sends one HTTP/1.1 GET to `addr` with the given Host and headers (a fresh connection).
pub async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Reply> {
    request(addr, "GET", host, path, headers).await
}

/// Sends one HTTP/1.1 request with any method.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Reply> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    request_on(stream, method, host, path, headers).await
}

/// [`request`] on a connection of the caller's (TLS, say).
pub async fn request_on<IO>(
    stream: IO,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Reply>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
