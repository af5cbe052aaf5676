//! Sessions, replay claims and rate limits across the nodes of a fleet (`REDIS_URL`,
//! `src/fleet/sessions.rs`, `src/fleet/limits.rs`): a BRC-103 session made on one node works
//! on every node, a request accepted by one node is a replay on every other, expiry,
//! retirement and the per-IP and per-identity limits count fleet-wide, and while Redis is
//! dead or hung every request is still answered within a bound, by the documented
//! node-local fallback, until Redis is back and the fleet is one again.
//!
//! Every test runs its nodes on one MySQL database and its own Redis ([`PrivateRedis`]),
//! and most drive them through [`RoundRobin`] (`tests/common/proxy.rs`), a proxy that sends
//! **each request** to the next node in turn, as a load balancer without affinity may.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::fleet::{js_clients_available, run_node_script, TestFleet};
use common::process::{signal, PrivateRedis, Proc};
use common::proxy::RoundRobin;
use common::{Kind, TestDb, TestServer};
use messagebox::auth::{ClientIdentity, PrivateKey, SignedRequest};
use messagebox::client::{AuthClient, ClientError, RawResponse};
use serde_json::{json, Value};

/// `n` nodes in this process on one database and one Redis, sharing a server key.
async fn nodes(db: &TestDb, redis: &PrivateRedis, n: usize, env: &[(&str, &str)]) -> Vec<TestServer> {
    let key = PrivateKey::random().to_hex();
    let url = redis.url();
    let mut all = vec![("SERVER_PRIVATE_KEY", key.as_str()), ("REDIS_URL", url.as_str())];
    all.extend_from_slice(env);
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(TestServer::start(&db.url, &all).await);
    }
    v
}

const LIST: &str = r#"{"messageBox":"inbox"}"#;

/// A signed `POST /listMessages` on `client`'s session (handshaking first if it has none).
async fn signed_list(client: &mut AuthClient) -> SignedRequest {
    client.sign("POST", "/listMessages", &[("content-type", "application/json")], Some(LIST.as_bytes())).await.unwrap()
}

/// Sends a signed request as it is, to `addr`.
async fn send(addr: SocketAddr, signed: &SignedRequest) -> RawResponse {
    let mut raw = AuthClient::new(ClientIdentity::random(), addr);
    raw.send_raw("POST", "/listMessages", &signed.headers, signed.body.clone()).await.unwrap()
}

/// `POST /listMessages` through `client` (handshaking and re-handshaking as AuthFetch does).
async fn list(client: &mut AuthClient) -> Result<RawResponse, ClientError> {
    client.request("POST", "/listMessages", &[("content-type", "application/json")], Some(LIST.as_bytes())).await
}

