//! A lean HTTP/1.1 client connection for load: one keep-alive TCP stream, requests written
//! from a reused buffer, responses parsed with `httparse` (Content-Length, chunked, or
//! close-delimited bodies). No task per connection and no header maps, so the generator
//! spends its CPU on the BRC-104 crypto, not on HTTP machinery.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where requests go.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header (`host:port` of the URL).
    pub host: String,
    /// Prefix of the business routes (`ROUTING_PREFIX`), `""` or `/api`.
    pub prefix: String,
}

impl Target {
    /// Parses `http://host[:port][/prefix]` and resolves the host.
    pub async fn resolve(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported (put a TLS proxy in front for https)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(format!("{url}: no host"));
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: the host has no address"))?;
        Ok(Target { addr, host: authority.to_string(), prefix: path.trim_end_matches('/').to_string() })
    }

    /// A business route under the routing prefix.
    pub fn route(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }
}

/// A TCP connection to `addr`, from `source` when given (the `abuse` scenarios' legitimate
/// client comes from another loopback address than the attack, as a real one would).
pub async fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(ip) = source else { return TcpStream::connect(addr).await };
    let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(addr).await
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect: {0}")]
    Connect(io::Error),
    #[error("connection: {0}")]
    Io(io::Error),
    #[error("connection closed by the server")]
    Closed,
    #[error("bad response: {0}")]
    Protocol(String),
}

/// A response as received. Header names are lowercase.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One keep-alive connection (reconnecting when the server closed it).
pub struct Conn {
    target: Target,
    stream: Option<TcpStream>,
    /// Local address to connect from (`None`: the OS's choice).
    source: Option<IpAddr>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Connections opened (the first one included).
    pub connects: u64,
}

const MAX_HEADERS: usize = 64;
const MAX_HEAD: usize = 64 * 1024;

impl Conn {
    pub fn new(target: Target) -> Conn {
        Conn::from_source(target, None)
    }

    /// A connection whose sockets are bound to `source` before connecting.
    pub fn from_source(target: Target, source: Option<IpAddr>) -> Conn {
        Conn {
            target,
            stream: None,
            source,
            rbuf: Vec::with_capacity(8192),
            wbuf: Vec::with_capacity(4096),
            connects: 0,
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Drops the stream (after a timeout the connection's state is unknown).
    pub fn reset(&mut self) {
        self.stream = None;
        self.rbuf.clear();
    }

    async fn connect(&mut self) -> Result<(), HttpError> {
        let s = connect_from(self.target.addr, self.source).await.map_err(HttpError::Connect)?;
        let _ = s.set_nodelay(true);
        self.stream = Some(s);
        self.rbuf.clear();
        self.connects += 1;
        Ok(())
    }

    /// Sends a request and reads its response. A reused connection that the server had
    /// closed (nothing of the response read) is reopened and the request sent once more.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Response, HttpError> {
        self.wbuf.clear();
        write_head(&mut self.wbuf, method, target, &self.target.host, headers, body.len());
        self.wbuf.extend_from_slice(body);
        let reused = self.stream.is_some();
        match self.exchange().await {
            Err(HttpError::Closed | HttpError::Io(_)) if reused => {
                self.stream = None;
                self.exchange().await
            }
            other => other,
        }
    }

    async fn exchange(&mut self) -> Result<Response, HttpError> {
        if self.stream.is_none() {
            self.connect().await?;
        }
        let stream = self.stream.as_mut().expect("connected");
        if let Err(e) = stream.write_all(&self.wbuf).await {
            self.stream = None;
            return Err(HttpError::Io(e));
        }
        let result = self.read_response().await;
        match &result {
            Ok((_, true)) | Err(_) => self.stream = None,
            Ok((_, false)) => {}
        }
        result.map(|(r, _)| r)
    }

    async fn fill(&mut self) -> Result<usize, HttpError> {
        let stream = self.stream.as_mut().ok_or(HttpError::Closed)?;
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(8192);
        }
        stream.read_buf(&mut self.rbuf).await.map_err(HttpError::Io)
    }

    /// Reads one response; the flag says the connection must be closed after it.
    async fn read_response(&mut self) -> Result<(Response, bool), HttpError> {
        let (status, headers, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut r = httparse::Response::new(&mut slots);
            match r.parse(&self.rbuf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = r.code.unwrap_or(0);
                    let headers: Vec<(String, String)> = r
                        .headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                        .collect();
                    if (100..200).contains(&status) && status != 101 {
                        // An interim response (100 Continue): skip it.
                        self.rbuf.drain(..n);
                        continue;
                    }
                    break (status, headers, n);
                }
                Ok(httparse::Status::Partial) => {
                    if self.rbuf.len() > MAX_HEAD {
                        return Err(HttpError::Protocol("response head too large".into()));
                    }
                    if self.fill().await? == 0 {
                        return Err(if self.rbuf.is_empty() {
                            HttpError::Closed
                        } else {
                            HttpError::Protocol("connection closed inside a response head".into())
                        });
                    }
                }
                Err(e) => return Err(HttpError::Protocol(e.to_string())),
            }
        };
        let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let mut close = get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let chunked = get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = get("content-length").map(|v| v.trim().parse::<usize>());
        let body = if status == 204 || status == 304 {
            self.rbuf.drain(..head_len);
            Vec::new()
        } else if chunked {
            loop {
                match decode_chunked(&self.rbuf[head_len..]) {
                    Ok(Some((body, used))) => {
                        self.rbuf.drain(..head_len + used);
                        break body;
                    }
                    Ok(None) => {
                        if self.fill().await? == 0 {
                            return Err(HttpError::Protocol("connection closed inside a chunked body".into()));
                        }
                    }
                    Err(e) => return Err(HttpError::Protocol(e.into())),
                }
            }
        } else if let Some(length) = length {
            let n = length.map_err(|_| HttpError::Protocol("bad content-length".into()))?;
            while self.rbuf.len() < head_len + n {
                if self.fill().await? == 0 {
                    return Err(HttpError::Protocol("connection closed inside a body".into()));
                }
            }
            let body = self.rbuf[head_len..head_len + n].to_vec();
            self.rbuf.drain(..head_len + n);
            body
        } else {
            // Close-delimited.
            while self.fill().await? > 0 {}
            close = true;
            let body = self.rbuf[head_len..].to_vec();
            self.rbuf.clear();
            body
        };
        Ok((Response { status, headers, body }, close))
    }
}

