//! Accepting delivery-fee payments: the one wallet call the server makes
//! (`internalizeAction` of the fee output), behind an interface so the server never
//! silently accepts a paid delivery it could not verify.
//!
//! - [`NoWallet`] (the default): every paid delivery is refused with a clear error.
//! - [`HttpJsonWallet`]: a BRC-100 wallet reached over its HTTP JSON interface
//!   (`POST <base>/internalizeAction`, http or https), whose root key must be `SERVER_PRIVATE_KEY`.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

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

/// A BRC-100 wallet behind its HTTP JSON interface (e.g. a wallet-toolbox or Go wallet at
/// `http://127.0.0.1:3321`).
#[derive(Debug, Clone)]
pub struct HttpJsonWallet {
    base: String,
    originator: String,
    timeout: Duration,
}

impl HttpJsonWallet {
    /// `url` is `http[s]://host[:port][/base]`.
    pub fn new(url: &str, originator: &str) -> Result<Self, String> {
        crate::outbound::validate_url(url)?;
        Ok(HttpJsonWallet {
            base: url.trim_end_matches('/').to_string(),
            originator: originator.to_string(),
            timeout: Duration::from_secs(30),
        })
    }

    async fn call(&self, method: &str, args: Value) -> Result<Value, String> {
        let body = serde_json::to_vec(&args).map_err(|e| e.to_string())?;
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("origin", self.originator.as_str()),
            ("originator", self.originator.as_str()),
        ];
        let url = format!("{}/{method}", self.base);
        let reply = crate::outbound::request("POST", &url, &headers, body, self.timeout)
            .await
            .map_err(|e| format!("wallet unreachable: {e}"))?;
        let value: Value = serde_json::from_slice(&reply.body)
            .map_err(|_| format!("wallet answered HTTP {} with a non-JSON body", reply.status))?;
        if !(200..300).contains(&reply.status) || value.get("isError").and_then(Value::as_bool) == Some(true) {
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
            let result = self.call("internalizeAction", body).await?;
            Ok(result.get("accepted").and_then(Value::as_bool).unwrap_or(false))
        })
    }

    fn describe(&self) -> String {
        format!("HTTP JSON wallet at {}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wallet_urls() {
        assert_eq!(HttpJsonWallet::new("http://127.0.0.1:3321", "x").unwrap().base, "http://127.0.0.1:3321");
        assert_eq!(HttpJsonWallet::new("https://wallet/api/", "x").unwrap().base, "https://wallet/api");
        assert!(HttpJsonWallet::new("ftp://x", "x").is_err());
        assert!(HttpJsonWallet::new("http://x:notaport", "x").is_err());
    }
}