fn description(r: &RawResponse) -> String {
    r.json()["description"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_on_one_node_works_on_every_node() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let Some(redis) = PrivateRedis::start() else { return };
    let nodes = nodes(&db, &redis, 3, &[]).await;
    let proxy = RoundRobin::start(nodes.iter().map(|n| n.addr).collect());
    let mut client = AuthClient::new(ClientIdentity::random(), proxy.addr);
    let me = client.identity().identity_hex().to_string();
    for i in 0..9 {
        let msg = json!({"message": {"recipient": me, "messageBox": "inbox", "body": format!("m{i}"), "messageId": format!("fleet-{i}")}});
        let (status, body) = client.post_json("/sendMessage", &msg).await.unwrap();
        assert_eq!(status, 200, "send {i}: {body}");
    }
    let (status, body) = client.post_json("/listMessages", &json!({"messageBox": "inbox"})).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"].as_array().unwrap().len(), 9);
    assert_eq!(client.handshakes, 1, "one handshake for requests on every node");
    let served = proxy.served();
    assert!(served.iter().all(|&n| n >= 3), "each node served requests: {served:?}");
    // The handshake's node cached the session; the others rebuilt it from its token.
    let ns = client.session().unwrap().server_nonce.clone();
    assert!(nodes.iter().all(|n| n.app.auth.sessions().get(&ns).is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_accepted_by_one_node_is_a_replay_on_every_other() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let Some(redis) = PrivateRedis::start() else { return };
    let nodes = nodes(&db, &redis, 2, &[]).await;
    let mut client = AuthClient::new(ClientIdentity::random(), nodes[0].addr);
    let signed = signed_list(&mut client).await;
    // Accepted by the node that never saw the handshake…
    assert_eq!(send(nodes[1].addr, &signed).await.status, 200);
    // …then refused everywhere, with the answer a replay gets on one node.
    for node in &nodes {
        let r = send(node.addr, &signed).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["code"], "ERR_AUTH_FAILED");
        assert_eq!(description(&r), "request nonce was already used in this session (replay)");
        assert!(r.header("x-bsv-auth-signature").is_none());
    }
    // The session itself goes on, on either node.
    assert_eq!(send(nodes[0].addr, &signed_list(&mut client).await).await.status, 200);
    assert_eq!(send(nodes[1].addr, &signed_list(&mut client).await).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_retirement_are_fleet_wide() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let Some(redis) = PrivateRedis::start() else { return };
    let env = [
        ("MESSAGE_BOX_AUTH_SESSION_TTL_MS", "2000"),
        ("MESSAGEBOX_UNUSED_SESSION_TTL", "1"),
        ("MESSAGEBOX_MAX_REQUESTS_PER_SESSION", "3"),
    ];
    let nodes = nodes(&db, &redis, 2, &env).await;
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let not_found = |r: &RawResponse, ns: &str| {
        assert_eq!(r.status, 401, "{:?}", r.json());
        assert_eq!(description(r), format!("Session not found for nonce: {ns}"));
    };

    // Never used within MESSAGEBOX_UNUSED_SESSION_TTL of its handshake on A: gone on B.
    let mut c = AuthClient::new(ClientIdentity::random(), a);
    let ns = c.handshake().await.unwrap().server_nonce.clone();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    not_found(&send(b, &signed_list(&mut c).await).await, &ns);

    // Each use slides the idle TTL on every node: alive 2.4 s after its first request,
    // because its second came 1.2 s later, on the other node; retired after three requests
    // whichever nodes served them.
    let ns = c.handshake().await.unwrap().server_nonce.clone();
    assert_eq!(send(a, &signed_list(&mut c).await).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(send(b, &signed_list(&mut c).await).await.status, 200, "used 1.2 s ago on A");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(send(a, &signed_list(&mut c).await).await.status, 200, "used 1.2 s ago on B");
    not_found(&send(b, &signed_list(&mut c).await).await, &ns);
    not_found(&send(a, &signed_list(&mut c).await).await, &ns);

    // Idle 2 s after its last request (on A): gone on B, and on A.
    let ns = c.handshake().await.unwrap().server_nonce.clone();
    assert_eq!(send(a, &signed_list(&mut c).await).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    not_found(&send(b, &signed_list(&mut c).await).await, &ns);
    not_found(&send(a, &signed_list(&mut c).await).await, &ns);

    // The client's own recovery, as AuthFetch's: one new handshake and it goes on.
    assert_eq!(c.handshakes, 3);
    assert_eq!(list(&mut c).await.unwrap().status, 200);
    assert_eq!(c.handshakes, 4);
}

/// The IP and identity limits (IP 10, identity 4 per minute) count across two nodes; with
/// Redis dead each node counts its own share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_count_across_nodes_and_fall_back_to_each_node() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let Some(mut redis) = PrivateRedis::start() else { return };
    let env = [("MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX", "10"), ("MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX", "4")];
    let nodes = nodes(&db, &redis, 2, &env).await;
    let proxy = RoundRobin::start(nodes.iter().map(|n| n.addr).collect());

    // Identity: 4 requests pass on two nodes, the 5th is refused (signed, as on one node).
    let mut a = AuthClient::new(ClientIdentity::random(), proxy.addr);
    for i in 0..4 {
        assert_eq!(list(&mut a).await.unwrap().status, 200, "request {i}");
    }
    let r = list(&mut a).await.unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["code"], "ERR_RATE_LIMITED");
    let values = |r: &RawResponse, name: &str| -> Vec<String> {
        r.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect()
    };
    let state = values(&r, "ratelimit");
    assert!(state[0].starts_with("\"4-in-1min\"; r=0; t="), "{state:?}");
    assert!(state[1].starts_with("\"10-in-1min\"; r=4; t="), "identity, then IP: {state:?}");
    assert!(r.header("retry-after").is_some());

    // IP: 6 hits so far (handshake, 5 requests); another client gets 4 more, then 429.
    let mut b = AuthClient::new(ClientIdentity::random(), proxy.addr);
    for _ in 0..3 {
        assert_eq!(list(&mut b).await.unwrap().status, 200);
    }
    match list(&mut b).await {
        Err(ClientError::Unauthenticated { status: 429, body }) => {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["code"], "ERR_RATE_LIMITED");
        }
        other => panic!("expected the IP limit: {other:?}"),
    }
    assert_eq!(proxy.served(), [6, 5], "the requests alternated");

    // Redis dead: the node-local limiters take over, each counting what it sees.
    redis.stop();
    let mut c = AuthClient::new(ClientIdentity::random(), proxy.addr);
    for i in 0..8 {
        let start = Instant::now();
        assert_eq!(list(&mut c).await.unwrap().status, 200, "request {i}: 4 per node");
        assert!(start.elapsed() < Duration::from_secs(2), "answered within the bound: {:?}", start.elapsed());
    }
    assert_eq!(list(&mut c).await.unwrap().status, 429, "the 5th on one node");
}

/// The node-local fallback while Redis is dead or hung, and the fleet again once it is back;
/// two nodes as separate processes, whose logs say each outage once.
#[test]
fn redis_outages_fall_back_to_each_node_and_recover() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let Some(mut redis) = PrivateRedis::start() else { return };
    let key = PrivateKey::random().to_hex();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SERVER_PRIVATE_KEY", key.as_str()),
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", url.as_str()),
        ("RUST_LOG", "warn,messagebox::fleet=info"),
    ];
    let procs = [Proc::spawn(&env, dir.path(), Stdio::piped()), Proc::spawn(&env, dir.path(), Stdio::piped())];
    let (a, b) = (procs[0].addr, procs[1].addr);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let proxy = RoundRobin::start(vec![a, b]);
    let mut client = AuthClient::new(ClientIdentity::random(), proxy.addr);
    let mut direct = AuthClient::new(client.identity().clone(), a);

    let replay_refused_on_b = |direct: &mut AuthClient| {
        rt.block_on(async {
            let signed = signed_list(direct).await;
            assert_eq!(send(a, &signed).await.status, 200);
            send(b, &signed).await.status == 401
        })
    };
    let fleet_wide_again = |direct: &mut AuthClient| {
        let start = Instant::now();
        while !replay_refused_on_b(direct) {
            assert!(start.elapsed() < Duration::from_secs(10), "fleet-wide claims did not resume");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // Bounded answers through the proxy, on both nodes, on the one session.
    let bounded_requests = |client: &mut AuthClient, what: &str| {
        for i in 0..8 {
            let start = Instant::now();
            let (status, body) =
                rt.block_on(client.post_json("/listMessages", &json!({"messageBox": "inbox"}))).unwrap();
            assert_eq!(status, 200, "{what} {i}: {body}");
            assert!(start.elapsed() < Duration::from_millis(1500), "{what} {i}: took {:?}", start.elapsed());
        }
    };

    bounded_requests(&mut client, "Redis up");
    fleet_wide_again(&mut direct);

    // Dead: every request answered at once; the node that accepted a request refuses its
    // replay, another node does not know it (the documented fallback).
    redis.stop();
    bounded_requests(&mut client, "Redis dead");
    let during_outage = rt.block_on(async {
        let signed = signed_list(&mut direct).await;
        assert_eq!(send(a, &signed).await.status, 200);
        assert_eq!(send(a, &signed).await.status, 401, "refused by the node that accepted it");
        assert_eq!(send(b, &signed).await.status, 200, "while Redis is dead, node B cannot know");
        let only_a = signed_list(&mut direct).await;
        assert_eq!(send(a, &only_a).await.status, 200);
        only_a
    });
    redis.restart();
    fleet_wide_again(&mut direct);
    // Once every core found Redis again, what node A accepted meanwhile is known to B.
    std::thread::sleep(Duration::from_secs(3));
    let r = rt.block_on(send(b, &during_outage));
    assert_eq!((r.status, description(&r).as_str()), (401, "request nonce was already used in this session (replay)"));
    bounded_requests(&mut client, "Redis back");

    // Hung (stopped, its connections open): each request waits at most the timeout once.
    let pid = redis.child.as_ref().unwrap().id();
    signal(pid, "STOP");
    bounded_requests(&mut client, "Redis hung");
    signal(pid, "CONT");
    fleet_wide_again(&mut direct);
    bounded_requests(&mut client, "Redis resumed");
    assert_eq!(client.handshakes, 1, "no request of the session was refused on any node");
    // Every core that lost Redis finds it again within a probe interval and a timeout.
    std::thread::sleep(Duration::from_secs(3));

    for p in procs {
        let out = p.stop();
        let log = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        let down = log.matches("Redis is unreachable").count();
        let up = log.matches("Redis answers again").count();
        assert!((1..=2).contains(&down) && down == up, "one line per outage and its end ({down}, {up}):\n{log}");
    }
}

/// The real `AuthFetch` through the round-robin proxy in front of three nodes: one
/// handshake, every request on the next node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_authfetch_alternating_between_nodes_handshakes_once() {
    if !js_clients_available() {
        return;
    }
    let Some(fleet) = TestFleet::start(3).await else { return };
    let proxy = RoundRobin::start(fleet.nodes.iter().map(|n| n.addr).collect());
    let url = format!("http://{}", proxy.addr);
    let identity = fleet.key.public_key().to_hex();
    let passed = tokio::task::spawn_blocking(move || {
        let args = ["--url", url.as_str(), "--server-identity", identity.as_str()];
        run_node_script("fleet_sessions.mjs", &args, Duration::from_secs(120), |r| Err(format!("unknown request {r}")))
    })
    .await
    .unwrap();
    assert_eq!(passed, 3);
    let served = proxy.served();
    assert!(served.iter().all(|&n| n >= 5), "every node served the client: {served:?}");
}
