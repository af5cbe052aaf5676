//! The MySQL/MariaDB backend (`mysql_async`).
//!
//! mysql_async connections are bound to the runtime that created them, so every runtime
//! that talks to the database has a pool of its own:
//! * each server core ([`super::percore`]) gets a small pool, created on its runtime when it
//!   first needs one; an operation called on a core runs there, start to finish ([`MysqlStore::spawn`]);
//! * the store's own OS thread runs a tokio `current_thread` runtime with the store pool: it
//!   serves the group-commit writer and every caller that is no core (the operation is
//!   spawned onto it and its `JoinHandle` awaited, from any runtime).
//!
//! Both paths bound an operation the same way (acquire/connect timeout plus the query
//! timeout, [`bounded`]) and report it to the one outage log ([`Health`]).
//! `MESSAGE_BOX_DB_POOL_MAX` is the process's total; [`split_pool`] divides it.
//!
//! Message inserts go through the shared group-commit writer (`store::batch`), driven by
//! a task on the store runtime that writes up to [`PIPELINE`] batches at once (it takes a
//! slot before it gathers the next batch, so what arrives while every slot is busy joins one
//! bigger batch): a core queues its rows and awaits the reply, the send's one hand-off,
//! which batches. This module
//! supplies the transaction (`BatchWriter`): a batch resolves its messageBox ids (a bounded
//! cache, then one multi-row `INSERT IGNORE` plus one lookup for the misses) and writes all
//! its rows in ONE transaction with one multi-row `INSERT IGNORE INTO messages` per chunk;
//! each caller is answered only after COMMIT. Per-row outcomes (inserted or duplicate id):
//! * ids all distinct (the common case): insert straight away; if every row went in, the
//!   outcome is unambiguous;
//! * otherwise a pre-check of the ids in the same transaction predicts each row, and the
//!   affected-row count verifies the prediction;
//! * when they disagree (a concurrent writer, or a collation our Rust-side comparison does
//!   not model) the batch is rolled back and redone row by row, which is exact.
//!
//! The common batch (one row, or distinct ids; one chunk) first goes in TWO round trips of
//! text multi-statement queries, `START TRANSACTION; INSERT …` then `<usage upsert>; COMMIT`,
//! committed only when the INSERT stored every row ([`text_batch_sql`]); otherwise it is
//! rolled back and takes the exact path above.
//!
//! Acknowledgements go through the same queue and pipeline: consecutive queued ones (at most
//! [`MAX_ACKS_PER_COMMIT`], about [`MAX_LIST`] ids) are deleted in ONE transaction with one
//! usage subtraction for all ([`Committer::acknowledge`]); on MariaDB two round trips of text
//! ([`acknowledge_two_trips`]), else prepared ([`acknowledge_once`]). Each is answered after
//! COMMIT with its own count; a batch that fails on a statement is redone one at a time.
//!
//! Every connection runs with `time_zone = '+00:00'`, so TIMESTAMP columns read and write
//! UTC, and keeps its prepared statements across uses (no reset on return to the pool).
//! Statements with variable-length lists are padded to a few bucket sizes so that each
//! connection caches a handful of statement shapes instead of one per length.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, TxOpts, Value};
use tokio::sync::oneshot;

use super::batch::{self, BatchWriter, Work, WriteFailure};
use super::error::mysql_codes::{ER_NO_REFERENCED_ROW, ER_NO_REFERENCED_ROW_2};
use super::fee_cache::FeeCache;
use super::fees::{self, FeeRules};
use super::percore::{self, Placement, Resource, StoreId};
use super::sql;
use super::usage::{self, Dialect};
use super::{
    civil_from_timestamp, expiry, migrate, now, timestamp_from_civil, Backend, ByteBound, Device, DeviceRegistration,
    ErrorClass, ErrorCode, Health, InsertOutcome, MessageOwner, MigrationReport, NewMessage, PageTally, Permission,
    ServerFee, StoreError, StoreFuture, StoreOptions, StoredMessage, Timestamp, WriterStats, MAX_DEVICES,
};
use crate::limits::DatabaseLimits;

/// How long a connection beyond the first may idle in the pool before it is closed.
const IDLE_CONNECTION_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// Prepared statements kept per connection (LRU inside mysql_async).
const STMT_CACHE_SIZE: usize = 64;
/// Most values in one `IN (...)` list or `UNION ALL` lookup; longer lists are chunked.
const MAX_LIST: usize = 512;
/// Most body bytes in one multi-row INSERT; a bigger batch is split into more statements.
/// The driver copies each row's body into the statement's parameters and its packet, so
/// this bounds what one batch holds beyond its shared bodies (D1: a 1 MiB body to 100
/// recipients is 100 statements of one row, not 100 MiB of parameters at once).
const MAX_CHUNK_BYTES: usize = 2 << 20;
/// Entries per generation of the messageBox id cache (so at most twice this many).
const BOX_CACHE_GENERATION: usize = 32_768;
/// Insert batches in flight at once: while one executes in MySQL the next is built and
/// sent (measured on a shared 2-core machine: about 1.2x a single writer, widely spread). Two
/// in-flight batches that share an id serialise on its row lock; the verification below
/// keeps outcomes exact and a deadlock between them is retried.
const PIPELINE: usize = 2;
/// Connections the store thread's pool keeps at least, whatever the split: one per
/// in-flight insert batch.
const STORE_POOL_MIN: usize = PIPELINE;
/// Retries after a deadlock or lock-wait timeout.
const TRANSIENT_RETRIES: u32 = 2;
/// Retries of a default permission insert that lost a lock conflict (see [`insert_default_fee`]).
const DEFAULT_FEE_RETRIES: u32 = 8;
/// Retries of a delivery fee upsert that lost a lock conflict (see [`upsert_server_fee`]).
const SERVER_FEE_RETRIES: u32 = 8;

const INSERT_MESSAGES_PREFIX: &str = "INSERT IGNORE INTO messages \
     (messageId, messageBoxId, sender, recipient, body, created_at, updated_at, expires_at) VALUES ";
const MESSAGE_ROW: &str = "(?,?,?,?,?,?,?,?)";

/// What mysql_async's process-wide buffer pool keeps of one packet buffer, unless the
/// operator set `MYSQL_ASYNC_BUFFER_SIZE_CAP`. The driver's default (4 MiB × 128 pooled
/// buffers) let one multi-recipient send of a 1 MiB body leave ~150 MiB of 1 MiB buffers in
/// the pool (D1); capped, a large packet's buffer shrinks when it goes back.
const DRIVER_BUFFER_SIZE_CAP: &str = "65536";

/// Bounds mysql_async's buffer pool (read from the environment when the driver first uses
/// it). Call at the start of `main`, before any other thread exists: changing the
/// environment while another thread may read it is not sound.
pub fn bound_driver_buffers() {
    if std::env::var_os("MYSQL_ASYNC_BUFFER_SIZE_CAP").is_none() {
        std::env::set_var("MYSQL_ASYNC_BUFFER_SIZE_CAP", DRIVER_BUFFER_SIZE_CAP);
    }
}

/// The MySQL store handle. Dropping it closes the writer queue; the store thread then
/// commits what is queued, closes the pool and exits.
pub struct MysqlStore {
    fees: Arc<FeeCache>,
    runtime: tokio::runtime::Handle,
    shared: Arc<Shared>,
    writer: batch::Queue<WriteJob>,
    quotas: Arc<super::quota::Ledger>,
}

/// Work for the writer besides inserts: acknowledgements, which consecutive ones commit
/// together ([`Committer::acknowledge`]).
enum WriteJob {
    Ack(Ack),
}

/// One queued `acknowledge` call.
struct Ack {
    recipient: String,
    ids: Vec<String>,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// Most acknowledgements one transaction commits.
const MAX_ACKS_PER_COMMIT: usize = 64;

struct Shared {
    /// The store thread's pool.
    pool: Pool,
    /// For the migration's own connection (see [`migrate::run_mysql`]).
    opts: Opts,
    /// For each core's pool: `opts` with the per-core size.
    core_opts: Opts,
    /// This store's key in each core's registry.
    id: StoreId,
    max_batch_rows: usize,
    timeouts: DatabaseLimits,
    retention_days: Option<u64>,
    health: Health,
    placement: Placement,
    /// The server is MariaDB (its version string says so; read when the store opens): its
    /// deletes return what they deleted (`DELETE … RETURNING`), MySQL's need a locking read.
    mariadb: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn mariadb(&self) -> bool {
        self.mariadb.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A connection of the store thread's pool (the group-commit writer's).
    async fn conn(&self) -> Result<Conn, StoreError> {
        acquire(&self.pool, &self.timeouts).await
    }

    /// The calling core's pool (created now on its first use); `None` off a core.
    fn core_pool(&self) -> Option<Pool> {
        match percore::resource(self.id, || Resource::Mysql(Pool::new(self.core_opts.clone())))? {
            Resource::Mysql(pool) => Some(pool),
            Resource::Sqlite(_) => None,
        }
    }

    /// The most one operation may take: waiting for a connection, then its statements.
    fn deadline(&self) -> std::time::Duration {
        self.timeouts.acquire_timeout.max(self.timeouts.connect_timeout) + self.timeouts.query_timeout
    }
}

/// A connection from `pool`, or `Unavailable` once the acquire (or connect) timeout passes:
/// mysql_async has no connect timeout of its own, and a stopped server accepts the TCP
/// connection and then never greets.
async fn acquire(pool: &Pool, timeouts: &DatabaseLimits) -> Result<Conn, StoreError> {
    let wait = timeouts.acquire_timeout.max(timeouts.connect_timeout);
    match tokio::time::timeout(wait, pool.get_conn()).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(StoreError::Unavailable(format!("no MySQL connection within {} ms", wait.as_millis()))),
    }
}

/// What one operation runs with: the store's settings and the pool of the runtime it runs
/// on (the calling core's, or the store thread's).
struct Db {
    shared: Arc<Shared>,
    pool: Pool,
}

impl Db {
    /// A connection of this runtime's pool (see [`acquire`]).
    async fn conn(&self) -> Result<Conn, StoreError> {
        acquire(&self.pool, &self.shared.timeouts).await
    }

    fn mariadb(&self) -> bool {
        self.shared.mariadb()
    }
}

/// `(store thread, each core)`: the connections of `pool_size` (`MESSAGE_BOX_DB_POOL_MAX`)
/// for the store thread's pool and for each of `cores` per-core pools. Each core gets
/// `pool_size / (cores + 1)`, at least one; the store thread the rest, at least
/// [`STORE_POOL_MIN`]. The total is `pool_size`, or `cores + STORE_POOL_MIN` when the pool
/// is smaller than that.
pub fn split_pool(pool_size: usize, cores: usize) -> (usize, usize) {
    let total = pool_size.max(1);
    let per_core = (total / (cores + 1)).max(1);
    let store = total.saturating_sub(per_core * cores).max(STORE_POOL_MIN);
    (store, per_core)
}

/// `f` bounded by `limit`: past it the work is dropped (its connection with it) and the
/// caller hears `Unavailable`.
async fn bounded<T>(
    limit: std::time::Duration,
    f: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, f).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!("the MySQL operation did not finish within {} ms", limit.as_millis())))
    })
}

