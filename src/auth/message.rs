//! The BRC-103 `AuthMessage`: one type per message type, each with only the fields that type
//! carries, and their JSON form (HTTP handshake bodies, `authMessage` socket events).
//!
//! The JSON form is the TS `Peer`'s: byte arrays are JSON arrays of numbers, fields come in
//! the order `Peer` builds them, absent fields are omitted. Reading is as lenient as the SDK:
//! every field the protocol knows is type-checked whatever the message type, then only the
//! fields of the message's type are kept. A field a type requires may still be absent here;
//! the handler refuses it in the SDK's order of checks, with the SDK's words.
//!
//! Reading is typed ([`Typed`]: fields straight into strings, byte arrays scanned into byte
//! vectors, no `Value` tree); a message it does not accept is read again through `Value`, which gives the
//! verdict and the error text, so the typed reader only decides how fast a good message is
//! read, never what is accepted. Writing ([`AuthMessage::to_json`]) writes the bytes
//! `serde_json` would write for [`AuthMessage`]'s `Serialize`, with byte arrays written by
//! [`crate::json::write_bytes`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::keys::PublicKey;
use super::payload::{
    H_IDENTITY_KEY, H_MESSAGE_TYPE, H_NONCE, H_REQUESTED_CERTIFICATES, H_SIGNATURE, H_VERSION, H_YOUR_NONCE,
};
use crate::json::{parse_byte_array, write_bytes, AnyJson};

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

impl WireOut<'_> {
    /// `serde_json`'s compact form of this struct's `Serialize`, field for field.
    fn write_json(&self, out: &mut Vec<u8>) {
        fn string(out: &mut Vec<u8>, name: &str, s: &str) {
            out.extend_from_slice(name.as_bytes());
            serde_json::to_writer(&mut *out, s).expect("writing a string to a Vec cannot fail");
        }
        fn value(out: &mut Vec<u8>, name: &str, v: &impl Serialize) {
            out.extend_from_slice(name.as_bytes());
            serde_json::to_writer(&mut *out, v).expect("a JSON value always serialises");
        }
        string(out, "{\"version\":", self.version);
        string(out, ",\"messageType\":", self.message_type.as_str());
        string(out, ",\"identityKey\":", &self.identity_key);
        for (name, field) in [
            (",\"nonce\":", self.nonce),
            (",\"initialNonce\":", self.initial_nonce),
            (",\"yourNonce\":", self.your_nonce),
        ] {
            if let Some(s) = field {
                string(out, name, s);
            }
        }
        if let Some(c) = self.certificates {
            value(out, ",\"certificates\":", &c);
        }
        if let Some(r) = self.requested_certificates {
            value(out, ",\"requestedCertificates\":", r);
        }
        for (name, field) in [(",\"payload\":", self.payload), (",\"signature\":", self.signature)] {
            if let Some(b) = field {
                out.extend_from_slice(name.as_bytes());
                write_bytes(out, b);
            }
        }
        out.push(b'}');
    }
}

/// The typed reader of [`AuthMessage::from_json`]: one pass into [`WireIn`], no `Value` tree.
/// It accepts only what the `Value` reading accepts with the same result, and refuses the
/// rest (which is then read through `Value`): the version must be the string `"0.1"`, the
/// message type one of the five names, each known field appear at most once (`Value` keeps
/// the last of a repeated key; the fallback does that), and unknown fields are walked with
/// [`AnyJson`] so they are held to `Value`'s limits.
struct Typed(WireIn);

impl<'de> Deserialize<'de> for Typed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Typed, D::Error> {
        d.deserialize_map(TypedVisitor)
    }
}

struct TypedVisitor;

/// Stores a field read once; a second occurrence is refused.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

/// A byte-array field as read: `null` is absent; anything but a `number[]` of bytes is refused.
fn bytes<E: de::Error>(raw: Option<&RawValue>) -> Result<Option<Vec<u8>>, E> {
    raw.map(|r| parse_byte_array(r.get()).ok_or_else(|| E::custom("not an array of byte values"))).transpose()
}

