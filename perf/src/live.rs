//! A live-channel client as `@bsv/message-box-client` behaves on the wire (spec
//! `authsocket.md`): Engine.IO 4 (polling handshake, `POST 40`, WebSocket upgrade with
//! `2probe`/`3probe`/`5`, or `transport=websocket` directly), Socket.IO 5 on namespace `/`,
//! BRC-103 inside `authMessage` events, and the MessageBox events `authenticated`,
//! `joinRoom`, `sendMessage`.
//!
//! Codecs come from the server's own sans-IO cores (`messagebox::live`); signing and
//! verification from `messagebox::auth`. [`LiveClient`] does the setup steps in order on the
//! unsplit stream; [`LiveClient::start`] then splits it into a writer task and a reader task
//! (answering pings, verifying every inbound message, routing acks and deliveries).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use messagebox::auth::{AuthMessage, ClientIdentity, ClientSession};
use messagebox::live::authsocket::{decode_envelope, envelope, AppEvent, AUTH_EVENT};
use messagebox::live::engineio::{self, Packet as EioPacket};
use messagebox::live::socketio::{self, Packet as SioPacket};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::http::{Conn, Target};
use crate::options::Transport;
use crate::stats::{OpError, Stats};

pub(crate) type Ws = WebSocketStream<TcpStream>;

