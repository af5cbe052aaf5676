//! One core's part of the live channel ([`LiveCore`]): its sessions, its mailbox loop, the
//! local half of the identity registry, and the session API the HTTP glue (and the tests)
//! call: open a session, hand a poll, a POST, an upgrade or an adopted stream to the session's
//! task, on whichever core owns it.
//!
//! The server's core setup creates the handle with [`LiveHub::start_core`] and passes it to
//! the HTTP layer; nothing is reached through thread-locals.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::hub::LiveHub;
use super::task::Connection;
use super::CONNECTION_QUEUE;
use crate::live::connection::ConnectionShared;
use crate::live::engineio::{self, ErrorCode, HttpReply, UpgradeRefused, WsId};
use crate::live::events::Delivery;
use crate::live::ConnectionCore;
use crate::metrics::Recorder;

pub(super) type Reply<T> = oneshot::Sender<T>;

/// The answer to an Engine.IO handshake (polling or WebSocket) while `max_connections` live
/// sessions are open: the newer upstream's capacity answer, `503` with `Retry-After: 1` and
/// `{"status":"error","code":"ERR_SERVER_BUSY","description":"The service is temporarily at
/// capacity."}`. socket.io-client treats it as a failed attempt and reconnects with its
/// back-off. (The newer server accepts the engine session and then disconnects the socket
/// with no event, after which the client never reconnects; refusing before any state is
/// cheaper and lets a real client in once there is room.)
pub fn at_capacity() -> HttpReply {
    HttpReply::busy(
        r#"{"status":"error","code":"ERR_SERVER_BUSY","description":"The service is temporarily at capacity."}"#
            .to_string(),
    )
}

/// Work for one connection task.
///
/// Kept to 16 bytes (the large, rare variants are boxed): each connection's queue allocates
/// its first block of inputs up front, so the size of `Input` is per-connection memory.
pub(super) enum Input {
    Poll(Reply<HttpReply>),
    Post(Box<PostInput>),
    Upgrade(Reply<Result<WsId, UpgradeRefused>>),
    Adopt(Box<AdoptInput>),
    Deliver(Arc<Delivery>),
    Close,
}

pub(super) struct PostInput {
    pub content_length: Option<usize>,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub reply: Reply<HttpReply>,
}

pub(super) struct AdoptInput {
    pub ws: WsId,
    pub stream: std::net::TcpStream,
    pub read: Bytes,
}

/// Work for one core.
pub(super) enum CoreMsg {
    /// An input for the session `sid` owned by this core.
    Session(String, Input),
    /// A delivery for the local connections bound to its recipient at or after the bind
    /// sequence number (see [`Registry::targets`](super::Registry::targets)).
    Deliver(Arc<Delivery>, u64),
}

/// This core's sessions.
pub(super) struct LocalCore {
    pub index: usize,
    pub hub: Arc<LiveHub>,
    /// Shared by this core's connections: the server auth and this core's id generator.
    shared: Arc<ConnectionShared>,
    sessions: RefCell<HashMap<String, mpsc::Sender<Input>>>,
    /// identity → local sids bound to it, with their bind sequence numbers.
    bound: RefCell<HashMap<String, Vec<(u64, String)>>>,
    /// Connection tasks still running (a session dropped as too slow runs until its queue
    /// is drained); `idle` is notified when it reaches zero.
    tasks: Cell<usize>,
    idle: Notify,
    /// This core's metrics shard: open connections, deliveries, live handshakes.
    pub metrics: Recorder,
}

/// The handle of one core's live channel, created by [`LiveHub::start_core`] on that core's
/// thread and passed to its HTTP layer. Cheap to clone; not `Send`.
#[derive(Clone)]
pub struct LiveCore(pub(super) Rc<LocalCore>);