impl MysqlStore {
    /// Starts the store thread and checks that the server answers. `url` is
    /// `mysql://user:pass@host:port/db` (`mariadb://` is accepted too) with mysql_async's
    /// URL parameters; pool size and statement caching come from `options`.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let url = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_string(),
        };
        let parsed = Opts::from_url(&url).map_err(|e| StoreError::Config(format!("bad MySQL URL: {e}")))?;
        if parsed.db_name().is_none_or(str::is_empty) {
            return Err(StoreError::Config("the MySQL URL names no database (mysql://…/<database>)".into()));
        }
        let (store_pool, core_pool) = split_pool(options.pool_size, options.cores);
        let pool_opts = |size: usize| {
            let constraints =
                PoolConstraints::new(1, size).ok_or_else(|| StoreError::Config("bad pool size".into()))?;
            // Without an idle TTL mysql_async keeps only `min` idle connections and closes
            // every other one on return: each use would reconnect and re-prepare its statements.
            Ok::<_, StoreError>(
                PoolOpts::default()
                    .with_constraints(constraints)
                    .with_inactive_connection_ttl(IDLE_CONNECTION_TTL)
                    .with_reset_connection(false),
            )
        };
        let opts: Opts = OptsBuilder::from_opts(parsed)
            // `setup` also runs after a connection reset; resets are off, but stay safe.
            .setup(vec!["SET time_zone = '+00:00'"])
            .stmt_cache_size(STMT_CACHE_SIZE)
            // Affected-row counts must mean "changed rows" (outcomes, insertId semantics).
            .client_found_rows(false)
            .pool_opts(pool_opts(store_pool)?)
            .into();
        let core_opts: Opts = OptsBuilder::from_opts(opts.clone()).pool_opts(pool_opts(core_pool)?).into();

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Config(format!("cannot start the MySQL runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let pool = {
            let _entered = handle.enter();
            Pool::new(opts.clone())
        };
        let shared = Arc::new(Shared {
            pool: pool.clone(),
            opts,
            core_opts,
            id: StoreId::next(),
            max_batch_rows: options.max_batch_rows.max(1),
            timeouts: options.timeouts,
            retention_days: options.retention_days,
            health: Health::default(),
            placement: Placement::default(),
            mariadb: std::sync::atomic::AtomicBool::new(false),
        });
        let (queue, intake) =
            batch::queue(options.max_queued_inserts, options.max_batch_rows, "the MySQL writer has stopped");
        let quotas = super::quota::Ledger::new(options.quotas);
        let writer = Writer {
            intake,
            committer: Arc::new(Committer {
                shared: shared.clone(),
                boxes: std::sync::Mutex::new(BoxCache::new(BOX_CACHE_GENERATION)),
                counters: queue.counters(),
                quotas: quotas.clone(),
            }),
            in_flight: Arc::new(tokio::sync::Semaphore::new(PIPELINE)),
        };
        std::thread::Builder::new()
            .name("messagebox-mysql".into())
            .spawn(move || {
                runtime.block_on(async move {
                    writer.run().await;
                    if let Err(e) = pool.disconnect().await {
                        tracing::warn!(error = %e, "closing the MySQL pool failed");
                    }
                });
                tracing::debug!("MySQL store thread stopped");
            })
            .map_err(|e| StoreError::Config(format!("cannot start the MySQL thread: {e}")))?;

        let fees = Arc::new(FeeCache::new(options.fee_cache_entries));
        let store = MysqlStore { fees, runtime: handle, shared, writer: queue, quotas };
        store
            .spawn(|s| async move {
                let mut conn = s.conn().await?;
                let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
                let mariadb = version.is_some_and(|v| v.to_ascii_lowercase().contains("mariadb"));
                s.shared.mariadb.store(mariadb, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            })
            .await?;
        let o = &store.shared.opts;
        tracing::info!(
            host = %o.ip_or_hostname(),
            port = o.tcp_port(),
            database = o.db_name().unwrap_or_default(),
            store_pool,
            cores = options.cores,
            core_pool,
            max_batch_rows = store.shared.max_batch_rows,
            "MySQL store ready"
        );
        Ok(store)
    }

    /// Runs `f` where it is awaited when that is a server core (on the core's pool), else on
    /// the store runtime; bounded by the store's deadline and reported to its outage log
    /// either way. Decided at the first poll: the thread that polls is the one that waits.
    fn spawn<T, F, Fut>(&self, f: F) -> StoreFuture<'_, T>
    where
        F: FnOnce(Db) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
        T: Send + 'static,
    {
        let shared = self.shared.clone();
        Box::pin(async move {
            if let Some(pool) = shared.core_pool() {
                shared.placement.count(true);
                let result = bounded(shared.deadline(), f(Db { shared: shared.clone(), pool })).await;
                shared.health.observe("mysql", &result);
                return result;
            }
            shared.placement.count(false);
            // The deadline runs on the store runtime, so the work stops there when it passes.
            let task = self.runtime.spawn(async move {
                let work = f(Db { shared: shared.clone(), pool: shared.pool.clone() });
                let result = bounded(shared.deadline(), work).await;
                shared.health.observe("mysql", &result);
                result
            });
            task.await.map_err(|e| StoreError::Unavailable(format!("MySQL store task did not finish: {e}")))?
        })
    }
}

/// A TIMESTAMP parameter (the session time zone is UTC).
pub(crate) fn date_value(ts: Timestamp) -> Value {
    let (y, m, d, hh, mm, ss) = civil_from_timestamp(ts);
    Value::Date(y.clamp(0, 9999) as u16, m as u8, d as u8, hh as u8, mm as u8, ss as u8, 0)
}

fn opt_text(v: Option<&str>) -> Value {
    v.map_or(Value::NULL, Value::from)
}

/// Decoding of result values; lenient about the representation (binary or text protocol).
fn v_string(v: Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => {
            Some(String::from_utf8(b).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
        }
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        other => Some(other.as_sql(true)),
    }
}

fn v_i64(v: Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(i),
        Value::UInt(u) => i64::try_from(u).ok(),
        Value::Bytes(b) => std::str::from_utf8(&b).ok()?.trim().parse().ok(),
        Value::Float(f) => Some(f as i64),
        Value::Double(f) => Some(f as i64),
        _ => None,
    }
}

fn v_ts(v: Value) -> Option<Timestamp> {
    match v {
        Value::Date(0, ..) => None,
        Value::Date(y, m, d, hh, mm, ss, _) => Some(timestamp_from_civil(
            i64::from(y),
            u32::from(m),
            u32::from(d),
            u32::from(hh),
            u32::from(mm),
            u32::from(ss),
        )),
        Value::Bytes(b) => {
            // Text protocol: `YYYY-MM-DD HH:MM:SS[.ffffff]`.
            let s = std::str::from_utf8(&b).ok()?;
            let n = |r: Range<usize>| s.get(r)?.parse::<u32>().ok();
            let y = n(0..4)?;
            if y == 0 {
                return None;
            }
            Some(timestamp_from_civil(i64::from(y), n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?))
        }
        other => v_i64(other),
    }
}

/// A row's values, in column order.
fn values(row: Row) -> std::vec::IntoIter<Value> {
    row.unwrap().into_iter()
}

fn next(it: &mut std::vec::IntoIter<Value>) -> Value {
    it.next().unwrap_or(Value::NULL)
}

fn required<T>(v: Option<T>, what: &str) -> Result<T, StoreError> {
    v.ok_or_else(|| StoreError::database(format!("unexpected NULL or malformed value in {what}")))
}

/// The list size an `IN`/`UNION` statement is prepared for: the next power of two, at
/// most `cap` (padding entries repeat the last real one, which costs nothing there).
fn bucket(n: usize, cap: usize) -> usize {
    n.next_power_of_two().min(cap.max(n))
}

/// The row count a multi-row INSERT is prepared for: `n` rounded up to an eighth of its
/// power of two (≤ 12.5 % padding rows, which do cost work; about 8 shapes per octave).
fn insert_bucket(n: usize, cap: usize) -> usize {
    let step = (n.next_power_of_two() / 8).max(1);
    n.div_ceil(step).saturating_mul(step).min(cap.max(n))
}

fn padded<T: Clone>(items: &[T], size: usize) -> impl Iterator<Item = T> + '_ {
    let last = items.last().cloned();
    items.iter().cloned().chain(std::iter::repeat_n(last, size - items.len()).flatten())
}

/// How this code compares message ids when it has to (within one batch, and to match the
/// pre-check's answer): MySQL's default collations ignore case and (PAD SPACE) trailing
/// spaces. A collation that differs shows up as an affected-row mismatch and the batch is
/// redone row by row, so this only has to be right in the common case.
fn id_key(id: &str) -> String {
    id.trim_end_matches(' ').to_lowercase()
}

/// A deadlock, lock wait timeout or AUTO-INC lock failure: running it again may succeed.
fn is_transient(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if ErrorCode::Mysql(s.code).class() == ErrorClass::Retry)
}

/// Whether the last statement's warnings include a foreign-key failure, which `INSERT
/// IGNORE` downgrades to a warning (a messageBox row deleted under our cache).
async fn fk_warning<Q: Queryable + Send>(q: &mut Q) -> Result<bool, mysql_async::Error> {
    let rows: Vec<Row> = q.query("SHOW WARNINGS").await?;
    Ok(rows.into_iter().any(|r| {
        let code = values(r).nth(1).and_then(v_i64);
        matches!(code, Some(c) if c == i64::from(ER_NO_REFERENCED_ROW_2) || c == i64::from(ER_NO_REFERENCED_ROW))
    }))
}

/// `(recipient, box_type)` → `messageBoxId`, bounded: two generations, the older one is
/// dropped when the newer fills up (boxes are never deleted by the app, so entries only go
/// stale when an operator deletes a box, which the writer detects and then clears this).
struct BoxCache {
    current: HashMap<String, HashMap<String, u32>>,
    previous: HashMap<String, HashMap<String, u32>>,
    len: usize,
    generation: usize,
}

impl BoxCache {
    fn new(generation: usize) -> Self {
        BoxCache { current: HashMap::new(), previous: HashMap::new(), len: 0, generation: generation.max(1) }
    }

    fn get(&mut self, recipient: &str, box_type: &str) -> Option<u32> {
        if let Some(id) = self.current.get(box_type).and_then(|m| m.get(recipient)) {
            return Some(*id);
        }
        let id = *self.previous.get(box_type)?.get(recipient)?;
        self.insert(recipient, box_type, id);
        Some(id)
    }

    fn insert(&mut self, recipient: &str, box_type: &str, id: u32) {
        if self.len >= self.generation {
            self.previous = std::mem::take(&mut self.current);
            self.len = 0;
        }
        if self.current.entry(box_type.to_string()).or_default().insert(recipient.to_string(), id).is_none() {
            self.len += 1;
        }
    }

    fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
        self.len = 0;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// One row in autocommit: its affected-row count is its outcome.
    Single,
    /// No two ids of the batch are equal under our key: insert without a pre-check and
    /// commit if every row went in (unambiguous); otherwise roll back and go to `Batch`.
    Optimistic,
    /// Pre-check, multi-row INSERTs, verify counts, one transaction.
    Batch,
    /// One INSERT per row in one transaction; exact, used when `Batch` was ambiguous.
    RowByRow,
}

enum AttemptError {
    Db(mysql_async::Error),
    /// No connection, or the attempt outlived the store's deadline (dropped, so not committed
    /// by us; a COMMIT already sent may still land, which the caller's retry finds duplicate).
    Unavailable(StoreError),
    /// The predicted outcomes disagree with what MySQL did; rolled back.
    Ambiguous,
    /// A cached messageBox id no longer exists; rolled back.
    StaleBox,
    /// The text batch inserted fewer rows than the batch has (a duplicate id
    /// or a stale box); rolled back, the exact path decides.
    Missed,
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Db(e) => write!(f, "{e}"),
            AttemptError::Unavailable(e) => write!(f, "{e}"),
            AttemptError::Ambiguous => f.write_str("ambiguous"),
            AttemptError::StaleBox => f.write_str("stale box"),
            AttemptError::Missed => f.write_str("missed"),
        }
    }
}

impl From<mysql_async::Error> for AttemptError {
    fn from(e: mysql_async::Error) -> Self {
        AttemptError::Db(e)
    }
}

/// Hands each batch of the queue (inserts, or consecutive acknowledgements) to a
/// [`Committer`] task; at most [`PIPELINE`] batches are in flight, so one can execute in
/// MySQL while the next is built.
struct Writer {
    intake: batch::Intake<WriteJob>,
    committer: Arc<Committer>,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Writes batches; shared by the in-flight batch tasks.
struct Committer {
    shared: Arc<Shared>,
    boxes: std::sync::Mutex<BoxCache>,
    counters: Arc<batch::Counters>,
    /// Told what each acknowledgement deleted, once it is committed.
    quotas: Arc<super::quota::Ledger>,
}

impl Writer {
    /// Serves the queue until every sender is gone and the queue is empty.
    async fn run(mut self) {
        loop {
            // A pipeline slot before the next work: while every slot is busy, what arrives
            // waits in the queue and joins one bigger batch instead of many small ones.
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else { break };
            let Some(work) = self.intake.next().await else { break };
            match work {
                Work::Batch(batch) => {
                    let mut committer = self.committer.clone();
                    tokio::spawn(async move {
                        batch.commit(&mut committer).await;
                        drop(permit);
                    });
                }
                // Everything queued before the flush is in a batch by now: answer after them.
                Work::Flush(done) => {
                    drop(permit);
                    self.drain().await;
                    let _ = done.send(());
                }
                Work::Job(WriteJob::Ack(first)) => {
                    let acks = self.gather_acks(first);
                    let committer = self.committer.clone();
                    tokio::spawn(async move {
                        committer.acknowledge(acks).await;
                        drop(permit);
                    });
                }
            }
        }
        self.drain().await;
    }

    /// `first` and the acknowledgements queued right behind it, without waiting: at most
    /// [`MAX_ACKS_PER_COMMIT`], and beyond the first no more than [`MAX_LIST`] ids in all (a
    /// larger one waits for the next batch).
    fn gather_acks(&mut self, first: Ack) -> Vec<Ack> {
        let mut ids = first.ids.len();
        let mut acks = vec![first];
        while acks.len() < MAX_ACKS_PER_COMMIT {
            let next = self.intake.next_job_now(|job| match job {
                WriteJob::Ack(ack) if ids + ack.ids.len() <= MAX_LIST => Ok(ack),
                other => Err(other),
            });
            let Some(ack) = next else { break };
            ids += ack.ids.len();
            acks.push(ack);
        }
        acks
    }

