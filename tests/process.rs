//! The `messagebox` binary as operators run it: graceful shutdown on SIGTERM loses nothing
//! it acknowledged, two processes share one MySQL database, bad configuration exits 2 with
//! one line naming the variable, and `keygen` / `migrate` work.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::free_port;
use messagebox::auth::{ClientIdentity, PrivateKey};
use messagebox::client::AuthClient;
use serde_json::json;

use common::process::BIN;

/// A server process, killed on drop if still running.
struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(database_url: &str, key: &PrivateKey) -> Proc {
    let port = free_port();
    let child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SERVER_PRIVATE_KEY", key.to_hex())
        .env("DATABASE_URL", database_url)
        .env("MESSAGEBOX_PORT", port.to_string())
        .env("MESSAGEBOX_BIND", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .envs(common::process::LIFTED_RATES)
        .env("MESSAGE_BOX_MAX_CONCURRENT_REQUESTS", "-1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server binary starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(start.elapsed() < Duration::from_secs(20), "server did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc { child, addr }
}

fn sigterm(p: &Proc) {
    let ok = Command::new("kill").arg("-TERM").arg(p.child.id().to_string()).status().unwrap().success();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_and_loses_nothing() {
    let db = common::TestDb::new(common::Kind::SqliteFile).unwrap();
    let key = PrivateKey::random();
    let server = spawn(&db.url, &key);
    let recipient = ClientIdentity::random();
    let rk = recipient.identity_hex().to_string();

    // Several clients send continuously; the server is told to stop in the middle.
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (addr, rk) = (server.addr, rk.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = AuthClient::new(ClientIdentity::random(), addr);
            let mut acknowledged = Vec::new();
            for i in 0..500 {
                let id = format!("c{c}-{i}");
                let body = json!({"message": {"recipient": rk, "messageBox": "inbox", "body": "x", "messageId": id}});
                match client.post_json("/sendMessage", &body).await {
                    Ok((200, _)) => acknowledged.push(id),
                    Ok((st, v)) => panic!("unexpected answer {st} {v}"),
                    Err(_) => break, // the server went away: stop sending
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    sigterm(&server);
    let mut acknowledged = Vec::new();
    for t in tasks {
        acknowledged.extend(t.await.unwrap());
    }
    let mut server = server;
    let status = tokio::task::spawn_blocking(move || server.child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status:?}");
    assert!(!acknowledged.is_empty(), "some requests were served before the signal");

    // Every acknowledged message is in the database.
    let server = spawn(&db.url, &key);
    let mut r = AuthClient::new(recipient, server.addr);
    // Page through the box (at most 1000 a page).
    let mut stored = std::collections::HashSet::new();
    loop {
        let page = json!({"messageBox": "inbox", "limit": 1000, "offset": stored.len()});
        let (st, v) = r.post_json("/listMessages", &page).await.unwrap();
        assert_eq!(st, 200, "{v}");
        let messages = v["messages"].as_array().unwrap();
        stored.extend(messages.iter().map(|m| m["messageId"].as_str().unwrap().to_string()));
        if messages.len() < 1000 {
            break;
        }
    }
    for id in &acknowledged {
        assert!(stored.contains(id.as_str()), "acknowledged message {id} was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_mysql_database() {
    let Some(db) = common::TestDb::new(common::Kind::Mysql) else { return };
    let key = PrivateKey::random();
    let one = spawn(&db.url, &key);
    let two = spawn(&db.url, &key);
    let alice = ClientIdentity::random();
    let bob = ClientIdentity::random();
    let bk = bob.identity_hex().to_string();
    let mut a1 = AuthClient::new(alice.clone(), one.addr);
    let mut b2 = AuthClient::new(bob.clone(), two.addr);
    let mut b1 = AuthClient::new(bob, one.addr);

    // Box creation races between the two processes must not fail a send.
    let mut sends = Vec::new();
    for (i, addr) in [(0, one.addr), (1, two.addr), (2, one.addr), (3, two.addr)] {
        let (alice, bk) = (alice.clone(), bk.clone());
        sends.push(tokio::spawn(async move {
            let mut c = AuthClient::new(alice, addr);
            let body = json!({"message": {"recipient": bk, "messageBox": "shared", "body": format!("m{i}"), "messageId": format!("m{i}")}});
            c.post_json("/sendMessage", &body).await.unwrap()
        }));
    }
    for s in sends {
        assert_eq!(s.await.unwrap().0, 200);
    }
    let (st, _) = a1
        .post_json(
            "/sendMessage",
            &json!({"message": {"recipient": bk, "messageBox": "shared", "body": "m4", "messageId": "m4"}}),
        )
        .await
        .unwrap();
    assert_eq!(st, 200);
    let (_, v) = b2.post_json("/listMessages", &json!({"messageBox": "shared"})).await.unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 5, "{v}");
    let (st, _) = b2.post_json("/acknowledgeMessage", &json!({"messageIds": ["m0", "m1"]})).await.unwrap();
    assert_eq!(st, 200);
    let (_, v) = b1.post_json("/listMessages", &json!({"messageBox": "shared"})).await.unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 3);
    // A permission set through one process governs sends through the other once the other's
    // cached fee has expired (without REDIS_URL no notice reaches it; `store::fee_cache`).
    let (st, _) = b1
        .post_json(
            "/permissions/set",
            &json!({"sender": alice.identity_hex(), "messageBox": "shared", "recipientFee": -1}),
        )
        .await
        .unwrap();
    assert_eq!(st, 200);
    tokio::time::sleep(messagebox::store::fee_cache::PERMISSION_MAX_AGE).await;
    let mut a2 = AuthClient::new(alice, two.addr);
    let (st, v) = a2
        .post_json(
            "/sendMessage",
            &json!({"message": {"recipient": bk, "messageBox": "shared", "body": "m5", "messageId": "m5"}}),
        )
        .await
        .unwrap();
    assert_eq!((st, v["code"].clone()), (403, json!("ERR_DELIVERY_BLOCKED")));
}

fn run(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let dir = tempfile::tempdir().unwrap();
    c.current_dir(dir.path());
    c.output().unwrap()
}

#[test]
fn bad_configuration_exits_2_naming_the_variable() {
    for (env, var) in [
        (vec![("NODE_ENV", "production")], "SERVER_PRIVATE_KEY"),
        (vec![("SERVER_PRIVATE_KEY", "nothex")], "SERVER_PRIVATE_KEY"),
        (vec![("PORT", "eighty")], "PORT"),
        (vec![("KNEX_DB_CONNECTION", "{not json")], "KNEX_DB_CONNECTION"),
        (vec![("DATABASE_URL", "postgres://x")], "DATABASE_URL"),
        (vec![("MESSAGEBOX_THREADS", "0")], "MESSAGEBOX_THREADS"),
        (vec![("ENABLE_FIREBASE", "true")], "FIREBASE_PROJECT_ID"),
        // A fleet shares one database: SQLite (the default) with REDIS_URL is refused.
        (vec![("REDIS_URL", "redis://127.0.0.1:6379/0")], "REDIS_URL"),
        (vec![("REDIS_URL", "http://127.0.0.1:6379"), ("DATABASE_URL", "mysql://u@127.0.0.1/db")], "REDIS_URL"),
        (
            vec![
                ("REDIS_URL", "redis://127.0.0.1:6379/0"),
                ("DATABASE_URL", "mysql://u@127.0.0.1/db"),
                ("MESSAGEBOX_NODE_URL", "http://n1/api"),
            ],
            "MESSAGEBOX_NODE_URL",
        ),
    ] {
        let out = run(&env, &[]);
        assert_eq!(out.status.code(), Some(2), "{env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(var), "{env:?}: {err}");
    }
}

#[test]
fn keygen_and_migrate() {
    let out = run(&[], &["keygen"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.lines().next().unwrap().strip_prefix("SERVER_PRIVATE_KEY=").unwrap();
    let key = PrivateKey::from_hex(hex).unwrap();
    assert!(text.contains(&key.public_key().to_hex()));

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("m.db").display());
    let out = run(&[("DATABASE_URL", &url), ("SERVER_PRIVATE_KEY", hex)], &["migrate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("m.db").exists());
    let out = run(&[("DATABASE_URL", &url), ("SERVER_PRIVATE_KEY", hex)], &["migrate"]);
    assert!(out.status.success(), "migrate is idempotent");
    let help = run(&[], &["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for var in ["SERVER_PRIVATE_KEY", "KNEX_DB_CONNECTION", "DATABASE_URL", "ROUTING_PREFIX", "MESSAGEBOX_THREADS"] {
        assert!(help.contains(var), "--help documents {var}");
    }
}
