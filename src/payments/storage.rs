//! Delivery fees internalized into the server's wallet at the remote wallet storage
//! (`WALLET_STORAGE_URL`), as the original's wallet (`Setup.createWalletClientNoEnv`) does:
//! the storage is a `@bsv/wallet-toolbox` `StorageServer`, reached by BRC-103-signed
//! JSON-RPC as the server's own identity (`SERVER_PRIVATE_KEY`).
//!
//! [`WalletStorage`] is the [`PaymentAcceptor`]. It owns one thread with its own runtime,
//! so the storage's latency and its background work never sit on a core serving requests:
//! - at start-up it connects in the background (handshake, `makeAvailable`,
//!   `findOrInsertUser`) and retries with backoff until the storage answers; the server
//!   serves meanwhile;
//! - a paid send hands its `internalizeAction` to that thread and waits at most the
//!   configured timeout; a storage that cannot be reached is [`StorageError::unavailable`]
//!   (503 to the sender), never a hang;
//! - a storage that forgot our session (restarted) answers 401: we handshake again and
//!   retry the call once.
//!
//! The wire format and its checks are sans-IO in [`wire`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::time::Instant;

use super::{Internalize, PaymentAcceptor, PaymentError, PaymentFuture};
use crate::auth::{ClientIdentity, ClientSession, PrivateKey};
use crate::outbound::{Reply, UrlError};

#[path = "storage_wire.rs"]
pub mod wire;

pub use wire::{default_url, Endpoint, StorageError};

/// Paid sends waiting for the storage thread at once; more are refused as unavailable.
const QUEUE: usize = 1024;

/// Waits between background connection attempts: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The remote wallet storage as the server's payment acceptor.
#[derive(Debug)]
pub struct WalletStorage {
    jobs: mpsc::Sender<Job>,
    url: String,
    timeout: Duration,
}

struct Job {
    args: Internalize,
    reply: oneshot::Sender<Result<bool, StorageError>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl WalletStorage {
    /// Starts the storage thread for `url`, signing as `key`; `testnet` is `BSV_NETWORK`'s
    /// chain (checked against the storage's, logged when they differ). `timeout` bounds one
    /// paid send's whole exchange with the storage.
    pub fn start(key: PrivateKey, url: &str, testnet: bool, timeout: Duration) -> Result<WalletStorage, UrlError> {
        let endpoint = Endpoint::parse(url)?;
        let (jobs, queue) = mpsc::channel(QUEUE);
        let link =
            Arc::new(Link::new(ClientIdentity::new(key), endpoint, if testnet { "test" } else { "main" }, timeout));
        std::thread::Builder::new()
            .name("wallet-storage".into())
            .spawn(move || run(link, queue, timeout))
            .expect("spawning the wallet storage thread");
        Ok(WalletStorage { jobs, url: url.to_string(), timeout })
    }
}

impl PaymentAcceptor for WalletStorage {
    fn internalize(&self, args: Internalize) -> PaymentFuture<'_> {
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            if let Err(e) = self.jobs.try_send(Job { args, reply }) {
                return Err(match e {
                    mpsc::error::TrySendError::Full(_) => StorageError::Busy,
                    mpsc::error::TrySendError::Closed(_) => StorageError::Stopped,
                }
                .into());
            }
            // The thread answers within `timeout`; the extra second only guards against a
            // thread that died mid-call.
            match tokio::time::timeout(self.timeout + Duration::from_secs(1), answer).await {
                Ok(Ok(result)) => result.map_err(PaymentError::from),
                Ok(Err(_)) => Err(StorageError::Stopped.into()),
                Err(_) => Err(StorageError::TimedOut(self.timeout).into()),
            }
        })
    }

    fn describe(&self) -> String {
        format!("remote wallet storage at {}", self.url)
    }
}

/// The storage thread: a runtime of its own that serves the queue and connects in the
/// background, until every [`WalletStorage`] handle is dropped.
fn run(link: Arc<Link>, mut queue: mpsc::Receiver<Job>, timeout: Duration) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "wallet storage: cannot start its runtime; paid deliveries will fail");
            return;
        }
    };
    rt.block_on(async {
        tokio::spawn(connect_in_background(link.clone(), timeout));
        while let Some(job) = queue.recv().await {
            let link = link.clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + timeout;
                let result = match tokio::time::timeout_at(deadline, link.internalize(&job.args, deadline)).await {
                    Ok(r) => r,
                    Err(_) => Err(StorageError::TimedOut(timeout)),
                };
                let _ = job.reply.send(result);
            });
        }
    });
    // A DNS lookup in flight must not hold the process (or a test) at its end.
    rt.shutdown_background();
}

