//! What an operator relies on: the probes (`/health`, `/healthz`, `/ready`, including
//! `/ready` following a private MariaDB that is stopped and resumed), one process per port,
//! fail-fast on a wrong database password, JSON log lines, no ANSI escapes in a pipe, the
//! access log (its fields, the client IP behind proxies, no secrets), `healthcheck` and the
//! `ENABLE_WEBSOCKETS` check.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::{command, get, signal, PrivateMariaDb, Proc};
use common::{free_port, Kind, TestDb, TestServer};
use messagebox::auth::PrivateKey;
use messagebox::client::AuthClient;
use serde_json::{json, Value};

fn sqlite_env(dir: &tempfile::TempDir) -> (String, String) {
    (format!("sqlite://{}", dir.path().join("ops.db").display()), PrivateKey::random().to_hex())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_without_authentication() {
    let db = TestDb::new(Kind::SqliteFile).unwrap();
    let server = TestServer::start(&db.url, &[("ROUTING_PREFIX", "/api"), ("BSV_NETWORK", "testnet")]).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let health = json!({"ok": true, "status": "ok", "service": "messagebox-server", "network": "testnet", "websockets": false});
        for path in ["/health", "/healthz", "/api/health", "/api/healthz"] {
            let (status, head, body) = get(addr, path, &[]);
            assert_eq!(status, 200, "{path}");
            assert!(head.contains("cache-control: no-store"), "{path}: {head}");
            assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), health, "{path}");
        }
        for path in ["/ready", "/api/ready"] {
            let (status, head, body) = get(addr, path, &[]);
            assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#), "{path}");
            assert!(head.contains("cache-control: no-store"), "{path}: {head}");
        }
        // Other paths keep their answers: no probe under another prefix, business routes
        // still need authentication.
        assert_eq!(get(addr, "/other/health", &[]).0, 401);
        assert_eq!(get(addr, "/api/listMessages", &[]).0, 401);
    })
    .await
    .unwrap();
}

/// Polls `path` until it answers `status`; returns how long that took.
fn until(addr: SocketAddr, path: &str, status: u16, within: Duration) -> (Duration, String) {
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let (got, _, body) = get(addr, path, &[]);
        assert!(t.elapsed() < Duration::from_secs(4), "{path} took {:?}: a probe must not hang", t.elapsed());
        if got == status {
            return (start.elapsed(), body);
        }
        assert!(start.elapsed() < within, "{path} did not turn {status} within {within:?} (last {got} {body})");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_a_stopped_and_resumed_database() {
    let Some(mariadb) = tokio::task::spawn_blocking(PrivateMariaDb::start).await.unwrap() else { return };
    let server = TestServer::start(&mariadb.url(), &[]).await;
    let (addr, pid) = (server.addr, mariadb.child.id());
    tokio::task::spawn_blocking(move || {
        until(addr, "/ready", 200, Duration::from_secs(5));
        signal(pid, "STOP");
        let (took, body) = until(addr, "/ready", 503, Duration::from_secs(5));
        assert!(took < Duration::from_secs(5), "{took:?}");
        // The fixed body of TS-next, with no trace of the database error.
        assert_eq!(
            body,
            r#"{"status":"error","code":"ERR_NOT_READY","description":"Message Box dependencies are not ready."}"#
        );
        // Liveness does not depend on the database.
        assert_eq!(get(addr, "/health", &[]).0, 200);
        signal(pid, "CONT");
        until(addr, "/ready", 200, Duration::from_secs(10));
    })
    .await
    .unwrap();
    drop(mariadb);
    // Killed for good: refused connections are not ready either.
    tokio::task::spawn_blocking(move || until(addr, "/ready", 503, Duration::from_secs(5))).await.unwrap();
}

#[test]
fn a_second_process_on_a_busy_port_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (url, key) = sqlite_env(&dir);
    let env = [("DATABASE_URL", url.as_str()), ("SERVER_PRIVATE_KEY", key.as_str()), ("RUST_LOG", "warn")];
    let first = Proc::spawn(&env, dir.path(), Stdio::null());
    let port = first.addr.port().to_string();
    let mut second_env = env.to_vec();
    second_env.extend([("MESSAGEBOX_PORT", port.as_str()), ("MESSAGEBOX_BIND", "127.0.0.1"), ("RUST_LOG", "info")]);
    let start = Instant::now();
    let out = command(&second_env, dir.path()).output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")) && err.contains("in use"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("store ready"), "the database is not opened first: {stdout}");

    // The same holds against a program other than messagebox (no SO_REUSEPORT there).
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = other.local_addr().unwrap().port().to_string();
    let mut other_env = env.to_vec();
    other_env.extend([("MESSAGEBOX_PORT", busy.as_str()), ("MESSAGEBOX_BIND", "127.0.0.1")]);
    let out = command(&other_env, dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // The first one still serves, on all its cores; `healthcheck` says so.
    let mut hc_env = env.to_vec();
    hc_env.extend([("MESSAGEBOX_PORT", port.as_str()), ("MESSAGEBOX_BIND", "127.0.0.1")]);
    for _ in 0..8 {
        assert_eq!(get(first.addr, "/health", &[]).0, 200);
    }
    let hc = command(&hc_env, dir.path()).arg("healthcheck").output().unwrap();
    assert!(hc.status.success(), "{hc:?}");
    first.stop();
    let start = Instant::now();
    let hc = command(&hc_env, dir.path()).arg("healthcheck").output().unwrap();
    assert_eq!(hc.status.code(), Some(1), "{hc:?}");
    assert!(start.elapsed() < Duration::from_secs(5));
    // The port is free again for the next process (no lock outlives the process) — unless a
    // server of a test running beside this one was given the freed port meanwhile.
    let port: u16 = port.parse().unwrap();
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => {
            drop(l);
            let again = Proc::spawn_on(port, &env, dir.path(), Stdio::null());
            assert_eq!(get(again.addr, "/health", &[]).0, 200);
        }
        Err(e) => eprintln!("port {port} was taken by another test ({e}); the restart is not checked"),
    }
}

