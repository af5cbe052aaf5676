//! Socket.IO protocol 5 packets, the subset these clients use: namespace `/` only, string
//! events, acks parsed and ignored, no binary attachments.
//!
//! This module owns the packet codec (`<type>[<nsp>,][<ack id>][<JSON>]`, socket.io-parser
//! 4.2's rules, including its payload checks) and the few packets the server writes. The
//! connection state (connected or not, what an unexpected packet does) lives in
//! [`super::connection`]. JSON is written as `JSON.stringify` writes it: compact, non-ASCII as
//! raw UTF-8.

use serde_json::value::RawValue;
use serde_json::Value;

use super::engineio::json_string;

/// The only namespace served.
pub const DEFAULT_NAMESPACE: &str = "/";

/// Event names the parser refuses as the first element of an EVENT.
const RESERVED_EVENTS: [&str; 6] =
    ["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Connect = 0,
    Disconnect = 1,
    Event = 2,
    Ack = 3,
    ConnectError = 4,
    BinaryEvent = 5,
    BinaryAck = 6,
}

/// One decoded Socket.IO packet.
#[derive(Debug, Clone)]
pub enum Packet {
    /// `0`: `auth` is the optional object payload (ignored by this server).
    Connect { nsp: String, auth: Option<Value> },
    /// `1`.
    Disconnect { nsp: String },
    /// `2`: `name` is the first array element when it is a string; `args` are the rest.
    /// An EVENT without a payload, or whose first element is a number, has no name.
    Event { nsp: String, id: Option<u64>, name: Option<String>, args: Vec<Box<RawValue>> },
    /// `3`: an acknowledgement (the server never asks for one; ignored).
    Ack { nsp: String, id: Option<u64>, args: Vec<Box<RawValue>> },
    /// `4`: server to client only; a client sending it is in an invalid state.
    ConnectError { nsp: String, data: Value },
}

/// Why a Socket.IO packet could not be read. The connection that sent it is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty socket.io packet")]
    Empty,
    #[error("unknown socket.io packet type {0:?}")]
    UnknownType(char),
    #[error("binary socket.io packets are not supported")]
    Binary,
    #[error("invalid socket.io payload for a {0:?} packet")]
    InvalidPayload(PacketType),
}

