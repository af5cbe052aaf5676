//! Request and response plumbing: CORS and `OPTIONS` as the original answers them, the
//! BRC-103 handshake endpoint, the public docs and probes, body limits, BRC-104 verification
//! of every business request, the signing of every answer (including errors and unknown
//! routes) and the access log.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::api::{self, Api, ApiError, Call, Query, Reply, Route};
use crate::auth::payload::{self, select_request_headers, H_REQUEST_ID};
use crate::auth::{
    AuthError, AuthHeaders, AuthMessage, FailureReason, HandshakeReply, HttpExchange, IncomingRequest, ServerAuth,
    UnclaimedRequest, VerifiedRequest,
};
use crate::domain::IdentityKey;
use crate::fleet::limits::FleetLimits;
use crate::fleet::sessions::ClaimOutcome;
use crate::live::driver::LiveCore;
use crate::metrics::{Metrics, RateScope, Recorder, RouteLabel, Transport};
use edge::within_value_budget;
use ratelimit::IpKey;

pub mod docs;
pub mod edge;
pub mod ratelimit;

pub type Body = Full<Bytes>;

/// Everything a request needs, shared by every core.
pub struct App {
    pub auth: Arc<ServerAuth>,
    pub limits: HeaderLimits,
    pub api: Api,
    pub routing_prefix: String,
    /// The edge limits (`config.resources.http`): bodies, timeouts, connections, rates.
    pub http: crate::limits::HttpLimits,
    /// The concurrency gate and the rate limiters, shared by every core (built from `http`).
    pub edge: edge::Edge,
    /// `None` when `ENABLE_WEBSOCKETS=false`: `/socket.io/` answers 404.
    pub live: Option<Arc<crate::live::driver::LiveHub>>,
    pub openapi: Bytes,
    /// The `/health` body (fixed for the life of the process).
    pub health: Bytes,
    /// The access log switch and `TRUST_PROXY_HOPS`.
    pub observability: crate::config::Observability,
    /// The per-core shards and their exposition (records nothing when metrics are off).
    pub metrics: Arc<Metrics>,
    /// `Some` when `REDIS_URL` is set: this process is one node of a fleet.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// In a fleet with the live channel on: Engine.IO requests for sessions of other nodes go
    /// there (`fleet::forward`).
    pub forward: Option<Arc<crate::fleet::forward::Forwarder>>,
    /// The link to the fleet's broker (with `fleet`): live delivery across nodes; `/ready`
    /// reports whether it is up.
    pub broker: Option<Arc<crate::fleet::broker::Broker>>,
}

/// The liveness body of TS-next's `/health` and `/healthz`.
pub fn health_body(network: &str, websockets: bool) -> Bytes {
    let v = json!({"ok": true, "status": "ok", "service": "messagebox-server", "network": network, "websockets": websockets});
    serde_json::to_vec(&v).expect("JSON values serialise").into()
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

/// Reads a body of at most `limit` bytes within `MESSAGE_BOX_REQUEST_TIMEOUT_MS`; a declared
/// length over the limit is refused before a byte is read.
async fn read_body(app: &App, headers: &HeaderMap, body: Incoming, limit: u64) -> Result<Bytes, BodyError> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match tokio::time::timeout(app.http.request_timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Broken),
    }
}

/// The newer upstream's answer to a body over its limit (size or JSON budget). 1.1.5 had
/// no limit below 1 GiB (and answered that with Express's HTML page), so every body cap is a
/// newer-server limit and takes its unsigned JSON answer (spec §2.2).
fn body_too_large() -> Response<Body> {
    error_response(413, "ERR_BODY_TOO_LARGE", "The request body exceeds the endpoint limit.")
}

fn body_error_response(e: BodyError) -> Response<Body> {
    match e {
        BodyError::TooLarge => body_too_large(),
        BodyError::Timeout => error_response(408, "ERR_REQUEST_TIMEOUT", "The request body was not received in time."),
        BodyError::Broken => error_response(400, "ERR_BAD_REQUEST", "The request body could not be read."),
    }
}

