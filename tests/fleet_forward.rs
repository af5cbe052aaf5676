//! No load-balancer affinity (issue 11): an Engine.IO request that lands on a node that does
//! not own its session is forwarded to the owner (`src/fleet/forward.rs`), found through the
//! node registry in Redis (`src/fleet/nodes.rs`).
//!
//! Nodes are `messagebox` processes on one MySQL database and one private Redis, sharing
//! `SERVER_PRIVATE_KEY`, as a fleet runs. Raw HTTP for the polling transport and a
//! tokio-tungstenite client for the upgrade; then the real `@bsv/authsocket-client`
//! (`tests/interop/fleet_forward.mjs`) through a round-robin TCP proxy (every new connection
//! to the next node, nginx's default). Skipped without MySQL, `redis-server` or the npm
//! packages, unless `MESSAGEBOX_REQUIRE_ALL=1`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{request, PrivateRedis, Proc};
use common::{Kind, TestDb, REQUIRE_ALL_ENV};
use futures_util::{SinkExt, StreamExt};
use messagebox::auth::keys::PrivateKey;
use tokio_tungstenite::tungstenite::Message;

/// Nodes of one fleet: one database, one Redis, one server key.
struct Fleet {
    _db: TestDb,
    redis: PrivateRedis,
    key: PrivateKey,
    dir: tempfile::TempDir,
    nodes: Vec<Option<Proc>>,
}

impl Fleet {
    /// `None`: MySQL or redis-server missing (skipped, or failed under REQUIRE_ALL).
    fn start(n: usize) -> Option<Fleet> {
        let db = TestDb::new(Kind::Mysql)?;
        let redis = PrivateRedis::start()?;
        let mut fleet =
            Fleet { _db: db, redis, key: PrivateKey::random(), dir: tempfile::tempdir().unwrap(), nodes: Vec::new() };
        for _ in 0..n {
            fleet.add_node();
        }
        Some(fleet)
    }

