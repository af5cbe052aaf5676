//! No load-balancer affinity needed: an Engine.IO request for a session another node owns is
//! forwarded to that node and answered as if it had landed there.
//!
//! In a fleet every session id names its node ([`engineio::new_sid`]). A polling `GET`/`POST`
//! with such a `sid`, or a WebSocket upgrade for it, that lands on another node is sent on to
//! the owner at the address the node registry gives ([`Nodes::lookup`]): the owner's status,
//! headers and body go back to the client unchanged; an upgrade the owner accepts (`101`)
//! becomes a byte tunnel between the client and the owner. Everything else under
//! `/socket.io/` (handshakes, preflights, malformed requests) is answered where it lands, as
//! it is answered the same on every node.
//!
//! Rules, each in one place here:
//! * **No loops.** A forwarded request carries [`FORWARDED`]; a node never forwards a request
//!   that carries it, whatever its value ([`Forwarder::plan`]).
//! * **Dead or unknown owner.** Not registered, unreachable, or failing mid-way: the client
//!   gets the answer a request for an unknown session gets today (`400` "Session ID
//!   unknown", or the refused upgrade), so it reconnects through the balancer.
//! * **Bounded.** The client's connection keeps its slot in this node's connection caps while
//!   its request or tunnel is forwarded; the hop's connection counts in the owner's caps
//!   like any other (its peer address is this node's, as nginx's is for every request behind
//!   it); connecting takes at most [`CONNECT_TIMEOUT`], an answer at most the hop timeout
//!   (the Engine.IO client's own patience: `pingInterval + pingTimeout`), a tunnel that
//!   carries no byte for that long is closed, and an answer body is bounded.
//! * **Client address.** The hop appends the client's address to `X-Forwarded-For`; the owner
//!   trusts one more proxy hop than `TRUST_PROXY_HOPS` for a request whose [`FORWARDED`]
//!   value proves it came from a node of the fleet (a token only holders of
//!   `SERVER_PRIVATE_KEY` can compute), so it logs the address the first node saw.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, HOST, UPGRADE};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::nodes::Nodes;
use crate::auth::keys::{ct_eq, hmac_sha256, PrivateKey};
use crate::live::engineio::{self, EngineConfig, RequestHead, Route, SessionRequest, NODE_ID_LEN};

pub type Body = Full<Bytes>;

/// The header that marks a request forwarded by a node of the fleet. Its value is the
/// fleet's forwarding token (see the module doc).
pub const FORWARDED: &str = "x-messagebox-forwarded";
/// Longest wait for the owner to accept the hop's connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Headers that describe one connection, not the request: never copied across the hop.
const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"];

/// The 6 bytes of a node id from its 12 hex digits ([`super::Fleet::node_id`]).
pub fn node_id_bytes(node_id: &str) -> Option<[u8; NODE_ID_LEN]> {
    hex::decode(node_id).ok()?.try_into().ok()
}

/// What to do with a request under `/socket.io/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Answer it here.
    Local,
    /// Send it to node `node` (12 hex digits); `upgrade`: it is a WebSocket upgrade.
    Forward { node: String, upgrade: bool },
}

/// Why a hop failed (logged at debug; the client gets the unknown-session answer).
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    #[error("node URL {0:?} is not http(s)://host:port")]
    Url(String),
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("connecting to {0}: timed out")]
    ConnectTimeout(String),
    #[error("TLS with {addr}: {source}")]
    Tls { addr: String, source: std::io::Error },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the forwarded request: {0}")]
    Request(#[from] http::Error),
    #[error("the answer body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
}

