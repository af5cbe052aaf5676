//! One live connection, composed: an Engine.IO session, its Socket.IO socket on namespace
//! `/`, the BRC-103 tunnel and the MessageBox events. This is what a per-core driver holds,
//! one per Engine.IO session, on the core that owns the session id.
//!
//! The driver's whole job around a [`ConnectionCore`]: feed it HTTP and WebSocket input and
//! time, write what [`ConnectionCore::poll_transmit`] gives, run what
//! [`ConnectionCore::poll_command`] asks (register the identity, store, deliver), and drop the
//! core after [`Command::Closed`]. See the module docs of [`super`] for the full contract.
//!
//! Protocol timing the driver must not reimplement lives here too: frames addressed to a
//! WebSocket whose stream the driver has not adopted yet are kept until
//! [`ConnectionCore::ws_adopted`], and store requests are handed out one at a time, in order,
//! each after the previous outcome came back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::auth::ServerAuth;

use super::authsocket::{AuthTunnel, Inbound, AUTH_EVENT};
use super::engineio::{
    new_sid, new_socket_id, CloseReason, EngineEvent, EngineSession, HttpReply, PollStart, Transmit, UpgradeRefused,
    WsId,
};
use super::events::{
    Delivery, EventAction, MessageBoxEvents, StoreOutcome, StoreRequest, StoreToken, AUTH_FAILED, REASON_IDENTITY_LIMIT,
};
use super::socketio::{self, DecodeError, Packet, DEFAULT_NAMESPACE};
use super::LiveConfig;
use crate::metrics::RateScope;

/// Text frames kept for a WebSocket whose stream has not been adopted yet; the open packet
/// and a few more at most in practice.
const MAX_UNADOPTED: usize = 64;

/// What the connections of one core share: the server's BRC-103 side and the random source of
/// session and socket ids (OS-seeded in production, seeded in tests so ids are reproducible).
/// Held as one `Arc` per connection, where the server auth alone was before.
#[derive(Debug)]
pub struct ConnectionShared {
    auth: Arc<ServerAuth>,
    ids: Mutex<StdRng>,
}

impl ConnectionShared {
    pub fn new(auth: Arc<ServerAuth>, ids: StdRng) -> Arc<ConnectionShared> {
        Arc::new(ConnectionShared { auth, ids: Mutex::new(ids) })
    }

    /// Ids from a generator seeded by the operating system.
    pub fn os_seeded(auth: Arc<ServerAuth>) -> Arc<ConnectionShared> {
        Self::new(auth, StdRng::from_os_rng())
    }

