//! The per-core driver of the live channel: it wires [`ConnectionCore`]s to hyper requests,
//! WebSocket streams, timers, the store and the other cores.
//!
//! - Each Engine.IO session lives in one local task on the core its sid names. Requests for
//!   it that land on another core (the Node client opens a TCP connection per poll) are
//!   forwarded to the owner through that core's mailbox and answered through a oneshot; a
//!   WebSocket upgraded on another core has its TCP stream moved to the owner.
//! - The identity registry ([`Registry`]) says which cores hold connections of an identity,
//!   sharded by a hash of the identity; a delivery goes only to those cores, which hand it to
//!   the connections bound to the recipient. Cost is proportional to the recipient's
//!   connections, never to all connections.
//! - Every queue is bounded: a connection whose input queue overflows is dropped as too slow,
//!   a WebSocket write that cannot complete in time drops the connection, deliveries to a core
//!   whose mailbox is full are dropped with a warning (the message is stored anyway).

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::engineio::{
    self, ErrorCode, HttpReply, PollStart, RequestHead, Route, SessionRequest, Transmit, Transport, UpgradeRefused,
    WsId,
};
use super::events::{Delivery, StoreOutcome, StoreRequest, StoreToken};
use super::{Command, ConnectionCore, LiveConfig};
use crate::auth::ServerAuth;
use crate::domain::send::LiveMessage;
use crate::domain::{IdentityKey, LiveDelivery};
use crate::store::Store;

/// Inputs queued per connection before it counts as too slow and is dropped.
const CONNECTION_QUEUE: usize = 256;
/// Messages queued per core mailbox.
const CORE_QUEUE: usize = 65_536;
/// A WebSocket write (one flush) that takes longer drops the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Text frames kept for a WebSocket whose stream has not been adopted yet (see
/// [`Connection::unadopted`]); the open packet and a few more at most in practice.
const MAX_UNADOPTED: usize = 64;

type Reply<T> = oneshot::Sender<T>;

/// Work for one connection task.
///
/// Kept to 16 bytes (the large, rare variants are boxed): each connection's queue allocates
/// its first block of inputs up front, so the size of `Input` is per-connection memory.
enum Input {
    Poll(Reply<HttpReply>),
    Post(Box<PostInput>),
    Upgrade(Reply<Result<WsId, UpgradeRefused>>),
    Adopt(Box<AdoptInput>),
    Deliver(Arc<Delivery>),
    Close,
}

struct PostInput {
    content_length: Option<usize>,
    content_type: Option<String>,
    body: Bytes,
    reply: Reply<HttpReply>,
}

struct AdoptInput {
    ws: WsId,
    stream: std::net::TcpStream,
    read: Bytes,
}

/// Work for one core.
enum CoreMsg {
    /// An input for the session `sid` owned by this core.
    Session(String, Input),
    /// A delivery for the local connections bound to its recipient.
    Deliver(Arc<Delivery>),
}

/// identity → connections per core.
type RegistryShard = Mutex<HashMap<String, Vec<u32>>>;

/// Which cores hold connections of which identity; sharded so no lock is global.
pub struct Registry {
    shards: Box<[RegistryShard]>,
    hasher: RandomState,
    cores: usize,
}

const REGISTRY_SHARDS: usize = 64;

impl Registry {
    fn new(cores: usize) -> Self {
        Registry {
            shards: (0..REGISTRY_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            cores,
        }
    }

    fn shard(&self, identity: &str) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u32>>> {
        let i = (self.hasher.hash_one(identity) as usize) % REGISTRY_SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bind(&self, identity: &str, core: usize) {
        let mut s = self.shard(identity);
        let counts = s.entry(identity.to_string()).or_insert_with(|| vec![0; self.cores]);
        counts[core] += 1;
    }

    fn unbind(&self, identity: &str, core: usize) {
        let mut s = self.shard(identity);
        if let Some(counts) = s.get_mut(identity) {
            counts[core] = counts[core].saturating_sub(1);
            if counts.iter().all(|c| *c == 0) {
                s.remove(identity);
            }
        }
    }

    /// The cores with at least one connection bound to `identity`.
    pub fn cores_of(&self, identity: &str) -> Vec<usize> {
        self.shard(identity)
            .get(identity)
            .map(|c| c.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, _)| i).collect())
            .unwrap_or_default()
    }