#[test]
fn a_wrong_database_password_fails_fast() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let user = format!("u_{}", db.name);
    let create = format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'right-password'; GRANT ALL ON `{}`.* TO '{user}'@'%'",
        db.name
    );
    common::run_isolated({
        let url = db.url.clone();
        move || async move {
            use mysql_async::prelude::Queryable;
            let mut c = mysql_async::Conn::from_url(url).await.unwrap();
            c.query_drop(create).await.unwrap();
            c.disconnect().await.unwrap();
        }
    });
    let (scheme_end, at) = (db.url.find("://").unwrap() + 3, db.url.rfind('@').unwrap());
    let wrong = format!("{}{user}:wrong-password{}", &db.url[..scheme_end], &db.url[at..]);
    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::random().to_hex();
    let start = Instant::now();
    let out = command(&[("DATABASE_URL", &wrong), ("SERVER_PRIVATE_KEY", &key), ("MESSAGEBOX_PORT", "0")], dir.path())
        .output()
        .unwrap();
    let took = start.elapsed();
    let drop_user = format!("DROP USER '{user}'@'%'");
    common::run_isolated({
        let url = db.url.clone();
        move || async move {
            use mysql_async::prelude::Queryable;
            let mut c = mysql_async::Conn::from_url(url).await.unwrap();
            c.query_drop(drop_user).await.unwrap();
            c.disconnect().await.unwrap();
        }
    });
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("cannot open the database") && err.contains("Access denied"), "{err}");
    assert!(!err.contains("wrong-password"), "the password is not printed: {err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("database not ready"), "not retried: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let (url, key) = sqlite_env(&dir);
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("SERVER_PRIVATE_KEY", key.as_str()),
        ("LOG_FORMAT", "json"),
        ("MESSAGEBOX_ACCESS_LOG", "true"),
        ("TRUST_PROXY_HOPS", "1"),
    ];
    let server = Proc::spawn(&env, dir.path(), Stdio::piped());
    let addr = server.addr;
    let mut client = AuthClient::new(messagebox::auth::ClientIdentity::random(), addr);
    let identity = client.identity().identity_hex().to_string();
    let body = json!({"message": {"recipient": identity, "messageBox": "inbox", "body": "secret-body-text", "messageId": "m-ops-1"}});
    assert_eq!(client.post_json("/sendMessage", &body).await.unwrap().0, 200);
    let session = client.session().unwrap();
    let secrets = [session.server_nonce.clone(), session.client_nonce.clone()];
    tokio::task::spawn_blocking(move || {
        let (st, _, _) = get(addr, "/health?token=t0ps3cret", &[("X-Forwarded-For", "203.0.113.7, 198.51.100.2")]);
        assert_eq!(st, 200);
    })
    .await
    .unwrap();
    let out = server.stop();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for k in ["timestamp", "level", "target", "fields"] {
            assert!(v.get(k).is_some(), "{k} missing: {line}");
        }
        assert!(v["fields"]["message"].is_string(), "{line}");
        lines.push(v);
    }
    let listening = lines.iter().find(|v| v["fields"]["message"] == "messagebox listening").expect("the start-up line");
    assert_eq!(listening["fields"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(listening["fields"]["websockets"], "on");

    let access: Vec<&Value> = lines.iter().filter(|v| v["target"] == "messagebox::access").collect();
    let send = access.iter().find(|v| v["fields"]["route"] == "/sendMessage").expect("the send is logged");
    assert_eq!(send["level"], "INFO");
    assert_eq!(send["fields"]["method"], "POST");
    assert_eq!(send["fields"]["status"], 200);
    assert_eq!(send["fields"]["identity"], identity.as_str());
    assert_eq!(send["fields"]["client_ip"], "127.0.0.1");
    assert!(send["fields"]["duration_ms"].as_f64().unwrap() >= 0.0);
    let health = access.iter().find(|v| v["fields"]["route"] == "/health").expect("the probe is logged");
    assert_eq!(health["fields"]["client_ip"], "198.51.100.2", "one trusted hop");
    assert_eq!(health["fields"]["identity"], "-");
    for secret in ["secret-body-text", "t0ps3cret", "x-bsv-auth", secrets[0].as_str(), secrets[1].as_str()] {
        assert!(!stdout.contains(secret), "{secret} leaked into the log");
    }
}

#[test]
fn text_logs_carry_no_ansi_into_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let (url, key) = sqlite_env(&dir);
    let env = [("DATABASE_URL", url.as_str()), ("SERVER_PRIVATE_KEY", key.as_str()), ("MESSAGEBOX_ACCESS_LOG", "true")];
    let server = Proc::spawn(&env, dir.path(), Stdio::piped());
    assert_eq!(get(server.addr, "/health", &[("X-Forwarded-For", "203.0.113.7")]).0, 200);
    let out = server.stop();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("messagebox listening") && stdout.contains("websockets=\"on\""), "{stdout}");
    assert!(
        stdout.contains("route=/health") && stdout.contains("client_ip=127.0.0.1"),
        "XFF ignored without TRUST_PROXY_HOPS: {stdout}"
    );
    assert!(!stdout.contains('\x1b'), "ANSI escape in piped output: {stdout:?}");
}

