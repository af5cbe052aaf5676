//! Test support shared by the live channel's tests: a client that speaks the protocol at the
//! packet level, as `@bsv/authsocket-client` and `@bsv/message-box-client` do.

use std::sync::Arc;

use rand::SeedableRng;
use serde_json::Value;

use super::authsocket::{decode_envelope, envelope};
use super::connection::ConnectionShared;
use super::engineio::RECORD_SEPARATOR;
use crate::auth::message::AuthMessage;
use crate::auth::{ClientIdentity, ClientSession, PendingHandshake, PrivateKey, ServerAuth, SessionConfig};

/// A server identity and a seeded id generator for one core.
pub(crate) fn server() -> Arc<ConnectionShared> {
    shared_for(Arc::new(ServerAuth::new(PrivateKey::random(), SessionConfig::default())), 0)
}

/// The shared state of a core of the server `auth`, with ids seeded by `seed`.
pub(crate) fn shared_for(auth: Arc<ServerAuth>, seed: u64) -> Arc<ConnectionShared> {
    ConnectionShared::new(auth, rand::rngs::StdRng::seed_from_u64(seed))
}

/// Plays `@bsv/authsocket-client` + `message-box-client` at the packet level: its Peer
/// starts handshakes, answers the server's, verifies and decodes what it receives.
pub(crate) struct JsClient {
    pub(crate) me: ClientIdentity,
    pub(crate) sessions: Vec<ClientSession>,
    pub(crate) pending: Vec<PendingHandshake>,
    /// Application events received (name, data).
    pub(crate) received: Vec<(String, Option<Value>)>,
    /// Engine packets other than events (`40{…}`, `2`, `6`, `1`, `44…`).
    pub(crate) engine: Vec<String>,
    /// Packets the client's Peer queued by itself (answers to server handshakes).
    pub(crate) outbox: Vec<String>,
}

impl JsClient {
    pub(crate) fn new() -> JsClient {
        JsClient {
            me: ClientIdentity::random(),
            sessions: Vec::new(),
            pending: Vec::new(),
            received: Vec::new(),
            engine: Vec::new(),
            outbox: Vec::new(),
        }
    }

    pub(crate) fn id(&self) -> String {
        self.me.identity_hex().to_string()
    }

    pub(crate) fn auth_packet(msg: &AuthMessage) -> String {
        format!(r#"42["authMessage",{}]"#, msg.to_json())
    }

    pub(crate) fn handshake(&mut self) -> String {
        let (req, pending) = self.me.start_handshake();
        self.pending.push(pending);
        Self::auth_packet(&req)
    }

    /// A general message on the most recent session (what `Peer.toPeer` picks).
    pub(crate) fn emit(&self, event: &str, data: Option<Value>) -> String {
        let s = self.sessions.last().expect("a session");
        self.emit_on(s, event, data)
    }

    pub(crate) fn emit_on(&self, s: &ClientSession, event: &str, data: Option<Value>) -> String {
        let data = data.map(|d| d.to_string());
        Self::auth_packet(&s.sign_general(&self.me, envelope(event, data.as_deref()).into_bytes()).unwrap())
    }

    pub(crate) fn receive_payload(&mut self, body: &str) {
        for p in body.split(RECORD_SEPARATOR) {
            self.receive_packet(p);
        }
    }

    pub(crate) fn receive_packet(&mut self, p: &str) {
        let Some(rest) = p.strip_prefix("42") else {
            self.engine.push(p.to_string());
            return;
        };
        let v: Vec<Value> = serde_json::from_str(rest).unwrap();
        assert_eq!(v[0], "authMessage");
        let msg = AuthMessage::from_value(v[1].clone()).unwrap();
        match &msg {
            AuthMessage::InitialResponse(r) => {
                let i = self.pending.iter().position(|h| Some(h.client_nonce()) == r.your_nonce.as_deref()).unwrap();
                let s = self.pending.remove(i).finish(&self.me, &msg).unwrap();
                self.sessions.push(s);
            }
            AuthMessage::InitialRequest(_) => {
                let (resp, s) = self.me.answer_server_handshake(&msg).unwrap();
                self.sessions.push(s);
                self.outbox.push(Self::auth_packet(&resp));
            }
            AuthMessage::General(g) => {
                let s = self
                    .sessions
                    .iter()
                    .find(|s| Some(s.client_nonce.as_str()) == g.your_nonce.as_deref())
                    .expect("a general on a session the client holds");
                let payload = s.verify_general(&msg).unwrap();
                let ev = decode_envelope(&payload).unwrap();
                let data = ev.data_value();
                self.received.push((ev.name, data));
            }
            other => panic!("unexpected {:?}", other.message_type()),
        }
    }

    pub(crate) fn take(&mut self) -> Vec<(String, Option<Value>)> {
        std::mem::take(&mut self.received)
    }
}