/// Where a node is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    port: u16,
    /// `host:port` as the URL spells it (the hop's `Host`).
    authority: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, HopError> {
        let bad = || HopError::Url(url.to_string());
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad()),
        };
        let authority = uri.authority().ok_or_else(bad)?;
        let host = authority.host().trim_matches(['[', ']']).to_string();
        if host.is_empty() {
            return Err(bad());
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target { tls, host, port, authority: authority.as_str().to_string() })
    }

    async fn connect(&self) -> Result<Box<dyn Io>, HopError> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((self.host.as_str(), self.port))).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(HopError::Connect { addr, source }),
            Err(_) => return Err(HopError::ConnectTimeout(addr)),
        };
        let _ = tcp.set_nodelay(true);
        if !self.tls {
            return Ok(Box::new(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| HopError::Tls { addr: addr.clone(), source: std::io::Error::other(e) })?;
        let connect = tokio_rustls::TlsConnector::from(crate::outbound::tls()).connect(name, tcp);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(s)) => Ok(Box::new(s)),
            Ok(Err(source)) => Err(HopError::Tls { addr, source }),
            Err(_) => Err(HopError::ConnectTimeout(addr)),
        }
    }
}

/// A hop's byte stream: TCP, or TLS over TCP for an `https://` node URL.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The forwarding of one node (shared by every core).
pub struct Forwarder {
    nodes: Arc<Nodes>,
    node_id: String,
    /// The fleet's forwarding token: proves a request came from a node of the fleet.
    token: HeaderValue,
    /// Longest wait for an answer; a tunnel idle this long is closed.
    hop_timeout: Duration,
    /// Largest answer body relayed (a polling payload: at most the session's write buffer
    /// and one packet).
    max_answer_bytes: usize,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("node_id", &self.node_id).field("hop_timeout", &self.hop_timeout).finish()
    }
}

impl Forwarder {
    /// The forwarding of the node `nodes` registers. `server_key` (shared by the fleet) keys
    /// the forwarding token; `engine` gives the timeouts and sizes of the hop.
    pub fn new(nodes: Arc<Nodes>, server_key: &PrivateKey, engine: &EngineConfig) -> Forwarder {
        let token = hmac_sha256(&server_key.to_bytes(), b"messagebox fleet: a forwarded Engine.IO request");
        Forwarder {
            node_id: nodes.fleet().node_id().to_string(),
            nodes,
            token: HeaderValue::from_str(&hex::encode(token)).expect("hex is a header value"),
            hop_timeout: engine.ping_interval + engine.ping_timeout,
            max_answer_bytes: engine.max_write_buffer.saturating_mul(2).saturating_add(engine.max_payload),
        }
    }

    pub fn nodes(&self) -> &Arc<Nodes> {
        &self.nodes
    }

    /// Local, or forward to whom. Only requests for an existing session are forwarded
    /// (polls, posts, upgrades), and never one that was forwarded already.
    pub fn plan(&self, method: &str, query: &str, headers: &HeaderMap, websocket_upgrade: bool) -> Plan {
        if headers.contains_key(FORWARDED) {
            return Plan::Local;
        }
        let head = RequestHead { method, query, websocket_upgrade };
        let Ok(Route::Session { sid, request }) = engineio::route(&head) else { return Plan::Local };
        let upgrade = match request {
            SessionRequest::Poll | SessionRequest::Post => false,
            SessionRequest::Upgrade => true,
            // Refused the same way on every node.
            SessionRequest::OtherMethod | SessionRequest::Invalid(_) => return Plan::Local,
        };
        match engineio::sid_node(&sid).map(hex::encode) {
            Some(node) if node != self.node_id => Plan::Forward { node, upgrade },
            _ => Plan::Local,
        }
    }

    /// Whether `headers` carry this fleet's forwarding token.
    pub fn is_fleet_hop(&self, headers: &HeaderMap) -> bool {
        headers.get(FORWARDED).is_some_and(|v| ct_eq(v.as_bytes(), self.token.as_bytes()))
    }

    /// The proxy hops to trust for a request's client address (`TRUST_PROXY_HOPS` = `hops`):
    /// one more for a request a node of the fleet forwarded (it appended its own client).
    pub fn client_hops(&self, headers: &HeaderMap, hops: u8) -> u8 {
        if self.is_fleet_hop(headers) {
            hops.saturating_add(1)
        } else {
            hops
        }
    }

