//! Paid delivery against the REAL wallet storage: `tests/payments-storage/storage.mjs` runs
//! `@bsv/wallet-toolbox`'s `StorageServer` on loopback (SQLite, stand-in chain services),
//! our server points `WALLET_STORAGE_URL` at it, and `paid_send.mjs` pays with the real
//! `MessageBoxClient` on a funded toolbox wallet, reading the storage's database to see
//! what was credited to the server's identity.
//!
//! - `paid_sends_through_the_real_wallet_storage`: a send to `notifications` (fee 10) with
//!   `checkPermissions: true` is stored and its fee internalized; a payment the storage
//!   itself refuses (a proof from a block its chain does not know) is the original's 500
//!   `ERR_INTERNALIZE_FAILED` with the storage's text; storage stopped → 503
//!   `ERR_PAYMENT_UNAVAILABLE` at once; storage restarted (same database, every session
//!   forgotten) → paid sends work again, our server re-handshaking by itself.
//! - `refused_payments_credit_nothing_at_the_storage`: too little, another key, the same
//!   payment twice: refused (the local payment checks answer first), nothing credited.
//!
//! Needs node and `npm ci --prefix tests/payments-storage` (better-sqlite3 compiles from
//! source where its prebuilt binary cannot be downloaded: a C++ compiler and node's headers).
//! Missing, the tests are skipped loudly, or fail under `MESSAGEBOX_REQUIRE_ALL=1`. Alone:
//! `cargo test --test payments_storage` (about a minute).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::node::{self, Proc};
use common::{free_port, Kind, TestDb, TestServer};
use messagebox::auth::PrivateKey;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("payments-storage")
}

const PACKAGES: [&str; 5] = ["@bsv/sdk", "@bsv/wallet-toolbox", "@bsv/message-box-client", "better-sqlite3", "knex"];

/// node and the debug server share two cores: one suite at a time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The storage server process, restartable on the same port, key and database.
struct Storage {
    proc: Option<Proc>,
    port: u16,
    key: String,
    db: PathBuf,
    roots: PathBuf,
    past_logs: Vec<String>,
}

impl Storage {
    fn start(work: &Path) -> Storage {
        let mut s = Storage {
            proc: None,
            port: free_port(),
            key: PrivateKey::random().to_hex(),
            db: work.join("storage.sqlite"),
            roots: work.join("roots.json"),
            past_logs: Vec::new(),
        };
        s.launch().unwrap();
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("node");
        cmd.current_dir(dir()).arg("storage.mjs").args(["--port", &self.port.to_string(), "--key", &self.key]);
        cmd.arg("--db").arg(&self.db).arg("--roots").arg(&self.roots);
        let proc = Proc::spawn("storage.mjs", cmd);
        if proc.wait_for("READY ", Duration::from_secs(60)).is_none() {
            return Err(format!("the wallet storage did not start within 60 s:\n{}", proc.output()));
        }
        self.proc = Some(proc);
        Ok(())
    }

    /// Kills it: the port refuses connections until [`Self::launch`].
    fn stop(&mut self) -> Result<(), String> {
        let mut proc = self.proc.take().ok_or("the storage is not running")?;
        proc.terminate(Duration::from_secs(5));
        self.past_logs.push(proc.output());
        Ok(())
    }

    fn log(&self) -> String {
        let mut all = self.past_logs.clone();
        all.extend(self.proc.as_ref().map(Proc::output));
        all.join("\n")
    }
}

fn paid_send(suite: &str) {
    if !node::available(&dir(), &PACKAGES, "npm ci --prefix tests/payments-storage") {
        return;
    }
    let _one = one_at_a_time();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut storage = Storage::start(work.path());
    let db = TestDb::new(Kind::SqliteFile).unwrap();
    let url = storage.url();
    // The toolbox's wallet work blocks node's event loop for seconds at a time, long enough
    // for undici to miss closing a pooled connection that our 5 s keep-alive already closed
    // ("fetch failed" on its next request): keep idle connections for a minute here.
    let env = [
        ("WALLET_STORAGE_URL", url.as_str()),
        ("WALLET_STORAGE_TIMEOUT_MS", "10000"),
        ("MESSAGE_BOX_KEEP_ALIVE_TIMEOUT_MS", "60000"),
    ];
    let server = rt.block_on(TestServer::start(&db.url, &env));
    let our_url = format!("http://{}", server.addr);
    let (storage_db, roots) = (storage.db.display().to_string(), storage.roots.display().to_string());
    let workdir = work.path().display().to_string();
    let args = [
        "--url",
        &our_url,
        "--server-identity",
        &server.identity,
        "--storage-db",
        &storage_db,
        "--roots",
        &roots,
        "--workdir",
        &workdir,
        "--suite",
        suite,
    ];
    let storage = std::cell::RefCell::new(&mut storage);
    node::run_script(
        &dir(),
        "paid_send.mjs",
        &format!("paid_send_{suite}"),
        &args,
        Duration::from_secs(180),
        |request| match request {
            "storage-stop" => storage.borrow_mut().stop(),
            "storage-start" => storage.borrow_mut().launch(),
            _ => Err("unknown request".into()),
        },
        || format!("wallet storage log:\n{}", storage.borrow().log()),
    );
    drop(server);
}

#[test]
fn paid_sends_through_the_real_wallet_storage() {
    paid_send("main");
}

#[test]
fn refused_payments_credit_nothing_at_the_storage() {
    paid_send("refusals");
}