    /// Connections bound to `identity` on all cores.
    pub fn connections_of(&self, identity: &str) -> u32 {
        self.shard(identity).get(identity).map(|c| c.iter().sum()).unwrap_or(0)
    }
}

/// The live channel shared by every core.
pub struct LiveHub {
    auth: Arc<ServerAuth>,
    store: Store,
    config: LiveConfig,
    registry: Registry,
    mailboxes: Vec<mpsc::Sender<CoreMsg>>,
    receivers: Mutex<Vec<Option<mpsc::Receiver<CoreMsg>>>>,
}

impl LiveHub {
    pub fn new(auth: Arc<ServerAuth>, store: Store, config: LiveConfig, cores: usize) -> Arc<LiveHub> {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..cores).map(|_| mpsc::channel(CORE_QUEUE)).unzip();
        Arc::new(LiveHub {
            auth,
            store,
            config,
            registry: Registry::new(cores),
            mailboxes: senders,
            receivers: Mutex::new(receivers.into_iter().map(Some).collect()),
        })
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    fn route(&self, delivery: Delivery) {
        let cores = self.registry.cores_of(&delivery.recipient);
        if cores.is_empty() {
            return;
        }
        let d = Arc::new(delivery);
        for core in cores {
            if self.mailboxes[core].try_send(CoreMsg::Deliver(d.clone())).is_err() {
                tracing::warn!(core, recipient = %d.recipient, "live delivery dropped: core mailbox full");
            }
        }
    }

    /// A live message through the domain's gate, then stored raw.
    async fn store_live(store: Store, r: StoreRequest) -> StoreOutcome {
        let (sender, recipient) = (IdentityKey::from_canonical(&r.sender), IdentityKey::from_canonical(&r.recipient));
        let message = LiveMessage {
            sender: &sender,
            recipient: &recipient,
            message_box: &r.message_box,
            message_id: &r.message_id,
            body: &r.body,
        };
        crate::domain::send::store_live(&store, message).await
    }
}

impl LiveDelivery for LiveHub {
    fn deliver(&self, delivery: Delivery) {
        self.route(delivery);
    }
}

/// This core's sessions.
struct LocalCore {
    index: usize,
    hub: Arc<LiveHub>,
    sessions: RefCell<HashMap<String, mpsc::Sender<Input>>>,
    /// identity → local sids bound to it.
    bound: RefCell<HashMap<String, Vec<String>>>,
}

thread_local! {
    static CORE: RefCell<Option<Rc<LocalCore>>> = const { RefCell::new(None) };
}

fn local() -> Option<Rc<LocalCore>> {
    CORE.with(|c| c.borrow().clone())
}