impl<'de> Visitor<'de> for TypedVisitor {
    type Value = Typed;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a BRC-103 message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Typed, A::Error> {
        let mut version: Option<crate::json::CowStr<'de>> = None;
        let mut message_type = None;
        let mut identity_key = None;
        // `Some(None)`: present as `null`, read as absent, as `Option`'s `Deserialize` does.
        let (mut nonce, mut initial_nonce, mut your_nonce) = (None, None, None);
        let (mut certificates, mut requested_certificates) = (None, None);
        let (mut payload, mut signature) = (None, None);
        while let Some(key) = map.next_key::<crate::json::CowStr<'de>>()? {
            match &*key.0 {
                "version" => once(&mut version, map.next_value()?, "version")?,
                "messageType" => {
                    let name: crate::json::CowStr<'de> = map.next_value()?;
                    let t = match &*name.0 {
                        "initialRequest" => MessageType::InitialRequest,
                        "initialResponse" => MessageType::InitialResponse,
                        "certificateRequest" => MessageType::CertificateRequest,
                        "certificateResponse" => MessageType::CertificateResponse,
                        "general" => MessageType::General,
                        other => return Err(de::Error::unknown_variant(other, &[])),
                    };
                    once(&mut message_type, t, "messageType")?
                }
                "identityKey" => once(&mut identity_key, map.next_value::<String>()?, "identityKey")?,
                "nonce" => once(&mut nonce, map.next_value::<Option<String>>()?, "nonce")?,
                "initialNonce" => once(&mut initial_nonce, map.next_value::<Option<String>>()?, "initialNonce")?,
                "yourNonce" => once(&mut your_nonce, map.next_value::<Option<String>>()?, "yourNonce")?,
                "certificates" => once(&mut certificates, map.next_value::<Option<Vec<Value>>>()?, "certificates")?,
                "requestedCertificates" => {
                    once(&mut requested_certificates, map.next_value::<Option<Value>>()?, "requestedCertificates")?
                }
                "payload" => once(&mut payload, bytes(map.next_value()?)?, "payload")?,
                "signature" => once(&mut signature, bytes(map.next_value()?)?, "signature")?,
                _ => {
                    map.next_value::<AnyJson>()?;
                }
            }
        }
        match version {
            Some(v) if v.0 == AUTH_VERSION => {}
            _ => return Err(de::Error::custom("not version 0.1")),
        }
        Ok(Typed(WireIn {
            message_type: message_type.ok_or_else(|| de::Error::missing_field("messageType"))?,
            identity_key: identity_key.ok_or_else(|| de::Error::missing_field("identityKey"))?,
            nonce: nonce.flatten(),
            initial_nonce: initial_nonce.flatten(),
            your_nonce: your_nonce.flatten(),
            certificates: certificates.flatten(),
            requested_certificates: requested_certificates.flatten(),
            payload: payload.flatten(),
            signature: signature.flatten(),
        }))
    }
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
        match serde_json::from_slice::<Typed>(bytes) {
            Ok(Typed(wire)) => Ok(wire.into_message()),
            // Refused or unusual (a repeated field): `Value` decides, with its error text.
            Err(_) => Self::from_json_value(bytes),
        }
    }

    /// [`Self::from_json`] through a `Value` tree: the reference the typed reader agrees with
    /// (and the baseline of `benches/live.rs`).
    pub fn from_json_value(bytes: &[u8]) -> Result<AuthMessage, MessageError> {
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

    /// The JSON text: the bytes `serde_json::to_string(self)` writes, without its per-element
    /// serializer calls for the byte arrays.
    pub fn to_json(&self) -> String {
        let w = self.wire();
        let mut out = Vec::with_capacity(160 + w.payload.map_or(0, |p| p.len() * 4));
        w.write_json(&mut out);
        String::from_utf8(out).expect("serde_json and write_bytes write UTF-8")
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

    /// The typed reader accepts a document only with the `Value` reading's result, and the
    /// messages peers really send take it.
    #[test]
    fn typed_reading_agrees_with_value_reading() {
        use rand::{Rng, SeedableRng};
        let typed = |b: &[u8]| serde_json::from_slice::<Typed>(b).ok().map(|t| t.0.into_message());
        let key = PrivateKey::from_bytes(&[5; 32]).unwrap().public_key().to_hex();
        let general = format!(
            r#"{{"version":"0.1","messageType":"general","identityKey":"{key}","nonce":"bm9uY2U=","yourNonce":"eW91cg==","payload":[123,34,101,0,255,9],"signature":[48,69,2,33]}}"#
        );
        let request = format!(
            r#"{{"version":"0.1","messageType":"initialRequest","identityKey":"{key}","initialNonce":"aW5pdA==","requestedCertificates":{{"certifiers":[],"types":{{}}}}}}"#
        );
        for real in [&general, &request] {
            let m = typed(real.as_bytes()).expect("the typed reader takes a real message");
            assert_eq!(Ok(m), AuthMessage::from_json_value(real.as_bytes()));
        }
        let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
        let variants = [
            general.replace(r#""nonce""#, r#""extra":{"a":[1,2,{"b":null}]},"nonce""#),
            general.replace(r#""nonce""#, r#""nonce":null,"nonce""#),
            general.replace(r#""nonce""#, r#""payload":"x","nonce""#),
            general.replace(r#""version":"0.1""#, r#""version":"0.2","version":"0.1""#),
            general.replace(r#""version":"0.1""#, r#""version":null"#),
            general.replace(r#""version":"0.1","#, ""),
            general.replace(r#""messageType":"general""#, r#""messageType":{"general":null}"#),
            general.replace(r#""messageType":"general""#, r#""messageType":"General""#),
            general.replace(r#""nonce""#, r#""payl\u006fad":[1],"nonce""#),
            general.replace(r#""nonce""#, &format!(r#""x":{deep},"nonce""#)),
            general.replace(r#""nonce""#, r#""x":"\ud800","nonce""#),
            general.replace(r#""nonce""#, r#""x":1e400,"nonce""#),
            general.replace("[123,", "[1.0,"),
            general.replace("[123,", "[-0,"),
            general.replace("[123,", "[ 123 ,"),
            general.replace(r#""payload":[123,34,101,0,255,9]"#, r#""payload":null"#),
            general.replace(r#""identityKey""#, r#""identityKey":null,"identityKey""#),
            general.replace(r#""yourNonce":"eW91cg==""#, r#""yourNonce":"\u00e9\n""#),
            request.replace(r#""types":{}"#, r#""types":{"a":["b"]},"x":[1e5]"#),
            request.replace(r#""requestedCertificates""#, r#""certificates":[{"a":1}],"requestedCertificates""#),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        let mut docs: Vec<Vec<u8>> = variants.iter().map(|v| v.clone().into_bytes()).collect();
        for _ in 0..20_000 {
            let mut d = if rng.random() { general.clone().into_bytes() } else { request.clone().into_bytes() };
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..d.len());
                match rng.random_range(0..3) {
                    0 => {
                        let alphabet = b"{}[],:\"\\0123456789.-eu ntl";
                        d[i] = alphabet[rng.random_range(0..alphabet.len())];
                    }
                    1 => {
                        d.remove(i);
                    }
                    _ => d.insert(i, b",:\"[]{}1"[rng.random_range(0..8)]),
                }
            }
            docs.push(d);
        }
        let mut taken = 0;
        for d in &docs {
            let reference = AuthMessage::from_json_value(d);
            assert_eq!(AuthMessage::from_json(d), reference, "{}", String::from_utf8_lossy(d));
            if let Some(m) = typed(d) {
                taken += 1;
                assert_eq!(Ok(m), reference, "{}", String::from_utf8_lossy(d));
            }
        }
        assert!(taken > 1000, "the typed reader took {taken} of {}", docs.len());
    }

    /// `to_json` writes the bytes `serde_json` writes for the message.
    #[test]
    fn written_json_is_serde_json_output() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut messages = Vec::new();
        for i in 0..200 {
            let payload: Vec<u8> = (0..rng.random_range(0..600)).map(|_| rng.random()).collect();
            let odd = ["é\"\\\n\u{1}\u{7f}\u{2028}", "plain", ""][i % 3].to_string();
            messages.push(AuthMessage::General(General {
                identity_key: format!("02{odd}"),
                nonce: Some(odd.clone()),
                your_nonce: (i % 2 == 0).then(|| "y".into()),
                payload: Some(payload),
                signature: (i % 5 != 0).then(|| vec![0, 9, 10, 99, 100, 255]),
            }));
            messages.push(AuthMessage::CertificateResponse(CertificateResponse {
                identity_key: odd.clone(),
                nonce: None,
                initial_nonce: Some(odd.clone()),
                your_nonce: Some("y".into()),
                certificates: Some(vec![serde_json::json!({"type": odd, "n": 1.5, "a": [1, null]})]),
                signature: Some(Vec::new()),
            }));
            messages.push(AuthMessage::InitialRequest(InitialRequest {
                identity_key: WireKey::Unreadable(odd.clone()),
                initial_nonce: None,
                requested_certificates: Some(serde_json::json!({"certifiers": [odd], "types": {"t": []}})),
            }));
        }
        for m in &messages {
            let json = m.to_json();
            assert_eq!(json, serde_json::to_string(m).unwrap());
            assert_eq!(AuthMessage::from_json(json.as_bytes()).unwrap(), *m);
        }
    }

    #[test]
    fn certificate_request_detection() {
        assert!(!requests_certificates(None));
        assert!(!requests_certificates(Some(&empty_certificate_set())));
        assert!(requests_certificates(Some(&serde_json::json!({"certifiers":["02ab"],"types":{}}))));
    }
}
