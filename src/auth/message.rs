//! The BRC-103 `AuthMessage`: one type per message type, each with only the fields that type
//! carries, and their JSON form (HTTP handshake bodies, `authMessage` socket events).
//!
//! The JSON form is the TS `Peer`'s: byte arrays are JSON arrays of numbers, fields come in
//! the order `Peer` builds them, absent fields are omitted. Reading is as lenient as the SDK:
//! every field the protocol knows is type-checked whatever the message type, then only the
//! fields of the message's type are kept. A field a type requires may still be absent here;
//! the handler refuses it in the SDK's order of checks, with the SDK's words.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::keys::PublicKey;
use super::payload::{
    H_IDENTITY_KEY, H_MESSAGE_TYPE, H_NONCE, H_REQUESTED_CERTIFICATES, H_SIGNATURE, H_VERSION, H_YOUR_NONCE,
};

/// The only protocol version any implementation speaks.
pub const AUTH_VERSION: &str = "0.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MessageType {
    InitialRequest,
    InitialResponse,
    CertificateRequest,
    CertificateResponse,
    General,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::InitialRequest => "initialRequest",
            MessageType::InitialResponse => "initialResponse",
            MessageType::CertificateRequest => "certificateRequest",
            MessageType::CertificateResponse => "certificateResponse",
            MessageType::General => "general",
        }
    }
}

/// The `identityKey` of a message that introduces a peer (`initialRequest`,
/// `initialResponse`), parsed when read. Text that names no key is kept: the handler refuses
/// it where the SDK checks the key (after the nonce), so errors come in the SDK's order.
///
/// Messages on a session (`general`, certificate messages) keep the key as text: it is only
/// compared with the session's identity, as text, and parsing it would cost a square root
/// per socket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireKey {
    Key(PublicKey),
    Unreadable(String),
}

impl WireKey {
    pub fn parse(text: String) -> WireKey {
        match PublicKey::parse_lenient(&text) {
            Ok(key) => WireKey::Key(key),
            Err(_) => WireKey::Unreadable(text),
        }
    }

    /// The key, when the text named one.
    pub fn key(&self) -> Option<&PublicKey> {
        match self {
            WireKey::Key(k) => Some(k),
            WireKey::Unreadable(_) => None,
        }
    }

    /// The JSON text: canonical compressed hex for a key.
    fn text(&self) -> Cow<'_, str> {
        match self {
            WireKey::Key(k) => Cow::Owned(k.to_hex()),
            WireKey::Unreadable(t) => Cow::Borrowed(t),
        }
    }
}

impl From<PublicKey> for WireKey {
    fn from(key: PublicKey) -> Self {
        WireKey::Key(key)
    }
}

impl fmt::Display for WireKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// `initialRequest`: a peer's identity and its session nonce.
#[derive(Debug, Clone, PartialEq)]
pub struct InitialRequest {
    pub identity_key: WireKey,
    pub initial_nonce: Option<String>,
    /// `{"certifiers":[…],"types":{…}}`, kept as JSON so it re-serialises as `JSON.stringify` did.
    pub requested_certificates: Option<Value>,
}

/// `initialResponse`: the responder's identity and session nonce, the initiator's nonce
/// echoed, and a signature over both.
#[derive(Debug, Clone, PartialEq)]
pub struct InitialResponse {
    pub identity_key: WireKey,
    pub initial_nonce: Option<String>,
    pub your_nonce: Option<String>,
    /// VerifiableCertificate objects, kept as JSON (the server requests none and holds none).
    pub certificates: Option<Vec<Value>>,
    pub requested_certificates: Option<Value>,
    pub signature: Option<Vec<u8>>,
}

/// `certificateRequest` on a session: signed over the requested set.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateRequest {
    pub identity_key: String,
    pub nonce: Option<String>,
    pub initial_nonce: Option<String>,
    pub your_nonce: Option<String>,
    pub requested_certificates: Option<Value>,
    pub signature: Option<Vec<u8>>,
}

