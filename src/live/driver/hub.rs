//! The live channel shared by every core ([`LiveHub`]): the server identity, the store, the
//! settings, the seed of each core's id generator, and the one delivery seam ([`Fanout`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::mpsc;

use super::core::CoreMsg;
use super::registry::Registry;
use super::CORE_QUEUE;
use crate::auth::ServerAuth;
use crate::domain::send::LiveMessage;
use crate::domain::{IdentityKey, LiveDelivery};
use crate::live::connection::ConnectionShared;
use crate::live::events::{Delivery, StoreOutcome, StoreRequest, StoreToken};
use crate::live::LiveConfig;
use crate::store::Store;

/// A store request under way; its outcome goes back to the connection.
pub(super) type StoreFuture = Pin<Box<dyn Future<Output = (StoreToken, StoreOutcome)>>>;

/// The other nodes of a fleet as the delivery seam sees them (`REDIS_URL`; implemented by
/// `fleet::broker::Broker`). Every method returns at once: the broker's work happens on its
/// own thread, so a slow or absent broker never holds up a request or a connection.
pub trait RemoteNodes: Send + Sync + 'static {
    /// A delivery made on this node: hand it to the other nodes that hold its recipient.
    fn publish(&self, delivery: &Arc<Delivery>);
    /// This node's connections of `identity` changed (one was bound or unbound): it may now
    /// hold its first or have lost its last, so its interest in the identity may change.
    fn interest_changed(&self, identity: &str);
    /// Whether deliveries reach the other nodes now (false while the broker is unreachable).
    fn is_up(&self) -> bool;
}

/// The single place where a [`Delivery`] leaves the connection that caused it (or the HTTP
/// request that stored it) for the cores holding its recipient: the identity registry and the
/// cores' mailboxes. Every delivery goes through [`Fanout::publish`].
///
/// In a fleet the [`RemoteNodes`] plug in here: [`Fanout::publish`] also hands each delivery
/// to them, binding and unbinding tell them which identities this node holds, and what they
/// bring in from other nodes comes back through [`Fanout::publish_local`].
pub struct Fanout {
    registry: Registry,
    mailboxes: Vec<mpsc::Sender<CoreMsg>>,
    /// `max_recipient_connections`: only the newest this many connections of the recipient
    /// (on this node) receive a delivery.
    newest: Option<usize>,
    /// The other nodes, once the fleet's broker is attached ([`Fanout::attach`]).
    remote: OnceLock<Arc<dyn RemoteNodes>>,
}

impl Fanout {
    /// Hands `delivery` to this node's connections of its recipient ([`Fanout::publish_local`])
    /// and, in a fleet, to the other nodes.
    pub fn publish(&self, delivery: Delivery) {
        let d = Arc::new(delivery);
        self.publish_local(&d);
        if let Some(remote) = self.remote.get() {
            remote.publish(&d);
        }
    }

    /// Attaches the other nodes of a fleet; false if some were attached already.
    pub fn attach(&self, remote: Arc<dyn RemoteNodes>) -> bool {
        self.remote.set(remote).is_ok()
    }

    /// Whether a delivery to `recipient` may reach anyone: a connection on this node, or, in
    /// a fleet whose broker is reachable, possibly one on another node.
    pub fn may_reach(&self, recipient: &str) -> bool {
        self.registry.connections_of(recipient) > 0 || self.remote.get().is_some_and(|r| r.is_up())
    }

    /// One more connection of `identity` on `core` ([`Registry::try_bind`]); the other nodes
    /// hear of it.
    pub(super) fn bind(&self, identity: &str, core: usize, seq: u64, max: Option<usize>) -> bool {
        let bound = self.registry.try_bind(identity, core, seq, max);
        if bound {
            if let Some(remote) = self.remote.get() {
                remote.interest_changed(identity);
            }
        }
        bound
    }

    /// A connection of `identity` is gone ([`Registry::unbind`]); the other nodes hear of it.
    pub(super) fn unbind(&self, identity: &str, core: usize, seq: u64) {
        self.registry.unbind(identity, core, seq);
        if let Some(remote) = self.remote.get() {
            remote.interest_changed(identity);
        }
    }