#[test]
fn enable_websockets_must_be_true_or_false() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [("ENABLE_WEBSOCKETS", "yes"), ("LOG_FORMAT", "xml"), ("TRUST_PROXY_HOPS", "11")] {
        let out = command(&[(var, value)], dir.path()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(var), "{err}");
    }
    // `false` in any case turns the live channel off, and the start-up line says so.
    let (url, key) = sqlite_env(&dir);
    let env = [("DATABASE_URL", url.as_str()), ("SERVER_PRIVATE_KEY", key.as_str()), ("ENABLE_WEBSOCKETS", "FALSE")];
    let server = Proc::spawn(&env, dir.path(), Stdio::piped());
    let (status, _, _) = get(server.addr, "/socket.io/?EIO=4&transport=polling", &[]);
    assert_eq!(status, 404);
    let (_, _, body) = get(server.addr, "/health", &[]);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["websockets"], false);
    let stdout = String::from_utf8(server.stop().stdout).unwrap();
    assert!(stdout.contains("websockets=\"off\""), "{stdout}");
}

#[test]
fn env_example_lists_every_variable() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).unwrap();
    let listed: Vec<&str> =
        text.lines().filter_map(|l| l.trim_start_matches(['#', ' ']).split_once('=')).map(|(name, _)| name).collect();
    for name in messagebox::config::VARIABLES.iter().map(|(n, _)| *n).chain(["RUST_LOG"]) {
        assert!(listed.contains(&name), ".env.example lacks {name}");
    }
}

