//! Engine.IO protocol 4, server side, without I/O.
//!
//! This module owns everything below Socket.IO: the packet and polling-payload codecs, the
//! open packet, the handshake query rules and their error replies (spec §2.10), session ids
//! that name the core owning the session (and, in a fleet, the node owning it), and
//! [`EngineSession`], the per-session state machine (polling GET/POST, the WebSocket upgrade
//! with its `noop` nudges, heartbeat, close).
//!
//! The session never touches a socket or a clock. The caller feeds it what happened (a GET
//! arrived, a POST body, a WebSocket text frame, "it is now `t`") and pulls what to write with
//! [`EngineSession::poll_transmit`] and what happened above the transport with
//! [`EngineSession::poll_event`]. The write buffer belongs to the session, not to a transport:
//! packets queued during an upgrade leave on whichever transport is current when they are
//! pulled, which is how engine.io keeps one ordered stream across polling and WebSocket.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;

/// The record separator between packets of a polling payload.
pub const RECORD_SEPARATOR: char = '\x1e';
/// Length of an engine session id and of a Socket.IO socket id.
pub const SID_LEN: usize = 20;

// ---------------------------------------------------------------------------------------------
// Packets

/// One Engine.IO packet. Data carried by `close`, `upgrade` and `noop` is ignored, as engine.io
/// ignores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0` + JSON (server to client only).
    Open(String),
    /// `1`: the client closes a polling session; the server answers a held GET with it.
    Close,
    /// `2`, or `2probe` on a WebSocket being upgraded.
    Ping(String),
    /// `3`, or `3probe`.
    Pong(String),
    /// `4` + a Socket.IO packet.
    Message(String),
    /// Binary message: `b` + base64 on polling, a binary frame on WebSocket. Unused by the
    /// clients we serve (every byte array is a JSON number array).
    Binary(Vec<u8>),
    /// `5`: the client switches to the probed WebSocket.
    Upgrade,
    /// `6`: answers a held GET so the client's polling loop turns over.
    Noop,
}

/// Why an encoded packet could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("empty engine.io packet")]
    Empty,
    #[error("unknown engine.io packet type {0:?}")]
    UnknownType(char),
    #[error("invalid base64 in a binary engine.io packet")]
    Base64,
}

impl Packet {
    /// Decodes one text packet (a WebSocket text frame, or one record of a polling payload).
    pub fn decode(s: &str) -> Result<Packet, PacketError> {
        let mut chars = s.chars();
        let ty = chars.next().ok_or(PacketError::Empty)?;
        let data = chars.as_str();
        Ok(match ty {
            '0' => Packet::Open(data.to_string()),
            '1' => Packet::Close,
            '2' => Packet::Ping(data.to_string()),
            '3' => Packet::Pong(data.to_string()),
            '4' => Packet::Message(data.to_string()),
            '5' => Packet::Upgrade,
            '6' => Packet::Noop,
            'b' => {
                Packet::Binary(base64::engine::general_purpose::STANDARD.decode(data).map_err(|_| PacketError::Base64)?)
            }
            other => return Err(PacketError::UnknownType(other)),
        })
    }

    /// The text form (binary as `b` + base64, the polling form).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut String) {
        match self {
            Packet::Open(d) => push2(out, '0', d),
            Packet::Close => out.push('1'),
            Packet::Ping(d) => push2(out, '2', d),
            Packet::Pong(d) => push2(out, '3', d),
            Packet::Message(d) => push2(out, '4', d),
            Packet::Binary(b) => {
                out.push('b');
                base64::engine::general_purpose::STANDARD.encode_string(b, out);
            }
            Packet::Upgrade => out.push('5'),
            Packet::Noop => out.push('6'),
        }
    }
}

fn push2(out: &mut String, ty: char, data: &str) {
    out.reserve(1 + data.len());
    out.push(ty);
    out.push_str(data);
}

/// Joins encoded packets into a polling payload.
pub fn encode_payload<'a>(packets: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, p) in packets.into_iter().enumerate() {
        if i > 0 {
            out.push(RECORD_SEPARATOR);
        }
        out.push_str(p);
    }
    out
}

/// Splits a polling payload into packets. engine.io processes the packets before the first
/// bad one and then closes the session, so the caller gets them one by one.
pub fn decode_payload(body: &str) -> impl Iterator<Item = Result<Packet, PacketError>> + '_ {
    body.split(RECORD_SEPARATOR).map(Packet::decode)
}

/// The JSON of the `open` packet, keys in engine.io's order.
pub fn open_json(sid: &str, upgrades: &[&str], config: &EngineConfig) -> String {
    let upgrades: Vec<String> = upgrades.iter().map(|u| json_string(u)).collect();
    format!(
        r#"{{"sid":{},"upgrades":[{}],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        json_string(sid),
        upgrades.join(","),
        config.ping_interval.as_millis(),
        config.ping_timeout.as_millis(),
        config.max_payload
    )
}

pub(crate) fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serialises")
}

// ---------------------------------------------------------------------------------------------
// Session ids

/// Cores a session id can name (the first byte of the id).
pub const MAX_CORES: usize = 256;
/// Bytes of a fleet node id carried by a fleet sid ([`new_sid`]).
pub const NODE_ID_LEN: usize = 6;
/// Length of a session id that carries a fleet node id: 21 bytes as base64url.
pub const FLEET_SID_LEN: usize = 28;
/// Random bytes of every session id: 112 bits, the session's only credential.
const SID_RANDOM: usize = 14;

/// A fresh session id owned by `core` (and, in a fleet, by `node`), as URL-safe base64
/// without padding (the alphabet of engine.io's `base64id`, which the clients treat as opaque
/// and send back as `sid=`):
/// * single node: 15 bytes, the core index then 14 random bytes, 20 characters — the same
///   shape as engine.io's ids;
/// * fleet (`node` set): 21 bytes, the core index, the 6-byte node id, 14 random bytes, 28
///   characters.
///
/// Any core reads the owner back with [`sid_core`] (and any node with [`sid_node`]) and hands
/// the request there. `rng` must be a CSPRNG in production; tests seed it.
pub fn new_sid(core: u8, node: Option<&[u8; NODE_ID_LEN]>, rng: &mut impl rand::RngCore) -> String {
    let mut bytes = [0u8; 1 + NODE_ID_LEN + SID_RANDOM];
    bytes[0] = core;
    let random_from = match node {
        Some(n) => {
            bytes[1..=NODE_ID_LEN].copy_from_slice(n);
            1 + NODE_ID_LEN
        }
        None => 1,
    };
    let len = random_from + SID_RANDOM;
    rng.fill_bytes(&mut bytes[random_from..len]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..len])
}

/// The bytes of a session id in either format of [`new_sid`]; `None` for anything else.
fn sid_bytes(sid: &str) -> Option<Vec<u8>> {
    if sid.len() != SID_LEN && sid.len() != FLEET_SID_LEN {
        return None;
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sid).ok()
}

/// The core that owns a session id from [`new_sid`]; `None` for anything else.
pub fn sid_core(sid: &str) -> Option<u8> {
    sid_bytes(sid).map(|b| b[0])
}

/// The fleet node that owns a session id from [`new_sid`]; `None` for a single-node id (or
/// anything else).
pub fn sid_node(sid: &str) -> Option<[u8; NODE_ID_LEN]> {
    let b = sid_bytes(sid)?;
    (b.len() == 1 + NODE_ID_LEN + SID_RANDOM).then(|| b[1..=NODE_ID_LEN].try_into().expect("six bytes"))
}

/// A Socket.IO socket id (`40{"sid":…}`): 20 random URL-safe characters, never sent back by
/// the client.
pub fn new_socket_id(rng: &mut impl rand::RngCore) -> String {
    let mut bytes = [0u8; 15];
    rng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ---------------------------------------------------------------------------------------------
// HTTP replies and request routing

/// An HTTP response for the driver to write. `headers` are complete except `Content-Length`,
/// which the driver adds from `body` (CORS `Access-Control-Allow-Origin: *` is included, as
/// engine.io sends it on every response under `/socket.io/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl HttpReply {
    fn with(status: u16, content_type: Option<&'static str>, no_store: bool, body: String) -> HttpReply {
        let mut headers = Vec::with_capacity(3);
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct.to_string()));
        }
        if no_store {
            headers.push(("cache-control", "no-store".to_string()));
        }
        headers.push(("Access-Control-Allow-Origin", "*".to_string()));
        HttpReply { status, headers, body }
    }

    /// `200 text/plain; charset=UTF-8`: a polling payload for a GET.
    pub fn payload(body: String) -> HttpReply {
        HttpReply::with(200, Some("text/plain; charset=UTF-8"), true, body)
    }

    /// `200 text/html` `ok`: a POST was taken.
    pub fn post_ok() -> HttpReply {
        HttpReply::with(200, Some("text/html"), true, "ok".to_string())
    }

    /// A bare status without a body (overlap 400, oversized 413, unknown method 500).
    pub fn status_only(status: u16) -> HttpReply {
        HttpReply::with(status, None, false, String::new())
    }

    /// The `204` answer to a CORS preflight (`OPTIONS`), as the `cors` middleware in front of
    /// engine.io gives it; `request_headers` is the `Access-Control-Request-Headers` value.
    pub fn preflight(request_headers: Option<&str>) -> HttpReply {
        let mut r = HttpReply::with(204, None, false, String::new());
        r.headers.push(("Access-Control-Allow-Methods", "GET,POST".to_string()));
        if let Some(h) = request_headers {
            r.headers.push(("Access-Control-Allow-Headers", h.to_string()));
        }
        r.headers.push(("Vary", "Access-Control-Request-Headers".to_string()));
        r
    }

    /// `503` `application/json` with `Retry-After: 1`: the server is at its live session cap
    /// (`body` is the capacity error; see `driver::core::at_capacity`).
    pub fn busy(body: String) -> HttpReply {
        let mut r = HttpReply::with(503, Some("application/json"), false, body);
        r.headers.push(("Retry-After", "1".to_string()));
        r
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// engine.io's error codes (spec §2.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    UnknownTransport = 0,
    UnknownSid = 1,
    BadHandshakeMethod = 2,
    BadRequest = 3,
    Forbidden = 4,
    UnsupportedProtocolVersion = 5,
}

