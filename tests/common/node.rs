//! Node.js children of the tests that drive the real npm packages (`tests/interop.rs`,
//! `tests/payments_storage.rs`): whether node and a script folder's packages are installed
//! ([`available`]), a child whose output lines drive the harness ([`Proc`]), and a script run
//! that answers its `@@CONTROL` requests and passes only when every check did ([`run_script`];
//! the protocol is in `tests/interop/lib.mjs`).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::REQUIRE_ALL_ENV;

/// `true` when node, npm and `packages` under `dir/node_modules` are there. Otherwise a loud
/// skip (`false`), or a panic under `MESSAGEBOX_REQUIRE_ALL=1`. `install` is the command that
/// installs them (named in the messages).
pub fn available(dir: &Path, packages: &[&str], install: &str) -> bool {
    let required = std::env::var(REQUIRE_ALL_ENV).is_ok_and(|v| v == "1");
    let works = |cmd: &str| {
        let status = Command::new(cmd).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        status.is_ok_and(|s| s.success())
    };
    let mut missing: Vec<String> =
        ["node", "npm"].into_iter().filter(|t| !works(t)).map(|t| format!("`{t}` on PATH")).collect();
    for package in packages {
        if !dir.join("node_modules").join(package).join("package.json").is_file() {
            missing.push(format!("{}/node_modules/{package} (run `{install}`)", dir.display()));
        }
    }
    if missing.is_empty() {
        return true;
    }
    if required {
        panic!("{REQUIRE_ALL_ENV}=1 but these node tests cannot run; missing: {}", missing.join(", "));
    }
    // Straight to the process's stderr: the test harness captures eprintln! output of
    // passing tests, and a skip must be seen.
    let _ = writeln!(std::io::stderr(), "\n!!!!!!!! SKIPPED node tests; missing: {} !!!!!!!!\n", missing.join(", "));
    false
}

/// A child whose stdout and stderr lines are collected (and streamed to `lines`); killed on
/// drop if still running.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (stream, prefix) in [(Box::new(stdout) as Box<dyn Read + Send>, ""), (Box::new(stderr), "[stderr] ")] {
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(format!("{prefix}{line}"));
                    // Only stdout lines drive the harness; stderr is kept for the report.
                    if prefix.is_empty() && tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        Proc { name: name.to_string(), child, stdin, lines: rx, log }
    }

    /// The next stdout line, `None` on timeout or when the child closed its stdout.
    pub fn next_line(&self, deadline: Instant) -> Option<String> {
        self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()
    }

    /// Waits for a stdout line containing `needle`.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while let Some(line) = self.next_line(deadline) {
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    }

    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin kept open");
        writeln!(stdin, "{line}").and_then(|_| stdin.flush()).unwrap_or_else(|e| panic!("write to {}: {e}", self.name));
    }

    pub fn output(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }

    pub fn tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log[log.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, then up to `grace` for a clean exit, then SIGKILL. Returns the exit status
    /// when the process exited by itself.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// Waits up to `timeout` for the child to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `node <script> <args>` in `dir`, answering each `@@CONTROL <request>` line with
/// `control(request)` (`Err(reason)` is reported to the script as a failure), and panics
/// with the whole output and `context()` (e.g. a server's log) unless the script's summary
/// line `<suite>: N passed, 0 failed` came and it exited 0. Returns N.
pub fn run_script(
    dir: &Path,
    script: &str,
    suite: &str,
    args: &[&str],
    timeout: Duration,
    mut control: impl FnMut(&str) -> Result<(), String>,
    context: impl Fn() -> String,
) -> usize {
    let mut cmd = Command::new("node");
    cmd.current_dir(dir).arg(script).args(args);
    let mut node = Proc::spawn(script, cmd);
    let deadline = Instant::now() + timeout;
    let mut summary = None;
    while let Some(line) = node.next_line(deadline) {
        if let Some(request) = line.strip_prefix("@@CONTROL ") {
            let answer = match control(request) {
                Ok(()) => format!("@@CONTROL {request} done"),
                Err(e) => {
                    println!("{request} failed: {e}");
                    format!("@@CONTROL {request} failed {}", e.lines().next().unwrap_or_default())
                }
            };
            node.send_line(&answer);
        } else if let Some(counts) = line.strip_prefix(&format!("{suite}: ")) {
            summary = parse_counts(counts);
        }
    }
    let status = node.wait_exit(Duration::from_secs(10));
    if status.is_none() {
        node.terminate(Duration::from_secs(2));
    }
    let output = node.output();
    println!("----- {script} -----\n{output}\n----- end of {script} -----");
    match (status, summary) {
        (Some(s), Some((passed, 0))) if s.success() && passed > 0 => passed,
        (status, summary) => panic!(
            "{script} failed (exit {status:?}, summary {summary:?}):\n{output}\n----- context -----\n{}",
            context()
        ),
    }
}

/// `N passed, M failed` → (N, M).
fn parse_counts(s: &str) -> Option<(usize, usize)> {
    let (passed, failed) = s.split_once(", ")?;
    Some((passed.strip_suffix(" passed")?.parse().ok()?, failed.strip_suffix(" failed")?.parse().ok()?))
}
