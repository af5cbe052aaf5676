//! A fleet on loopback for the tests: nodes that share one MySQL database, one Redis and one
//! server key ([`Node`], in-process, with its [`App`] at hand for the broker's counters;
//! [`start_fleet`]), direct questions to Redis ([`numsub`], [`live_channels`]), and the real
//! JS clients ([`run_node_script`]). The live client is `super::live::Listener`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use messagebox::auth::PrivateKey;
use messagebox::fleet::delivery::Channels;
use messagebox::http::App;
use messagebox::server::Running;

use super::process::PrivateRedis;
use super::{Kind, TestDb};

/// `n` nodes on a fresh MySQL database and a private Redis, sharing a key, each with its
/// broker link up; `None` (skipped) without MySQL or redis-server.
pub struct TestFleet {
    pub nodes: Vec<Node>,
    pub key: PrivateKey,
    pub redis: PrivateRedis,
    pub db: TestDb,
}

impl TestFleet {
    pub async fn start(n: usize) -> Option<TestFleet> {
        let db = TestDb::new(Kind::Mysql)?;
        let redis = PrivateRedis::start()?;
        let key = PrivateKey::random();
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(Node::start(&db.url, &redis.url(), &key).await);
        }
        for node in &nodes {
            node.until_broker(true, Duration::from_secs(5)).await;
        }
        Some(TestFleet { nodes, key, redis, db })
    }

    pub fn redis_url(&self) -> String {
        self.redis.url()
    }
}

/// One node of a test fleet, in this process.
pub struct Node {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    running: Option<Running>,
}

impl Node {
    /// A node with WebSockets on, on `db_url` and `redis_url`, signing with `key`.
    pub async fn start(db_url: &str, redis_url: &str, key: &PrivateKey) -> Node {
        let (running, app) = super::live::start_live_server(db_url, key, &[("REDIS_URL", redis_url)], |config| {
            // Every test client comes from 127.0.0.1 (see `process::LIFTED_RATES`).
            config.resources.http.pre_auth_rate.max = u64::MAX / 2;
            config.resources.http.authenticated_rate.max = u64::MAX / 2;
        })
        .await;
        Node { addr: running.addr, app, running: Some(running) }
    }

    /// This node's broker link.
    pub fn broker(&self) -> &messagebox::fleet::broker::Broker {
        self.app.broker.as_deref().expect("a fleet node has a broker link")
    }

    /// Waits (bounded) until this node's link to the broker is up, or down.
    pub async fn until_broker(&self, up: bool, within: Duration) {
        until(&format!("broker {}", if up { "up" } else { "down" }), within, || self.broker().is_up() == up).await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

/// Polls `cond` every 20 ms; panics naming `what` after `within`.
pub async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The live channel of `identity` (Redis database 0).
pub fn channel(identity: &str) -> String {
    Channels::new(0).of(identity)
}

fn redis_conn(redis_url: &str) -> redis::Connection {
    let client = redis::Client::open(redis_url).expect("a Redis URL");
    client.get_connection_with_timeout(Duration::from_secs(2)).expect("Redis answers")
}

/// `PUBSUB NUMSUB <channel>`: how many connections (nodes) subscribe to it.
pub fn numsub(redis_url: &str, channel: &str) -> i64 {
    let v: Vec<(String, i64)> =
        redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query(&mut redis_conn(redis_url)).expect("PUBSUB NUMSUB");
    v.first().map_or(0, |(_, n)| *n)
}

/// `PUBSUB CHANNELS messagebox:live:*`, sorted.
pub fn live_channels(redis_url: &str) -> Vec<String> {
    let mut v: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("messagebox:live:*")
        .query(&mut redis_conn(redis_url))
        .expect("PUBSUB CHANNELS");
    v.sort();
    v
}

/// Whether node and the interop packages (`npm ci --prefix tests/interop`) are there; when
/// not, a loud skip, or a panic under `MESSAGEBOX_REQUIRE_ALL=1`.
pub fn js_clients_available() -> bool {
    let dir = interop_dir();
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let packages = ["@bsv/sdk", "@bsv/message-box-client", "@bsv/authsocket-client"]
        .iter()
        .all(|p| dir.join("node_modules").join(p).join("package.json").is_file());
    if node && packages {
        return true;
    }
    let what = "node and `npm ci --prefix tests/interop`";
    assert!(std::env::var(super::REQUIRE_ALL_ENV).as_deref() != Ok("1"), "the JS clients need {what}");
    eprintln!("SKIPPED: the JS clients need {what}");
    false
}

fn interop_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("interop")
}

/// Runs `tests/interop/<script>` with `args` (the output contract of `tests/interop/lib.mjs`),
/// answering each `@@CONTROL <request>` with `control(request)`; panics with its output
/// unless it exits 0 with every check passed, within `within`. Returns the checks passed.
/// Blocking: call it from `spawn_blocking` in async tests.
pub fn run_node_script(
    script: &str,
    args: &[&str],
    within: Duration,
    mut control: impl FnMut(&str) -> Result<(), String>,
) -> usize {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new("node")
        .current_dir(interop_dir())
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let suite = script.trim_end_matches(".mjs");
    let deadline = Instant::now() + within;
    let mut output = Vec::new();
    let mut summary = None;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(request) = line.strip_prefix("@@CONTROL ") {
            let answer = match control(request) {
                Ok(()) => format!("@@CONTROL {request} done\n"),
                Err(e) => format!("@@CONTROL {request} failed {e}\n"),
            };
            let _ = stdin.write_all(answer.as_bytes());
        } else if let Some(counts) = line.strip_prefix(&format!("{suite}: ")) {
            summary = counts
                .split_once(", ")
                .and_then(|(p, f)| Some((p.strip_suffix(" passed")?.parse::<usize>().ok()?, f == "0 failed")));
        }
        output.push(line);
    }
    let _ = child.kill();
    let status = child.wait().expect("node exits");
    let output = output.join("\n");
    println!("----- {script} -----\n{output}\n----- end of {script} -----");
    match summary {
        Some((passed, true)) if status.success() && passed > 0 => passed,
        _ => panic!("{script} failed (exit {status:?}):\n{output}"),
    }
}