fn ws_config() -> WebSocketConfig {
    // Small buffers: `idle` holds thousands of these.
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

pub(crate) fn ws_err(e: tokio_tungstenite::tungstenite::Error) -> OpError {
    OpError::connect(format!("websocket: {e}"))
}

/// A client during setup (nothing running in the background yet).
pub struct LiveClient {
    ws: Ws,
    identity: ClientIdentity,
    session: ClientSession,
    verify: bool,
    /// The room joined (`<me>-<box>`): deliveries are the `sendMessage-<room>` events.
    room: Option<String>,
}

/// Reads the `open` packet's sid.
pub(crate) fn open_sid(packet: &str) -> Result<String, OpError> {
    let json =
        packet.strip_prefix('0').ok_or_else(|| OpError::protocol(format!("expected an open packet: {packet:.80}")))?;
    let v: Value = serde_json::from_str(json).map_err(|e| OpError::protocol(format!("open packet: {e}")))?;
    v["sid"].as_str().map(str::to_string).ok_or_else(|| OpError::protocol("open packet without sid"))
}

/// The engine.io packets of a polling response body.
fn polling_packets(body: &[u8]) -> Result<Vec<EioPacket>, OpError> {
    let text = std::str::from_utf8(body).map_err(|_| OpError::protocol("polling payload is not UTF-8"))?;
    engineio::decode_payload(text).map(|p| p.map_err(|e| OpError::protocol(format!("polling payload: {e}")))).collect()
}

/// A Socket.IO CONNECT reply (`0{"sid":…}`) or an error.
pub(crate) fn check_connect_reply(sio: &str) -> Result<(), OpError> {
    match SioPacket::decode(sio) {
        Ok(SioPacket::Connect { .. }) => Ok(()),
        Ok(other) => Err(OpError::protocol(format!("expected the CONNECT reply, got {other:?}"))),
        Err(e) => Err(OpError::protocol(format!("CONNECT reply: {e}"))),
    }
}

/// `4` + `2["authMessage",<msg>]`: one engine.io message frame.
fn auth_frame(msg: &AuthMessage) -> String {
    let mut s = String::from("4");
    s.push_str(&socketio::event(AUTH_EVENT, &msg.to_json()));
    s
}

/// What an inbound text frame carries.
enum Inbound {
    Ping,
    Auth(Box<AuthMessage>),
    /// Anything else a client can ignore (noop, other events).
    Other,
    Closed(String),
}

fn classify(text: &str) -> Result<Inbound, OpError> {
    match EioPacket::decode(text).map_err(|e| OpError::protocol(format!("engine.io: {e}")))? {
        EioPacket::Ping(_) => Ok(Inbound::Ping),
        EioPacket::Close => Ok(Inbound::Closed("engine.io close".into())),
        EioPacket::Message(sio) => {
            match SioPacket::decode(&sio).map_err(|e| OpError::protocol(format!("socket.io: {e}")))? {
                SioPacket::Event { name: Some(n), args, .. } if n == AUTH_EVENT => {
                    let arg = args.first().ok_or_else(|| OpError::protocol("authMessage without an argument"))?;
                    let msg = AuthMessage::from_json(arg.get().as_bytes())
                        .map_err(|e| OpError::protocol(format!("authMessage: {e}")))?;
                    Ok(Inbound::Auth(Box::new(msg)))
                }
                SioPacket::Disconnect { .. } => Ok(Inbound::Closed("socket.io disconnect".into())),
                _ => Ok(Inbound::Other),
            }
        }
        _ => Ok(Inbound::Other),
    }
}

/// Opens a general message: verified (unless `verify` is off) and decoded.
fn open_general(session: &ClientSession, msg: &AuthMessage, verify: bool) -> Result<AppEvent, OpError> {
    let AuthMessage::General(general) = msg else {
        return Err(OpError::protocol(format!("unexpected {:?} after the handshake", msg.message_type())));
    };
    let payload = if verify {
        session.verify_general(msg).map_err(|e| OpError::auth(format!("socket message: {e}")))?
    } else {
        general.payload.clone().unwrap_or_default()
    };
    decode_envelope(&payload).ok_or_else(|| OpError::protocol("general message without an event envelope"))
}

impl LiveClient {
    /// Engine.IO open, Socket.IO CONNECT, BRC-103 handshake and `authenticated`.
    pub async fn connect(
        target: &Target,
        identity: ClientIdentity,
        transport: Transport,
        verify: bool,
    ) -> Result<LiveClient, OpError> {
        let mut ws = match transport {
            Transport::Upgrade => upgrade(target).await?,
            Transport::Websocket => direct(target).await?,
        };
        let (req, pending) = identity.start_handshake();
        ws.send(Message::text(auth_frame(&req))).await.map_err(ws_err)?;
        let reply = loop {
            match next_inbound(&mut ws).await? {
                Inbound::Auth(m) => break *m,
                Inbound::Closed(why) => return Err(OpError::connect(why)),
                Inbound::Ping | Inbound::Other => {}
            }
        };
        let session = pending.finish(&identity, &reply).map_err(|e| OpError::auth(format!("socket handshake: {e}")))?;
        let mut c = LiveClient { ws, identity, session, verify, room: None };
        let me = c.identity.identity_hex().to_string();
        c.emit("authenticated", &json!({ "identityKey": me }).to_string()).await?;
        let ev = c.wait_event(|n| n == "authenticationSuccess" || n == "authenticationFailed").await?;
        if ev.name != "authenticationSuccess" {
            return Err(OpError::auth(format!("authenticationFailed: {}", ev.data_value().unwrap_or_default())));
        }
        Ok(c)
    }

    pub fn identity_hex(&self) -> &str {
        self.identity.identity_hex()
    }

    async fn emit(&mut self, event: &str, data: &str) -> Result<(), OpError> {
        let frame = signed_frame(&self.identity, &self.session, event, data)?;
        self.ws.send(Message::text(frame)).await.map_err(ws_err)
    }

    /// Reads until an event whose name passes `want` (answering pings on the way).
    async fn wait_event(&mut self, want: impl Fn(&str) -> bool) -> Result<AppEvent, OpError> {
        loop {
            match next_inbound(&mut self.ws).await? {
                Inbound::Ping => self.ws.send(Message::text("3")).await.map_err(ws_err)?,
                Inbound::Auth(m) => {
                    let ev = open_general(&self.session, &m, self.verify)?;
                    if want(&ev.name) {
                        return Ok(ev);
                    }
                }
                Inbound::Closed(why) => return Err(OpError::connect(why)),
                Inbound::Other => {}
            }
        }
    }

    /// `joinRoom` `<me>-<box>`, waiting for `joinedRoom`.
    pub async fn join(&mut self, message_box: &str) -> Result<(), OpError> {
        let room = format!("{}-{message_box}", self.identity.identity_hex());
        self.emit("joinRoom", &Value::String(room.clone()).to_string()).await?;
        let ev = self.wait_event(|n| n == "joinedRoom" || n == "joinFailed").await?;
        if ev.name != "joinedRoom" {
            return Err(OpError::protocol(format!("joinFailed: {}", ev.data_value().unwrap_or_default())));
        }
        self.room = Some(room);
        Ok(())
    }

    /// Splits the connection into background writer and reader tasks (on the current
    /// `LocalSet`).
    /// `node`: the index of the server (`--url`) it is connected to.
    pub fn start(self, sink: Rc<Receiver>, node: usize) -> Handle {
        let (mut write, mut read) = self.ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let pending: Pending = Rc::new(RefCell::new(HashMap::new()));
        tokio::task::spawn_local(async move {
            while let Some(m) = rx.recv().await {
                if write.feed(m).await.is_err() {
                    return;
                }
                while let Ok(m) = rx.try_recv() {
                    if write.feed(m).await.is_err() {
                        return;
                    }
                }
                if write.flush().await.is_err() {
                    return;
                }
            }
            let _ = write.close().await;
        });
        let session = Rc::new(self.session);
        let mut inbox = Inbox { room: self.room, seen: HashSet::new() };
        {
            let (tx, pending, session, verify) = (tx.clone(), pending.clone(), session.clone(), self.verify);
            tokio::task::spawn_local(async move {
                while let Some(frame) = read.next().await {
                    let text = match frame {
                        Ok(Message::Text(t)) => t,
                        Ok(Message::Close(_)) | Err(_) => break,
                        Ok(_) => continue,
                    };
                    match classify(&text) {
                        Ok(Inbound::Ping) => {
                            let _ = tx.send(Message::text("3"));
                        }
                        Ok(Inbound::Auth(m)) => match open_general(&session, &m, verify) {
                            Ok(ev) => sink.event(ev, &pending, node, &mut inbox),
                            Err(e) => sink.error(&e),
                        },
                        Ok(Inbound::Closed(_)) => break,
                        Ok(Inbound::Other) => {}
                        Err(e) => sink.error(&e),
                    }
                }
                sink.disconnected();
                for (_, waiter) in pending.borrow_mut().drain() {
                    let _ = waiter.send(Err(OpError::connect("connection closed")));
                }
            });
        }
        Handle { tx, pending, identity: self.identity, session, node }
    }
}

async fn next_inbound(ws: &mut Ws) -> Result<Inbound, OpError> {
    loop {
        match ws.next().await {
            None => return Ok(Inbound::Closed("connection closed".into())),
            Some(Err(e)) => return Err(ws_err(e)),
            Some(Ok(Message::Text(t))) => return classify(&t),
            Some(Ok(Message::Close(_))) => return Ok(Inbound::Closed("websocket close".into())),
            Some(Ok(_)) => {}
        }
    }
}

fn signed_frame(me: &ClientIdentity, session: &ClientSession, event: &str, data: &str) -> Result<String, OpError> {
    let msg = session
        .sign_general(me, envelope(event, Some(data)).into_bytes())
        .map_err(|e| OpError::auth(format!("signing: {e}")))?;
    Ok(auth_frame(&msg))
}

fn query(sid: Option<&str>, transport: &str) -> String {
    let mut q = format!("/socket.io/?EIO=4&transport={transport}");
    if transport == "polling" {
        q.push_str("&t=mbload");
    }
    if let Some(s) = sid {
        q.push_str("&sid=");
        q.push_str(s);
    }
    q
}

async fn ws_connect(target: &Target, path: &str) -> Result<Ws, OpError> {
    let stream = TcpStream::connect(target.addr).await.map_err(|e| OpError::connect(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let url = format!("ws://{}{path}", target.host);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())).await.map_err(ws_err)?;
    Ok(ws)
}

/// The real client's way: polling handshake, CONNECT over polling, then upgrade.
pub(crate) async fn upgrade(target: &Target) -> Result<Ws, OpError> {
    let mut http = Conn::new(target.clone());
    let get = |r: &crate::http::Response| -> Result<Vec<EioPacket>, OpError> {
        if r.status != 200 {
            return Err(OpError::new(
                crate::stats::ErrorKind::Http(r.status),
                format!("polling: {}", crate::peer::snippet(&r.body)),
            ));
        }
        polling_packets(&r.body)
    };
    let r = http.request("GET", &query(None, "polling"), &[], b"").await?;
    let sid = match get(&r)?.first() {
        Some(EioPacket::Open(json)) => open_sid(&format!("0{json}"))?,
        other => return Err(OpError::protocol(format!("expected the open packet, got {other:?}"))),
    };
    let text = [("content-type".to_string(), "text/plain;charset=UTF-8".to_string())];
    let r = http.request("POST", &query(Some(&sid), "polling"), &text, b"40").await?;
    if r.status != 200 {
        return Err(OpError::new(crate::stats::ErrorKind::Http(r.status), "polling POST 40"));
    }
    let r = http.request("GET", &query(Some(&sid), "polling"), &[], b"").await?;
    match get(&r)?.first() {
        Some(EioPacket::Message(sio)) => check_connect_reply(sio)?,
        other => return Err(OpError::protocol(format!("expected the CONNECT reply, got {other:?}"))),
    }
    drop(http);
    let mut ws = ws_connect(target, &query(Some(&sid), "websocket")).await?;
    ws.send(Message::text("2probe")).await.map_err(ws_err)?;
    match ws.next().await {
        Some(Ok(Message::Text(t))) if t.as_str() == "3probe" => {}
        other => return Err(OpError::protocol(format!("expected 3probe, got {other:?}"))),
    }
    ws.send(Message::text("5")).await.map_err(ws_err)?;
    Ok(ws)
}

/// How long a direct WebSocket may take to send its open packet.
const OPEN_WAIT: Duration = Duration::from_secs(5);

/// `transport=websocket` from the start: the open packet is the first frame.
pub(crate) async fn direct(target: &Target) -> Result<Ws, OpError> {
    let mut ws = ws_connect(target, &query(None, "websocket")).await?;
    match tokio::time::timeout(OPEN_WAIT, ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => {
            open_sid(&t)?;
        }
        Ok(other) => return Err(OpError::protocol(format!("expected the open packet, got {other:?}"))),
        Err(_) => {
            return Err(OpError::protocol(format!(
                "no Engine.IO open packet within {OPEN_WAIT:?} of the 101 (transport=websocket)"
            )))
        }
    }
    ws.send(Message::text("40")).await.map_err(ws_err)?;
    loop {
        match next_raw(&mut ws).await? {
            EioPacket::Message(sio) => return check_connect_reply(&sio).map(|_| ws),
            EioPacket::Ping(_) => ws.send(Message::text("3")).await.map_err(ws_err)?,
            _ => {}
        }
    }
}

pub(crate) async fn next_raw(ws: &mut Ws) -> Result<EioPacket, OpError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return EioPacket::decode(&t).map_err(|e| OpError::protocol(format!("engine.io: {e}")))
            }
            Some(Ok(Message::Close(_))) | None => return Err(OpError::connect("closed during the open")),
            Some(Err(e)) => return Err(ws_err(e)),
            Some(Ok(_)) => {}
        }
    }
}