    /// Hands `d` to every core of this node with one of the newest `max_recipient_connections`
    /// connections bound to its recipient. A core whose mailbox is full misses it, with a
    /// warning (the message is stored anyway).
    pub fn publish_local(&self, d: &Arc<Delivery>) {
        let targets = self.registry.targets(&d.recipient, self.newest);
        for (core, from_seq) in targets {
            if self.mailboxes[core].try_send(CoreMsg::Deliver(d.clone(), from_seq)).is_err() {
                tracing::warn!(core, recipient = %d.recipient, "live delivery dropped: core mailbox full");
            }
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The mailbox of `core` (for handing a session's request to its owner).
    pub(super) fn mailbox(&self, core: usize) -> Option<&mpsc::Sender<CoreMsg>> {
        self.mailboxes.get(core)
    }
}

/// The live channel shared by every core.
pub struct LiveHub {
    pub(super) auth: Arc<ServerAuth>,
    store: Store,
    pub(super) config: LiveConfig,
    /// The domain's body cap of a send (`MESSAGE_BOX_MAX_MESSAGE_BODY_BYTES`), shared with
    /// HTTP; kept here, not in the per-connection [`LiveConfig`].
    max_message_body_bytes: Option<usize>,
    pub(super) fanout: Fanout,
    pub(super) receivers: Mutex<Vec<Option<mpsc::Receiver<CoreMsg>>>>,
    /// Seeds each core's generator of session and socket ids.
    ids: Mutex<StdRng>,
    /// Live sessions open in the process, on all cores (`max_connections`).
    sessions: AtomicUsize,
    /// The sequence of identity bindings, process-wide (the registry's "newest").
    bind_seq: AtomicU64,
}

impl LiveHub {
    /// The live channel of `cores` cores, its ids from the operating system's randomness.
    pub fn new(auth: Arc<ServerAuth>, store: Store, config: LiveConfig, cores: usize) -> Arc<LiveHub> {
        Self::with_rng(auth, store, config, cores, StdRng::from_os_rng())
    }

    /// The same hub, with the request bounds HTTP sends are held to (the body cap); call it
    /// on a hub just built, before it is shared.
    pub fn with_message_limits(mut self: Arc<Self>, limits: &crate::domain::Limits) -> Arc<Self> {
        Arc::get_mut(&mut self).expect("a hub not shared yet").max_message_body_bytes = limits.max_message_body_bytes;
        self
    }

    /// As [`Self::new`], every id derived from `ids` (seeded in tests).
    pub fn with_rng(
        auth: Arc<ServerAuth>,
        store: Store,
        config: LiveConfig,
        cores: usize,
        ids: StdRng,
    ) -> Arc<LiveHub> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..cores).map(|_| mpsc::channel(CORE_QUEUE)).unzip();
        Arc::new(LiveHub {
            auth,
            store,
            config,
            max_message_body_bytes: crate::domain::Limits::default().max_message_body_bytes,
            fanout: Fanout {
                registry: Registry::new(),
                mailboxes: senders,
                newest: config.max_recipient_connections,
                remote: OnceLock::new(),
            },
            receivers: Mutex::new(receivers.into_iter().map(Some).collect()),
            ids: Mutex::new(ids),
            sessions: AtomicUsize::new(0),
            bind_seq: AtomicU64::new(0),
        })
    }

    /// Takes a place for a new session; false when `max_connections` are open.
    pub(super) fn reserve_session(&self) -> bool {
        let max = self.config.max_connections.unwrap_or(usize::MAX);
        self.sessions.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// A session reserved with [`Self::reserve_session`] ended.
    pub(super) fn release_session(&self) {
        let _ = self.sessions.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Live sessions open in the process.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Acquire)
    }

    /// The next binding's sequence number.
    pub(super) fn next_bind_seq(&self) -> u64 {
        self.bind_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub fn registry(&self) -> &Registry {
        self.fanout.registry()
    }

    /// The delivery seam ([`Fanout`]).
    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// What the connections of one core share, with that core's own id generator.
    pub(super) fn core_shared(&self) -> Arc<ConnectionShared> {
        let rng = StdRng::from_rng(&mut *self.ids.lock().unwrap_or_else(|p| p.into_inner()));
        ConnectionShared::new(self.auth.clone(), rng)
    }

    /// Every delivery, from HTTP and from WebSockets, leaves through the [`Fanout`].
    pub(super) fn route(&self, delivery: Delivery) {
        self.fanout.publish(delivery);
    }

    /// Runs a connection's store request (see [`Self::store_live`]).
    pub(super) fn store(&self, r: StoreRequest) -> StoreFuture {
        let store = self.store.clone();
        let token = r.token;
        let max_body = self.max_message_body_bytes;
        Box::pin(async move { (token, LiveHub::store_live(store, max_body, r).await) })
    }

    /// A live message through the domain's gate, then stored raw.
    async fn store_live(store: Store, max_body: Option<usize>, r: StoreRequest) -> StoreOutcome {
        // Both keys come from the BRC-103 layer and `split_room`, written canonically.
        let message = LiveMessage {
            sender: IdentityKey::from_canonical(r.sender),
            recipient: IdentityKey::from_canonical(r.recipient),
            message_box: r.message_box,
            message_id: r.message_id,
            body: r.body,
        };
        crate::domain::send::store_live(&store, max_body, message).await
    }
}

impl LiveDelivery for LiveHub {
    fn is_listening(&self, recipient: &str) -> bool {
        self.fanout.may_reach(recipient)
    }

    fn deliver(&self, delivery: Delivery) {
        self.route(delivery);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{PrivateKey, SessionConfig};
    use crate::live::{StoreOutcome, StoreRequest, StoreToken};
    use crate::store::StoreOptions;

    /// The hub holds live sends to the body cap HTTP sends are held to.
    #[test]
    fn live_sends_get_the_http_body_cap() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = crate::store::open("sqlite::memory:", &StoreOptions::default()).await.unwrap();
            store.migrate().await.unwrap();
            let auth = Arc::new(ServerAuth::new(PrivateKey::random(), SessionConfig::default()));
            let limits = crate::domain::Limits { max_message_body_bytes: Some(4), ..Default::default() };
            let hub = LiveHub::new(auth, store, LiveConfig::default(), 1).with_message_limits(&limits);
            let recipient = PrivateKey::random().public_key().to_hex();
            let request = |body: &str| StoreRequest {
                token: StoreToken(1),
                sender: PrivateKey::random().public_key().to_hex(),
                recipient: recipient.clone(),
                message_box: "inbox".into(),
                message_id: body.into(),
                body: body.into(),
                room_id: format!("{recipient}-inbox"),
            };
            assert_eq!(hub.store(request("12345")).await.1, StoreOutcome::BodyTooLarge { max: 4 });
            assert_eq!(hub.store(request("1234")).await.1, StoreOutcome::Stored);
        });
    }
}
