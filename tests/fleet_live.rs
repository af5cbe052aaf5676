//! Live delivery across the nodes of a fleet (issue 11): nodes on one MySQL database and one
//! Redis; a listener on one node receives what is sent to another, over HTTP and over the
//! WebSocket; only the nodes holding a recipient subscribe to it; a Redis outage pauses live
//! delivery between nodes without failing HTTP, and it resumes by itself when Redis is back.
//!
//! Needs MySQL (`MESSAGEBOX_TEST_MYSQL_URL`) and `redis-server` (each test starts its own, see
//! `common::process::PrivateRedis`); skipped without them unless `MESSAGEBOX_REQUIRE_ALL=1`.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{channel, live_channels, numsub, until, Node, TestFleet};
use common::live::Listener;
use common::process::PrivateRedis;
use common::{Kind, TestDb};
use messagebox::auth::{ClientIdentity, PrivateKey};
use messagebox::client::AuthClient;
use serde_json::{json, Value};

const SECOND: Duration = Duration::from_secs(1);

/// `POST /sendMessage` of `body` to `recipient`'s `inbox`.
async fn http_send(client: &mut AuthClient, recipient: &str, id: &str, body: &str) -> (u16, Value) {
    let msg = json!({ "message": { "recipient": recipient, "messageBox": "inbox", "messageId": id, "body": body } });
    client.post_json("/sendMessage", &msg).await.expect("the send is answered")
}

/// The ids `who` lists in its `inbox`.
async fn listed(who: &mut AuthClient) -> Vec<String> {
    let (status, v) = who.post_json("/listMessages", &json!({ "messageBox": "inbox" })).await.expect("listed");
    assert_eq!(status, 200, "{v}");
    v["messages"].as_array().unwrap().iter().map(|m| m["messageId"].as_str().unwrap().to_string()).collect()
}

/// The data of a live delivery from `sender`.
fn delivered(sender: &str, id: &str, body: &str) -> Option<Value> {
    Some(json!({ "sender": sender, "messageId": id, "body": body }))
}

/// Three nodes; a listener on B. A send over HTTP to A and one over A's WebSocket reach it,
/// once each; only B subscribes to the listener's channel, and C, holding nobody, receives
/// no publication. A listener on A (the sending node) gets its delivery once, locally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_on_one_node_reach_a_listener_on_another() {
    let Some(fleet) = TestFleet::start(3).await else { return };
    let url = fleet.redis_url();
    let [a, b, c] = &fleet.nodes[..] else { unreachable!("three nodes") };

    let mut on_b = Listener::connect(b.addr).await;
    on_b.join("inbox").await;
    let ch = channel(&on_b.id());
    until("B subscribes to its listener", 5 * SECOND, || numsub(&url, &ch) == 1).await;
    assert_eq!(live_channels(&url), vec![ch.clone()], "only the held identity has a channel");
    assert_eq!(
        [a.broker().stats().subscribed, b.broker().stats().subscribed, c.broker().stats().subscribed],
        [0, 1, 0]
    );

    // HTTP to A.
    let mut sender = AuthClient::new(ClientIdentity::random(), a.addr);
    let started = Instant::now();
    let (status, v) = http_send(&mut sender, &on_b.id(), "fleet-http-1", "over http").await;
    assert_eq!(status, 200, "{v}");
    let from = sender.identity().identity_hex().to_string();
    assert_eq!(on_b.delivery("inbox", 5 * SECOND).await, delivered(&from, "fleet-http-1", "over http"));
    eprintln!("HTTP on A -> live on B: {:?}", started.elapsed());

    // WebSocket on A.
    let mut ws_sender = Listener::connect(a.addr).await;
    let ack = ws_sender.send(&on_b.id(), "inbox", "fleet-ws-1", "over ws").await;
    assert_eq!(ack, json!({"status": "success", "messageId": "fleet-ws-1"}));
    assert_eq!(on_b.delivery("inbox", 5 * SECOND).await, delivered(&ws_sender.id(), "fleet-ws-1", "over ws"));
    assert_eq!(on_b.recv_within(SECOND).await, None, "each delivered once");

    // The publications went to B alone: C holds nobody and heard nothing, A ignores nothing
    // because it is not subscribed to the listener at all.
    assert_eq!(b.broker().stats().received, 2);
    assert_eq!(c.broker().stats().received, 0);
    assert_eq!(a.broker().stats().received, 0);
    assert_eq!(a.broker().stats().published, 2);

    // A listener on A, the sending node: delivered locally, and A's own publication (A now
    // subscribes to it) is ignored, so it arrives once.
    let mut on_a = Listener::connect(a.addr).await;
    on_a.join("inbox").await;
    let ch_a = channel(&on_a.id());
    until("A subscribes to its listener", 5 * SECOND, || numsub(&url, &ch_a) == 1).await;
    let (status, _) = http_send(&mut sender, &on_a.id(), "fleet-local-1", "local").await;
    assert_eq!(status, 200);
    assert_eq!(on_a.delivery("inbox", 5 * SECOND).await, delivered(&from, "fleet-local-1", "local"));
    assert_eq!(on_a.recv_within(SECOND).await, None, "not again through the broker");
    assert_eq!(a.broker().stats().received, 0, "its own publication is not delivered twice");

    // The last connection of an identity gone: its node unsubscribes.
    drop(on_a);
    until("A unsubscribes", 5 * SECOND, || numsub(&url, &ch_a) == 0).await;
    let mut held = vec![ch, channel(&ws_sender.id())];
    held.sort();
    assert_eq!(live_channels(&url), held, "the listener on B and the WebSocket sender on A");
    assert_eq!(a.broker().stats().dropped, 0);
}