/// `certificateResponse` on a session: signed over the certificates.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateResponse {
    pub identity_key: String,
    pub nonce: Option<String>,
    pub initial_nonce: Option<String>,
    pub your_nonce: Option<String>,
    pub certificates: Option<Vec<Value>>,
    pub signature: Option<Vec<u8>>,
}

/// `general` on a session: a signed payload.
#[derive(Debug, Clone, PartialEq)]
pub struct General {
    pub identity_key: String,
    pub nonce: Option<String>,
    pub your_nonce: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub signature: Option<Vec<u8>>,
}

/// One BRC-103 message.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthMessage {
    InitialRequest(InitialRequest),
    InitialResponse(InitialResponse),
    CertificateRequest(CertificateRequest),
    CertificateResponse(CertificateResponse),
    General(General),
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("malformed auth message: {0}")]
    Malformed(String),
    #[error("Invalid or unsupported message auth version! Received: {0}, expected: 0.1")]
    Version(String),
}

/// The empty certificate request `{"certifiers":[],"types":{}}`.
pub fn empty_certificate_set() -> Value {
    serde_json::json!({"certifiers": [], "types": {}})
}

/// True when a requested set names at least one certifier (the SDK's test for "requested").
pub fn requests_certificates(set: Option<&Value>) -> bool {
    set.and_then(|s| s.get("certifiers")).and_then(Value::as_array).is_some_and(|c| !c.is_empty())
}

/// Every field of any message type, as read (the version is checked before).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireIn {
    message_type: MessageType,
    identity_key: String,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    initial_nonce: Option<String>,
    #[serde(default)]
    your_nonce: Option<String>,
    #[serde(default)]
    certificates: Option<Vec<Value>>,
    #[serde(default)]
    requested_certificates: Option<Value>,
    #[serde(default)]
    payload: Option<Vec<u8>>,
    #[serde(default)]
    signature: Option<Vec<u8>>,
}

/// A message as written: field order is the serialisation order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a> {
    version: &'static str,
    message_type: MessageType,
    identity_key: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    initial_nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    your_nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificates: Option<&'a [Value]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested_certificates: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a [u8]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'a [u8]>,
}

impl WireIn {
    fn into_message(self) -> AuthMessage {
        let WireIn {
            message_type,
            identity_key,
            nonce,
            initial_nonce,
            your_nonce,
            certificates,
            requested_certificates,
            payload,
            signature,
        } = self;
        match message_type {
            MessageType::InitialRequest => AuthMessage::InitialRequest(InitialRequest {
                identity_key: WireKey::parse(identity_key),
                initial_nonce,
                requested_certificates,
            }),
            MessageType::InitialResponse => AuthMessage::InitialResponse(InitialResponse {
                identity_key: WireKey::parse(identity_key),
                initial_nonce,
                your_nonce,
                certificates,
                requested_certificates,
                signature,
            }),
            MessageType::CertificateRequest => AuthMessage::CertificateRequest(CertificateRequest {
                identity_key,
                nonce,
                initial_nonce,
                your_nonce,
                requested_certificates,
                signature,
            }),
            MessageType::CertificateResponse => AuthMessage::CertificateResponse(CertificateResponse {
                identity_key,
                nonce,
                initial_nonce,
                your_nonce,
                certificates,
                signature,
            }),
            MessageType::General => {
                AuthMessage::General(General { identity_key, nonce, your_nonce, payload, signature })
            }
        }
    }
}

