//! Interoperability with the real npm packages, both directions:
//!
//! * the JS clients against our server: `tests/interop/authfetch.mjs` (`@bsv/sdk` AuthFetch,
//!   with a server restart in the middle) and `tests/interop/messagebox_client.mjs`
//!   (`@bsv/message-box-client`) run against the `messagebox` binary, once per store
//!   (SQLite file, MySQL), and once more behind `ROUTING_PREFIX=/api`;
//! * paid delivery: `tests/interop/paid_delivery.mjs` (`MessageBoxClient`'s own payments to
//!   `notifications`, checked by our server before the wallet the script serves for
//!   `PAYMENT_WALLET_URL`), once per store;
//! * the live channel: `tests/interop/live.mjs` (`MessageBoxClient` live methods and the raw
//!   `@bsv/authsocket-client`, over polling-then-upgrade, WebSocket only and polling only)
//!   against the binary with `ENABLE_WEBSOCKETS=true`, on SQLite with a server restart in
//!   the middle and on MySQL without; then `tests/interop/key_spellings.mjs` (a recipient
//!   key in upper case or uncompressed reaches the canonical box, over HTTP and live);
//! * our client against the JS server: `messagebox::client::AuthClient` talks to
//!   `tests/interop/js_server.mjs` (express + `@bsv/auth-express-middleware`).
//!
//! Needs `node`, `npm` and `npm ci --prefix tests/interop`. When any of them is missing the
//! tests are skipped with a loud note, unless `MESSAGEBOX_REQUIRE_ALL=1` (CI), which makes
//! that a failure. MySQL follows `tests/common` (`MESSAGEBOX_TEST_MYSQL_URL`).
//!
//! Every child process is killed when its handle is dropped, so a failing assertion never
//! leaves a server or a node script behind. The node scripts print one `PASS`/`FAIL` line
//! per check and a closing `<suite>: N passed, M failed`; the harness answers their
//! `@@CONTROL restart` requests on stdin (see `tests/interop/lib.mjs`).
//!
//! Adding a suite: write `tests/interop/<suite>.mjs` on `lib.mjs`'s `Checks`, start the
//! server with [`Server::start`] and the environment it needs (as the live suite does with
//! `ENABLE_WEBSOCKETS=true`), and call [`run_script`]; new `@@CONTROL` requests go into
//! `run_script`'s match.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::node::{self, Proc};
use common::{free_port, Kind, TestDb};
use messagebox::auth::{ClientIdentity, PrivateKey};
use messagebox::client::{AuthClient, ClientError};
use serde_json::json;

/// Where the node scripts and their `node_modules` live.
fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("interop")
}

/// The packages the scripts import; all must be installed.
const PACKAGES: [&str; 5] =
    ["@bsv/sdk", "@bsv/message-box-client", "@bsv/authsocket-client", "@bsv/auth-express-middleware", "express"];

/// `true` when node, npm and the installed packages are there. Otherwise a loud skip
/// (`false`), or a panic under `MESSAGEBOX_REQUIRE_ALL=1`.
fn node_available() -> bool {
    node::available(&interop_dir(), &PACKAGES, "npm ci --prefix tests/interop")
}

/// The node runs share two cores with a debug server; one at a time keeps timings sane.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Our server
// ---------------------------------------------------------------------------------------------

/// The `messagebox` binary on one database; restartable on the same port and key.
struct Server {
    proc: Option<Proc>,
    /// Environment beyond the defaults of [`Server::launch`] (applied last, so it wins),
    /// e.g. `ROUTING_PREFIX`, or `ENABLE_WEBSOCKETS=true` for a live-channel suite.
    extra_env: Vec<(String, String)>,
    key: PrivateKey,
    identity: String,
    port: u16,
    database_url: String,
    /// The logs of earlier runs (before restarts).
    past_logs: Vec<String>,
    /// The working directory: empty, so no stray `.env` is read.
    workdir: tempfile::TempDir,
}

impl Server {
    fn start(database_url: &str, extra_env: &[(&str, &str)]) -> Server {
        let key = PrivateKey::random();
        let mut server = Server {
            proc: None,
            extra_env: extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            identity: key.public_key().to_hex(),
            key,
            port: free_port(),
            database_url: database_url.to_string(),
            past_logs: Vec::new(),
            workdir: tempfile::tempdir().expect("temp dir"),
        };
        server.launch();
        server
    }

