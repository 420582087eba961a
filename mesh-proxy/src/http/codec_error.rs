//! Envoy's answers to HTTP/1 requests the codec cannot parse.
//!
//! hyper answers a request head it cannot parse (a garbage request line, a control character in
//! a header, too many or too large headers) by itself, with the status and an empty body. Envoy
//! answers the same requests with a text body (`Bad Request`, `Request Header Fields Too Large`),
//! `content-type: text/plain`, `server: envoy` and `connection: close`. hyper has no hook for
//! these responses, so [`CodecErrorReplies`] wraps the downstream connection and replaces a write
//! that is exactly one of hyper's error heads by Envoy's response.
//!
//! A write is taken for hyper's error head only when it is a whole response head and nothing
//! else, with one of the status lines hyper uses for parse errors, `content-length: 0` and no
//! `server` header. Every response head the connection manager writes carries `server` (its
//! `server_header_transformation` is `OVERWRITE` or `APPEND_IF_ABSENT` whenever the wrapper is
//! used: see [`CodecErrorReplies::applies`]), so none of our heads can match. The one thing
//! that could is a response *body* whose write is, byte for byte, such an error head and
//! nothing else (an HTTP message carried as a body, split exactly there): accepted as a
//! theoretical risk against answering every malformed request differently from Envoy.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::config::http::ServerHeaderTransformation;

/// hyper's status lines for parse errors, and Envoy's status line and body for each.
const ERRORS: [(&[u8], &str, &str); 3] = [
    (
        b"HTTP/1.1 400 Bad Request\r\n",
        "400 Bad Request",
        "Bad Request",
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        "431 Request Header Fields Too Large",
        "Request Header Fields Too Large",
    ),
    // A request line longer than hyper's URI limit: Envoy counts it against the header size
    // limit and answers 431.
    (
        b"HTTP/1.1 414 URI Too Long\r\n",
        "431 Request Header Fields Too Large",
        "Request Header Fields Too Large",
    ),
];

/// A downstream HTTP/1 connection whose codec-error responses are Envoy's (see the module docs).
#[derive(Debug)]
pub struct CodecErrorReplies<IO> {
    inner: IO,
    /// The `server` header's value; `None` turns the replacement off.
    server: Option<Bytes>,
    /// Envoy's response being written in place of hyper's: the bytes, how many are written,
    /// and the length of hyper's write to report once they all are.
    pending: Option<(Bytes, usize, usize)>,
}

impl<IO> CodecErrorReplies<IO> {
    /// Wraps `inner`; `server` is the `server` header's value in the replies, `None` when
    /// the connection's heads cannot be told apart (see [`CodecErrorReplies::applies`]) and
    /// every write passes through unchanged.
    pub fn new(inner: IO, server: Option<&str>) -> Self {
        Self {
            inner,
            server: server.map(|s| Bytes::copy_from_slice(s.as_bytes())),
            pending: None,
        }
    }

    /// Whether the wrapper can tell hyper's heads from the connection manager's: true when
    /// every response the manager writes has a `server` header.
    pub fn applies(transformation: ServerHeaderTransformation) -> bool {
        !matches!(transformation, ServerHeaderTransformation::PassThrough)
    }