impl AuthMessage {
    /// Parses and checks the version, as `Peer.handleIncomingMessage` does first.
    pub fn from_json(bytes: &[u8]) -> Result<AuthMessage, MessageError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| MessageError::Malformed(e.to_string()))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<AuthMessage, MessageError> {
        let Value::Object(ref map) = value else {
            return Err(MessageError::Malformed("expected a JSON object".into()));
        };
        // The version is checked before anything else, with the SDK's message.
        match map.get("version") {
            Some(Value::String(v)) if v == AUTH_VERSION => {}
            Some(Value::String(v)) => return Err(MessageError::Version(v.clone())),
            Some(other) => return Err(MessageError::Version(other.to_string())),
            None => return Err(MessageError::Version("undefined".into())),
        }
        let wire: WireIn = serde_json::from_value(value).map_err(|e| MessageError::Malformed(e.to_string()))?;
        Ok(wire.into_message())
    }

    pub fn message_type(&self) -> MessageType {
        match self {
            AuthMessage::InitialRequest(_) => MessageType::InitialRequest,
            AuthMessage::InitialResponse(_) => MessageType::InitialResponse,
            AuthMessage::CertificateRequest(_) => MessageType::CertificateRequest,
            AuthMessage::CertificateResponse(_) => MessageType::CertificateResponse,
            AuthMessage::General(_) => MessageType::General,
        }
    }

    fn wire(&self) -> WireOut<'_> {
        let mut w = WireOut {
            version: AUTH_VERSION,
            message_type: self.message_type(),
            identity_key: Cow::Borrowed(""),
            nonce: None,
            initial_nonce: None,
            your_nonce: None,
            certificates: None,
            requested_certificates: None,
            payload: None,
            signature: None,
        };
        match self {
            AuthMessage::InitialRequest(m) => {
                w.identity_key = m.identity_key.text();
                w.initial_nonce = m.initial_nonce.as_deref();
                w.requested_certificates = m.requested_certificates.as_ref();
            }
            AuthMessage::InitialResponse(m) => {
                w.identity_key = m.identity_key.text();
                w.initial_nonce = m.initial_nonce.as_deref();
                w.your_nonce = m.your_nonce.as_deref();
                w.certificates = m.certificates.as_deref();
                w.requested_certificates = m.requested_certificates.as_ref();
                w.signature = m.signature.as_deref();
            }
            AuthMessage::CertificateRequest(m) => {
                w.identity_key = Cow::Borrowed(&m.identity_key);
                w.nonce = m.nonce.as_deref();
                w.initial_nonce = m.initial_nonce.as_deref();
                w.your_nonce = m.your_nonce.as_deref();
                w.requested_certificates = m.requested_certificates.as_ref();
                w.signature = m.signature.as_deref();
            }
            AuthMessage::CertificateResponse(m) => {
                w.identity_key = Cow::Borrowed(&m.identity_key);
                w.nonce = m.nonce.as_deref();
                w.initial_nonce = m.initial_nonce.as_deref();
                w.your_nonce = m.your_nonce.as_deref();
                w.certificates = m.certificates.as_deref();
                w.signature = m.signature.as_deref();
            }
            AuthMessage::General(m) => {
                w.identity_key = Cow::Borrowed(&m.identity_key);
                w.nonce = m.nonce.as_deref();
                w.your_nonce = m.your_nonce.as_deref();
                w.payload = m.payload.as_deref();
                w.signature = m.signature.as_deref();
            }
        }
        w
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.wire()).expect("an AuthMessage always serialises")
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self.wire()).expect("an AuthMessage always serialises")
    }

    /// The `x-bsv-auth-*` headers the middleware puts on a handshake answer carrying this
    /// message, in its order: version, type, identity key, then nonce, your nonce, signature
    /// (hex) and requested certificates (JSON) where the message has them.
    pub fn handshake_headers(&self) -> Vec<(&'static str, String)> {
        let w = self.wire();
        let mut h = vec![
            (H_VERSION, AUTH_VERSION.to_string()),
            (H_MESSAGE_TYPE, w.message_type.as_str().to_string()),
            (H_IDENTITY_KEY, w.identity_key.into_owned()),
        ];
        if let Some(n) = w.nonce {
            h.push((H_NONCE, n.to_string()));
        }
        if let Some(n) = w.your_nonce {
            h.push((H_YOUR_NONCE, n.to_string()));
        }
        if let Some(s) = w.signature {
            h.push((H_SIGNATURE, hex::encode(s)));
        }
        if let Some(c) = w.requested_certificates {
            h.push((H_REQUESTED_CERTIFICATES, c.to_string()));
        }
        h
    }
}