impl LocalCore {
    fn send(&self, sid: &str, input: Input) -> bool {
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

    fn deliver_local(&self, d: &Arc<Delivery>) {
        let sids = self.bound.borrow().get(&d.recipient).cloned().unwrap_or_default();
        for sid in sids {
            self.send(&sid, Input::Deliver(d.clone()));
        }
    }

    /// Sends an input to a session on any core; false when the session is unknown there.
    async fn to_session(&self, sid: &str, input: Input) -> bool {
        match engineio::sid_core(sid).map(usize::from) {
            Some(core) if core == self.index => self.send(sid, input),
            Some(core) if core < self.hub.mailboxes.len() => {
                self.hub.mailboxes[core].send(CoreMsg::Session(sid.to_string(), input)).await.is_ok()
            }
            _ => false,
        }
    }

    fn bind(&self, sid: &str, identity: &str) {
        self.bound.borrow_mut().entry(identity.to_string()).or_default().push(sid.to_string());
        self.hub.registry.bind(identity, self.index);
    }

    fn unbind(&self, sid: &str, identity: &str) {
        let mut bound = self.bound.borrow_mut();
        if let Some(sids) = bound.get_mut(identity) {
            if let Some(i) = sids.iter().position(|s| s == sid) {
                sids.swap_remove(i);
                self.hub.registry.unbind(identity, self.index);
            }
            if sids.is_empty() {
                bound.remove(identity);
            }
        }
    }

    fn spawn(self: &Rc<Self>, core: ConnectionCore) {
        let (tx, rx) = mpsc::channel(CONNECTION_QUEUE);
        let sid = core.sid().to_string();
        self.sessions.borrow_mut().insert(sid, tx);
        let task = Connection {
            core,
            local: self.clone(),
            held: None,
            ws: None,
            stores: VecDeque::new(),
            inflight: None,
            unadopted: Vec::new(),
        };
        // Boxed: an async fn taking `self` by value keeps the 1.5 KiB struct twice in its state
        // (the argument and the binding), which made each connection's task 4 KiB.
        tokio::task::spawn_local(Box::new(task).run(rx));
    }
}

/// Starts this thread's part of the live channel (call once per core, on its runtime).
pub fn start_core(hub: &Arc<LiveHub>, index: usize, shutdown: watch::Receiver<bool>) {
    let rx = hub.receivers.lock().unwrap_or_else(|p| p.into_inner())[index].take();
    let Some(mut rx) = rx else {
        tracing::error!(index, "live core started twice");
        return;
    };
    let core = Rc::new(LocalCore {
        index,
        hub: hub.clone(),
        sessions: RefCell::new(HashMap::new()),
        bound: RefCell::new(HashMap::new()),
    });
    CORE.with(|c| *c.borrow_mut() = Some(core.clone()));
    let mut stop = shutdown;
    tokio::task::spawn_local(async move {
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(CoreMsg::Session(sid, input)) => {
                        core.send(&sid, input);
                    }
                    Some(CoreMsg::Deliver(d)) => core.deliver_local(&d),
                    None => break,
                },
                _ = stop.wait_for(|s| *s) => break,
            }
        }
    });
}