impl ErrorCode {
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::UnknownTransport => "Transport unknown",
            ErrorCode::UnknownSid => "Session ID unknown",
            ErrorCode::BadHandshakeMethod => "Bad handshake method",
            ErrorCode::BadRequest => "Bad request",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::UnsupportedProtocolVersion => "Unsupported protocol version",
        }
    }

    pub fn status(self) -> u16 {
        if self == ErrorCode::Forbidden {
            403
        } else {
            400
        }
    }

    /// `{"code":N,"message":"…"}`.
    pub fn json(self) -> String {
        format!(r#"{{"code":{},"message":{}}}"#, self as u8, json_string(self.message()))
    }

    /// The reply to a plain HTTP request: `400` (or `403`) `application/json`.
    pub fn http_reply(self) -> HttpReply {
        HttpReply::with(self.status(), Some("application/json"), false, self.json())
    }

    /// The raw bytes engine.io writes on a refused WebSocket upgrade before destroying the
    /// socket (always `400`, the message as `text/html`).
    pub fn upgrade_reply(self) -> Vec<u8> {
        let msg = self.message();
        format!(
            "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-type: text/html\r\nContent-Length: {}\r\n\r\n{}",
            msg.len(),
            msg
        )
        .into_bytes()
    }
}

/// A request refused before reaching a session: answer with [`ErrorCode::http_reply`], or, when
/// `upgrade` is set, write [`ErrorCode::upgrade_reply`] on the raw socket and close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub code: ErrorCode,
    pub upgrade: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Polling,
    WebSocket,
}

/// The three query parameters engine.io reads (`t` and `b64` are ignored), percent-decoded.
/// A repeated key keeps its first value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineQuery {
    pub eio: Option<String>,
    pub transport: Option<String>,
    pub sid: Option<String>,
}

impl EngineQuery {
    /// Parses a raw query string (without the `?`), as Node's `querystring.parse` reads it.
    pub fn parse(query: &str) -> EngineQuery {
        let mut q = EngineQuery::default();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match percent_decode(k).as_str() {
                "EIO" => &mut q.eio,
                "transport" => &mut q.transport,
                "sid" => &mut q.sid,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(percent_decode(v));
            }
        }
        q
    }
}

/// `+` as space and `%XX` escapes; malformed escapes stay as they are (Node does the same).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex_val(b.get(i + 1)), hex_val(b.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: Option<&u8>) -> Option<u8> {
    match *b? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// What a request under `/socket.io/` asks for, after the checks engine.io makes before it
/// looks at a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `OPTIONS`: answer [`HttpReply::preflight`].
    Preflight,
    /// No `sid`: create a session on this core (`GET` polling, or a WebSocket upgrade).
    Handshake(Transport),
    /// A request for an existing session: hand it to the core [`sid_core`] names, look the
    /// session up there ([`ErrorCode::UnknownSid`] when absent) and dispatch on `request`.
    Session { sid: String, request: SessionRequest },
}

/// The kind of request made to an existing session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionRequest {
    /// Polling `GET`: [`EngineSession::handle_poll`].
    Poll,
    /// Polling `POST`: [`EngineSession::begin_post`], then [`EngineSession::finish_post`].
    Post,
    /// Polling with another method: `500` without a body ([`HttpReply::status_only`]).
    OtherMethod,
    /// WebSocket upgrade with `transport=websocket`: [`EngineSession::begin_upgrade`].
    Upgrade,
    /// Something engine.io refuses once the session is known to exist: answer `rejected`
    /// (`transport=websocket` without an upgrade, or an upgrade asking for polling).
    Invalid(Rejected),
}

/// The parts of a request head that engine.io's routing reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    /// `Upgrade: websocket` with a GET (a WebSocket handshake).
    pub websocket_upgrade: bool,
}

/// engine.io's `verify` and `handshake` checks, in its order: transport, then sid (or, for a
/// handshake, method, transport/upgrade agreement and protocol version).
pub fn route(head: &RequestHead<'_>) -> Result<Route, Rejected> {
    let upgrade = head.websocket_upgrade;
    if head.method.eq_ignore_ascii_case("OPTIONS") && !upgrade {
        return Ok(Route::Preflight);
    }
    let reject = |code| Err(Rejected { code, upgrade });
    let q = EngineQuery::parse(head.query);
    let transport = match q.transport.as_deref() {
        Some("polling") => Transport::Polling,
        Some("websocket") => Transport::WebSocket,
        _ => return reject(ErrorCode::UnknownTransport),
    };
    // `if (sid)` in engine.io: an empty sid is a handshake.
    if let Some(sid) = q.sid.filter(|s| !s.is_empty()) {
        let bad = |code| SessionRequest::Invalid(Rejected { code, upgrade });
        let request = match (transport, upgrade) {
            (Transport::WebSocket, true) => SessionRequest::Upgrade,
            (Transport::Polling, true) => bad(ErrorCode::BadRequest),
            (Transport::WebSocket, false) => bad(ErrorCode::BadRequest),
            (Transport::Polling, false) => match head.method {
                "GET" => SessionRequest::Poll,
                "POST" => SessionRequest::Post,
                _ => SessionRequest::OtherMethod,
            },
        };
        return Ok(Route::Session { sid, request });
    }
    if head.method != "GET" {
        return reject(ErrorCode::BadHandshakeMethod);
    }
    if upgrade != (transport == Transport::WebSocket) {
        return reject(ErrorCode::BadRequest);
    }
    if q.eio.as_deref() != Some("4") {
        return reject(ErrorCode::UnsupportedProtocolVersion);
    }
    Ok(Route::Handshake(transport))
}

// ---------------------------------------------------------------------------------------------
// The session state machine

/// Engine.IO settings (the defaults are engine.io 6.6's, spec §2.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// How long a probed WebSocket may take to send `5`.
    pub upgrade_timeout: Duration,
    /// How often a held GET is answered `6` while a probed upgrade is pending.
    pub noop_interval: Duration,
    /// How long a closing polling session waits for a GET to carry the `1`.
    pub close_timeout: Duration,
    /// How long a session may stay without a Socket.IO CONNECT
    /// ([`EngineSession::socket_connected`]).
    pub connect_timeout: Duration,
    /// Largest POST body or WebSocket message taken, and the advertised `maxPayload`.
    pub max_payload: usize,
    /// Bytes of unsent packets a session may hold before it is dropped as too slow.
    pub max_write_buffer: usize,
    /// In a fleet (`REDIS_URL`), this node's id, carried by every session id it hands out
    /// ([`new_sid`]) so any node can forward a request to the owner.
    pub sid_node: Option<[u8; NODE_ID_LEN]>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            upgrade_timeout: Duration::from_millis(10_000),
            noop_interval: Duration::from_millis(100),
            close_timeout: Duration::from_millis(30_000),
            connect_timeout: Duration::from_millis(45_000),
            max_payload: 1_000_000,
            max_write_buffer: 4 << 20,
            sid_node: None,
        }
    }
}

/// Names one WebSocket of a session (the direct one, or an upgrade attempt), so frames and
/// closes from an old socket cannot be mistaken for the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WsId(pub u64);

/// Something to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// The answer to the held polling GET.
    PollResponse(HttpReply),
    /// One text frame on that WebSocket.
    WsText { ws: WsId, text: String },
    /// Close that WebSocket (a close frame, then drop the connection). `code` is set when
    /// the close has a specific status (1009: message too big).
    WsClose { ws: WsId, code: Option<u16> },
}

/// What the session tells the layer above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineEvent {
    /// The data of a `4` packet: one Socket.IO packet.
    Message(String),
    /// The session now runs over WebSocket.
    Upgraded,
    /// The session is over; drain [`EngineSession::poll_transmit`] and forget it.
    Closed(CloseReason),
}

