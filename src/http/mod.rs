//! Request and response plumbing: CORS and `OPTIONS` as the original answers them, the
//! BRC-103 handshake endpoint, the public docs, body limits, BRC-104 verification of every
//! business request and the signing of every answer (including errors and unknown routes).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::api::{Api, Call, Query, Reply, Route};
use crate::auth::payload::{self, select_request_headers, H_REQUEST_ID};
use crate::auth::{AuthError, AuthHeaders, AuthMessage, HandshakeReply, HttpExchange, IncomingRequest, ServerAuth};

pub mod docs;

pub type Body = Full<Bytes>;

/// Everything a request needs, shared by every core.
pub struct App {
    pub auth: Arc<ServerAuth>,
    pub limits: HeaderLimits,
    pub api: Api,
    pub routing_prefix: String,
    pub max_body: usize,
    /// `None` when `ENABLE_WEBSOCKETS=false`: `/socket.io/` answers 404.
    pub live: Option<Arc<crate::live::driver::LiveHub>>,
    pub openapi: Bytes,
}

/// Bounds on request heads answered with a JSON 431. (Heads beyond the HTTP parser's own
/// hard caps, set well above these, get the parser's bare 431.)
#[derive(Debug, Clone)]
pub struct HeaderLimits {
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        HeaderLimits { max_headers: 100, max_header_bytes: 32 * 1024 }
    }
}

/// How long a client may take to send a request body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

const CORS: [(&str, &str); 5] = [
    ("access-control-allow-origin", "*"),
    ("access-control-allow-headers", "*"),
    ("access-control-allow-methods", "*"),
    ("access-control-expose-headers", "*"),
    ("access-control-allow-private-network", "true"),
];