    /// Envoy's response for `head` if `head` is one of hyper's parse-error heads.
    fn replacement(&self, head: &[u8]) -> Option<Bytes> {
        let server = self.server.as_ref()?;
        let (prefix, status, body) = ERRORS.iter().find(|(p, _, _)| head.starts_with(p))?;
        // One whole head, nothing after it.
        let rest = &head[prefix.len()..];
        let headers = rest.strip_suffix(b"\r\n\r\n".as_slice()).or_else(|| {
            // A head with no header lines at all ends right after the status line.
            rest.strip_prefix(b"\r\n".as_slice())
                .filter(|r| r.is_empty())
        })?;
        let mut date = None;
        let mut empty_body = false;
        for line in headers.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                // An empty line inside: more than one head in this write.
                return None;
            }
            let lower = line.to_ascii_lowercase();
            if lower.starts_with(b"server:") {
                return None;
            } else if lower.starts_with(b"date:") {
                date = Some(line);
            } else if lower == b"content-length: 0" {
                empty_body = true;
            }
        }
        if !empty_body {
            return None;
        }
        let mut out = BytesMut::with_capacity(160 + body.len());
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(status.as_bytes());
        out.put_slice(b"\r\ncontent-length: ");
        out.put_slice(body.len().to_string().as_bytes());
        out.put_slice(b"\r\ncontent-type: text/plain\r\n");
        if let Some(date) = date {
            out.put_slice(date);
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"server: ");
        out.put_slice(server);
        out.put_slice(b"\r\nconnection: close\r\n\r\n");
        out.put_slice(body.as_bytes());
        Some(out.freeze())
    }
}

impl<IO: AsyncWrite + Unpin> CodecErrorReplies<IO> {
    /// Writes the pending replacement out; Ready(Some(n)) reports the replaced write's length.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<usize>>> {
        while let Some((bytes, written, _)) = &mut self.pending {
            if *written == bytes.len() {
                let report = self.pending.take().map(|(_, _, n)| n);
                return Poll::Ready(Ok(report));
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(None))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for CodecErrorReplies<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for CodecErrorReplies<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending.is_none() {
            match this.replacement(buf) {
                Some(bytes) => this.pending = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        match ready!(this.drive(cx))? {
            Some(n) => Poll::Ready(Ok(n)),
            // Unreachable: a pending replacement always reports its length.
            None => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut nonempty = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (nonempty.next(), nonempty.next())
            && (self.pending.is_some() || only.starts_with(b"HTTP/1.1 4"))
        {
            let only: &[u8] = only;
            return self.poll_write(cx, only);
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drive(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drive(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn wrapper() -> CodecErrorReplies<Vec<u8>> {
        CodecErrorReplies::new(Vec::new(), Some("envoy"))
    }

    #[test]
    fn hypers_error_heads_become_envoys_replies() {
        let w = wrapper();
        let head = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 00:00:00 GMT\r\n\r\n";
        let out = w.replacement(head).expect("replaced");
        assert_eq!(
            &out[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 11\r\ncontent-type: text/plain\r\ndate: Wed, 02 Dec 2026 00:00:00 GMT\r\nserver: envoy\r\nconnection: close\r\n\r\nBad Request"
        );
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        let out = w.replacement(head).expect("replaced");
        assert!(out.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(out.ends_with(b"\r\n\r\nRequest Header Fields Too Large"));
    }

    #[test]
    fn the_managers_own_responses_are_left_alone() {
        let w = wrapper();
        for head in [
            // Ours: a server header.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nserver: envoy\r\n\r\n"[..],
            // A body follows.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nmore",
            // Not empty.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\n",
            // Two heads.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nHTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            // Another status.
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            // Part of a head.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            let off = CodecErrorReplies::new(Vec::<u8>::new(), None);
            assert!(off.replacement(head).is_none());
            assert!(
                w.replacement(head).is_none(),
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[tokio::test]
    async fn the_replacement_is_written_and_hypers_length_reported() {
        let (a, mut b) = tokio::io::duplex(8);
        let mut w = CodecErrorReplies::new(a, Some("envoy"));
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n";
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.map(|_| got)
        });
        // A small duplex buffer: the replacement takes several inner writes.
        let n = w.write(head).await.expect("write");
        assert_eq!(n, head.len());
        w.write_all(b"after").await.expect("write");
        w.shutdown().await.expect("shutdown");
        drop(w);
        let got = reader.await.expect("join").expect("read");
        let text = String::from_utf8(got).expect("utf8");
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(
            text.ends_with("\r\n\r\nRequest Header Fields Too Largeafter"),
            "{text}"
        );
    }
}