/// Redis killed: HTTP sends still succeed and are listed; `/ready` reports the broker down
/// (200); Redis back: cross-node live delivery works again within seconds, without
/// restarting the nodes or reconnecting the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_only_pauses_live_delivery() {
    let Some(fleet) = TestFleet::start(2).await else { return };
    let url = fleet.redis_url();
    let TestFleet { nodes, mut redis, db: _db, .. } = fleet;
    let [a, b] = &nodes[..] else { unreachable!("two nodes") };
    let ready = |n: &Node| common::process::get(n.addr, "/ready", &[]);
    assert_eq!((ready(a).0, ready(a).2), (200, r#"{"status":"ready","broker":"up"}"#.to_string()));

    let mut on_b = Listener::connect(b.addr).await;
    on_b.join("inbox").await;
    let ch = channel(&on_b.id());
    until("B subscribes", 5 * SECOND, || numsub(&url, &ch) == 1).await;
    let mut sender = AuthClient::new(ClientIdentity::random(), a.addr);
    let from = sender.identity().identity_hex().to_string();
    assert_eq!(http_send(&mut sender, &on_b.id(), "before", "1").await.0, 200);
    assert_eq!(on_b.delivery("inbox", 5 * SECOND).await, delivered(&from, "before", "1"));

    redis.stop();
    for n in [a, b] {
        n.until_broker(false, 10 * SECOND).await;
    }
    let (status, _, body) = ready(a);
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready","broker":"down"}"#));
    let mut recipient = AuthClient::new(on_b.me.clone(), b.addr);
    for i in 0..3 {
        let (status, v) = http_send(&mut sender, &on_b.id(), &format!("during-{i}"), "2").await;
        assert_eq!(status, 200, "HTTP works without the broker: {v}");
    }
    let ids = listed(&mut recipient).await;
    for i in 0..3 {
        assert!(ids.contains(&format!("during-{i}")), "stored and listed: {ids:?}");
    }
    assert_eq!(on_b.recv_within(SECOND).await, None, "nothing live crosses while Redis is down");
    // With the broker down and no listener on A, no delivery is even built for the broker.
    assert_eq!(a.broker().stats().published, 1, "{:?}", a.broker().stats());

    let back = Instant::now();
    redis.restart();
    for n in [a, b] {
        n.until_broker(true, 5 * SECOND).await;
    }
    until("B subscribes again", 5 * SECOND, || numsub(&url, &ch) == 1).await;
    eprintln!("Redis restarted -> both nodes up and B subscribed: {:?}", back.elapsed());
    assert_eq!(http_send(&mut sender, &on_b.id(), "after", "3").await.0, 200);
    assert_eq!(on_b.delivery("inbox", 5 * SECOND).await, delivered(&from, "after", "3"));
    assert!(back.elapsed() < 8 * SECOND, "resumed within seconds: {:?}", back.elapsed());
    assert_eq!(ready(b).2, r#"{"status":"ready","broker":"up"}"#);
}

/// The real JS clients: `@bsv/message-box-client` listening on node B (default transports),
/// and a raw `@bsv/authsocket-client` on polling only, receive what is sent through node A
/// over HTTP and over A's WebSocket (`tests/interop/fleet_live.mjs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_clients_receive_across_nodes() {
    if !common::fleet::js_clients_available() {
        return;
    }
    let Some(fleet) = TestFleet::start(2).await else { return };
    let url = fleet.redis_url();
    let [a, b] = &fleet.nodes[..] else { unreachable!("two nodes") };
    let (send_url, listen_url) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let identity = fleet.key.public_key().to_hex();
    let passed = tokio::task::spawn_blocking(move || {
        let args = ["--listen-url", &listen_url, "--send-url", &send_url, "--server-identity", &identity];
        common::fleet::run_node_script("fleet_live.mjs", &args, Duration::from_secs(180), |request| {
            let who = request.strip_prefix("subscribed ").ok_or("unknown request")?;
            let start = Instant::now();
            while numsub(&url, &channel(who)) < 1 {
                if start.elapsed() > 10 * SECOND {
                    return Err(format!("no node subscribed to {who} within 10 s"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })
    })
    .await
    .unwrap();
    assert_eq!(passed, 5);
    assert_eq!(b.broker().stats().received, 3, "two sends to the listener and one to the polling client crossed");
}

/// The binary as operators run it: a Redis outage is one warning when it starts and one line
/// when it ends, however many deliveries it cost (they are counted in the closing line);
/// local live delivery and HTTP go on meanwhile; `/ready` follows the broker; `/metrics`
/// counts the deliveries that could not be published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_logged_once() {
    use common::process::{get, Proc};
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let Some(mut redis) = PrivateRedis::start() else { return };
    let key = PrivateKey::random().to_hex();
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", common::free_port()).parse().unwrap();
    let metrics_addr = metrics.to_string();
    let env = [
        ("MESSAGEBOX_METRICS_ADDR", metrics_addr.as_str()),
        ("SERVER_PRIVATE_KEY", key.as_str()),
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", url.as_str()),
        ("ENABLE_WEBSOCKETS", "true"),
        ("RUST_LOG", "info"),
        ("LOG_FORMAT", "json"),
    ];
    let node = Proc::spawn(&env, dir.path(), std::process::Stdio::piped());
    let broker = |up: &'static str| move || get(node.addr, "/ready", &[]).2.contains(&format!("\"broker\":\"{up}\""));
    until("broker up", 5 * SECOND, broker("up")).await;
    let mut listener = Listener::connect(node.addr).await;
    listener.join("inbox").await;
    let mut sender = AuthClient::new(ClientIdentity::random(), node.addr);

    redis.stop();
    until("broker down", 10 * SECOND, broker("down")).await;
    for i in 0..5 {
        let id = format!("during-{i}");
        assert_eq!(http_send(&mut sender, &listener.id(), &id, "x").await.0, 200);
        assert!(listener.delivery("inbox", 5 * SECOND).await.is_some(), "local live delivery goes on");
    }
    // Reconnection attempts go on for a while (several per second).
    tokio::time::sleep(2 * SECOND).await;
    redis.restart();
    until("broker up again", 5 * SECOND, broker("up")).await;
    drop(listener);
    let text = get(metrics, "/metrics", &[]).2;
    for line in [
        "messagebox_fleet_broker_up 1",
        r#"messagebox_fleet_deliveries_total{outcome="dropped"} 5"#,
        r#"messagebox_fleet_deliveries_total{outcome="published"} 0"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
    }

    let out = node.stop();
    let log = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = log.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let about = |text: &str| -> Vec<&Value> {
        lines.iter().filter(|l| l["fields"]["message"].as_str().is_some_and(|m| m.contains(text))).collect()
    };
    let down = about("the broker (REDIS_URL) is unreachable");
    let up = about("the broker is reachable again");
    assert_eq!((down.len(), up.len()), (1, 1), "one line each way:\n{log}");
    assert_eq!(down[0]["level"], "WARN");
    assert_eq!(up[0]["fields"]["live_deliveries_dropped"], 5, "{}", up[0]);
    assert!(up[0]["fields"]["outage_ms"].as_u64().unwrap() >= 2000, "{}", up[0]);
}

/// A Redis that stops answering without closing its connections (SIGSTOP) is noticed by the
/// pings within seconds, and live delivery resumes when it answers again (SIGCONT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_is_noticed() {
    let Some(fleet) = TestFleet::start(1).await else { return };
    let node = &fleet.nodes[0];
    let pid = fleet.redis.child.as_ref().unwrap().id();
    common::process::signal(pid, "STOP");
    let started = Instant::now();
    node.until_broker(false, 10 * SECOND).await;
    eprintln!("a hung Redis noticed after {:?}", started.elapsed());
    common::process::signal(pid, "CONT");
    node.until_broker(true, 10 * SECOND).await;
}
