//! The BRC-103 `AuthMessage` in its JSON form (HTTP handshake bodies, `authMessage` socket
//! events). Byte arrays are JSON arrays of numbers; fields are emitted in the order the TS
//! `Peer` builds them, absent fields are omitted.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// One BRC-103 message. Field order is the serialisation order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthMessage {
    pub version: String,
    pub message_type: MessageType,
    pub identity_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub your_nonce: Option<String>,
    /// VerifiableCertificate objects, kept as JSON (the server requests none and holds none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<Value>>,
    /// `{"certifiers":[…],"types":{…}}`, kept as JSON so it re-serialises as `JSON.stringify` did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_certificates: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Vec<u8>>,
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
        serde_json::from_value(value).map_err(|e| MessageError::Malformed(e.to_string()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an AuthMessage always serialises")
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).expect("an AuthMessage always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_sdk_field_order() {
        let m = AuthMessage {
            version: AUTH_VERSION.into(),
            message_type: MessageType::InitialResponse,
            identity_key: "02ab".into(),
            nonce: None,
            initial_nonce: Some("Ns".into()),
            your_nonce: Some("Nc".into()),
            certificates: None,
            requested_certificates: Some(empty_certificate_set()),
            payload: None,
            signature: Some(vec![48, 1, 255]),
        };
        let json = m.to_json();
        assert_eq!(
            json,
            r#"{"version":"0.1","messageType":"initialResponse","identityKey":"02ab","initialNonce":"Ns","yourNonce":"Nc","requestedCertificates":{"certifiers":[],"types":{}},"signature":[48,1,255]}"#
        );
        assert_eq!(AuthMessage::from_json(json.as_bytes()).unwrap(), m);
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
