//! The remote wallet storage's wire protocol, as `@bsv/wallet-toolbox`'s `StorageClient`
//! speaks it to a `StorageServer` (spec payments-ship.md §2), with no I/O: requests come out
//! as bytes, answers go in as bytes, failures come back as [`StorageError`].
//!
//! - BRC-103 in the client role ([`ClientIdentity`] / [`ClientSession`] of our auth core):
//!   the handshake goes to the origin's `/.well-known/auth`, every JSON-RPC call is signed and
//!   every answer's signature checked.
//! - JSON-RPC 2.0 over `POST <WALLET_STORAGE_URL>`: `makeAvailable`, `findOrInsertUser`,
//!   `internalizeAction`, with positional params.
//! - Bodies are written so that `JSON.stringify(JSON.parse(body))` gives the same bytes: the
//!   storage's auth middleware checks our signature over exactly that ([`js_canonical`]).

use http::Uri;
use serde_json::{Map, Value};

use super::Internalize;
use crate::auth::{AuthError, AuthMessage, ClientIdentity, ClientSession, PendingHandshake};
use crate::domain::js;
use crate::outbound::{Reply, RequestError, UrlError};

/// `WALLET_STORAGE_URL` when it is not set: wallet-toolbox's own defaults (§2.5), chosen
/// by `BSV_NETWORK` as the original does (exactly `testnet` is the test chain).
pub fn default_url(testnet: bool) -> &'static str {
    if testnet {
        "https://staging-storage.babbage.systems"
    } else {
        "https://storage.babbage.systems"
    }
}

/// The text of the toolbox's `WERR_NOT_ACTIVE`: the storage is not the server identity's
/// active storage, so the original's wallet refuses to write to it.
pub const NOT_ACTIVE: &str =
    "WalletStorageManager is not accessing user's active storage or there are conflicting active stores configured.";

