//! Accepting delivery-fee payments: the one wallet call the server makes
//! (`internalizeAction` of the fee output), behind an interface so the server never
//! silently accepts a paid delivery it could not verify.
//!
//! - [`NoWallet`] (the default): every paid delivery is refused with a clear error.
//! - [`HttpJsonWallet`]: a BRC-100 wallet reached over its HTTP JSON interface
//!   (`POST <base>/internalizeAction`), whose root key must be `SERVER_PRIVATE_KEY`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

/// The arguments of `internalizeAction` for the delivery-fee output.
#[derive(Debug, Clone, PartialEq)]
pub struct Internalize {
    /// AtomicBEEF as the client sent it (a JSON array of byte values).
    pub tx: Value,
    /// The server's output(s), as sent by the client.
    pub outputs: Vec<Value>,
    pub description: String,
}

pub type PaymentFuture<'a> = Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>>;

/// Accepts (internalizes) a payment. `Ok(accepted)`; `Err(message)` when the wallet failed.
pub trait PaymentAcceptor: Send + Sync + 'static {
    fn internalize(&self, args: Internalize) -> PaymentFuture<'_>;
    /// A short description for the startup log.
    fn describe(&self) -> String;
}

/// No wallet configured: paid deliveries fail, they are never accepted unchecked.
#[derive(Debug, Default)]
pub struct NoWallet;

pub const NO_WALLET_MESSAGE: &str =
    "this server has no wallet configured to accept delivery payments (set PAYMENT_WALLET_URL)";

impl PaymentAcceptor for NoWallet {
    fn internalize(&self, _args: Internalize) -> PaymentFuture<'_> {
        Box::pin(async { Err(NO_WALLET_MESSAGE.to_string()) })
    }

    fn describe(&self) -> String {
        "none (paid deliveries are refused)".into()
    }
}

/// A BRC-100 wallet behind its HTTP JSON interface (plain HTTP, e.g. a local
/// wallet-toolbox or Go wallet at `http://127.0.0.1:3321`).
#[derive(Debug, Clone)]
pub struct HttpJsonWallet {
    host: String,
    port: u16,
    base_path: String,
    originator: String,
    timeout: Duration,
}

impl HttpJsonWallet {
    /// `url` is `http://host[:port][/base]`.
    pub fn new(url: &str, originator: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            if url.starts_with("https://") {
                "https is not supported; run the wallet on a local http address".to_string()
            } else {
                "expected an http:// URL".to_string()
            }
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.contains('[') => {
                (h.to_string(), p.parse::<u16>().map_err(|_| format!("bad port in {url}"))?)
            }
            _ => (authority.to_string(), 80),
        };
        if host.is_empty() {
            return Err(format!("no host in {url}"));
        }
        Ok(HttpJsonWallet {
            host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
            port,
            base_path: path.to_string(),
            originator: originator.to_string(),
            timeout: Duration::from_secs(30),
        })
    }

    async fn call(&self, method: &str, args: Value) -> Result<Value, String> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("wallet unreachable at {}:{}: {e}", self.host, self.port))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("wallet connection failed: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let body = serde_json::to_vec(&args).map_err(|e| e.to_string())?;
        let req = http::Request::post(format!("{}/{method}", self.base_path))
            .header("host", format!("{}:{}", self.host, self.port))
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .header("origin", &self.originator)
            .header("originator", &self.originator)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| format!("wallet request failed: {e}"))?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(|e| format!("wallet response failed: {e}"))?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|_| format!("wallet answered HTTP {status} with a non-JSON body"))?;
        if !status.is_success() || value.get("isError").and_then(Value::as_bool) == Some(true) {
            let msg = value.get("message").and_then(Value::as_str).unwrap_or("wallet error");
            return Err(msg.to_string());
        }
        Ok(value)
    }
}

impl PaymentAcceptor for HttpJsonWallet {
    fn internalize(&self, args: Internalize) -> PaymentFuture<'_> {
        Box::pin(async move {
            let body = json!({"tx": args.tx, "outputs": args.outputs, "description": args.description});
            let result = tokio::time::timeout(self.timeout, self.call("internalizeAction", body))
                .await
                .map_err(|_| "the wallet did not answer in time".to_string())??;
            Ok(result.get("accepted").and_then(Value::as_bool).unwrap_or(false))
        })
    }

    fn describe(&self) -> String {
        format!("HTTP JSON wallet at http://{}:{}{}", self.host, self.port, self.base_path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wallet_urls() {
        let w = HttpJsonWallet::new("http://127.0.0.1:3321", "http://mb").unwrap();
        assert_eq!((w.host.as_str(), w.port, w.base_path.as_str()), ("127.0.0.1", 3321, ""));
        let w = HttpJsonWallet::new("http://wallet/api/", "x").unwrap();
        assert_eq!((w.host.as_str(), w.port, w.base_path.as_str()), ("wallet", 80, "/api"));
        assert!(HttpJsonWallet::new("https://x", "x").is_err());
        assert!(HttpJsonWallet::new("ftp://x", "x").is_err());
        assert!(HttpJsonWallet::new("http://x:notaport", "x").is_err());
    }
}