type Pending = Rc<RefCell<HashMap<String, oneshot::Sender<Result<(), OpError>>>>>;

/// A running client: send messages, await their acks.
pub struct Handle {
    tx: mpsc::UnboundedSender<Message>,
    pending: Pending,
    identity: ClientIdentity,
    session: Rc<ClientSession>,
    node: usize,
}

impl Handle {
    pub fn identity_hex(&self) -> &str {
        self.identity.identity_hex()
    }

    /// The index of the server (`--url`) it is connected to.
    pub fn node(&self) -> usize {
        self.node
    }

    /// `sendMessage` to `recipient`'s box; resolves with its `sendMessageAck`.
    pub async fn send(&self, recipient: &str, message_box: &str, id: String, body: &str) -> Result<(), OpError> {
        let room = format!("{recipient}-{message_box}");
        let data =
            json!({"roomId": room, "message": {"messageId": id, "recipient": recipient, "body": body}}).to_string();
        let frame = signed_frame(&self.identity, &self.session, "sendMessage", &data)?;
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id.clone(), tx);
        if self.tx.send(Message::text(frame)).is_err() {
            self.pending.borrow_mut().remove(&id);
            return Err(OpError::connect("connection closed"));
        }
        // Dropped with this future on a timeout: the entry goes too (a no-op after an ack).
        let _guard = PendingGuard { pending: &self.pending, id };
        rx.await.unwrap_or_else(|_| Err(OpError::connect("connection closed")))
    }

    /// Socket.IO DISCONNECT then a WebSocket close, as `disconnect()` does.
    pub fn close(&self) {
        let _ = self.tx.send(Message::text("41"));
        let _ = self.tx.send(Message::Close(None));
    }
}