    /// Waits until no batch is in flight.
    async fn drain(&self) {
        if let Ok(all) = self.in_flight.acquire_many(PIPELINE as u32).await {
            drop(all);
        }
    }
}

impl BatchWriter for Arc<Committer> {
    async fn write(&mut self, rows: &[&NewMessage]) -> Result<Vec<InsertOutcome>, WriteFailure> {
        Committer::write(self, rows).await
    }
}

impl Committer {
    /// Deletes what each acknowledgement names in ONE transaction and answers each with its
    /// own count once it is committed (the quota ledger told per acknowledgement). A shared
    /// transaction that fails on a statement is redone one acknowledgement at a time, so one
    /// bad acknowledgement cannot fail the others; any other failure answers each with it.
    async fn acknowledge(&self, acks: Vec<Ack>) {
        let results = if let [ack] = acks.as_slice() {
            vec![self.acknowledge_alone(ack).await]
        } else {
            self.acknowledge_together(&acks).await
        };
        for (ack, result) in acks.into_iter().zip(results) {
            let answer = result.map(|gone| {
                // The inbox and these senders hold less: a quota refusal must ask the database again.
                self.quotas.deleted(Some(&ack.recipient), usage::deleted(&gone).iter().map(|d| d.sender));
                gone.len() as u64
            });
            let _ = ack.reply.send(answer);
        }
    }

    /// Several acknowledgements in one transaction (in queue order: an id two of them name is
    /// deleted by the first, and the second finds nothing, as if they ran one after the other).
    async fn acknowledge_together(&self, acks: &[Ack]) -> Vec<Result<Vec<(String, u64)>, StoreError>> {
        let batch: Vec<(&str, &[String])> = acks.iter().map(|a| (a.recipient.as_str(), a.ids.as_slice())).collect();
        let mut attempt = 0;
        loop {
            let outcome = bounded(self.shared.deadline(), async {
                let conn = self.shared.conn().await?;
                Ok(delete_acknowledged(conn, self.shared.mariadb(), &batch).await)
            })
            .await;
            match outcome {
                Ok(Ok(gone)) => return gone.into_iter().map(Ok).collect(),
                Ok(Err(e)) if retry_delete("group-committed acknowledgements", &e, &mut attempt) => {}
                Ok(Err(mysql_async::Error::Server(e))) => {
                    tracing::warn!(error = %e, acks = acks.len(), "group-committed acknowledgements failed; redoing each alone");
                    self.counters.count_fallback();
                    let mut each = Vec::with_capacity(acks.len());
                    for ack in acks {
                        each.push(self.acknowledge_alone(ack).await);
                    }
                    return each;
                }
                // Nothing was committed (the connection is closed if it may hold the transaction).
                Ok(Err(e)) => return vec![Err(e.into()); acks.len()],
                Err(e) => return vec![Err(e); acks.len()],
            }
        }
    }

    /// One acknowledgement in its own transaction, retried after a lock conflict.
    async fn acknowledge_alone(&self, ack: &Ack) -> Result<Vec<(String, u64)>, StoreError> {
        let one = [(ack.recipient.as_str(), ack.ids.as_slice())];
        bounded(self.shared.deadline(), async {
            let mut attempt = 0;
            loop {
                let conn = self.shared.conn().await?;
                match delete_acknowledged(conn, self.shared.mariadb(), &one).await {
                    Ok(mut gone) => return Ok(gone.pop().unwrap_or_default()),
                    Err(e) if retry_delete("an acknowledgement", &e, &mut attempt) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        })
        .await
    }

    /// Writes `rows` (in order) and returns each row's outcome, retrying what is safe to retry.
    async fn write(&self, rows: &[&NewMessage]) -> Result<Vec<InsertOutcome>, WriteFailure> {
        let mut mode = if rows.len() == 1 {
            Mode::Single
        } else if distinct_ids(rows) {
            Mode::Optimistic
        } else {
            Mode::Batch
        };
        let mut stale_retried = false;
        let mut transient = 0;
        // The text batch first (Single and Optimistic only); once it misses, the exact path decides.
        let mut text = true;
        loop {
            match self.attempt(rows, mode, text).await {
                Ok(outcomes) => return Ok(outcomes),
                Err(AttemptError::Missed) if mode == Mode::Optimistic => mode = Mode::Batch,
                Err(AttemptError::Missed) => text = false,
                Err(AttemptError::Ambiguous) if mode == Mode::Optimistic => mode = Mode::Batch,
                Err(AttemptError::Ambiguous) => {
                    tracing::debug!(rows = rows.len(), "batch outcome ambiguous; redoing it row by row");
                    self.counters.count_fallback();
                    mode = Mode::RowByRow;
                }
                Err(AttemptError::StaleBox) if !stale_retried => {
                    tracing::warn!("a cached messageBox row is gone (deleted by an operator?); clearing the cache and retrying once");
                    self.cache().clear();
                    stale_retried = true;
                }
                Err(AttemptError::StaleBox) => {
                    return Err(WriteFailure {
                        error: StoreError::database("messageBox rows disappeared while storing messages"),
                        statement_level: true,
                    });
                }
                Err(AttemptError::Db(e)) if is_transient(&e) && transient < TRANSIENT_RETRIES => {
                    transient += 1;
                    tracing::warn!(error = %e, attempt = transient, "message insert hit a lock conflict; retrying");
                }
                Err(AttemptError::Unavailable(error)) => return Err(WriteFailure { error, statement_level: false }),
                Err(AttemptError::Db(e)) => {
                    let statement_level = matches!(e, mysql_async::Error::Server(_));
                    return Err(WriteFailure { error: e.into(), statement_level });
                }
            }
        }
    }

    async fn attempt(&self, rows: &[&NewMessage], mode: Mode, text: bool) -> Result<Vec<InsertOutcome>, AttemptError> {
        match tokio::time::timeout(self.shared.deadline(), self.attempt_unbounded(rows, mode, text)).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::Unavailable(StoreError::Unavailable(format!(
                "storing messages did not finish within {} ms",
                self.shared.deadline().as_millis()
            )))),
        }
    }

    async fn attempt_unbounded(
        &self,
        rows: &[&NewMessage],
        mode: Mode,
        text: bool,
    ) -> Result<Vec<InsertOutcome>, AttemptError> {
        let mut conn = self.shared.conn().await.map_err(AttemptError::Unavailable)?;
        let created = now();
        let ts = date_value(created);
        let expires_at = expiry(created, self.shared.retention_days);
        let expires = expires_at.map_or(Value::NULL, date_value);
        let box_ids = self.resolve_boxes(&mut conn, rows, &ts).await?;
        if text && matches!(mode, Mode::Single | Mode::Optimistic) && fits_text_batch(rows, self.shared.max_batch_rows)
        {
            if let Some(no_backslash_escapes) = no_backslash_escapes(&conn) {
                let (insert, usage_sql) = text_batch_sql(rows, &box_ids, created, expires_at, no_backslash_escapes);
                run_text_batch(conn, &insert, &usage_sql, rows.len()).await?;
                return Ok(vec![InsertOutcome::Inserted; rows.len()]);
            }
        }
        match mode {
            Mode::Single => {
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                tx.exec_drop(insert_sql(1), row_params(rows[0], box_ids[0], &ts, &expires)).await?;
                let outcome = if tx.affected_rows() == 1 {
                    InsertOutcome::Inserted
                } else if tx.get_warnings() > 0 && fk_warning(&mut tx).await? {
                    tx.rollback().await?;
                    return Err(AttemptError::StaleBox);
                } else {
                    // A duplicate changed nothing: no usage to add, nothing to commit.
                    tx.rollback().await?;
                    return Ok(vec![InsertOutcome::Duplicate]);
                };
                change_usage(&mut tx, &usage::inserted(rows, &[outcome]), Change::Add).await?;
                tx.commit().await?;
                Ok(vec![outcome])
            }
            Mode::Optimistic | Mode::Batch => {
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                let predicted = if mode == Mode::Optimistic {
                    vec![InsertOutcome::Inserted; rows.len()]
                } else {
                    let existing = precheck(&mut tx, rows).await?;
                    let Some(predicted) = predict(rows, &existing) else {
                        tx.rollback().await?;
                        return Err(AttemptError::Ambiguous);
                    };
                    predicted
                };
                for range in chunk_ranges(rows, self.shared.max_batch_rows) {
                    let expected = predicted[range.clone()].iter().filter(|o| **o == InsertOutcome::Inserted).count();
                    let chunk = &rows[range.clone()];
                    let size = insert_bucket(chunk.len(), self.shared.max_batch_rows);
                    tx.exec_drop(insert_sql(size), chunk_params(chunk, &box_ids[range], size, &ts, &expires)).await?;
                    if tx.affected_rows() != expected as u64 {
                        let stale = tx.get_warnings() > 0 && fk_warning(&mut tx).await?;
                        tx.rollback().await?;
                        return Err(if stale { AttemptError::StaleBox } else { AttemptError::Ambiguous });
                    }
                }
                change_usage(&mut tx, &usage::inserted(rows, &predicted), Change::Add).await?;
                tx.commit().await?;
                Ok(predicted)
            }
            Mode::RowByRow => {
                let mut tx = conn.start_transaction(TxOpts::default()).await?;
                let mut out = Vec::with_capacity(rows.len());
                for (row, box_id) in rows.iter().zip(&box_ids) {
                    tx.exec_drop(insert_sql(1), row_params(row, *box_id, &ts, &expires)).await?;
                    if tx.affected_rows() == 1 {
                        out.push(InsertOutcome::Inserted);
                    } else if tx.get_warnings() > 0 && fk_warning(&mut tx).await? {
                        tx.rollback().await?;
                        return Err(AttemptError::StaleBox);
                    } else {
                        out.push(InsertOutcome::Duplicate);
                    }
                }
                change_usage(&mut tx, &usage::inserted(rows, &out), Change::Add).await?;
                tx.commit().await?;
                Ok(out)
            }
        }
    }

    /// The box cache (held only between awaits, never across one).
    fn cache(&self) -> std::sync::MutexGuard<'_, BoxCache> {
        self.boxes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The messageBoxId of every row: from the cache, else (per chunk of missing pairs) one
    /// multi-row `INSERT IGNORE INTO messageBox` and one lookup. The lookup matches in SQL,
    /// so the collation decides which box `INBOX` is, exactly as in the original.
    async fn resolve_boxes(&self, conn: &mut Conn, rows: &[&NewMessage], ts: &Value) -> Result<Vec<u32>, AttemptError> {
        let mut missing: Vec<(&str, &str)> = Vec::new();
        let mut seen = HashSet::new();
        for row in rows {
            let key = (row.recipient.as_str(), row.box_type.as_str());
            if self.cache().get(key.0, key.1).is_none() && seen.insert(key) {
                missing.push(key);
            }
        }
        for chunk in missing.chunks(MAX_LIST / 2) {
            let sql = format!(
                "INSERT IGNORE INTO messageBox (type, identityKey, created_at, updated_at) VALUES {}",
                vec!["(?,?,?,?)"; chunk.len()].join(",")
            );
            let mut params = Vec::with_capacity(chunk.len() * 4);
            for (recipient, box_type) in chunk {
                params.extend([Value::from(*box_type), Value::from(*recipient), ts.clone(), ts.clone()]);
            }
            conn.exec_drop(sql, params).await?;

            let sql = (0..chunk.len())
                .map(|i| format!("SELECT {i}, messageBoxId FROM messageBox WHERE type = ? AND identityKey = ?"))
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let params: Vec<Value> = chunk
                .iter()
                .flat_map(|(recipient, box_type)| [Value::from(*box_type), Value::from(*recipient)])
                .collect();
            let found: Vec<Row> = conn.exec(sql, params).await?;
            for row in found {
                let mut it = values(row);
                let (i, id) = (v_i64(next(&mut it)), v_i64(next(&mut it)));
                if let (Some(i), Some(id)) = (i, id) {
                    if let (Some((recipient, box_type)), Ok(id)) = (chunk.get(i as usize), u32::try_from(id)) {
                        self.cache().insert(recipient, box_type, id);
                    }
                }
            }
        }
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            // Missing right after the insert: deleted concurrently; the retry recreates it.
            ids.push(self.cache().get(&row.recipient, &row.box_type).ok_or(AttemptError::StaleBox)?);
        }
        Ok(ids)
    }
}

/// Whether [`change_usage`] adds or subtracts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Add,
    Subtract,
}