    /// The base URL clients are given: the origin plus `ROUTING_PREFIX`, if any (the
    /// handshake always goes to the origin's `/.well-known/auth`).
    fn url(&self) -> String {
        let prefix = self.extra_env.iter().find(|(k, _)| k == "ROUTING_PREFIX").map_or("", |(_, v)| v.as_str());
        format!("http://127.0.0.1:{}{prefix}", self.port)
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_messagebox"));
        cmd.current_dir(self.workdir.path()).env_clear();
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs([
            ("SERVER_PRIVATE_KEY", self.key.to_hex()),
            ("MESSAGEBOX_PORT", self.port.to_string()),
            ("MESSAGEBOX_BIND", "127.0.0.1".into()),
            ("MESSAGEBOX_THREADS", "2".into()),
            ("DATABASE_URL", self.database_url.clone()),
            ("ENABLE_WEBSOCKETS", "false".into()),
            ("WALLET_STORAGE_URL", "none".into()),
            ("RUST_LOG", "info".into()),
            ("NO_COLOR", "1".into()),
            // The suites drive one server from one address as fast as the JS clients go,
            // including 40 parallel requests and a ~1 MB body: the high-throughput profile
            // (96 requests in flight, 4 MiB bodies) and lifted rates (tested in tests/edge.rs).
            ("MESSAGE_BOX_RESOURCE_PROFILE", "high-throughput".into()),
            ("MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX", "1000000".into()),
            ("MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX", "1000000".into()),
        ]);
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        let proc = Proc::spawn("messagebox", cmd);
        if proc.wait_for("messagebox listening", Duration::from_secs(60)).is_none() {
            panic!("the server did not report `messagebox listening` within 60 s:\n{}", proc.output());
        }
        self.proc = Some(proc);
    }

    /// SIGTERM; the server must stop cleanly with exit code 0.
    fn stop(&mut self) -> Result<(), String> {
        let Some(mut proc) = self.proc.take() else { return Ok(()) };
        let result = proc.terminate(Duration::from_secs(20));
        self.past_logs.push(proc.output());
        match result {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("the server exited with {status} on SIGTERM:\n{}", proc.tail(40))),
            None => Err(format!("the server ignored SIGTERM for 20 s:\n{}", proc.tail(40))),
        }
    }

    fn restart(&mut self) -> Result<(), String> {
        self.stop()?;
        self.launch();
        Ok(())
    }

    /// Everything the server logged, across restarts.
    fn full_log(&self) -> String {
        let mut all = self.past_logs.clone();
        all.extend(self.proc.as_ref().map(Proc::output));
        all.join("\n")
    }

    fn log_tail(&self) -> String {
        self.proc.as_ref().map_or_else(|| "(server not running)".into(), |p| p.tail(60))
    }
}

/// What a node script reported (it only returns when nothing failed).
struct ScriptRun {
    passed: usize,
}

/// Runs `tests/interop/<script>` against `server`, serving its restart requests, and
/// panics with the whole output (and the server's log) unless every check passed.
fn run_script(script: &str, server: &mut Server, extra: &[&str]) -> ScriptRun {
    let suite = script.trim_end_matches(".mjs");
    let (url, identity) = (server.url(), server.identity.clone());
    let mut args = vec!["--url", &url, "--server-identity", &identity];
    args.extend(extra);
    let server = std::cell::RefCell::new(server);
    let passed = node::run_script(
        &interop_dir(),
        script,
        suite,
        &args,
        Duration::from_secs(300),
        |request| match request {
            "restart" => server.borrow_mut().restart(),
            _ => Err("unknown request".into()),
        },
        || format!("server log (tail):\n{}", server.borrow().log_tail()),
    );
    ScriptRun { passed }
}

/// Both scripts against our server on `kind`'s store, the AuthFetch one with a restart
/// unless the server runs behind a prefix (`extra_env`).
fn js_clients_against_our_server(kind: Kind, extra_env: &[(&str, &str)]) {
    if !node_available() {
        return;
    }
    let Some(db) = TestDb::new(kind) else { return };
    let _turn = one_at_a_time();
    let mut server = Server::start(&db.url, extra_env);
    let authfetch_args: &[&str] = if extra_env.is_empty() { &["--restart"] } else { &[] };
    let authfetch = run_script("authfetch.mjs", &mut server, authfetch_args);
    let client = run_script("messagebox_client.mjs", &mut server, &[]);
    if let Err(e) = server.stop() {
        panic!("{e}");
    }
    let log = server.full_log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "the server logged errors:\n{}", errors.join("\n"));
    let total = authfetch.passed + client.passed;
    println!(
        "{kind:?} {extra_env:?}: authfetch {} passed, messagebox_client {} passed ({total} checks, 0 failed)",
        authfetch.passed, client.passed
    );
}

