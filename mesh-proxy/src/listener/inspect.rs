//! The TLS and HTTP inspectors: what a connection's first bytes say about it.
//!
//! Envoy's `tls_inspector` reads a ClientHello without consuming it (SNI and ALPN, transport
//! protocol `tls`), and `http_inspector` recognises an HTTP/1.x request line or the HTTP/2
//! preface (`http/1.0`, `http/1.1`, `h2c`). Here the listener reads the bytes into a buffer and
//! replays them to whatever handles the connection ([`super::io::PrefixedIo`]), so a TLS
//! passthrough chain forwards the ClientHello untouched.

/// What the TLS inspector found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsHello {
    /// More bytes are needed.
    NeedMore,
    /// Not a TLS ClientHello (transport protocol stays `raw_buffer`).
    NotTls,
    /// A ClientHello.
    Hello {
        /// The server name, lower-cased (empty without SNI).
        sni: String,
        /// Offered ALPN protocols, in order.
        alpn: Vec<String>,
    },
}

/// Largest ClientHello inspected (Envoy's `max_client_hello_size` default, 16 KiB).
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// Parses a ClientHello from the start of `buf` (it may span several TLS records).
pub fn client_hello(buf: &[u8]) -> TlsHello {
    // Reassemble handshake bytes from consecutive handshake records.
    let mut hs = Vec::new();
    let mut at = 0;
    loop {
        if buf.len() < at + 5 {
            let not_tls = at == 0
                && ((!buf.is_empty() && buf[0] != 0x16)
                    || (buf.len() >= 3 && (buf[1] != 3 || buf[2] > 4)));
            return if not_tls {
                TlsHello::NotTls
            } else {
                TlsHello::NeedMore
            };
        }
        if buf[at] != 0x16 || buf[at + 1] != 3 {
            return TlsHello::NotTls;
        }
        let len = usize::from(u16::from_be_bytes([buf[at + 3], buf[at + 4]]));
        if len == 0 || len > 16 * 1024 + 2048 {
            return TlsHello::NotTls;
        }
        if buf.len() < at + 5 + len {
            return if at + 5 + len > MAX_CLIENT_HELLO + 5 * 4 {
                TlsHello::NotTls
            } else {
                TlsHello::NeedMore
            };
        }
        hs.extend_from_slice(&buf[at + 5..at + 5 + len]);
        at += 5 + len;
        if hs.len() >= 4 {
            if hs[0] != 1 {
                return TlsHello::NotTls;
            }
            let body = (usize::from(hs[1]) << 16) | (usize::from(hs[2]) << 8) | usize::from(hs[3]);
            if body > MAX_CLIENT_HELLO {
                return TlsHello::NotTls;
            }
            if hs.len() >= 4 + body {
                return parse_hello(&hs[4..4 + body]).unwrap_or(TlsHello::NotTls);
            }
        }
    }
}