/// Why a call to the storage failed. [`Self::unavailable`] splits "could not talk to it"
/// (503 to the sender) from "it answered no" (500 `ERR_INTERNALIZE_FAILED`, as the original).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No answer: refused connection, DNS, TLS, timeout.
    #[error("wallet storage unreachable: {0}")]
    Unreachable(#[source] RequestError),
    #[error("wallet storage did not answer within {} ms", .0.as_millis())]
    TimedOut(std::time::Duration),
    /// More paid sends wait for the storage than its queue holds.
    #[error("too many paid sends are waiting for the wallet storage")]
    Busy,
    /// The storage client's thread is gone (the server is stopping).
    #[error("the wallet storage client stopped")]
    Stopped,
    /// `/.well-known/auth` answered, but not with a handshake we can accept.
    #[error("wallet storage handshake failed: HTTP {status}: {body}")]
    HandshakeRefused { status: u16, body: String },
    #[error("wallet storage handshake failed: {0}")]
    Handshake(#[source] AuthError),
    /// An answer without BRC-104 headers (a 401 for a session the storage forgot, or an
    /// error page of a proxy in front of it).
    #[error("wallet storage answered HTTP {status} without authentication: {body}")]
    Unsigned { status: u16, body: String },
    #[error("wallet storage answer does not verify: {0}")]
    BadSignature(#[source] AuthError),
    #[error("cannot sign the wallet storage request: {0}")]
    Sign(#[source] AuthError),
    /// A signed answer with a non-2xx status: the original's `StorageClient` text.
    #[error("WalletStorageClient rpcCall: network error {status} {reason}")]
    Status { status: u16, reason: &'static str },
    #[error("wallet storage answered HTTP {status} with a body that is not JSON-RPC")]
    NotJsonRpc { status: u16 },
    /// The storage's own error (`{"isError":true,"name":"WERR_…","message":…}`); its text is
    /// the message, as the original's `Failed to internalize payment: <message>` shows it.
    #[error("{message}")]
    Rpc { name: String, message: String },
    #[error("{NOT_ACTIVE}")]
    NotActive,
    /// A result without the fields the method returns.
    #[error("wallet storage answered {method} with an unexpected result: {result}")]
    BadResult { method: &'static str, result: String },
}

impl StorageError {
    /// True when the storage could not be talked to (try again later), false when it
    /// answered and refused or failed.
    pub fn unavailable(&self) -> bool {
        use StorageError::*;
        match self {
            Unreachable(_)
            | TimedOut(_)
            | Busy
            | Stopped
            | HandshakeRefused { .. }
            | Handshake(_)
            | Unsigned { .. } => true,
            BadSignature(_)
            | Sign(_)
            | Status { .. }
            | NotJsonRpc { .. }
            | Rpc { .. }
            | NotActive
            | BadResult { .. } => false,
        }
    }
}

/// Where the storage is: `rpc`, the URL exactly as configured (JSON-RPC is posted there),
/// and `auth`, its origin's `/.well-known/auth` (AuthFetch ignores the path for handshakes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub rpc: String,
    pub auth: String,
    /// Path and query of `rpc`, as BRC-104 signs them (`/` when the URL has no path).
    pub target: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        crate::outbound::validate_url(url)?;
        let uri: Uri = url.parse().map_err(|source| UrlError::Invalid { url: url.to_string(), source })?;
        let scheme = uri.scheme_str().unwrap_or("https");
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let target = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") => "/".to_string(),
            Some(p) if p.starts_with('?') => format!("/{p}"),
            Some(p) => p.to_string(),
        };
        Ok(Endpoint { rpc: url.to_string(), auth: format!("{scheme}://{authority}/.well-known/auth"), target })
    }
}

/// An HTTP request to send as it is.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

const JSON: &str = "application/json";

/// The handshake's `initialRequest` (POST, JSON, as AuthFetch sends it).
pub fn handshake_request(me: &ClientIdentity, endpoint: &Endpoint) -> (HttpRequest, PendingHandshake) {
    let (msg, pending) = me.start_handshake();
    let request = HttpRequest {
        url: endpoint.auth.clone(),
        headers: vec![("content-type".into(), JSON.into())],
        body: msg.to_json().into_bytes(),
    };
    (request, pending)
}

/// Checks the `initialResponse` and returns the session.
pub fn finish_handshake(
    me: &ClientIdentity,
    pending: PendingHandshake,
    reply: &Reply,
) -> Result<ClientSession, StorageError> {
    if reply.status != 200 {
        return Err(StorageError::HandshakeRefused { status: reply.status, body: excerpt(&reply.body) });
    }
    let msg = AuthMessage::from_json(&reply.body).map_err(|e| StorageError::Handshake(e.into()))?;
    pending.finish(me, &msg).map_err(StorageError::Handshake)
}

/// One signed JSON-RPC call awaiting its answer.
#[derive(Debug, Clone)]
pub struct RpcCall {
    pub method: &'static str,
    pub id: u64,
    request_id: [u8; 32],
}

/// The JSON-RPC envelope `{"jsonrpc":"2.0","method":…,"params":…,"id":…}` (the toolbox's
/// key order), `params` already in canonical form.
pub fn rpc_body(method: &str, params: &[Value], id: u64) -> Vec<u8> {
    let params: Vec<Value> = params.iter().map(js_canonical).collect();
    let mut envelope = Map::new();
    envelope.insert("jsonrpc".into(), "2.0".into());
    envelope.insert("method".into(), method.into());
    envelope.insert("params".into(), Value::Array(params));
    envelope.insert("id".into(), id.into());
    serde_json::to_vec(&Value::Object(envelope)).expect("JSON values serialise")
}

/// Signs a JSON-RPC call on `session`.
pub fn rpc_request(
    me: &ClientIdentity,
    session: &ClientSession,
    endpoint: &Endpoint,
    method: &'static str,
    params: &[Value],
    id: u64,
) -> Result<(HttpRequest, RpcCall), StorageError> {
    let body = rpc_body(method, params, id);
    let signed = session
        .sign_request(me, "POST", &endpoint.target, &[("content-type", JSON)], Some(&body))
        .map_err(StorageError::Sign)?;
    let request =
        HttpRequest { url: endpoint.rpc.clone(), headers: signed.headers, body: signed.body.unwrap_or_default() };
    Ok((request, RpcCall { method, id, request_id: signed.request_id }))
}

/// Verifies the answer to `call` and returns its `result`. An unsigned answer is
/// [`StorageError::Unsigned`] (a 401 means the storage forgot the session: handshake again).
pub fn rpc_reply(session: &ClientSession, call: &RpcCall, reply: &Reply) -> Result<Value, StorageError> {
    if reply.header(crate::auth::payload::H_SIGNATURE).is_none() {
        return Err(StorageError::Unsigned { status: reply.status, body: excerpt(&reply.body) });
    }
    let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    session
        .verify_response(&call.request_id, reply.status, &headers, &reply.body)
        .map_err(StorageError::BadSignature)?;
    if !(200..300).contains(&reply.status) {
        let reason = http::StatusCode::from_u16(reply.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
        return Err(StorageError::Status { status: reply.status, reason });
    }
    let Ok(Value::Object(mut answer)) = serde_json::from_slice::<Value>(&reply.body) else {
        return Err(StorageError::NotJsonRpc { status: reply.status });
    };
    match answer.remove("error") {
        // `if (json.error)`: any truthy error is thrown, rebuilt from its name and message.
        Some(e) if js::truthy(Some(&e)) => {
            let text = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
            Err(StorageError::Rpc {
                name: text("name").unwrap_or_else(|| "Error".into()),
                message: text("message").unwrap_or_else(|| js::string(&e)),
            })
        }
        _ => Ok(answer.remove("result").unwrap_or(Value::Null)),
    }
}

/// What `makeAvailable` tells about the storage (its `TableSettings`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub storage_identity_key: String,
    pub storage_name: String,
    /// `main` or `test`.
    pub chain: String,
}

pub fn parse_settings(result: &Value) -> Result<Settings, StorageError> {
    let text = |k: &str| result.get(k).and_then(Value::as_str).map(str::to_string);
    match (text("storageIdentityKey"), text("chain")) {
        (Some(storage_identity_key), Some(chain)) => {
            Ok(Settings { storage_identity_key, chain, storage_name: text("storageName").unwrap_or_default() })
        }
        _ => Err(bad_result("makeAvailable", result)),
    }
}

/// The server identity's user row at the storage (`findOrInsertUser`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub user_id: i64,
    pub active_storage: String,
}

pub fn parse_user(result: &Value) -> Result<User, StorageError> {
    let user = &result["user"];
    match (user["userId"].as_i64(), user["activeStorage"].as_str()) {
        (Some(user_id), Some(active)) => Ok(User { user_id, active_storage: active.to_string() }),
        _ => Err(bad_result("findOrInsertUser", result)),
    }
}

/// The params of `internalizeAction`: the auth object the toolbox's `WalletStorageManager`
/// sends (`identityKey`, `userId`, `isActive`; the storage checks `identityKey` against the
/// session) and the caller's arguments, `tx`, `outputs`, `description` in that order.
pub fn internalize_params(identity_key: &str, user_id: i64, args: &Internalize) -> [Value; 2] {
    let mut auth = Map::new();
    auth.insert("identityKey".into(), identity_key.into());
    auth.insert("userId".into(), user_id.into());
    auth.insert("isActive".into(), true.into());
    let mut a = Map::new();
    a.insert("tx".into(), args.tx.clone());
    a.insert("outputs".into(), Value::Array(args.outputs.clone()));
    a.insert("description".into(), args.description.clone().into());
    [Value::Object(auth), Value::Object(a)]
}

/// The `accepted` flag of an `internalizeAction` result (`{accepted, isMerge, txid, satoshis}`).
pub fn parse_internalized(result: &Value) -> Result<bool, StorageError> {
    result.get("accepted").and_then(Value::as_bool).ok_or_else(|| bad_result("internalizeAction", result))
}

fn bad_result(method: &'static str, result: &Value) -> StorageError {
    let mut text = result.to_string();
    text.truncate(200);
    StorageError::BadResult { method, result: text }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `v` as a JavaScript engine holds `JSON.parse` of it, so that serde_json's compact output
/// of the result is what `JSON.stringify` writes: keys that are array indexes first, in
/// ascending order (JS orders them so), the rest in their order; integral numbers as
/// integers (`1.0` reads as `1`). serde_json already escapes strings as `JSON.stringify`
/// does. Fractions keep serde_json's shortest form, the same digits JS prints within
/// 1e-7..1e21; nothing the storage reads is a fraction.
pub fn js_canonical(v: &Value) -> Value {
    match v {
        Value::Array(a) => Value::Array(a.iter().map(js_canonical).collect()),
        Value::Object(o) => {
            let mut indexes: Vec<(u32, &String, &Value)> =
                o.iter().filter_map(|(k, v)| array_index(k).map(|i| (i, k, v))).collect();
            indexes.sort_by_key(|(i, _, _)| *i);
            let mut out = Map::new();
            for (_, k, v) in indexes {
                out.insert(k.clone(), js_canonical(v));
            }
            for (k, v) in o.iter().filter(|(k, _)| array_index(k).is_none()) {
                out.insert(k.clone(), js_canonical(v));
            }
            Value::Object(out)
        }
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => Value::from(f as i64),
            _ => v.clone(),
        },
        _ => v.clone(),
    }
}

/// A property key JS treats as an array index: the canonical decimal form of 0..2³²−2.
fn array_index(k: &str) -> Option<u32> {
    if k.is_empty() || (k.len() > 1 && k.starts_with('0')) || !k.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    k.parse::<u32>().ok().filter(|i| *i != u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PrivateKey;
    use serde_json::json;

    /// Captured by `vectors/payments/run_internalize.js` (and `run_errors.js`): the real
    /// wallet-toolbox 2.1.5 `StorageClient` talking to a real `StorageServer`, server key 0x11….
    const WIRE: &str = include_str!("../../tests/data/payments/storage_wire.json");
    const WIRE_ERRORS: &str = include_str!("../../tests/data/payments/storage_wire_errors.json");

    fn exchanges(capture: &str) -> Vec<Value> {
        serde_json::from_str::<Vec<Value>>(capture).unwrap()
    }

    fn me() -> ClientIdentity {
        ClientIdentity::new(PrivateKey::from_hex(&"11".repeat(32)).unwrap())
    }

    fn reply(e: &Value) -> Reply {
        let headers = e["resHeaders"].as_object().unwrap();
        Reply {
            status: e["status"].as_u64().unwrap() as u16,
            headers: headers.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect(),
            body: e["resBody"].as_str().unwrap().as_bytes().to_vec().into(),
        }
    }

    /// The session of a capture, rebuilt from its handshake: our client nonce is the one
    /// the toolbox made with the same key, so it verifies, and so does the storage's answer.
    fn captured_session(capture: &[Value]) -> ClientSession {
        let hs = &capture[0];
        assert_eq!(hs["url"], "/.well-known/auth");
        let request: Value = serde_json::from_str(hs["reqBody"].as_str().unwrap()).unwrap();
        let (msg, pending) = me().start_handshake_with_nonce(request["initialNonce"].as_str().unwrap().to_string());
        // Our initialRequest is byte for byte the toolbox's.
        assert_eq!(msg.to_json(), hs["reqBody"].as_str().unwrap());
        finish_handshake(&me(), pending, &reply(hs)).expect("the captured handshake verifies")
    }

    fn call_of(e: &Value) -> RpcCall {
        let body: Value = serde_json::from_str(e["reqBody"].as_str().unwrap()).unwrap();
        let rid = crate::auth::nonce::b64_decode_lenient(e["reqHeaders"]["x-bsv-auth-request-id"].as_str().unwrap());
        RpcCall { method: "captured", id: body["id"].as_u64().unwrap(), request_id: rid.unwrap().try_into().unwrap() }
    }

    /// Every JSON-RPC body the toolbox sent is what we write for the same call: the
    /// storage checks our signature over `JSON.stringify` of what it parsed.
    #[test]
    fn bodies_are_the_toolboxs() {
        for capture in [exchanges(WIRE), exchanges(WIRE_ERRORS)] {
            for e in capture.iter().filter(|e| e["url"] == "/") {
                let sent = e["reqBody"].as_str().unwrap();
                let body: Value = serde_json::from_str(sent).unwrap();
                let params = body["params"].as_array().unwrap();
                let ours = rpc_body(body["method"].as_str().unwrap(), params, body["id"].as_u64().unwrap());
                assert_eq!(String::from_utf8(ours).unwrap(), sent);
            }
        }
    }

    /// `internalizeAction` as the original's wallet sends it for a delivery fee.
    #[test]
    fn internalize_call_is_the_originals() {
        let capture = exchanges(WIRE);
        let sent = capture[3]["reqBody"].as_str().unwrap();
        let body: Value = serde_json::from_str(sent).unwrap();
        let args = &body["params"][1];
        let args = Internalize {
            tx: args["tx"].clone(),
            outputs: args["outputs"].as_array().unwrap().clone(),
            description: args["description"].as_str().unwrap().to_string(),
        };
        assert_eq!(args.description, "MessageBox delivery payment (batch)");
        let params = internalize_params(me().identity_hex(), 1, &args);
        assert_eq!(String::from_utf8(rpc_body("internalizeAction", &params, 3)).unwrap(), sent);
    }

    /// The storage's signed answers verify on the rebuilt session and decode: results,
    /// JSON-RPC errors, and the 400 of an unknown method with the original's text.
    #[test]
    fn captured_answers_verify_and_decode() {
        let capture = exchanges(WIRE);
        let session = captured_session(&capture);
        let settings = rpc_reply(&session, &call_of(&capture[1]), &reply(&capture[1])).unwrap();
        let settings = parse_settings(&settings).unwrap();
        assert_eq!(settings.chain, "test");
        assert_eq!(settings.storage_identity_key, session.server_hex);
        let user = parse_user(&rpc_reply(&session, &call_of(&capture[2]), &reply(&capture[2])).unwrap()).unwrap();
        assert_eq!(user, User { user_id: 1, active_storage: settings.storage_identity_key.clone() });
        let result = rpc_reply(&session, &call_of(&capture[3]), &reply(&capture[3])).unwrap();
        assert_eq!(result["isMerge"], false);
        assert!(parse_internalized(&result).unwrap());
        // A byte changed in the body, or an answer to another request: refused.
        let mut tampered = reply(&capture[3]);
        tampered.body = String::from_utf8(tampered.body.to_vec()).unwrap().replace("true", "fals").into_bytes().into();
        assert!(matches!(rpc_reply(&session, &call_of(&capture[3]), &tampered), Err(StorageError::BadSignature(_))));
        assert!(matches!(
            rpc_reply(&session, &call_of(&capture[4]), &reply(&capture[3])),
            Err(StorageError::BadSignature(_))
        ));

        let capture = exchanges(WIRE_ERRORS);
        let session = captured_session(&capture);
        let errors: Vec<String> =
            capture[2..].iter().map(|e| rpc_reply(&session, &call_of(e), &reply(e)).unwrap_err().to_string()).collect();
        assert_eq!(
            errors,
            [
                "The tx parameter must be valid AtomicBEEF",
                "identityKey does not match authentiation",
                "function may only access authenticated user.",
                "Cannot read properties of null (reading 'userId')",
                "WalletStorageClient rpcCall: network error 400 Bad Request",
            ]
        );
        let e = rpc_reply(&session, &call_of(&capture[2]), &reply(&capture[2])).unwrap_err();
        assert!(matches!(&e, StorageError::Rpc { name, .. } if name == "WERR_INVALID_PARAMETER"));
        assert!(!e.unavailable());
    }

    #[test]
    fn unsigned_and_bad_answers() {
        let capture = exchanges(WIRE);
        let session = captured_session(&capture);
        let call = call_of(&capture[1]);
        let forgot = Reply {
            status: 401,
            headers: vec![("content-type".into(), "application/json".into())],
            body: br#"{"status":"error","code":"ERR_AUTH_FAILED","description":"Session not found for nonce: x"}"#
                .to_vec()
                .into(),
        };
        let e = rpc_reply(&session, &call, &forgot).unwrap_err();
        assert!(matches!(e, StorageError::Unsigned { status: 401, .. }), "{e}");
        assert!(e.unavailable());
        let hs = finish_handshake(&me(), me().start_handshake().1, &Reply { status: 404, ..forgot.clone() });
        assert!(matches!(hs, Err(StorageError::HandshakeRefused { status: 404, .. })));
        let hs = finish_handshake(&me(), me().start_handshake().1, &reply(&capture[0]));
        assert!(matches!(hs, Err(StorageError::Handshake(_))), "a response to another nonce");
        assert!(parse_settings(&json!({"storageName": "x"})).is_err());
        assert!(parse_user(&json!({"user": {"userId": "1"}})).is_err());
        assert_eq!(
            parse_internalized(&json!({})).unwrap_err().to_string(),
            "wallet storage answered internalizeAction with an unexpected result: {}"
        );
    }

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("https://storage.babbage.systems").unwrap();
        assert_eq!(e.rpc, "https://storage.babbage.systems");
        assert_eq!(e.auth, "https://storage.babbage.systems/.well-known/auth");
        assert_eq!(e.target, "/");
        let e = Endpoint::parse("http://127.0.0.1:8100/wallet/rpc?x=1").unwrap();
        assert_eq!(e.auth, "http://127.0.0.1:8100/.well-known/auth");
        assert_eq!(e.target, "/wallet/rpc?x=1");
        assert!(Endpoint::parse("storage.babbage.systems").is_err());
        assert!(Endpoint::parse("ftp://x").is_err());
        assert_eq!(default_url(false), "https://storage.babbage.systems");
        assert_eq!(default_url(true), "https://staging-storage.babbage.systems");
    }

    /// `JSON.stringify(JSON.parse(x))` in node 20 for each `x` (the right-hand strings).
    #[test]
    fn canonical_json_is_what_javascript_writes() {
        for (input, js) in [
            (
                r#"{"b":1,"a":2,"10":3,"9":4,"01":5,"4294967295":6,"4294967294":7}"#,
                r#"{"9":4,"10":3,"4294967294":7,"b":1,"a":2,"01":5,"4294967295":6}"#,
            ),
            (r#"[1.0,-0.0,2.5,1e2,"é\u0001\n/"]"#, r#"[1,0,2.5,100,"é\u0001\n/"]"#),
            (r#"{"outputIndex":0.0,"x":{"2":null,"1":true}}"#, r#"{"outputIndex":0,"x":{"1":true,"2":null}}"#),
        ] {
            let v: Value = serde_json::from_str(input).unwrap();
            assert_eq!(serde_json::to_string(&js_canonical(&v)).unwrap(), js, "{input}");
        }
    }

    #[test]
    fn error_classes() {
        use std::time::Duration;
        assert!(StorageError::TimedOut(Duration::from_millis(1500)).unavailable());
        assert_eq!(
            StorageError::TimedOut(Duration::from_millis(1500)).to_string(),
            "wallet storage did not answer within 1500 ms"
        );
        assert!(StorageError::Stopped.unavailable());
        assert!(StorageError::Busy.unavailable());
        assert!(!StorageError::NotActive.unavailable());
        assert_eq!(StorageError::NotActive.to_string(), NOT_ACTIVE);
        assert!(!StorageError::Status { status: 500, reason: "Internal Server Error" }.unavailable());
    }
}