    /// The head of the request the hop sends: the client's headers without the per-connection
    /// ones, `Host` the owner's, the client's address appended to `X-Forwarded-For`, the
    /// forwarding token, and `Connection: close` (one request per hop connection) or the
    /// upgrade headers.
    fn hop_headers(&self, from: &HeaderMap, peer: IpAddr, authority: &str, upgrade: bool) -> HeaderMap {
        let mut h = HeaderMap::with_capacity(from.len() + 4);
        for (k, v) in from {
            // `Expect: 100-continue` was this node's to answer (hyper does, as the body is read).
            let ours = [FORWARDED, "x-forwarded-for", "expect"];
            if !HOP_BY_HOP.contains(&k.as_str()) && !ours.contains(&k.as_str()) {
                h.append(k.clone(), v.clone());
            }
        }
        if let Ok(v) = HeaderValue::from_str(authority) {
            h.insert(HOST, v);
        }
        if let Some(host) = from.get(HOST) {
            if !h.contains_key("x-forwarded-host") {
                h.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
            }
        }
        let mut chain: Vec<String> =
            from.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect();
        chain.push(peer.to_string());
        if let Ok(v) = HeaderValue::from_str(&chain.join(", ")) {
            h.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
        h.insert(HeaderName::from_static(FORWARDED), self.token.clone());
        if upgrade {
            h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            h.insert(UPGRADE, from.get(UPGRADE).cloned().unwrap_or(HeaderValue::from_static("websocket")));
        } else {
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        h
    }

    /// Forwards `req` (which landed on this node from `peer`) when another node owns its
    /// session; otherwise hands it back to be answered here. A request for a node that is not
    /// registered or cannot be reached is handed back too: this node does not know the
    /// session, so the client gets the unknown-session answer and reconnects.
    pub async fn handle(&self, peer: SocketAddr, req: Request<Incoming>) -> Result<Response<Body>, Request<Incoming>> {
        let upgrade_header = crate::live::driver::http::is_websocket_upgrade(&req);
        let plan = self.plan(req.method().as_str(), req.uri().query().unwrap_or(""), req.headers(), upgrade_header);
        let Plan::Forward { node, upgrade } = plan else { return Err(req) };
        let Some(url) = self.nodes.lookup(&node).await else {
            tracing::debug!(node, "Engine.IO request for a node that is not registered; answered here");
            return Err(req);
        };
        let target = match Target::parse(&url) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(node, error = %e, "a node registered an unusable URL");
                return Err(req);
            }
        };
        let io = match target.connect().await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(node, error = %e, "the owner of an Engine.IO session is unreachable; answered here");
                return Err(req);
            }
        };
        let answer = if upgrade {
            self.upgrade(io, &target, peer, req).await
        } else {
            self.exchange(io, &target, peer, req).await
        };
        Ok(match answer {
            Ok(r) => {
                tracing::debug!(node, upgrade, status = r.status().as_u16(), "Engine.IO request forwarded");
                r
            }
            Err(e) => {
                tracing::debug!(node, error = %e, "forwarding an Engine.IO request failed");
                crate::live::driver::http::unknown_session(upgrade)
            }
        })
    }

    /// A polling GET or POST: the request (its body streamed) and the owner's answer.
    async fn exchange(
        &self,
        io: Box<dyn Io>,
        target: &Target,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, HopError> {
        let (parts, body) = req.into_parts();
        let mut hop = Request::builder().method(parts.method).uri(path_and_query(&parts.uri)).body(body)?;
        *hop.headers_mut() = self.hop_headers(&parts.headers, peer.ip(), &target.authority, false);
        let limit = self.max_answer_bytes;
        let exchange = async move {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let answer = sender.send_request(hop).await?;
            let (head, body) = answer.into_parts();
            let body = Limited::new(body, limit).collect().await.map_err(HopError::Body)?.to_bytes();
            Ok::<_, HopError>(relay(head.status, &head.headers, body))
        };
        tokio::time::timeout(self.hop_timeout, exchange).await.map_err(|_| HopError::Timeout(self.hop_timeout))?
    }

    /// A WebSocket upgrade: the owner's answer; on `101`, a tunnel between the client's
    /// connection and the owner's, once hyper has written the `101`.
    async fn upgrade(
        &self,
        io: Box<dyn Io>,
        target: &Target,
        peer: SocketAddr,
        mut req: Request<Incoming>,
    ) -> Result<Response<Body>, HopError> {
        let client_side = hyper::upgrade::on(&mut req);
        let mut hop =
            Request::builder().method(req.method()).uri(path_and_query(req.uri())).body(Empty::<Bytes>::new())?;
        *hop.headers_mut() = self.hop_headers(req.headers(), peer.ip(), &target.authority, true);
        let limit = self.max_answer_bytes;
        let exchange = async move {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
            });
            let answer = sender.send_request(hop).await?;
            if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
                let (head, body) = answer.into_parts();
                let body = Limited::new(body, limit).collect().await.map_err(HopError::Body)?.to_bytes();
                let mut r = relay(head.status, &head.headers, body);
                // As the owner refuses an upgrade: the connection ends with the answer.
                r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                return Ok::<_, HopError>((r, None));
            }
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            // The owner's 101 as it wrote it (Upgrade, Connection, Sec-WebSocket-Accept, CORS).
            *r.headers_mut() = answer.headers().clone();
            Ok((r, Some(hyper::upgrade::on(answer))))
        };
        let timed = tokio::time::timeout(self.hop_timeout, exchange).await;
        let (r, owner_side) = timed.map_err(|_| HopError::Timeout(self.hop_timeout))??;
        let Some(owner_side) = owner_side else { return Ok(r) };
        let idle = self.hop_timeout;
        tokio::spawn(async move {
            let (client, owner) = match tokio::join!(client_side, owner_side) {
                (Ok(c), Ok(o)) => (c, o),
                (c, o) => {
                    tracing::debug!(
                        client = c.is_ok(),
                        owner = o.is_ok(),
                        "a forwarded WebSocket upgrade did not complete"
                    );
                    return;
                }
            };
            tunnel(TokioIo::new(client), TokioIo::new(owner), idle).await;
        });
        Ok(r)
    }
}

