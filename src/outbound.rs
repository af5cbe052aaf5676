//! Outbound HTTP(S) calls to the services the server depends on (Firebase Cloud Messaging
//! and its OAuth2 endpoint, a payment wallet, the remote wallet storage): one request per
//! connection, bounded in time and in response size, TLS with the Mozilla roots. Owns the
//! typed errors of those calls ([`UrlError`], [`RequestError`]), whose texts name the URL or
//! host at fault.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Largest response body read from a service.
const MAX_RESPONSE: usize = 1 << 20;

/// A configured service URL that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("invalid URL {url}: {source}")]
    Invalid { url: String, source: http::uri::InvalidUri },
    #[error("expected an http:// or https:// URL, got {url}")]
    Scheme { url: String },
    #[error("no host in {url}")]
    NoHost { url: String },
    #[error("bad port in {url}")]
    Port { url: String },
}

/// A request that got no usable answer. An answer with any HTTP status is a [`Reply`], not
/// an error: the caller decides what a status means.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("invalid URL {url}: {source}")]
    Url { url: String, source: http::uri::InvalidUri },
    #[error("unsupported URL scheme in {url}")]
    Scheme { url: String },
    #[error("no host in {url}")]
    NoHost { url: String },
    #[error("{host}:{port}: {source}")]
    Connect { host: String, port: u16, source: std::io::Error },
    #[error("{host}: {source}")]
    ServerName { host: String, source: rustls::pki_types::InvalidDnsNameError },
    #[error("TLS with {host}: {source}")]
    Tls { host: String, source: std::io::Error },
    /// The HTTP/1 handshake or the exchange of the request and the response head failed.
    #[error("HTTP: {0}")]
    Http(#[source] hyper::Error),
    /// A header name or value the request cannot carry.
    #[error("{0}")]
    Request(#[source] http::Error),
    /// The body failed or exceeded [`MAX_RESPONSE`].
    #[error("reading the response: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{url}: no answer within {} s", .after.as_secs())]
    Timeout { url: String, after: Duration },
}

/// A response from a service.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// Every header as received (names lower-case); BRC-104 signs some of them.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Reply {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// TLS with the Mozilla roots (also the fleet's hops to `https://` node URLs).
pub(crate) fn tls() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Checks that `url` is an absolute http(s) URL with a host.
pub fn validate_url(url: &str) -> Result<(), UrlError> {
    let uri: Uri = url.parse().map_err(|source| UrlError::Invalid { url: url.to_string(), source })?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(UrlError::Scheme { url: url.to_string() }),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost { url: url.to_string() });
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let has_port = authority.rsplit_once(':').is_some_and(|(h, _)| !h.ends_with('[') && !authority.ends_with(']'));
    if has_port && uri.port_u16().is_none() {
        return Err(UrlError::Port { url: url.to_string() });
    }
    Ok(())
}

/// Sends one request. `headers` are added to `Host` (and `Content-Length`, set by hyper).
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Reply, RequestError> {
    tokio::time::timeout(timeout, request_inner(method, url, headers, body))
        .await
        .map_err(|_| RequestError::Timeout { url: url.to_string(), after: timeout })?
}

async fn request_inner(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Reply, RequestError> {
    let uri: Uri = url.parse().map_err(|source| RequestError::Url { url: url.to_string(), source })?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(RequestError::Scheme { url: url.to_string() }),
    };
    let host =
        uri.host().ok_or_else(|| RequestError::NoHost { url: url.to_string() })?.trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = match TcpStream::connect((host.as_str(), port)).await {
        Ok(tcp) => tcp,
        Err(source) => return Err(RequestError::Connect { host, port, source }),
    };
    let _ = tcp.set_nodelay(true);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| host.clone());
    if https {
        let name = match rustls::pki_types::ServerName::try_from(host.clone()) {
            Ok(name) => name,
            Err(source) => return Err(RequestError::ServerName { host, source }),
        };
        let tls = match tokio_rustls::TlsConnector::from(tls()).connect(name, tcp).await {
            Ok(tls) => tls,
            Err(source) => return Err(RequestError::Tls { host, source }),
        };
        send(tls, method, &authority, &path, headers, body).await
    } else {
        send(tcp, method, &authority, &path, headers, body).await
    }
}

async fn send<S>(
    io: S,
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Reply, RequestError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(RequestError::Http)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut b = http::Request::builder().method(method).uri(path).header("host", authority);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body))).map_err(RequestError::Request)?;
    let resp = sender.send_request(req).await.map_err(RequestError::Http)?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = Limited::new(resp.into_body(), MAX_RESPONSE).collect().await.map_err(RequestError::Body)?.to_bytes();
    Ok(Reply { status, headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(validate_url("https://fcm.googleapis.com/v1").is_ok());
        assert!(validate_url("http://127.0.0.1:3321").is_ok());
        assert!(validate_url("ftp://x").is_err());
        assert!(validate_url("not a url").is_err());
        assert!(validate_url("/relative").is_err());
        assert_eq!(
            validate_url("ftp://x").unwrap_err().to_string(),
            "expected an http:// or https:// URL, got ftp://x"
        );
        assert_eq!(validate_url("http://x:notaport").unwrap_err().to_string(), "bad port in http://x:notaport");
        assert!(validate_url("not a url").unwrap_err().to_string().starts_with("invalid URL not a url: "));
    }

    #[tokio::test]
    async fn request_errors_name_the_target() {
        let e = request("GET", "ftp://x/", &[], Vec::new(), Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(e.to_string(), "unsupported URL scheme in ftp://x/");
        // A port nobody listens on: the error names host and port and keeps the io error.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = request("GET", &format!("http://127.0.0.1:{port}/"), &[], Vec::new(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(&e, RequestError::Connect { port: p, .. } if *p == port), "{e:?}");
        assert!(e.to_string().starts_with(&format!("127.0.0.1:{port}: ")), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }
}