/// The service function of every connection; `peer` is the TCP peer of the connection,
/// `live` this core's part of the live channel (`None` when it is disabled) and `metrics`
/// this core's metrics shard.
///
/// With `MESSAGEBOX_ACCESS_LOG=true` each request is logged at `info` (target
/// `messagebox::access`): method, route (the path without its query), status, duration,
/// client IP and the verified identity key — never bodies, nonces or signatures. Without
/// it, `RUST_LOG=messagebox::access=debug` still gives the same line at `debug`.
pub async fn handle(
    app: Arc<App>,
    live: Option<LiveCore>,
    metrics: Recorder,
    peer: SocketAddr,
    req: http::Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let info = app.observability.access_log;
    let access = info || tracing::enabled!(target: "messagebox::access", tracing::Level::DEBUG);
    if !access && !metrics.enabled() {
        return Ok(route(app, live, &metrics, peer, req).await);
    }
    let label = route_label(req.method(), req.uri().path(), &app.routing_prefix);
    let start = std::time::Instant::now();
    if !access {
        let resp = route(app, live, &metrics, peer, req).await;
        metrics.http_request(label, resp.status().as_u16(), start.elapsed());
        return Ok(resp);
    }
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let mut hops = app.observability.trust_proxy_hops;
    if let Some(forward) = &app.forward {
        hops = forward.client_hops(req.headers(), hops);
    }
    let client_ip = client_ip(peer.ip(), req.headers(), hops);
    let mut resp = route(app, live, &metrics, peer, req).await;
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    metrics.http_request(label, status, elapsed);
    let duration_ms = elapsed.as_micros() as f64 / 1000.0;
    let identity = resp.extensions_mut().remove::<AccessIdentity>().map_or_else(|| "-".to_string(), |i| i.0);
    if info {
        tracing::info!(target: "messagebox::access", %method, route = %path, status, duration_ms, %client_ip, %identity, "request");
    } else {
        tracing::debug!(target: "messagebox::access", %method, route = %path, status, duration_ms, %client_ip, %identity, "request");
    }
    Ok(resp)
}

/// The `route` label of a request, by the same rules [`route`] dispatches with.
fn route_label(method: &Method, path: &str, prefix: &str) -> RouteLabel {
    if path.starts_with("/socket.io/") {
        return RouteLabel::Live;
    }
    if method == Method::OPTIONS {
        return RouteLabel::Preflight;
    }
    if matches!(*method, Method::GET | Method::HEAD) {
        match probe(path, prefix) {
            Some(Probe::Ready) => return RouteLabel::Ready,
            Some(Probe::Live) if path.ends_with('z') => return RouteLabel::Healthz,
            Some(Probe::Live) => return RouteLabel::Health,
            None => {}
        }
    }
    match path {
        "/.well-known/auth" => RouteLabel::Handshake,
        "/openapi.json" | "/docs" | "/docs/" if method == Method::GET => RouteLabel::Docs,
        _ => Route::find(method.as_str(), path, prefix).map_or(RouteLabel::Other, RouteLabel::from),
    }
}

/// The verified identity of a request, handed from [`business`] to the access log through
/// the response's extensions (only when the access line will be written).
#[derive(Clone)]
struct AccessIdentity(String);

/// The client address as Express computes `req.ip` with `trust proxy = hops`: the peer,
/// then the `X-Forwarded-For` entries from right to left; the first `hops` of that list are
/// trusted proxies, so the address `hops` places in is the client (or the left-most entry
/// when the chain is shorter). An entry that is not an IP address ends the walk there: it
/// cannot be told apart from a forged one, and it is never written into a log line verbatim.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, hops: u8) -> String {
    client_addr(peer, headers, hops).map_or_else(|| "invalid".into(), |ip| ip.to_string())
}