/// Applies `deltas` to `messagebox_sender_usage` ([`usage`]), inside the caller's transaction.
async fn change_usage<Q: Queryable + Send>(
    q: &mut Q,
    deltas: &[usage::Delta<'_>],
    change: Change,
) -> Result<(), mysql_async::Error> {
    for chunk in deltas.chunks(usage::MAX_SENDERS) {
        let (sql, params) = match change {
            Change::Add => usage::add(Dialect::Mysql, chunk),
            Change::Subtract => usage::subtract(Dialect::Mysql, chunk),
        };
        let params: Vec<Value> = params.into_iter().map(param_value).collect();
        q.exec_drop(sql, params).await?;
    }
    Ok(())
}

/// `(sender, body bytes)` of rows read or returned as `sender, OCTET_LENGTH(body)` from `at`.
fn sender_bytes(rows: Vec<Row>, at: usize) -> Vec<(String, u64)> {
    rows.into_iter()
        .filter_map(|r| {
            let mut it = values(r).skip(at);
            let sender = v_string(it.next()?)?;
            Some((sender, v_i64(it.next()?)?.max(0) as u64))
        })
        .collect()
}

/// Deletes what each acknowledgement of `acks` (recipient, ids) names and subtracts it from
/// the senders' usage, in ONE transaction; returns each acknowledgement's deleted rows
/// (senders and bytes), in order. MariaDB with a known `NO_BACKSLASH_ESCAPES` flag: two round
/// trips of text ([`acknowledge_two_trips`]); otherwise the prepared statements of
/// [`acknowledge_once`].
async fn delete_acknowledged(
    mut conn: Conn,
    mariadb: bool,
    acks: &[(&str, &[String])],
) -> Result<Vec<Vec<(String, u64)>>, mysql_async::Error> {
    match (mariadb, no_backslash_escapes(&conn)) {
        (true, Some(nbe)) => acknowledge_two_trips(conn, nbe, acks).await,
        (mariadb, _) => acknowledge_once(&mut conn, mariadb, acks).await,
    }
}

/// [`delete_acknowledged`] with prepared statements: per acknowledgement and chunk of its ids,
/// MariaDB one `DELETE … RETURNING` (the usual way is [`acknowledge_two_trips`]), MySQL (no
/// `RETURNING`) a locking read of the rows first, then the delete; then one usage
/// subtraction for all, and COMMIT.
async fn acknowledge_once(
    conn: &mut Conn,
    mariadb: bool,
    acks: &[(&str, &[String])],
) -> Result<Vec<Vec<(String, u64)>>, mysql_async::Error> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let mut each = Vec::with_capacity(acks.len());
    for (recipient, ids) in acks {
        let mut gone = Vec::new();
        for chunk in ids.chunks(MAX_LIST) {
            let size = bucket(chunk.len(), MAX_LIST);
            let params: Vec<Value> =
                std::iter::once(Value::from(*recipient)).chain(padded(chunk, size).map(Value::from)).collect();
            if mariadb {
                let sql = format!("{} RETURNING sender, OCTET_LENGTH(body)", sql::delete_messages(size));
                gone.extend(sender_bytes(tx.exec(sql, params).await?, 0));
            } else {
                let read = format!(
                    "SELECT sender, OCTET_LENGTH(body) FROM messages WHERE recipient = ? AND messageId IN ({}) FOR UPDATE",
                    sql::placeholders(size)
                );
                gone.extend(sender_bytes(tx.exec(read, params.clone()).await?, 0));
                tx.exec_drop(sql::delete_messages(size), params).await?;
            }
        }
        each.push(gone);
    }
    change_usage(&mut tx, &usage::deleted_all(&each), Change::Subtract).await?;
    tx.commit().await?;
    Ok(each)
}

/// The first round trip of [`acknowledge_two_trips`]: `START TRANSACTION`, then per
/// acknowledgement one `DELETE … RETURNING sender, OCTET_LENGTH(body)` per chunk of its ids,
/// values escaped for `no_backslash_escapes`; and how many DELETEs each acknowledgement has.
fn ack_delete_sql(acks: &[(&str, &[String])], no_backslash_escapes: bool) -> (String, Vec<usize>) {
    let mut sql = String::from("START TRANSACTION");
    let mut deletes = Vec::with_capacity(acks.len());
    for (recipient, ids) in acks {
        deletes.push(ids.len().div_ceil(MAX_LIST));
        for chunk in ids.chunks(MAX_LIST) {
            sql.push(';');
            let params = std::iter::once(*recipient).chain(chunk.iter().map(String::as_str)).map(Value::from);
            push_inlined(&mut sql, &sql::delete_messages(chunk.len()), params, no_backslash_escapes);
            sql.push_str(" RETURNING sender, OCTET_LENGTH(body)");
        }
    }
    (sql, deletes)
}

/// The result sets of [`ack_delete_sql`]'s DELETEs (after START TRANSACTION's), in order,
/// joined per acknowledgement (`deletes` from [`ack_delete_sql`]); `None` unless there is
/// exactly one set per DELETE.
fn split_per_ack<T>(sets: Vec<Vec<T>>, deletes: &[usize]) -> Option<Vec<Vec<T>>> {
    if sets.len() != deletes.iter().sum::<usize>() {
        return None;
    }
    let mut sets = sets.into_iter();
    Some(deletes.iter().map(|n| sets.by_ref().take(*n).flatten().collect()).collect())
}

/// [`acknowledge_once`] on MariaDB in two round trips of text multi-statement queries:
/// `START TRANSACTION; DELETE … RETURNING …; …` ([`ack_delete_sql`], each result set read
/// into its own acknowledgement), then the usage subtraction for all and `COMMIT`. Values are
/// escaped for the session's `no_backslash_escapes`. On an error the transaction is rolled
/// back; a connection that may still hold it is closed ([`OpenTx`]).
async fn acknowledge_two_trips(
    conn: Conn,
    no_backslash_escapes: bool,
    acks: &[(&str, &[String])],
) -> Result<Vec<Vec<(String, u64)>>, mysql_async::Error> {
    let mut open = OpenTx(Some(conn));
    let Some(c) = open.0.as_mut() else { unreachable!("just set") };
    let outcome: Result<Vec<Vec<(String, u64)>>, mysql_async::Error> = async {
        let (sql, deletes) = ack_delete_sql(acks, no_backslash_escapes);
        let mut sets = Vec::with_capacity(deletes.len() + 1);
        let mut result = c.query_iter(sql).await?;
        while !result.is_empty() {
            sets.push(sender_bytes(result.collect::<Row>().await?, 0));
        }
        drop(result);
        // The first set is START TRANSACTION's.
        let each = split_per_ack(sets.into_iter().skip(1).collect(), &deletes).ok_or_else(|| {
            mysql_async::Error::Other("an acknowledgement batch returned an unexpected number of results".into())
        })?;
        let mut sql = String::new();
        for chunk in usage::deleted_all(&each).chunks(usage::MAX_SENDERS) {
            let (template, params) = usage::subtract(Dialect::Mysql, chunk);
            push_inlined(&mut sql, &template, params.into_iter().map(param_value), no_backslash_escapes);
            sql.push(';');
        }
        sql.push_str("COMMIT");
        let mut result = c.query_iter(sql).await?;
        while !result.is_empty() {
            result.collect::<Row>().await?;
        }
        Ok(each)
    }
    .await;
    if let Err(mysql_async::Error::Server(_)) = &outcome {
        c.query_drop("ROLLBACK").await?;
    }
    if !matches!(outcome, Err(ref e) if !matches!(e, mysql_async::Error::Server(_))) {
        open.release();
    }
    outcome
}

/// Deletes up to `limit` expired messages and subtracts them from their senders' usage, in
/// one transaction; returns the deleted rows' senders and bytes. MariaDB: `DELETE … LIMIT …
/// RETURNING`; MySQL: a locking read of the rows along the expiration index, then a delete
/// of those ids.
async fn sweep_once(
    conn: &mut Conn,
    mariadb: bool,
    now: Timestamp,
    limit: u64,
) -> Result<Vec<(String, u64)>, mysql_async::Error> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let expired = "FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?";
    let gone = if mariadb {
        let sql = format!("DELETE {expired} RETURNING sender, OCTET_LENGTH(body)");
        sender_bytes(tx.exec(sql, (date_value(now), limit)).await?, 0)
    } else {
        let sql = format!("SELECT messageId, sender, OCTET_LENGTH(body) {expired} FOR UPDATE");
        let rows: Vec<Row> = tx.exec(sql, (date_value(now), limit)).await?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut gone = Vec::with_capacity(rows.len());
        for row in rows {
            let mut it = values(row);
            let (id, sender, bytes) = (v_string(next(&mut it)), v_string(next(&mut it)), v_i64(next(&mut it)));
            if let (Some(id), Some(sender), Some(bytes)) = (id, sender, bytes) {
                ids.push(id);
                gone.push((sender, bytes.max(0) as u64));
            }
        }
        for chunk in ids.chunks(MAX_LIST) {
            let size = bucket(chunk.len(), MAX_LIST);
            let params: Vec<Value> = padded(chunk, size).map(Value::from).collect();
            let sql = format!("DELETE FROM messages WHERE messageId IN ({})", sql::placeholders(size));
            tx.exec_drop(sql, params).await?;
        }
        gone
    };
    change_usage(&mut tx, &usage::deleted(&gone), Change::Subtract).await?;
    tx.commit().await?;
    Ok(gone)
}

/// Most expired rows one sweep transaction deletes (a sweep without a batch size runs several).
const SWEEP_CHUNK: u64 = 10_000;

/// Whether a failed delete may run again: a deadlock or lock wait timeout, at most
/// [`TRANSIENT_RETRIES`] times (`attempt` counts them).
fn retry_delete(what: &str, e: &mysql_async::Error, attempt: &mut u32) -> bool {
    if !is_transient(e) || *attempt >= TRANSIENT_RETRIES {
        return false;
    }
    *attempt += 1;
    tracing::warn!(error = %e, attempt = *attempt, "{what} hit a lock conflict; retrying");
    true
}

/// Most body bytes (and ids, senders, recipients) of a batch written in one round trip:
/// half the prepared path's chunk bound, so its escaped text (at most twice the bytes) is
/// no larger a packet than a prepared chunk.
const MAX_TEXT_BATCH_BYTES: usize = MAX_CHUNK_BYTES / 2;

/// Whether `rows` go in one text batch: one chunk, small enough a packet.
fn fits_text_batch(rows: &[&NewMessage], max_rows: usize) -> bool {
    let bytes: usize =
        rows.iter().map(|r| r.body.len() + r.message_id.len() + r.sender.len() + r.recipient.len()).sum();
    rows.len() <= max_rows && bytes <= MAX_TEXT_BATCH_BYTES
}

/// Whether the connection's session has `NO_BACKSLASH_ESCAPES` (how a literal must be
/// escaped), from the server status of its last OK packet; `None` when it has none yet.
/// The server owns the flag; this process never changes a session's `sql_mode`.
fn no_backslash_escapes(conn: &Conn) -> Option<bool> {
    let status = conn.last_ok_packet()?.status_flags();
    Some(status.contains(mysql_async::consts::StatusFlags::SERVER_STATUS_NO_BACKSLASH_ESCAPES))
}

/// Appends `sql` with each `?` replaced by the next of `params` as an SQL literal (escaped
/// by the driver's own `Value::as_sql`). `sql` must have no `?` but its placeholders.
fn push_inlined(out: &mut String, sql: &str, params: impl IntoIterator<Item = Value>, no_backslash_escapes: bool) {
    let mut params = params.into_iter();
    for (i, part) in sql.split('?').enumerate() {
        if i > 0 {
            out.push_str(&params.next().unwrap_or(Value::NULL).as_sql(no_backslash_escapes));
        }
        out.push_str(part);
    }
}

/// The text of a whole batch written in TWO round trips of text multi-statement queries
/// (the connection has `CLIENT_MULTI_STATEMENTS`, which mysql_async always asks for):
///
/// 1. `START TRANSACTION; INSERT IGNORE INTO messages … VALUES (…),…` — the INSERT's
///    affected-row count (rows really inserted: duplicates and foreign-key failures are
///    ignored rows) must be the row count;
/// 2. if it is, `<usage upsert>; COMMIT`; otherwise the caller rolls back and the batch
///    takes the exact path.
///
/// Against the prepared path's four round trips (BEGIN, INSERT, upsert, COMMIT). ONE round
/// trip would need a guard between the INSERT and COMMIT that stops the batch in the
/// server: a scalar subquery of two rows (`SELECT (SELECT 1 … UNION ALL SELECT 2 …)`,
/// error 1242) measured ~60-90 µs more MariaDB CPU per batch than `SELECT 0` (the UNION's
/// temporary table), more than the round trips it saves; `DO` cannot guard (MariaDB turns
/// its errors into warnings), and a compound `IF … SIGNAL` inside a multi-statement query
/// was not reported reliably by MariaDB 10.11 (the results after it went missing).
///
/// Values are escaped by the driver for the session's `no_backslash_escapes`
/// ([`no_backslash_escapes`]). `rows` and `box_ids` pair up; `created` and `expires` are UTC.
pub fn text_batch_sql(
    rows: &[&NewMessage],
    box_ids: &[u32],
    created: Timestamp,
    expires: Option<Timestamp>,
    no_backslash_escapes: bool,
) -> (String, String) {
    let ts = date_value(created).as_sql(no_backslash_escapes);
    let expires = expires.map_or(Value::NULL, date_value).as_sql(no_backslash_escapes);
    let body_bytes: usize = rows.iter().map(|r| r.body.len() + r.message_id.len() + 200).sum();
    let mut insert = String::with_capacity(body_bytes + body_bytes / 8 + 256);
    insert.push_str("START TRANSACTION;");
    insert.push_str(INSERT_MESSAGES_PREFIX);
    for (i, (row, box_id)) in rows.iter().zip(box_ids).enumerate() {
        if i > 0 {
            insert.push(',');
        }
        insert.push('(');
        insert.push_str(&Value::from(row.message_id.as_str()).as_sql(no_backslash_escapes));
        insert.push(',');
        insert.push_str(&box_id.to_string());
        for text in [row.sender.as_str(), row.recipient.as_str(), &row.body] {
            insert.push(',');
            insert.push_str(&Value::from(text).as_sql(no_backslash_escapes));
        }
        for v in [&ts, &ts, &expires] {
            insert.push(',');
            insert.push_str(v);
        }
        insert.push(')');
    }
    let mut usage_sql = String::with_capacity(256);
    let outcomes = vec![InsertOutcome::Inserted; rows.len()];
    for chunk in usage::inserted(rows, &outcomes).chunks(usage::MAX_SENDERS) {
        let (template, params) = usage::add(Dialect::Mysql, chunk);
        push_inlined(&mut usage_sql, &template, params.into_iter().map(param_value), no_backslash_escapes);
        usage_sql.push(';');
    }
    usage_sql.push_str("COMMIT");
    (insert, usage_sql)
}