/// Forgets a pending ack whose sender gave up (timeout).
struct PendingGuard<'a> {
    pending: &'a Pending,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.pending.borrow_mut().remove(&self.id);
    }
}

/// Ids of live messages: `<tag>.<seq>.<µs after the plan's start>.<1 if measured>.<sender's
/// node>`, so a receiver on any thread knows when the message was scheduled, and whether it
/// crossed nodes, without a shared table.
pub fn message_id(tag: &str, seq: u64, offset: Duration, measured: bool, node: usize) -> String {
    format!("{tag}.{seq:x}.{:x}.{}.{node:x}", offset.as_micros(), u8::from(measured))
}

/// What one of our ids says (`None` for foreign ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdInfo {
    /// The ticket's number: unique within the run.
    pub seq: u64,
    /// When it was scheduled, after the plan's start.
    pub offset: Duration,
    pub measured: bool,
    /// The sender's node (`--url` index).
    pub node: usize,
}

pub fn parse_message_id(tag: &str, id: &str) -> Option<IdInfo> {
    let mut parts = id.split('.');
    if parts.next()? != tag {
        return None;
    }
    let seq = u64::from_str_radix(parts.next()?, 16).ok()?;
    let off = u64::from_str_radix(parts.next()?, 16).ok()?;
    let measured = parts.next()? == "1";
    let node = usize::from_str_radix(parts.next()?, 16).ok()?;
    Some(IdInfo { seq, offset: Duration::from_micros(off), measured, node })
}

