//! A fleet of nodes (`REDIS_URL`): several server processes on one MySQL database and one
//! Redis, each a node with its own id.

mod common;

use std::process::Stdio;

use common::process::{get, PrivateRedis, Proc};
use common::{Kind, TestDb};
use messagebox::auth::keys::PrivateKey;

/// Two nodes start on one database and one Redis; each logs its own node id and URL.
#[test]
fn nodes_start_with_their_own_ids() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let Some(redis) = PrivateRedis::start() else { return };
    let key = PrivateKey::from_bytes(&[7u8; 32]).unwrap().to_hex();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SERVER_PRIVATE_KEY", key.as_str()),
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", &redis.url()),
        ("RUST_LOG", "info"),
        ("LOG_FORMAT", "json"),
    ];
    let a = Proc::spawn(&env, dir.path(), Stdio::piped());
    let b = Proc::spawn(&env, dir.path(), Stdio::piped());
    for p in [&a, &b] {
        assert_eq!(get(p.addr, "/health", &[]).0, 200);
    }
    let ids: Vec<String> = [a, b]
        .into_iter()
        .map(|p| {
            let port = p.addr.port();
            let out = p.stop();
            let log = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = log.lines().find(|l| l.contains("fleet mode")).unwrap_or_else(|| panic!("no fleet line: {log}"));
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let f = &v["fields"];
            assert_eq!(f["node_url"], format!("http://127.0.0.1:{port}"), "{line}");
            f["node_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_ne!(ids[0], ids[1]);
}