#[test]
fn js_clients_against_our_server_sqlite() {
    js_clients_against_our_server(Kind::SqliteFile, &[]);
}

#[test]
fn js_clients_against_our_server_mysql() {
    js_clients_against_our_server(Kind::Mysql, &[]);
}

/// A deployment with `ROUTING_PREFIX`: the clients are given `http://host/api`, the
/// handshake still goes to the origin's `/.well-known/auth`.
#[test]
fn js_clients_behind_routing_prefix_sqlite() {
    js_clients_against_our_server(Kind::SqliteFile, &[("ROUTING_PREFIX", "/api")]);
}

/// `paid_delivery.mjs`: the real MessageBoxClient pays delivery fees to our server, whose
/// `PAYMENT_WALLET_URL` is a wallet the script serves on a port chosen here.
fn paid_delivery_with_the_real_client(kind: Kind) {
    if !node_available() {
        return;
    }
    let Some(db) = TestDb::new(kind) else { return };
    let _turn = one_at_a_time();
    let wallet_port = free_port().to_string();
    let wallet_url = format!("http://127.0.0.1:{wallet_port}");
    let mut server = Server::start(&db.url, &[("PAYMENT_WALLET_URL", &wallet_url)]);
    let run = run_script("paid_delivery.mjs", &mut server, &["--wallet-port", &wallet_port]);
    if let Err(e) = server.stop() {
        panic!("{e}");
    }
    println!("{kind:?}: paid_delivery {} passed", run.passed);
}

#[test]
fn paid_delivery_with_the_real_client_sqlite() {
    paid_delivery_with_the_real_client(Kind::SqliteFile);
}

#[test]
fn paid_delivery_with_the_real_client_mysql() {
    paid_delivery_with_the_real_client(Kind::Mysql);
}

/// `live.mjs` (the live channel with the real MessageBoxClient and AuthSocketClient) against
/// our server with `ENABLE_WEBSOCKETS=true` on `kind`'s store, with a restart in the middle
/// when `restart`.
fn live_channel_against_our_server(kind: Kind, restart: bool) {
    if !node_available() {
        return;
    }
    let Some(db) = TestDb::new(kind) else { return };
    let _turn = one_at_a_time();
    let mut server = Server::start(&db.url, &[("ENABLE_WEBSOCKETS", "true")]);
    let args: &[&str] = if restart { &["--restart"] } else { &[] };
    let live = run_script("live.mjs", &mut server, args);
    let spellings = run_script("key_spellings.mjs", &mut server, &[]);
    if let Err(e) = server.stop() {
        panic!("{e}");
    }
    let log = server.full_log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "the server logged errors:\n{}", errors.join("\n"));
    println!(
        "{kind:?} restart={restart}: live {} passed, key_spellings {} passed, 0 failed",
        live.passed, spellings.passed
    );
}

#[test]
fn live_channel_against_our_server_sqlite() {
    live_channel_against_our_server(Kind::SqliteFile, true);
}

#[test]
fn live_channel_against_our_server_mysql() {
    live_channel_against_our_server(Kind::Mysql, false);
}

// ---------------------------------------------------------------------------------------------
// Our client against the TypeScript server side
// ---------------------------------------------------------------------------------------------

/// `node js_server.mjs` on `port` (0 = any); returns the process, its address and the
/// identity key it printed.
fn start_js_server(key: &PrivateKey, port: u16) -> (Proc, SocketAddr, String) {
    let mut cmd = Command::new("node");
    cmd.current_dir(interop_dir()).arg("js_server.mjs").args(["--key", &key.to_hex(), "--port", &port.to_string()]);
    let proc = Proc::spawn("js_server.mjs", cmd);
    let Some(ready) = proc.wait_for("READY ", Duration::from_secs(30)) else {
        panic!("js_server.mjs did not print READY within 30 s:\n{}", proc.output());
    };
    let mut words = ready.split_whitespace().skip(1);
    let port: u16 = words.next().and_then(|p| p.parse().ok()).expect("READY <port>");
    let identity = words.next().expect("READY <port> <identity>").to_string();
    (proc, SocketAddr::from(([127, 0, 0, 1], port)), identity)
}

/// Bounds every exchange: a verification mismatch must be an error, never a hang.
async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), f).await.unwrap_or_else(|_| panic!("{what}: no answer within 15 s"))
}