/// Where a client's reader sends what it receives (shared by a thread's clients).
pub struct Receiver {
    pub stats: Stats,
    pub thread: usize,
    pub tag: String,
    /// The plan's start (ids carry offsets from it).
    pub base: RefCell<Option<Instant>>,
    pub delivered: Rc<std::cell::Cell<u64>>,
    pub global_delivered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Servers (`--url`s): with more than one, deliveries are also counted as `same`-node or
    /// `cross`-node.
    pub nodes: usize,
}

/// One connection's view of deliveries: its room, and the messages it has had.
pub struct Inbox {
    /// `None` before a join: nothing is addressed to it.
    pub room: Option<String>,
    /// Ticket numbers of the messages delivered here (each counts once).
    pub seen: HashSet<u64>,
}

/// What a `sendMessage-<room>` event carrying one of our ids is to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Addressed to this connection's room, first time: a delivery.
    Delivered,
    /// Addressed to this connection's room again.
    Duplicate,
    /// Addressed to someone else's room (a server that broadcasts to every socket).
    BroadcastCopy,
}

impl Inbox {
    /// Classifies the event `sendMessage-<event_room>` of message `seq` (and remembers it).
    pub fn arrival(&mut self, event_room: &str, seq: u64) -> Arrival {
        if self.room.as_deref() != Some(event_room) {
            Arrival::BroadcastCopy
        } else if self.seen.insert(seq) {
            Arrival::Delivered
        } else {
            Arrival::Duplicate
        }
    }
}