/// [`client_ip`] as an address; `None` when the forwarded chain held an unusable entry.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, hops: u8) -> Option<IpAddr> {
    let mut ip = peer;
    if hops == 0 {
        return Some(ip);
    }
    let mut forwarded: Vec<&str> = Vec::new();
    for v in headers.get_all("x-forwarded-for") {
        forwarded.extend(v.to_str().ok()?.split(',').map(str::trim));
    }
    for entry in forwarded.iter().rev().take(usize::from(hops)) {
        ip = parse_forwarded(entry)?;
    }
    Some(ip)
}

/// `1.2.3.4`, `::1`, and the forms with a port some proxies write (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry.parse::<IpAddr>().ok().or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// How long `/ready` waits for the database before answering 503.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

enum Probe {
    Live,
    Ready,
}

/// TS-next registers the probes under `ROUTING_PREFIX`; the original had none. Both the
/// bare paths (what our earlier releases and most probes use) and the prefixed ones answer,
/// so either style of probe configuration works.
fn probe(path: &str, prefix: &str) -> Option<Probe> {
    let bare = |p: &str| match p {
        "/health" | "/healthz" => Some(Probe::Live),
        "/ready" => Some(Probe::Ready),
        _ => None,
    };
    bare(path).or_else(|| path.strip_prefix(prefix).filter(|_| !prefix.is_empty()).and_then(bare))
}

