//! BRC-103 over the `authMessage` Socket.IO event, for one connection (spec §4).
//!
//! This module owns a connection's BRC-103 state: the sessions it holds (looked up in the
//! process-wide [`SessionManager`](crate::auth::SessionManager) through [`ServerAuth`], so a
//! reconnected socket still using a session from its previous connection is accepted), the
//! identity those sessions prove, the `{"eventName","data"}` envelope inside signed `general`
//! messages, and the server-initiated handshake of §4.7 for sockets that have none.
//!
//! Rules:
//! - A connection's identity is the peer key of its sessions. It may hold several sessions
//!   (two emits before the first handshake finish give two), all of that one identity; a
//!   message proving another identity is refused.
//! - A `general` message whose `identityKey` differs from its session's is dropped
//!   ([`ServerAuth::verify_general`] checks it), as are replays and bad signatures.
//! - Outbound events are signed on the most recently used session. Events emitted before the
//!   connection has any session wait (bounded) for the server-initiated handshake.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::auth::message::{AuthMessage, MessageError};
use crate::auth::server::ServerHandshake;
use crate::auth::{AuthError, PublicKey, ServerAuth, Session};

use super::engineio::json_string;

/// The Socket.IO event carrying every BRC-103 message.
pub const AUTH_EVENT: &str = "authMessage";
/// Sessions a connection keeps (the oldest is forgotten by the connection, not by the
/// process-wide table, so the client can still use it).
pub const MAX_SESSIONS_PER_CONNECTION: usize = 8;
/// Events kept while waiting for a session.
pub const MAX_QUEUED_EVENTS: usize = 64;
/// Server-initiated handshakes a connection may be sent without one succeeding.
pub const MAX_SERVER_HANDSHAKES: u32 = 4;

/// An application event from a verified `general` message.
#[derive(Debug, Clone)]
pub struct AppEvent {
    pub name: String,
    /// The JSON text of `data`, `None` when the envelope had no `data` key. It comes from a
    /// payload `Value` would read ([`decode_envelope`]); the event layer reads it with
    /// [`crate::json::Lazy`].
    pub data: Option<Box<RawValue>>,
}

impl AppEvent {
    /// An event with `data` given as JSON text (`None` when it is not one JSON value).
    pub fn new(name: impl Into<String>, data: Option<&str>) -> Option<AppEvent> {
        let data = match data {
            Some(d) if crate::json::check(d) => Some(RawValue::from_string(d.to_string()).ok()?),
            Some(_) => return None,
            None => None,
        };
        Some(AppEvent { name: name.into(), data })
    }

    /// `data`, to read as deep as needed.
    pub fn data(&self) -> Option<crate::json::Lazy<'_>> {
        self.data.as_deref().map(crate::json::Lazy)
    }

    /// `data` as a `Value` tree (tests and tools; the event layer reads [`Self::data`]).
    pub fn data_value(&self) -> Option<serde_json::Value> {
        self.data.as_deref().and_then(|d| serde_json::from_str(d.get()).ok())
    }
}

impl PartialEq for AppEvent {
    fn eq(&self, other: &AppEvent) -> bool {
        self.name == other.name && self.data.as_ref().map(|d| d.get()) == other.data.as_ref().map(|d| d.get())
    }
}

/// What an inbound `authMessage` amounted to.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// A handshake step: a session was established or a handshake message answered.
    Handshake,
    /// A verified application event, sent by [`AuthTunnel::identity`].
    Event(AppEvent),
    /// Verified, but the payload is not an event envelope (the SDK turns it into `_unknown`,
    /// which nobody listens to).
    NotAnEvent,
}

/// Why an inbound `authMessage` was dropped. None of these is fatal to the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelError {
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("the message proves identity {offered}, but this connection is bound to {bound}")]
    IdentityConflict { bound: String, offered: String },
    #[error("an initialResponse arrived, but no server-initiated handshake is pending")]
    NoHandshakePending,
}