/// Closes every live connection of this core (the clients reconnect elsewhere) and waits
/// for them to finish, up to `timeout`.
pub async fn stop_core(timeout: Duration) {
    let Some(core) = local() else { return };
    let senders: Vec<_> = core.sessions.borrow().values().cloned().collect();
    for s in senders {
        let _ = s.try_send(Input::Close);
    }
    let deadline = Instant::now() + timeout;
    while !core.sessions.borrow().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One session's task state.
struct Connection {
    core: ConnectionCore,
    local: Rc<LocalCore>,
    held: Option<Reply<HttpReply>>,
    ws: Option<(WsId, WebSocketStream<TcpStream>)>,
    stores: VecDeque<StoreRequest>,
    inflight: Option<StoreFuture>,
    /// Text frames the core addressed to a WebSocket before its stream arrived. A
    /// WebSocket-only handshake (`transport=websocket` without a sid) queues the open packet
    /// at once, while hyper hands the upgraded stream over only after the 101 is written
    /// ([`Input::Adopt`]); dropping those frames left the client waiting for `open` forever.
    unadopted: Vec<(WsId, String)>,
}

fn ws_config(max_payload: usize) -> WebSocketConfig {
    // Small buffers keep idle connections cheap; messages above maxPayload close with 1009.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(max_payload + 1024))
        .max_frame_size(Some(max_payload + 1024))
}

impl Connection {
    async fn run(mut self: Box<Self>, mut rx: mpsc::Receiver<Input>) {
        let sid = self.core.sid().to_string();
        let mut outgoing: Vec<String> = Vec::new();
        while self.drain(&mut outgoing).await {
            let deadline = self.core.next_timeout();
            tokio::select! {
                input = rx.recv() => match input {
                    Some(i) => self.on_input(i).await,
                    // Dropped as too slow (or the core is gone).
                    None => self.core.close(Instant::now()),
                },
                _ = sleep_until(deadline) => self.core.handle_timeout(Instant::now()),
                _ = held_closed(&mut self.held) => {
                    self.held = None;
                    self.core.poll_aborted(Instant::now());
                }
                (id, frame) = next_frame(&mut self.ws) => self.on_frame(id, frame),
                (token, outcome) = inflight(&mut self.inflight) => {
                    self.inflight = None;
                    self.core.store_outcome(Instant::now(), token, outcome);
                }
            }
        }
        // Gone: forget the session here and everywhere.
        self.local.sessions.borrow_mut().remove(&sid);
        if let Some(identity) = self.core.identity().map(str::to_string) {
            self.local.unbind(&sid, &identity);
        }
        if let Some((_, mut ws)) = self.ws.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
        }
    }

    async fn on_input(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Poll(reply) => match self.core.handle_poll(now) {
                PollStart::Respond(r) => {
                    let _ = reply.send(r);
                }
                PollStart::Held => {
                    if let Some(old) = self.held.replace(reply) {
                        let _ = old.send(HttpReply::status_only(400));
                    }
                }
            },
            Input::Post(post) => {
                let PostInput { content_length, content_type, body, reply } = *post;
                let r = match self.core.begin_post(now, content_length, content_type.as_deref()) {
                    Err(r) => r,
                    Ok(()) => self.core.finish_post(now, &body),
                };
                let _ = reply.send(r);
            }
            Input::Upgrade(reply) => {
                let _ = reply.send(self.core.begin_upgrade(now));
            }
            Input::Adopt(adopt) => {
                let AdoptInput { ws, stream, read } = *adopt;
                self.adopt(now, ws, stream, read).await
            }
            Input::Deliver(d) => {
                self.core.deliver(now, &d);
            }
            Input::Close => self.core.close(now),
        }
    }

    /// Takes over a WebSocket stream hyper has upgraded (possibly with bytes already read).
    async fn adopt(&mut self, now: Instant, ws: WsId, stream: std::net::TcpStream, read: Bytes) {
        match TcpStream::from_std(stream) {
            Ok(stream) => {
                if let Some((old, _)) = self.ws.take() {
                    self.core.ws_closed(now, old);
                }
                let cfg = ws_config(self.local.hub.config.engine.max_payload);
                let socket = if read.is_empty() {
                    WebSocketStream::from_raw_socket(stream, Role::Server, Some(cfg)).await
                } else {
                    WebSocketStream::from_partially_read(stream, read.to_vec(), Role::Server, Some(cfg)).await
                };
                self.ws = Some((ws, socket));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot adopt a WebSocket");
                self.core.ws_closed(now, ws);
            }
        }
    }

    fn on_frame(&mut self, id: WsId, frame: Frame) {
        let now = Instant::now();
        match frame {
            Some(Ok(Message::Text(t))) => self.core.ws_text(now, id, t.as_str()),
            Some(Ok(Message::Binary(b))) => self.core.ws_binary(now, id, &b),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | None => {
                self.ws = None;
                self.core.ws_closed(now, id);
            }
            Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                // Over maxPayload: close with 1009, as `ws` does.
                self.core.ws_text(now, id, &"x".repeat(self.local.hub.config.engine.max_payload + 1));
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket failed");
                self.ws = None;
                self.core.ws_closed(now, id);
            }
        }
    }

    /// Writes what the core produced and runs its commands. Returns false once the
    /// connection is finished.
    async fn drain(&mut self, outgoing: &mut Vec<String>) -> bool {
        loop {
            let mut close_ws: Option<(WsId, Option<u16>)> = None;
            while let Some(t) = self.core.poll_transmit() {
                match t {
                    Transmit::PollResponse(r) => match self.held.take() {
                        Some(tx) => {
                            let _ = tx.send(r);
                        }
                        None => tracing::debug!("poll response without a held poll"),
                    },
                    Transmit::WsText { ws, text } => match &self.ws {
                        Some((id, _)) if *id == ws => outgoing.push(text),
                        // Not adopted yet: kept for it (a stale id is discarded on adoption).
                        None if self.unadopted.len() < MAX_UNADOPTED => self.unadopted.push((ws, text)),
                        _ => {}
                    },
                    Transmit::WsClose { ws, code } => close_ws = Some((ws, code)),
                }
            }
            if let (Some((id, _)), false) = (&self.ws, self.unadopted.is_empty()) {
                let early: Vec<String> =
                    self.unadopted.drain(..).filter(|(w, _)| w == id).map(|(_, text)| text).collect();
                outgoing.splice(0..0, early);
            }
            if !outgoing.is_empty() {
                if let Some((id, ws)) = self.ws.as_mut() {
                    let id = *id;
                    let write = async {
                        for text in outgoing.drain(..) {
                            ws.feed(Message::text(text)).await?;
                        }
                        ws.flush().await
                    };
                    match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) | Err(_) => {
                            tracing::debug!("WebSocket write failed or timed out; dropping it");
                            outgoing.clear();
                            self.ws = None;
                            self.core.ws_closed(Instant::now(), id);
                            continue;
                        }
                    }
                }
                outgoing.clear();
            }
            if let Some((id, code)) = close_ws {
                if let Some((cur, mut ws)) = self.ws.take() {
                    if cur == id {
                        let frame = code.map(|c| tokio_tungstenite::tungstenite::protocol::CloseFrame {
                            code: c.into(),
                            reason: "".into(),
                        });
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(frame)).await;
                        self.core.ws_closed(Instant::now(), id);
                    } else {
                        self.ws = Some((cur, ws));
                    }
                }
            }
            let mut finished = false;
            while let Some(c) = self.core.poll_command() {
                match c {
                    Command::Bind { identity } => self.local.bind(self.core.sid(), &identity),
                    Command::Unbind { identity } => self.local.unbind(self.core.sid(), &identity),
                    Command::Store(r) => self.stores.push_back(r),
                    Command::Deliver(d) => self.local.hub.route(d),
                    Command::Closed(cause) => {
                        tracing::debug!(sid = self.core.sid(), %cause, "live connection closed");
                        finished = true;
                    }
                }
            }
            if self.inflight.is_none() {
                if let Some(r) = self.stores.pop_front() {
                    let store = self.local.hub.store.clone();
                    let token = r.token;
                    self.inflight = Some(Box::pin(async move { (token, LiveHub::store_live(store, r).await) }));
                }
            }
            if finished {
                // Pull the last transmits (a final poll answer, the WebSocket close).
                while let Some(t) = self.core.poll_transmit() {
                    if let Transmit::PollResponse(r) = t {
                        if let Some(tx) = self.held.take() {
                            let _ = tx.send(r);
                        }
                    }
                }
                if let Some(tx) = self.held.take() {
                    let _ = tx.send(ErrorCode::UnknownSid.http_reply());
                }
                return false;
            }
            return true;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