impl Serialize for AuthMessage {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.wire().serialize(serializer)
    }
}

macro_rules! into_message {
    ($($t:ident),*) => {$(
        impl From<$t> for AuthMessage {
            fn from(m: $t) -> AuthMessage {
                AuthMessage::$t(m)
            }
        }
    )*};
}
into_message!(InitialRequest, InitialResponse, CertificateRequest, CertificateResponse, General);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::PrivateKey;

    #[test]
    fn round_trip_keeps_sdk_field_order() {
        let m = AuthMessage::InitialResponse(InitialResponse {
            identity_key: WireKey::parse("02ab".into()),
            initial_nonce: Some("Ns".into()),
            your_nonce: Some("Nc".into()),
            certificates: None,
            requested_certificates: Some(empty_certificate_set()),
            signature: Some(vec![48, 1, 255]),
        });
        let json = m.to_json();
        assert_eq!(
            json,
            r#"{"version":"0.1","messageType":"initialResponse","identityKey":"02ab","initialNonce":"Ns","yourNonce":"Nc","requestedCertificates":{"certifiers":[],"types":{}},"signature":[48,1,255]}"#
        );
        assert_eq!(AuthMessage::from_json(json.as_bytes()).unwrap(), m);
    }

    #[test]
    fn a_parsed_key_writes_as_canonical_hex() {
        let key = PrivateKey::from_bytes(&[3; 32]).unwrap().public_key();
        let m = AuthMessage::InitialResponse(InitialResponse {
            identity_key: key.into(),
            initial_nonce: Some("Ns".into()),
            your_nonce: Some("Nc".into()),
            certificates: None,
            requested_certificates: Some(empty_certificate_set()),
            signature: Some(vec![48, 1, 255]),
        });
        let json = m.to_json();
        assert_eq!(
            json,
            format!(
                r#"{{"version":"0.1","messageType":"initialResponse","identityKey":"{key}","initialNonce":"Ns","yourNonce":"Nc","requestedCertificates":{{"certifiers":[],"types":{{}}}},"signature":[48,1,255]}}"#
            )
        );
        assert_eq!(AuthMessage::from_json(json.as_bytes()).unwrap(), m);
        assert_eq!(serde_json::to_string(&m).unwrap(), json);
        assert_eq!(m.to_value().to_string(), json);
    }

    #[test]
    fn every_type_writes_its_fields_in_sdk_order() {
        let all = |t: &str| {
            format!(
                r#"{{"version":"0.1","messageType":"{t}","identityKey":"02ab","nonce":"n","initialNonce":"i","yourNonce":"y","certificates":[],"requestedCertificates":{{"certifiers":[],"types":{{}}}},"payload":[1,2],"signature":[3]}}"#
            )
        };
        for (t, kept) in [
            (
                "initialRequest",
                r#""identityKey":"02ab","initialNonce":"i","requestedCertificates":{"certifiers":[],"types":{}}}"#,
            ),
            (
                "initialResponse",
                r#""identityKey":"02ab","initialNonce":"i","yourNonce":"y","certificates":[],"requestedCertificates":{"certifiers":[],"types":{}},"signature":[3]}"#,
            ),
            (
                "certificateRequest",
                r#""identityKey":"02ab","nonce":"n","initialNonce":"i","yourNonce":"y","requestedCertificates":{"certifiers":[],"types":{}},"signature":[3]}"#,
            ),
            (
                "certificateResponse",
                r#""identityKey":"02ab","nonce":"n","initialNonce":"i","yourNonce":"y","certificates":[],"signature":[3]}"#,
            ),
            ("general", r#""identityKey":"02ab","nonce":"n","yourNonce":"y","payload":[1,2],"signature":[3]}"#),
        ] {
            let m = AuthMessage::from_json(all(t).as_bytes()).unwrap();
            assert_eq!(m.message_type().as_str(), t);
            assert_eq!(m.to_json(), format!(r#"{{"version":"0.1","messageType":"{t}",{kept}"#), "{t}");
            // What is kept reads back to the same message and the same bytes.
            assert_eq!(AuthMessage::from_json(m.to_json().as_bytes()).unwrap(), m);
        }
    }

    #[test]
    fn identity_keys_of_initial_messages_are_parsed() {
        let key = PrivateKey::from_bytes(&[4; 32]).unwrap().public_key();
        let read = |k: &str| {
            let json = format!(r#"{{"version":"0.1","messageType":"initialRequest","identityKey":"{k}"}}"#);
            match AuthMessage::from_json(json.as_bytes()).unwrap() {
                AuthMessage::InitialRequest(r) => r.identity_key,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(read(&key.to_hex()), WireKey::Key(key));
        assert_eq!(read(&key.to_hex().to_uppercase()).key(), Some(&key));
        assert_eq!(read("nothex"), WireKey::Unreadable("nothex".into()));
        assert_eq!(read("nothex").to_string(), "nothex");
        assert_eq!(read(&key.to_hex()).to_string(), key.to_hex());
    }

    #[test]
    fn handshake_headers_in_middleware_order() {
        let m = AuthMessage::CertificateResponse(CertificateResponse {
            identity_key: "02ab".into(),
            nonce: Some("n".into()),
            initial_nonce: Some("i".into()),
            your_nonce: Some("y".into()),
            certificates: Some(Vec::new()),
            signature: Some(vec![0x30, 0x01]),
        });
        let h = m.handshake_headers();
        let names: Vec<&str> = h.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, [H_VERSION, H_MESSAGE_TYPE, H_IDENTITY_KEY, H_NONCE, H_YOUR_NONCE, H_SIGNATURE]);
        assert_eq!(h[1].1, "certificateResponse");
        assert_eq!(h[5].1, "3001");
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        let cases: &[&[u8]] = &[
            b"",
            b"[]",
            b"{",
            b"null",
            br#"{"version":"0.1"}"#,
            br#"{"version":"0.1","messageType":"bogus","identityKey":"x"}"#,
            br#"{"version":"0.1","messageType":"general","identityKey":5}"#,
            br#"{"version":"0.1","messageType":"general","identityKey":"x","payload":[256]}"#,
            br#"{"version":"0.1","messageType":"general","identityKey":"x","payload":[-1]}"#,
            br#"{"version":"0.1","messageType":"general","identityKey":"x","signature":"3044"}"#,
            br#"{"version":"0.1","messageType":"general","identityKey":"x","nonce":7}"#,
            // Fields a type does not carry are still type-checked, as before the types split.
            br#"{"version":"0.1","messageType":"initialRequest","identityKey":"x","payload":[256]}"#,
            br#"{"version":"0.1","messageType":"general","identityKey":"x","certificates":{}}"#,
        ];
        for c in cases {
            assert!(
                matches!(AuthMessage::from_json(c), Err(MessageError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
        assert_eq!(
            AuthMessage::from_json(br#"{"version":"0.2","messageType":"general","identityKey":"x"}"#),
            Err(MessageError::Version("0.2".into()))
        );
        assert_eq!(
            AuthMessage::from_json(br#"{"messageType":"general","identityKey":"x"}"#).unwrap_err().to_string(),
            "Invalid or unsupported message auth version! Received: undefined, expected: 0.1"
        );
    }

    #[test]
    fn certificate_request_detection() {
        assert!(!requests_certificates(None));
        assert!(!requests_certificates(Some(&empty_certificate_set())));
        assert!(requests_certificates(Some(&serde_json::json!({"certifiers":["02ab"],"types":{}}))));
    }
}