/// The prepared path's statement for one chunk (the multi-row INSERT padded to its bucket
/// size, and its parameters), as the exact path builds it; for the `batch` bench.
pub fn prepared_batch_statement(
    rows: &[&NewMessage],
    box_ids: &[u32],
    created: Timestamp,
    expires: Option<Timestamp>,
    max_rows: usize,
) -> (String, Vec<Value>) {
    let ts = date_value(created);
    let expires = expires.map_or(Value::NULL, date_value);
    let size = insert_bucket(rows.len(), max_rows);
    (insert_sql(size), chunk_params(rows, box_ids, size, &ts, &expires))
}

/// Runs [`text_batch_sql`]'s two queries on `conn` for a batch of `n` rows, reading every
/// result. When the INSERT stored fewer rows the transaction is rolled back
/// ([`AttemptError::Missed`]); on an error too. A connection that may hold an open
/// transaction (dropped mid-way, or the rollback failed) is closed instead of going back
/// to the pool ([`OpenTx`]).
async fn run_text_batch(conn: Conn, insert: &str, usage_sql: &str, n: usize) -> Result<(), AttemptError> {
    let mut open = OpenTx(Some(conn));
    let Some(c) = open.0.as_mut() else { unreachable!("just set") };
    let outcome: Result<bool, mysql_async::Error> = async {
        let mut result = c.query_iter(insert).await?;
        // The first result is START TRANSACTION's; the INSERT's comes next.
        result.collect::<Row>().await?;
        let inserted = result.affected_rows();
        while !result.is_empty() {
            result.collect::<Row>().await?;
        }
        drop(result);
        if inserted != n as u64 {
            return Ok(false);
        }
        let mut result = c.query_iter(usage_sql).await?;
        while !result.is_empty() {
            result.collect::<Row>().await?;
        }
        Ok(true)
    }
    .await;
    match outcome {
        Ok(true) => {
            open.release();
            Ok(())
        }
        Ok(false) => {
            c.query_drop("ROLLBACK").await?;
            open.release();
            Err(AttemptError::Missed)
        }
        Err(e) => {
            if matches!(e, mysql_async::Error::Server(_)) {
                c.query_drop("ROLLBACK").await?;
                open.release();
            }
            Err(e.into())
        }
    }
}

/// A connection whose session may be inside a transaction that mysql_async does not know
/// of (begun by text): dropped unreleased, it is disconnected (the server rolls back), so it
/// never goes back to the pool with that transaction open.
struct OpenTx(Option<Conn>);

impl OpenTx {
    /// The session is clean again: the connection may go back to the pool.
    fn release(&mut self) {
        drop(self.0.take());
    }
}

impl Drop for OpenTx {
    fn drop(&mut self) {
        if let (Some(conn), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move {
                if let Err(e) = conn.disconnect().await {
                    tracing::debug!(error = %e, "closing a connection with an unfinished transaction failed");
                }
            });
        }
    }
}

fn param_value(p: usage::Param<'_>) -> Value {
    match p {
        usage::Param::Text(s) => Value::from(s),
        usage::Param::Int(i) => Value::from(i),
    }
}

fn insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(INSERT_MESSAGES_PREFIX.len() + rows * (MESSAGE_ROW.len() + 1));
    sql.push_str(INSERT_MESSAGES_PREFIX);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(MESSAGE_ROW);
    }
    sql
}

fn row_params(row: &NewMessage, box_id: u32, ts: &Value, expires: &Value) -> Vec<Value> {
    vec![
        Value::from(row.message_id.as_str()),
        Value::from(box_id),
        Value::from(row.sender.as_str()),
        Value::from(row.recipient.as_str()),
        Value::from(&*row.body),
        ts.clone(),
        ts.clone(),
        expires.clone(),
    ]
}

/// Parameters of one chunk padded to `size` rows. A padding row repeats the last real
/// row's messageId, so the unique key always ignores it (and if it were not ignored, the
/// affected-row check would catch it and roll back).
fn chunk_params(chunk: &[&NewMessage], box_ids: &[u32], size: usize, ts: &Value, expires: &Value) -> Vec<Value> {
    let mut params = Vec::with_capacity(size * 8);
    for (row, box_id) in chunk.iter().zip(box_ids) {
        params.extend(row_params(row, *box_id, ts, expires));
    }
    if let (Some(last), Some(box_id)) = (chunk.last(), box_ids.last()) {
        for _ in chunk.len()..size {
            params.extend([
                Value::from(last.message_id.as_str()),
                Value::from(*box_id),
                Value::from(""),
                Value::from(""),
                Value::from(""),
                ts.clone(),
                ts.clone(),
                Value::NULL,
            ]);
        }
    }
    params
}

/// Splits rows into INSERT chunks of at most `max_rows` rows and about `MAX_CHUNK_BYTES`.
fn chunk_ranges(rows: &[&NewMessage], max_rows: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let size = row.body.len() + row.message_id.len() + row.sender.len() + row.recipient.len();
        if i > start && (i - start >= max_rows || bytes + size > MAX_CHUNK_BYTES) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < rows.len() {
        out.push(start..rows.len());
    }
    out
}

/// The stored ids among the batch's ids (one `IN` list per `MAX_LIST` ids).
async fn precheck<Q: Queryable + Send>(q: &mut Q, rows: &[&NewMessage]) -> Result<Vec<String>, mysql_async::Error> {
    let ids: Vec<&str> = rows.iter().map(|r| r.message_id.as_str()).collect();
    let mut found = Vec::new();
    for chunk in ids.chunks(MAX_LIST) {
        let size = bucket(chunk.len(), MAX_LIST);
        let sql = format!("SELECT messageId FROM messages WHERE messageId IN ({})", sql::placeholders(size));
        let params: Vec<Value> = padded(chunk, size).map(Value::from).collect();
        let rows: Vec<Row> = q.exec(sql, params).await?;
        found.extend(rows.into_iter().filter_map(|r| v_string(values(r).next()?)));
    }
    Ok(found)
}

/// Whether no two ids of the batch are equal under [`id_key`].
fn distinct_ids(rows: &[&NewMessage]) -> bool {
    let mut seen = HashSet::with_capacity(rows.len());
    rows.iter().all(|r| seen.insert(id_key(&r.message_id)))
}

/// Each row's outcome given the ids already stored: a row is a duplicate when its id is
/// stored or an earlier row of the batch has it. `None` when a stored id matches none of
/// the batch's ids under our comparison (the collation differs; go row by row).
fn predict(rows: &[&NewMessage], existing: &[String]) -> Option<Vec<InsertOutcome>> {
    let keys: Vec<String> = rows.iter().map(|r| id_key(&r.message_id)).collect();
    let candidates: HashSet<&str> = keys.iter().map(String::as_str).collect();
    let mut taken: HashSet<String> = HashSet::new();
    for id in existing {
        let key = id_key(id);
        if !candidates.contains(key.as_str()) {
            return None;
        }
        taken.insert(key);
    }
    Some(
        keys.into_iter()
            .map(|k| if taken.insert(k) { InsertOutcome::Inserted } else { InsertOutcome::Duplicate })
            .collect(),
    )
}

/// One statement for all recipients: per recipient the sender-specific rule if any, else
/// the newest box-wide rule, else NULL. The literal index says which recipient a row is for.
fn fee_lookup_sql(n: usize) -> String {
    (0..n).map(|i| format!("SELECT {i}, ({})", sql::FEE_RULE)).collect::<Vec<_>>().join(" UNION ALL ")
}

async fn lookup_fees(
    conn: &mut Conn,
    sender: &str,
    message_box: &str,
    recipients: &[String],
) -> Result<Vec<Option<i64>>, mysql_async::Error> {
    let mut fees = vec![None; recipients.len()];
    for (c, chunk) in recipients.chunks(MAX_LIST / 4).enumerate() {
        let size = bucket(chunk.len(), MAX_LIST / 4);
        let params: Vec<Value> =
            padded(chunk, size).flat_map(|r| [Value::from(r), Value::from(message_box), Value::from(sender)]).collect();
        let rows: Vec<Row> = conn.exec(fee_lookup_sql(size), params).await?;
        for row in rows {
            let mut it = values(row);
            let (i, fee) = (v_i64(next(&mut it)), v_i64(next(&mut it)));
            if let Some(i) = i.map(|i| i as usize).filter(|i| *i < chunk.len()) {
                fees[c * (MAX_LIST / 4) + i] = fee;
            }
        }
    }
    Ok(fees)
}

/// Inserts the box-wide default unless a box-wide row exists; `true` if it inserted.
async fn insert_default_fee(
    conn: &mut Conn,
    recipient: &str,
    message_box: &str,
    fee: i64,
) -> Result<bool, mysql_async::Error> {
    let ts = date_value(now());
    let mut attempt = 0;
    loop {
        let result = conn
            .exec_drop(
                sql::INSERT_DEFAULT_FEE_MYSQL,
                vec![
                    Value::from(recipient),
                    Value::from(message_box),
                    Value::from(fee),
                    ts.clone(),
                    ts.clone(),
                    Value::from(recipient),
                    Value::from(message_box),
                ],
            )
            .await;
        match result {
            Ok(()) => return Ok(conn.affected_rows() > 0),
            // First-time callers deadlock on the gap lock or the AUTO-INC lock; the victim's
            // retry usually finds the row. Many of them at once (a burst of new senders) can
            // lose more than once, so this retries longer than a batch does, after a short
            // randomised pause that breaks the lockstep.
            Err(e) if is_transient(&e) && attempt < DEFAULT_FEE_RETRIES => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "default permission insert hit a lock conflict; retrying");
                let pause = std::time::Duration::from_micros(rand::random_range(200..2_000u64) * u64::from(attempt));
                tokio::time::sleep(pause).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One sender's fee rules for one box, on one connection.
struct Fees<'a> {
    conn: &'a mut Conn,
    sender: &'a str,
    message_box: &'a str,
}

impl FeeRules for Fees<'_> {
    async fn lookup(&mut self, recipient: &str) -> Result<Option<i64>, StoreError> {
        let one = [recipient.to_string()];
        Ok(lookup_fees(self.conn, self.sender, self.message_box, &one).await?[0])
    }

    async fn insert_default(&mut self, recipient: &str, fee: i64) -> Result<bool, StoreError> {
        Ok(insert_default_fee(self.conn, recipient, self.message_box, fee).await?)
    }
}

fn permission(row: Row) -> Result<Permission, StoreError> {
    let mut it = values(row);
    Ok(Permission {
        sender: v_string(next(&mut it)),
        message_box: required(v_string(next(&mut it)), "message_permissions.message_box")?,
        recipient_fee: required(v_i64(next(&mut it)), "message_permissions.recipient_fee")?,
        created_at: v_ts(next(&mut it)),
        updated_at: v_ts(next(&mut it)),
    })
}

fn server_fee(row: Row) -> Result<ServerFee, StoreError> {
    let mut it = values(row);
    Ok(ServerFee {
        message_box: required(v_string(next(&mut it)), "server_fees.message_box")?,
        delivery_fee: required(v_i64(next(&mut it)), "server_fees.delivery_fee")?,
        created_at: v_ts(next(&mut it)),
        updated_at: v_ts(next(&mut it)),
    })
}

fn device(row: Row) -> Result<Device, StoreError> {
    let mut it = values(row);
    Ok(Device {
        id: required(v_i64(next(&mut it)), "device_registrations.id")? as u64,
        device_id: v_string(next(&mut it)),
        platform: v_string(next(&mut it)),
        fcm_token: required(v_string(next(&mut it)), "device_registrations.fcm_token")?,
        active: v_i64(next(&mut it)).is_some_and(|a| a != 0),
        created_at: v_ts(next(&mut it)),
        updated_at: v_ts(next(&mut it)),
        last_used: v_ts(next(&mut it)),
    })
}

async fn devices(db: Db, identity_key: String, only_active: bool) -> Result<Vec<Device>, StoreError> {
    let mut conn = db.conn().await?;
    let rows: Vec<Row> = conn.exec(sql::devices(only_active), (identity_key, MAX_DEVICES)).await?;
    rows.into_iter().map(device).collect()
}