async fn held_closed(held: &mut Option<Reply<HttpReply>>) {
    match held {
        Some(tx) => tx.closed().await,
        None => std::future::pending().await,
    }
}

type Frame = Option<Result<Message, tokio_tungstenite::tungstenite::Error>>;

async fn next_frame(ws: &mut Option<(WsId, WebSocketStream<TcpStream>)>) -> (WsId, Frame) {
    match ws {
        Some((id, ws)) => (*id, ws.next().await),
        None => std::future::pending().await,
    }
}

type StoreFuture = Pin<Box<dyn Future<Output = (StoreToken, StoreOutcome)>>>;

async fn inflight(f: &mut Option<StoreFuture>) -> (StoreToken, StoreOutcome) {
    match f {
        Some(f) => f.as_mut().await,
        None => std::future::pending().await,
    }
}

type Body = Full<Bytes>;

fn to_response(r: HttpReply) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() = http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

fn upgrade_refused(code: ErrorCode) -> Response<Body> {
    let mut r = HttpReply::status_only(400);
    r.body = code.message().to_string();
    let mut resp = to_response(r);
    let h = resp.headers_mut();
    h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

fn is_websocket_upgrade(req: &http::Request<Incoming>) -> bool {
    let h = req.headers();
    req.method() == http::Method::GET
        && h.get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The `101 Switching Protocols` answer, or `None` when the handshake headers are wrong.
fn switching_protocols(req: &http::Request<Incoming>) -> Option<Response<Body>> {
    let h = req.headers();
    let key = h.get("sec-websocket-key")?;
    if h.get("sec-websocket-version").and_then(|v| v.to_str().ok()) != Some("13") {
        return None;
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let rh = r.headers_mut();
    rh.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    rh.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    rh.insert("sec-websocket-accept", HeaderValue::from_str(&accept).ok()?);
    rh.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    Some(r)
}

/// After the 101 is written, takes the raw TCP stream out of hyper and gives it to the
/// session's core (possibly this one).
fn adopt_after_upgrade(core: Rc<LocalCore>, req: http::Request<Incoming>, sid: String, ws: WsId) {
    tokio::task::spawn_local(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                return;
            }
        };
        let parts = match upgraded.downcast::<hyper_util::rt::TokioIo<TcpStream>>() {
            Ok(p) => p,
            Err(_) => {
                tracing::error!("upgraded connection is not a TCP stream");
                return;
            }
        };
        let stream = match parts.io.into_inner().into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot detach an upgraded stream");
                return;
            }
        };
        core.to_session(&sid, Input::Adopt(Box::new(AdoptInput { ws, stream, read: parts.read_buf }))).await;
    });
}