/// Why a session ended (engine.io's reasons, plus ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed: polling `1`, or its WebSocket went away.
    TransportClose,
    /// The client broke a transport rule (the text says which, in engine.io's words).
    TransportError(&'static str),
    /// An undecodable packet, or binary data (which these clients never send).
    ParseError,
    PingTimeout,
    /// No Socket.IO CONNECT within the connect timeout.
    ConnectTimeout,
    /// The write buffer grew past its cap: the client does not read.
    TooSlow,
    /// [`EngineSession::close`] was called.
    ServerClose,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::TransportClose => f.write_str("transport close"),
            CloseReason::TransportError(d) => write!(f, "transport error: {d}"),
            CloseReason::ParseError => f.write_str("parse error"),
            CloseReason::PingTimeout => f.write_str("ping timeout"),
            CloseReason::ConnectTimeout => f.write_str("connect timeout"),
            CloseReason::TooSlow => f.write_str("write buffer full (client too slow)"),
            CloseReason::ServerClose => f.write_str("server close"),
        }
    }
}

/// The outcome of a polling GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollStart {
    /// Answer now.
    Respond(HttpReply),
    /// Keep the request open; its answer comes out of [`EngineSession::poll_transmit`] as a
    /// [`Transmit::PollResponse`].
    Held,
}

/// Why a WebSocket upgrade for an existing session is refused. engine.io completes the
/// WebSocket handshake and closes it at once; the driver may do that or just drop the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeRefused {
    #[error("the session is closing")]
    Closing,
    #[error("the session already runs over WebSocket")]
    AlreadyWebSocket,
    #[error("an upgrade is already in progress")]
    AlreadyUpgrading,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Active {
    Polling,
    WebSocket(WsId),
}

#[derive(Debug, Clone, Copy)]
struct Upgrade {
    ws: WsId,
    deadline: Instant,
    /// Set once `2probe` was answered: the next time a held GET gets its `6`.
    next_noop: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// Flushing before the close; `deadline` bounds the wait.
    Closing {
        reason: CloseReason,
        deadline: Instant,
    },
    Closed,
}

/// One Engine.IO session.
#[derive(Debug)]
pub struct EngineSession {
    sid: String,
    config: EngineConfig,
    state: State,
    active: Active,
    upgrade: Option<Upgrade>,
    next_ws: u64,
    get_held: bool,
    post_in_flight: bool,
    /// Encoded packets not yet handed out, and their total length.
    write_buf: VecDeque<String>,
    write_bytes: usize,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    connect_deadline: Option<Instant>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<EngineEvent>,
}