/// Start-up: handshake, `makeAvailable`, `findOrInsertUser`, retried until they work, so
/// the operator learns from the log whether payments can be taken, and the first paid send
/// finds the session ready.
async fn connect_in_background(link: Arc<Link>, timeout: Duration) {
    let mut wait = RETRY_FIRST;
    loop {
        let deadline = Instant::now() + timeout;
        match tokio::time::timeout_at(deadline, link.ready(deadline)).await {
            Ok(Ok(ready)) => {
                tracing::info!(
                    storage = %link.endpoint.rpc,
                    storage_identity = %ready.settings.storage_identity_key,
                    storage_name = %ready.settings.storage_name,
                    chain = %ready.settings.chain,
                    user_id = ready.user.user_id,
                    "wallet storage ready for delivery payments"
                );
                return;
            }
            Ok(Err(e)) if !e.unavailable() => {
                // It answered but refused: retrying the same questions will not help; a paid
                // send asks again and reports it.
                tracing::error!(storage = %link.endpoint.rpc, error = %e, "wallet storage refused the server");
                return;
            }
            Ok(Err(e)) => tracing::warn!(
                storage = %link.endpoint.rpc, error = %e, retry_in_s = wait.as_secs(),
                "wallet storage not reachable; paid deliveries answer 503 until it is"
            ),
            Err(_) => tracing::warn!(
                storage = %link.endpoint.rpc, timeout_ms = timeout.as_millis() as u64, retry_in_s = wait.as_secs(),
                "wallet storage did not answer in time; paid deliveries answer 503 until it does"
            ),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// What the storage told at connection time, kept as the toolbox's `WalletStorageManager`
/// keeps it (its `makeAvailable` runs once per wallet).
#[derive(Debug, Clone)]
struct Ready {
    settings: wire::Settings,
    user: wire::User,
}

impl Ready {
    /// The toolbox writes only to the user's active storage (`WERR_NOT_ACTIVE` otherwise).
    fn active(&self) -> bool {
        self.user.active_storage == self.settings.storage_identity_key
    }
}

/// Our side of the link to the storage: identity, session, what `makeAvailable` said.
struct Link {
    me: ClientIdentity,
    endpoint: Endpoint,
    chain: &'static str,
    /// Held across a handshake so that concurrent calls wait for one handshake.
    session: Mutex<Option<ClientSession>>,
    ready: Mutex<Option<Ready>>,
    /// JSON-RPC ids, from 1 as the toolbox's client counts them.
    next_id: AtomicU64,
    /// One paid send's bound (`WALLET_STORAGE_TIMEOUT_MS`), named in timeout errors.
    timeout: Duration,
}

impl Link {
    fn new(me: ClientIdentity, endpoint: Endpoint, chain: &'static str, timeout: Duration) -> Link {
        let (session, ready, next_id) = (Mutex::new(None), Mutex::new(None), AtomicU64::new(1));
        Link { me, endpoint, chain, session, ready, next_id, timeout }
    }

    async fn post(&self, request: wire::HttpRequest, deadline: Instant) -> Result<Reply, StorageError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let wire::HttpRequest { url, headers, body } = request;
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        match crate::outbound::request("POST", &url, &headers, body, left).await {
            Ok(reply) => Ok(reply),
            // The call's time ran out here rather than in the caller's deadline: the same.
            Err(crate::outbound::RequestError::Timeout { .. }) => Err(StorageError::TimedOut(self.timeout)),
            Err(e) => Err(StorageError::Unreachable(e)),
        }
    }

    /// The current session, after a handshake if there is none.
    async fn session(&self, deadline: Instant) -> Result<ClientSession, StorageError> {
        let mut current = self.session.lock().await;
        if let Some(s) = current.as_ref() {
            return Ok(s.clone());
        }
        let (request, pending) = wire::handshake_request(&self.me, &self.endpoint);
        let reply = self.post(request, deadline).await?;
        let session = wire::finish_handshake(&self.me, pending, &reply)?;
        tracing::debug!(storage = %self.endpoint.auth, identity = %session.server_hex, "wallet storage: handshake done");
        *current = Some(session.clone());
        Ok(session)
    }

    /// Drops `stale` unless another call already replaced it.
    async fn forget(&self, stale: &ClientSession) {
        let mut current = self.session.lock().await;
        if current.as_ref().is_some_and(|s| s.client_nonce == stale.client_nonce) {
            *current = None;
        }
    }

    /// One JSON-RPC call; when the storage no longer knows the session (401), one more on a
    /// new session.
    async fn call(&self, method: &'static str, params: &[Value], deadline: Instant) -> Result<Value, StorageError> {
        let mut retried = false;
        loop {
            let session = self.session(deadline).await?;
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (request, call) = wire::rpc_request(&self.me, &session, &self.endpoint, method, params, id)?;
            let reply = self.post(request, deadline).await?;
            match wire::rpc_reply(&session, &call, &reply) {
                Err(StorageError::Unsigned { status: 401, .. }) if !retried => {
                    tracing::info!(storage = %self.endpoint.rpc, "wallet storage forgot our session; handshaking again");
                    self.forget(&session).await;
                    retried = true;
                }
                other => return other,
            }
        }
    }

    /// `makeAvailable` and `findOrInsertUser`, once.
    async fn ready(&self, deadline: Instant) -> Result<Ready, StorageError> {
        if let Some(r) = self.ready.lock().await.as_ref() {
            return Ok(r.clone());
        }
        let settings = wire::parse_settings(&self.call("makeAvailable", &[], deadline).await?)?;
        let identity = Value::from(self.me.identity_hex());
        let user = wire::parse_user(&self.call("findOrInsertUser", &[identity], deadline).await?)?;
        let ready = Ready { settings, user };
        if ready.settings.chain != self.chain {
            tracing::warn!(
                storage_chain = %ready.settings.chain, our_chain = self.chain,
                "the wallet storage is on another chain than BSV_NETWORK says"
            );
        }
        if !ready.active() {
            tracing::warn!(
                active_storage = %ready.user.active_storage, storage_identity = %ready.settings.storage_identity_key,
                "the wallet storage is not the server identity's active storage; paid deliveries will fail ({})",
                wire::NOT_ACTIVE
            );
        }
        *self.ready.lock().await = Some(ready.clone());
        Ok(ready)
    }

    async fn internalize(&self, args: &Internalize, deadline: Instant) -> Result<bool, StorageError> {
        let ready = self.ready(deadline).await?;
        if !ready.active() {
            return Err(StorageError::NotActive);
        }
        let params = wire::internalize_params(self.me.identity_hex(), ready.user.user_id, args);
        wire::parse_internalized(&self.call("internalizeAction", &params, deadline).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args() -> Internalize {
        Internalize { tx: json!([1, 2, 3]), outputs: vec![json!({"outputIndex": 0})], description: "x".repeat(5) }
    }

    /// A storage that accepts connections and never answers: the paid send gets an
    /// "unavailable" error after the timeout, not a hang.
    #[tokio::test]
    async fn a_silent_storage_is_unavailable_after_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let storage = WalletStorage::start(PrivateKey::random(), &url, false, Duration::from_millis(800)).unwrap();
        let started = std::time::Instant::now();
        let e = storage.internalize(args()).await.unwrap_err();
        let took = started.elapsed();
        assert!(e.unavailable(), "{e}");
        assert!(matches!(e, PaymentError::Storage(StorageError::TimedOut(_))), "{e:?}");
        assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(3), "{took:?}");
        drop(listener);
    }

    /// Nobody listens: unavailable at once, whatever the timeout.
    #[tokio::test]
    async fn a_closed_port_is_unavailable_at_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/");
        let storage = WalletStorage::start(PrivateKey::random(), &url, false, Duration::from_secs(30)).unwrap();
        assert_eq!(storage.describe(), format!("remote wallet storage at {url}"));
        let started = std::time::Instant::now();
        let e = storage.internalize(args()).await.unwrap_err();
        assert!(matches!(&e, PaymentError::Storage(StorageError::Unreachable(_))), "{e:?}");
        assert!(e.unavailable());
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    /// A storage that answers the handshake with an error page: unavailable, with the status.
    #[tokio::test]
    async fn a_storage_that_refuses_the_handshake_is_unavailable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = "<html>bad gateway</html>";
                let head =
                    format!("HTTP/1.1 502 Bad Gateway\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = s.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        let storage = WalletStorage::start(PrivateKey::random(), &url, false, Duration::from_secs(5)).unwrap();
        let e = storage.internalize(args()).await.unwrap_err();
        assert!(e.unavailable(), "{e}");
        assert_eq!(e.to_string(), "wallet storage handshake failed: HTTP 502: <html>bad gateway</html>");
    }
}