impl Packet {
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect { .. } => PacketType::Connect,
            Packet::Disconnect { .. } => PacketType::Disconnect,
            Packet::Event { .. } => PacketType::Event,
            Packet::Ack { .. } => PacketType::Ack,
            Packet::ConnectError { .. } => PacketType::ConnectError,
        }
    }

    pub fn namespace(&self) -> &str {
        match self {
            Packet::Connect { nsp, .. }
            | Packet::Disconnect { nsp }
            | Packet::Event { nsp, .. }
            | Packet::Ack { nsp, .. }
            | Packet::ConnectError { nsp, .. } => nsp,
        }
    }

    /// Decodes the data of one engine.io message packet, as socket.io-parser's
    /// `decodeString` does (type, namespace up to `,`, ack id digits, JSON rest).
    pub fn decode(s: &str) -> Result<Packet, DecodeError> {
        let ty = match s.as_bytes().first() {
            None => return Err(DecodeError::Empty),
            Some(b'0') => PacketType::Connect,
            Some(b'1') => PacketType::Disconnect,
            Some(b'2') => PacketType::Event,
            Some(b'3') => PacketType::Ack,
            Some(b'4') => PacketType::ConnectError,
            Some(b'5' | b'6') => return Err(DecodeError::Binary),
            Some(_) => return Err(DecodeError::UnknownType(s.chars().next().unwrap_or_default())),
        };
        let mut rest = &s[1..];
        let nsp = if rest.starts_with('/') {
            match rest.find(',') {
                Some(i) => {
                    let n = &rest[..i];
                    rest = &rest[i + 1..];
                    n
                }
                None => std::mem::take(&mut rest),
            }
        } else {
            DEFAULT_NAMESPACE
        }
        .to_string();
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id = (digits > 0).then(|| {
            // JS reads it as a Number; an absurd id is kept saturated (acks are ignored anyway).
            rest[..digits].bytes().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0')))
        });
        rest = &rest[digits..];
        let bad = || DecodeError::InvalidPayload(ty);
        let json = (!rest.is_empty()).then_some(rest);

        Ok(match ty {
            PacketType::Connect => {
                let auth = match json {
                    None => None,
                    Some(j) => match serde_json::from_str::<Value>(j) {
                        Ok(v @ Value::Object(_)) => Some(v),
                        _ => return Err(bad()),
                    },
                };
                Packet::Connect { nsp, auth }
            }
            PacketType::Disconnect => {
                if json.is_some() {
                    return Err(bad());
                }
                Packet::Disconnect { nsp }
            }
            PacketType::Event => {
                let Some(j) = json else {
                    return Ok(Packet::Event { nsp, id, name: None, args: Vec::new() });
                };
                let mut items: Vec<Box<RawValue>> = serde_json::from_str(j).map_err(|_| bad())?;
                if items.is_empty() {
                    return Err(bad());
                }
                let first = items.remove(0);
                let name = match serde_json::from_str::<Value>(first.get()) {
                    Ok(Value::String(n)) if !RESERVED_EVENTS.contains(&n.as_str()) => Some(n),
                    Ok(Value::Number(_)) => {
                        // A numeric first element is not a name; it stays an argument.
                        items.insert(0, first);
                        None
                    }
                    _ => return Err(bad()),
                };
                Packet::Event { nsp, id, name, args: items }
            }
            PacketType::Ack => {
                let args = match json {
                    None => Vec::new(),
                    Some(j) => serde_json::from_str::<Vec<Box<RawValue>>>(j).map_err(|_| bad())?,
                };
                Packet::Ack { nsp, id, args }
            }
            PacketType::ConnectError => {
                let data = match json.map(serde_json::from_str::<Value>) {
                    None => Value::Null,
                    Some(Ok(v @ (Value::Object(_) | Value::String(_)))) => v,
                    Some(_) => return Err(bad()),
                };
                Packet::ConnectError { nsp, data }
            }
            PacketType::BinaryEvent | PacketType::BinaryAck => return Err(DecodeError::Binary),
        })
    }

    /// The wire form, as socket.io-parser's encoder writes it.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        out.push(char::from(b'0' + self.packet_type() as u8));
        let nsp = self.namespace();
        if nsp != DEFAULT_NAMESPACE {
            out.push_str(nsp);
            out.push(',');
        }
        let id = match self {
            Packet::Event { id, .. } | Packet::Ack { id, .. } => *id,
            _ => None,
        };
        if let Some(id) = id {
            out.push_str(&id.to_string());
        }
        match self {
            Packet::Connect { auth: Some(a), .. } => out.push_str(&a.to_string()),
            Packet::Connect { auth: None, .. } | Packet::Disconnect { .. } => {}
            Packet::Event { name, args, .. } => {
                push_array(&mut out, name.as_deref().map(json_string).as_deref(), args);
            }
            Packet::Ack { args, .. } => push_array(&mut out, None, args),
            Packet::ConnectError { data, .. } => {
                if !data.is_null() {
                    out.push_str(&data.to_string());
                }
            }
        }
        out
    }
}

fn push_array(out: &mut String, first: Option<&str>, rest: &[Box<RawValue>]) {
    out.push('[');
    let mut sep = false;
    for item in first.into_iter().chain(rest.iter().map(|r| r.get())) {
        if sep {
            out.push(',');
        }
        out.push_str(item);
        sep = true;
    }
    out.push(']');
}