impl EngineSession {
    fn new(now: Instant, sid: String, config: EngineConfig, active: Active) -> EngineSession {
        EngineSession {
            sid,
            config,
            state: State::Open,
            active,
            upgrade: None,
            next_ws: 1,
            get_held: false,
            post_in_flight: false,
            write_buf: VecDeque::new(),
            write_bytes: 0,
            next_ping: Some(now + config.ping_interval),
            pong_deadline: None,
            connect_deadline: Some(now + config.connect_timeout),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// A session opened by a polling handshake GET; the reply carries the open packet.
    pub fn new_polling(now: Instant, sid: String, config: EngineConfig) -> (EngineSession, HttpReply) {
        let mut s = EngineSession::new(now, sid, config, Active::Polling);
        let open = Packet::Open(open_json(&s.sid, &["websocket"], &config)).encode();
        s.push_raw(open);
        let reply = s.take_payload().expect("the open packet is buffered");
        (s, reply)
    }

    /// A session opened directly over WebSocket; its open packet (with `"upgrades":[]`) is
    /// the first [`Transmit::WsText`].
    pub fn new_websocket(now: Instant, sid: String, config: EngineConfig) -> (EngineSession, WsId) {
        let ws = WsId(0);
        let mut s = EngineSession::new(now, sid, config, Active::WebSocket(ws));
        let open = Packet::Open(open_json(&s.sid, &[], &config)).encode();
        s.push_raw(open);
        (s, ws)
    }

    pub fn sid(&self) -> &str {
        &self.sid
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn transport(&self) -> Transport {
        match self.active {
            Active::Polling => Transport::Polling,
            Active::WebSocket(_) => Transport::WebSocket,
        }
    }

    /// The WebSocket carrying the session, if it runs over one.
    pub fn websocket(&self) -> Option<WsId> {
        match self.active {
            Active::WebSocket(ws) => Some(ws),
            Active::Polling => None,
        }
    }

    pub fn is_upgrading(&self) -> bool {
        self.upgrade.is_some()
    }

    /// Open for traffic (not closing, not closed).
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// A polling GET is being held for this session.
    pub fn poll_held(&self) -> bool {
        self.get_held
    }

    /// Bytes of packets queued and not yet handed to a transport.
    pub fn buffered_bytes(&self) -> usize {
        self.write_bytes
    }

    /// The layer above saw a Socket.IO CONNECT: the connect timeout no longer applies.
    pub fn socket_connected(&mut self) {
        self.connect_deadline = None;
    }

    // --- sending ---

    /// Queues a `4` packet carrying one Socket.IO packet. Returns false when the session no
    /// longer takes packets (closing, closed, or just dropped for exceeding the buffer cap).
    pub fn send_message(&mut self, socketio_packet: &str) -> bool {
        let mut p = String::with_capacity(1 + socketio_packet.len());
        p.push('4');
        p.push_str(socketio_packet);
        self.send_encoded(p)
    }

    fn send_encoded(&mut self, packet: String) -> bool {
        if self.state != State::Open {
            return false;
        }
        self.push_raw(packet);
        if self.write_bytes > self.config.max_write_buffer {
            self.close_now(CloseReason::TooSlow);
            return false;
        }
        true
    }

    fn push_raw(&mut self, packet: String) {
        self.write_bytes += packet.len();
        self.write_buf.push_back(packet);
    }

    /// Everything buffered as one polling response, or `None` when nothing is buffered.
    /// A payload that carries the close packet of a closing session finishes it.
    fn take_payload(&mut self) -> Option<HttpReply> {
        if self.write_buf.is_empty() {
            return None;
        }
        let mut body = String::with_capacity(self.write_bytes + self.write_buf.len());
        for (i, p) in self.write_buf.drain(..).enumerate() {
            if i > 0 {
                body.push(RECORD_SEPARATOR);
            }
            body.push_str(&p);
        }
        self.write_bytes = 0;
        if let State::Closing { reason, .. } = self.state {
            self.finish(reason);
        }
        Some(HttpReply::payload(body))
    }

    // --- polling ---

    /// A polling GET arrived.
    pub fn handle_poll(&mut self, _now: Instant) -> PollStart {
        if self.state == State::Closed {
            return PollStart::Respond(ErrorCode::UnknownSid.http_reply());
        }
        if self.active != Active::Polling {
            // engine.io's TRANSPORT_MISMATCH; the session carries on over WebSocket.
            return PollStart::Respond(ErrorCode::BadRequest.http_reply());
        }
        if self.get_held {
            self.close_now(CloseReason::TransportError("overlap from client"));
            return PollStart::Respond(HttpReply::status_only(400));
        }
        match self.take_payload() {
            Some(reply) => PollStart::Respond(reply),
            None => {
                self.get_held = true;
                PollStart::Held
            }
        }
    }

    /// The client went away while its GET was held (engine.io closes the session).
    pub fn poll_aborted(&mut self, _now: Instant) {
        if self.get_held && self.active == Active::Polling {
            self.get_held = false;
            self.close_now(CloseReason::TransportError("poll connection closed prematurely"));
        }
    }

    /// A polling POST's head arrived. `content_length` lets an oversized body be refused
    /// before it is read; `content_type` catches binary payloads, which protocol 4 refuses.
    /// On `Ok`, read the body and call [`Self::finish_post`] (or [`Self::post_aborted`]).
    pub fn begin_post(
        &mut self,
        _now: Instant,
        content_length: Option<usize>,
        content_type: Option<&str>,
    ) -> Result<(), HttpReply> {
        if self.state == State::Closed {
            return Err(ErrorCode::UnknownSid.http_reply());
        }
        if self.active != Active::Polling {
            return Err(ErrorCode::BadRequest.http_reply());
        }
        if self.post_in_flight {
            self.close_now(CloseReason::TransportError("data request overlap from client"));
            return Err(HttpReply::status_only(400));
        }
        if content_type.is_some_and(|ct| ct.trim().eq_ignore_ascii_case("application/octet-stream")) {
            self.close_now(CloseReason::TransportError("invalid content"));
            return Err(HttpReply::status_only(400));
        }
        if content_length.is_some_and(|n| n > self.config.max_payload) {
            // engine.io answers 413 and drops the body; the session itself carries on.
            return Err(HttpReply::status_only(413));
        }
        self.post_in_flight = true;
        Ok(())
    }

    /// The whole POST body arrived: its packets are processed in order and the reply is
    /// `ok` (engine.io answers `ok` even when a packet closed the session).
    pub fn finish_post(&mut self, now: Instant, body: &[u8]) -> HttpReply {
        let was_in_flight = std::mem::replace(&mut self.post_in_flight, false);
        if body.len() > self.config.max_payload {
            return HttpReply::status_only(413);
        }
        if self.state == State::Closed || !was_in_flight {
            return HttpReply::status_only(400);
        }
        let text = String::from_utf8_lossy(body);
        for packet in decode_payload(&text) {
            match packet {
                Ok(Packet::Close) if self.active == Active::Polling => {
                    self.close_polling_by_client();
                    break;
                }
                Ok(p) => self.on_packet(now, p),
                Err(_) => {
                    self.close_now(CloseReason::ParseError);
                    break;
                }
            }
            if self.state == State::Closed {
                break;
            }
        }
        HttpReply::post_ok()
    }

    /// The client went away while sending a POST body (engine.io closes the session).
    pub fn post_aborted(&mut self, _now: Instant) {
        if std::mem::replace(&mut self.post_in_flight, false) {
            self.close_now(CloseReason::TransportError("data request connection closed prematurely"));
        }
    }

    /// POST `1`: the held GET (if any) is answered `6`, as engine.io's polling `onClose` does.
    fn close_polling_by_client(&mut self) {
        if self.get_held {
            self.get_held = false;
            self.transmits.push_back(Transmit::PollResponse(HttpReply::payload("6".into())));
        }
        self.close_now(CloseReason::TransportClose);
    }

    // --- WebSocket ---

    /// A WebSocket handshake with this session's sid. On `Ok`, complete the handshake (101, no
    /// extensions) and feed its frames with the returned id.
    pub fn begin_upgrade(&mut self, now: Instant) -> Result<WsId, UpgradeRefused> {
        if self.state != State::Open {
            return Err(UpgradeRefused::Closing);
        }
        if self.active != Active::Polling {
            return Err(UpgradeRefused::AlreadyWebSocket);
        }
        if self.upgrade.is_some() {
            return Err(UpgradeRefused::AlreadyUpgrading);
        }
        let ws = WsId(self.next_ws);
        self.next_ws += 1;
        self.upgrade = Some(Upgrade { ws, deadline: now + self.config.upgrade_timeout, next_noop: None });
        Ok(ws)
    }

    /// A complete text message arrived on WebSocket `ws`.
    pub fn ws_text(&mut self, now: Instant, ws: WsId, text: &str) {
        if text.len() > self.config.max_payload {
            self.ws_too_big(ws);
            return;
        }
        if let Some(up) = self.upgrade.filter(|u| u.ws == ws) {
            match Packet::decode(text) {
                Ok(Packet::Ping(d)) if d == "probe" => {
                    self.transmits.push_back(Transmit::WsText { ws, text: "3probe".into() });
                    // setInterval restarts on every probe.
                    self.upgrade = Some(Upgrade { next_noop: Some(now + self.config.noop_interval), ..up });
                }
                Ok(Packet::Upgrade) => self.complete_upgrade(ws),
                _ => self.fail_upgrade(None),
            }
            return;
        }
        if self.active != Active::WebSocket(ws) || self.state == State::Closed {
            return; // a frame from a socket that is no longer ours
        }
        match Packet::decode(text) {
            Ok(p) => self.on_packet(now, p),
            Err(_) => self.close_now(CloseReason::ParseError),
        }
    }

    /// A binary message arrived on WebSocket `ws`. Binary data is never part of this protocol
    /// subset, so it ends an upgrade attempt, or the session (engine.io would pass it to
    /// Socket.IO, which fails on an attachment it did not announce).
    pub fn ws_binary(&mut self, now: Instant, ws: WsId, data: &[u8]) {
        if data.len() > self.config.max_payload {
            self.ws_too_big(ws);
        } else if self.upgrade.is_some_and(|u| u.ws == ws) {
            self.fail_upgrade(None);
        } else if self.active == Active::WebSocket(ws) && self.state != State::Closed {
            self.on_packet(now, Packet::Binary(data.to_vec()));
        }
    }

    /// WebSocket `ws` closed or failed (close frame received, I/O error, EOF).
    pub fn ws_closed(&mut self, _now: Instant, ws: WsId) {
        if self.upgrade.is_some_and(|u| u.ws == ws) {
            self.upgrade = None; // polling carries on
        } else if self.active == Active::WebSocket(ws) && self.state != State::Closed {
            self.finish(CloseReason::TransportClose);
        }
    }

    /// A message on WebSocket `ws` exceeded `maxPayload` (the driver's frame codec refused
    /// it, or [`Self::ws_text`] / [`Self::ws_binary`] measured it): `ws` closes with 1009, as
    /// the `ws` library does.
    pub fn ws_too_big(&mut self, ws: WsId) {
        if self.upgrade.is_some_and(|u| u.ws == ws) {
            self.fail_upgrade(Some(1009));
        } else if self.active == Active::WebSocket(ws) && self.state != State::Closed {
            self.transmits.push_back(Transmit::WsClose { ws, code: Some(1009) });
            self.finish(CloseReason::TransportClose);
        }
    }

    fn complete_upgrade(&mut self, ws: WsId) {
        self.upgrade = None;
        if self.get_held {
            // The client pauses polling before `5`, so this only meets a misbehaving client;
            // a noop lets its poll finish without side effects.
            self.get_held = false;
            self.transmits.push_back(Transmit::PollResponse(HttpReply::payload("6".into())));
        }
        self.active = Active::WebSocket(ws);
        self.events.push_back(EngineEvent::Upgraded);
        // The buffered packets now leave on the WebSocket, in order, from poll_transmit.
    }

    /// Only the probing WebSocket closes; the session stays on polling.
    fn fail_upgrade(&mut self, code: Option<u16>) {
        if let Some(up) = self.upgrade.take() {
            self.transmits.push_back(Transmit::WsClose { ws: up.ws, code });
        }
    }

    // --- packets from the client ---

    fn on_packet(&mut self, now: Instant, packet: Packet) {
        if self.state != State::Open {
            return; // engine.io ignores packets once closing
        }
        match packet {
            Packet::Pong(_) => {
                self.pong_deadline = None;
                self.next_ping = Some(now + self.config.ping_interval);
            }
            Packet::Ping(_) => self.close_now(CloseReason::TransportError("invalid heartbeat direction")),
            Packet::Message(m) => self.events.push_back(EngineEvent::Message(m)),
            Packet::Binary(_) => self.close_now(CloseReason::ParseError),
            // `1` means something only on polling (handled by finish_post); open, upgrade on
            // the current transport and noop are ignored, as engine.io ignores them.
            Packet::Close | Packet::Open(_) | Packet::Upgrade | Packet::Noop => {}
        }
    }

    // --- closing ---

    /// Closes the session after flushing what is buffered: over polling the `1` follows the
    /// buffered packets on the next GET (or the session ends after the close timeout), over
    /// WebSocket the socket is closed after the last frame.
    pub fn close(&mut self, now: Instant, reason: CloseReason) {
        if self.state != State::Open {
            return;
        }
        self.fail_upgrade(None);
        self.next_ping = None;
        self.pong_deadline = None;
        self.connect_deadline = None;
        self.state = State::Closing { reason, deadline: now + self.config.close_timeout };
        if self.active == Active::Polling {
            self.push_raw("1".into());
        }
    }

    /// Ends the session now: a held GET gets `1`, the WebSocket is closed, the buffer is dropped.
    fn close_now(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        self.fail_upgrade(None);
        match self.active {
            Active::Polling if self.get_held => {
                self.get_held = false;
                self.transmits.push_back(Transmit::PollResponse(HttpReply::payload("1".into())));
            }
            Active::Polling => {}
            Active::WebSocket(ws) => self.transmits.push_back(Transmit::WsClose { ws, code: None }),
        }
        self.finish(reason);
    }

    fn finish(&mut self, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        self.fail_upgrade(None);
        self.state = State::Closed;
        self.write_buf.clear();
        self.write_bytes = 0;
        self.get_held = false;
        self.next_ping = None;
        self.pong_deadline = None;
        self.connect_deadline = None;
        self.events.push_back(EngineEvent::Closed(reason));
    }

    // --- timers ---

    /// The earliest instant at which [`Self::handle_timeout`] has something to do.
    pub fn next_timeout(&self) -> Option<Instant> {
        let closing = match self.state {
            State::Closed => return None,
            State::Closing { deadline, .. } => Some(deadline),
            State::Open => None,
        };
        let noop = self.upgrade.and_then(|u| u.next_noop.filter(|_| self.get_held));
        [closing, self.next_ping, self.pong_deadline, self.connect_deadline, self.upgrade.map(|u| u.deadline), noop]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let State::Closing { reason, deadline } = self.state {
            if now >= deadline {
                self.close_now(reason);
            }
        }
        if self.state == State::Closed {
            return;
        }
        if self.pong_deadline.is_some_and(|d| now >= d) {
            self.close_now(CloseReason::PingTimeout);
            return;
        }
        if self.connect_deadline.is_some_and(|d| now >= d) {
            self.close(now, CloseReason::ConnectTimeout);
        }
        if self.next_ping.is_some_and(|d| now >= d) {
            self.next_ping = None;
            self.pong_deadline = Some(now + self.config.ping_timeout);
            self.send_encoded("2".into());
        }
        if let Some(mut up) = self.upgrade {
            if now >= up.deadline {
                self.fail_upgrade(None);
            } else if let Some(mut at) = up.next_noop.filter(|at| now >= *at) {
                while at <= now {
                    at += self.config.noop_interval;
                }
                up.next_noop = Some(at);
                self.upgrade = Some(up);
                if self.get_held && self.active == Active::Polling {
                    self.get_held = false;
                    self.transmits.push_back(Transmit::PollResponse(HttpReply::payload("6".into())));
                }
            }
        }
    }

    // --- outputs ---

    /// The next thing to write. Pull until `None` after every input. WebSocket frames are
    /// taken from the session's write buffer one at a time, so a driver that stops pulling
    /// while its socket is congested leaves them here, counted against the buffer cap.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(t) = self.transmits.pop_front() {
            return Some(t);
        }
        match self.active {
            Active::Polling => {
                if self.get_held && !self.write_buf.is_empty() {
                    self.get_held = false;
                    return self.take_payload().map(Transmit::PollResponse);
                }
                None
            }
            Active::WebSocket(ws) => {
                if let Some(text) = self.write_buf.pop_front() {
                    self.write_bytes -= text.len();
                    return Some(Transmit::WsText { ws, text });
                }
                if let State::Closing { reason, .. } = self.state {
                    self.finish(reason);
                    return Some(Transmit::WsClose { ws, code: None });
                }
                None
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn polling(now: Instant) -> EngineSession {
        let (s, reply) = EngineSession::new_polling(now, new_sid(1, None, &mut rand::rng()), EngineConfig::default());
        assert!(reply.body.starts_with("0{"));
        s
    }

    fn transmits(s: &mut EngineSession) -> Vec<Transmit> {
        std::iter::from_fn(|| s.poll_transmit()).collect()
    }

    fn events(s: &mut EngineSession) -> Vec<EngineEvent> {
        std::iter::from_fn(|| s.poll_event()).collect()
    }

    fn poll_body(t: &Transmit) -> &str {
        match t {
            Transmit::PollResponse(r) => &r.body,
            other => panic!("not a poll response: {other:?}"),
        }
    }

    fn get_now(s: &mut EngineSession, now: Instant) -> String {
        match s.handle_poll(now) {
            PollStart::Respond(r) => r.body,
            PollStart::Held => panic!("GET held"),
        }
    }

    fn post(s: &mut EngineSession, now: Instant, body: &str) -> HttpReply {
        s.begin_post(now, Some(body.len()), Some("text/plain;charset=UTF-8")).unwrap();
        s.finish_post(now, body.as_bytes())
    }

    fn closed_with(s: &mut EngineSession) -> Option<CloseReason> {
        events(s).into_iter().find_map(|e| match e {
            EngineEvent::Closed(r) => Some(r),
            _ => None,
        })
    }

    // --- codecs ---

    #[test]
    fn packet_round_trips() {
        let all = [
            Packet::Open(r#"{"sid":"x"}"#.into()),
            Packet::Close,
            Packet::Ping(String::new()),
            Packet::Ping("probe".into()),
            Packet::Pong(String::new()),
            Packet::Pong("probe".into()),
            Packet::Message(String::new()),
            Packet::Message(r#"2["authMessage",{"é":"✓"}]"#.into()),
            Packet::Binary(vec![0, 1, 2, 255]),
            Packet::Binary(Vec::new()),
            Packet::Upgrade,
            Packet::Noop,
        ];
        for p in all {
            let wire = p.encode();
            assert_eq!(Packet::decode(&wire).unwrap(), p, "{wire}");
        }
        assert_eq!(Packet::Ping("probe".into()).encode(), "2probe");
        assert_eq!(Packet::Pong("probe".into()).encode(), "3probe");
        assert_eq!(Packet::Binary(vec![1, 2, 3]).encode(), "bAQID");
        // Data after close/upgrade/noop is ignored, as engine.io ignores it.
        assert_eq!(Packet::decode("1x").unwrap(), Packet::Close);
        assert_eq!(Packet::decode("5probe").unwrap(), Packet::Upgrade);
        assert_eq!(Packet::decode("6?").unwrap(), Packet::Noop);
        assert_eq!(Packet::decode(""), Err(PacketError::Empty));
        assert_eq!(Packet::decode("7"), Err(PacketError::UnknownType('7')));
        assert_eq!(Packet::decode("x42"), Err(PacketError::UnknownType('x')));
        assert_eq!(Packet::decode("ü"), Err(PacketError::UnknownType('ü')));
        assert_eq!(Packet::decode("b!!"), Err(PacketError::Base64));
    }

    #[test]
    fn payload_framing() {
        let body = encode_payload(["40", r#"42["a"]"#, "3"]);
        assert_eq!(body, "40\x1e42[\"a\"]\x1e3");
        let back: Vec<_> = decode_payload(&body).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            back,
            vec![Packet::Message("0".into()), Packet::Message(r#"2["a"]"#.into()), Packet::Pong("".into())]
        );
        assert_eq!(encode_payload(["6"]), "6");
        assert_eq!(encode_payload(std::iter::empty::<&str>()), "");
        // An empty body, or an empty record, is a parse error (engine.io closes).
        assert_eq!(decode_payload("").collect::<Vec<_>>(), vec![Err(PacketError::Empty)]);
        let mixed: Vec<_> = decode_payload("3\x1e\x1e41").collect();
        assert_eq!(mixed, vec![Ok(Packet::Pong("".into())), Err(PacketError::Empty), Ok(Packet::Message("1".into()))]);
    }

    #[test]
    fn open_packet_json_is_engine_ios() {
        let c = EngineConfig::default();
        assert_eq!(
            open_json("BluSmGmBecFyUVGFAAAA", &["websocket"], &c),
            r#"{"sid":"BluSmGmBecFyUVGFAAAA","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        assert_eq!(
            open_json("s", &[], &c),
            r#"{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        let (_, reply) = EngineSession::new_polling(t0(), "BluSmGmBecFyUVGFAAAA".into(), c);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), 118, "the captured Content-Length");
        assert_eq!(reply.header("content-type"), Some("text/plain; charset=UTF-8"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    }

    #[test]
    fn sids_name_their_core() {
        for core in 0..=255u8 {
            let sid = new_sid(core, None, &mut rand::rng());
            assert_eq!(sid.len(), SID_LEN);
            assert!(sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{sid}");
            assert_eq!(sid_core(&sid), Some(core));
        }
        assert_ne!(new_sid(0, None, &mut rand::rng()), new_sid(0, None, &mut rand::rng()));
        // Seeded, the ids are reproducible (the driver's tests rely on it).
        use rand::SeedableRng;
        let seeded = || rand::rngs::StdRng::seed_from_u64(7);
        assert_eq!(new_sid(3, None, &mut seeded()), new_sid(3, None, &mut seeded()));
        assert_eq!(new_socket_id(&mut seeded()), new_socket_id(&mut seeded()));
        for bad in [
            "",
            "short",
            "BluSmGmBecFyUVGFAAA",
            "BluSmGmBecFyUVGFAAAAA",
            "BluSmGmBecFyUVGFAA+/",
            "BluSmGmBecFyUVGFA===",
            "éééééééééé",
        ] {
            assert_eq!(sid_core(bad), None, "{bad}");
        }
        // A real engine.io sid (20 base64url chars) reads as some core: harmless, it is then
        // unknown on that core.
        assert!(sid_core("BluSmGmBecFyUVGFAAAA").is_some());
        let id = new_socket_id(&mut rand::rng());
        assert_eq!(id.len(), SID_LEN);
        assert_eq!(sid_node("BluSmGmBecFyUVGFAAAA"), None, "a single-node id names no node");
    }

    #[test]
    fn fleet_sids_name_their_node_and_core() {
        let node = [0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6];
        for core in [0u8, 1, 7, 255] {
            let sid = new_sid(core, Some(&node), &mut rand::rng());
            assert_eq!(sid.len(), FLEET_SID_LEN, "{sid}");
            assert!(sid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{sid}");
            assert_eq!(sid_core(&sid), Some(core));
            assert_eq!(sid_node(&sid), Some(node));
        }
        // Still 112 random bits: two ids of one node and core differ beyond the prefix.
        let (a, b) = (new_sid(3, Some(&node), &mut rand::rng()), new_sid(3, Some(&node), &mut rand::rng()));
        assert_ne!(a, b);
        assert_eq!(a[..9], b[..9], "core and node id are the first 7 bytes");
        // The bytes are what the format says: core, node, random.
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&a).unwrap();
        assert_eq!((raw.len(), raw[0], &raw[1..7]), (21, 3, &node[..]));
        for bad in ["", "BluSmGmBecFyUVGFAAAAAAAAAAA", "BluSmGmBecFyUVGFAAAAAAAAAAAAA", "BluSmGmBecFyUVGFAAAAAAAAAA+/"]
        {
            assert_eq!((sid_node(bad), sid_core(bad)), (None, None), "{bad}");
        }
    }

    // --- routing and error replies (§2.10) ---

    fn head<'a>(method: &'a str, query: &'a str, up: bool) -> RequestHead<'a> {
        RequestHead { method, query, websocket_upgrade: up }
    }

    #[test]
    fn error_replies_are_byte_exact() {
        let table = [
            (ErrorCode::UnknownTransport, 400, r#"{"code":0,"message":"Transport unknown"}"#),
            (ErrorCode::UnknownSid, 400, r#"{"code":1,"message":"Session ID unknown"}"#),
            (ErrorCode::BadHandshakeMethod, 400, r#"{"code":2,"message":"Bad handshake method"}"#),
            (ErrorCode::BadRequest, 400, r#"{"code":3,"message":"Bad request"}"#),
            (ErrorCode::Forbidden, 403, r#"{"code":4,"message":"Forbidden"}"#),
            (ErrorCode::UnsupportedProtocolVersion, 400, r#"{"code":5,"message":"Unsupported protocol version"}"#),
        ];
        for (code, status, body) in table {
            let r = code.http_reply();
            assert_eq!((r.status, r.body.as_str()), (status, body));
            assert_eq!(r.header("Content-Type"), Some("application/json"));
            assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));
        }
        assert_eq!(
            String::from_utf8(ErrorCode::UnknownSid.upgrade_reply()).unwrap(),
            "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-type: text/html\r\nContent-Length: 18\r\n\r\nSession ID unknown"
        );
        let p = HttpReply::preflight(Some("content-type"));
        assert_eq!(p.status, 204);
        assert_eq!(p.header("Access-Control-Allow-Methods"), Some("GET,POST"));
        assert_eq!(p.header("Access-Control-Allow-Headers"), Some("content-type"));
        assert_eq!(p.header("Vary"), Some("Access-Control-Request-Headers"));
        let ok = HttpReply::post_ok();
        assert_eq!((ok.status, ok.body.as_str(), ok.header("content-type")), (200, "ok", Some("text/html")));
    }

    #[test]
    fn routing_follows_engine_io_order() {
        let rej = |code, upgrade| Err(Rejected { code, upgrade });
        let cases: Vec<(RequestHead<'_>, Result<Route, Rejected>)> = vec![
            (head("GET", "EIO=4&transport=polling&t=qe9vvpdb", false), Ok(Route::Handshake(Transport::Polling))),
            (head("GET", "EIO=4&transport=websocket", true), Ok(Route::Handshake(Transport::WebSocket))),
            (head("GET", "EIO=4&transport=polling&t=x&sid=", false), Ok(Route::Handshake(Transport::Polling))),
            (head("OPTIONS", "EIO=4&transport=polling", false), Ok(Route::Preflight)),
            (head("GET", "EIO=4", false), rej(ErrorCode::UnknownTransport, false)),
            (head("GET", "EIO=4&transport=webtransport", false), rej(ErrorCode::UnknownTransport, false)),
            (head("GET", "EIO=4&transport=flash&sid=abc", true), rej(ErrorCode::UnknownTransport, true)),
            (head("POST", "EIO=4&transport=polling", false), rej(ErrorCode::BadHandshakeMethod, false)),
            (head("GET", "EIO=4&transport=websocket", false), rej(ErrorCode::BadRequest, false)),
            (head("GET", "EIO=4&transport=polling", true), rej(ErrorCode::BadRequest, true)),
            (head("GET", "transport=polling", false), rej(ErrorCode::UnsupportedProtocolVersion, false)),
            (head("GET", "EIO=3&transport=polling", false), rej(ErrorCode::UnsupportedProtocolVersion, false)),
            (head("GET", "EIO=3&transport=websocket", true), rej(ErrorCode::UnsupportedProtocolVersion, true)),
        ];
        for (h, want) in cases {
            assert_eq!(route(&h), want, "{h:?}");
        }
        let session = |q, m, up| match route(&head(m, q, up)) {
            Ok(Route::Session { sid, request }) => (sid, request),
            other => panic!("{other:?}"),
        };
        // With a sid, EIO is not looked at (engine.io checks it only on a handshake).
        assert_eq!(
            session("EIO=4&transport=polling&t=1&sid=AB%2dc", "GET", false),
            ("AB-c".into(), SessionRequest::Poll)
        );
        assert_eq!(session("transport=polling&sid=x", "POST", false).1, SessionRequest::Post);
        assert_eq!(session("transport=polling&sid=x", "PUT", false).1, SessionRequest::OtherMethod);
        assert_eq!(session("EIO=4&transport=websocket&sid=x", "GET", true).1, SessionRequest::Upgrade);
        assert_eq!(
            session("EIO=4&transport=websocket&sid=x", "GET", false).1,
            SessionRequest::Invalid(Rejected { code: ErrorCode::BadRequest, upgrade: false })
        );
        assert_eq!(
            session("EIO=4&transport=polling&sid=x", "GET", true).1,
            SessionRequest::Invalid(Rejected { code: ErrorCode::BadRequest, upgrade: true })
        );
    }

    #[test]
    fn query_parsing() {
        let q = EngineQuery::parse("EIO=4&transport=polling&t=N8h&sid=a%2Fb+c&sid=second&x");
        assert_eq!(q.eio.as_deref(), Some("4"));
        assert_eq!(q.transport.as_deref(), Some("polling"));
        assert_eq!(q.sid.as_deref(), Some("a/b c"));
        let q = EngineQuery::parse("sid=%&transport=%zz&EIO=%4");
        assert_eq!((q.sid.as_deref(), q.transport.as_deref(), q.eio.as_deref()), (Some("%"), Some("%zz"), Some("%4")));
        assert_eq!(EngineQuery::parse("sid=%C3%A9%ff").sid.as_deref(), Some("é\u{fffd}"));
        assert_eq!(EngineQuery::parse(""), EngineQuery::default());
    }

    // --- polling ---

    #[test]
    fn held_get_is_answered_with_everything_buffered() {
        let now = t0();
        let mut s = polling(now);
        assert_eq!(s.handle_poll(now), PollStart::Held);
        assert!(transmits(&mut s).is_empty());
        assert!(s.send_message(r#"0{"sid":"abc"}"#));
        assert!(s.send_message(r#"2["authMessage",{}]"#));
        let t = transmits(&mut s);
        assert_eq!(t.len(), 1, "one response carries the whole buffer");
        assert_eq!(poll_body(&t[0]), "40{\"sid\":\"abc\"}\x1e42[\"authMessage\",{}]");
        let Transmit::PollResponse(r) = &t[0] else { unreachable!() };
        assert_eq!(r.header("Content-Type"), Some("text/plain; charset=UTF-8"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        // Buffered before the GET: answered at once.
        s.send_message("41");
        assert_eq!(get_now(&mut s, now), "441");
        assert_eq!(s.buffered_bytes(), 0);
    }

    #[test]
    fn posts_deliver_messages_in_order_and_reply_ok() {
        let now = t0();
        let mut s = polling(now);
        let r = post(&mut s, now, "40\x1e42[\"a\"]");
        assert_eq!(r, HttpReply::post_ok());
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(events(&mut s), vec![EngineEvent::Message("0".into()), EngineEvent::Message("2[\"a\"]".into())]);
        // Non-UTF-8 is decoded lossily, as Node's setEncoding('utf8') does.
        post(&mut s, now, "");
        assert_eq!(closed_with(&mut s), Some(CloseReason::ParseError));
    }

    #[test]
    fn overlapping_get_closes_the_session() {
        let now = t0();
        let mut s = polling(now);
        assert_eq!(s.handle_poll(now), PollStart::Held);
        assert_eq!(s.handle_poll(now), PollStart::Respond(HttpReply::status_only(400)));
        assert_eq!(poll_body(&transmits(&mut s)[0]), "1");
        assert_eq!(closed_with(&mut s), Some(CloseReason::TransportError("overlap from client")));
        assert!(s.is_closed());
        assert_eq!(s.handle_poll(now), PollStart::Respond(ErrorCode::UnknownSid.http_reply()));
    }

    #[test]
    fn overlapping_post_closes_the_session() {
        let now = t0();
        let mut s = polling(now);
        s.begin_post(now, Some(2), None).unwrap();
        assert_eq!(s.begin_post(now, Some(2), None), Err(HttpReply::status_only(400)));
        assert_eq!(closed_with(&mut s), Some(CloseReason::TransportError("data request overlap from client")));
        assert_eq!(s.finish_post(now, b"40"), HttpReply::status_only(400));
        assert!(events(&mut s).is_empty(), "nothing processed after the close");
    }

    #[test]
    fn payload_limits() {
        let now = t0();
        let config = EngineConfig { max_payload: 10, ..Default::default() };
        let (mut s, _) = EngineSession::new_polling(now, new_sid(0, None, &mut rand::rng()), config);
        assert_eq!(s.begin_post(now, Some(11), None), Err(HttpReply::status_only(413)));
        assert!(s.is_open(), "413 leaves the session alone");
        s.begin_post(now, None, None).unwrap();
        assert_eq!(s.finish_post(now, &[b'4'; 11]), HttpReply::status_only(413));
        assert!(events(&mut s).is_empty());
        assert_eq!(post(&mut s, now, "4123456789"), HttpReply::post_ok());
        assert_eq!(events(&mut s), vec![EngineEvent::Message("123456789".into())]);
        // Binary POST bodies are refused in protocol 4.
        assert_eq!(s.begin_post(now, Some(3), Some("application/octet-stream")), Err(HttpReply::status_only(400)));
        assert_eq!(closed_with(&mut s), Some(CloseReason::TransportError("invalid content")));
    }

    #[test]
    fn client_close_over_polling_answers_the_held_get_with_noop() {
        let now = t0();
        let mut s = polling(now);
        post(&mut s, now, "40");
        assert_eq!(s.handle_poll(now), PollStart::Held);
        // What the client does on disconnect(): POST 41, POST 1.
        post(&mut s, now, "41");
        assert_eq!(post(&mut s, now, "1"), HttpReply::post_ok());
        assert_eq!(transmits(&mut s), vec![Transmit::PollResponse(HttpReply::payload("6".into()))]);
        assert_eq!(
            events(&mut s),
            vec![
                EngineEvent::Message("0".into()),
                EngineEvent::Message("1".into()),
                EngineEvent::Closed(CloseReason::TransportClose)
            ]
        );
    }

    #[test]
    fn bad_packet_in_a_post_closes_after_the_good_ones() {
        let now = t0();
        let mut s = polling(now);
        assert_eq!(post(&mut s, now, "4a\x1e9\x1e4b"), HttpReply::post_ok());
        assert_eq!(
            events(&mut s),
            vec![EngineEvent::Message("a".into()), EngineEvent::Closed(CloseReason::ParseError)]
        );
    }

    #[test]
    fn aborted_requests_close_the_session() {
        let now = t0();
        let mut s = polling(now);
        assert_eq!(s.handle_poll(now), PollStart::Held);
        s.poll_aborted(now);
        assert_eq!(closed_with(&mut s), Some(CloseReason::TransportError("poll connection closed prematurely")));
        let mut s = polling(now);
        s.begin_post(now, Some(5), None).unwrap();
        s.post_aborted(now);
        assert_eq!(
            closed_with(&mut s),
            Some(CloseReason::TransportError("data request connection closed prematurely"))
        );
        // Without a request in flight there is nothing to abort.
        let mut s = polling(now);
        s.poll_aborted(now);
        s.post_aborted(now);
        assert!(s.is_open());
    }

    // --- heartbeat and timers ---

    #[test]
    fn heartbeat_over_polling() {
        let start = t0();
        let mut s = polling(start);
        s.socket_connected();
        assert_eq!(s.next_timeout(), Some(start + ms(25_000)));
        s.handle_timeout(start + ms(24_999));
        assert_eq!(s.buffered_bytes(), 0);
        s.handle_timeout(start + ms(25_000));
        assert_eq!(get_now(&mut s, start + ms(25_001)), "2");
        assert_eq!(s.next_timeout(), Some(start + ms(45_000)), "pong deadline");
        post(&mut s, start + ms(26_000), "3");
        assert_eq!(s.next_timeout(), Some(start + ms(51_000)), "next ping 25 s after the pong");
        s.handle_timeout(start + ms(51_000));
        assert_eq!(s.handle_poll(start + ms(51_000)), PollStart::Respond(HttpReply::payload("2".into())));
        // No pong: closed 20 s after the ping, the held GET gets `1`.
        assert_eq!(s.handle_poll(start + ms(52_000)), PollStart::Held);
        s.handle_timeout(start + ms(70_999));
        assert!(s.is_open());
        s.handle_timeout(start + ms(71_000));
        assert_eq!(poll_body(&transmits(&mut s)[0]), "1");
        assert_eq!(closed_with(&mut s), Some(CloseReason::PingTimeout));
        assert_eq!(s.next_timeout(), None);
    }

    #[test]
    fn ping_from_the_client_is_a_protocol_error() {
        let now = t0();
        let mut s = polling(now);
        post(&mut s, now, "2");
        assert_eq!(closed_with(&mut s), Some(CloseReason::TransportError("invalid heartbeat direction")));
    }

    #[test]
    fn connect_timeout_closes_gracefully() {
        let start = t0();
        let mut s = polling(start);
        for at in [25_000, 45_000] {
            // Keep the heartbeat happy so only the connect timeout matters.
            s.handle_timeout(start + ms(at));
            if at == 25_000 {
                assert_eq!(get_now(&mut s, start + ms(at)), "2");
                post(&mut s, start + ms(at), "3");
            }
        }
        assert!(!s.is_open() && !s.is_closed(), "closing, waiting for a GET to carry `1`");
        assert_eq!(get_now(&mut s, start + ms(46_000)), "1");
        assert_eq!(closed_with(&mut s), Some(CloseReason::ConnectTimeout));

        let mut s = polling(start);
        s.socket_connected();
        s.handle_timeout(start + ms(25_000));
        get_now(&mut s, start + ms(25_000));
        post(&mut s, start + ms(25_000), "3");
        s.handle_timeout(start + ms(45_000));
        assert!(s.is_open());
    }

    #[test]
    fn server_close_flushes_then_closes() {
        let now = t0();
        let mut s = polling(now);
        s.send_message("2[\"bye\"]");
        s.close(now, CloseReason::ServerClose);
        assert!(!s.send_message("2[\"late\"]"), "nothing is queued once closing");
        assert_eq!(get_now(&mut s, now), "42[\"bye\"]\x1e1");
        assert_eq!(closed_with(&mut s), Some(CloseReason::ServerClose));

        // No GET comes: the close timeout ends it.
        let mut s = polling(now);
        s.close(now, CloseReason::ServerClose);
        assert_eq!(s.next_timeout(), Some(now + ms(30_000)));
        s.handle_timeout(now + ms(30_000));
        assert_eq!(closed_with(&mut s), Some(CloseReason::ServerClose));

        // With a GET held, the `1` leaves at once.
        let mut s = polling(now);
        assert_eq!(s.handle_poll(now), PollStart::Held);
        s.close(now, CloseReason::ServerClose);
        assert_eq!(poll_body(&transmits(&mut s)[0]), "1");
        assert!(s.is_closed());
    }

    // --- upgrade ---

    /// Capture order 1 (§2.2): probe, the held poll gets `6` at the next 100 ms tick, then `5`.
    #[test]
    fn upgrade_with_noop_nudge() {
        let start = t0();
        let mut s = polling(start);
        post(&mut s, start, "40");
        assert_eq!(events(&mut s), vec![EngineEvent::Message("0".into())]);
        s.socket_connected();
        s.send_message(r#"0{"sid":"CIXbqSky7qDG39ymAAAA"}"#);
        let ws = s.begin_upgrade(start).unwrap();
        assert_eq!(get_now(&mut s, start), r#"40{"sid":"CIXbqSky7qDG39ymAAAA"}"#);
        assert_eq!(s.handle_poll(start + ms(1)), PollStart::Held);
        s.ws_text(start + ms(2), ws, "2probe");
        assert_eq!(transmits(&mut s), vec![Transmit::WsText { ws, text: "3probe".into() }]);
        assert_eq!(s.next_timeout(), Some(start + ms(102)));
        s.handle_timeout(start + ms(101));
        assert!(transmits(&mut s).is_empty());
        s.handle_timeout(start + ms(102));
        assert_eq!(transmits(&mut s), vec![Transmit::PollResponse(HttpReply::payload("6".into()))]);
        // The client paused polling; nothing is held, so the 100 ms tick is not a deadline.
        assert_eq!(s.next_timeout(), Some(start + ms(10_000)));
        // Something produced during the upgrade waits in the session's buffer...
        s.send_message(r#"2["authMessage",{"n":1}]"#);
        assert!(transmits(&mut s).is_empty());
        s.ws_text(start + ms(150), ws, "5");
        assert_eq!(events(&mut s), vec![EngineEvent::Upgraded]);
        // ...and leaves on the WebSocket, one packet per frame.
        s.send_message(r#"2["authMessage",{"n":2}]"#);
        assert_eq!(
            transmits(&mut s),
            vec![
                Transmit::WsText { ws, text: r#"42["authMessage",{"n":1}]"#.into() },
                Transmit::WsText { ws, text: r#"42["authMessage",{"n":2}]"#.into() },
            ]
        );
        assert_eq!(s.transport(), Transport::WebSocket);
        assert_eq!(s.next_timeout(), Some(start + ms(25_000)), "the upgrade timeout is gone");
        // Polling is over for this sid: TRANSPORT_MISMATCH, and the session carries on.
        assert_eq!(s.handle_poll(start + ms(200)), PollStart::Respond(ErrorCode::BadRequest.http_reply()));
        assert_eq!(s.begin_post(start + ms(200), Some(1), None), Err(ErrorCode::BadRequest.http_reply()));
        assert_eq!(s.begin_upgrade(start + ms(200)), Err(UpgradeRefused::AlreadyWebSocket));
        // Heartbeat now runs over the WebSocket.
        s.handle_timeout(start + ms(25_000));
        assert_eq!(transmits(&mut s), vec![Transmit::WsText { ws, text: "2".into() }]);
        s.ws_text(start + ms(25_010), ws, "3");
        assert_eq!(s.next_timeout(), Some(start + ms(50_010)));
        s.ws_text(start + ms(25_020), ws, r#"42["x"]"#);
        assert_eq!(events(&mut s), vec![EngineEvent::Message(r#"2["x"]"#.into())]);
    }

    /// Capture order 2 (§2.2): `3probe` first; the held poll is answered with data (and an
    /// `initialRequest` travels over polling) before the client sends `5`.
    #[test]
    fn upgrade_while_traffic_flows_over_polling() {
        let start = t0();
        let mut s = polling(start);
        let ws = s.begin_upgrade(start).unwrap();
        assert_eq!(s.handle_poll(start), PollStart::Held);
        s.ws_text(start, ws, "2probe");
        assert_eq!(transmits(&mut s), vec![Transmit::WsText { ws, text: "3probe".into() }]);
        post(&mut s, start + ms(10), r#"42["authMessage",{"messageType":"initialRequest"}]"#);
        assert_eq!(
            events(&mut s),
            vec![EngineEvent::Message(r#"2["authMessage",{"messageType":"initialRequest"}]"#.into())]
        );
        s.send_message(r#"2["authMessage",{"messageType":"initialResponse"}]"#);
        assert_eq!(poll_body(&transmits(&mut s)[0]), r#"42["authMessage",{"messageType":"initialResponse"}]"#);
        // No GET held at the tick: nothing to nudge.
        s.handle_timeout(start + ms(100));
        assert!(transmits(&mut s).is_empty());
        // A GET held long after the last tick is nudged at once.
        assert_eq!(s.handle_poll(start + ms(450)), PollStart::Held);
        assert_eq!(s.next_timeout(), Some(start + ms(200)));
        s.handle_timeout(start + ms(450));
        assert_eq!(poll_body(&transmits(&mut s)[0]), "6");
        assert_eq!(s.handle_poll(start + ms(460)), PollStart::Held);
        assert_eq!(s.next_timeout(), Some(start + ms(500)), "back on the 100 ms grid");
        // `5` while a GET is still held (a client that did not pause): the GET gets a noop.
        s.ws_text(start + ms(470), ws, "5");
        assert_eq!(transmits(&mut s), vec![Transmit::PollResponse(HttpReply::payload("6".into()))]);
        assert_eq!(s.websocket(), Some(ws));
    }

    #[test]
    fn failed_upgrades_close_only_the_websocket() {
        let start = t0();
        let mut s = polling(start);
        // Anything but the probe or `5` closes the probing socket.
        let ws = s.begin_upgrade(start).unwrap();
        assert_eq!(s.begin_upgrade(start), Err(UpgradeRefused::AlreadyUpgrading));
        s.ws_text(start, ws, r#"42["early"]"#);
        assert_eq!(transmits(&mut s), vec![Transmit::WsClose { ws, code: None }]);
        assert!(events(&mut s).is_empty());
        assert!(s.is_open() && !s.is_upgrading());
        // Frames from that socket are ignored from now on.
        s.ws_text(start, ws, "5");
        assert_eq!(s.transport(), Transport::Polling);
        // Polling carries on.
        s.send_message("2[1]");
        assert_eq!(get_now(&mut s, start), "42[1]");

        // The upgrade timeout.
        let ws2 = s.begin_upgrade(start).unwrap();
        assert_ne!(ws2, ws);
        s.ws_text(start, ws2, "2probe");
        transmits(&mut s);
        assert_eq!(s.next_timeout(), Some(start + ms(10_000)));
        s.handle_timeout(start + ms(10_000));
        assert_eq!(transmits(&mut s), vec![Transmit::WsClose { ws: ws2, code: None }]);
        assert!(s.is_open());

        // The client gives up on its probe socket.
        let ws3 = s.begin_upgrade(start).unwrap();
        s.ws_closed(start, ws3);
        assert!(!s.is_upgrading() && s.is_open());
        // Binary and oversized frames end the attempt too.
        let ws4 = s.begin_upgrade(start).unwrap();
        s.ws_binary(start, ws4, &[1]);
        assert_eq!(transmits(&mut s), vec![Transmit::WsClose { ws: ws4, code: None }]);
        let ws5 = s.begin_upgrade(start).unwrap();
        s.ws_text(start, ws5, &"4".repeat(1_000_001));
        assert_eq!(transmits(&mut s), vec![Transmit::WsClose { ws: ws5, code: Some(1009) }]);
        assert!(s.is_open());
        // A server close cancels an upgrade in progress.
        let ws6 = s.begin_upgrade(start).unwrap();
        s.close(start, CloseReason::ServerClose);
        assert_eq!(transmits(&mut s)[0], Transmit::WsClose { ws: ws6, code: None });
        assert_eq!(s.begin_upgrade(start), Err(UpgradeRefused::Closing));
    }

    // --- direct WebSocket ---

    #[test]
    fn direct_websocket_session() {
        let start = t0();
        let (mut s, ws) = EngineSession::new_websocket(start, "AAAAAAAAAAAAAAAAAAAA".into(), EngineConfig::default());
        assert_eq!(
            transmits(&mut s),
            vec![Transmit::WsText {
                ws,
                text: r#"0{"sid":"AAAAAAAAAAAAAAAAAAAA","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
                    .into()
            }]
        );
        assert_eq!(s.begin_upgrade(start), Err(UpgradeRefused::AlreadyWebSocket));
        assert_eq!(s.handle_poll(start), PollStart::Respond(ErrorCode::BadRequest.http_reply()));
        s.ws_text(start, ws, "40");
        assert_eq!(events(&mut s), vec![EngineEvent::Message("0".into())]);
        // `1` over WebSocket means nothing; noop and upgrade are ignored too.
        for p in ["1", "6", "5"] {
            s.ws_text(start, ws, p);
        }
        assert!(s.is_open());
        // A frame from some other socket id is ignored.
        s.ws_text(start, WsId(77), "4zzz");
        assert!(events(&mut s).is_empty());
        // Close from the server: frames first, then the close.
        s.send_message("2[\"last\"]");
        s.close(start, CloseReason::ServerClose);
        assert_eq!(
            transmits(&mut s),
            vec![Transmit::WsText { ws, text: "42[\"last\"]".into() }, Transmit::WsClose { ws, code: None }]
        );
        assert_eq!(closed_with(&mut s), Some(CloseReason::ServerClose));
    }

    #[test]
    fn websocket_close_paths() {
        let start = t0();
        let new = || EngineSession::new_websocket(start, new_sid(2, None, &mut rand::rng()), EngineConfig::default());
        let (mut s, ws) = new();
        s.ws_closed(start, ws);
        assert_eq!(closed_with(&mut s), Some(CloseReason::TransportClose));
        let (mut s, ws) = new();
        transmits(&mut s);
        s.ws_text(start, ws, &"4".repeat(1_000_001));
        assert_eq!(transmits(&mut s), vec![Transmit::WsClose { ws, code: Some(1009) }]);
        assert_eq!(closed_with(&mut s), Some(CloseReason::TransportClose));
        let (mut s, ws) = new();
        s.ws_binary(start, ws, b"\x01\x02");
        assert_eq!(closed_with(&mut s), Some(CloseReason::ParseError));
        let (mut s, ws) = new();
        s.ws_text(start, ws, "x");
        assert_eq!(closed_with(&mut s), Some(CloseReason::ParseError));
        transmits(&mut s);
        let (mut s, ws) = new();
        transmits(&mut s);
        s.handle_timeout(start + ms(25_000));
        assert_eq!(transmits(&mut s), vec![Transmit::WsText { ws, text: "2".into() }]);
        s.handle_timeout(start + ms(45_000));
        assert_eq!(transmits(&mut s), vec![Transmit::WsClose { ws, code: None }]);
        assert_eq!(closed_with(&mut s), Some(CloseReason::PingTimeout));
    }

    // --- write buffer cap ---

    #[test]
    fn slow_clients_are_dropped_at_the_buffer_cap() {
        let now = t0();
        let config = EngineConfig { max_write_buffer: 100, ..Default::default() };
        let (mut s, _) = EngineSession::new_polling(now, new_sid(0, None, &mut rand::rng()), config);
        let msg = "x".repeat(40);
        assert!(s.send_message(&msg));
        assert!(s.send_message(&msg));
        assert!(!s.send_message(&msg), "the third goes over the cap");
        assert_eq!(closed_with(&mut s), Some(CloseReason::TooSlow));
        assert_eq!(s.buffered_bytes(), 0);

        // Over WebSocket the frames stay in the session until the driver pulls them.
        let (mut s, ws) = EngineSession::new_websocket(now, new_sid(0, None, &mut rand::rng()), config);
        transmits(&mut s);
        assert!(s.send_message(&msg) && s.send_message(&msg));
        assert_eq!(s.poll_transmit(), Some(Transmit::WsText { ws, text: format!("4{msg}") }));
        assert!(s.send_message(&msg), "pulled bytes no longer count");
        assert!(!s.send_message(&msg));
        assert_eq!(transmits(&mut s), vec![Transmit::WsClose { ws, code: None }]);
        assert_eq!(closed_with(&mut s), Some(CloseReason::TooSlow));
    }
}
