//! Outbound HTTP(S) calls to the services the server depends on (Firebase Cloud Messaging
//! and its OAuth2 endpoint, a payment wallet): one request per connection, bounded in time
//! and in response size, TLS with the Mozilla roots.

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

/// A response from a service.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

fn tls() -> Arc<rustls::ClientConfig> {
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
pub fn validate_url(url: &str) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("expected an http:// or https:// URL, got {url}")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("no host in {url}"));
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let has_port = authority.rsplit_once(':').is_some_and(|(h, _)| !h.ends_with('[') && !authority.ends_with(']'));
    if has_port && uri.port_u16().is_none() {
        return Err(format!("bad port in {url}"));
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
) -> Result<Reply, String> {
    tokio::time::timeout(timeout, request_inner(method, url, headers, body))
        .await
        .map_err(|_| format!("{url}: no answer within {} s", timeout.as_secs()))?
}

async fn request_inner(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<Reply, String> {
    let uri: Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(format!("unsupported URL scheme in {url}")),
    };
    let host = uri.host().ok_or_else(|| format!("no host in {url}"))?.trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("{host}:{port}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let authority = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_else(|| host.clone());
    if https {
        let name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(tls())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}: {e}"))?;
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
) -> Result<Reply, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut b = http::Request::builder().method(method).uri(path).header("host", authority);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| format!("reading the response: {e}"))?
        .to_bytes();
    Ok(Reply { status, body })
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
    }
}
