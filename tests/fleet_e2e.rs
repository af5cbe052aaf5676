//! Issue 11's "Done means", end to end: three `messagebox` processes on one MySQL database
//! and one private Redis, sharing a server key, driven by the real JS clients
//! (`tests/interop/fleet_e2e.mjs`) through [`RoundRobin`] (each HTTP request to the next node,
//! WebSocket upgrades tunnelled to the next node, dead nodes skipped): AuthFetch with one
//! handshake, `MessageBoxClient` with the default transports and on polling only (a second
//! proxy that refuses upgrades) receiving what another client sends through other nodes, a
//! replayed signed request refused on every node, a node SIGKILLed under its clients, and a
//! Redis restart. Skipped without MySQL, `redis-server` or the npm packages, unless
//! `MESSAGEBOX_REQUIRE_ALL=1`.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::fleet::{channel, js_clients_available, numsub, run_node_script};
use common::process::{PrivateRedis, Proc};
use common::proxy::RoundRobin;
use common::{Kind, TestDb};
use messagebox::auth::PrivateKey;

/// The node registry in Redis: node id → URL.
fn registry(redis: &PrivateRedis) -> Vec<(String, String)> {
    let mut c = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
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

fn logs(dir: &std::path::Path, n: usize) -> String {
    (0..n)
        .map(|i| {
            let text = std::fs::read_to_string(dir.join(format!("node{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
            format!("----- node {i} -----\n{}", tail.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_fleet_of_three_behind_a_round_robin_with_the_real_clients() {
    if !js_clients_available() {
        return;
    }
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let Some(mut redis) = PrivateRedis::start() else { return };
    let key = PrivateKey::random();
    let dir = tempfile::tempdir().unwrap();
    let (key_hex, redis_url) = (key.to_hex(), redis.url());
    let env = [
        ("SERVER_PRIVATE_KEY", key_hex.as_str()),
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("ENABLE_WEBSOCKETS", "true"),
        ("MESSAGEBOX_THREADS", "2"),
        ("RUST_LOG", "info"),
        ("NO_COLOR", "1"),
    ];
    let mut nodes: Vec<Option<Proc>> = Vec::new();
    for i in 0..3 {
        let path = dir.path().join(format!("node{i}.log"));
        let log = std::fs::File::create(&path).unwrap();
        nodes.push(Some(Proc::spawn(&env, dir.path(), Stdio::from(log))));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&path).unwrap_or_default().contains("messagebox listening") {
            assert!(Instant::now() < deadline, "node {i} did not start:\n{}", logs(dir.path(), 3));
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.as_ref().unwrap().addr).collect();
    let reg = registry(&redis);
    assert_eq!(reg.len(), 3, "every node registered: {reg:?}");
    let proxy = RoundRobin::start(addrs.clone());
    let polling_proxy = RoundRobin::start_with(addrs.clone(), false);
    let node_args: Vec<String> = reg.iter().map(|(id, url)| format!("{id}={url}")).collect();
    let (url, polling_url) = (format!("http://{}", proxy.addr), format!("http://{}", polling_proxy.addr));
    let identity = key.public_key().to_hex();
    let mut killed = Vec::new();
    let args = [
        "--url",
        url.as_str(),
        "--polling-url",
        polling_url.as_str(),
        "--server-identity",
        identity.as_str(),
        "--nodes",
        &node_args.join(","),
    ];
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_node_script("fleet_e2e.mjs", &args, Duration::from_secs(300), |request| {
            let words: Vec<&str> = request.split(' ').collect();
            match words.as_slice() {
                ["kill", id] => {
                    let (_, node_url) = reg.iter().find(|(i, _)| i == id).ok_or(format!("no node {id}"))?;
                    let i = addrs.iter().position(|a| format!("http://{a}") == *node_url).ok_or("no such address")?;
                    let mut p = nodes[i].take().ok_or("already killed")?;
                    let mut child = p.child.take().unwrap();
                    let killed_ok = child.kill(); // SIGKILL
                    child.wait().map_err(|e| e.to_string())?;
                    killed_ok.map_err(|e| e.to_string())?;
                    killed.push(i);
                    Ok(())
                }
                ["subscribed", who] => {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while numsub(&redis_url, &channel(who)) < 1 {
                        if Instant::now() > deadline {
                            return Err(format!("no node subscribed to {who}"));
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Ok(())
                }
                ["restart-redis"] => {
                    redis.restart();
                    Ok(())
                }
                _ => Err(format!("unknown request {request}")),
            }
        })
    }));
    let passed = match result {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{}", logs(dir.path(), 3));
            std::panic::resume_unwind(e)
        }
    };
    assert_eq!(passed, 11, "every check of fleet_e2e.mjs ran");
    assert_eq!(killed.len(), 1, "one node was killed");
    let served = proxy.served();
    assert!(served.iter().all(|&n| n >= 5), "every node served requests through the proxy: {served:?}");
    assert!(proxy.tunnels() >= 1, "the default transports upgraded through the proxy");
    assert_eq!(polling_proxy.tunnels(), 0);
    assert!(polling_proxy.served().iter().all(|&n| n >= 2), "polling spread: {:?}", polling_proxy.served());
}
