//! The MessageBox live events of one connection (spec §5.2, with the Rust semantics of §5.5).
//!
//! This module owns the application protocol above BRC-103: `authenticated`, `joinRoom`,
//! `leaveRoom` and `sendMessage`, their reply events with the original's names, payloads and
//! reason strings, and the per-connection state they need (app-level authentication, joined
//! rooms, messages waiting for the store). It is pure: events come in with the identity the
//! BRC-103 layer verified, and replies, store requests and deliveries come out of
//! [`MessageBoxEvents::poll_action`]. The driver stores, then reports the outcome with
//! [`MessageBoxEvents::store_outcome`]; only then is the message acknowledged and delivered.
//!
//! Deviations from the original, all invisible to an honest client:
//! - identity is the verified BRC-103 key; `authenticated` must name it, and is answered
//!   every time;
//! - rooms can only be joined by their owner (`<key>` or `<key>-…`); a foreign room gets the
//!   upstream server's refusal (bsv-blockchain/ts-stack `infra/message-box-server`:
//!   `joinFailed` `{"roomId","reason":"Room is not owned by authenticated identity","code"}`);
//! - delivery follows the verified identity, not the joins (so a silent reconnected socket
//!   keeps receiving), except that a room the connection explicitly left is not delivered to
//!   it until it joins again, as upstream's `leaveRoom` stops that room's deliveries;
//! - `sendMessage` requires `recipient` to be the room's key and a `messageId`, is stored
//!   before it is acknowledged, and a failure after the original's checks is a non-success
//!   ack (`{"status":"error",…}`), on which the client falls back to HTTP at once;
//! - the box is everything after `<key>-` (the original took only the next `-` segment).
//!
//! Where the original had no limit, the newer upstream's per-socket limits apply with its
//! events and payloads (`ts-next-ops.md` §6.3, §6.4): the `sendMessage` and control-event
//! rate limits (fixed 60 s windows from the connection's start, restarted by the first event
//! after a full window; a `41`/`40` does not restart them), the concurrent-send cap and the
//! room cap. Each rate-limit refusal is also reported as [`EventAction::RateLimited`] so the
//! driver can count it.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth::PublicKey;
use crate::domain::IdentityKey;
use crate::json::Lazy;
use crate::metrics::RateScope;

use super::authsocket::AppEvent;
use super::engineio::json_string;

pub const AUTH_SUCCESS: &str = "authenticationSuccess";
pub const AUTH_FAILED: &str = "authenticationFailed";
pub const JOINED_ROOM: &str = "joinedRoom";
pub const JOIN_FAILED: &str = "joinFailed";
pub const LEFT_ROOM: &str = "leftRoom";
pub const LEAVE_FAILED: &str = "leaveFailed";
pub const MESSAGE_FAILED: &str = "messageFailed";
pub const PAYMENT_FAILED: &str = "paymentFailed";

pub const REASON_MISSING_IDENTITY: &str = "Missing identity key";
pub const REASON_INVALID_IDENTITY: &str = "Invalid identity key format";
/// New: `authenticated` named a key other than the one the connection proved.
pub const REASON_IDENTITY_MISMATCH: &str = "Identity key does not match the authenticated BRC-103 identity";
pub const REASON_UNAUTHORIZED: &str = "Unauthorized: WebSocket not authenticated";
pub const REASON_INVALID_ROOM: &str = "Invalid room ID";
/// A room of another identity (upstream ts-stack's reason and code).
pub const REASON_ROOM_NOT_OWNED: &str = "Room is not owned by authenticated identity";
pub const CODE_ROOM_NOT_OWNED: &str = "ERR_WEBSOCKET_ROOM_NOT_OWNED";
/// The connection has joined `max_rooms_per_connection` rooms (newer upstream's text and code).
pub const REASON_ROOM_LIMIT: &str = "WebSocket room limit exceeded";
pub const CODE_ROOM_LIMIT: &str = "ERR_WEBSOCKET_ROOM_LIMIT";
/// `joinRoom` + `leaveRoom` over `control_rate_limit` in the window.
pub const REASON_CONTROL_RATE_LIMITED: &str = "WebSocket control-event rate limit exceeded";
pub const CODE_CONTROL_RATE_LIMITED: &str = "ERR_WEBSOCKET_CONTROL_RATE_LIMITED";
/// `sendMessage` over `send_rate_limit` in the window.
pub const REASON_SEND_RATE_LIMITED: &str = "WebSocket send rate limit exceeded";
pub const CODE_SEND_RATE_LIMITED: &str = "ERR_WEBSOCKET_RATE_LIMITED";
/// `max_concurrent_sends` messages of this connection await their store outcome.
pub const REASON_TOO_MANY_SENDS: &str = "Too many concurrent WebSocket sends";
pub const CODE_TOO_MANY_SENDS: &str = "ERR_WEBSOCKET_CONCURRENCY_LIMIT";
/// The identity already has `max_connections_per_identity` authenticated sockets.
pub const REASON_IDENTITY_LIMIT: &str = "WebSocket identity connection limit exceeded";
pub const REASON_INVALID_DATA: &str = "Invalid data object";
pub const REASON_INVALID_MESSAGE: &str = "Invalid message object";
pub const REASON_INVALID_BODY: &str = "Invalid message body";

/// `sendMessageAck-<roomId>` descriptions (new; the original never sent a failed ack).
pub const ACK_INVALID_ROOM: &str = "Invalid room ID: expected <identityKey>-<messageBox>";
pub const ACK_RECIPIENT_MISMATCH: &str = "Recipient does not match the room ID";
pub const ACK_INVALID_MESSAGE_ID: &str = "Invalid messageId: must be a non-empty string";
pub const ACK_BLOCKED: &str = "Blocked recipients: ";
pub const ACK_PAYMENT_REQUIRED: &str = "Payment transaction data is required for payable delivery.";
pub const ACK_STORE_FAILED: &str = "Failed to store message";

/// The box of a room without a `-`, as in the original.
pub const DEFAULT_BOX: &str = "default";

/// Names a store request so its outcome finds its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreToken(pub u64);

