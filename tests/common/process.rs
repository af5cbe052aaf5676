//! Servers as operators run them: the `messagebox` binary in a child process ([`Proc`], with
//! its pid for `/proc` measurements), a private MariaDB that a test may stop and resume
//! ([`PrivateMariaDb`]), and plain unauthenticated HTTP requests ([`get`], [`request`]).

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// Rate limits high enough that a test's own traffic from one loopback address never meets
/// them (the parser's maxima).
pub const LIFTED_RATES: [(&str, &str); 2] =
    [("MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX", "1000000"), ("MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX", "1000000")];

/// `VmHWM` (peak resident set) of a process, in bytes.
pub fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// The server binary of this build.
pub const BIN: &str = env!("CARGO_BIN_EXE_messagebox");

/// A plain HTTP/1.1 GET (no authentication): status, lower-cased head, body.
pub fn get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> (u16, String, String) {
    request(addr, "GET", path, extra, b"")
}

/// A plain HTTP/1.1 request on a connection of its own (`Connection: close`, as the Node
/// Engine.IO client sends its polls): status, lower-cased head, body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("a status");
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// The binary with a clean environment (`WALLET_STORAGE_URL=none` unless given) and its own
/// working directory.
pub fn command(env: &[(&str, &str)], dir: &std::path::Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).current_dir(dir);
    // No test talks to the public wallet storage (a test may set its own).
    c.env("WALLET_STORAGE_URL", "none");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// A server process, killed on drop if still running.
pub struct Proc {
    pub child: Option<Child>,
    pub addr: SocketAddr,
}

impl Proc {
    pub fn spawn(env: &[(&str, &str)], dir: &std::path::Path, stdout: Stdio) -> Proc {
        Self::spawn_on(free_port(), env, dir, stdout)
    }

    pub fn spawn_on(port: u16, env: &[(&str, &str)], dir: &std::path::Path, stdout: Stdio) -> Proc {
        let mut all = vec![("MESSAGEBOX_PORT", port.to_string()), ("MESSAGEBOX_BIND", "127.0.0.1".into())];
        // Every test client comes from 127.0.0.1: the per-IP and per-identity rates are lifted
        // unless the test sets them (`tests/edge.rs` tests them).
        for (k, v) in LIFTED_RATES {
            if !env.iter().any(|(name, _)| *name == k) {
                all.push((k, v.to_string()));
            }
        }
        all.extend(env.iter().map(|(k, v)| (*k, v.to_string())));
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut child = command(&all, dir).stdout(stdout).stderr(Stdio::piped()).spawn().expect("the server starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if start.elapsed() > Duration::from_secs(20) || child.try_wait().unwrap().is_some() {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!("server did not start listening: {out:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Proc { child: Some(child), addr }
    }

    /// SIGTERM, then everything the process wrote.
    pub fn stop(mut self) -> std::process::Output {
        let child = self.child.take().unwrap();
        signal(child.id(), "TERM");
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "graceful stop: {out:?}");
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig} {pid}");
}

/// A throwaway MariaDB server of this test alone (so it can be stopped).
pub struct PrivateMariaDb {
    _dir: tempfile::TempDir,
    pub child: Child,
    pub port: u16,
}

impl PrivateMariaDb {
    pub fn start() -> Option<PrivateMariaDb> {
        if Command::new("mariadbd").arg("--version").output().is_err() {
            assert!(std::env::var(super::REQUIRE_ALL_ENV).as_deref() != Ok("1"), "mariadbd is not installed");
            eprintln!("SKIPPED: mariadbd is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--skip-test-db", "--auth-root-authentication-method=normal"])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .expect("mariadb-install-db runs");
        assert!(out.status.success(), "mariadb-install-db: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let child = Command::new("mariadbd")
            .args(["--no-defaults", "--user=root", "--skip-grant-tables", "--skip-log-bin", "--bind-address=127.0.0.1"])
            .args(["--innodb-buffer-pool-size=16M", "--skip-name-resolve"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        let db = PrivateMariaDb { _dir: dir, child, port };
        let start = Instant::now();
        let url = format!("mysql://root@127.0.0.1:{port}/");
        loop {
            let u = url.clone();
            let ok = super::run_isolated(move || async move {
                use mysql_async::prelude::Queryable;
                let mut c = mysql_async::Conn::from_url(u).await?;
                c.query_drop("CREATE DATABASE IF NOT EXISTS mb").await?;
                c.disconnect().await
            });
            if ok.is_ok() {
                return Some(db);
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the private MariaDB did not start: {ok:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/mb", self.port)
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        signal(self.child.id(), "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis server of the test's own on a free port (no persistence), for fleet tests: each
/// test gets its own key space, and may stop, pause or restart the broker.
pub struct PrivateRedis {
    pub child: Option<Child>,
    pub port: u16,
}

impl PrivateRedis {
    pub fn start() -> Option<PrivateRedis> {
        if Command::new("redis-server").arg("--version").output().is_err() {
            assert!(std::env::var(super::REQUIRE_ALL_ENV).as_deref() != Ok("1"), "redis-server is not installed");
            eprintln!("SKIPPED: redis-server is not installed");
            return None;
        }
        let mut r = PrivateRedis { child: None, port: free_port() };
        r.restart();
        Some(r)
    }

    /// Starts it (again, on the same port, empty) and waits until it answers PING.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n" {
                    return;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(10), "the private Redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (the port then refuses connections until [`PrivateRedis::restart`]).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), "CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