async fn answer_probe(app: &App, probe: Probe) -> Response<Body> {
    let mut r = match probe {
        Probe::Live => response(200, JSON, app.health.clone()),
        Probe::Ready => match tokio::time::timeout(READY_TIMEOUT, app.api.store.ping()).await {
            // In a fleet the broker is reported, not required: HTTP works without it (only
            // live delivery to other nodes pauses), so a node stays in rotation.
            Ok(Ok(())) => match &app.broker {
                None => response(200, JSON, &br#"{"status":"ready"}"#[..]),
                Some(b) if b.is_up() => response(200, JSON, &br#"{"status":"ready","broker":"up"}"#[..]),
                Some(_) => response(200, JSON, &br#"{"status":"ready","broker":"down"}"#[..]),
            },
            failed => {
                // The reason goes to the log only: the probe is public. At debug: the store
                // logs an outage once when it starts and once when it ends.
                match failed {
                    Ok(Err(e)) => tracing::debug!(error = %e, "readiness: the database did not answer"),
                    _ => tracing::debug!(
                        timeout_ms = READY_TIMEOUT.as_millis() as u64,
                        "readiness: the database timed out"
                    ),
                }
                error_response(503, "ERR_NOT_READY", "Message Box dependencies are not ready.")
            }
        },
    };
    r.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn route(
    app: Arc<App>,
    live: Option<LiveCore>,
    metrics: &Recorder,
    peer: SocketAddr,
    req: http::Request<Incoming>,
) -> Response<Body> {
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
            Some(_) => {
                // In a fleet, a request for another node's session is answered by that node.
                let req = match &app.forward {
                    Some(forward) => match forward.handle(peer, req).await {
                        Ok(answered) => return answered,
                        Err(local) => local,
                    },
                    None => req,
                };
                crate::live::driver::handle(live.as_ref(), req).await
            }
            None => error_response(404, "ERR_NOT_FOUND", "The live channel is disabled on this server."),
        };
    }
    if req.method() == Method::OPTIONS {
        return response(200, "text/plain; charset=utf-8", "OK");
    }
    let probe = probe(path, &app.routing_prefix).filter(|_| matches!(*req.method(), Method::GET | Method::HEAD));
    // The gate (spec §2.1 step 4), then the per-IP limit (step 5). Liveness probes pass the
    // gate: `/health` does no work, and a 503 there would have an orchestrator restart a
    // process that is only busy. `/ready` stays behind it (at capacity is "not ready").
    let _permit = match probe {
        Some(Probe::Live) => None,
        _ => match app.edge.gate.enter() {
            Some(p) => Some(p),
            None => return server_busy(),
        },
    };
    let ip = IpKey::new(client_addr(peer.ip(), req.headers(), app.observability.trust_proxy_hops));
    if let Some(fleet) = &app.edge.fleet {
        // A signed request is counted in the one round trip that also claims its nonce.
        if probe.is_none() && public(req.method(), path).is_none() && req.headers().contains_key(H_REQUEST_ID) {
            return fleet_business(&app, fleet, metrics, req, ip).await;
        }
    }
    let decision = ip_decision(&app, ip).await;
    if !decision.allowed {
        return ip_refused(&app, metrics, &decision);
    }
    let mut r = match probe {
        Some(p) => answer_probe(&app, p).await,
        None => public_or_business(&app, metrics, req).await,
    };
    rate_headers(&mut r, &app.edge.ip, &decision, false);
    r
}

/// Counts a request of `ip`: fleet-wide in fleet mode, else (or while Redis is unavailable)
/// in this process.
async fn ip_decision(app: &App, ip: IpKey) -> ratelimit::Decision {
    if let Some(fleet) = &app.edge.fleet {
        let bucket = ip.bucket();
        if let Some(c) = fleet.count_ip(&bucket).await {
            return app.edge.ip.decision(c.hits, c.ms_left, &bucket);
        }
    }
    app.edge.ip.check_ip(ip)
}

/// The 429 of the per-IP limit (unsigned).
fn ip_refused(app: &App, metrics: &Recorder, decision: &ratelimit::Decision) -> Response<Body> {
    metrics.rate_limited(RateScope::Ip);
    let mut r = rate_limited();
    rate_headers(&mut r, &app.edge.ip, decision, true);
    r
}

/// 503 `ERR_SERVER_BUSY` (spec §2.2).
fn server_busy() -> Response<Body> {
    let mut r = error_response(503, "ERR_SERVER_BUSY", "The service is temporarily at capacity.");
    r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

const RATE_LIMITED: &str =
    r#"{"status":"error","code":"ERR_RATE_LIMITED","description":"Too many requests. Please retry later."}"#;

/// 429 `ERR_RATE_LIMITED` (spec §2.2), unsigned.
fn rate_limited() -> Response<Body> {
    response(429, JSON, RATE_LIMITED)
}

/// Appends a limiter's draft-8 headers (every counted request), and `Retry-After` on a 429.
fn rate_headers<K: std::hash::Hash + Eq>(
    r: &mut Response<Body>,
    limiter: &ratelimit::Limiter<K>,
    d: &ratelimit::Decision,
    refused: bool,
) {
    let h = r.headers_mut();
    for (name, value) in [("ratelimit-policy", limiter.policy_header(d)), ("ratelimit", limiter.state_header(d))] {
        if let Ok(v) = HeaderValue::try_from(value) {
            h.append(HeaderName::from_static(name), v);
        }
    }
    if refused {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(d.reset_secs));
    }
}

/// The endpoints answered without BRC-104.
enum Public {
    Handshake,
    OpenApi,
    DocsRedirect,
    Docs,
}

fn public(method: &Method, path: &str) -> Option<Public> {
    match path {
        "/.well-known/auth" => Some(Public::Handshake),
        "/openapi.json" if method == Method::GET => Some(Public::OpenApi),
        "/docs" if method == Method::GET => Some(Public::DocsRedirect),
        "/docs/" if method == Method::GET => Some(Public::Docs),
        _ => None,
    }
}

/// The public endpoints (handshake, docs), then the authenticated routes.
async fn public_or_business(app: &App, metrics: &Recorder, req: http::Request<Incoming>) -> Response<Body> {
    match public(req.method(), req.uri().path()) {
        Some(Public::Handshake) => handshake(app, metrics, req).await,
        Some(Public::OpenApi) => response(200, JSON, app.openapi.clone()),
        Some(Public::DocsRedirect) => {
            let mut r = response(301, "text/html; charset=utf-8", "Moved Permanently. Redirecting to /docs/");
            r.headers_mut().insert(http::header::LOCATION, HeaderValue::from_static("/docs/"));
            r
        }
        Some(Public::Docs) => response(200, "text/html; charset=utf-8", docs::HTML),
        None => business(app, metrics, req).await,
    }
}

async fn handshake(app: &App, metrics: &Recorder, req: http::Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        return error_response(405, "ERR_METHOD_NOT_ALLOWED", "The handshake endpoint takes POST.");
    }
    let (parts, body) = req.into_parts();
    // No session yet: the small unauthenticated cap.
    let body = match read_body(app, &parts.headers, body, app.http.max_unauthenticated_body_bytes).await {
        Ok(b) => b,
        Err(e) => return body_error_response(e),
    };
    let msg = match AuthMessage::from_json(&body) {
        Ok(m) => m,
        Err(e) => {
            let e = AuthError::from(e);
            metrics.auth_failure(e.reason());
            return auth_error_response(&e, HttpExchange::Handshake);
        }
    };
    match app.auth.handle_handshake_message(&msg) {
        Ok(HandshakeReply::Message(reply)) => {
            metrics.handshake(Transport::Http);
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
        Err(e) => {
            metrics.auth_failure(e.reason());
            auth_error_response(&e, HttpExchange::Handshake)
        }
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

/// A signed request up to its verified signature: the session its headers name (before a
/// byte of the body is read), the body, the signature. `Err` is the answer to send.
async fn authenticate(
    app: &App,
    metrics: &Recorder,
    req: http::Request<Incoming>,
) -> Result<(http::request::Parts, Bytes, UnclaimedRequest), Response<Body>> {
    if !req.headers().contains_key(H_REQUEST_ID) {
        metrics.auth_failure(FailureReason::MissingHeaders);
        return Err(unauthenticated());
    }
    let (parts, body) = req.into_parts();
    let h = &parts.headers;
    let auth = AuthHeaders {
        version: header(h, payload::H_VERSION),
        identity_key: header(h, payload::H_IDENTITY_KEY),
        nonce: header(h, payload::H_NONCE),
        your_nonce: header(h, payload::H_YOUR_NONCE),
        signature: header(h, payload::H_SIGNATURE),
        request_id: header(h, H_REQUEST_ID),
    };
    // D4: the session the headers name is resolved before a byte of the body is read; a
    // request naming none gets the answer verification would give it, at no body's cost.
    if let Err(e) = app.auth.session_for_headers(&auth) {
        tracing::debug!(error = %e, path = parts.uri.path(), "request authentication failed before the body");
        metrics.auth_failure(e.reason());
        return Err(auth_error_response(&e, HttpExchange::Request));
    }
    let body = read_body(app, h, body, app.http.max_body_bytes).await.map_err(body_error_response)?;
    // D7: a JSON body's structure is bounded before anything materialises it.
    if is_json(h) && !within_value_budget(&body, app.http.max_json_values) {
        return Err(body_too_large());
    }
    let signed_headers = select_request_headers(h.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    let path = parts.uri.path();
    let query = parts.uri.query().map(|q| format!("?{q}"));
    let incoming = IncomingRequest {
        auth,
        method: parts.method.as_str(),
        path,
        query: query.as_deref(),
        signed_headers: &signed_headers,
        body: &body,
    };
    match app.auth.verify_signature(&incoming) {
        Ok(unclaimed) => Ok((parts, body, unclaimed)),
        Err(e) => Err(request_auth_failed(metrics, &e, path)),
    }
}

fn request_auth_failed(metrics: &Recorder, e: &AuthError, path: &str) -> Response<Body> {
    tracing::debug!(error = %e, path, "request authentication failed");
    metrics.auth_failure(e.reason());
    auth_error_response(e, HttpExchange::Request)
}

async fn business(app: &App, metrics: &Recorder, req: http::Request<Incoming>) -> Response<Body> {
    let (parts, body, unclaimed) = match authenticate(app, metrics, req).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let verified = match app.auth.claim_locally(unclaimed) {
        Ok(v) => v,
        Err(e) => return request_auth_failed(metrics, &e, parts.uri.path()),
    };
    let identity_decision = app.edge.identity.check_identity(&verified.session().peer_hex);
    respond(app, metrics, &parts, &body, &verified, &identity_decision).await
}

/// A signed request in fleet mode: authenticated, then counted and claimed fleet-wide in one
/// Redis round trip (`crate::fleet::limits`), with the same answers, in the same order of
/// precedence, as [`route`] and [`business`] give on one node. While Redis is unavailable
/// the node-local limiters and replay memory decide.
async fn fleet_business(
    app: &App,
    fleet: &FleetLimits,
    metrics: &Recorder,
    req: http::Request<Incoming>,
    ip: IpKey,
) -> Response<Body> {
    let (parts, body, unclaimed) = match authenticate(app, metrics, req).await {
        Ok(v) => v,
        Err(mut r) => {
            let decision = ip_decision(app, ip).await;
            if !decision.allowed {
                return ip_refused(app, metrics, &decision);
            }
            rate_headers(&mut r, &app.edge.ip, &decision, false);
            return r;
        }
    };
    let session = unclaimed.session().clone();
    let bucket = ip.bucket();
    let counts = fleet.count_request(&bucket, &session.server_nonce, unclaimed.nonce(), &session.peer_hex).await;
    let redis_answered = counts.is_some();
    let nonce = unclaimed.nonce().to_string();
    let (ip_decision, identity_decision, claim) = match counts {
        Some(c) => {
            let ip_decision = app.edge.ip.decision(c.ip.hits, c.ip.ms_left, &bucket);
            let identity = c
                .identity
                .map(|i| app.edge.identity.decision(i.hits, i.ms_left, &ratelimit::identity_bucket(&session.peer_hex)));
            (ip_decision, identity, c.claim)
        }
        None => (app.edge.ip.check_ip(ip), None, None),
    };
    if !ip_decision.allowed {
        return ip_refused(app, metrics, &ip_decision);
    }
    let refused = match claim {
        Some(ClaimOutcome::Expired | ClaimOutcome::Retired) => {
            app.auth.sessions().remove(&session.server_nonce);
            Some(AuthError::SessionNotFound(session.server_nonce.clone()))
        }
        Some(ClaimOutcome::Replayed) => Some(AuthError::Replayed),
        Some(ClaimOutcome::Fresh { .. }) | None => None,
    };
    // After a fleet-wide claim, the local one too: the node that accepted a request keeps
    // refusing its replay while Redis is unavailable. A claim Redis did not see is shared
    // with it once it answers again.
    let verified = match refused.map_or_else(|| app.auth.claim_locally(unclaimed), Err) {
        Ok(v) => {
            if !redis_answered {
                fleet.journal_local_claim(&session.server_nonce, &nonce);
            }
            v
        }
        Err(e) => {
            let mut r = request_auth_failed(metrics, &e, parts.uri.path());
            rate_headers(&mut r, &app.edge.ip, &ip_decision, false);
            return r;
        }
    };
    let identity_decision =
        identity_decision.unwrap_or_else(|| app.edge.identity.check_identity(&verified.session().peer_hex));
    let mut r = respond(app, metrics, &parts, &body, &verified, &identity_decision).await;
    rate_headers(&mut r, &app.edge.ip, &ip_decision, false);
    r
}

/// A verified request past its identity limit: runs the route and signs the answer.
async fn respond(
    app: &App,
    metrics: &Recorder,
    parts: &http::request::Parts,
    body: &[u8],
    verified: &VerifiedRequest,
    identity_decision: &ratelimit::Decision,
) -> Response<Body> {
    // The per-identity limit (spec §2.1 step 12): after verification, so its 429 is signed.
    if !identity_decision.allowed {
        metrics.rate_limited(RateScope::Identity);
        let mut r =
            signed(app, verified, Reply { status: 429, body: RATE_LIMITED.as_bytes().to_vec(), retry_after: None });
        rate_headers(&mut r, &app.edge.identity, identity_decision, true);
        return r;
    }
    let path = parts.uri.path();
    let h = &parts.headers;
    let reply = match Route::find(parts.method.as_str(), path, &app.routing_prefix) {
        None => Reply::from(ApiError::RouteNotFound { method: parts.method.to_string(), path: path.to_string() }),
        Some(route) => match parse_json_body(h, body) {
            Err(e) => Reply::from(e),
            Ok(json_body) => {
                // The session's key is canonical already (`PublicKey::to_hex`).
                let identity = IdentityKey::from_canonical(&verified.session().peer_hex);
                let call =
                    Call { identity: &identity, query: Query::parse(parts.uri.query().unwrap_or("")), body: json_body };
                api::handle(&app.api, route, call).await
            }
        },
    };
    let mut r = signed(app, verified, reply);
    rate_headers(&mut r, &app.edge.identity, identity_decision, false);
    if app.observability.access_log || tracing::enabled!(target: "messagebox::access", tracing::Level::DEBUG) {
        r.extensions_mut().insert(AccessIdentity(verified.session().peer_hex.clone()));
    }
    r
}

/// The body as the original's `express.json()` would give it to the route: JSON objects and
/// arrays for an `application/json` content type, `{}` for anything else or an empty body.
fn parse_json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if !is_json(headers) || body.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => Ok(v),
        Ok(_) => Err(ApiError::InvalidJson(None)),
        Err(e) => Err(ApiError::InvalidJson(Some(e.to_string()))),
    }
}

fn signed(app: &App, verified: &VerifiedRequest, reply: Reply) -> Response<Body> {
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
    if let Some(secs) = reply.retry_after {
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    for (k, v) in auth.pairs() {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ip_as_express_trust_proxy() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7, 198.51.100.2"));
        assert_eq!(client_ip(peer, &h, 0), "10.0.0.9", "forwarded addresses ignored by default");
        assert_eq!(client_ip(peer, &h, 1), "198.51.100.2");
        assert_eq!(client_ip(peer, &h, 2), "203.0.113.7");
        assert_eq!(client_ip(peer, &h, 9), "203.0.113.7", "a short chain ends at its left-most entry");
        h.append("x-forwarded-for", HeaderValue::from_static("[2001:db8::1]:443"));
        assert_eq!(client_ip(peer, &h, 1), "2001:db8::1");
        h.insert("x-forwarded-for", HeaderValue::from_static("unknown"));
        assert_eq!(client_ip(peer, &h, 1), "invalid");
        assert_eq!(client_ip(peer, &HeaderMap::new(), 3), "10.0.0.9");
    }

    #[test]
    fn route_labels() {
        let l = |m: Method, p: &str| route_label(&m, p, "/api");
        assert_eq!(l(Method::POST, "/api/sendMessage"), RouteLabel::SendMessage);
        assert_eq!(l(Method::POST, "/sendMessage"), RouteLabel::Other, "the prefix is required");
        assert_eq!(l(Method::GET, "/api/permissions/quote"), RouteLabel::GetQuote);
        assert_eq!(l(Method::GET, "/api/sendMessage"), RouteLabel::Other, "wrong method");
        assert_eq!(l(Method::POST, "/.well-known/auth"), RouteLabel::Handshake);
        assert_eq!(l(Method::GET, "/socket.io/?EIO=4"), RouteLabel::Live);
        assert_eq!(l(Method::OPTIONS, "/api/sendMessage"), RouteLabel::Preflight);
        assert_eq!(l(Method::GET, "/healthz"), RouteLabel::Healthz);
        assert_eq!(l(Method::GET, "/api/health"), RouteLabel::Health);
        assert_eq!(l(Method::HEAD, "/ready"), RouteLabel::Ready);
        assert_eq!(l(Method::GET, "/docs/"), RouteLabel::Docs);
        assert_eq!(l(Method::GET, "/openapi.json"), RouteLabel::Docs);
        assert_eq!(l(Method::GET, "/wp-admin/x"), RouteLabel::Other);
    }

    #[test]
    fn probe_paths() {
        assert!(matches!(probe("/health", ""), Some(Probe::Live)));
        assert!(matches!(probe("/healthz", "/api"), Some(Probe::Live)));
        assert!(matches!(probe("/api/ready", "/api"), Some(Probe::Ready)));
        assert!(probe("/api/ready", "").is_none());
        assert!(probe("/apihealth", "/api").is_none());
        assert!(probe("/health/", "").is_none());
    }
}
