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
        let link = Arc::new(Link::new(ClientIdentity::new(key), endpoint, if testnet { "test" } else { "main" }));
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
                    mpsc::error::TrySendError::Full(_) => StorageError::TimedOut(self.timeout),
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
}

impl Link {
    fn new(me: ClientIdentity, endpoint: Endpoint, chain: &'static str) -> Link {
        Link { me, endpoint, chain, session: Mutex::new(None), ready: Mutex::new(None), next_id: AtomicU64::new(1) }
    }

    async fn post(&self, request: wire::HttpRequest, deadline: Instant) -> Result<Reply, StorageError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let wire::HttpRequest { url, headers, body } = request;
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        crate::outbound::request("POST", &url, &headers, body, left).await.map_err(StorageError::Unreachable)
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