#[test]
fn our_client_against_js_server() {
    if !node_available() {
        return;
    }
    let _turn = one_at_a_time();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(client_against_js_server());
}

/// Handshake, signed POST/GET, a signed 400, a signed custom header, a session reused, an
/// unverifiable empty body rejected, and recovery after the JS server restarts.
async fn client_against_js_server() {
    let key = PrivateKey::random();
    let (mut js, addr, identity) = start_js_server(&key, 0);
    assert_eq!(identity, key.public_key().to_hex(), "js_server.mjs identity");
    let me = ClientIdentity::random();
    let my_key = me.identity_hex().to_string();
    let mut client = AuthClient::new(me, addr);
    // On failure, show what the middleware said.
    let report = |js: &Proc| format!("\n----- js_server.mjs -----\n{}", js.output());

    // Handshake: the initialResponse signature verifies and names the middleware's key.
    let session =
        bounded("handshake", client.handshake()).await.unwrap_or_else(|e| panic!("handshake: {e}{}", report(&js)));
    assert_eq!(session.server_hex, identity, "server identity from the handshake");

    // POST JSON: the middleware verified our signature (it ran the route as us) and our
    // client verified its signed response (request() checks it before returning).
    let body = json!({"hello": "world", "n": [1, 2, 3], "text": "héllo 🌍 \"q\""});
    let (status, got) = bounded("POST /echo", client.post_json("/echo", &body))
        .await
        .unwrap_or_else(|e| panic!("POST /echo: {e}{}", report(&js)));
    assert_eq!((status, &got), (200, &json!({"echo": body, "identity": my_key})));

    // GET with a query string, repeated keys and percent-encoding.
    let (status, got) = bounded("GET /query", client.get_json("/query?x=1&x=2&y=%C3%A9&z=a+b"))
        .await
        .unwrap_or_else(|e| panic!("GET /query: {e}{}", report(&js)));
    assert_eq!((status, &got["query"]), (200, &json!({"x": ["1", "2"], "y": "é", "z": "a b"})));

    // A signed non-200 answer.
    let (status, got) = bounded("POST /fail", client.post_json("/fail", &json!({"why": 1})))
        .await
        .unwrap_or_else(|e| panic!("POST /fail: {e}{}", report(&js)));
    assert_eq!(status, 400);
    assert_eq!(got, json!({"status": "error", "code": "ERR_INTEROP", "description": "bad input: {\"why\":1}"}));

    // A custom x-bsv-* response header is covered by the verified signature.
    let r = bounded("GET /custom-header", client.request("GET", "/custom-header", &[], None))
        .await
        .unwrap_or_else(|e| panic!("GET /custom-header: {e}{}", report(&js)));
    assert_eq!((r.status, r.header("x-bsv-custom"), r.json()), (200, Some("abc 123"), json!({"ok": true})));

    // Several requests on one session.
    for i in 0..10 {
        let (status, got) = bounded("POST /echo loop", client.post_json("/echo", &json!({"i": i})))
            .await
            .unwrap_or_else(|e| panic!("POST /echo #{i}: {e}{}", report(&js)));
        assert_eq!((status, &got["echo"]), (200, &json!({"i": i})));
    }
    assert_eq!(client.handshakes, 1, "one session served every request");

    // The middleware signs an empty body as "absent" (-1) while clients rebuild it as
    // zero-length (brc103.md §12.2): AuthFetch hangs on it; our client must reject it.
    let empty = bounded("GET /empty", client.request("GET", "/empty", &[], None)).await;
    assert!(matches!(empty, Err(ClientError::Auth(_))), "an unverifiable empty-body response is an error: {empty:?}");

    // The TS server restarts (same key, same port): its sessions are gone, it answers the
    // old session with an unsigned 401, and our client re-handshakes and retries once.
    let port = addr.port();
    assert_eq!(
        js.terminate(Duration::from_secs(10)).map(|s| s.success()),
        Some(true),
        "js_server.mjs stops on SIGTERM"
    );
    let (js2, addr2, identity2) = start_js_server(&key, port);
    assert_eq!((addr2, &identity2), (addr, &identity));
    let (status, got) = bounded("POST /echo after restart", client.post_json("/echo", &json!({"after": "restart"})))
        .await
        .unwrap_or_else(|e| panic!("POST /echo after the JS server restarted: {e}{}", report(&js2)));
    assert_eq!((status, &got["echo"]), (200, &json!({"after": "restart"})));
    assert_eq!(client.handshakes, 2, "exactly one new handshake after the restart");
}