    pub fn auth(&self) -> &Arc<ServerAuth> {
        &self.auth
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, StdRng> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Work for the driver, in the order it arose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The connection proved `identity` (compressed lowercase hex): register it so deliveries
    /// for that identity reach it. Comes at most once per Socket.IO connect.
    Bind { identity: String },
    /// The client disconnected its socket (`41`) but the engine session stays: unregister.
    Unbind { identity: String },
    /// Store a message, then call [`ConnectionCore::store_outcome`] with its token (on any
    /// connection gone by then, deliver [`StoreRequest::delivery`] yourself when stored).
    /// The next one comes only after that outcome, so stores run in order, one at a time.
    Store(StoreRequest),
    /// Hand to every connection, on every core, bound to `recipient`:
    /// [`ConnectionCore::deliver`].
    Deliver(Delivery),
    /// The session is over (it is unbound too): write the remaining transmits, then drop it.
    Closed(CloseCause),
    /// An event was refused by a per-socket rate limit (count it).
    RateLimited(RateScope),
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseCause {
    #[error("engine.io: {0}")]
    Engine(CloseReason),
    /// An undecodable Socket.IO packet (socket.io closes the connection on these).
    #[error("socket.io: {0}")]
    SocketIo(DecodeError),
    /// A Socket.IO packet not allowed in the connection's state.
    #[error("socket.io invalid state: {0}")]
    InvalidState(&'static str),
    /// [`ConnectionCore::close`].
    #[error("closed by the server")]
    Shutdown,
    /// No verified BRC-103 identity within the authentication deadline.
    #[error("not authenticated in time")]
    AuthTimeout,
    /// [`ConnectionCore::refuse_identity`]: the identity has its maximum of connections.
    #[error("identity connection limit")]
    IdentityLimit,
}

/// One Engine.IO session and everything above it.
#[derive(Debug)]
pub struct ConnectionCore {
    engine: EngineSession,
    /// [`LiveConfig::server_handshake_grace`] (only the timings it needs: the whole config is
    /// per-connection memory).
    grace: Duration,
    /// See [`Self::auth_window`].
    auth_window: Duration,
    /// The Socket.IO socket id while namespace `/` is connected.
    socket: Option<String>,
    tunnel: AuthTunnel,
    shared: Arc<ConnectionShared>,
    events: MessageBoxEvents,
    grace_deadline: Option<Instant>,
    /// Until a BRC-103 identity is verified: when the connection is closed without one (D5:
    /// sockets that CONNECT and answer pings but never authenticate were kept forever).
    auth_deadline: Option<Instant>,
    bound: Option<String>,
    cause: Option<CloseCause>,
    commands: VecDeque<Command>,
    closed: bool,
    /// The WebSocket whose stream the driver holds ([`Self::ws_adopted`]).
    adopted: Option<WsId>,
    /// Text frames the engine addressed to a WebSocket before its stream was adopted. A
    /// WebSocket-only handshake queues the open packet at once, while the stream arrives only
    /// after the 101 is written; dropping those frames left the client waiting for `open`.
    /// Bounded by [`MAX_UNADOPTED`]; a `Vec`, as it is nearly always empty.
    unadopted: Vec<(WsId, String)>,
    /// Store requests not yet handed to the driver (a `Vec`: bounded by the events' pending
    /// limit, across reconnects too — see `flush_layers`; usually empty).
    stores: Vec<StoreRequest>,
    /// A [`Command::Store`] is out and its outcome has not come back (a flag, not the token:
    /// the driver reports only the request it was given, and the flag fits in padding).
    store_inflight: bool,
}

impl ConnectionCore {
    fn with_engine(
        now: Instant,
        engine: EngineSession,
        shared: &Arc<ConnectionShared>,
        config: &LiveConfig,
    ) -> ConnectionCore {
        ConnectionCore {
            engine,
            grace: config.server_handshake_grace,
            auth_window: Self::auth_window(config),
            socket: None,
            tunnel: AuthTunnel::new(shared.auth.clone()),
            shared: shared.clone(),
            events: MessageBoxEvents::new(config.events, now),
            grace_deadline: None,
            auth_deadline: Some(now + Self::auth_window(config)),
            bound: None,
            cause: None,
            commands: VecDeque::new(),
            closed: false,
            adopted: None,
            unadopted: Vec::new(),
            stores: Vec::new(),
            store_inflight: false,
        }
    }

    /// How long a connection may stay without a verified identity: `auth_timeout` counted
    /// from when the server offers its own handshake to a socket that CONNECTs at once (an
    /// old reconnected client only answers that one), so always after the grace.
    fn auth_window(config: &LiveConfig) -> Duration {
        config.server_handshake_grace + config.auth_timeout
    }

    /// A polling handshake (`GET …transport=polling`, no sid) on core `core`: the new
    /// connection, and the reply to that GET (the open packet). Store the core under
    /// [`Self::sid`].
    pub fn accept_polling(
        now: Instant,
        core: u8,
        shared: &Arc<ConnectionShared>,
        config: &LiveConfig,
    ) -> (ConnectionCore, HttpReply) {
        let sid = new_sid(core, config.engine.sid_node.as_ref(), &mut *shared.ids());
        let (engine, reply) = EngineSession::new_polling(now, sid, config.engine);
        (Self::with_engine(now, engine, shared, config), reply)
    }

    /// A direct WebSocket handshake (`transport=websocket`, no sid) on core `core`: complete
    /// the 101, then feed frames with the returned id; the open packet is the first transmit
    /// once the stream is adopted ([`Self::ws_adopted`]).
    pub fn accept_websocket(
        now: Instant,
        core: u8,
        shared: &Arc<ConnectionShared>,
        config: &LiveConfig,
    ) -> (ConnectionCore, WsId) {
        let sid = new_sid(core, config.engine.sid_node.as_ref(), &mut *shared.ids());
        let (engine, ws) = EngineSession::new_websocket(now, sid, config.engine);
        (Self::with_engine(now, engine, shared, config), ws)
    }

    pub fn sid(&self) -> &str {
        self.engine.sid()
    }

    /// The verified BRC-103 identity, once known.
    pub fn identity(&self) -> Option<&str> {
        self.tunnel.identity()
    }

    pub fn engine(&self) -> &EngineSession {
        &self.engine
    }

    pub fn events(&self) -> &MessageBoxEvents {
        &self.events
    }

    pub fn is_socket_connected(&self) -> bool {
        self.socket.is_some()
    }

    /// True once [`Command::Closed`] was issued.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    // --- transport input (see EngineSession for the rules) ---

    pub fn handle_poll(&mut self, now: Instant) -> PollStart {
        let r = self.engine.handle_poll(now);
        self.pump(now);
        r
    }

    pub fn poll_aborted(&mut self, now: Instant) {
        self.engine.poll_aborted(now);
        self.pump(now);
    }

    pub fn begin_post(
        &mut self,
        now: Instant,
        content_length: Option<usize>,
        content_type: Option<&str>,
    ) -> Result<(), HttpReply> {
        let r = self.engine.begin_post(now, content_length, content_type);
        self.pump(now);
        r
    }

    pub fn finish_post(&mut self, now: Instant, body: &[u8]) -> HttpReply {
        let r = self.engine.finish_post(now, body);
        self.pump(now);
        r
    }

    pub fn post_aborted(&mut self, now: Instant) {
        self.engine.post_aborted(now);
        self.pump(now);
    }

    pub fn begin_upgrade(&mut self, now: Instant) -> Result<WsId, UpgradeRefused> {
        self.engine.begin_upgrade(now)
    }

    pub fn ws_text(&mut self, now: Instant, ws: WsId, text: &str) {
        self.engine.ws_text(now, ws, text);
        self.pump(now);
    }

    pub fn ws_binary(&mut self, now: Instant, ws: WsId, data: &[u8]) {
        self.engine.ws_binary(now, ws, data);
        self.pump(now);
    }

    /// A message on `ws` exceeded `max_payload` (the frame codec refused it unread): the
    /// WebSocket closes with 1009.
    pub fn ws_too_big(&mut self, now: Instant, ws: WsId) {
        self.engine.ws_too_big(ws);
        self.pump(now);
    }

    /// The driver now holds the stream of `ws` (after the 101 was written): frames addressed
    /// to it before are released, in order, ahead of later ones; those for any other socket
    /// are discarded. The driver writes [`Transmit::WsText`] only for its adopted socket.
    pub fn ws_adopted(&mut self, ws: WsId) {
        self.adopted = Some(ws);
        self.unadopted.retain(|(w, _)| *w == ws);
    }

    /// The WebSocket `ws` closed or failed (close frame, I/O error, EOF, write timeout); the
    /// driver has dropped its stream.
    pub fn ws_closed(&mut self, now: Instant, ws: WsId) {
        if self.adopted == Some(ws) {
            self.adopted = None;
        }
        self.engine.ws_closed(now, ws);
        self.pump(now);
    }

    /// The WebSocket whose stream the driver holds, if any.
    pub fn adopted_ws(&self) -> Option<WsId> {
        self.adopted
    }

    // --- application input ---

    /// The outcome of the [`Command::Store`] this connection issued last; the next one, if
    /// any, follows. Returns false for a token it does not know (its socket disconnected
    /// since).
    pub fn store_outcome(&mut self, now: Instant, token: StoreToken, outcome: StoreOutcome) -> bool {
        self.store_inflight = false;
        let known = self.events.store_outcome(token, outcome);
        self.flush_layers();
        self.pump(now);
        known
    }

    /// Signs and sends a delivery to this connection. Refused (false) unless the connection is
    /// connected and bound to `delivery.recipient`, so a routing slip cannot leak a message,
    /// and for a room this connection left with `leaveRoom` (until it joins it again).
    pub fn deliver(&mut self, now: Instant, delivery: &Delivery) -> bool {
        let Some(identity) = self.tunnel.identity() else { return false };
        if self.closed || self.socket.is_none() || identity != delivery.recipient {
            return false;
        }
        if !self.events.wants(identity, &delivery.room_id) {
            return false;
        }
        self.tunnel.emit(&delivery.event, Some(&delivery.data));
        self.flush_layers();
        self.pump(now);
        true
    }

    /// Closes the engine session without a Socket.IO DISCONNECT, so the client reconnects
    /// (use on shutdown; its sessions stay valid in the process-wide table).
    pub fn close(&mut self, now: Instant) {
        if !self.closed && self.cause.is_none() {
            self.cause = Some(CloseCause::Shutdown);
            self.engine.close(now, CloseReason::ServerClose);
        }
        self.pump(now);
    }

    /// The driver could not register this connection's identity (the identity already has
    /// `max_connections_per_identity` connections): as the newer upstream, answer
    /// `authenticationFailed` `{"reason":"WebSocket identity connection limit exceeded"}`,
    /// then disconnect the socket (`41`, so the client does not reconnect) and close. The
    /// [`Command::Bind`] is void: no [`Command::Unbind`] follows for it.
    pub fn refuse_identity(&mut self, now: Instant) {
        if self.closed || self.cause.is_some() {
            return;
        }
        self.bound = None;
        self.auth_deadline = None;
        self.cause = Some(CloseCause::IdentityLimit);
        self.tunnel.emit(AUTH_FAILED, Some(&serde_json::json!({ "reason": REASON_IDENTITY_LIMIT }).to_string()));
        self.flush_layers();
        if self.socket.take().is_some() {
            self.engine.send_message(&socketio::disconnect());
        }
        self.engine.close(now, CloseReason::ServerClose);
        self.pump(now);
    }

    // --- time ---

    pub fn next_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        [self.engine.next_timeout(), self.grace_deadline, self.auth_deadline].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now);
        if self.grace_deadline.is_some_and(|d| now >= d) {
            self.grace_deadline = None;
            // Connected, yet no handshake: a reconnected socket whose client will not start
            // one. Start it from here so its identity, and its deliveries, are known.
            if self.socket.is_some() && !self.tunnel.has_session() {
                self.tunnel.start_server_handshake();
                self.flush_layers();
            }
        }
        if self.auth_deadline.is_some_and(|d| now >= d) {
            self.auth_deadline = None;
            if self.bound.is_none() && self.cause.is_none() && !self.closed {
                // The engine closes without a Socket.IO DISCONNECT: a real client that was
                // merely slow reconnects and starts afresh.
                self.cause = Some(CloseCause::AuthTimeout);
                self.engine.close(now, CloseReason::ServerClose);
            }
        }
        self.pump(now);
    }

    // --- output ---

    /// The next bytes to write (see [`EngineSession::poll_transmit`]). A [`Transmit::WsText`]
    /// is always for the adopted WebSocket; frames for one not adopted yet are kept back.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(ws) = self.adopted {
            if !self.unadopted.is_empty() {
                let (_, text) = self.unadopted.remove(0);
                return Some(Transmit::WsText { ws, text });
            }
        }
        loop {
            let t = self.engine.poll_transmit();
            // Pulling a WebSocket close or the final poll response may finish the session.
            self.pump_events();
            match t {
                Some(Transmit::WsText { ws, text }) if self.adopted != Some(ws) => {
                    if self.adopted.is_none() && self.unadopted.len() < MAX_UNADOPTED {
                        self.unadopted.push((ws, text));
                    }
                }
                t => return t,
            }
        }
    }

    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    // --- internals ---

    fn pump(&mut self, now: Instant) {
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                EngineEvent::Message(m) => self.on_socketio(now, &m),
                EngineEvent::Upgraded => {}
                EngineEvent::Closed(reason) => self.on_closed(reason),
            }
        }
    }

    /// Only closes can come out of pulling transmits.
    fn pump_events(&mut self) {
        while let Some(ev) = self.engine.poll_event() {
            if let EngineEvent::Closed(reason) = ev {
                self.on_closed(reason);
            }
        }
    }

    fn on_closed(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.grace_deadline = None;
        self.auth_deadline = None;
        let cause = self.cause.take().unwrap_or(CloseCause::Engine(reason));
        self.commands.push_back(Command::Closed(cause));
    }

    fn fail(&mut self, now: Instant, cause: CloseCause) {
        tracing::debug!(sid = self.engine.sid(), %cause, "closing live connection");
        if self.cause.is_none() {
            self.cause = Some(cause);
        }
        // socket.io's `conn.close()`: flush, then close.
        self.engine.close(now, CloseReason::ServerClose);
    }

    fn on_socketio(&mut self, now: Instant, text: &str) {
        if !self.engine.is_open() {
            return;
        }
        let packet = match Packet::decode(text) {
            Ok(p) => p,
            Err(e) => return self.fail(now, CloseCause::SocketIo(e)),
        };
        let root = packet.namespace() == DEFAULT_NAMESPACE;
        match packet {
            Packet::Connect { .. } if !root => {
                self.engine.send_message(&socketio::invalid_namespace(packet.namespace()));
            }
            Packet::Connect { .. } if self.socket.is_none() => {
                let id = new_socket_id(&mut *self.shared.ids());
                self.engine.send_message(&socketio::connect_reply(&id));
                self.engine.socket_connected();
                self.socket = Some(id);
                if !self.tunnel.has_session() {
                    self.grace_deadline = Some(now + self.grace);
                }
            }
            Packet::Connect { .. } => self.fail(now, CloseCause::InvalidState("second CONNECT")),
            _ if !root => self.fail(now, CloseCause::InvalidState("packet for a namespace not connected")),
            _ if self.socket.is_none() => self.fail(now, CloseCause::InvalidState("packet before CONNECT")),
            Packet::ConnectError { .. } => self.fail(now, CloseCause::InvalidState("CONNECT_ERROR from the client")),
            Packet::Disconnect { .. } => self.on_disconnect(now),
            Packet::Ack { .. } => {}
            Packet::Event { name: Some(name), args, .. } if name == AUTH_EVENT => {
                let Some(arg) = args.first() else { return };
                match self.tunnel.handle(arg.get()) {
                    Ok(Inbound::Event(event)) => {
                        let identity = self.tunnel.identity().unwrap_or_default().to_string();
                        self.events.handle(now, &identity, &event);
                    }
                    Ok(Inbound::Handshake | Inbound::NotAnEvent) => {}
                    Err(e) => tracing::debug!(sid = self.engine.sid(), error = %e, "authMessage dropped"),
                }
                self.flush_layers();
            }
            // Raw events are not part of the protocol; the original ignores them too.
            Packet::Event { .. } => {}
        }
    }

    /// `41`: the socket, its rooms and its BRC-103 state go; the engine session stays until
    /// the client closes it (a new `40` would start afresh).
    fn on_disconnect(&mut self, now: Instant) {
        self.socket = None;
        self.grace_deadline = None;
        self.events.reset();
        self.tunnel = AuthTunnel::new(self.shared.auth.clone());
        if let Some(identity) = self.bound.take() {
            self.commands.push_back(Command::Unbind { identity });
            // Unauthenticated again: a new deadline. One that is already running is kept, so
            // `41`/`40` without ever authenticating does not postpone it.
            self.auth_deadline = Some(now + self.auth_window);
        }
    }

    /// Moves work between the layers: event replies into the tunnel, store and delivery
    /// requests to the driver, signed messages into the engine.
    fn flush_layers(&mut self) {
        // Not after a refusal or a close: the identity it had is not to be registered again.
        if self.bound.is_none() && self.cause.is_none() {
            if let Some(identity) = self.tunnel.identity() {
                self.bound = Some(identity.to_string());
                self.auth_deadline = None;
                self.commands.push_back(Command::Bind { identity: identity.to_string() });
            }
        }
        while let Some(action) = self.events.poll_action() {
            match action {
                EventAction::Emit { event, data } => self.tunnel.emit(&event, Some(&data)),
                // The event layer bounds its own pending stores but forgets them on a
                // disconnect, while those queued here still go out (stored, never acked): a
                // client reconnecting again and again must not grow this queue. Past the
                // bound a send is refused at once (a non-success ack: the client falls back).
                EventAction::Store(r) if self.stores.len() >= self.events.limits().max_concurrent_sends => {
                    self.events.store_outcome(r.token, StoreOutcome::Failed);
                }
                EventAction::Store(r) => self.stores.push(r),
                EventAction::Deliver(d) => self.commands.push_back(Command::Deliver(d)),
                EventAction::RateLimited(scope) => self.commands.push_back(Command::RateLimited(scope)),
            }
        }
        // One store at a time, in order: the next request only after the previous outcome.
        if !self.store_inflight && !self.stores.is_empty() {
            let r = self.stores.remove(0);
            self.store_inflight = true;
            self.commands.push_back(Command::Store(r));
        }
        while let Some(json) = self.tunnel.poll_send() {
            self.engine.send_message(&socketio::event(AUTH_EVENT, &json));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::auth::message::AuthMessage;
    use crate::auth::ClientIdentity;
    use crate::live::authsocket::decode_envelope;
    use crate::live::engineio::{sid_core, EngineConfig, Packet as EnginePacket, RequestHead};
    use crate::live::testutil::{server, JsClient};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A direct WebSocket connection whose stream the driver has adopted.
    fn accept_ws(
        now: Instant,
        core: u8,
        shared: &Arc<ConnectionShared>,
        config: &LiveConfig,
    ) -> (ConnectionCore, WsId) {
        let (mut c, ws) = ConnectionCore::accept_websocket(now, core, shared, config);
        c.ws_adopted(ws);
        (c, ws)
    }

    fn post(c: &mut ConnectionCore, now: Instant, packets: &[&str]) {
        let body = packets.join("\x1e");
        c.begin_post(now, Some(body.len()), None).unwrap();
        assert_eq!(c.finish_post(now, body.as_bytes()), HttpReply::post_ok());
    }

    /// A GET answered at once, or `None` when held.
    fn get(c: &mut ConnectionCore, now: Instant) -> Option<String> {
        match c.handle_poll(now) {
            PollStart::Respond(r) => Some(r.body),
            PollStart::Held => None,
        }
    }

    fn transmits(c: &mut ConnectionCore) -> Vec<Transmit> {
        std::iter::from_fn(|| c.poll_transmit()).collect()
    }

    fn commands(c: &mut ConnectionCore) -> Vec<Command> {
        std::iter::from_fn(|| c.poll_command()).collect()
    }

    /// Hands everything written to the client, polling again (as its loop does) unless a GET
    /// is still held.
    fn exchange(c: &mut ConnectionCore, js: &mut JsClient, now: Instant) {
        deliver_transmits(c, js);
        while !c.engine().poll_held() && c.engine().transport() == crate::live::Transport::Polling && !c.is_closed() {
            match get(c, now) {
                Some(body) => js.receive_payload(&body),
                None => break,
            }
            deliver_transmits(c, js);
        }
    }

    fn deliver_transmits(c: &mut ConnectionCore, js: &mut JsClient) {
        for t in transmits(c) {
            match t {
                Transmit::PollResponse(r) => js.receive_payload(&r.body),
                Transmit::WsText { text, .. } => js.receive_packet(&text),
                Transmit::WsClose { .. } => js.engine.push("<ws close>".into()),
            }
        }
    }

    /// Opens a polling connection with namespace `/` connected.
    /// A polling connection with a BRC-103 session and a successful `authenticated`.
    fn authenticated(auth: &Arc<ConnectionShared>, js: &mut JsClient, now: Instant) -> ConnectionCore {
        let mut c = open_polling(auth, js, now);
        post(&mut c, now, &[&js.handshake()]);
        exchange(&mut c, js, now);
        post(&mut c, now, &[&js.emit("authenticated", Some(json!({ "identityKey": js.id() })))]);
        exchange(&mut c, js, now);
        c
    }

    fn open_polling(auth: &Arc<ConnectionShared>, js: &mut JsClient, now: Instant) -> ConnectionCore {
        let (mut c, reply) = ConnectionCore::accept_polling(now, 5, auth, &LiveConfig::default());
        assert_eq!(sid_core(c.sid()), Some(5));
        assert!(reply.body.contains(r#""upgrades":["websocket"]"#));
        post(&mut c, now, &["40"]);
        exchange(&mut c, js, now);
        let connect = js.engine.pop().unwrap();
        assert!(connect.starts_with(r#"40{"sid":""#) && connect.len() == 32, "{connect}");
        c
    }

    #[test]
    fn end_to_end_over_polling() {
        let auth = server();
        let now = Instant::now();
        let mut a = JsClient::new();
        let mut conn = open_polling(&auth, &mut a, now);
        let me = a.id();

        // Handshake over polling (POST the initialRequest, GET the initialResponse).
        let hs = a.handshake();
        post(&mut conn, now, &[&hs]);
        assert_eq!(commands(&mut conn), vec![Command::Bind { identity: me.clone() }]);
        exchange(&mut conn, &mut a, now);
        assert_eq!(a.sessions.len(), 1);
        assert_eq!(conn.identity(), Some(me.as_str()));

        // authenticated → authenticationSuccess.
        post(&mut conn, now, &[&a.emit("authenticated", Some(json!({ "identityKey": me })))]);
        exchange(&mut conn, &mut a, now);
        assert_eq!(a.take(), vec![("authenticationSuccess".to_string(), Some(json!({"status":"success"})))]);

        // joinRoom: own room ok, foreign room refused (two emits in one POST).
        let room = format!("{me}-inbox");
        let foreign = format!("{}-inbox", ClientIdentity::random().identity_hex());
        post(&mut conn, now, &[&a.emit("joinRoom", Some(json!(room))), &a.emit("joinRoom", Some(json!(foreign)))]);
        exchange(&mut conn, &mut a, now);
        assert_eq!(
            a.take(),
            vec![
                ("joinedRoom".to_string(), Some(json!({ "roomId": room }))),
                (
                    "joinFailed".to_string(),
                    Some(json!({
                        "roomId": foreign,
                        "reason": "Room is not owned by authenticated identity",
                        "code": "ERR_WEBSOCKET_ROOM_NOT_OWNED"
                    }))
                ),
            ]
        );

        // sendMessage to oneself: Store, then (stored) the ack, then a Deliver.
        let send = json!({ "roomId": room, "message": { "messageId": "m1", "recipient": me, "body": "hello é ✓" } });
        post(&mut conn, now, &[&a.emit("sendMessage", Some(send))]);
        let Command::Store(req) = commands(&mut conn).remove(0) else { panic!() };
        assert_eq!((req.sender.as_str(), req.recipient.as_str(), req.message_box.as_str()), (&*me, &*me, "inbox"));
        assert_eq!(req.body, "hello é ✓");
        exchange(&mut conn, &mut a, now);
        assert!(a.take().is_empty(), "no ack before the store reported back");
        assert!(conn.store_outcome(now, req.token, StoreOutcome::Stored));
        let cmds = commands(&mut conn);
        let [Command::Deliver(d)] = &cmds[..] else { panic!("{cmds:?}") };
        assert_eq!(d, &req.delivery());
        exchange(&mut conn, &mut a, now);
        assert_eq!(
            a.take(),
            vec![(format!("sendMessageAck-{room}"), Some(json!({ "status": "success", "messageId": "m1" })))]
        );
        // The driver fans the delivery out by identity: here, back to this connection.
        assert!(conn.deliver(now, d));
        exchange(&mut conn, &mut a, now);
        assert_eq!(
            a.take(),
            vec![(
                format!("sendMessage-{room}"),
                Some(json!({ "sender": me, "messageId": "m1", "body": "hello é ✓" }))
            )]
        );

        // A second identity on its own connection: nothing of A's reaches it.
        let mut b = JsClient::new();
        let mut conn_b = open_polling(&auth, &mut b, now);
        post(&mut conn_b, now, &[&b.handshake()]);
        exchange(&mut conn_b, &mut b, now);
        assert!(!conn_b.deliver(now, d), "a delivery for A is refused by B's connection");
        assert!(
            transmits(&mut conn_b).is_empty() && conn_b.engine().poll_held() && conn_b.engine().buffered_bytes() == 0
        );
        // B sends to A's room: stored with sender B, recipient A, delivered to A only.
        post(&mut conn_b, now, &[&b.emit("authenticated", Some(json!({ "identityKey": b.id() })))]);
        let to_a = json!({ "roomId": room, "message": { "messageId": "m2", "recipient": me, "body": "from b" } });
        post(&mut conn_b, now, &[&b.emit("sendMessage", Some(to_a))]);
        let cmds = commands(&mut conn_b);
        let Some(Command::Store(req_b)) = cmds.iter().find(|c| matches!(c, Command::Store(_))).cloned() else {
            panic!("{cmds:?}")
        };
        assert_eq!((req_b.sender.clone(), req_b.recipient.clone()), (b.id(), me.clone()));
        conn_b.store_outcome(now, req_b.token, StoreOutcome::Stored);
        let Some(Command::Deliver(d_b)) = commands(&mut conn_b).pop() else { panic!() };
        assert!(conn.deliver(now, &d_b));
        assert!(!conn_b.deliver(now, &d_b));
        exchange(&mut conn, &mut a, now);
        assert_eq!(
            a.take(),
            vec![(
                format!("sendMessage-{room}"),
                Some(json!({ "sender": b.id(), "messageId": "m2", "body": "from b" }))
            )]
        );
        exchange(&mut conn_b, &mut b, now);
        let names: Vec<String> = b.take().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["authenticationSuccess".to_string(), format!("sendMessageAck-{room}")]);

        // leaveRoom, then the client's disconnect(): POST 41, POST 1, the held GET gets `6`.
        post(&mut conn, now, &[&a.emit("leaveRoom", Some(json!(room)))]);
        exchange(&mut conn, &mut a, now);
        assert_eq!(a.take(), vec![("leftRoom".to_string(), Some(json!({ "roomId": room })))]);
        // The left room is no longer delivered to this connection; its other rooms still are.
        assert!(!conn.deliver(now, &d_b), "a delivery for a left room is refused");
        let other =
            Delivery { room_id: format!("{me}-other"), event: format!("sendMessage-{me}-other"), ..d_b.clone() };
        assert!(conn.deliver(now, &other));
        exchange(&mut conn, &mut a, now);
        assert_eq!(a.take().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), vec![format!("sendMessage-{me}-other")]);
        assert!(conn.engine().poll_held());
        post(&mut conn, now, &["41"]);
        assert_eq!(commands(&mut conn), vec![Command::Unbind { identity: me.clone() }]);
        post(&mut conn, now, &["1"]);
        assert_eq!(transmits(&mut conn), vec![Transmit::PollResponse(HttpReply::payload("6".into()))]);
        assert_eq!(commands(&mut conn), vec![Command::Closed(CloseCause::Engine(CloseReason::TransportClose))]);
        assert!(conn.is_closed() && conn.next_timeout().is_none());
    }

    #[test]
    fn end_to_end_with_upgrade_mid_handshake() {
        let auth = server();
        let t = Instant::now();
        let mut a = JsClient::new();
        let mut conn = open_polling(&auth, &mut a, t);
        // The upgrade starts while the handshake travels over polling.
        let ws = conn.begin_upgrade(t).unwrap();
        conn.ws_adopted(ws);
        assert!(conn.engine().poll_held());
        conn.ws_text(t, ws, "2probe");
        post(&mut conn, t, &[&a.handshake()]);
        // The initialResponse answers the held GET; 3probe went on the WebSocket.
        exchange(&mut conn, &mut a, t);
        assert_eq!(a.sessions.len(), 1);
        assert_eq!(a.engine, vec!["3probe".to_string()]);
        // The client polled again; the noop tick releases it; then `5`.
        assert!(conn.engine().poll_held());
        assert_eq!(conn.next_timeout(), Some(t + ms(100)));
        conn.handle_timeout(t + ms(100));
        assert_eq!(transmits(&mut conn), vec![Transmit::PollResponse(HttpReply::payload("6".into()))]);
        conn.ws_text(t + ms(120), ws, "5");
        // From now on frames only.
        conn.ws_text(t + ms(130), ws, &a.emit("authenticated", Some(json!({ "identityKey": a.id() }))));
        let frames = transmits(&mut conn);
        assert_eq!(frames.len(), 1);
        let Transmit::WsText { ws: on, text } = &frames[0] else { panic!() };
        assert_eq!(*on, ws);
        a.receive_packet(text);
        assert_eq!(a.take()[0].0, "authenticationSuccess");
        // Shutdown: the engine closes without a socket.io DISCONNECT (the client reconnects).
        conn.close(t + ms(200));
        assert_eq!(transmits(&mut conn), vec![Transmit::WsClose { ws, code: None }]);
        assert_eq!(commands(&mut conn).last(), Some(&Command::Closed(CloseCause::Shutdown)));
    }

    #[test]
    fn silent_reconnected_socket_gets_a_server_handshake() {
        let auth = server();
        let t = Instant::now();
        let mut a = JsClient::new();
        // A direct WebSocket connection whose client only CONNECTs (an old reconnected socket,
        // or one whose sessions died with a server restart).
        let (mut conn, ws) = accept_ws(t, 0, &auth, &LiveConfig::default());
        let open = transmits(&mut conn);
        assert!(matches!(&open[..], [Transmit::WsText { text, .. }] if text.contains(r#""upgrades":[]"#)));
        conn.ws_text(t, ws, "40");
        transmits(&mut conn);
        assert_eq!(conn.next_timeout(), Some(t + ms(3000)), "the handshake grace period");
        conn.handle_timeout(t + ms(2999));
        assert!(transmits(&mut conn).is_empty());
        conn.handle_timeout(t + ms(3000));
        for tr in transmits(&mut conn) {
            let Transmit::WsText { text, .. } = tr else { panic!() };
            a.receive_packet(&text);
        }
        // The client's Peer answered by itself.
        let answer = a.outbox.pop().expect("an initialResponse");
        conn.ws_text(t + ms(3010), ws, &answer);
        assert_eq!(commands(&mut conn), vec![Command::Bind { identity: a.id() }]);
        // Deliveries for A now reach this socket, signed on the new session.
        let d = Delivery {
            recipient: a.id(),
            room_id: format!("{}-inbox", a.id()),
            event: format!("sendMessage-{}-inbox", a.id()),
            data: r#"{"sender":"s","messageId":"m","body":"after kick"}"#.into(),
        };
        assert!(conn.deliver(t + ms(3020), &d));
        for tr in transmits(&mut conn) {
            let Transmit::WsText { text, .. } = tr else { panic!() };
            a.receive_packet(&text);
        }
        assert_eq!(a.take(), vec![(d.event.clone(), Some(json!({"sender":"s","messageId":"m","body":"after kick"})))]);
        // The grace timer fired once; nothing further is scheduled but the heartbeat.
        assert_eq!(conn.next_timeout(), Some(t + ms(25_000)));
    }

    #[test]
    fn stale_session_from_a_previous_connection_is_accepted() {
        let auth = server();
        let t = Instant::now();
        let mut a = JsClient::new();
        let mut old = open_polling(&auth, &mut a, t);
        post(&mut old, t, &[&a.handshake()]);
        exchange(&mut old, &mut a, t);
        old.close(t);
        exchange(&mut old, &mut a, t);
        assert_eq!(a.engine.pop().as_deref(), Some("1"));
        assert!(matches!(commands(&mut old).last(), Some(Command::Closed(CloseCause::Shutdown))));

        // socket.io-client reconnects (new sid, new `40`) and sends a general on its old session.
        let mut conn = open_polling(&auth, &mut a, t);
        post(&mut conn, t, &[&a.emit("authenticated", Some(json!({ "identityKey": a.id() })))]);
        assert_eq!(commands(&mut conn), vec![Command::Bind { identity: a.id() }]);
        exchange(&mut conn, &mut a, t);
        assert_eq!(a.take()[0].0, "authenticationSuccess");
        // It has a session: no server handshake at the end of the grace period.
        conn.handle_timeout(t + ms(3000));
        assert!(transmits(&mut conn).is_empty() && conn.engine().buffered_bytes() == 0);
        assert!(a.outbox.is_empty());
    }

    #[test]
    fn malformed_input_closes_with_a_typed_cause_or_is_dropped() {
        let auth = server();
        let t = Instant::now();
        let cause = |frames: &[&str]| {
            let (mut c, ws) = accept_ws(t, 1, &auth, &LiveConfig::default());
            for f in frames {
                c.ws_text(t, ws, f);
            }
            transmits(&mut c);
            commands(&mut c).into_iter().find_map(|cmd| match cmd {
                Command::Closed(cause) => Some(cause),
                _ => None,
            })
        };
        assert_eq!(cause(&["49"]), Some(CloseCause::SocketIo(DecodeError::UnknownType('9'))));
        assert_eq!(cause(&["4"]), Some(CloseCause::SocketIo(DecodeError::Empty)));
        assert_eq!(
            cause(&["40", r#"42["authMessage""#]),
            Some(CloseCause::SocketIo(DecodeError::InvalidPayload(socketio::PacketType::Event)))
        );
        assert_eq!(
            cause(&["40", r#"451-["authMessage",{"_placeholder":true,"num":0}]"#]),
            Some(CloseCause::SocketIo(DecodeError::Binary))
        );
        assert_eq!(cause(&[r#"42["authMessage",{}]"#]), Some(CloseCause::InvalidState("packet before CONNECT")));
        assert_eq!(cause(&["40", "40"]), Some(CloseCause::InvalidState("second CONNECT")));
        assert_eq!(
            cause(&["40", r#"42/x,["e"]"#]),
            Some(CloseCause::InvalidState("packet for a namespace not connected"))
        );
        assert_eq!(
            cause(&["40", r#"44{"message":"m"}"#]),
            Some(CloseCause::InvalidState("CONNECT_ERROR from the client"))
        );
        assert_eq!(cause(&["9"]), Some(CloseCause::Engine(CloseReason::ParseError)));
        assert_eq!(
            cause(&["40", &format!("4{}", "x".repeat(LiveConfig::default().engine.max_payload))]),
            Some(CloseCause::Engine(CloseReason::TransportClose))
        );

        // Dropped without closing: bad BRC-103 content, raw events, acks, unknown events.
        let a = JsClient::new();
        let (mut c, ws) = accept_ws(t, 1, &auth, &LiveConfig::default());
        for f in [
            "40",
            r#"42["authMessage",{"version":"0.1"}]"#,
            r#"42["authMessage","not an object"]"#,
            r#"42["authMessage"]"#,
            r#"42["authMessage",{"version":"9","messageType":"general","identityKey":"x"}]"#,
            r#"42["somethingElse",1]"#,
            r#"423["withAck",1]"#,
            r#"43[1]"#,
            "42",
        ] {
            c.ws_text(t, ws, f);
        }
        c.ws_text(t, ws, &a.clone_handshake());
        transmits(&mut c);
        let cmds = commands(&mut c);
        assert_eq!(cmds, vec![Command::Bind { identity: a.id() }], "only the valid handshake counted");
        assert!(!c.is_closed());

        // Another namespace is refused with CONNECT_ERROR; the session stays.
        let (mut c, ws) = accept_ws(t, 1, &auth, &LiveConfig::default());
        transmits(&mut c);
        c.ws_text(t, ws, "40/mb,");
        assert_eq!(
            transmits(&mut c),
            vec![Transmit::WsText { ws, text: r#"44/mb,{"message":"Invalid namespace"}"#.into() }]
        );
        assert!(!c.is_closed() && !c.is_socket_connected());
    }

    impl JsClient {
        fn clone_handshake(&self) -> String {
            Self::auth_packet(&self.me.start_handshake().0)
        }
    }

    #[test]
    fn connect_timeout_without_a_socket_io_connect() {
        let auth = server();
        let t = Instant::now();
        // The authentication deadline (tested below) would close it first.
        let config = LiveConfig { auth_timeout: Duration::from_secs(100), ..Default::default() };
        let (mut c, ws) = accept_ws(t, 1, &auth, &config);
        transmits(&mut c);
        c.handle_timeout(t + ms(25_000));
        transmits(&mut c);
        c.ws_text(t + ms(25_001), ws, "3");
        c.handle_timeout(t + ms(45_000));
        assert_eq!(transmits(&mut c), vec![Transmit::WsClose { ws, code: None }]);
        assert_eq!(commands(&mut c), vec![Command::Closed(CloseCause::Engine(CloseReason::ConnectTimeout))]);
    }

    /// Feeds what the core wrote on `ws` to the client, then the client's own answers (to a
    /// server-initiated handshake) back to the core.
    fn ws_exchange(c: &mut ConnectionCore, ws: WsId, js: &mut JsClient, now: Instant) {
        deliver_transmits(c, js);
        for answer in std::mem::take(&mut js.outbox) {
            c.ws_text(now, ws, &answer);
        }
        deliver_transmits(c, js);
    }

    /// D5 in the core: a connection without a verified identity `server_handshake_grace +
    /// auth_timeout` after its start is closed (the engine only, so a slow real client
    /// reconnects); one that handshakes, itself or by answering the server's handshake as an
    /// old reconnected client does, stays. Before: such a socket was kept for as long as it
    /// answered pings.
    #[test]
    fn unauthenticated_connections_close_at_the_deadline() {
        let auth = server();
        let t = Instant::now();
        let config = LiveConfig::default();
        let window = config.server_handshake_grace + config.auth_timeout;
        let closed_at = |c: &mut ConnectionCore, ws: WsId, at: Instant| {
            c.handle_timeout(at);
            let out = transmits(c);
            assert_eq!(out.last(), Some(&Transmit::WsClose { ws, code: None }), "{out:?}");
            assert_eq!(commands(c).last(), Some(&Command::Closed(CloseCause::AuthTimeout)));
        };

        // CONNECTs, never handshakes (the server's initialRequest goes unanswered).
        let (mut c, ws) = accept_ws(t, 1, &auth, &config);
        c.ws_text(t, ws, "40");
        transmits(&mut c);
        assert_eq!(c.next_timeout(), Some(t + config.server_handshake_grace));
        c.handle_timeout(t + config.server_handshake_grace);
        assert_eq!(transmits(&mut c).len(), 1, "the server-initiated handshake");
        assert_eq!(c.next_timeout(), Some(t + window));
        c.handle_timeout(t + window - ms(1));
        assert!(!c.is_closed() && commands(&mut c).is_empty());
        closed_at(&mut c, ws, t + window);

        // Never even CONNECTs: the same deadline (engine.io's own is 45 s).
        let (mut c, ws) = accept_ws(t, 1, &auth, &config);
        transmits(&mut c);
        closed_at(&mut c, ws, t + window);

        // `41`/`40` again and again does not postpone it.
        let (mut c, ws) = accept_ws(t, 1, &auth, &config);
        for i in 0..12 {
            c.ws_text(t + ms(i * 1000), ws, "40");
            c.ws_text(t + ms(i * 1000 + 500), ws, "41");
        }
        transmits(&mut c);
        closed_at(&mut c, ws, t + window);

        // An old reconnected client: CONNECT only, then it answers the server's handshake.
        let mut old = JsClient::new();
        let (mut c, ws) = accept_ws(t, 1, &auth, &config);
        c.ws_text(t, ws, "40");
        ws_exchange(&mut c, ws, &mut old, t);
        c.handle_timeout(t + config.server_handshake_grace);
        ws_exchange(&mut c, ws, &mut old, t + config.server_handshake_grace);
        assert_eq!(commands(&mut c), vec![Command::Bind { identity: old.id() }]);
        c.handle_timeout(t + window + ms(5_000));
        assert!(!c.is_closed() && commands(&mut c).is_empty(), "it stays");

        // A current client handshakes at once and stays; once it disconnects its socket
        // (`41`) and so loses its identity, a new deadline runs from then.
        let mut a = JsClient::new();
        let (mut c, ws) = accept_ws(t, 1, &auth, &config);
        c.ws_text(t, ws, "40");
        let hs = a.handshake();
        c.ws_text(t, ws, &hs);
        ws_exchange(&mut c, ws, &mut a, t);
        c.handle_timeout(t + window + ms(5_000));
        assert!(!c.is_closed());
        let later = t + ms(20_000);
        c.ws_text(later, ws, "3");
        c.ws_text(later, ws, "41");
        assert_eq!(commands(&mut c), vec![Command::Bind { identity: a.id() }, Command::Unbind { identity: a.id() }]);
        c.handle_timeout(later + window - ms(1));
        assert!(!c.is_closed());
        closed_at(&mut c, ws, later + window);
    }

    /// The driver refused the identity (its connection cap): `authenticationFailed` with the
    /// newer upstream's reason, then `41` (no reconnect), then the close; no Unbind follows.
    #[test]
    fn a_refused_identity_is_told_and_disconnected() {
        let auth = server();
        let t = Instant::now();
        let mut a = JsClient::new();
        let (mut c, ws) = accept_ws(t, 1, &auth, &LiveConfig::default());
        c.ws_text(t, ws, "40");
        let hs = a.handshake();
        c.ws_text(t, ws, &hs);
        assert_eq!(commands(&mut c), vec![Command::Bind { identity: a.id() }]);
        c.refuse_identity(t);
        deliver_transmits(&mut c, &mut a);
        assert_eq!(
            a.take(),
            vec![(
                "authenticationFailed".into(),
                Some(json!({"reason": "WebSocket identity connection limit exceeded"}))
            )]
        );
        let tail: Vec<_> = a.engine.iter().rev().take(2).rev().cloned().collect();
        assert_eq!(tail, ["41", "<ws close>"]);
        assert_eq!(commands(&mut c), vec![Command::Closed(CloseCause::IdentityLimit)]);
        // Nothing more: no second Bind from the identity the tunnel still holds.
        c.ws_text(t, ws, &a.emit("authenticated", Some(json!({ "identityKey": a.id() }))));
        c.handle_timeout(t + ms(60_000));
        assert!(commands(&mut c).is_empty());
    }

    #[test]
    fn disconnect_resets_and_a_new_connect_starts_afresh() {
        let auth = server();
        let t = Instant::now();
        let mut a = JsClient::new();
        let mut conn = authenticated(&auth, &mut a, t);
        a.take();
        post(&mut conn, t, &["41", "40"]);
        assert_eq!(commands(&mut conn), vec![Command::Bind { identity: a.id() }, Command::Unbind { identity: a.id() }]);
        exchange(&mut conn, &mut a, t);
        // The new socket is not app-authenticated; its old session still verifies and binds.
        post(&mut conn, t, &[&a.emit("joinRoom", Some(json!(format!("{}-x", a.id()))))]);
        assert_eq!(commands(&mut conn), vec![Command::Bind { identity: a.id() }]);
        exchange(&mut conn, &mut a, t);
        assert_eq!(
            a.take(),
            vec![("joinFailed".into(), Some(json!({"reason":"Unauthorized: WebSocket not authenticated"})))]
        );
    }

    #[test]
    fn frames_before_adoption_wait_for_the_stream() {
        let auth = server();
        let t = Instant::now();
        let (mut c, ws) = ConnectionCore::accept_websocket(t, 1, &auth, &LiveConfig::default());
        // The open packet is queued at once, but the stream arrives only after the 101.
        assert!(transmits(&mut c).is_empty());
        assert_eq!(c.adopted_ws(), None);
        c.ws_adopted(ws);
        let open = transmits(&mut c);
        assert!(matches!(&open[..], [Transmit::WsText { ws: w, text }] if *w == ws && text.starts_with("0{")));
        // Adopted: frames go straight out, in order.
        c.ws_text(t, ws, "40");
        let connect = transmits(&mut c);
        assert!(matches!(&connect[..], [Transmit::WsText { text, .. }] if text.starts_with("40{")));

        // Frames kept for a socket that is then replaced are discarded on adoption; the cap
        // holds the rest.
        let (mut c, ws) = ConnectionCore::accept_websocket(t, 1, &auth, &LiveConfig::default());
        assert!(transmits(&mut c).is_empty());
        c.ws_adopted(WsId(ws.0 + 7));
        assert!(transmits(&mut c).is_empty(), "the open packet was for another socket");
        assert_eq!(c.unadopted.len(), 0);
        // A closed stream is no longer adopted.
        c.ws_closed(t, WsId(ws.0 + 7));
        assert_eq!(c.adopted_ws(), None);
    }

    #[test]
    fn a_message_over_max_payload_closes_with_1009() {
        let auth = server();
        let t = Instant::now();
        let (mut c, ws) = accept_ws(t, 1, &auth, &LiveConfig::default());
        transmits(&mut c);
        c.ws_text(t, ws, "40");
        transmits(&mut c);
        c.ws_too_big(t, ws);
        assert_eq!(transmits(&mut c), vec![Transmit::WsClose { ws, code: Some(1009) }]);
        assert_eq!(commands(&mut c), vec![Command::Closed(CloseCause::Engine(CloseReason::TransportClose))]);

        // During an upgrade it ends the attempt only; polling carries on.
        let mut a = JsClient::new();
        let mut conn = open_polling(&auth, &mut a, t);
        let up = conn.begin_upgrade(t).unwrap();
        conn.ws_adopted(up);
        conn.ws_too_big(t, up);
        assert_eq!(transmits(&mut conn), vec![Transmit::WsClose { ws: up, code: Some(1009) }]);
        assert!(!conn.is_closed());
    }

    #[test]
    fn stores_go_out_one_at_a_time_in_order() {
        let auth = server();
        let now = Instant::now();
        let mut a = JsClient::new();
        let mut conn = authenticated(&auth, &mut a, now);
        let room = format!("{}-inbox", a.id());
        let send = |a: &JsClient, id: &str| {
            a.emit(
                "sendMessage",
                Some(json!({ "roomId": room, "message": { "messageId": id, "recipient": a.id(), "body": id } })),
            )
        };
        post(&mut conn, now, &[&send(&a, "m1"), &send(&a, "m2"), &send(&a, "m3")]);
        let stores = |conn: &mut ConnectionCore| -> Vec<StoreRequest> {
            commands(conn)
                .into_iter()
                .filter_map(|c| match c {
                    Command::Store(r) => Some(r),
                    _ => None,
                })
                .collect()
        };
        let mut order = Vec::new();
        let mut out = stores(&mut conn);
        while let [r] = &out[..] {
            assert!(stores(&mut conn).is_empty(), "nothing more until the outcome");
            order.push(r.message_id.clone());
            conn.store_outcome(now, r.token, StoreOutcome::Stored);
            out = stores(&mut conn);
        }
        assert!(out.is_empty());
        assert_eq!(order, ["m1", "m2", "m3"]);
        exchange(&mut conn, &mut a, now);
        let acks: Vec<_> =
            a.take().into_iter().filter_map(|(_, d)| d.and_then(|d| d.get("messageId").cloned())).collect();
        assert_eq!(acks, [json!("m1"), json!("m2"), json!("m3")]);

        // A disconnect forgets the pending acks, yet the queued stores still go out in order
        // (their messages were accepted), their outcomes then unknown to the new socket.
        post(&mut conn, now, &[&send(&a, "m4"), &send(&a, "m5")]);
        let [first] = &stores(&mut conn)[..] else { panic!() };
        post(&mut conn, now, &["41"]);
        assert!(!conn.store_outcome(now, first.token, StoreOutcome::Stored));
        let [second] = &stores(&mut conn)[..] else { panic!() };
        assert_eq!(second.message_id, "m5");
    }

    #[test]
    fn queued_stores_stay_bounded_across_reconnects() {
        let auth = server();
        let now = Instant::now();
        let mut a = JsClient::new();
        let mut conn = authenticated(&auth, &mut a, now);
        a.take();
        let room = format!("{}-inbox", a.id());
        let send = |a: &JsClient, id: String| {
            a.emit(
                "sendMessage",
                Some(json!({ "roomId": room, "message": { "messageId": id, "recipient": a.id(), "body": "x" } })),
            )
        };
        let limit = crate::live::EventLimits::default().max_concurrent_sends;
        // One store out (its outcome never comes back), the rest of the bound queued.
        let sends: Vec<String> = (0..limit).map(|i| send(&a, format!("m{i}"))).collect();
        post(&mut conn, now, &sends.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(commands(&mut conn).iter().filter(|c| matches!(c, Command::Store(_))).count(), 1);
        // The socket reconnects: the event layer forgets its pending sends, the queue stays.
        post(&mut conn, now, &["41", "40"]);
        exchange(&mut conn, &mut a, now);
        post(&mut conn, now, &[&a.emit("authenticated", Some(json!({ "identityKey": a.id() })))]);
        exchange(&mut conn, &mut a, now);
        a.take();
        // The queue has room for one more; the next is refused at once, not queued.
        post(&mut conn, now, &[&send(&a, "late-1".into()), &send(&a, "late-2".into())]);
        exchange(&mut conn, &mut a, now);
        let acks: Vec<_> = a.take().into_iter().filter_map(|(_, d)| d).collect();
        assert_eq!(
            acks,
            [json!({"status": "error", "messageId": "late-2", "description": crate::live::events::ACK_STORE_FAILED})]
        );
        assert!(commands(&mut conn).iter().all(|c| !matches!(c, Command::Store(_))), "still one store at a time");
    }

    #[test]
    fn ids_come_from_the_injected_generator() {
        let auth = crate::auth::ServerAuth::new(crate::auth::PrivateKey::random(), Default::default());
        let auth = Arc::new(auth);
        let open = |seed| {
            let shared = crate::live::testutil::shared_for(auth.clone(), seed);
            let (mut c, ws) = accept_ws(Instant::now(), 2, &shared, &LiveConfig::default());
            c.ws_text(Instant::now(), ws, "40");
            let texts: Vec<_> = transmits(&mut c)
                .into_iter()
                .map(|t| match t {
                    Transmit::WsText { text, .. } => text,
                    other => panic!("{other:?}"),
                })
                .collect();
            (c.sid().to_string(), texts)
        };
        assert_eq!(open(1), open(1), "same seed, same sid and socket id");
        assert_ne!(open(1).0, open(2).0);
        assert_eq!(sid_core(&open(1).0), Some(2));
    }

    /// Random input into every decoder and random operation sequences into the connection:
    /// nothing panics, and a closed connection stays closed and quiet.
    #[test]
    fn random_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let alphabet: &[u8] = b"0123456789[]{}\",:/-_ab\x1e\\eu\xc3\xa9 probe42authMessage";
        let random_text = |rng: &mut rand::rngs::StdRng, max: usize| -> String {
            let n = rng.random_range(0..max);
            let bytes: Vec<u8> = (0..n).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        for _ in 0..20_000 {
            let s = random_text(&mut rng, 40);
            let raw: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
            let _ = EnginePacket::decode(&s);
            let _ = crate::live::engineio::decode_payload(&s).count();
            let _ = socketio::Packet::decode(&s);
            let _ = crate::live::engineio::EngineQuery::parse(&s);
            let _ = crate::live::engineio::route(&RequestHead {
                method: "GET",
                query: &s,
                websocket_upgrade: rng.random(),
            });
            let _ = sid_core(&s);
            let _ = AuthMessage::from_json(&raw);
            let _ = AuthMessage::from_json(s.as_bytes());
            let _ = decode_envelope(&raw);
        }

        let auth = server();
        let a = JsClient::new();
        let dictionary = ["40", "41", "3", "2", "1", "5", "6", "2probe", "40/x,", "42[\"authMessage\",{}]", "4"];
        for round in 0..200 {
            let mut t = Instant::now();
            let config = LiveConfig {
                engine: EngineConfig { max_write_buffer: 4096, max_payload: 2048, ..Default::default() },
                ..Default::default()
            };
            let (mut c, mut ws) = if round % 2 == 0 {
                (ConnectionCore::accept_polling(t, 3, &auth, &config).0, WsId(0))
            } else {
                accept_ws(t, 3, &auth, &config)
            };
            for _ in 0..60 {
                let text = match rng.random_range(0..4) {
                    0 => random_text(&mut rng, 30),
                    1 => a.clone_handshake(),
                    _ => dictionary[rng.random_range(0..dictionary.len())].to_string(),
                };
                match rng.random_range(0..9) {
                    0 => drop(c.handle_poll(t)),
                    1 => {
                        if c.begin_post(t, Some(text.len()), None).is_ok() {
                            if rng.random() {
                                c.finish_post(t, text.as_bytes());
                            } else {
                                let raw: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
                                c.finish_post(t, &raw);
                            }
                        }
                    }
                    2 => {
                        if let Ok(w) = c.begin_upgrade(t) {
                            c.ws_adopted(w);
                            ws = w;
                        }
                    }
                    3 | 4 => c.ws_text(t, ws, &text),
                    5 => c.ws_binary(t, ws, text.as_bytes()),
                    6 => {
                        t += Duration::from_millis(rng.random_range(0..30_000));
                        c.handle_timeout(t);
                    }
                    7 => {
                        if rng.random_range(0..10) == 0 {
                            c.ws_closed(t, ws);
                        } else {
                            c.poll_aborted(t);
                        }
                    }
                    _ => {
                        let d =
                            Delivery { recipient: a.id(), room_id: "r".into(), event: "e".into(), data: "1".into() };
                        c.deliver(t, &d);
                    }
                }
                transmits(&mut c);
                for cmd in commands(&mut c) {
                    if let Command::Store(r) = cmd {
                        c.store_outcome(t, r.token, StoreOutcome::Stored);
                    }
                }
                if c.is_closed() {
                    assert!(c.next_timeout().is_none());
                    c.ws_text(t, ws, "40");
                    c.handle_timeout(t + Duration::from_secs(100));
                    assert!(commands(&mut c).is_empty(), "a closed connection stays quiet");
                    break;
                }
            }
        }
    }
}