/// `0{"sid":"<socket id>"}`: the CONNECT reply for namespace `/`.
pub fn connect_reply(socket_id: &str) -> String {
    format!(r#"0{{"sid":{}}}"#, json_string(socket_id))
}

/// `4<nsp>,{"message":"Invalid namespace"}`: refuses a CONNECT to any namespace but `/`.
pub fn invalid_namespace(nsp: &str) -> String {
    let mut out = String::from("4");
    if nsp != DEFAULT_NAMESPACE {
        out.push_str(nsp);
        out.push(',');
    }
    out.push_str(r#"{"message":"Invalid namespace"}"#);
    out
}

/// `1`: DISCONNECT of namespace `/` (sent before closing to stop the client reconnecting).
pub fn disconnect() -> String {
    "1".to_string()
}

/// `2["<name>",<arg>]` for namespace `/`, `arg` being JSON text.
pub fn event(name: &str, arg_json: &str) -> String {
    let name = json_string(name);
    let mut out = String::with_capacity(4 + name.len() + arg_json.len());
    out.push_str("2[");
    out.push_str(&name);
    out.push(',');
    out.push_str(arg_json);
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    #[test]
    fn connect_forms() {
        assert!(matches!(Packet::decode("0"), Ok(Packet::Connect { nsp, auth: None }) if nsp == "/"));
        let p = Packet::decode(r#"0{"token":"x"}"#).unwrap();
        assert!(matches!(&p, Packet::Connect { nsp, auth: Some(a) } if nsp == "/" && a["token"] == "x"));
        assert!(matches!(Packet::decode("0/mb,"), Ok(Packet::Connect { nsp, auth: None }) if nsp == "/mb"));
        assert!(matches!(Packet::decode("0/mb"), Ok(Packet::Connect { nsp, auth: None }) if nsp == "/mb"));
        assert!(
            matches!(Packet::decode(r#"0/a/b,{"k":1}"#), Ok(Packet::Connect { nsp, auth: Some(_) }) if nsp == "/a/b")
        );
        for bad in ["0[]", "0\"s\"", "0{", "07x", "0null"] {
            assert_eq!(Packet::decode(bad).unwrap_err(), DecodeError::InvalidPayload(PacketType::Connect), "{bad}");
        }
    }

    #[test]
    fn event_forms() {
        let p = Packet::decode(r#"2["authMessage",{"a":[1,2]}]"#).unwrap();
        let Packet::Event { nsp, id, name, args } = p else { panic!() };
        assert_eq!((nsp.as_str(), id, name.as_deref()), ("/", None, Some("authMessage")));
        assert_eq!(args.len(), 1);
        assert_eq!(args[0].get(), r#"{"a":[1,2]}"#);

        // Ack ids are parsed (and ignored by the server).
        let p = Packet::decode(r#"212["x","y",3]"#).unwrap();
        assert!(matches!(&p, Packet::Event { id: Some(12), name: Some(n), args, .. } if n == "x" && args.len() == 2));
        let p = Packet::decode(r#"2/ns,7["x"]"#).unwrap();
        assert!(matches!(&p, Packet::Event { nsp, id: Some(7), .. } if nsp == "/ns"));
        // A numeric first element is allowed and is not a name.
        let p = Packet::decode("2[5,6]").unwrap();
        assert!(matches!(&p, Packet::Event { name: None, args, .. } if args.len() == 2));
        // No payload at all decodes (socket.io dispatches nothing).
        assert!(matches!(Packet::decode("2"), Ok(Packet::Event { name: None, .. })));
        // Huge ack ids saturate instead of failing.
        assert!(matches!(
            Packet::decode(r#"299999999999999999999999["x"]"#),
            Ok(Packet::Event { id: Some(u64::MAX), .. })
        ));

        for bad in
            [r#"2[]"#, r#"2{}"#, r#"2["connect"]"#, r#"2["disconnect",1]"#, r#"2[null]"#, r#"2[true]"#, "2[", "2x"]
        {
            assert_eq!(Packet::decode(bad).unwrap_err(), DecodeError::InvalidPayload(PacketType::Event), "{bad}");
        }
    }

    #[test]
    fn other_types() {
        assert!(matches!(Packet::decode("1"), Ok(Packet::Disconnect { nsp }) if nsp == "/"));
        assert!(matches!(Packet::decode("1/x,"), Ok(Packet::Disconnect { nsp }) if nsp == "/x"));
        assert_eq!(Packet::decode("1{}").unwrap_err(), DecodeError::InvalidPayload(PacketType::Disconnect));
        assert!(matches!(Packet::decode("33[1]"), Ok(Packet::Ack { id: Some(3), args, .. }) if args.len() == 1));
        assert!(matches!(Packet::decode("3"), Ok(Packet::Ack { id: None, .. })));
        assert_eq!(Packet::decode("3{}").unwrap_err(), DecodeError::InvalidPayload(PacketType::Ack));
        assert!(matches!(Packet::decode(r#"4{"message":"m"}"#), Ok(Packet::ConnectError { .. })));
        assert!(matches!(Packet::decode(r#"4"m""#), Ok(Packet::ConnectError { .. })));
        assert_eq!(Packet::decode("4[1]").unwrap_err(), DecodeError::InvalidPayload(PacketType::ConnectError));
        assert_eq!(Packet::decode(r#"51-["e",{"_placeholder":true,"num":0}]"#).unwrap_err(), DecodeError::Binary);
        assert_eq!(Packet::decode("6").unwrap_err(), DecodeError::Binary);
        assert_eq!(Packet::decode("").unwrap_err(), DecodeError::Empty);
        assert_eq!(Packet::decode("7").unwrap_err(), DecodeError::UnknownType('7'));
        assert_eq!(Packet::decode("é").unwrap_err(), DecodeError::UnknownType('é'));
    }

    #[test]
    fn encode_decode_round_trip() {
        let packets = vec![
            Packet::Connect { nsp: "/".into(), auth: None },
            Packet::Connect { nsp: "/x".into(), auth: Some(serde_json::json!({"a": 1, "b": "é"})) },
            Packet::Disconnect { nsp: "/".into() },
            Packet::Disconnect { nsp: "/other".into() },
            Packet::Event {
                nsp: "/".into(),
                id: None,
                name: Some("authMessage".into()),
                args: vec![raw(r#"{"k":"v"}"#)],
            },
            Packet::Event {
                nsp: "/n".into(),
                id: Some(42),
                name: Some("e \"q\"".into()),
                args: vec![raw("1"), raw("[]")],
            },
            Packet::Event { nsp: "/".into(), id: None, name: None, args: vec![raw("3")] },
            Packet::Event { nsp: "/".into(), id: Some(0), name: Some("zero-id".into()), args: vec![] },
            Packet::Ack { nsp: "/".into(), id: Some(9), args: vec![raw("null")] },
            Packet::ConnectError { nsp: "/p".into(), data: serde_json::json!({"message": "Invalid namespace"}) },
            Packet::ConnectError { nsp: "/".into(), data: serde_json::json!("text") },
        ];
        for p in packets {
            let wire = p.encode();
            let back = Packet::decode(&wire).unwrap_or_else(|e| panic!("{wire}: {e}"));
            assert_eq!(back.encode(), wire);
            assert_eq!(back.packet_type(), p.packet_type());
            assert_eq!(back.namespace(), p.namespace());
        }
    }

    #[test]
    fn server_packets_are_byte_exact() {
        assert_eq!(connect_reply("CIXbqSky7qDG39ymAAAA"), r#"0{"sid":"CIXbqSky7qDG39ymAAAA"}"#);
        assert_eq!(invalid_namespace("/prefix"), r#"4/prefix,{"message":"Invalid namespace"}"#);
        assert_eq!(invalid_namespace("/"), r#"4{"message":"Invalid namespace"}"#);
        assert_eq!(disconnect(), "1");
        assert_eq!(event("authMessage", r#"{"v":"é ✓"}"#), r#"2["authMessage",{"v":"é ✓"}]"#);
        assert_eq!(event("a\"b", "1"), r#"2["a\"b",1]"#);
    }
}