impl LiveHub {
    /// Starts core `index`'s part of the live channel: call once per core, on its runtime
    /// (inside a `LocalSet`). `None` if that core was started already.
    pub fn start_core(
        self: &Arc<Self>,
        index: usize,
        shutdown: watch::Receiver<bool>,
        metrics: Recorder,
    ) -> Option<LiveCore> {
        let rx = self.receivers.lock().unwrap_or_else(|p| p.into_inner()).get_mut(index).and_then(Option::take);
        let Some(mut rx) = rx else {
            tracing::error!(index, "live core started twice");
            return None;
        };
        let core = Rc::new(LocalCore {
            index,
            hub: self.clone(),
            shared: self.core_shared(),
            sessions: RefCell::new(HashMap::new()),
            bound: RefCell::new(HashMap::new()),
            tasks: Cell::new(0),
            idle: Notify::new(),
            metrics,
        });
        let mut stop = shutdown;
        let mailbox = core.clone();
        tokio::task::spawn_local(async move {
            loop {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(CoreMsg::Session(sid, input)) => {
                            mailbox.send(&sid, input);
                        }
                        Some(CoreMsg::Deliver(d, from_seq)) => mailbox.deliver_local(&d, from_seq),
                        None => break,
                    },
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        });
        Some(LiveCore(core))
    }
}

impl LiveCore {
    pub fn index(&self) -> usize {
        self.0.index
    }