/// The fee reads and writes themselves; [`Backend`]'s go through the fee cache.
impl MysqlStore {
    fn read_delivery_fee(&self, message_box: &str) -> StoreFuture<'_, Option<i64>> {
        let message_box = message_box.to_string();
        self.spawn(|s| async move {
            let mut conn = s.conn().await?;
            let fee: Option<Row> = conn.exec_first(sql::DELIVERY_FEE, (message_box,)).await?;
            Ok(fee.and_then(|r| v_i64(values(r).next()?)))
        })
    }

    fn write_delivery_fee(&self, message_box: &str, fee: i32) -> StoreFuture<'_, Option<i64>> {
        let message_box = message_box.to_string();
        self.spawn(move |s| async move {
            let mut conn = s.conn().await?;
            let ts = date_value(now());
            let mut attempt = 0;
            loop {
                match upsert_server_fee(&mut conn, &message_box, fee, &ts).await {
                    Ok(previous) => return Ok(previous),
                    // Only racing inserts of a new box deadlock (on the gap lock); once one has
                    // committed, the others' retries lock its row and queue. A randomised
                    // pause breaks the lockstep of those that lost together.
                    Err(e) if is_transient(&e) && attempt < SERVER_FEE_RETRIES => {
                        attempt += 1;
                        tracing::debug!(error = %e, attempt, "delivery fee upsert hit a lock conflict; retrying");
                        let pause =
                            std::time::Duration::from_micros(rand::random_range(200..2_000u64) * u64::from(attempt));
                        tokio::time::sleep(pause).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        })
    }

    fn read_recipient_fees(
        &self,
        sender: &str,
        message_box: &str,
        recipients: &[String],
        default_fee: i64,
    ) -> StoreFuture<'_, Vec<i64>> {
        let (sender, message_box, recipients) = (sender.to_string(), message_box.to_string(), recipients.to_vec());
        self.spawn(move |s| async move {
            if recipients.is_empty() {
                return Ok(Vec::new());
            }
            let mut conn = s.conn().await?;
            let found = lookup_fees(&mut conn, &sender, &message_box, &recipients).await?;
            let mut rules = Fees { conn: &mut conn, sender: &sender, message_box: &message_box };
            fees::with_defaults(&mut rules, &recipients, found, default_fee).await
        })
    }

    fn write_permission(
        &self,
        recipient: &str,
        sender: Option<&str>,
        message_box: &str,
        fee: i64,
    ) -> StoreFuture<'_, ()> {
        let (recipient, sender, message_box) =
            (recipient.to_string(), sender.map(str::to_string), message_box.to_string());
        self.spawn(move |s| async move {
            let mut conn = s.conn().await?;
            let ts = date_value(now());
            if let Some(sender) = sender {
                conn.exec_drop(
                    "INSERT INTO message_permissions \
                     (recipient, sender, message_box, recipient_fee, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
                     ON DUPLICATE KEY UPDATE recipient_fee = ?, updated_at = ?",
                    vec![
                        Value::from(recipient),
                        Value::from(sender),
                        Value::from(message_box),
                        Value::from(fee),
                        ts.clone(),
                        ts.clone(),
                        Value::from(fee),
                        ts,
                    ],
                )
                .await?;
                return Ok(());
            }
            // Box-wide: NULL senders are distinct to the unique key, so upsert by hand.
            let mut attempt = 0;
            loop {
                match set_box_wide(&mut conn, &recipient, &message_box, fee, &ts).await {
                    Ok(()) => return Ok(()),
                    Err(e) if is_transient(&e) && attempt < TRANSIENT_RETRIES => {
                        attempt += 1;
                        tracing::warn!(error = %e, "box-wide permission upsert hit a lock conflict; retrying");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        })
    }
}

impl Backend for MysqlStore {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn migrate(&self) -> StoreFuture<'_, MigrationReport> {
        // Not under the per-operation deadline: building an index on a large table takes
        // as long as it takes. Connecting is bounded.
        let s = self.shared.clone();
        let task = self.runtime.spawn(async move {
            // Its own connection: the migration lock must leave with it.
            let mut conn = bounded(s.timeouts.connect_timeout, async { Ok(Conn::new(s.opts.clone()).await?) }).await?;
            let report = migrate::run_mysql(&mut conn).await;
            if let Err(e) = conn.disconnect().await {
                tracing::debug!(error = %e, "closing the migration connection failed");
            }
            report
        });
        Box::pin(async move {
            task.await.map_err(|e| StoreError::Unavailable(format!("MySQL migration task did not finish: {e}")))?
        })
    }

    fn delivery_fee(&self, message_box: &str) -> StoreFuture<'_, Option<i64>> {
        self.fees.delivery_fee(message_box, || self.read_delivery_fee(message_box))
    }

    fn server_fees(&self) -> StoreFuture<'_, Vec<ServerFee>> {
        self.spawn(|s| async move {
            let mut conn = s.conn().await?;
            let rows: Vec<Row> = conn.exec(sql::SERVER_FEES, ()).await?;
            rows.into_iter().map(server_fee).collect()
        })
    }

    fn set_delivery_fee(&self, message_box: &str, fee: i32) -> StoreFuture<'_, Option<i64>> {
        self.fees.delivery_fee_write(self.write_delivery_fee(message_box, fee))
    }

    fn recipient_fees(
        &self,
        sender: &str,
        message_box: &str,
        recipients: &[String],
        default_fee: i64,
    ) -> StoreFuture<'_, Vec<i64>> {
        self.fees.recipient_fees(sender, message_box, recipients, |missed| {
            self.read_recipient_fees(sender, message_box, &missed, default_fee)
        })
    }

    fn insert_messages(&self, messages: Vec<NewMessage>) -> StoreFuture<'_, Vec<InsertOutcome>> {
        // Queued behind batches that may each wait for their deadline: the caller waits at
        // most one deadline and then hears `Unavailable` (the rows may still be committed
        // later; a retry of the same send is then an idempotent duplicate).
        Box::pin(async move {
            let result = bounded(self.shared.deadline(), self.writer.insert(messages)).await;
            self.shared.health.observe("mysql", &result);
            result
        })
    }

    fn list_page(
        &self,
        recipient: &str,
        box_type: &str,
        limit: u32,
        offset: u64,
        bound: Option<ByteBound>,
    ) -> StoreFuture<'_, Vec<StoredMessage>> {
        let (recipient, box_type) = (recipient.to_string(), box_type.to_string());
        self.spawn(move |s| async move {
            let mut conn = s.conn().await?;
            let (mut page, mut tally) = (Vec::new(), PageTally::new(bound));
            // A result is read to its end (what is not kept is dropped), so with a byte bound
            // each query asks for at most `read_ahead` rows: the rows read past the cut stay
            // bounded however large the page's limit. Rows are kept as they arrive.
            let step = bound.map_or(limit, |b| b.read_ahead.max(1));
            let now = date_value(now());
            loop {
                let want = step.min(limit - page.len() as u32);
                if want == 0 {
                    return Ok(page);
                }
                let mut result = conn
                    .exec_iter(
                        sql::LIST_MESSAGES,
                        vec![
                            Value::from(recipient.as_str()),
                            Value::from(box_type.as_str()),
                            Value::from(recipient.as_str()),
                            now.clone(),
                            Value::from(want),
                            Value::from(offset + page.len() as u64),
                        ],
                    )
                    .await?;
                let (mut got, mut more) = (0u32, true);
                while let Some(row) = result.next().await? {
                    got += 1;
                    let mut it = values(row);
                    let m = StoredMessage {
                        message_id: required(v_string(next(&mut it)), "messages.messageId")?,
                        body: required(v_string(next(&mut it)), "messages.body")?,
                        sender: required(v_string(next(&mut it)), "messages.sender")?,
                        created_at: v_ts(next(&mut it)).unwrap_or(0),
                        updated_at: v_ts(next(&mut it)).unwrap_or(0),
                    };
                    more = tally.more_after(&m);
                    page.push(m);
                    if !more {
                        break;
                    }
                }
                result.drop_result().await?;
                if !more || got < want {
                    return Ok(page);
                }
            }
        })
    }

    fn delete_expired(&self, now: Timestamp, batch: Option<u64>) -> StoreFuture<'_, u64> {
        let quotas = self.quotas.clone();
        self.spawn(move |s| async move {
            let mut conn = s.conn().await?;
            let mut deleted = 0;
            loop {
                let limit = batch.map_or(SWEEP_CHUNK, |n| n.saturating_sub(deleted).min(SWEEP_CHUNK));
                if limit == 0 {
                    return Ok(deleted);
                }
                let mut attempt = 0;
                let gone = loop {
                    match sweep_once(&mut conn, s.mariadb(), now, limit).await {
                        Ok(gone) => break gone,
                        Err(e) if retry_delete("the retention sweep", &e, &mut attempt) => {}
                        Err(e) => return Err(e.into()),
                    }
                };
                quotas.deleted(None, usage::deleted(&gone).iter().map(|d| d.sender));
                deleted += gone.len() as u64;
                if (gone.len() as u64) < limit {
                    return Ok(deleted);
                }
            }
        })
    }

    fn message_owners(&self, message_ids: &[String]) -> StoreFuture<'_, Vec<MessageOwner>> {
        let ids = message_ids.to_vec();
        self.spawn(move |s| async move {
            let mut found = Vec::new();
            if ids.is_empty() {
                return Ok(found);
            }
            let mut conn = s.conn().await?;
            for chunk in ids.chunks(MAX_LIST) {
                let size = bucket(chunk.len(), MAX_LIST);
                let params: Vec<Value> = padded(chunk, size).map(Value::from).collect();
                let rows: Vec<Row> = conn.exec(sql::message_owners(size), params).await?;
                for row in rows {
                    let mut it = values(row);
                    found.push(MessageOwner {
                        message_id: required(v_string(next(&mut it)), "messages.messageId")?,
                        sender: required(v_string(next(&mut it)), "messages.sender")?,
                        recipient: required(v_string(next(&mut it)), "messages.recipient")?,
                    });
                }
            }
            Ok(found)
        })
    }

    fn quota_usage(
        &self,
        scope: super::quota::Scope,
        identity: &str,
        now: Timestamp,
    ) -> StoreFuture<'_, super::quota::Usage> {
        let identity = identity.to_string();
        self.spawn(move |s| async move {
            let mut conn = s.conn().await?;
            let row: Option<Row> = match scope {
                super::quota::Scope::Sender => conn.exec_first(usage::READ, (identity,)).await?,
                super::quota::Scope::Inbox => conn.exec_first(sql::INBOX_USAGE, (identity, date_value(now))).await?,
            };
            // No usage row: the sender has stored nothing.
            let Some(row) = row else { return Ok(super::quota::Usage::default()) };
            let mut it = values(row);
            let messages = required(v_i64(next(&mut it)), "the message count")?;
            let bytes = required(v_i64(next(&mut it)), "the byte count")?;
            Ok(super::quota::Usage { messages: messages.max(0) as u64, bytes: bytes.max(0) as u64 })
        })
    }

    fn quotas(&self) -> &Arc<super::quota::Ledger> {
        &self.quotas
    }

    fn fee_cache(&self) -> &Arc<FeeCache> {
        &self.fees
    }

    fn claim_payment(&self, txid: &str) -> StoreFuture<'_, bool> {
        let txid = txid.to_string();
        self.spawn(move |s| async move {
            let mut conn = s.conn().await?;
            // The primary key decides between racing claims, on every replica sharing the
            // database; IGNORE turns the loser's duplicate into "0 rows".
            conn.exec_drop(
                "INSERT IGNORE INTO payment_replays (transaction_id, created_at, expires_at) VALUES (?, ?, NULL)",
                (txid, date_value(now())),
            )
            .await?;
            Ok(conn.affected_rows() == 1)
        })
    }

    fn release_payment(&self, txid: &str) -> StoreFuture<'_, ()> {
        let txid = txid.to_string();
        self.spawn(move |s| async move {
            let mut conn = s.conn().await?;
            conn.exec_drop("DELETE FROM payment_replays WHERE transaction_id = ?", (txid,)).await?;
            Ok(())
        })
    }

    fn acknowledge(&self, recipient: &str, message_ids: &[String]) -> StoreFuture<'_, u64> {
        let (recipient, ids) = (recipient.to_string(), message_ids.to_vec());
        // Queued for the writer, which commits consecutive acknowledgements together. As for
        // inserts, the caller waits at most one deadline (the delete may still be committed
        // later; acknowledging again then deletes nothing).
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(0);
            }
            let result = bounded(self.shared.deadline(), async {
                let (reply, answer) = oneshot::channel();
                self.writer.job(WriteJob::Ack(Ack { recipient, ids, reply })).await?;
                answer.await.map_err(|_| self.writer.stopped())?
            })
            .await;
            self.shared.health.observe("mysql", &result);
            result
        })
    }

    fn register_device(&self, reg: DeviceRegistration) -> StoreFuture<'_, u64> {
        self.spawn(move |s| async move {
            let mut conn = s.conn().await?;
            let ts = date_value(now());
            let (device_id, platform) = (opt_text(reg.device_id.as_deref()), opt_text(reg.platform.as_deref()));
            conn.exec_drop(
                "INSERT INTO device_registrations \
                 (identity_key, fcm_token, device_id, platform, created_at, updated_at, active, last_used) \
                 VALUES (?, ?, ?, ?, ?, ?, 1, ?) ON DUPLICATE KEY UPDATE \
                 identity_key = ?, device_id = ?, platform = ?, updated_at = ?, active = 1, last_used = ?",
                vec![
                    Value::from(reg.identity_key.as_str()),
                    Value::from(reg.fcm_token.as_str()),
                    device_id.clone(),
                    platform.clone(),
                    ts.clone(),
                    ts.clone(),
                    ts.clone(),
                    Value::from(reg.identity_key.as_str()),
                    device_id,
                    platform,
                    ts.clone(),
                    ts,
                ],
            )
            .await?;
            Ok(conn.last_insert_id().unwrap_or(0))
        })
    }

    fn list_devices(&self, identity_key: &str) -> StoreFuture<'_, Vec<Device>> {
        let identity_key = identity_key.to_string();
        self.spawn(move |s| devices(s, identity_key, false))
    }

    fn active_devices(&self, identity_key: &str) -> StoreFuture<'_, Vec<Device>> {
        let identity_key = identity_key.to_string();
        self.spawn(move |s| devices(s, identity_key, true))
    }

    fn record_push(&self, fcm_token: &str, success: bool, deactivate: bool) -> StoreFuture<'_, ()> {
        let fcm_token = fcm_token.to_string();
        self.spawn(move |s| async move {
            if !success && !deactivate {
                return Ok(());
            }
            let mut conn = s.conn().await?;
            let ts = date_value(now());
            if success {
                conn.exec_drop(sql::DEVICE_USED, vec![ts.clone(), ts.clone(), Value::from(fcm_token.as_str())]).await?;
            }
            if deactivate {
                conn.exec_drop(sql::DEVICE_DEACTIVATED, vec![ts, Value::from(fcm_token.as_str())]).await?;
            }
            Ok(())
        })
    }

    fn set_permission(
        &self,
        recipient: &str,
        sender: Option<&str>,
        message_box: &str,
        fee: i64,
    ) -> StoreFuture<'_, ()> {
        self.fees.permission_write(recipient, self.write_permission(recipient, sender, message_box, fee))
    }

    fn get_permission(
        &self,
        recipient: &str,
        sender: Option<&str>,
        message_box: &str,
    ) -> StoreFuture<'_, Option<Permission>> {
        let (recipient, sender, message_box) =
            (recipient.to_string(), sender.map(str::to_string), message_box.to_string());
        self.spawn(move |s| async move {
            let mut conn = s.conn().await?;
            let row: Option<Row> = match sender {
                Some(sender) => conn.exec_first(sql::SENDER_PERMISSION, (recipient, message_box, sender)).await?,
                None => conn.exec_first(sql::BOX_WIDE_PERMISSION, (recipient, message_box)).await?,
            };
            row.map(permission).transpose()
        })
    }

    fn list_permissions(
        &self,
        recipient: &str,
        message_box: Option<&str>,
        limit: u32,
        offset: u64,
        created_asc: bool,
    ) -> StoreFuture<'_, (Vec<Permission>, u64)> {
        let (recipient, message_box) = (recipient.to_string(), message_box.map(str::to_string));
        self.spawn(move |s| async move {
            let mut conn = s.conn().await?;
            let filter = if message_box.is_some() { "recipient = ? AND message_box = ?" } else { "recipient = ?" };
            let mut params = vec![Value::from(recipient)];
            params.extend(message_box.map(Value::from));
            let total: Option<Row> = conn.exec_first(sql::count_permissions(filter), params.clone()).await?;
            let total = total.and_then(|r| v_i64(values(r).next()?)).unwrap_or(0).max(0) as u64;
            params.extend([Value::from(limit), Value::from(offset)]);
            let rows: Vec<Row> = conn.exec(sql::list_permissions(filter, created_asc), params).await?;
            let page = rows.into_iter().map(permission).collect::<Result<Vec<_>, _>>()?;
            Ok((page, total))
        })
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        self.writer.flush()
    }

    fn stats(&self) -> WriterStats {
        let (on_core, handed_off) = self.shared.placement.snapshot();
        WriterStats { on_core, handed_off, ..self.writer.stats() }
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        // Bounded by the store's deadline like every operation: a probe that gave up must
        // not leave this task waiting on a database host that drops packets.
        self.spawn(|s| async move {
            let mut conn = s.conn().await?;
            conn.query_drop("SELECT 1").await?;
            Ok(())
        })
    }
}