/// Store a live message (then report [`MessageBoxEvents::store_outcome`]): the driver hands it
/// to [`store_live`](crate::domain::send::store_live), the same permission and fee gate as
/// HTTP `/sendMessage`, which stores `body` raw (not wrapped), ignoring a duplicate messageId.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRequest {
    pub token: StoreToken,
    /// The verified identity of the sending connection.
    pub sender: String,
    /// The recipient identity (compressed lowercase hex; equals the room's key).
    pub recipient: String,
    /// Everything after `<key>-` of the room id, or [`DEFAULT_BOX`].
    pub message_box: String,
    pub message_id: String,
    pub body: String,
    pub room_id: String,
}

impl StoreRequest {
    /// The live delivery of this message once stored, to the room's canonical spelling.
    pub fn delivery(&self) -> Delivery {
        let recipient = IdentityKey::from_canonical(&self.recipient);
        let suffix = &self.room_id[self.recipient.len()..];
        Delivery::message(&recipient, suffix, &self.sender, &self.message_id, &self.body)
    }
}

/// What became of a [`StoreRequest`] (the domain's verdict on a live message).
pub use crate::domain::send::LiveOutcome as StoreOutcome;

/// A stored message's live copy (built by the domain).
pub use crate::domain::Delivery;

/// What the event layer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// Send `event` with `data` (JSON text) to this connection.
    Emit {
        event: String,
        data: String,
    },
    Store(StoreRequest),
    Deliver(Delivery),
    /// An event was refused by a rate limit (for the driver's metrics).
    RateLimited(RateScope),
}

/// The fixed window of the per-socket rate limits (§6.6: 60 000 ms).
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Limits of one connection's event state (from `config.resources.websocket`, see
/// [`LiveConfig::from_limits`](super::LiveConfig::from_limits)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// `MESSAGE_BOX_WEBSOCKET_MAX_ROOMS_PER_CONNECTION`: rooms joined; the rooms left (not
    /// delivered to) are bounded by the same number.
    pub max_joined_rooms: usize,
    /// `MESSAGE_BOX_WEBSOCKET_MAX_CONCURRENT_SENDS`: messages sent on this connection whose
    /// store outcome is not known yet (also bounds the stores queued across reconnects).
    pub max_concurrent_sends: usize,
    /// `MESSAGE_BOX_WEBSOCKET_SEND_RATE_LIMIT`: `sendMessage` events per [`RATE_WINDOW`].
    pub send_rate: Option<u64>,
    /// `MESSAGE_BOX_WEBSOCKET_CONTROL_RATE_LIMIT`: `joinRoom` + `leaveRoom` per [`RATE_WINDOW`].
    pub control_rate: Option<u64>,
}

impl Default for EventLimits {
    fn default() -> Self {
        super::LiveConfig::default().events
    }
}

/// A fixed-window counter: the window starts with the connection and restarts at the first
/// event after a full window (`webSocketConnections.test.ts`'s pinned behaviour).
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    used: u64,
}

impl Window {
    /// Takes one unit; false when `max` are used in the current window.
    fn take(&mut self, now: Instant, max: Option<u64>) -> bool {
        let Some(max) = max else { return true };
        if now.saturating_duration_since(self.start) >= RATE_WINDOW {
            *self = Window { start: now, used: 0 };
        }
        if self.used >= max {
            return false;
        }
        self.used += 1;
        true
    }
}

/// The MessageBox event state of one connection.
#[derive(Debug)]
pub struct MessageBoxEvents {
    limits: EventLimits,
    authenticated: bool,
    rooms: BTreeSet<String>,
    /// Rooms explicitly left (and not joined again), canonical key: not delivered to.
    left: BTreeSet<String>,
    pending: HashMap<StoreToken, StoreRequest>,
    next_token: u64,
    actions: std::collections::VecDeque<EventAction>,
    /// `sendMessage` events in the current window (kept across a `41`/`40`).
    sends: Window,
    /// `joinRoom` + `leaveRoom` events in the current window.
    controls: Window,
    keys: KeyCache,
}

/// Entries of a connection's [`KeyCache`].
const KEY_CACHE_ENTRIES: usize = 8;
/// The longest text cached: a key in its longest accepted form (130 hex digits).
const MAX_CACHED_KEY_TEXT: usize = 130;

/// The key texts a connection named lately (room keys, recipients, its `authenticated`
/// claim) with what they parse to. Decompressing a key costs a square root, and a client
/// names the same room key and recipient in every `sendMessage`; what a text parses to
/// depends on the text alone, so a cached answer is the parse's answer. Bounded: the oldest
/// entry goes first. Allocated at the first entry: a connection that only listens has none.
#[derive(Debug, Default)]
struct KeyCache {
    /// Boxed: an idle connection's state is 8 bytes, not a `VecDeque`'s 32.
    entries: Option<Box<KeyEntries>>,
}

#[derive(Debug)]
struct KeyEntries(VecDeque<KeyEntry>);

/// A key text and its canonical hex (`None`: not a key).
type KeyEntry = (Box<str>, Option<Box<str>>);

impl KeyCache {
    /// `IdentityKey::parse(text)` as canonical hex (`None`: not a key). The
    /// connection's verified `identity` is such hex already: naming it needs no parse.
    fn canonical(&mut self, identity: &str, text: &str) -> Option<String> {
        if text == identity {
            return Some(identity.to_string());
        }
        if let Some((_, known)) = self.entries().find(|(t, _)| &**t == text) {
            return known.as_deref().map(str::to_string);
        }
        let parsed = IdentityKey::parse(text).ok().map(IdentityKey::into_string);
        if text.len() <= MAX_CACHED_KEY_TEXT {
            let entries = &mut self
                .entries
                .get_or_insert_with(|| Box::new(KeyEntries(VecDeque::with_capacity(KEY_CACHE_ENTRIES))))
                .0;
            if entries.len() >= KEY_CACHE_ENTRIES {
                entries.pop_front();
            }
            entries.push_back((text.into(), parsed.as_deref().map(Into::into)));
        }
        parsed
    }

    fn entries(&self) -> impl Iterator<Item = &KeyEntry> {
        self.entries.iter().flat_map(|e| e.0.iter())
    }
}

impl MessageBoxEvents {
    /// The event state of a connection opened at `now` (its rate windows start then).
    pub fn new(limits: EventLimits, now: Instant) -> MessageBoxEvents {
        MessageBoxEvents {
            limits,
            authenticated: false,
            rooms: BTreeSet::new(),
            left: BTreeSet::new(),
            pending: HashMap::new(),
            next_token: 0,
            actions: Default::default(),
            sends: Window { start: now, used: 0 },
            controls: Window { start: now, used: 0 },
            keys: KeyCache::default(),
        }
    }