/// `path?query` of a request target (the hop sends origin-form).
fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query().map_or_else(|| "/".to_string(), |p| p.as_str().to_string())
}

/// The owner's answer as this node's: status, headers but the per-connection ones (hyper
/// sets `Content-Length` from the body), body.
fn relay(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    for (k, v) in headers {
        if !HOP_BY_HOP.contains(&k.as_str()) && k != http::header::CONTENT_LENGTH {
            h.append(k.clone(), v.clone());
        }
    }
    r
}

/// Copies bytes both ways until either side closes or nothing moves for `idle`.
async fn tunnel<A, B>(a: A, b: B, idle: Duration)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let clock = Arc::new(Clock::new());
    let mut a = Watched { inner: a, clock: clock.clone() };
    let mut b = Watched { inner: b, clock: clock.clone() };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let deadline = clock.last() + idle;
        tokio::select! {
            _ = &mut copy => return,
            _ = tokio::time::sleep_until(deadline.into()) => {
                if clock.last() + idle <= Instant::now() {
                    tracing::debug!(idle_s = idle.as_secs(), "forwarded WebSocket idle; closing it");
                    return;
                }
            }
        }
    }
}

/// When a byte last moved through a tunnel.
struct Clock {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Clock {
    fn new() -> Clock {
        Clock { epoch: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream whose reads touch a [`Clock`] (every byte a tunnel moves is read from one side).
struct Watched<S> {
    inner: S,
    clock: Arc<Clock>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.clock.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::nodes::NodeTiming;
    use crate::fleet::{Fleet, FleetConfig};

    fn forwarder(key: u8) -> Forwarder {
        let fleet = Fleet::new(FleetConfig { redis_url: "redis://127.0.0.1:1/0".into(), node_url: None }).unwrap();
        let nodes = Nodes::new(Arc::new(fleet), NodeTiming::default());
        Forwarder::new(nodes, &PrivateKey::from_bytes(&[key; 32]).unwrap(), &EngineConfig::default())
    }

    fn sid_of(node: &str) -> String {
        engineio::new_sid(1, Some(&node_id_bytes(node).unwrap()), &mut rand::rng())
    }

    #[test]
    fn node_ids() {
        assert_eq!(node_id_bytes("a1b2c3d4e5f6"), Some([0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6]));
        assert_eq!(node_id_bytes("a1b2c3d4e5"), None);
        assert_eq!(node_id_bytes("zzb2c3d4e5f6"), None);
    }

    #[test]
    fn only_other_nodes_sessions_are_forwarded() {
        let f = forwarder(1);
        let me = f.node_id.clone();
        let other = "0123456789ab";
        let none = HeaderMap::new();
        let plan = |method: &str, query: &str, h: &HeaderMap, up: bool| f.plan(method, query, h, up);
        let q = |sid: &str, transport: &str| format!("EIO=4&transport={transport}&t=x&sid={sid}");
        let theirs = sid_of(other);
        let fwd = |upgrade| Plan::Forward { node: other.to_string(), upgrade };
        assert_eq!(plan("GET", &q(&theirs, "polling"), &none, false), fwd(false), "a poll");
        assert_eq!(plan("POST", &q(&theirs, "polling"), &none, false), fwd(false), "a post");
        assert_eq!(plan("GET", &q(&theirs, "websocket"), &none, true), fwd(true), "an upgrade");
        // Answered the same anywhere: handshakes, other methods, malformed requests.
        assert_eq!(plan("GET", "EIO=4&transport=polling&t=x", &none, false), Plan::Local, "a handshake");
        assert_eq!(plan("PUT", &q(&theirs, "polling"), &none, false), Plan::Local);
        assert_eq!(plan("GET", &q(&theirs, "websocket"), &none, false), Plan::Local, "websocket without upgrade");
        assert_eq!(plan("GET", &q(&theirs, "flash"), &none, false), Plan::Local);
        assert_eq!(plan("OPTIONS", &q(&theirs, "polling"), &none, false), Plan::Local);
        // Ours, single-node ids, garbage.
        assert_eq!(plan("GET", &q(&sid_of(&me), "polling"), &none, false), Plan::Local);
        assert_eq!(plan("GET", &q("BluSmGmBecFyUVGFAAAA", "polling"), &none, false), Plan::Local);
        assert_eq!(plan("GET", &q("x", "polling"), &none, false), Plan::Local);
        // Never twice: any marker, valid or not, keeps a request here.
        let mut marked = HeaderMap::new();
        marked.insert(FORWARDED, HeaderValue::from_static("anything"));
        assert_eq!(plan("GET", &q(&theirs, "polling"), &marked, false), Plan::Local);
        marked.insert(FORWARDED, f.token.clone());
        assert_eq!(plan("GET", &q(&theirs, "websocket"), &marked, true), Plan::Local);
    }

    #[test]
    fn the_token_is_the_fleets() {
        let (a, b, stranger) = (forwarder(1), forwarder(1), forwarder(2));
        assert_eq!(a.token, b.token, "one token per server key, whatever the node");
        assert_ne!(a.node_id, b.node_id);
        assert_ne!(a.token, stranger.token);
        assert_eq!(a.token.len(), 64);
        let mut h = HeaderMap::new();
        assert_eq!(a.client_hops(&h, 1), 1);
        h.insert(FORWARDED, stranger.token.clone());
        assert!(!a.is_fleet_hop(&h));
        assert_eq!(a.client_hops(&h, 1), 1, "a forged marker buys no trust");
        h.insert(FORWARDED, b.token.clone());
        assert!(a.is_fleet_hop(&h));
        assert_eq!((a.client_hops(&h, 0), a.client_hops(&h, 1), a.client_hops(&h, 255)), (1, 2, 255));
    }

    #[test]
    fn hop_headers() {
        let f = forwarder(1);
        let mut from = HeaderMap::new();
        for (k, v) in [
            ("host", "lb.example"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain;charset=UTF-8"),
            ("content-length", "12"),
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.0.0.1"),
            ("accept", "*/*"),
            ("expect", "100-continue"),
        ] {
            from.append(k, HeaderValue::from_static(v));
        }
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let h = f.hop_headers(&from, peer, "10.0.0.9:8080", false);
        let get = |k: &str| h.get_all(k).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(get("host"), ["10.0.0.9:8080"]);
        assert_eq!(get("x-forwarded-host"), ["lb.example"]);
        assert_eq!(get("x-forwarded-for"), ["203.0.113.7, 10.0.0.1, 10.0.0.2"]);
        assert_eq!(get("connection"), ["close"]);
        assert_eq!(get("content-type"), ["text/plain;charset=UTF-8"]);
        assert_eq!(get("content-length"), ["12"], "the body is streamed as it came");
        assert_eq!(get("accept"), ["*/*"]);
        for gone in ["keep-alive", "transfer-encoding", "upgrade", "expect"] {
            assert!(get(gone).is_empty(), "{gone}");
        }
        assert!(f.is_fleet_hop(&h));
        // The node behind it computes the client address the first node saw.
        let owner = f.client_hops(&h, 1);
        assert_eq!(crate::http::client_ip("10.0.0.5".parse().unwrap(), &h, owner), "10.0.0.1");
        assert_eq!(crate::http::client_ip(peer, &from, 1), "10.0.0.1", "= what the first node saw");

        let mut up = HeaderMap::new();
        for (k, v) in [
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-version", "13"),
        ] {
            up.append(k, HeaderValue::from_static(v));
        }
        let h = f.hop_headers(&up, peer, "n1:3000", true);
        assert_eq!(h.get("connection").unwrap(), "Upgrade");
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("sec-websocket-key").unwrap(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(h.get("x-forwarded-for").unwrap(), "10.0.0.2");
        assert!(!h.contains_key("x-forwarded-host"), "no Host, nothing to pass on");
    }

    #[test]
    fn targets() {
        let t = Target::parse("http://10.0.0.5:8080").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port, t.authority.as_str()), (false, "10.0.0.5", 8080, "10.0.0.5:8080"));
        let t = Target::parse("https://n1.example").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (true, "n1.example", 443));
        let t = Target::parse("http://[::1]:81").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.authority.as_str()), ("::1", 81, "[::1]:81"));
        for bad in ["", "ftp://x:1", "10.0.0.5:8080", "http://"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relayed_answers_drop_connection_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("content-type", "text/plain; charset=UTF-8"),
            ("cache-control", "no-store"),
            ("access-control-allow-origin", "*"),
            ("connection", "keep-alive"),
            ("content-length", "3"),
            ("keep-alive", "timeout=5"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        let r = relay(StatusCode::BAD_REQUEST, &h, Bytes::from_static(b"abc"));
        assert_eq!(r.status(), 400);
        let names: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "cache-control", "access-control-allow-origin"]);
    }

    #[tokio::test]
    async fn tunnels_copy_both_ways_and_close_when_idle() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, a) = tokio::io::duplex(64);
        let (b, mut owner) = tokio::io::duplex(64);
        let idle = Duration::from_millis(300);
        let t = tokio::spawn(tunnel(a, b, idle));
        let mut buf = [0u8; 5];
        for _ in 0..4 {
            // Traffic every 150 ms keeps it open past the idle bound.
            client.write_all(b"hello").await.unwrap();
            owner.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"hello");
            owner.write_all(b"world").await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"world");
            tokio::time::sleep(idle / 2).await;
        }
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), t).await.expect("closed when idle").unwrap();
        let waited = started.elapsed();
        assert!(waited >= idle / 3 && waited < idle * 3, "closed after {waited:?}");
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "the client sees the end");
        assert_eq!(owner.read(&mut buf).await.unwrap(), 0, "so does the owner");
    }
}