/// The BRC-103 side of one connection.
#[derive(Debug)]
pub struct AuthTunnel {
    auth: Arc<ServerAuth>,
    /// Most recently used last.
    sessions: Vec<Arc<Session>>,
    identity: Option<PublicKey>,
    identity_hex: Option<String>,
    pending: Option<ServerHandshake>,
    server_handshakes: u32,
    /// Outbound (event name, data JSON) waiting for a session.
    queued: VecDeque<(String, Option<String>)>,
    /// `authMessage` JSON to send, in order.
    out: VecDeque<String>,
}

impl AuthTunnel {
    pub fn new(auth: Arc<ServerAuth>) -> AuthTunnel {
        AuthTunnel {
            auth,
            sessions: Vec::new(),
            identity: None,
            identity_hex: None,
            pending: None,
            server_handshakes: 0,
            queued: VecDeque::new(),
            out: VecDeque::new(),
        }
    }

    /// The verified identity (compressed lowercase hex), once a session proved one.
    pub fn identity(&self) -> Option<&str> {
        self.identity_hex.as_deref()
    }

    pub fn has_session(&self) -> bool {
        !self.sessions.is_empty()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn server_handshake_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// The next `authMessage` JSON to send (as `42["authMessage",<json>]`).
    pub fn poll_send(&mut self) -> Option<String> {
        self.out.pop_front()
    }

    /// Handles the argument of one inbound `authMessage` event (its JSON text).
    pub fn handle(&mut self, json: &str) -> Result<Inbound, TunnelError> {
        let msg = AuthMessage::from_json(json.as_bytes())?;
        match msg {
            AuthMessage::InitialRequest(ref request) => {
                self.check_identity(request.identity_key.key())?;
                let (reply, session) = self.auth.initial_response(&msg)?;
                self.out.push_back(reply.to_json());
                self.adopt(session);
                Ok(Inbound::Handshake)
            }
            AuthMessage::InitialResponse(response) => {
                let pending = self.pending.as_ref().ok_or(TunnelError::NoHandshakePending)?;
                if response.your_nonce.as_deref() != Some(pending.server_nonce()) {
                    return Err(TunnelError::NoHandshakePending);
                }
                self.check_identity(response.identity_key.key())?;
                // One answer per request: a bad one uses the nonce up as well.
                let pending = self.pending.take().ok_or(TunnelError::NoHandshakePending)?;
                self.adopt(self.auth.finish_server_handshake(pending, &response)?);
                self.server_handshakes = 0;
                Ok(Inbound::Handshake)
            }
            AuthMessage::General(general) => {
                let (session, payload) = match self.auth.verify_general(general) {
                    Ok(v) => v,
                    Err(e) => {
                        if matches!(e, AuthError::SessionNotFound(_)) {
                            // The client holds a session we no longer have (server restart,
                            // expiry, retirement): give it a new one it will prefer.
                            self.start_server_handshake();
                        }
                        return Err(e.into());
                    }
                };
                self.check_identity(Some(&session.peer))?;
                if self.auth.sessions().get(&session.server_nonce).is_none() {
                    // This message used up the session's request budget (it is retired) and
                    // the client cannot tell: offer a new session before its next message.
                    self.start_server_handshake();
                }
                self.adopt(session);
                Ok(decode_envelope(&payload).map_or(Inbound::NotAnEvent, Inbound::Event))
            }
            AuthMessage::CertificateRequest(_) | AuthMessage::CertificateResponse(_) => {
                // MessageBox never asks for certificates; answer as the SDK Peer would.
                if let crate::auth::HandshakeReply::Message(reply) = self.auth.handle_handshake_message(&msg)? {
                    self.out.push_back(reply.to_json());
                }
                Ok(Inbound::Handshake)
            }
        }
    }

    /// Refuses a key other than the connection's identity. An unreadable key passes here and
    /// is refused by the verification that follows.
    fn check_identity(&self, offered: Option<&PublicKey>) -> Result<(), TunnelError> {
        match (&self.identity, offered) {
            (Some(bound), Some(k)) if k != bound => {
                Err(TunnelError::IdentityConflict { bound: bound.to_hex(), offered: k.to_hex() })
            }
            _ => Ok(()),
        }
    }

    /// Makes `session` the connection's most recently used one, binding its identity and
    /// sending what waited for a session.
    fn adopt(&mut self, session: Arc<Session>) {
        if self.identity.is_none() {
            self.identity = Some(session.peer);
            self.identity_hex = Some(session.peer_hex.clone());
        }
        self.sessions.retain(|s| s.server_nonce != session.server_nonce);
        self.sessions.push(session);
        if self.sessions.len() > MAX_SESSIONS_PER_CONNECTION {
            self.sessions.remove(0);
        }
        while let Some((event, data)) = self.queued.pop_front() {
            self.sign_and_queue(&event, data.as_deref());
        }
    }

    /// Sends `event` with `data` (JSON text; `None` leaves `data` out of the envelope) on the
    /// most recently used session. Without a session it waits for one and a server-initiated
    /// handshake is started; the oldest waiting event is dropped when too many wait.
    pub fn emit(&mut self, event: &str, data: Option<&str>) {
        if self.sessions.is_empty() {
            if self.queued.len() >= MAX_QUEUED_EVENTS {
                self.queued.pop_front();
            }
            self.queued.push_back((event.to_string(), data.map(str::to_string)));
            self.start_server_handshake();
            return;
        }
        self.sign_and_queue(event, data);
    }

    fn sign_and_queue(&mut self, event: &str, data: Option<&str>) {
        let Some(session) = self.sessions.last() else { return };
        match self.auth.sign_general(session, envelope(event, data).into_bytes()) {
            Ok(msg) => self.out.push_back(msg.to_json()),
            Err(e) => tracing::warn!(event, error = %e, "could not sign an outbound live event; dropped"),
        }
    }

    /// Sends the server's `initialRequest` (§4.7) unless one is pending, the connection was
    /// sent enough of them already, or it is not needed. Returns whether one was sent.
    pub fn start_server_handshake(&mut self) -> bool {
        if self.pending.is_some() || self.server_handshakes >= MAX_SERVER_HANDSHAKES {
            return false;
        }
        self.server_handshakes += 1;
        let (request, pending) = self.auth.start_server_handshake();
        self.out.push_back(request.to_json());
        self.pending = Some(pending);
        true
    }
}

/// `{"eventName":…,"data":…}` as `JSON.stringify` writes it (`data` omitted when absent).
pub fn envelope(event: &str, data: Option<&str>) -> String {
    let name = json_string(event);
    let mut s = String::with_capacity(24 + name.len() + data.map_or(0, str::len));
    s.push_str(r#"{"eventName":"#);
    s.push_str(&name);
    if let Some(d) = data {
        s.push_str(r#","data":"#);
        s.push_str(d);
    }
    s.push('}');
    s
}

/// Reads an event envelope from a verified payload. Bytes that are not UTF-8 are replaced, as
/// the SDK's decoder does; anything that is not `{"eventName":<string>,…}` is not an event,
/// nor is a payload `Value` would not read (checked first, so the typed read that follows
/// agrees with the `Value` one it replaces). Of a repeated key the last counts, as in `Value`.
pub fn decode_envelope(payload: &[u8]) -> Option<AppEvent> {
    let text = String::from_utf8_lossy(payload);
    if !crate::json::check(&text) {
        return None;
    }
    let Envelope { name, data } = serde_json::from_str::<Envelope>(&text).ok()?;
    let name = name?.as_str()?.into_owned();
    Some(AppEvent { name, data: data.map(|d| d.0.to_owned()) })
}

/// `{"eventName":…,"data":…}` as read: both kept raw (the last of a repeated key), the rest
/// skipped. Only objects are envelopes.
struct Envelope<'a> {
    name: Option<crate::json::Lazy<'a>>,
    data: Option<crate::json::Lazy<'a>>,
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Envelope<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Envelope<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an event envelope object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
                let mut env = Envelope { name: None, data: None };
                while let Some(key) = map.next_key::<crate::json::CowStr<'de>>()? {
                    match &*key.0 {
                        "eventName" => env.name = Some(crate::json::Lazy(map.next_value::<&RawValue>()?)),
                        "data" => env.data = Some(crate::json::Lazy(map.next_value::<&RawValue>()?)),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(env)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::message::{General, InitialRequest, InitialResponse, MessageType};
    use crate::auth::{ClientIdentity, ClientSession, PrivateKey, SessionConfig};

    pub(crate) fn server() -> Arc<ServerAuth> {
        Arc::new(ServerAuth::new(PrivateKey::random(), SessionConfig::default()))
    }

    fn msg(json: &str) -> AuthMessage {
        AuthMessage::from_json(json.as_bytes()).unwrap()
    }

    fn general_of(m: &mut AuthMessage) -> &mut General {
        match m {
            AuthMessage::General(g) => g,
            other => panic!("not a general message: {other:?}"),
        }
    }

    fn initial_request_of(m: &AuthMessage) -> &InitialRequest {
        match m {
            AuthMessage::InitialRequest(r) => r,
            other => panic!("not an initialRequest: {other:?}"),
        }
    }

    fn initial_response_of(m: &mut AuthMessage) -> &mut InitialResponse {
        match m {
            AuthMessage::InitialResponse(r) => r,
            other => panic!("not an initialResponse: {other:?}"),
        }
    }

    /// Client-initiated handshake through a tunnel; returns the client's session.
    fn handshake(t: &mut AuthTunnel, me: &ClientIdentity) -> ClientSession {
        let (req, pending) = me.start_handshake();
        assert_eq!(t.handle(&req.to_json()).unwrap(), Inbound::Handshake);
        let reply = msg(&t.poll_send().unwrap());
        pending.finish(me, &reply).unwrap()
    }

    fn general(me: &ClientIdentity, s: &ClientSession, event: &str, data: Option<&str>) -> String {
        s.sign_general(me, envelope(event, data).into_bytes()).unwrap().to_json()
    }

    #[test]
    fn envelope_is_json_stringify() {
        assert_eq!(envelope("x", None), r#"{"eventName":"x"}"#);
        assert_eq!(envelope("joinRoom", Some(r#""k-inbox""#)), r#"{"eventName":"joinRoom","data":"k-inbox"}"#);
        let e = decode_envelope(br#"{"eventName":"a","data":{"b":"\u00e9"}}"#).unwrap();
        assert_eq!((e.name.as_str(), e.data_value().unwrap()["b"].as_str()), ("a", Some("é")));
        assert!(decode_envelope(br#"{"eventName":"a"}"#).unwrap().data.is_none());
        for bad in [&b"not json"[..], b"[]", br#"{"eventName":5}"#, br#"{"data":1}"#, b"\xff\xfe", b""] {
            assert!(decode_envelope(bad).is_none());
        }
    }

    /// The `Value` reading `decode_envelope` replaced.
    fn decode_envelope_value(payload: &[u8]) -> Option<(String, Option<serde_json::Value>)> {
        use serde_json::Value;
        let text = String::from_utf8_lossy(payload);
        let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(&text) else { return None };
        let Some(Value::String(name)) = map.remove("eventName") else { return None };
        Some((name, map.remove("data")))
    }

    #[test]
    fn typed_envelope_reads_as_value_did() {
        use rand::{Rng, SeedableRng};
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let mut docs: Vec<Vec<u8>> = [
            r#"{"eventName":"sendMessage","data":{"roomId":"r","message":{"body":"b\u00e9","n":1.0}}}"#.to_string(),
            r#"{"data":null,"eventName":"x"}"#.into(),
            r#"{"eventName":"a","eventName":"b","data":1,"data":[2]}"#.into(),
            r#"{"eventName":5,"eventName":"b"}"#.into(),
            r#"{"eventName":"b","eventName":5}"#.into(),
            r#"{"eventNam\u0065":"esc","dat\u0061":"d"}"#.into(),
            r#" { "eventName" : "ws" , "data" : [ 1 , { } ] } "#.into(),
            format!(r#"{{"eventName":"d","data":{}}}"#, deep(127)),
            format!(r#"{{"eventName":"d","data":{}}}"#, deep(126)),
            format!(r#"{{"eventName":"d","other":{}}}"#, deep(127)),
            r#"{"eventName":"d","data":"\ud800"}"#.into(),
            r#"{"eventName":"d","x":"\udc00"}"#.into(),
            r#"{"eventName":"d","x":1e400}"#.into(),
            r#"{"eventName":"d","data":-1e309}"#.into(),
            r#"["eventName","x"]"#.into(),
            r#""eventName""#.into(),
            r#"{"eventName":"x"} trailing"#.into(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        docs.push(b"{\"eventName\":\"\xff\xfe\",\"data\":\"\xc3\"}".to_vec());
        let base = br#"{"eventName":"sendMessage","data":{"roomId":"k-inbox","message":{"messageId":"m","body":"x"}}}"#;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let mut d = base.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..d.len());
                let alphabet = b"{}[],:\"\\0123456789.-eu ntl\xff";
                match rng.random_range(0..3) {
                    0 => d[i] = alphabet[rng.random_range(0..alphabet.len())],
                    1 => {
                        d.remove(i);
                    }
                    _ => d.insert(i, alphabet[rng.random_range(0..alphabet.len())]),
                }
            }
            docs.push(d);
        }
        let mut events = 0;
        for d in &docs {
            let typed = decode_envelope(d).map(|e| (e.name.clone(), e.data_value()));
            events += usize::from(typed.is_some());
            assert_eq!(typed, decode_envelope_value(d), "{}", String::from_utf8_lossy(d));
        }
        assert!(events > 1000, "{events} events");
    }

    #[test]
    fn client_handshake_then_events_both_ways() {
        let auth = server();
        let me = ClientIdentity::random();
        let mut t = AuthTunnel::new(auth.clone());
        let s = handshake(&mut t, &me);
        assert_eq!(t.identity(), Some(me.identity_hex()));

        let got = t.handle(&general(&me, &s, "authenticated", Some(r#"{"identityKey":"x"}"#))).unwrap();
        let Inbound::Event(ev) = got else { panic!("{got:?}") };
        assert_eq!(ev.name, "authenticated");
        assert_eq!(ev.data_value().unwrap()["identityKey"], "x");

        t.emit("authenticationSuccess", Some(r#"{"status":"success"}"#));
        let mut out = msg(&t.poll_send().unwrap());
        assert_eq!(general_of(&mut out).identity_key, auth.identity_hex());
        let payload = s.verify_general(&out).unwrap();
        assert_eq!(payload, br#"{"eventName":"authenticationSuccess","data":{"status":"success"}}"#);
    }

    #[test]
    fn replays_bad_signatures_and_foreign_claims_are_dropped() {
        let auth = server();
        let me = ClientIdentity::random();
        let mut t = AuthTunnel::new(auth.clone());
        let s = handshake(&mut t, &me);
        let frame = general(&me, &s, "joinRoom", Some(r#""r""#));
        assert!(matches!(t.handle(&frame), Ok(Inbound::Event(_))));
        assert_eq!(t.handle(&frame).unwrap_err(), TunnelError::Auth(AuthError::Replayed));

        let mut tampered = msg(&general(&me, &s, "joinRoom", Some(r#""r""#)));
        general_of(&mut tampered).payload.as_mut().unwrap()[2] ^= 1;
        assert_eq!(t.handle(&tampered.to_json()).unwrap_err(), TunnelError::Auth(AuthError::InvalidSignature));

        // identityKey differing from the session's peer: dropped.
        let other = ClientIdentity::random();
        let mut claim = msg(&general(&me, &s, "joinRoom", Some(r#""r""#)));
        general_of(&mut claim).identity_key = other.identity_hex().to_string();
        assert_eq!(t.handle(&claim.to_json()).unwrap_err(), TunnelError::Auth(AuthError::IdentityMismatch));

        assert!(matches!(t.handle("{nope"), Err(TunnelError::Message(_))));
        assert!(matches!(
            t.handle(r#"{"version":"0.2","messageType":"general","identityKey":"x"}"#),
            Err(TunnelError::Message(_))
        ));
        // A verified payload that is no envelope is not an event.
        let junk = s.sign_general(&me, b"[1,2]".to_vec()).unwrap().to_json();
        assert_eq!(t.handle(&junk).unwrap(), Inbound::NotAnEvent);
    }

    #[test]
    fn second_identity_on_one_connection_is_refused() {
        let auth = server();
        let (a, b) = (ClientIdentity::random(), ClientIdentity::random());
        let mut t = AuthTunnel::new(auth.clone());
        handshake(&mut t, &a);
        let (req, _) = b.start_handshake();
        assert!(matches!(t.handle(&req.to_json()), Err(TunnelError::IdentityConflict { .. })));
        assert!(t.poll_send().is_none());
        // B's session from another connection is refused here too.
        let mut t2 = AuthTunnel::new(auth.clone());
        let sb = handshake(&mut t2, &b);
        assert!(matches!(t.handle(&general(&b, &sb, "x", None)), Err(TunnelError::IdentityConflict { .. })));
        assert_eq!(t.identity(), Some(a.identity_hex()));
        // Several sessions of the same identity are fine.
        handshake(&mut t, &a);
        assert_eq!(t.session_count(), 2);
    }

    #[test]
    fn stale_session_from_an_earlier_connection_is_accepted() {
        let auth = server();
        let me = ClientIdentity::random();
        let mut old = AuthTunnel::new(auth.clone());
        let s = handshake(&mut old, &me);
        drop(old);
        let mut fresh = AuthTunnel::new(auth.clone());
        let got = fresh.handle(&general(&me, &s, "authenticated", None)).unwrap();
        assert!(matches!(got, Inbound::Event(AppEvent { ref name, data: None }) if name == "authenticated"));
        assert_eq!(fresh.identity(), Some(me.identity_hex()));
        // Replies go out on that session and the client verifies them.
        fresh.emit("x", Some("1"));
        assert!(s.verify_general(&msg(&fresh.poll_send().unwrap())).is_ok());
    }

    #[test]
    fn server_initiated_handshake() {
        let auth = server();
        let me = ClientIdentity::random();
        let mut t = AuthTunnel::new(auth.clone());
        // Events before any session wait and trigger the server's initialRequest.
        t.emit("sendMessage-room", Some(r#"{"body":"b"}"#));
        t.emit("second", None);
        let req = msg(&t.poll_send().unwrap());
        assert!(t.poll_send().is_none());
        assert_eq!(req.message_type(), MessageType::InitialRequest);
        let r = initial_request_of(&req);
        assert_eq!(r.identity_key.to_string(), auth.identity_hex());
        assert_eq!(r.initial_nonce.as_ref().unwrap().len(), 64);
        assert!(!t.start_server_handshake(), "one pending at a time");

        let (mut resp, s) = me.answer_server_handshake(&req).unwrap();
        assert_eq!(initial_response_of(&mut resp).your_nonce, r.initial_nonce);
        assert_eq!(t.handle(&resp.to_json()).unwrap(), Inbound::Handshake);
        assert_eq!(t.identity(), Some(me.identity_hex()));
        assert!(auth.sessions().get(r.initial_nonce.as_deref().unwrap()).is_some());
        let first = s.verify_general(&msg(&t.poll_send().unwrap())).unwrap();
        assert_eq!(first, br#"{"eventName":"sendMessage-room","data":{"body":"b"}}"#);
        assert_eq!(s.verify_general(&msg(&t.poll_send().unwrap())).unwrap(), br#"{"eventName":"second"}"#);

        // The client's messages on that session verify (yourNonce = Ns).
        assert!(matches!(t.handle(&general(&me, &s, "joinRoom", Some("\"r\""))), Ok(Inbound::Event(_))));
        // A second answer has nothing pending.
        assert_eq!(t.handle(&resp.to_json()).unwrap_err(), TunnelError::NoHandshakePending);
    }

    #[test]
    fn bad_server_handshake_answers_are_refused() {
        let auth = server();
        let me = ClientIdentity::random();
        let mut t = AuthTunnel::new(auth.clone());
        assert!(t.start_server_handshake());
        let req = msg(&t.poll_send().unwrap());
        let (resp, _) = me.answer_server_handshake(&req).unwrap();

        let mut wrong_nonce = resp.clone();
        initial_response_of(&mut wrong_nonce).your_nonce = Some("x".into());
        assert_eq!(t.handle(&wrong_nonce.to_json()).unwrap_err(), TunnelError::NoHandshakePending);
        let mut bad_sig = resp.clone();
        initial_response_of(&mut bad_sig).signature.as_mut().unwrap()[10] ^= 1;
        assert!(matches!(
            t.handle(&bad_sig.to_json()),
            Err(TunnelError::Auth(AuthError::InvalidSignature | AuthError::Key(_)))
        ));
        assert!(!t.has_session());
        // The nonce is used up; a fresh handshake can be started, up to the budget.
        assert!(t.start_server_handshake());
        for _ in 0..MAX_SERVER_HANDSHAKES {
            t.pending = None; // unanswered
            t.start_server_handshake();
        }
        assert_eq!(t.server_handshakes, MAX_SERVER_HANDSHAKES);
        t.pending = None;
        assert!(!t.start_server_handshake());
    }

    #[test]
    fn unknown_session_triggers_a_server_handshake() {
        let auth = server();
        let me = ClientIdentity::random();
        let mut t = AuthTunnel::new(auth.clone());
        let s = handshake(&mut t, &me);
        // The server forgot the session (restart): the general is dropped, and the server
        // offers a new session, which the client then prefers.
        auth.sessions().remove(&s.server_nonce);
        let err = t.handle(&general(&me, &s, "joinRoom", Some("\"r\""))).unwrap_err();
        assert!(matches!(err, TunnelError::Auth(AuthError::SessionNotFound(_))));
        let req = msg(&t.poll_send().unwrap());
        assert_eq!(req.message_type(), MessageType::InitialRequest);
        let (resp, s2) = me.answer_server_handshake(&req).unwrap();
        t.handle(&resp.to_json()).unwrap();
        assert!(matches!(t.handle(&general(&me, &s2, "joinRoom", Some("\"r\""))), Ok(Inbound::Event(_))));
    }

    #[test]
    fn a_retired_session_is_replaced_before_the_client_needs_it() {
        let config = SessionConfig { max_requests_per_session: 2, ..Default::default() };
        let auth = Arc::new(ServerAuth::new(PrivateKey::random(), config));
        let me = ClientIdentity::random();
        let mut t = AuthTunnel::new(auth.clone());
        let mut s = handshake(&mut t, &me);
        // More rounds than MAX_SERVER_HANDSHAKES: the budget counts only failed ones.
        for _ in 0..(MAX_SERVER_HANDSHAKES + 2) {
            assert!(matches!(t.handle(&general(&me, &s, "a", None)), Ok(Inbound::Event(_))));
            assert!(t.poll_send().is_none());
            // The second message retires the session; the server offers a new one at once.
            assert!(matches!(t.handle(&general(&me, &s, "b", None)), Ok(Inbound::Event(_))));
            let req = msg(&t.poll_send().expect("a server initialRequest"));
            assert_eq!(req.message_type(), MessageType::InitialRequest);
            let (resp, next) = me.answer_server_handshake(&req).unwrap();
            t.handle(&resp.to_json()).unwrap();
            s = next;
        }
    }

    #[test]
    fn sessions_and_queue_are_bounded() {
        let auth = server();
        let me = ClientIdentity::random();
        let mut t = AuthTunnel::new(auth.clone());
        for i in 0..(MAX_QUEUED_EVENTS + 5) {
            t.emit(&format!("e{i}"), None);
        }
        let req = msg(&t.poll_send().unwrap());
        let (resp, s) = me.answer_server_handshake(&req).unwrap();
        t.handle(&resp.to_json()).unwrap();
        let mut n = 0;
        let mut first = None;
        while let Some(m) = t.poll_send() {
            let p = s.verify_general(&msg(&m)).unwrap();
            first.get_or_insert(decode_envelope(&p).unwrap().name);
            n += 1;
        }
        assert_eq!(n, MAX_QUEUED_EVENTS);
        assert_eq!(first.as_deref(), Some("e5"), "the oldest are dropped");
        for _ in 0..(MAX_SESSIONS_PER_CONNECTION + 3) {
            handshake(&mut t, &me);
        }
        assert_eq!(t.session_count(), MAX_SESSIONS_PER_CONNECTION);
    }
}