    fn add_node(&mut self) {
        let i = self.nodes.len();
        let log = std::fs::File::create(self.dir.path().join(format!("node{i}.log"))).unwrap();
        let key = self.key.to_hex();
        let env = [
            ("SERVER_PRIVATE_KEY", key.as_str()),
            ("DATABASE_URL", self._db.url.as_str()),
            ("REDIS_URL", &self.redis.url()),
            ("ENABLE_WEBSOCKETS", "true"),
            ("MESSAGEBOX_THREADS", "2"),
            ("RUST_LOG", "info,messagebox::fleet=debug"),
            ("NO_COLOR", "1"),
        ];
        self.nodes.push(Some(Proc::spawn(&env, self.dir.path(), Stdio::from(log))));
        // Start-up is done (and the node registered) when it says it listens.
        let path = self.dir.path().join(format!("node{i}.log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&path).unwrap_or_default().contains("messagebox listening") {
            assert!(Instant::now() < deadline, "node {i} did not finish starting:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].as_ref().expect("node running").addr
    }

    fn url(&self, i: usize) -> String {
        format!("http://{}", self.addr(i))
    }

    fn kill(&mut self, i: usize) {
        let mut p = self.nodes[i].take().expect("node running");
        let mut child = p.child.take().unwrap();
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Every node's whole log.
    fn logs_in_full(&self) -> String {
        (0..self.nodes.len())
            .map(|i| std::fs::read_to_string(self.dir.path().join(format!("node{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The end of every node's log, for a failure message.
    fn logs(&self) -> String {
        (0..self.nodes.len())
            .map(|i| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("node{i}.log"))).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
                format!("----- node {i} -----\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn redis(&self) -> redis::Connection {
        redis::Client::open(self.redis.url()).unwrap().get_connection().unwrap()
    }

    /// The node registry as Redis holds it: node id → URL.
    fn registry(&self) -> Vec<(String, String)> {
        let mut c = self.redis();
        let keys: Vec<String> = redis::cmd("KEYS").arg("messagebox:node:*").query(&mut c).unwrap();
        let mut out: Vec<(String, String)> = keys
            .iter()
            .map(|k| {
                let url: String = redis::cmd("GET").arg(k).query(&mut c).unwrap();
                (k.trim_start_matches("messagebox:node:").to_string(), url)
            })
            .collect();
        out.sort();
        out
    }
}

const UNKNOWN_SID: &str = r#"{"code":1,"message":"Session ID unknown"}"#;

/// A polling handshake on `addr`: the new sid.
fn open_polling(addr: SocketAddr) -> String {
    let (status, _, body) = request(addr, "GET", "/socket.io/?EIO=4&transport=polling&t=a", &[], b"");
    assert_eq!(status, 200, "{body}");
    let open: serde_json::Value = serde_json::from_str(body.strip_prefix('0').expect("an open packet")).unwrap();
    open["sid"].as_str().unwrap().to_string()
}

fn poll_path(sid: &str) -> String {
    format!("/socket.io/?EIO=4&transport=polling&t=b&sid={sid}")
}

/// The node id a fleet sid names (bytes 1..7 of its 21).
fn owner_of(sid: &str) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sid).unwrap();
    assert_eq!(bytes.len(), 21, "a fleet sid: {sid}");
    hex::encode(&bytes[1..7])
}

/// A session opened on node 0 is served through node 1 (polls and posts), as if there; a
/// marked (already forwarded) request is never forwarded again; a sid of an unknown node or
/// of a node that died gets the unknown-session answer at once; the dead node's registration
/// expires by itself, a stopped node's is deleted.
#[test]
fn polling_requests_follow_the_session_to_its_node() {
    let Some(mut fleet) = Fleet::start(2) else { return };
    let (a, b) = (fleet.addr(0), fleet.addr(1));
    let sid = open_polling(a);
    assert_eq!(sid.len(), 28, "fleet sids carry the node id: {sid}");
    // The registry names both nodes; the sid names node 0.
    let registry = fleet.registry();
    assert_eq!(registry.len(), 2, "{registry:?}");
    let owner = owner_of(&sid);
    assert!(registry.contains(&(owner.clone(), fleet.url(0))), "{owner} in {registry:?}");

    // Socket.IO CONNECT posted through B, its answer polled through B.
    let (status, head, body) =
        request(b, "POST", &poll_path(&sid), &[("Content-Type", "text/plain;charset=UTF-8")], b"40");
    assert_eq!((status, body.as_str()), (200, "ok"), "{head}\n{}", fleet.logs());
    assert!(head.contains("content-type: text/html"), "the owner's headers: {head}");
    let (status, head, body) = request(b, "GET", &poll_path(&sid), &[], b"");
    assert_eq!(status, 200, "{body}\n{}", fleet.logs());
    assert!(body.starts_with(r#"40{"sid":""#), "the CONNECT answer: {body}");
    assert!(head.contains("cache-control: no-store") && head.contains("access-control-allow-origin: *"), "{head}");
    // Two polls at once, one through each node: the owner's session refuses the overlap
    // (engine.io closes it), which it only can if both reached the same session.
    let held = {
        let path = poll_path(&sid);
        std::thread::spawn(move || request(a, "GET", &path, &[], b""))
    };
    std::thread::sleep(Duration::from_millis(300));
    let (status, _, body) = request(b, "GET", &poll_path(&sid), &[], b"");
    assert_eq!((status, body.as_str()), (400, ""), "overlapping polls, one forwarded");
    assert_eq!(held.join().unwrap().2, "1", "the held poll carries the close");

    // Never forwarded twice: a marked request is answered where it lands.
    for marker in ["anything", "0000"] {
        let (status, _, body) = request(b, "GET", &poll_path(&sid), &[("X-Messagebox-Forwarded", marker)], b"");
        assert_eq!((status, body.as_str()), (400, UNKNOWN_SID), "marker {marker}");
    }
    // A node that never existed: unknown session.
    let stranger = {
        use base64::Engine as _;
        let mut bytes = [7u8; 21];
        bytes[1..7].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 1]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let (status, _, body) = request(b, "GET", &poll_path(&stranger), &[], b"");
    assert_eq!((status, body.as_str()), (400, UNKNOWN_SID));

    // Node 0 dies (SIGKILL): its session's requests get the unknown-session answer through
    // node 1 at once (the client reconnects), though the registration still names node 0.
    fleet.kill(0);
    let started = Instant::now();
    let (status, _, body) = request(b, "GET", &poll_path(&sid), &[], b"");
    assert_eq!((status, body.as_str()), (400, UNKNOWN_SID));
    assert!(started.elapsed() < Duration::from_secs(3), "answered in {:?}", started.elapsed());
    let mut c = fleet.redis();
    let ttl: i64 = redis::cmd("TTL").arg(format!("messagebox:node:{owner}")).query(&mut c).unwrap();
    assert!((1..=15).contains(&ttl), "the dead node's registration expires by itself (TTL {ttl})");
    // It does (the 15 s TTL, refreshed every 5 s, so gone within ~15 s of the kill).
    let deadline = Instant::now() + Duration::from_secs(20);
    while fleet.registry().iter().any(|(id, _)| *id == owner) {
        assert!(Instant::now() < deadline, "node 0's registration outlived its TTL");
        std::thread::sleep(Duration::from_millis(250));
    }
    // A node that stops cleanly deletes its registration at once.
    let survivor = fleet.registry();
    assert_eq!(survivor.len(), 1, "{survivor:?}");
    fleet.nodes[1].take().unwrap().stop();
    assert_eq!(fleet.registry(), vec![], "deleted on SIGTERM");
}

/// Redis going away does not stop forwarding (each node uses the address it last saw), and
/// after Redis restarts empty every node registers again within one refresh period.
#[test]
fn forwarding_rides_out_a_redis_restart() {
    let Some(mut fleet) = Fleet::start(2) else { return };
    let (a, b) = (fleet.addr(0), fleet.addr(1));
    let sid = open_polling(a);
    let post = |via, body: &[u8]| request(via, "POST", &poll_path(&sid), &[], body);
    assert_eq!(post(b, b"40").0, 200, "forwarded, and node 1 now knows node 0's address");
    fleet.redis.stop();
    // The cached address serves for a while (5 s fresh, then up to 5 minutes while Redis
    // fails); a poll through node 1 gets node 0's CONNECT answer.
    std::thread::sleep(Duration::from_secs(6));
    let (status, _, body) = request(b, "GET", &poll_path(&sid), &[], b"");
    assert_eq!(status, 200, "{body}\n{}", fleet.logs());
    assert!(body.starts_with("40{"), "{body}");
    fleet.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(12);
    while fleet.registry().len() < 2 {
        assert!(Instant::now() < deadline, "nodes did not register again: {:?}\n{}", fleet.registry(), fleet.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    // A new session on node 0, found by node 1 through the new registry.
    let sid2 = open_polling(a);
    let (status, _, body) = request(b, "POST", &poll_path(&sid2), &[], b"40");
    assert_eq!((status, body.as_str()), (200, "ok"), "{}", fleet.logs());
}

/// A WebSocket upgrade for node 0's session, sent to node 1, becomes a tunnel to node 0: the
/// 101, the probe, the upgrade, and then node 0's own packets (the server-initiated BRC-103
/// handshake of a socket that did not authenticate) arrive through it.
#[test]
fn websocket_upgrade_through_another_node_tunnels_to_the_owner() {
    let Some(mut fleet) = Fleet::start(2) else { return };
    let (a, b) = (fleet.addr(0), fleet.addr(1));
    let sid = open_polling(a);
    let (status, _, _) = request(b, "POST", &poll_path(&sid), &[], b"40");
    assert_eq!(status, 200);
    let (_, _, body) = request(a, "GET", &poll_path(&sid), &[], b"");
    assert!(body.starts_with("40{"), "{body}");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url = format!("ws://{b}/socket.io/?EIO=4&transport=websocket&sid={sid}");
        let tcp = tokio::net::TcpStream::connect(b).await.unwrap();
        // tungstenite checks the 101 and its Sec-WebSocket-Accept.
        let (mut ws, response) =
            tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::client_async(url, tcp))
                .await
                .expect("the upgrade is answered")
                .expect("101 through node 1");
        assert_eq!(response.headers()["access-control-allow-origin"], "*", "node 0's 101 headers");
        ws.send(Message::text("2probe")).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "3probe");
        ws.send(Message::text("5")).await.unwrap();
        // Node 0's session is on the WebSocket now: a poll for it is a transport mismatch.
        let (status, _, body) =
            tokio::task::spawn_blocking(move || request(a, "GET", &poll_path(&sid), &[], b"")).await.unwrap();
        assert_eq!((status, body.as_str()), (400, r#"{"code":3,"message":"Bad request"}"#));
        // The server-initiated handshake (3 s after CONNECT without one) crosses the tunnel.
        let frame = next_text(&mut ws).await;
        assert!(frame.starts_with(r#"42["authMessage","#), "{frame}");
        ws.close(None).await.unwrap();
    });

    // An upgrade for a dead node's session is refused as an unknown one.
    let sid = open_polling(a);
    fleet.kill(0);
    let key = ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    let headers = [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"), key];
    let (status, _, body) =
        request(b, "GET", &format!("/socket.io/?EIO=4&transport=websocket&sid={sid}"), &headers, b"");
    // As an upgrade for an unknown sid is refused on a single node.
    assert_eq!((status, body.as_str()), (400, "Session ID unknown"), "{}", fleet.logs());
}

/// The next frame, which must be text (bounded).
async fn next_text(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> String {
    match tokio::time::timeout(Duration::from_secs(15), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The real client through a round-robin balancer
// ---------------------------------------------------------------------------------------------

/// A TCP proxy that sends every new connection to the next backend in turn (nginx's default
/// `upstream` balancing, without affinity). Stops accepting when dropped.
struct RoundRobin {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
}

impl RoundRobin {
    fn start(backends: Vec<SocketAddr>) -> RoundRobin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop2, accepted2) = (stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let n = accepted2.fetch_add(1, Ordering::Relaxed);
                let Ok(backend) = TcpStream::connect(backends[n % backends.len()]) else { continue };
                for (mut from, mut to) in
                    [(client.try_clone().unwrap(), backend.try_clone().unwrap()), (backend, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        RoundRobin { addr, stop, accepted }
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("interop")
}

/// node and the npm packages there; otherwise a loud skip (a failure under REQUIRE_ALL).
fn node_available() -> bool {
    let node = Command::new("node").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    let packages = ["@bsv/sdk", "@bsv/message-box-client", "@bsv/authsocket-client"]
        .iter()
        .all(|p| interop_dir().join("node_modules").join(p).join("package.json").is_file());
    if node && packages {
        return true;
    }
    assert!(
        std::env::var(REQUIRE_ALL_ENV).as_deref() != Ok("1"),
        "node or tests/interop/node_modules missing (npm ci --prefix tests/interop)"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED: node or tests/interop/node_modules missing");
    false
}

/// Runs a node script to its end (bounded); its output, and whether every check passed.
fn run_node(script: &str, args: &[&str], timeout: Duration) -> (bool, String) {
    let mut child = Command::new("node")
        .current_dir(interop_dir())
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let (tx, rx) = std::sync::mpsc::channel();
    for stream in
        [Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>, Box::new(child.stderr.take().unwrap())]
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        out.push(line);
    }
    // Its output ended: it exits within moments, or is killed at the deadline.
    let finished = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let suite = script.trim_end_matches(".mjs");
    let summary = out.iter().rev().find_map(|l| l.strip_prefix(&format!("{suite}: "))).unwrap_or_default().to_string();
    let passed = finished.is_some_and(|s| s.success()) && summary.ends_with(" 0 failed") && !summary.starts_with("0 ");
    (passed, out.join("\n"))
}

/// `@bsv/authsocket-client` through a round-robin proxy in front of three nodes: with the
/// default transports, polling only and WebSocket only it connects, authenticates, joins,
/// sends to itself live and receives messages sent over HTTP on the node that owns its
/// session — its polls and posts land on every node in turn. With three nodes the default
/// transports' upgrade (the client's third connection: handshake, CONNECT post, WebSocket)
/// always lands on a node that does not own the session, so a tunnel carries it.
#[test]
fn authsocket_client_through_a_round_robin_balancer() {
    if !node_available() {
        return;
    }
    let Some(fleet) = Fleet::start(3) else { return };
    let proxy = RoundRobin::start(vec![fleet.addr(0), fleet.addr(1), fleet.addr(2)]);
    let nodes: Vec<String> = fleet.registry().into_iter().map(|(id, url)| format!("{id}={url}")).collect();
    assert_eq!(nodes.len(), 3, "every node registered: {nodes:?}");
    let url = format!("http://{}", proxy.addr);
    let identity = fleet.key.public_key().to_hex();
    let (passed, output) = run_node(
        "fleet_forward.mjs",
        &["--url", &url, "--server-identity", &identity, "--nodes", &nodes.join(",")],
        Duration::from_secs(240),
    );
    println!("{output}");
    assert!(passed, "fleet_forward.mjs failed:\n{output}\n{}", fleet.logs());
    // The balancer spread the clients' connections.
    assert!(proxy.accepted.load(Ordering::Relaxed) >= 6, "{} connections", proxy.accepted.load(Ordering::Relaxed));
    let sessions = output.lines().filter(|l| l.starts_with("NOTE fleet_forward:")).count();
    assert_eq!(sessions, 3, "one session per transport");
    // And the nodes did forward (the polling-only client alone cannot work without it).
    let logs = fleet.logs_in_full();
    let forwarded = logs.lines().filter(|l| l.contains("Engine.IO request forwarded")).count();
    let tunnels =
        logs.lines().filter(|l| l.contains("Engine.IO request forwarded") && l.contains("upgrade=true")).count();
    println!("{forwarded} requests forwarded, {tunnels} of them upgrades");
    assert!(forwarded >= 4, "{forwarded} forwarded requests");
    assert!(tunnels >= 1, "the default transports' upgrade went through a tunnel");
}