    /// Closes every live connection of this core (the clients reconnect elsewhere) and waits
    /// until their tasks have finished, up to `timeout`.
    pub async fn stop(&self, timeout: Duration) {
        let core = &self.0;
        let senders: Vec<_> = core.sessions.borrow().values().cloned().collect();
        for s in senders {
            let _ = s.try_send(Input::Close);
        }
        let finished = async {
            loop {
                // Registered before the check, so a task ending in between still wakes us.
                let idle = core.idle.notified();
                if core.tasks.get() == 0 {
                    break;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(timeout, finished).await.is_err() {
            tracing::warn!(core = core.index, left = core.tasks.get(), "live connections did not close in time");
        }
    }

    /// Connection tasks running on this core.
    pub fn connections(&self) -> usize {
        self.0.tasks.get()
    }
}

impl LocalCore {
    /// Queues an input for a local session; false when the session is unknown (or was just
    /// dropped as too slow).
    pub fn send(&self, sid: &str, input: Input) -> bool {
        let sender = self.sessions.borrow().get(sid).cloned();
        let Some(sender) = sender else { return false };
        match sender.try_send(input) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // The connection cannot keep up: dropping its queue ends it.
                tracing::warn!(sid, "live connection too slow; dropping it");
                self.sessions.borrow_mut().remove(sid);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Hands `d` to the local connections bound to its recipient as number `from_seq` or
    /// later.
    pub fn deliver_local(&self, d: &Arc<Delivery>, from_seq: u64) {
        let sids: Vec<String> = self
            .bound
            .borrow()
            .get(&d.recipient)
            .map(|l| l.iter().filter(|(seq, _)| *seq >= from_seq).map(|(_, sid)| sid.clone()).collect())
            .unwrap_or_default();
        for sid in sids {
            self.send(&sid, Input::Deliver(d.clone()));
        }
    }

    /// Sends an input to a session on any core; false when the session is unknown there.
    pub async fn to_session(&self, sid: &str, input: Input) -> bool {
        match engineio::sid_core(sid).map(usize::from) {
            Some(core) if core == self.index => self.send(sid, input),
            Some(core) => match self.hub.fanout.mailbox(core) {
                Some(mailbox) => mailbox.send(CoreMsg::Session(sid.to_string(), input)).await.is_ok(),
                None => false,
            },
            None => false,
        }
    }

    /// Registers `sid` as a connection of `identity`; false (nothing registered) when the
    /// identity has `max_connections_per_identity` connections already.
    pub fn bind(&self, sid: &str, identity: &str) -> bool {
        let seq = self.hub.next_bind_seq();
        let max = self.hub.config.max_connections_per_identity;
        if !self.hub.fanout.bind(identity, self.index, seq, max) {
            return false;
        }
        self.bound.borrow_mut().entry(identity.to_string()).or_default().push((seq, sid.to_string()));
        true
    }

    /// Unregisters `sid` from `identity` (nothing when it was not registered).
    pub fn unbind(&self, sid: &str, identity: &str) {
        let mut bound = self.bound.borrow_mut();
        if let Some(sids) = bound.get_mut(identity) {
            if let Some(i) = sids.iter().position(|(_, s)| s == sid) {
                let (seq, _) = sids.swap_remove(i);
                self.hub.fanout.unbind(identity, self.index, seq);
            }
            if sids.is_empty() {
                bound.remove(identity);
            }
        }
    }

    /// The session is gone: forget it here.
    pub fn forget(&self, sid: &str) {
        self.sessions.borrow_mut().remove(sid);
    }

    /// A connection task ended.
    pub fn task_finished(&self) {
        self.metrics.live_connection_closed();
        self.hub.release_session();
        let left = self.tasks.get().saturating_sub(1);
        self.tasks.set(left);
        if left == 0 {
            self.idle.notify_waiters();
        }
    }

    fn spawn(self: &Rc<Self>, core: ConnectionCore) {
        let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
        self.sessions.borrow_mut().insert(core.sid().to_string(), tx);
        self.tasks.set(self.tasks.get() + 1);
        self.metrics.live_connection_opened();
        tokio::task::spawn_local(Connection::new(core, self.clone()).run(rx));
    }

    // --- the session API ---

    /// A polling handshake: the new session's open packet, or [`at_capacity`] when
    /// `max_connections` sessions are open.
    pub fn open_polling(self: &Rc<Self>, now: Instant) -> HttpReply {
        if !self.hub.reserve_session() {
            return at_capacity();
        }
        let (conn, reply) = ConnectionCore::accept_polling(now, self.index as u8, &self.shared, &self.hub.config);
        self.spawn(conn);
        reply
    }

    /// A direct WebSocket handshake: the new session's id and the id of its WebSocket, whose
    /// stream is to be adopted ([`Self::adopt`]); `None` when `max_connections` sessions are
    /// open (answer [`at_capacity`] instead of the 101).
    pub fn open_websocket(self: &Rc<Self>, now: Instant) -> Option<(String, WsId)> {
        if !self.hub.reserve_session() {
            return None;
        }
        let (conn, ws) = ConnectionCore::accept_websocket(now, self.index as u8, &self.shared, &self.hub.config);
        let sid = conn.sid().to_string();
        self.spawn(conn);
        Some((sid, ws))
    }

    /// A polling GET: answered now, or once the session has something to send.
    pub async fn poll(&self, sid: &str) -> HttpReply {
        let (tx, rx) = oneshot::channel();
        if !self.to_session(sid, Input::Poll(tx)).await {
            return ErrorCode::UnknownSid.http_reply();
        }
        rx.await.unwrap_or_else(|_| ErrorCode::UnknownSid.http_reply())
    }

    /// A polling POST whose body was read in full.
    pub async fn post(
        &self,
        sid: &str,
        content_length: Option<usize>,
        content_type: Option<String>,
        body: Bytes,
    ) -> HttpReply {
        let (tx, rx) = oneshot::channel();
        let post = PostInput { content_length, content_type, body, reply: tx };
        if !self.to_session(sid, Input::Post(Box::new(post))).await {
            return ErrorCode::UnknownSid.http_reply();
        }
        rx.await.unwrap_or_else(|_| ErrorCode::UnknownSid.http_reply())
    }

    /// A WebSocket upgrade of a polling session: the new socket's id, the refusal, or
    /// `None` for an unknown session.
    pub async fn upgrade(&self, sid: &str) -> Option<Result<WsId, UpgradeRefused>> {
        let (tx, rx) = oneshot::channel();
        if !self.to_session(sid, Input::Upgrade(tx)).await {
            return None;
        }
        rx.await.ok()
    }

    /// Hands an upgraded TCP stream (and the bytes already read from it) to its session.
    pub async fn adopt(&self, sid: &str, ws: WsId, stream: std::net::TcpStream, read: Bytes) {
        self.to_session(sid, Input::Adopt(Box::new(AdoptInput { ws, stream, read }))).await;
    }
}