fn response(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let body = body.into();
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    for (k, v) in CORS {
        h.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

const JSON: &str = "application/json; charset=utf-8";

fn json_response(status: u16, value: &Value) -> Response<Body> {
    response(status, JSON, serde_json::to_vec(value).expect("JSON values serialise"))
}

fn error_response(status: u16, code: &str, description: &str) -> Response<Body> {
    json_response(status, &json!({"status": "error", "code": code, "description": description}))
}

/// The original's answer to a request without BRC-104 headers (note the key `message`).
fn unauthenticated() -> Response<Body> {
    json_response(401, &json!({"status": "error", "code": "UNAUTHORIZED", "message": "Mutual-authentication failed!"}))
}

/// The JSON error answer to a failed handshake or request verification.
fn auth_error_response(e: &AuthError, exchange: HttpExchange) -> Response<Body> {
    let rejection = e.http_rejection(exchange);
    let mut r = error_response(rejection.status, rejection.code, &e.to_string());
    if let Some(secs) = rejection.retry_after {
        r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

enum BodyError {
    TooLarge,
    Timeout,
    Broken,
}

async fn read_body(headers: &HeaderMap, body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Broken),
    }
}

fn body_error_response(e: BodyError, limit: usize) -> Response<Body> {
    match e {
        BodyError::TooLarge => {
            error_response(413, "ERR_PAYLOAD_TOO_LARGE", &format!("Request body exceeds the limit of {limit} bytes."))
        }
        BodyError::Timeout => error_response(408, "ERR_REQUEST_TIMEOUT", "The request body was not received in time."),
        BodyError::Broken => error_response(400, "ERR_BAD_REQUEST", "The request body could not be read."),
    }
}

/// The service function of every connection. With `RUST_LOG=messagebox::access=debug` each
/// request is logged with its status and duration.
pub async fn handle(app: Arc<App>, req: http::Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if !tracing::enabled!(target: "messagebox::access", tracing::Level::DEBUG) {
        return Ok(route(app, req).await);
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let start = std::time::Instant::now();
    let resp = route(app, req).await;
    tracing::debug!(target: "messagebox::access", %method, path, status = resp.status().as_u16(), micros = start.elapsed().as_micros() as u64);
    Ok(resp)
}

async fn route(app: Arc<App>, req: http::Request<Incoming>) -> Response<Body> {
    let headers = req.headers();
    let header_bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
    if headers.len() > app.limits.max_headers || header_bytes > app.limits.max_header_bytes {
        return error_response(
            431,
            "ERR_HEADERS_TOO_LARGE",
            &format!(
                "Request headers exceed the limit of {} fields or {} bytes.",
                app.limits.max_headers, app.limits.max_header_bytes
            ),
        );
    }
    let path = req.uri().path();
    if path.starts_with("/socket.io/") {
        return match &app.live {
            Some(_) => crate::live::driver::handle(req).await,
            None => error_response(404, "ERR_NOT_FOUND", "The live channel is disabled on this server."),
        };
    }
    if req.method() == Method::OPTIONS {
        return response(200, "text/plain; charset=utf-8", "OK");
    }
    match path {
        "/.well-known/auth" => return handshake(&app, req).await,
        "/openapi.json" if req.method() == Method::GET => return response(200, JSON, app.openapi.clone()),
        "/docs" if req.method() == Method::GET => {
            let mut r = response(301, "text/html; charset=utf-8", "Moved Permanently. Redirecting to /docs/");
            r.headers_mut().insert(http::header::LOCATION, HeaderValue::from_static("/docs/"));
            return r;
        }
        "/docs/" if req.method() == Method::GET => {
            return response(200, "text/html; charset=utf-8", docs::HTML);
        }
        _ => {}
    }
    business(&app, req).await
}

async fn handshake(app: &App, req: http::Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        return error_response(405, "ERR_METHOD_NOT_ALLOWED", "The handshake endpoint takes POST.");
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body, app.max_body).await {
        Ok(b) => b,
        Err(e) => return body_error_response(e, app.max_body),
    };
    let msg = match AuthMessage::from_json(&body) {
        Ok(m) => m,
        Err(e) => return auth_error_response(&AuthError::from(e), HttpExchange::Handshake),
    };
    match app.auth.handle_handshake_message(&msg) {
        Ok(HandshakeReply::Message(reply)) => {
            let mut r = response(200, JSON, reply.to_json());
            let h = r.headers_mut();
            for (k, v) in reply.handshake_headers() {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    h.insert(HeaderName::from_static(k), v);
                }
            }
            r
        }
        Ok(HandshakeReply::Acknowledged) => json_response(200, &json!({"status": "success"})),
        Err(e) => auth_error_response(&e, HttpExchange::Handshake),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn is_json(headers: &HeaderMap) -> bool {
    header(headers, "content-type")
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

async fn business(app: &App, req: http::Request<Incoming>) -> Response<Body> {
    if !req.headers().contains_key(H_REQUEST_ID) {
        return unauthenticated();
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body, app.max_body).await {
        Ok(b) => b,
        Err(e) => return body_error_response(e, app.max_body),
    };
    let h = &parts.headers;
    let signed_headers = select_request_headers(h.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    let path = parts.uri.path();
    let query = parts.uri.query().map(|q| format!("?{q}"));
    let incoming = IncomingRequest {
        auth: AuthHeaders {
            version: header(h, payload::H_VERSION),
            identity_key: header(h, payload::H_IDENTITY_KEY),
            nonce: header(h, payload::H_NONCE),
            your_nonce: header(h, payload::H_YOUR_NONCE),
            signature: header(h, payload::H_SIGNATURE),
            request_id: header(h, H_REQUEST_ID),
        },
        method: parts.method.as_str(),
        path,
        query: query.as_deref(),
        signed_headers: &signed_headers,
        body: &body,
    };
    let verified = match app.auth.verify_request(&incoming) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, path, "request authentication failed");
            return auth_error_response(&e, HttpExchange::Request);
        }
    };
    let reply = match Route::find(parts.method.as_str(), path, &app.routing_prefix) {
        None => Reply::error(404, "ERR_NOT_FOUND", format!("Route not found: {} {}", parts.method, path)),
        Some(route) => match parse_json_body(h, &body) {
            Err(reply) => reply,
            Ok(json_body) => {
                let call = Call {
                    identity: &verified.session().peer_hex,
                    query: Query::parse(parts.uri.query().unwrap_or("")),
                    body: json_body,
                };
                app.api.handle(route, call).await
            }
        },
    };
    signed(app, &verified, reply)
}

/// The body as the original's `express.json()` would give it to the route: JSON objects and
/// arrays for an `application/json` content type, `{}` for anything else or an empty body.
fn parse_json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Reply> {
    if !is_json(headers) || body.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => Ok(v),
        Ok(_) => Err(Reply::error(400, "ERR_INVALID_JSON", "The request body must be a JSON object or array.")),
        Err(e) => Err(Reply::error(400, "ERR_INVALID_JSON", format!("The request body is not valid JSON: {e}"))),
    }
}

fn signed(app: &App, verified: &crate::auth::VerifiedRequest, reply: Reply) -> Response<Body> {
    // Never an empty signed body: the TS client would rebuild it differently and hang.
    let body = if reply.body.is_empty() { b"{}".to_vec() } else { reply.body };
    let auth = match app.auth.sign_response(verified.session(), verified.request_id(), reply.status, &[], &body) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "signing a response failed");
            return error_response(500, "ERR_RESPONSE_SIGNING_FAILED", &e.to_string());
        }
    };
    let mut r = response(reply.status, JSON, body);
    let h = r.headers_mut();
    for (k, v) in auth.pairs() {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    r
}