/// A parsed `/metrics` scrape.
struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    fn take(addr: SocketAddr) -> Scrape {
        let (status, head, body) = get(addr, "/metrics", &[]);
        assert_eq!(status, 200, "{body}");
        assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
        let lines = body.lines().map(|l| Ok(l.to_string()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("the exposition parses"))
    }

    fn samples<'a>(
        &'a self,
        metric: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a prometheus_parse::Sample> {
        self.0
            .samples
            .iter()
            .filter(move |s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    }

    /// The value of a counter, gauge or untyped sample (0 when absent: a label set not seen
    /// yet); for a histogram, its observation count.
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        use prometheus_parse::Value;
        let mut found = self.samples(metric, labels).map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(b) => b.iter().find(|b| b.less_than.is_infinite()).map_or(0.0, |b| b.count),
            Value::Summary(_) => panic!("no summaries here"),
        });
        let v = found.next().unwrap_or(0.0);
        assert!(found.next().is_none(), "{metric} {labels:?} is ambiguous");
        v
    }

    fn has(&self, metric: &str) -> bool {
        self.samples(metric, &[]).next().is_some()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_the_requests_made() {
    let dir = tempfile::tempdir().unwrap();
    let (url, key) = sqlite_env(&dir);
    let metrics_port = free_port();
    let maddr: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("SERVER_PRIVATE_KEY", key.as_str()),
        ("ENABLE_WEBSOCKETS", "true"),
        ("MESSAGEBOX_METRICS_ADDR", &maddr.to_string()),
    ];
    let server = Proc::spawn(&env, dir.path(), Stdio::null());
    let addr = server.addr;
    let before = tokio::task::spawn_blocking(move || Scrape::take(maddr)).await.unwrap();

    // Requests of every kind, each counted once.
    tokio::task::spawn_blocking(move || {
        for _ in 0..3 {
            assert_eq!(get(addr, "/health", &[]).0, 200);
        }
        assert_eq!(get(addr, "/no/such/route", &[]).0, 401, "unauthenticated");
        // A live session (Engine.IO polling handshake) stays open.
        assert_eq!(get(addr, "/socket.io/?EIO=4&transport=polling", &[]).0, 200);
    })
    .await
    .unwrap();
    let mut alice = AuthClient::new(messagebox::auth::ClientIdentity::random(), addr);
    let bob = messagebox::auth::ClientIdentity::random();
    alice.handshake().await.unwrap();
    for _ in 0..2 {
        let (status, _) = alice.post_json("/listMessages", &json!({"messageBox": "inbox"})).await.unwrap();
        assert_eq!(status, 200);
    }
    let me = alice.identity().identity_hex().to_string();
    let them = bob.identity_hex().to_string();
    let send =
        json!({"message": {"recipients": [me, them], "messageBox": "inbox", "messageId": ["m1", "m2"], "body": "hi"}});
    let (status, body) = alice.post_json("/sendMessage", &send).await.unwrap();
    assert_eq!(status, 200, "{body}");
    // A request signed on a session the server never made.
    let forged: Vec<(String, String)> = [
        ("x-bsv-auth-version", "0.1".to_string()),
        ("x-bsv-auth-identity-key", them.clone()),
        ("x-bsv-auth-nonce", base64_of(&[7u8; 32])),
        ("x-bsv-auth-your-nonce", base64_of(&[9u8; 32])),
        ("x-bsv-auth-signature", "3006020101020101".to_string()),
        ("x-bsv-auth-request-id", base64_of(&[1u8; 32])),
        ("content-type", "application/json".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let r = alice.send_raw("POST", "/listMessages", &forged, Some(b"{}".to_vec())).await.unwrap();
    assert_eq!(r.status, 401);

    let after = tokio::task::spawn_blocking(move || Scrape::take(maddr)).await.unwrap();
    let delta = |metric: &str, labels: &[(&str, &str)]| after.value(metric, labels) - before.value(metric, labels);
    let requests = "messagebox_http_requests_total";
    for (route, status, n) in [
        ("/health", "200", 3.0),
        ("other", "401", 1.0),
        ("/socket.io/", "200", 1.0),
        ("/.well-known/auth", "200", 1.0),
        ("/listMessages", "200", 2.0),
        ("/listMessages", "401", 1.0),
        ("/sendMessage", "200", 1.0),
        ("/ready", "200", 0.0),
    ] {
        assert_eq!(delta(requests, &[("route", route), ("status", status)]), n, "{route} {status}");
    }
    let durations = "messagebox_http_request_duration_seconds";
    assert_eq!(delta(durations, &[("route", "/listMessages")]), 3.0, "one observation per request");
    assert_eq!(delta(durations, &[("route", "/health")]), 3.0);
    assert_eq!(delta("messagebox_handshakes_total", &[("transport", "http")]), 1.0);
    assert_eq!(delta("messagebox_auth_failures_total", &[("reason", "missing_headers")]), 1.0);
    assert_eq!(delta("messagebox_auth_failures_total", &[("reason", "unknown_session")]), 1.0);
    assert_eq!(delta("messagebox_auth_failures_total", &[("reason", "bad_signature")]), 0.0);
    assert_eq!(delta("messagebox_messages_stored_total", &[]), 2.0, "two recipients, two rows");
    assert!(delta("messagebox_store_batch_size", &[]) >= 1.0, "at least one group commit");
    assert_eq!(
        after.value("messagebox_store_batch_size_sum", &[]) - before.value("messagebox_store_batch_size_sum", &[]),
        2.0,
        "the commits held exactly the two rows"
    );
    assert!(delta("messagebox_store_commit_duration_seconds", &[]) >= 1.0);
    assert_eq!(after.value("messagebox_live_connections", &[]), 1.0, "the polling session is open");
    assert_eq!(after.value("messagebox_auth_sessions", &[]), 1.0, "alice's session");
    for scope in ["ip", "identity", "live_send", "live_control"] {
        assert!(after.samples("messagebox_rate_limited_total", &[("scope", scope)]).next().is_some(), "{scope}");
    }
    assert!(after.has("messagebox_push_total"));

    // The process metrics agree with /proc.
    let pid = server.child.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kib: f64 = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap()[6..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let rss = after.value("process_resident_memory_bytes", &[]);
    assert!((rss / 1024.0 - rss_kib).abs() < rss_kib * 0.5, "RSS {rss} vs /proc {rss_kib} KiB");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as f64;
    let open = after.value("process_open_fds", &[]);
    assert!(open > 3.0 && (open - fds).abs() <= 4.0, "open fds {open} vs /proc {fds}");
    assert!(after.value("process_cpu_seconds_total", &[]) > 0.0);
    assert!(after.value("process_max_fds", &[]) >= open);
    let start = after.value("process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(start > now - 120.0 && start <= now + 1.0, "started {start}, now {now}");

    // Only /metrics answers on the metrics listener; the server's port has no /metrics.
    tokio::task::spawn_blocking(move || {
        assert_eq!(get(maddr, "/", &[]).0, 404);
        assert_eq!(get(addr, "/metrics", &[]).0, 401);
    })
    .await
    .unwrap();
    server.stop();
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn a_taken_metrics_address_fails_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (url, key) = sqlite_env(&dir);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let maddr = taken.local_addr().unwrap().to_string();
    let port = free_port().to_string();
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("SERVER_PRIVATE_KEY", key.as_str()),
        ("MESSAGEBOX_PORT", port.as_str()),
        ("MESSAGEBOX_METRICS_ADDR", maddr.as_str()),
    ];
    let start = Instant::now();
    let out = command(&env, dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with("messagebox: ")).expect("one line on stderr");
    assert!(line.contains("MESSAGEBOX_METRICS_ADDR") && line.contains(&maddr), "{line}");
    // Its own port must not be the server's.
    let same = [("MESSAGEBOX_PORT", "9464"), ("MESSAGEBOX_METRICS_ADDR", "127.0.0.1:9464")];
    let out = command(&same, dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// SIGTERM the moment the port accepts connections stops the server: the handlers are in
/// place before it listens (a signal in between used to be lost under load, and the process
/// ran on).
#[test]
fn sigterm_right_after_listening_is_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (url, key) = sqlite_env(&dir);
    let env = [("DATABASE_URL", url.as_str()), ("SERVER_PRIVATE_KEY", key.as_str())];
    for _ in 0..5 {
        let mut server = Proc::spawn(&env, dir.path(), Stdio::null());
        let mut child = server.child.take().unwrap();
        signal(child.id(), "TERM");
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                panic!("the server ignored a SIGTERM sent as it began listening");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}");
    }
}