/// A cursor over bytes that fails (returns `None`) instead of panicking.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn parse_hello(body: &[u8]) -> Option<TlsHello> {
    let mut c = Cursor(body);
    c.take(2)?; // legacy version
    c.take(32)?; // random
    c.vec8()?; // session id
    c.vec16()?; // cipher suites
    c.vec8()?; // compression methods
    let mut sni = String::new();
    let mut alpn = Vec::new();
    if c.0.is_empty() {
        return Some(TlsHello::Hello { sni, alpn });
    }
    let mut exts = Cursor(c.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let mut data = Cursor(exts.vec16()?);
        match kind {
            0 => {
                let mut list = Cursor(data.vec16()?);
                while !list.0.is_empty() {
                    let name_type = list.u8()?;
                    let name = list.vec16()?;
                    if name_type == 0 && sni.is_empty() {
                        sni = String::from_utf8_lossy(name).to_ascii_lowercase();
                    }
                }
            }
            16 => {
                let mut list = Cursor(data.vec16()?);
                while !list.0.is_empty() {
                    alpn.push(String::from_utf8_lossy(list.vec8()?).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(TlsHello::Hello { sni, alpn })
}

/// What the HTTP inspector found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpSniff {
    /// More bytes are needed.
    NeedMore,
    /// Not HTTP.
    NotHttp,
    /// An HTTP/1.0 request line.
    Http10,
    /// An HTTP/1.1 request line.
    Http11,
    /// The HTTP/2 connection preface (prior knowledge, `h2c`).
    H2c,
}

impl HttpSniff {
    /// The application protocol Envoy sets.
    pub fn protocol(self) -> Option<&'static str> {
        match self {
            HttpSniff::Http10 => Some("http/1.0"),
            HttpSniff::Http11 => Some("http/1.1"),
            HttpSniff::H2c => Some("h2c"),
            HttpSniff::NeedMore | HttpSniff::NotHttp => None,
        }
    }
}

/// Most bytes the HTTP inspector looks at (Envoy reads up to 64 KiB for the request line).
pub const MAX_HTTP_INSPECT: usize = 64 * 1024;

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Methods the HTTP/1 parser accepts (those Envoy's parser knows).
const METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "CONNECT",
    "OPTIONS",
    "TRACE",
    "PATCH",
    "COPY",
    "LOCK",
    "MKCOL",
    "MOVE",
    "PROPFIND",
    "PROPPATCH",
    "SEARCH",
    "UNLOCK",
    "BIND",
    "REBIND",
    "UNBIND",
    "ACL",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
    "SOURCE",
];

/// Looks at the start of a plaintext connection.
pub fn sniff_http(buf: &[u8]) -> HttpSniff {
    if buf.is_empty() {
        return HttpSniff::NeedMore;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if buf.len() >= H2_PREFACE.len() {
            HttpSniff::H2c
        } else {
            HttpSniff::NeedMore
        };
    }
    // METHOD SP request-target SP HTTP/1.x CRLF
    let line_end = buf.windows(2).position(|w| w == b"\r\n");
    let line = match line_end {
        Some(i) => &buf[..i],
        None => buf,
    };
    let mut parts = line.splitn(3, |b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let method_ok = |m: &[u8], complete: bool| {
        METHODS.iter().any(|k| {
            if complete {
                k.as_bytes() == m
            } else {
                k.as_bytes().starts_with(m)
            }
        })
    };
    let Some(target) = parts.next() else {
        // Still in the method.
        return if line_end.is_none() && method_ok(method, false) && buf.len() < 32 {
            HttpSniff::NeedMore
        } else {
            HttpSniff::NotHttp
        };
    };
    if !method_ok(method, true) || target.is_empty() {
        return HttpSniff::NotHttp;
    }
    let Some(version) = parts.next() else {
        return if line_end.is_none() && buf.len() < MAX_HTTP_INSPECT {
            HttpSniff::NeedMore
        } else {
            HttpSniff::NotHttp
        };
    };
    match (line_end, version) {
        (Some(_), b"HTTP/1.1") => HttpSniff::Http11,
        (Some(_), b"HTTP/1.0") => HttpSniff::Http10,
        (Some(_), _) => HttpSniff::NotHttp,
        (None, v) if b"HTTP/1.1".starts_with(v) || b"HTTP/1.0".starts_with(v) => {
            HttpSniff::NeedMore
        }
        (None, _) => HttpSniff::NotHttp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello record with the given SNI and ALPN list.
    fn hello(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(s) = sni {
            let mut list = vec![0u8];
            list.extend((s.len() as u16).to_be_bytes());
            list.extend(s.as_bytes());
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend(list);
            exts.extend(0u16.to_be_bytes());
            exts.extend((data.len() as u16).to_be_bytes());
            exts.extend(data);
        }
        if !alpn.is_empty() {
            let mut list = Vec::new();
            for p in alpn {
                list.push(p.len() as u8);
                list.extend(p.as_bytes());
            }
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend(list);
            exts.extend(16u16.to_be_bytes());
            exts.extend((data.len() as u16).to_be_bytes());
            exts.extend(data);
        }
        let mut body = vec![3, 3];
        body.extend([0u8; 32]);
        body.push(0);
        body.extend(2u16.to_be_bytes());
        body.extend([0x13, 0x01]);
        body.extend([1, 0]);
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![1];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn client_hello_gives_sni_and_alpn() {
        let h = hello(Some("Reviews.Shop"), &["h2", "http/1.1"]);
        let want = TlsHello::Hello {
            sni: "reviews.shop".into(),
            alpn: vec!["h2".into(), "http/1.1".into()],
        };
        assert_eq!(client_hello(&h), want);
        for cut in [1, 4, 5, 20, h.len() - 1] {
            assert_eq!(client_hello(&h[..cut]), TlsHello::NeedMore, "cut at {cut}");
        }
        assert_eq!(
            client_hello(&hello(None, &[])),
            TlsHello::Hello {
                sni: String::new(),
                alpn: vec![]
            }
        );
        assert_eq!(client_hello(b"GET / HTTP/1.1\r\n"), TlsHello::NotTls);
        assert_eq!(client_hello(&[0x16, 9, 9]), TlsHello::NotTls);
    }

    #[test]
    fn client_hello_split_across_records() {
        let h = hello(Some("a.example"), &["istio-peer-exchange", "istio"]);
        // Split the handshake message into two records.
        let hs = &h[5..];
        let (a, b) = hs.split_at(10);
        let mut two = vec![0x16, 3, 1];
        two.extend((a.len() as u16).to_be_bytes());
        two.extend(a);
        two.extend([0x16, 3, 1]);
        two.extend((b.len() as u16).to_be_bytes());
        two.extend(b);
        assert_eq!(client_hello(&two), client_hello(&h));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 7u64;
        for len in 0..300 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect();
            let mut b = bytes.clone();
            if !b.is_empty() {
                b[0] = 0x16;
            }
            let _ = client_hello(&b);
            let _ = sniff_http(&bytes);
        }
    }

    #[test]
    fn http_sniffing() {
        let table: &[(&[u8], HttpSniff)] = &[
            (b"GET / HTTP/1.1\r\nhost: a\r\n", HttpSniff::Http11),
            (b"POST /x HTTP/1.0\r\n", HttpSniff::Http10),
            (b"GET / HTTP/1.", HttpSniff::NeedMore),
            (b"GE", HttpSniff::NeedMore),
            (b"GET /long/path", HttpSniff::NeedMore),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HttpSniff::H2c),
            (b"PRI * HTTP/2", HttpSniff::NeedMore),
            (b"\x16\x03\x01\x00", HttpSniff::NotHttp),
            (b"HELLO world\r\n", HttpSniff::NotHttp),
            (b"GET / SPDY/3\r\n", HttpSniff::NotHttp),
            (b"xyz", HttpSniff::NotHttp),
        ];
        for (bytes, want) in table {
            assert_eq!(
                sniff_http(bytes),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