/// Answers a request under `/socket.io/` on the current core.
pub async fn handle(req: http::Request<Incoming>) -> Response<Body> {
    let Some(core) = local() else {
        return to_response(HttpReply::status_only(503));
    };
    let upgrade = is_websocket_upgrade(&req);
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().as_str().to_string();
    let route = engineio::route(&RequestHead { method: &method, query: &query, websocket_upgrade: upgrade });
    let now = Instant::now();
    let hub = core.hub.clone();
    match route {
        Err(rej) if rej.upgrade => upgrade_refused(rej.code),
        Err(rej) => to_response(rej.code.http_reply()),
        Ok(Route::Preflight) => {
            let acrh = req.headers().get("access-control-request-headers").and_then(|v| v.to_str().ok());
            to_response(HttpReply::preflight(acrh))
        }
        Ok(Route::Handshake(Transport::Polling)) => {
            let (conn, reply) = ConnectionCore::accept_polling(now, core.index as u8, hub.auth.clone(), &hub.config);
            core.spawn(conn);
            to_response(reply)
        }
        Ok(Route::Handshake(Transport::WebSocket)) => {
            let Some(resp) = switching_protocols(&req) else { return upgrade_refused(ErrorCode::BadRequest) };
            let (conn, ws) = ConnectionCore::accept_websocket(now, core.index as u8, hub.auth.clone(), &hub.config);
            let sid = conn.sid().to_string();
            core.spawn(conn);
            adopt_after_upgrade(core, req, sid, ws);
            resp
        }
        Ok(Route::Session { sid, request }) => match request {
            SessionRequest::Poll => {
                let (tx, rx) = oneshot::channel();
                if !core.to_session(&sid, Input::Poll(tx)).await {
                    return to_response(ErrorCode::UnknownSid.http_reply());
                }
                to_response(rx.await.unwrap_or_else(|_| ErrorCode::UnknownSid.http_reply()))
            }
            SessionRequest::Post => {
                let content_length = req
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let content_type =
                    req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
                let max = hub.config.engine.max_payload;
                if content_length.is_some_and(|n: usize| n > max) {
                    return to_response(HttpReply::status_only(413));
                }
                let body = match Limited::new(req.into_body(), max + 1).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                        return to_response(HttpReply::status_only(413));
                    }
                    Err(_) => return to_response(HttpReply::status_only(400)),
                };
                let (tx, rx) = oneshot::channel();
                let post = PostInput { content_length, content_type, body, reply: tx };
                if !core.to_session(&sid, Input::Post(Box::new(post))).await {
                    return to_response(ErrorCode::UnknownSid.http_reply());
                }
                to_response(rx.await.unwrap_or_else(|_| ErrorCode::UnknownSid.http_reply()))
            }
            SessionRequest::Upgrade => {
                let Some(resp) = switching_protocols(&req) else { return upgrade_refused(ErrorCode::BadRequest) };
                let (tx, rx) = oneshot::channel();
                if !core.to_session(&sid, Input::Upgrade(tx)).await {
                    return upgrade_refused(ErrorCode::UnknownSid);
                }
                match rx.await {
                    Ok(Ok(ws)) => {
                        adopt_after_upgrade(core, req, sid, ws);
                        resp
                    }
                    Ok(Err(_)) => upgrade_refused(ErrorCode::BadRequest),
                    Err(_) => upgrade_refused(ErrorCode::UnknownSid),
                }
            }
            SessionRequest::OtherMethod => to_response(HttpReply::status_only(500)),
            SessionRequest::Invalid(rej) if rej.upgrade => upgrade_refused(rej.code),
            SessionRequest::Invalid(rej) => to_response(rej.code.http_reply()),
        },
    }
}