/// Updates the newest box-wide rule or inserts one, in one transaction; the locking read
/// makes a concurrent upsert wait (or deadlock and retry) instead of adding a duplicate.
async fn set_box_wide(
    conn: &mut Conn,
    recipient: &str,
    message_box: &str,
    fee: i64,
    ts: &Value,
) -> Result<(), mysql_async::Error> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let newest: Option<Row> = tx.exec_first(sql::NEWEST_BOX_WIDE_ID_FOR_UPDATE, (recipient, message_box)).await?;
    match newest.and_then(|r| v_i64(values(r).next()?)) {
        Some(id) => {
            tx.exec_drop(sql::UPDATE_PERMISSION_FEE, vec![Value::from(fee), ts.clone(), Value::from(id)]).await?
        }
        None => {
            tx.exec_drop(
                sql::INSERT_BOX_WIDE,
                vec![Value::from(recipient), Value::from(message_box), Value::from(fee), ts.clone(), ts.clone()],
            )
            .await?
        }
    }
    tx.commit().await
}

/// Reads the box's fee with a locking read, then upserts it, in one transaction: the
/// previous fee reported is the one the upsert replaced. Upserts racing to insert the same
/// new box may deadlock on the gap lock; the caller retries.
async fn upsert_server_fee(
    conn: &mut Conn,
    message_box: &str,
    fee: i32,
    ts: &Value,
) -> Result<Option<i64>, mysql_async::Error> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let previous: Option<Row> = tx.exec_first(sql::DELIVERY_FEE_FOR_UPDATE, (message_box,)).await?;
    tx.exec_drop(
        "INSERT INTO server_fees (message_box, delivery_fee, created_at, updated_at) VALUES (?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE delivery_fee = ?, updated_at = ?",
        vec![Value::from(message_box), Value::from(fee), ts.clone(), ts.clone(), Value::from(fee), ts.clone()],
    )
    .await?;
    tx.commit().await?;
    Ok(previous.and_then(|r| v_i64(values(r).next()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::tests::message as msg;

    #[test]
    fn buckets_are_powers_of_two_up_to_the_cap() {
        assert_eq!(bucket(1, 512), 1);
        assert_eq!(bucket(3, 512), 4);
        assert_eq!(bucket(300, 512), 512);
        assert_eq!(bucket(300, 400), 400);
        assert_eq!(bucket(512, 512), 512);
        assert_eq!((insert_bucket(1, 512), insert_bucket(7, 512), insert_bucket(9, 512)), (1, 7, 10));
        assert_eq!((insert_bucket(129, 512), insert_bucket(180, 512), insert_bucket(390, 400)), (160, 192, 400));
        let shapes: HashSet<usize> = (1..=512).map(|n| insert_bucket(n, 512)).collect();
        assert!(shapes.len() <= 64, "{}", shapes.len());
    }

    #[test]
    fn the_pool_is_split_between_the_store_thread_and_the_cores() {
        // (store thread, each core)
        assert_eq!(split_pool(8, 0), (8, 8), "no server: the store thread has it all");
        assert_eq!(split_pool(8, 1), (4, 4));
        assert_eq!(split_pool(8, 2), (4, 2));
        assert_eq!(split_pool(8, 3), (2, 2));
        assert_eq!(split_pool(8, 4), (4, 1));
        assert_eq!(split_pool(4, 2), (2, 1));
        // Fewer than cores + 2: one per core and the writer's two.
        assert_eq!(split_pool(8, 16), (STORE_POOL_MIN, 1));
        assert_eq!(split_pool(0, 2), (STORE_POOL_MIN, 1));
        for (n, cores) in [(1, 1), (8, 2), (10, 4), (64, 7), (8, 32)] {
            let (store, core) = split_pool(n, cores);
            assert_eq!(store + core * cores, n.max(cores + STORE_POOL_MIN), "{n} over {cores}");
        }
    }

    #[test]
    fn prediction_handles_case_and_in_batch_duplicates() {
        let rows = [msg("abc"), msg("ABC"), msg("x"), msg("y ")];
        let refs: Vec<&NewMessage> = rows.iter().collect();
        use InsertOutcome::*;
        assert_eq!(predict(&refs, &[]), Some(vec![Inserted, Duplicate, Inserted, Inserted]));
        assert_eq!(predict(&refs, &["X".into()]), Some(vec![Inserted, Duplicate, Duplicate, Inserted]));
        assert_eq!(predict(&refs, &["y".into()]), Some(vec![Inserted, Duplicate, Inserted, Duplicate]));
        // A stored id we cannot place: the collation differs from our model.
        assert_eq!(predict(&refs, &["é".into()]), None);
    }

    #[test]
    fn chunks_respect_rows_and_bytes() {
        let rows: Vec<NewMessage> = (0..10).map(|i| msg(&i.to_string())).collect();
        let refs: Vec<&NewMessage> = rows.iter().collect();
        assert_eq!(chunk_ranges(&refs, 4), vec![0..4, 4..8, 8..10]);
        let mut big = msg("big");
        big.body = "x".repeat(MAX_CHUNK_BYTES).into();
        let refs = vec![&rows[0], &big, &rows[1]];
        assert_eq!(chunk_ranges(&refs, 512), vec![0..1, 1..2, 2..3]);
    }

    #[test]
    fn padding_repeats_the_last_id() {
        let rows = [msg("a"), msg("b"), msg("c")];
        let refs: Vec<&NewMessage> = rows.iter().collect();
        let params = chunk_params(&refs, &[1, 2, 3], 4, &date_value(0), &Value::NULL);
        assert_eq!(params.len(), 32);
        assert_eq!(params[24], Value::from("c"));
        assert_eq!(params[25], Value::from(3u32));
        assert_eq!(insert_sql(2).matches("(?,?,?,?,?,?,?,?)").count(), 2);
        assert_eq!(padded(&["a", "b", "c"], 4).collect::<Vec<_>>(), ["a", "b", "c", "c"]);
    }

    #[test]
    fn box_cache_is_bounded_and_promotes() {
        let mut c = BoxCache::new(2);
        c.insert("r1", "inbox", 1);
        c.insert("r2", "inbox", 2);
        c.insert("r3", "inbox", 3); // rolls r1, r2 into the previous generation
        assert_eq!(c.get("r1", "inbox"), Some(1)); // promoted
        c.insert("r4", "inbox", 4); // rolls again: r2 is gone
        assert_eq!(c.get("r2", "inbox"), None);
        assert_eq!(c.get("r4", "inbox"), Some(4));
        c.clear();
        assert_eq!(c.get("r4", "inbox"), None);
    }

    /// On a live server (`MESSAGEBOX_TEST_MYSQL_URL`): every pooled connection is UTC and
    /// keeps its prepared statements when it goes back to the pool.
    #[test]
    fn pooled_connections_are_utc_and_keep_statements() {
        let Some(server) = std::env::var("MESSAGEBOX_TEST_MYSQL_URL").ok().filter(|u| !u.is_empty()) else {
            assert!(std::env::var("MESSAGEBOX_REQUIRE_ALL").as_deref() != Ok("1"), "MySQL tests must run");
            eprintln!("SKIPPED pooled_connections_are_utc_and_keep_statements: MESSAGEBOX_TEST_MYSQL_URL unset");
            return;
        };
        let url = format!("{}/information_schema", server.trim_end_matches('/'));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let options = StoreOptions { pool_size: 1, ..Default::default() };
            let store = MysqlStore::open(&url, &options).await.unwrap();
            let (zone, prepares) = store
                .spawn(|s| async move {
                    for _ in 0..3 {
                        let mut conn = s.conn().await?;
                        conn.exec_drop("SELECT ? + 1", (1,)).await?;
                    }
                    let mut conn = s.conn().await?;
                    let zone: Option<String> = conn.query_first("SELECT @@session.time_zone").await?;
                    let prepares: Option<(String, u64)> =
                        conn.query_first("SHOW SESSION STATUS LIKE 'Com_stmt_prepare'").await?;
                    Ok((zone, prepares.map(|p| p.1)))
                })
                .await
                .unwrap();
            assert_eq!(zone.as_deref(), Some("+00:00"));
            assert_eq!(prepares, Some(1), "one prepare for three executions");
        });
    }

    /// A fresh database `<tag>_<pid>` on the tests' MySQL server: (server URL, its name, an
    /// admin connection, the runtime it was made on). `None` (the test skips) without
    /// `MESSAGEBOX_TEST_MYSQL_URL`, unless `MESSAGEBOX_REQUIRE_ALL=1`.
    fn test_database(test: &str, tag: &str) -> Option<(String, String, Conn, tokio::runtime::Runtime)> {
        let Some(server) = std::env::var("MESSAGEBOX_TEST_MYSQL_URL").ok().filter(|u| !u.is_empty()) else {
            assert!(std::env::var("MESSAGEBOX_REQUIRE_ALL").as_deref() != Ok("1"), "MySQL tests must run");
            eprintln!("SKIPPED {test}: MESSAGEBOX_TEST_MYSQL_URL unset");
            return None;
        };
        let server = server.trim_end_matches('/').to_string();
        let name = format!("{tag}_{}", std::process::id());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let admin = rt.block_on(async {
            let mut admin = Conn::from_url(format!("{server}/")).await.unwrap();
            admin.query_drop(format!("DROP DATABASE IF EXISTS `{name}`")).await.unwrap();
            admin.query_drop(format!("CREATE DATABASE `{name}`")).await.unwrap();
            admin
        });
        Some((server, name, admin, rt))
    }

    /// On a live server: the MySQL 8 way of deleting (a locking read, then the delete; MySQL
    /// has no `DELETE … RETURNING`) subtracts exactly what it deleted, as the MariaDB way does.
    /// Run here against whatever server the tests have (MariaDB runs both ways).
    #[test]
    fn deletes_without_returning_keep_sender_usage_exact() {
        let Some((server, name, mut admin, rt)) =
            test_database("deletes_without_returning_keep_sender_usage_exact", "mbunit_usage")
        else {
            return;
        };
        rt.block_on(async {
            let options = StoreOptions { retention_days: Some(0), ..Default::default() };
            let store = MysqlStore::open(&format!("{server}/{name}"), &options).await.unwrap();
            store.migrate().await.unwrap();
            let mut rows: Vec<NewMessage> = (0..5).map(|i| msg(&format!("m-{i}"))).collect();
            rows[4].sender = "s2".into();
            store.insert_messages(rows).await.unwrap();
            let usage = |sender: &'static str| store.quota_usage(super::super::quota::Scope::Sender, sender, 0);
            let one = msg("m-0").body.len() as u64;
            let mut conn = Conn::from_url(format!("{server}/{name}")).await.unwrap();
            let ids = ["m-0".to_string(), "m-4".to_string(), "nope".to_string()];
            let gone = acknowledge_once(&mut conn, false, &[("r", &ids[..])]).await.unwrap();
            assert_eq!(gone.iter().map(Vec::len).collect::<Vec<_>>(), [2]);
            assert_eq!(usage("s").await.unwrap().messages, 3);
            assert_eq!(usage("s2").await.unwrap(), Default::default());
            // Every row has expired (retention 0): a bounded sweep, then the rest.
            assert_eq!(sweep_once(&mut conn, false, now(), 2).await.unwrap().len(), 2);
            assert_eq!(usage("s").await.unwrap(), super::super::quota::Usage { messages: 1, bytes: one });
            assert_eq!(sweep_once(&mut conn, false, now(), 10).await.unwrap().len(), 1);
            assert_eq!(usage("s").await.unwrap(), Default::default());
            let left: Option<i64> = conn.query_first("SELECT COUNT(*) FROM messages").await.unwrap();
            assert_eq!(left, Some(0));
            drop(conn);
            drop(store);
            admin.query_drop(format!("DROP DATABASE `{name}`")).await.unwrap();
        });
    }

    /// On a live server: the text batch stores ids, senders and bodies with quotes,
    /// backslashes, NUL, emoji and an injection attempt byte-exact, with `NO_BACKSLASH_ESCAPES`
    /// off and on (read from the session, as the writer does); a batch that inserts fewer rows
    /// than it has is rolled back, messages and usage untouched.
    #[test]
    fn text_batches_escape_in_both_sql_modes_and_roll_back() {
        let Some((server, name, mut admin, rt)) =
            test_database("text_batches_escape_in_both_sql_modes_and_roll_back", "mbunit_onetrip")
        else {
            return;
        };
        rt.block_on(async {
            let url = format!("{server}/{name}");
            let store = MysqlStore::open(&url, &StoreOptions::default()).await.unwrap();
            store.migrate().await.unwrap();
            store.insert_messages(vec![msg("warm")]).await.unwrap();
            let mut reader = Conn::from_url(url.clone()).await.unwrap();
            let box_id: u32 = reader.query_first("SELECT messageBoxId FROM messageBox").await.unwrap().unwrap();
            let nasty =
                ["it's", "back\\slash\\", "nul\0byte", "\\'; DROP TABLE messages; --", "emoji 😀 \"q\"\n\r\x1a"];
            for nbe in [false, true] {
                let mut conn = Conn::from_url(url.clone()).await.unwrap();
                let mode = if nbe {
                    "CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')"
                } else {
                    "REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')"
                };
                conn.query_drop(format!("SET SESSION sql_mode = {mode}")).await.unwrap();
                assert_eq!(no_backslash_escapes(&conn), Some(nbe), "the session's mode is read");
                let rows: Vec<NewMessage> = nasty
                    .iter()
                    .map(|n| NewMessage {
                        message_id: format!("{n}-{nbe}"),
                        sender: format!("{n}-sender"),
                        body: format!("{{\"b\":\"{n}\"}} {n}").into(),
                        ..msg("")
                    })
                    .collect();
                let refs: Vec<&NewMessage> = rows.iter().collect();
                let (insert, usage_sql) = text_batch_sql(&refs, &vec![box_id; refs.len()], now(), None, nbe);
                assert!(run_text_batch(conn, &insert, &usage_sql, refs.len()).await.is_ok());
                for row in &rows {
                    let got: Option<(String, String, String)> = reader
                        .exec_first(
                            "SELECT messageId, sender, body FROM messages WHERE messageId = ?",
                            (&row.message_id,),
                        )
                        .await
                        .unwrap();
                    assert_eq!(got, Some((row.message_id.clone(), row.sender.clone(), row.body.to_string())));
                    let used: Option<(i64, i64)> = reader
                        .exec_first(
                            "SELECT messages, bytes FROM messagebox_sender_usage WHERE sender = ?",
                            (&row.sender,),
                        )
                        .await
                        .unwrap();
                    let expected = if nbe { 2 } else { 1 };
                    assert_eq!(used.map(|u| u.0), Some(expected), "{:?}", row.sender);
                }

                // One id is stored already: the batch is rolled back, nothing of it stays.
                let mut conn = Conn::from_url(url.clone()).await.unwrap();
                conn.query_drop(format!("SET SESSION sql_mode = {mode}")).await.unwrap();
                let fresh = NewMessage { message_id: format!("fresh-{nbe}"), ..rows[0].clone() };
                let (insert, usage_sql) = text_batch_sql(&[&fresh, &rows[1]], &[box_id, box_id], now(), None, nbe);
                let missed = run_text_batch(conn, &insert, &usage_sql, 2).await;
                assert!(matches!(missed, Err(AttemptError::Missed)), "{:?}", missed.err().map(|e| e.to_string()));
                let fresh_rows: Option<i64> = reader
                    .exec_first("SELECT COUNT(*) FROM messages WHERE messageId = ?", (&fresh.message_id,))
                    .await
                    .unwrap();
                assert_eq!(fresh_rows, Some(0));
                let used: Option<i64> = reader
                    .exec_first("SELECT messages FROM messagebox_sender_usage WHERE sender = ?", (&rows[0].sender,))
                    .await
                    .unwrap();
                assert_eq!(used, Some(if nbe { 2 } else { 1 }), "rolled back with the batch");
            }
            drop(reader);
            drop(store);
            admin.query_drop(format!("DROP DATABASE `{name}`")).await.unwrap();
        });
    }

    #[test]
    fn acknowledgement_batches_read_each_result_into_its_own_acknowledgement() {
        let long: Vec<String> = (0..MAX_LIST + 1).map(|i| format!("l-{i}")).collect();
        let (a, b) = (vec!["it's".to_string()], vec!["x".to_string(), "y".to_string()]);
        let acks = [("r", &a[..]), ("r2", &long[..]), ("r", &b[..])];
        let (sql, deletes) = ack_delete_sql(&acks, false);
        assert_eq!(deletes, [1, 2, 1], "the long one is two chunks");
        assert!(sql.starts_with("START TRANSACTION;DELETE "));
        assert_eq!(sql.matches("RETURNING sender, OCTET_LENGTH(body)").count(), 4);
        assert!(sql.contains("'it\\'s'"), "escaped: {}", &sql[..120]);
        let sets = vec![vec![1], vec![2], vec![3, 4], vec![]];
        assert_eq!(split_per_ack(sets, &deletes), Some(vec![vec![1], vec![2, 3, 4], vec![]]));
        assert_eq!(split_per_ack(vec![vec![1]; 3], &deletes), None, "a result missing");
        assert_eq!(split_per_ack(vec![vec![1]; 5], &deletes), None, "one too many");
    }

    /// On a live server: consecutive acknowledgements committed together, the text way
    /// (MariaDB) and the prepared way (MySQL 8's, which MariaDB runs too): each gets its own
    /// count, an id two of them name is deleted (and subtracted) once, a recipient's ids are
    /// not another's; when one of them fails its statement (a trigger refuses `poison`) the
    /// others are redone alone and answered, the failed one gets the error, usage stays exact.
    #[test]
    fn acknowledgements_share_a_transaction_and_one_failure_fails_only_itself() {
        let Some((server, name, mut admin, rt)) =
            test_database("acknowledgements_share_a_transaction_and_one_failure_fails_only_itself", "mbunit_acks")
        else {
            return;
        };
        rt.block_on(async {
            let url = format!("{server}/{name}");
            let store = MysqlStore::open(&url, &StoreOptions::default()).await.unwrap();
            store.migrate().await.unwrap();
            let mariadb = store.shared.mariadb();
            let committer = Arc::new(Committer {
                shared: store.shared.clone(),
                boxes: std::sync::Mutex::new(BoxCache::new(8)),
                counters: store.writer.counters(),
                quotas: store.quotas.clone(),
            });
            // Runs `acks` (recipient, ids) as one batch on the store thread; each one's answer.
            let batch = |acks: Vec<(&str, Vec<String>)>| {
                let committer = committer.clone();
                let (acks, answers): (Vec<Ack>, Vec<_>) = acks
                    .into_iter()
                    .map(|(recipient, ids)| {
                        let (reply, answer) = oneshot::channel();
                        (Ack { recipient: recipient.into(), ids, reply }, answer)
                    })
                    .unzip();
                let store = &store;
                async move {
                    store
                        .spawn(move |_| async move {
                            committer.acknowledge(acks).await;
                            Ok(())
                        })
                        .await
                        .unwrap();
                    let mut out = Vec::new();
                    for a in answers {
                        out.push(a.await.unwrap());
                    }
                    out
                }
            };
            let strings = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            let usage = |sender: &'static str| store.quota_usage(super::super::quota::Scope::Sender, sender, 0);
            for (round, text) in [(0, true), (1, false)] {
                store.shared.mariadb.store(mariadb && text, std::sync::atomic::Ordering::Relaxed);
                let id = |i: usize| format!("{round}-{i}");
                let mut rows: Vec<NewMessage> = (0..6).map(|i| msg(&id(i))).collect();
                rows[5].recipient = "other".into();
                rows[4].message_id = format!("{round}-it's \\ nasty");
                store.insert_messages(rows.clone()).await.unwrap();
                assert_eq!(usage("s").await.unwrap().messages, 6);
                let answers = batch(vec![
                    ("r", vec![id(0), id(1), "nope".into()]),
                    ("r", vec![id(1), id(2)]),
                    ("r", vec![id(5), rows[4].message_id.clone()]),
                    ("R", vec![id(0), id(3)]),
                ])
                .await;
                assert_eq!(answers, [Ok(2), Ok(1), Ok(1), Ok(1)], "text: {text}");
                assert_eq!(usage("s").await.unwrap().messages, 1, "only `other`'s message is left");
                assert_eq!(batch(vec![("other", vec![id(5)]), ("other", vec![id(5)])]).await, [Ok(1), Ok(0)]);
                assert_eq!(usage("s").await.unwrap(), Default::default());
            }

            let mut conn = Conn::from_url(url.clone()).await.unwrap();
            conn.query_drop(
                "CREATE TRIGGER mb_test_poison BEFORE DELETE ON messages FOR EACH ROW                  IF OLD.messageId = 'poison' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'poisoned'; END IF",
            )
            .await
            .unwrap();
            for text in [true, false] {
                store.shared.mariadb.store(mariadb && text, std::sync::atomic::Ordering::Relaxed);
                // `poison` stays from the first round (a duplicate then).
                let rows: Vec<NewMessage> = ["a", "poison", "b"].iter().map(|i| msg(i)).collect();
                store.insert_messages(rows).await.unwrap();
                let before = store.stats().fallbacks;
                let answers =
                    batch(vec![("r", strings(&["a"])), ("r", strings(&["poison", "b"])), ("r", strings(&["b"]))])
                        .await;
                assert_eq!(answers[0], Ok(1));
                assert!(answers[1].is_err(), "{:?}", answers[1]);
                assert_eq!(answers[2], Ok(1), "redone alone: `b` is still there");
                assert_eq!(store.stats().fallbacks, before + 1);
                assert_eq!(usage("s").await.unwrap().messages, 1, "`poison` stays");
                let left: Vec<String> = conn.query("SELECT messageId FROM messages").await.unwrap();
                assert_eq!(left, ["poison"]);
            }
            drop(conn);
            drop(store);
            admin.query_drop(format!("DROP DATABASE `{name}`")).await.unwrap();
        });
    }

    #[test]
    fn timestamps_decode() {
        assert_eq!(v_ts(date_value(1_764_750_896)), Some(1_764_750_896));
        assert_eq!(v_ts(Value::Bytes(b"2025-12-03 08:34:56".to_vec())), Some(1_764_750_896));
        assert_eq!(v_ts(Value::Date(0, 0, 0, 0, 0, 0, 0)), None);
        assert_eq!(v_ts(Value::NULL), None);
    }
}