fn write_head(out: &mut Vec<u8>, method: &str, target: &str, host: &str, headers: &[(String, String)], len: usize) {
    use std::io::Write;
    let _ = write!(out, "{method} {target} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len}\r\n");
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Decodes a complete chunked body at the start of `buf`: the body and the bytes used, or
/// `None` if more bytes are needed.
pub fn decode_chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, &'static str> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(eol) = find_crlf(&buf[pos..]) else { return Ok(None) };
        let line = std::str::from_utf8(&buf[pos..pos + eol]).map_err(|_| "bad chunk size")?;
        let size_hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| "bad chunk size")?;
        pos += eol + 2;
        if size == 0 {
            // Trailers end with an empty line.
            loop {
                let Some(eol) = find_crlf(&buf[pos..]) else { return Ok(None) };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF");
        }
        pos += size + 2;
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies() {
        let wire = b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\n\r\nNEXT";
        let (body, used) = decode_chunked(wire).unwrap().unwrap();
        assert_eq!(body, b"Wikipedia ");
        assert_eq!(&wire[used..], b"NEXT");
        assert_eq!(decode_chunked(b"4\r\nWi").unwrap(), None);
        assert_eq!(decode_chunked(b"0\r\n").unwrap(), None);
        assert!(decode_chunked(b"zz\r\n").is_err());
        let trailer = b"1\r\na\r\n0\r\nx-t: 1\r\n\r\n";
        assert_eq!(decode_chunked(trailer).unwrap().unwrap(), (b"a".to_vec(), trailer.len()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn urls() {
        let t = Target::resolve("http://127.0.0.1:9/api/").await.unwrap();
        assert_eq!(t.addr, "127.0.0.1:9".parse().unwrap());
        assert_eq!((t.host.as_str(), t.route("/sendMessage")), ("127.0.0.1:9", "/api/sendMessage".into()));
        let t = Target::resolve("http://localhost:8080").await.unwrap();
        assert_eq!(t.route("/listMessages"), "/listMessages");
        assert!(Target::resolve("https://example.com").await.is_err());
    }

    /// A tiny server that answers in the three body framings, keeping the connection open.
    #[tokio::test(flavor = "current_thread")]
    async fn keep_alive_and_framings() {
        use tokio::io::AsyncBufReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut s = tokio::io::BufReader::new(s);
            let answers: [&[u8]; 3] = [
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nbye",
            ];
            for a in answers {
                // Read one request head (these requests have empty bodies).
                let mut line = String::new();
                loop {
                    line.clear();
                    s.read_line(&mut line).await.unwrap();
                    if line == "\r\n" {
                        break;
                    }
                }
                s.get_mut().write_all(a).await.unwrap();
            }
        });
        let target = Target { addr, host: addr.to_string(), prefix: String::new() };
        let mut c = Conn::new(target);
        let r = c.request("GET", "/a", &[], b"").await.unwrap();
        assert_eq!((r.status, r.body.as_slice(), r.header("x-a")), (200, &b"hello"[..], Some("b")));
        let r = c.request("GET", "/b", &[], b"").await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"abc"[..]));
        let r = c.request("GET", "/c", &[], b"").await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (500, &b"bye"[..]));
        assert_eq!(c.connects, 1);
    }
}