    pub fn limits(&self) -> &EventLimits {
        &self.limits
    }

    /// Whether an `authenticated` event succeeded on this connection.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    pub fn joined_rooms(&self) -> impl Iterator<Item = &str> {
        self.rooms.iter().map(String::as_str)
    }

    /// Whether a delivery for `room_id` should reach this connection: every room but those it
    /// left with `leaveRoom` (and has not joined again). `identity` is its verified identity.
    pub fn wants(&self, identity: &str, room_id: &str) -> bool {
        self.left.is_empty() || !owns_room(identity, room_id) || !self.left.contains(&canonical_room(identity, room_id))
    }

    pub fn pending_stores(&self) -> usize {
        self.pending.len()
    }

    pub fn poll_action(&mut self) -> Option<EventAction> {
        self.actions.pop_front()
    }

    /// Forgets everything but the rate windows (Socket.IO DISCONNECT); outcomes of pending
    /// stores are then ignored.
    pub fn reset(&mut self) {
        self.authenticated = false;
        self.rooms.clear();
        self.left.clear();
        self.pending.clear();
    }

    fn emit(&mut self, event: impl Into<String>, data: Value) {
        self.emit_json(event, data.to_string());
    }

    /// Emits `data` given as JSON text.
    fn emit_json(&mut self, event: impl Into<String>, data: String) {
        self.actions.push_back(EventAction::Emit { event: event.into(), data });
    }

    fn reason(&mut self, event: &str, reason: &str) {
        self.emit(event, json!({ "reason": reason }));
    }

    /// `{"reason","code"}` on `event`.
    fn coded(&mut self, event: &str, reason: &str, code: &str) {
        self.emit(event, json!({ "reason": reason, "code": code }));
    }

    /// Handles one verified application event at `now`; `identity` is the connection's
    /// verified identity (compressed lowercase hex). Unknown events are ignored.
    pub fn handle(&mut self, now: Instant, identity: &str, event: &AppEvent) {
        let data = event.data();
        match event.name.as_str() {
            "authenticated" => self.on_authenticated(identity, data),
            "joinRoom" => self.on_room(now, identity, data, true),
            "leaveRoom" => self.on_room(now, identity, data, false),
            "sendMessage" => self.on_send(now, identity, data),
            _ => {}
        }
    }

    fn on_authenticated(&mut self, identity: &str, data: Option<Lazy<'_>>) {
        // `data.identityKey` of a string or an array is undefined: only objects carry one.
        let claimed = match data.and_then(|d| d.object_like()).and_then(|f| f.get("identityKey")?.as_str()) {
            Some(k) if !k.trim().is_empty() => k,
            _ => return self.reason(AUTH_FAILED, REASON_MISSING_IDENTITY),
        };
        // `PublicKey.fromString` of the original, on the string as given.
        let Some(key) = self.keys.canonical(identity, &claimed) else {
            return self.reason(AUTH_FAILED, REASON_INVALID_IDENTITY);
        };
        if key != identity {
            return self.reason(AUTH_FAILED, REASON_IDENTITY_MISMATCH);
        }
        self.authenticated = true;
        self.emit(AUTH_SUCCESS, json!({ "status": "success" }));
    }

    fn on_room(&mut self, now: Instant, identity: &str, data: Option<Lazy<'_>>, join: bool) {
        let failed = if join { JOIN_FAILED } else { LEAVE_FAILED };
        // Every control event, whatever follows, takes one unit first (§6.3).
        if !self.controls.take(now, self.limits.control_rate) {
            self.actions.push_back(EventAction::RateLimited(RateScope::LiveControl));
            return self.coded(failed, REASON_CONTROL_RATE_LIMITED, CODE_CONTROL_RATE_LIMITED);
        }
        if !self.authenticated {
            return self.reason(failed, REASON_UNAUTHORIZED);
        }
        let room = match data.and_then(|d| d.as_str()) {
            Some(r) if !r.trim().is_empty() => r,
            _ => return self.reason(failed, REASON_INVALID_ROOM),
        };
        let room = &*room;
        if !owns_room(identity, room) {
            // Upstream names the room (and a code) on a refused join only.
            if join {
                return self.emit(
                    failed,
                    json!({ "roomId": room, "reason": REASON_ROOM_NOT_OWNED, "code": CODE_ROOM_NOT_OWNED }),
                );
            }
            return self.reason(failed, REASON_ROOM_NOT_OWNED);
        }
        let canonical = canonical_room(identity, room);
        if join {
            if !self.rooms.contains(room) && self.rooms.len() >= self.limits.max_joined_rooms {
                return self.coded(failed, REASON_ROOM_LIMIT, CODE_ROOM_LIMIT);
            }
            self.rooms.insert(room.to_string());
            self.left.remove(&canonical);
            self.emit(JOINED_ROOM, json!({ "roomId": room }));
        } else {
            // Bounded like the joins: a client cannot grow this set without limit (upstream
            // codes only the rate-limit refusal of a leave).
            if !self.left.contains(&canonical) && self.left.len() >= self.limits.max_joined_rooms {
                return self.reason(failed, REASON_ROOM_LIMIT);
            }
            self.rooms.remove(room);
            self.left.insert(canonical);
            self.emit(LEFT_ROOM, json!({ "roomId": room }));
        }
    }

    fn on_send(&mut self, now: Instant, identity: &str, data: Option<Lazy<'_>>) {
        // The send limiter first, taken by every event, even invalid ones (§6.4 step 1).
        if !self.sends.take(now, self.limits.send_rate) {
            self.actions.push_back(EventAction::RateLimited(RateScope::LiveSend));
            return self.coded(MESSAGE_FAILED, REASON_SEND_RATE_LIMITED, CODE_SEND_RATE_LIMITED);
        }
        // The original's checks, in its order (an array passes as an object there too).
        let Some(fields) = data.and_then(|d| d.object_like()) else {
            return self.reason(MESSAGE_FAILED, REASON_INVALID_DATA);
        };
        if !self.authenticated {
            return self.reason(PAYMENT_FAILED, REASON_UNAUTHORIZED);
        }
        // In-flight sends before the envelope is looked at (§6.4 step 4).
        if self.pending.len() >= self.limits.max_concurrent_sends {
            return self.coded(MESSAGE_FAILED, REASON_TOO_MANY_SENDS, CODE_TOO_MANY_SENDS);
        }
        let room_id = match fields.get("roomId").and_then(|r| r.as_str()) {
            Some(r) if !r.trim().is_empty() => r.into_owned(),
            _ => return self.reason(MESSAGE_FAILED, REASON_INVALID_ROOM),
        };
        let Some(message) = fields.get("message").and_then(|m| m.object_like()) else {
            return self.reason(MESSAGE_FAILED, REASON_INVALID_MESSAGE);
        };
        let body = match message.get("body").and_then(|b| b.as_str()) {
            Some(b) if !b.trim().is_empty() => b.into_owned(),
            _ => return self.reason(MESSAGE_FAILED, REASON_INVALID_BODY),
        };

        // Ours: a failure from here on is a non-success ack, echoing the messageId as sent.
        let raw_id = message.get("messageId");
        let echo = |id: Option<Lazy<'_>>| id.map(|v| v.to_value_string());
        let keys = &mut self.keys;
        let Some((room_key, message_box)) = split_room_with(&room_id, |k| keys.canonical(identity, k)) else {
            return self.nack(&room_id, echo(raw_id), ACK_INVALID_ROOM);
        };
        let recipient = match message.get("recipient") {
            Some(r) => match r.as_str() {
                Some(text) => match self.keys.canonical(identity, &text) {
                    Some(k) => k,
                    None => return self.nack(&room_id, echo(raw_id), &format!("Invalid recipient key: {text}")),
                },
                None => {
                    let shown = r.to_value_string();
                    return self.nack(&room_id, echo(raw_id), &format!("Invalid recipient key: {shown}"));
                }
            },
            None => return self.nack(&room_id, echo(raw_id), "Invalid recipient key: undefined"),
        };
        if recipient != room_key {
            return self.nack(&room_id, echo(raw_id), ACK_RECIPIENT_MISMATCH);
        }
        let message_id = match raw_id.and_then(|id| id.as_str()) {
            Some(id) if !id.trim().is_empty() => id.into_owned(),
            _ => return self.nack(&room_id, echo(raw_id), ACK_INVALID_MESSAGE_ID),
        };

        let token = StoreToken(self.next_token);
        self.next_token += 1;
        let request =
            StoreRequest { token, sender: identity.to_string(), recipient, message_box, message_id, body, room_id };
        self.pending.insert(token, request.clone());
        self.actions.push_back(EventAction::Store(request));
    }

    /// `sendMessageAck-<roomId>` `{"status":"error","messageId"?,"description"}`:
    /// `message_id` is the JSON text of the id as received, left out when absent, as
    /// `JSON.stringify` drops `undefined`.
    fn nack(&mut self, room_id: &str, message_id: Option<String>, description: &str) {
        let description = json_string(description);
        let mut data = String::with_capacity(48 + message_id.as_ref().map_or(0, String::len) + description.len());
        data.push_str(r#"{"status":"error""#);
        if let Some(id) = message_id {
            data.push_str(r#","messageId":"#);
            data.push_str(&id);
        }
        data.push_str(r#","description":"#);
        data.push_str(&description);
        data.push('}');
        self.emit_json(ack_event(room_id), data);
    }

    /// The driver's report on a [`StoreRequest`]. Returns false for a token this connection
    /// does not know (reset since, or never issued).
    pub fn store_outcome(&mut self, token: StoreToken, outcome: StoreOutcome) -> bool {
        let Some(p) = self.pending.remove(&token) else { return false };
        let description = match outcome {
            StoreOutcome::Stored | StoreOutcome::Duplicate => {
                let data = format!(r#"{{"status":"success","messageId":{}}}"#, json_string(&p.message_id));
                self.emit_json(ack_event(&p.room_id), data);
                if outcome == StoreOutcome::Stored {
                    self.actions.push_back(EventAction::Deliver(p.delivery()));
                }
                return true;
            }
            StoreOutcome::Blocked => format!("{ACK_BLOCKED}{}", p.recipient),
            StoreOutcome::PaymentRequired => ACK_PAYMENT_REQUIRED.to_string(),
            StoreOutcome::BodyTooLarge { max } => {
                crate::domain::ApiError::MessageBodyTooLarge { max }.description().into_owned()
            }
            StoreOutcome::QuotaExceeded(q) => crate::domain::ApiError::QuotaExceeded(q).description().into_owned(),
            StoreOutcome::Failed => ACK_STORE_FAILED.to_string(),
        };
        self.nack(&p.room_id, Some(json_string(&p.message_id)), &description);
        true
    }
}

/// `sendMessageAck-<roomId>`.
pub fn ack_event(room_id: &str) -> String {
    format!("sendMessageAck-{room_id}")
}

/// True when `room` belongs to `identity`: the key itself, or the key followed by `-`.
pub fn owns_room(identity: &str, room: &str) -> bool {
    let n = identity.len();
    room.len() >= n
        && room.is_char_boundary(n)
        && room[..n].eq_ignore_ascii_case(identity)
        && (room.len() == n || room.as_bytes()[n] == b'-')
}

/// `room` (owned by `identity`, see [`owns_room`]) with its key part spelt as `identity`.
fn canonical_room(identity: &str, room: &str) -> String {
    format!("{identity}{}", &room[identity.len()..])
}

/// A room id's recipient key (canonical hex) and box: `<66-hex key>` is box [`DEFAULT_BOX`],
/// `<66-hex key>-<box>` is `<box>` (which may itself contain `-`). Anything else is `None`.
pub fn split_room(room_id: &str) -> Option<(String, String)> {
    split_room_with(room_id, |key| PublicKey::from_compressed_hex(key).ok().map(|k| k.to_hex()))
}

/// [`split_room`] with the key part read by `canonical` (a lenient parse to canonical hex,
/// which reads exactly 66 hex digits as the strict compressed form does).
fn split_room_with(room_id: &str, canonical: impl FnOnce(&str) -> Option<String>) -> Option<(String, String)> {
    let (key, message_box) = match room_id.split_once('-') {
        Some((k, b)) => (k, b),
        None => (room_id, DEFAULT_BOX),
    };
    // The compressed form only: 66 hex digits.
    if message_box.is_empty() || key.len() != 66 {
        return None;
    }
    Some((canonical(key)?, message_box.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        crate::auth::PrivateKey::random().public_key().to_hex()
    }

    fn ev(name: &str, data: Option<Value>) -> AppEvent {
        AppEvent::new(name, data.map(|d| d.to_string()).as_deref()).unwrap()
    }

    fn drain(m: &mut MessageBoxEvents) -> Vec<EventAction> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn emit(event: &str, data: &str) -> EventAction {
        EventAction::Emit { event: event.into(), data: data.into() }
    }

    fn authed(me: &str) -> MessageBoxEvents {
        let mut m = MessageBoxEvents::new(EventLimits::default(), Instant::now());
        m.handle(Instant::now(), me, &ev("authenticated", Some(json!({ "identityKey": me }))));
        assert_eq!(drain(&mut m), vec![emit(AUTH_SUCCESS, r#"{"status":"success"}"#)]);
        m
    }

    #[test]
    fn room_helpers() {
        let k = key();
        assert!(owns_room(&k, &k));
        assert!(owns_room(&k, &format!("{k}-inbox")));
        assert!(owns_room(&k, &format!("{}-inbox", k.to_uppercase())));
        assert!(!owns_room(&k, &format!("{k}inbox")));
        assert!(!owns_room(&k, &k[..60]));
        assert!(!owns_room(&k, &format!("{}-x", key())));
        assert!(!owns_room(&k, "é"));
        assert_eq!(split_room(&format!("{k}-a-b")), Some((k.clone(), "a-b".into())));
        assert_eq!(split_room(&k), Some((k.clone(), "default".into())));
        assert_eq!(split_room(&format!("{k}-")), None);
        assert_eq!(split_room("abc-inbox"), None);
    }

    #[test]
    fn authenticated_replies() {
        let me = key();
        let mut m = MessageBoxEvents::new(EventLimits::default(), Instant::now());
        let cases = [
            (None, REASON_MISSING_IDENTITY),
            (Some(json!(null)), REASON_MISSING_IDENTITY),
            (Some(json!("str")), REASON_MISSING_IDENTITY),
            (Some(json!([me.clone()])), REASON_MISSING_IDENTITY),
            (Some(json!({})), REASON_MISSING_IDENTITY),
            (Some(json!({ "identityKey": 5 })), REASON_MISSING_IDENTITY),
            (Some(json!({ "identityKey": "  " })), REASON_MISSING_IDENTITY),
            (Some(json!({ "identityKey": "xyz" })), REASON_INVALID_IDENTITY),
            (Some(json!({ "identityKey": format!(" {me}") })), REASON_INVALID_IDENTITY),
            (Some(json!({ "identityKey": key() })), REASON_IDENTITY_MISMATCH),
        ];
        for (data, reason) in cases {
            m.handle(Instant::now(), &me, &ev("authenticated", data.clone()));
            assert_eq!(drain(&mut m), vec![emit(AUTH_FAILED, &format!(r#"{{"reason":"{reason}"}}"#))], "{data:?}");
            assert!(!m.is_authenticated());
        }
        // Upper-case hex names the same key; every `authenticated` gets an answer.
        for _ in 0..2 {
            m.handle(Instant::now(), &me, &ev("authenticated", Some(json!({ "identityKey": me.to_uppercase() }))));
            assert_eq!(drain(&mut m), vec![emit(AUTH_SUCCESS, r#"{"status":"success"}"#)]);
        }
        assert!(m.is_authenticated());
    }

    #[test]
    fn join_and_leave() {
        let me = key();
        let mut m = MessageBoxEvents::new(EventLimits::default(), Instant::now());
        let room = format!("{me}-inbox");
        m.handle(Instant::now(), &me, &ev("joinRoom", Some(json!(room))));
        m.handle(Instant::now(), &me, &ev("leaveRoom", Some(json!(room))));
        assert_eq!(
            drain(&mut m),
            vec![
                emit(JOIN_FAILED, r#"{"reason":"Unauthorized: WebSocket not authenticated"}"#),
                emit(LEAVE_FAILED, r#"{"reason":"Unauthorized: WebSocket not authenticated"}"#)
            ]
        );
        let mut m = authed(&me);
        m.handle(Instant::now(), &me, &ev("joinRoom", Some(json!(room))));
        assert_eq!(drain(&mut m), vec![emit(JOINED_ROOM, &format!(r#"{{"roomId":"{room}"}}"#))]);
        assert_eq!(m.joined_rooms().collect::<Vec<_>>(), vec![room.as_str()]);
        for bad in [None, Some(json!("")), Some(json!("  ")), Some(json!(5)), Some(json!({ "roomId": room }))] {
            m.handle(Instant::now(), &me, &ev("joinRoom", bad.clone()));
            m.handle(Instant::now(), &me, &ev("leaveRoom", bad.clone()));
            assert_eq!(
                drain(&mut m),
                vec![
                    emit(JOIN_FAILED, r#"{"reason":"Invalid room ID"}"#),
                    emit(LEAVE_FAILED, r#"{"reason":"Invalid room ID"}"#)
                ],
                "{bad:?}"
            );
        }
        // Another identity's room: upstream's refusal (named, with a code, on a join only).
        let foreign = format!("{}-inbox", key());
        m.handle(Instant::now(), &me, &ev("joinRoom", Some(json!(foreign))));
        m.handle(Instant::now(), &me, &ev("leaveRoom", Some(json!(foreign))));
        assert_eq!(
            drain(&mut m),
            vec![
                emit(
                    JOIN_FAILED,
                    &json!({ "roomId": foreign, "reason": REASON_ROOM_NOT_OWNED, "code": CODE_ROOM_NOT_OWNED })
                        .to_string()
                ),
                emit(LEAVE_FAILED, &json!({ "reason": REASON_ROOM_NOT_OWNED }).to_string()),
            ]
        );
        assert!(m.wants(&me, &room) && m.wants(&me, &format!("{me}-other")));
        m.handle(Instant::now(), &me, &ev("leaveRoom", Some(json!(room))));
        assert_eq!(drain(&mut m), vec![emit(LEFT_ROOM, &format!(r#"{{"roomId":"{room}"}}"#))]);
        assert_eq!(m.joined_rooms().count(), 0);
        // A left room is not delivered to (whatever the case of its key), the others are.
        assert!(!m.wants(&me, &room) && !m.wants(&me, &format!("{}-inbox", me.to_uppercase())));
        assert!(m.wants(&me, &format!("{me}-other")) && m.wants(&me, &me));
        // Joining again restores it; a reset forgets the leave.
        m.handle(Instant::now(), &me, &ev("joinRoom", Some(json!(room))));
        drain(&mut m);
        assert!(m.wants(&me, &room));
        m.handle(Instant::now(), &me, &ev("leaveRoom", Some(json!(room))));
        m.reset();
        assert!(m.wants(&me, &room));

        let mut m = MessageBoxEvents::new(EventLimits { max_joined_rooms: 2, ..Default::default() }, Instant::now());
        m.handle(Instant::now(), &me, &ev("authenticated", Some(json!({ "identityKey": me }))));
        for b in ["a", "b", "a", "c"] {
            m.handle(Instant::now(), &me, &ev("joinRoom", Some(json!(format!("{me}-{b}")))));
        }
        let acts = drain(&mut m);
        assert_eq!(
            acts.last(),
            Some(&emit(JOIN_FAILED, r#"{"reason":"WebSocket room limit exceeded","code":"ERR_WEBSOCKET_ROOM_LIMIT"}"#))
        );
        assert_eq!(m.joined_rooms().count(), 2);
    }

    fn send(room: &str, id: Value, recipient: Value, body: Value) -> AppEvent {
        ev(
            "sendMessage",
            Some(json!({ "roomId": room, "message": { "messageId": id, "recipient": recipient, "body": body } })),
        )
    }

    #[test]
    fn send_message_validation_in_the_original_order() {
        let me = key();
        let mut m = MessageBoxEvents::new(EventLimits::default(), Instant::now());
        let failed = |r: &str| emit(MESSAGE_FAILED, &format!(r#"{{"reason":"{r}"}}"#));
        for data in [None, Some(json!(null)), Some(json!("s")), Some(json!(3))] {
            m.handle(Instant::now(), &me, &ev("sendMessage", data));
            assert_eq!(drain(&mut m), vec![failed(REASON_INVALID_DATA)]);
        }
        m.handle(Instant::now(), &me, &ev("sendMessage", Some(json!({}))));
        assert_eq!(
            drain(&mut m),
            vec![emit(PAYMENT_FAILED, r#"{"reason":"Unauthorized: WebSocket not authenticated"}"#)]
        );

        let mut m = authed(&me);
        let cases = [
            (json!([]), REASON_INVALID_ROOM),
            (json!({ "roomId": " " }), REASON_INVALID_ROOM),
            (json!({ "roomId": 7 }), REASON_INVALID_ROOM),
            (json!({ "roomId": "r" }), REASON_INVALID_MESSAGE),
            (json!({ "roomId": "r", "message": "m" }), REASON_INVALID_MESSAGE),
            (json!({ "roomId": "r", "message": null }), REASON_INVALID_MESSAGE),
            (json!({ "roomId": "r", "message": [] }), REASON_INVALID_BODY),
            (json!({ "roomId": "r", "message": { "body": "" } }), REASON_INVALID_BODY),
            (json!({ "roomId": "r", "message": { "body": {"a":1} } }), REASON_INVALID_BODY),
        ];
        for (data, reason) in cases {
            m.handle(Instant::now(), &me, &ev("sendMessage", Some(data.clone())));
            assert_eq!(drain(&mut m), vec![failed(reason)], "{data}");
        }
    }

    #[test]
    fn send_message_checks_after_the_original_give_a_failed_ack() {
        let me = key();
        let other = key();
        let mut m = authed(&me);
        let room = format!("{other}-inbox");
        let ack = |room: &str, body: &str| emit(&format!("sendMessageAck-{room}"), body);
        let cases = [
            (
                send("abc-inbox", json!("id"), json!(other), json!("b")),
                "abc-inbox",
                format!(r#"{{"status":"error","messageId":"id","description":"{ACK_INVALID_ROOM}"}}"#),
            ),
            (
                send(&format!("{other}-"), json!("id"), json!(other), json!("b")),
                &*format!("{other}-"),
                format!(r#"{{"status":"error","messageId":"id","description":"{ACK_INVALID_ROOM}"}}"#),
            ),
            (
                send(&room, json!("id"), json!("zz"), json!("b")),
                &*room,
                r#"{"status":"error","messageId":"id","description":"Invalid recipient key: zz"}"#.to_string(),
            ),
            (
                send(&room, json!("id"), json!(me), json!("b")),
                &*room,
                format!(r#"{{"status":"error","messageId":"id","description":"{ACK_RECIPIENT_MISMATCH}"}}"#),
            ),
            (
                send(&room, json!(12), json!(other), json!("b")),
                &*room,
                format!(r#"{{"status":"error","messageId":12,"description":"{ACK_INVALID_MESSAGE_ID}"}}"#),
            ),
            (
                send(&room, json!(" "), json!(other), json!("b")),
                &*room,
                format!(r#"{{"status":"error","messageId":" ","description":"{ACK_INVALID_MESSAGE_ID}"}}"#),
            ),
        ];
        for (event, room, body) in cases {
            m.handle(Instant::now(), &me, &event);
            assert_eq!(drain(&mut m), vec![ack(room, &body)]);
        }
        // Missing recipient and messageId: the id key is left out.
        m.handle(Instant::now(), &me, &ev("sendMessage", Some(json!({ "roomId": room, "message": { "body": "b" } }))));
        assert_eq!(
            drain(&mut m),
            vec![ack(&room, r#"{"status":"error","description":"Invalid recipient key: undefined"}"#)]
        );
    }

    /// Event data `json!` cannot write (repeated keys, escapes, numbers as sent) reads and
    /// echoes as the `Value` reading did: last key wins, the id echoed as `Value` writes it.
    #[test]
    fn send_message_data_as_sent() {
        let me = key();
        let other = key();
        let mut m = authed(&me);
        let room = format!("{other}-inbox");
        let raw = |data: &str| AppEvent::new("sendMessage", Some(data)).unwrap();
        let ack = |body: &str| vec![emit(&format!("sendMessageAck-{room}"), body)];
        m.handle(
            Instant::now(),
            &me,
            &raw(&format!(
                r#"{{"roomId":"x","roomId":"{room}","message":{{"messageId":1.50,"recipient":{{"k" : "\u00e9"}},"body":"b"}}}}"#
            )),
        );
        assert_eq!(
            drain(&mut m),
            ack(r#"{"status":"error","messageId":1.5,"description":"Invalid recipient key: {\"k\":\"é\"}"}"#)
        );
        m.handle(
            Instant::now(),
            &me,
            &raw(&format!(
                r#"{{"roomId":"{room}","message":{{"messageId":["a", 1e2],"recipient":"{other}","body":"b"}}}}"#
            )),
        );
        assert_eq!(
            drain(&mut m),
            ack(&format!(r#"{{"status":"error","messageId":["a",100.0],"description":"{ACK_INVALID_MESSAGE_ID}"}}"#))
        );
        m.handle(
            Instant::now(),
            &me,
            &raw(&format!(
                r#"{{"roomId":"{room}","message":{{"messageId":"m\u0031","recipient":"{}","body":"b\n\u00e9","body":"last"}}}}"#,
                other.to_uppercase()
            )),
        );
        let acts = drain(&mut m);
        let [EventAction::Store(req)] = &acts[..] else { panic!("{acts:?}") };
        assert_eq!((req.message_id.as_str(), req.body.as_str(), req.recipient.as_str()), ("m1", "last", &*other));
    }

    /// A key text parses once per connection; the cache answers as the parse does and stays
    /// bounded.
    #[test]
    fn key_cache() {
        let me = key();
        let mut c = KeyCache::default();
        assert_eq!(c.canonical(&me, &me), Some(me.clone()));
        assert!(c.entries.is_none(), "the identity needs no entry");
        let other = key();
        for _ in 0..2 {
            assert_eq!(c.canonical(&me, &other.to_uppercase()), Some(other.clone()));
            assert_eq!(c.canonical(&me, "zz"), None);
            assert_eq!(c.canonical(&me, &other[..65]), None);
        }
        assert_eq!(c.entries().count(), 3);
        for _ in 0..(KEY_CACHE_ENTRIES * 2) {
            let k = key();
            assert_eq!(c.canonical(&me, &k), Some(k.clone()));
        }
        assert_eq!(c.entries().count(), KEY_CACHE_ENTRIES);
        let long = "0".repeat(MAX_CACHED_KEY_TEXT + 1);
        assert_eq!(c.canonical(&me, &long), None);
        assert!(c.entries().all(|(t, _)| t.len() <= MAX_CACHED_KEY_TEXT));
    }

    #[test]
    fn send_message_stores_then_acks_then_delivers() {
        let me = key();
        let other = key();
        let mut m = authed(&me);
        let room = format!("{other}-payment-inbox");
        m.handle(Instant::now(), &me, &send(&room, json!("mid"), json!(other.to_uppercase()), json!("hello é ✓")));
        let acts = drain(&mut m);
        let [EventAction::Store(req)] = &acts[..] else { panic!("{acts:?}") };
        assert_eq!(
            req,
            &StoreRequest {
                token: req.token,
                sender: me.clone(),
                recipient: other.clone(),
                message_box: "payment-inbox".into(),
                message_id: "mid".into(),
                body: "hello é ✓".into(),
                room_id: room.clone(),
            }
        );
        assert_eq!(m.pending_stores(), 1);
        assert!(m.store_outcome(req.token, StoreOutcome::Stored));
        assert!(!m.store_outcome(req.token, StoreOutcome::Stored), "a token is used once");
        assert_eq!(
            drain(&mut m),
            vec![
                emit(&format!("sendMessageAck-{room}"), r#"{"status":"success","messageId":"mid"}"#),
                EventAction::Deliver(Delivery {
                    recipient: other.clone(),
                    room_id: room.clone(),
                    event: format!("sendMessage-{room}"),
                    data: format!(r#"{{"sender":"{me}","messageId":"mid","body":"hello é ✓"}}"#),
                })
            ]
        );
    }

    #[test]
    fn store_outcomes() {
        let me = key();
        let mut m = authed(&me);
        let room = me.clone(); // no dash: box "default", sending to oneself
        let mut token = || {
            m.handle(Instant::now(), &me, &send(&room, json!("i"), json!(me), json!("b")));
            match drain(&mut m).pop() {
                Some(EventAction::Store(r)) => {
                    assert_eq!(r.message_box, DEFAULT_BOX);
                    r.token
                }
                other => panic!("{other:?}"),
            }
        };
        let (t1, t2, t3, t4) = (token(), token(), token(), token());
        let ack = format!("sendMessageAck-{room}");
        assert!(m.store_outcome(t1, StoreOutcome::Duplicate));
        assert_eq!(drain(&mut m), vec![emit(&ack, r#"{"status":"success","messageId":"i"}"#)]);
        assert!(m.store_outcome(t2, StoreOutcome::Blocked));
        assert_eq!(
            drain(&mut m),
            vec![emit(
                &ack,
                &format!(r#"{{"status":"error","messageId":"i","description":"Blocked recipients: {me}"}}"#)
            )]
        );
        assert!(m.store_outcome(t3, StoreOutcome::PaymentRequired));
        assert_eq!(
            drain(&mut m),
            vec![emit(
                &ack,
                &format!(r#"{{"status":"error","messageId":"i","description":"{ACK_PAYMENT_REQUIRED}"}}"#)
            )]
        );
        assert!(m.store_outcome(t4, StoreOutcome::Failed));
        assert_eq!(
            drain(&mut m),
            vec![emit(&ack, r#"{"status":"error","messageId":"i","description":"Failed to store message"}"#)]
        );
        assert_eq!(m.pending_stores(), 0);
    }

    #[test]
    fn pending_stores_are_bounded_and_reset_forgets() {
        let me = key();
        let mut m =
            MessageBoxEvents::new(EventLimits { max_concurrent_sends: 2, ..Default::default() }, Instant::now());
        m.handle(Instant::now(), &me, &ev("authenticated", Some(json!({ "identityKey": me }))));
        for _ in 0..3 {
            m.handle(Instant::now(), &me, &send(&me, json!("i"), json!(me), json!("b")));
        }
        let acts = drain(&mut m);
        assert_eq!(acts.iter().filter(|a| matches!(a, EventAction::Store(_))).count(), 2);
        assert_eq!(
            acts.last(),
            Some(&emit(
                MESSAGE_FAILED,
                r#"{"reason":"Too many concurrent WebSocket sends","code":"ERR_WEBSOCKET_CONCURRENCY_LIMIT"}"#
            ))
        );
        m.reset();
        assert!(!m.is_authenticated());
        assert!(!m.store_outcome(StoreToken(0), StoreOutcome::Stored));
        m.handle(Instant::now(), &me, &ev("unknownEvent", Some(json!(1))));
        assert!(drain(&mut m).is_empty());
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;
    use std::time::Duration;

    fn key() -> String {
        crate::auth::PrivateKey::random().public_key().to_hex()
    }

    fn ev(name: &str, data: Option<Value>) -> AppEvent {
        AppEvent::new(name, data.map(|d| d.to_string()).as_deref()).unwrap()
    }

    fn drain(m: &mut MessageBoxEvents) -> Vec<EventAction> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    fn emit(event: &str, data: Value) -> EventAction {
        EventAction::Emit { event: event.into(), data: data.to_string() }
    }

    fn limits(send: u64, control: u64) -> EventLimits {
        EventLimits { send_rate: Some(send), control_rate: Some(control), ..Default::default() }
    }

    /// §6.4: every `sendMessage` takes one unit first, invalid and unauthenticated ones too;
    /// past the limit `messageFailed` with the code, counted; the window is fixed from the
    /// start and restarts at the first event after a full window; a reset keeps it.
    #[test]
    fn send_rate_limit() {
        let me = key();
        let t = Instant::now();
        let mut m = MessageBoxEvents::new(limits(3, 100), t);
        let limited = emit(MESSAGE_FAILED, json!({"reason": REASON_SEND_RATE_LIMITED, "code": CODE_SEND_RATE_LIMITED}));
        // Unauthenticated and invalid: still consumed.
        m.handle(t, &me, &ev("sendMessage", None));
        m.handle(t, &me, &ev("sendMessage", Some(json!({}))));
        m.handle(t + Duration::from_secs(30), &me, &ev("authenticated", Some(json!({ "identityKey": me }))));
        m.reset();
        m.handle(t + Duration::from_secs(30), &me, &ev("authenticated", Some(json!({ "identityKey": me }))));
        let send = ev(
            "sendMessage",
            Some(json!({ "roomId": me, "message": { "messageId": "i", "recipient": me, "body": "b" } })),
        );
        m.handle(t + Duration::from_secs(59), &me, &send);
        assert!(matches!(drain(&mut m).last(), Some(EventAction::Store(_))), "the third is taken");
        m.handle(t + Duration::from_secs(59), &me, &send);
        assert_eq!(drain(&mut m), vec![EventAction::RateLimited(RateScope::LiveSend), limited.clone()]);
        // A full window after the start: a new window from this event.
        let t2 = t + Duration::from_secs(61);
        for _ in 0..3 {
            m.handle(t2, &me, &ev("sendMessage", None));
        }
        m.handle(t2 + Duration::from_secs(59), &me, &ev("sendMessage", None));
        assert_eq!(drain(&mut m).last(), Some(&limited));
        m.handle(t2 + Duration::from_secs(60), &me, &ev("sendMessage", None));
        assert_eq!(drain(&mut m), vec![emit(MESSAGE_FAILED, json!({"reason": REASON_INVALID_DATA}))]);
        // No limit configured: never refused.
        let mut m = MessageBoxEvents::new(EventLimits { send_rate: None, ..Default::default() }, t);
        for _ in 0..10_000 {
            m.handle(t, &me, &ev("sendMessage", None));
        }
        assert!(drain(&mut m).iter().all(|a| !matches!(a, EventAction::RateLimited(_))));
    }

    /// §6.3: `joinRoom` and `leaveRoom` share one limiter, checked before anything else.
    #[test]
    fn control_rate_limit() {
        let me = key();
        let t = Instant::now();
        let mut m = MessageBoxEvents::new(limits(100, 2), t);
        let room = format!("{me}-inbox");
        m.handle(t, &me, &ev("joinRoom", Some(json!(room))));
        m.handle(t, &me, &ev("authenticated", Some(json!({ "identityKey": me }))));
        m.handle(t, &me, &ev("leaveRoom", Some(json!(room))));
        drain(&mut m);
        m.handle(t, &me, &ev("joinRoom", Some(json!(room))));
        m.handle(t, &me, &ev("leaveRoom", Some(json!(5))));
        let code = CODE_CONTROL_RATE_LIMITED;
        assert_eq!(
            drain(&mut m),
            vec![
                EventAction::RateLimited(RateScope::LiveControl),
                emit(JOIN_FAILED, json!({"reason": REASON_CONTROL_RATE_LIMITED, "code": code})),
                EventAction::RateLimited(RateScope::LiveControl),
                emit(LEAVE_FAILED, json!({"reason": REASON_CONTROL_RATE_LIMITED, "code": code})),
            ]
        );
        assert_eq!(m.joined_rooms().count(), 0);
        m.handle(t + RATE_WINDOW, &me, &ev("joinRoom", Some(json!(room))));
        assert_eq!(drain(&mut m), vec![emit(JOINED_ROOM, json!({ "roomId": room }))]);
    }

    /// §6.4 step 4: in-flight sends past the cap, before the envelope is looked at.
    #[test]
    fn concurrent_sends_are_capped_before_validation() {
        let me = key();
        let t = Instant::now();
        let mut m = MessageBoxEvents::new(EventLimits { max_concurrent_sends: 1, ..Default::default() }, t);
        m.handle(t, &me, &ev("authenticated", Some(json!({ "identityKey": me }))));
        let send = ev(
            "sendMessage",
            Some(json!({ "roomId": me, "message": { "messageId": "i", "recipient": me, "body": "b" } })),
        );
        m.handle(t, &me, &send);
        let Some(EventAction::Store(r)) = drain(&mut m).pop() else { panic!() };
        m.handle(t, &me, &ev("sendMessage", Some(json!({ "roomId": 5 }))));
        let busy = emit(MESSAGE_FAILED, json!({"reason": REASON_TOO_MANY_SENDS, "code": CODE_TOO_MANY_SENDS}));
        assert_eq!(drain(&mut m), vec![busy]);
        assert!(m.store_outcome(r.token, StoreOutcome::Stored));
        drain(&mut m);
        m.handle(t, &me, &send);
        assert!(matches!(drain(&mut m).pop(), Some(EventAction::Store(_))), "free again");
    }
}
