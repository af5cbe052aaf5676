//! Accepting delivery-fee payments: the one wallet call the server makes
//! (`internalizeAction` of the fee output), behind an interface so the server never
//! silently accepts a paid delivery it could not verify.
//!
//! - [`NoWallet`] (`WALLET_STORAGE_URL=none`): every paid delivery is refused with a clear error.
//! - [`HttpJsonWallet`]: a BRC-100 wallet reached over its HTTP JSON interface
//!   (`POST <base>/internalizeAction`, http or https), whose root key must be `SERVER_PRIVATE_KEY`.
//! - [`storage::WalletStorage`]: the remote wallet storage at `WALLET_STORAGE_URL`, as the
//!   original's wallet uses it.
//!
//! A failure is a [`PaymentError`]; its text is part of the `ERR_INTERNALIZE_FAILED`
//! description clients see, so the texts are fixed.
//!
//! No acceptor is asked before the payment passed the server's own checks ([`check`], on the
//! AtomicBEEF / BEEF / BUMP codec of [`beef`]) and its transaction was claimed in
//! `payment_replays` (`domain::send`), whichever wallet stands behind it.

pub mod beef;
pub mod check;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::{json, Value};

use crate::outbound::{RequestError, UrlError};

pub mod storage;

/// The arguments of `internalizeAction` for the delivery-fee output.
#[derive(Debug, Clone, PartialEq)]
pub struct Internalize {
    /// AtomicBEEF as the client sent it (a JSON array of byte values).
    pub tx: Value,
    /// The server's output(s), as sent by the client.
    pub outputs: Vec<Value>,
    pub description: String,
}

/// Why a payment could not be internalized (as opposed to being refused: `Ok(false)`).
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// No wallet is configured ([`NoWallet`]).
    #[error("{}", NO_WALLET_MESSAGE)]
    NoWallet,
    #[error("{0}")]
    Encode(#[source] serde_json::Error),
    #[error("wallet unreachable: {0}")]
    Unreachable(#[source] RequestError),
    #[error("wallet answered HTTP {status} with a non-JSON body")]
    NotJson { status: u16, source: serde_json::Error },
    /// The wallet answered with an error: a non-2xx status or `isError: true`. `message` is
    /// the wallet's own (`"wallet error"` when it gave none).
    #[error("{message}")]
    Wallet { status: u16, message: String },
    /// The remote wallet storage ([`storage::WalletStorage`]) failed or could not be reached.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
}

impl PaymentError {
    /// True when the payment could not be taken because the wallet could not be reached
    /// (the sender may retry: 503), false when it was refused or failed (500).
    pub fn unavailable(&self) -> bool {
        matches!(self, PaymentError::Storage(e) if e.unavailable())
    }
}

pub type PaymentFuture<'a> = Pin<Box<dyn Future<Output = Result<bool, PaymentError>> + Send + 'a>>;

/// Accepts (internalizes) a payment. `Ok(accepted)`; `Err` when the wallet failed.
pub trait PaymentAcceptor: Send + Sync + 'static {
    fn internalize(&self, args: Internalize) -> PaymentFuture<'_>;
    /// A short description for the startup log.
    fn describe(&self) -> String;
}

/// No wallet configured: paid deliveries fail, they are never accepted unchecked.
#[derive(Debug, Default)]
pub struct NoWallet;

pub const NO_WALLET_MESSAGE: &str =
    "this server accepts no delivery payments (WALLET_STORAGE_URL=none and no PAYMENT_WALLET_URL)";

impl PaymentAcceptor for NoWallet {
    fn internalize(&self, _args: Internalize) -> PaymentFuture<'_> {
        Box::pin(async { Err(PaymentError::NoWallet) })
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
    pub fn new(url: &str, originator: &str) -> Result<Self, UrlError> {
        crate::outbound::validate_url(url)?;
        Ok(HttpJsonWallet {
            base: url.trim_end_matches('/').to_string(),
            originator: originator.to_string(),
            timeout: Duration::from_secs(30),
        })
    }

    async fn call(&self, method: &str, args: Value) -> Result<Value, PaymentError> {
        let body = serde_json::to_vec(&args).map_err(PaymentError::Encode)?;
        let headers = [
            ("content-type", "application/json"),
            ("accept", "application/json"),
            ("origin", self.originator.as_str()),
            ("originator", self.originator.as_str()),
        ];
        let url = format!("{}/{method}", self.base);
        let reply = crate::outbound::request("POST", &url, &headers, body, self.timeout)
            .await
            .map_err(PaymentError::Unreachable)?;
        let value: Value = serde_json::from_slice(&reply.body)
            .map_err(|source| PaymentError::NotJson { status: reply.status, source })?;
        if !(200..300).contains(&reply.status) || value.get("isError").and_then(Value::as_bool) == Some(true) {
            let message = value.get("message").and_then(Value::as_str).unwrap_or("wallet error").to_string();
            return Err(PaymentError::Wallet { status: reply.status, message });
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

    /// These texts reach clients inside the `ERR_INTERNALIZE_FAILED` description.
    #[test]
    fn error_texts() {
        assert_eq!(PaymentError::NoWallet.to_string(), NO_WALLET_MESSAGE);
        let wallet = PaymentError::Wallet { status: 400, message: "bad beef".into() };
        assert_eq!(wallet.to_string(), "bad beef");
        let source = serde_json::from_slice::<Value>(b"<html>").unwrap_err();
        assert_eq!(
            PaymentError::NotJson { status: 502, source }.to_string(),
            "wallet answered HTTP 502 with a non-JSON body"
        );
        let unreachable = PaymentError::Unreachable(RequestError::Timeout {
            url: "http://127.0.0.1:3321/internalizeAction".into(),
            after: Duration::from_secs(30),
        });
        assert_eq!(
            unreachable.to_string(),
            "wallet unreachable: http://127.0.0.1:3321/internalizeAction: no answer within 30 s"
        );
        assert!(std::error::Error::source(&unreachable).is_some());
    }
}