impl Receiver {
    /// An event on a connection to node `node`.
    fn event(&self, ev: AppEvent, pending: &Pending, node: usize, inbox: &mut Inbox) {
        let data = ev.data_value().unwrap_or(Value::Null);
        if ev.name.starts_with("sendMessageAck-") {
            let id = data["messageId"].as_str().unwrap_or_default();
            if let Some(waiter) = pending.borrow_mut().remove(id) {
                let r = if data["status"] == "success" {
                    Ok(())
                } else {
                    Err(OpError::protocol(format!("sendMessageAck: {data}")))
                };
                let _ = waiter.send(r);
            }
        } else if let Some(room) = ev.name.strip_prefix("sendMessage-") {
            let now = Instant::now();
            let id = data["messageId"].as_str().unwrap_or_default();
            let base = *self.base.borrow();
            if let (Some(info), Some(base)) = (parse_message_id(&self.tag, id), base) {
                let not_delivered = match inbox.arrival(room, info.seq) {
                    Arrival::Delivered => None,
                    Arrival::Duplicate => Some("duplicate_deliveries"),
                    Arrival::BroadcastCopy => Some("broadcast_copies"),
                };
                if let Some(counter) = not_delivered {
                    self.stats.thread(self.thread).count(counter, 1);
                    return;
                }
                self.delivered.set(self.delivered.get() + 1);
                self.global_delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut s = self.stats.thread(self.thread);
                s.count("delivered", 1);
                if info.measured {
                    let latency = now.saturating_duration_since(base + info.offset);
                    s.count("delivered_measured", 1);
                    s.record_latency("delivery", latency);
                    if self.nodes > 1 {
                        let (count, kind) = if info.node == node {
                            ("delivered_same_node", "delivery_same_node")
                        } else {
                            ("delivered_cross_node", "delivery_cross_node")
                        };
                        s.count(count, 1);
                        s.record_latency(kind, latency);
                    }
                }
            }
        } else if ev.name == "messageFailed" {
            self.error(&OpError::protocol(format!("messageFailed: {data}")));
        }
    }

    fn error(&self, e: &OpError) {
        self.stats.thread(self.thread).error(e);
    }

    fn disconnected(&self) {
        self.stats.thread(self.thread).count("disconnected", 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_carry_their_schedule() {
        let id = message_id("ab12cd34", 77, Duration::from_micros(1_234_567), true, 2);
        let info = IdInfo { seq: 77, offset: Duration::from_micros(1_234_567), measured: true, node: 2 };
        assert_eq!(parse_message_id("ab12cd34", &id), Some(info));
        let warm = message_id("ab12cd34", 1, Duration::ZERO, false, 0);
        assert_eq!(
            parse_message_id("ab12cd34", &warm),
            Some(IdInfo { seq: 1, offset: Duration::ZERO, measured: false, node: 0 })
        );
        assert_eq!(parse_message_id("other", &id), None);
        assert_eq!(parse_message_id("ab12cd34", "ab12cd34.zz"), None);
    }

    #[test]
    fn a_delivery_counts_once_and_only_in_its_room() {
        let mut inbox = Inbox { room: Some("02ab-inbox".into()), seen: HashSet::new() };
        assert_eq!(inbox.arrival("02ab-inbox", 5), Arrival::Delivered);
        assert_eq!(inbox.arrival("02ab-inbox", 5), Arrival::Duplicate);
        assert_eq!(inbox.arrival("03cd-inbox", 6), Arrival::BroadcastCopy);
        assert_eq!(inbox.arrival("02ab-inbox", 6), Arrival::Delivered, "a copy elsewhere does not count here");
        let mut unjoined = Inbox { room: None, seen: HashSet::new() };
        assert_eq!(unjoined.arrival("02ab-inbox", 5), Arrival::BroadcastCopy);
    }

    #[test]
    fn frames_and_open_packets() {
        assert_eq!(open_sid(r#"0{"sid":"abc","upgrades":["websocket"]}"#).unwrap(), "abc");
        assert!(open_sid("40").is_err());
        check_connect_reply(r#"0{"sid":"x"}"#).unwrap();
        assert!(check_connect_reply(r#"4{"message":"Invalid namespace"}"#).is_err());
        assert!(matches!(classify("2").unwrap(), Inbound::Ping));
        assert!(matches!(classify("6").unwrap(), Inbound::Other));
        assert!(matches!(classify("41").unwrap(), Inbound::Closed(_)));
        let me = ClientIdentity::random();
        let (req, _) = me.start_handshake();
        match classify(&auth_frame(&req)).unwrap() {
            Inbound::Auth(m) => assert_eq!(*m, req),
            _ => panic!("not an authMessage"),
        }
        let packets = polling_packets(b"0{\"sid\":\"s\"}\x1e40{\"sid\":\"t\"}").unwrap();
        assert_eq!(packets.len(), 2);
    }
}
