//! The embedded SQLite backend (`rusqlite`, bundled), the default when no MySQL is named.
//!
//! SQLite calls block; where they run:
//! * one **writer thread** owns the read-write connection and performs every write. It
//!   drives the shared group-commit writer (`store::batch`): message inserts
//!   queued while it was busy go into one transaction, and so do consecutive queued
//!   acknowledgements (each in a savepoint); other writes run one by one in queue order
//!   between the batches;
//! * for a file, each **server core** ([`super::percore`]) runs the reads it asks for itself,
//!   synchronously, on a read-only connection of its own (opened on first use). Reads are
//!   short indexed lookups and pages bounded by the list limits; what one may cost the core
//!   is bounded too: past [`INLINE_READ_BUDGET`] (or when the file is locked) it is
//!   interrupted and handed to a reader thread, which runs it in full;
//! * for a file, `sqlite_readers` **reader threads** own one connection each and serve
//!   reads from callers that are no core (and those handed off); WAL lets them all read while
//!   the writer writes. `:memory:` has a single connection, so the writer thread serves
//!   every read.
//!
//! Callers hand closures to these threads over bounded channels (a full channel makes the
//! caller wait) and get results back through oneshot channels, awaitable from any runtime.
//! The file runs in WAL mode with `synchronous=NORMAL`: a commit is durable against a
//! process crash, and against power loss up to the last checkpoint. Timestamps are INTEGER
//! seconds since the epoch, UTC; text keys are `COLLATE NOCASE` (see the migration).

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::batch::{self, BatchWriter, Work, WriteFailure};
use super::fee_cache::FeeCache;
use super::fees::{self, FeeRules};
use super::percore::{self, Placement, Resource, StoreId};
use super::sql;
use super::usage::{self, Dialect};
use super::{
    expiry, migrate, now, Backend, ByteBound, Device, DeviceRegistration, InsertOutcome, MessageOwner, MigrationReport,
    NewMessage, PageTally, Permission, ServerFee, StoreError, StoreFuture, StoreOptions, StoredMessage, Timestamp,
    WriterStats, MAX_DEVICES,
};

/// Prepared statements cached per connection.
const STMT_CACHE_SIZE: usize = 64;
/// Most ids in one `IN (...)` list.
const MAX_LIST: usize = 500;

/// The most one read may hold up the core that runs it (checked every [`PROGRESS_STEPS`]
/// virtual-machine steps, and as the lock wait); past it the read is redone on a reader thread.
const INLINE_READ_BUDGET: Duration = Duration::from_millis(5);
/// SQLite virtual-machine steps between two looks at the clock during an inline read.
const PROGRESS_STEPS: std::ffi::c_int = 1000;

thread_local! {
    /// When the inline read running on this thread must give up (`None`: none is running).
    static INLINE_DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Work for the writer thread besides inserts.
enum WriteJob {
    /// Any write (or, for `:memory:`, read), run alone.
    Run(Box<dyn FnOnce(&mut Connection) + Send>),
    /// An acknowledgement: consecutive ones share one transaction ([`commit_acks`]).
    Ack(Ack),
}

/// One queued `acknowledge` call.
struct Ack {
    recipient: String,
    ids: Vec<String>,
    quotas: Arc<super::quota::Ledger>,
    reply: oneshot::Sender<Result<u64, StoreError>>,
}

/// Most acknowledgements one transaction commits.
const MAX_ACKS_PER_COMMIT: usize = 64;
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// The SQLite store handle. Dropping it closes the queues; the threads finish what is
/// queued and close their connections.
pub struct SqliteStore {
    fees: Arc<FeeCache>,
    writer: batch::Queue<WriteJob>,
    quotas: Arc<super::quota::Ledger>,
    /// `None` for `:memory:` (reads go to the writer).
    readers: Option<mpsc::Sender<ReadJob>>,
    /// The file each core opens its read connection on; `None` for `:memory:`.
    file: Option<String>,
    /// This store's key in each core's registry.
    id: StoreId,
    placement: Placement,
}

/// What callers hear once a worker thread is gone.
const STOPPED: &str = "the SQLite worker has stopped";

fn gone() -> StoreError {
    StoreError::Unavailable(STOPPED.into())
}

/// `busy`: how long a statement waits for another process's lock before failing (the
/// store's statement timeout).
fn configure(conn: &Connection, busy: Duration) -> Result<(), StoreError> {
    conn.busy_timeout(busy)?;
    conn.set_prepared_statement_cache_capacity(STMT_CACHE_SIZE);
    // Without the query planner stability guarantee, SQLite marks statements whose plan could
    // depend on a bound value (`LIMIT ?`, `OFFSET ?`, STAT4 ranges) and re-prepares them on
    // every rebind, which made 15 % of a list request's CPU `sqlite3Reprepare`. Our queries
    // have one good plan whatever the values, so pin it.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`; `:memory:` or an empty path
    /// gives a private in-memory database.
    pub fn open(path: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let memory = path.is_empty() || path == ":memory:";
        let config = |e: rusqlite::Error| StoreError::Config(format!("cannot open SQLite database {path:?}: {e}"));
        let writer_conn = if memory { Connection::open_in_memory() } else { Connection::open(path) }.map_err(config)?;
        configure(&writer_conn, options.timeouts.query_timeout)?;
        if !memory {
            // Before any reader opens, so every connection sees WAL.
            let mode: String = writer_conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path, mode, "SQLite did not switch to WAL mode");
            }
            writer_conn.pragma_update(None, "synchronous", "NORMAL")?;
        }
        // Savepoints and statement journals in memory, in 1 KiB chunks. Otherwise SQLite
        // holds them in a 64 KiB buffer before it spills to a temporary file: one malloc and
        // free of 64 KiB per savepoint or multi-row statement that saves a page, on which
        // glibc trimmed this thread's arena (a madvise and page faults per acknowledgement).
        // The writer's statements journal a batch's pages at most; migrations use files.
        writer_conn.pragma_update(None, "temp_store", "MEMORY")?;

        let queue = options.max_queued_inserts.max(1);
        let readers = if memory {
            None
        } else {
            let (tx, rx) = mpsc::channel::<ReadJob>(queue);
            let rx = Arc::new(Mutex::new(rx));
            for n in 0..options.sqlite_readers.max(1) {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
                )
                .map_err(config)?;
                configure(&conn, options.timeouts.query_timeout)?;
                conn.pragma_update(None, "query_only", "ON")?;
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("messagebox-sqlite-r{n}"))
                    .spawn(move || reader_main(conn, rx))
                    .map_err(|e| StoreError::Config(format!("cannot start an SQLite reader thread: {e}")))?;
            }
            Some(tx)
        };

        let (writer, intake) = batch::queue(queue, options.max_batch_rows, STOPPED);
        let retention_days = options.retention_days;
        // The shared writer is async; this runtime only drives it (it never waits on I/O:
        // every SQLite call blocks this thread, which exists for them). Built on that thread:
        // a runtime must not be dropped from async code, as `open`'s caller is.
        std::thread::Builder::new()
            .name("messagebox-sqlite-w".into())
            .spawn(move || match tokio::runtime::Builder::new_current_thread().build() {
                Ok(runtime) => runtime.block_on(write_main(Writer { conn: writer_conn, retention_days }, intake)),
                // Writes then fail with the store's "stopped" error; this says why.
                Err(e) => tracing::error!(error = %e, "cannot start the SQLite writer runtime"),
            })
            .map_err(|e| StoreError::Config(format!("cannot start the SQLite writer thread: {e}")))?;
        let reader_threads = if memory { 0 } else { options.sqlite_readers.max(1) };
        tracing::info!(path, reader_threads, max_batch_rows = options.max_batch_rows.max(1), "SQLite store ready");
        let fees = Arc::new(FeeCache::new(options.fee_cache_entries));
        Ok(SqliteStore {
            fees,
            writer,
            readers,
            quotas: super::quota::Ledger::new(options.quotas),
            file: (!memory).then(|| path.to_string()),
            id: StoreId::next(),
            placement: Placement::default(),
        })
    }

    /// This core's read connection, opened on first use; `None` off a core, for
    /// `:memory:`, or when it could not be opened (said once per core; reads hand off).
    fn core_reader(&self) -> Option<Rc<Connection>> {
        let path = self.file.as_deref()?;
        let open = || {
            let conn = open_core_reader(path)
                .inspect_err(|e| tracing::warn!(path, error = %e, "cannot open a core's SQLite read connection"));
            Resource::Sqlite(conn.ok().map(Rc::new))
        };
        match percore::resource(self.id, open)? {
            Resource::Sqlite(conn) => conn,
            Resource::Mysql(_) => None,
        }
    }

    /// Runs `f` on this core's read connection within [`INLINE_READ_BUDGET`]. `Err(f)` when
    /// it did not run here (no core, `:memory:`) or gave up (over budget, the file locked):
    /// the caller hands it off.
    fn read_on_core<T, F>(&self, f: F) -> Result<Result<T, StoreError>, F>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Clone,
    {
        let Some(conn) = self.core_reader() else { return Err(f) };
        let spare = f.clone();
        INLINE_DEADLINE.with(|d| d.set(Some(Instant::now() + INLINE_READ_BUDGET)));
        let result = f(&conn);
        INLINE_DEADLINE.with(|d| d.set(None));
        match result {
            Err(e) if gave_up(&e) => Err(spare),
            done => Ok(done),
        }
    }

    /// Runs `f` on the calling core's read connection, or else on a reader connection (the
    /// writer's for `:memory:`). `Clone` lets a read that gave up on the core run again.
    fn read<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Clone + Send + 'static,
        T: Send + 'static,
    {
        Box::pin(async move {
            let f = match self.read_on_core(f) {
                Ok(done) => {
                    self.placement.count(true);
                    return done;
                }
                Err(f) => f,
            };
            self.placement.count(false);
            let (reply, answer) = oneshot::channel();
            let job = move |conn: &Connection| {
                let _ = reply.send(f(conn));
            };
            match &self.readers {
                Some(readers) => readers.send(Box::new(job)).await.map_err(|_| gone())?,
                None => self.writer.job(WriteJob::Run(Box::new(move |conn: &mut Connection| job(conn)))).await?,
            }
            answer.await.map_err(|_| gone())?
        })
    }

    /// Runs `f` on the writer connection, in queue order with the inserts.
    fn write<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = WriteJob::Run(Box::new(move |conn: &mut Connection| {
            let _ = reply.send(f(conn));
        }));
        Box::pin(async move {
            self.writer.job(job).await?;
            answer.await.map_err(|_| gone())?
        })
    }
}

/// A core's read connection: read-only, a lock wait within the inline budget, and a
/// progress handler that interrupts a read past its deadline ([`INLINE_DEADLINE`]).
fn open_core_reader(path: &str) -> Result<Connection, StoreError> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    configure(&conn, INLINE_READ_BUDGET)?;
    conn.pragma_update(None, "query_only", "ON")?;
    let past_deadline = || INLINE_DEADLINE.with(|d| d.get().is_some_and(|deadline| Instant::now() >= deadline));
    conn.progress_handler(PROGRESS_STEPS, Some(past_deadline))?;
    Ok(conn)
}

/// Whether an inline read failed because it gave up (interrupted past its budget, or the
/// file locked beyond it): it may then succeed on a reader thread, which waits longer.
fn gave_up(e: &StoreError) -> bool {
    const SQLITE_BUSY: i32 = 5;
    const SQLITE_LOCKED: i32 = 6;
    const SQLITE_INTERRUPT: i32 = 9;
    matches!(e, StoreError::Database(super::DatabaseError { code: Some(super::ErrorCode::Sqlite(code)), .. })
        if matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED | SQLITE_INTERRUPT))
}

fn reader_main(conn: Connection, rx: Arc<Mutex<mpsc::Receiver<ReadJob>>>) {
    loop {
        // Whoever holds the lock waits for the next job; the others wait for the lock.
        let job = {
            let mut rx = rx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            rx.blocking_recv()
        };
        match job {
            Some(job) => job(&conn),
            None => return,
        }
    }
}

/// The writer thread: group-committed inserts and, in queue order between them, every
/// other write (and reads, for `:memory:`).
async fn write_main(mut writer: Writer, mut intake: batch::Intake<WriteJob>) {
    while let Some(work) = intake.next().await {
        match work {
            Work::Batch(batch) => batch.commit(&mut writer).await,
            Work::Job(WriteJob::Run(job)) => job(&mut writer.conn),
            Work::Job(WriteJob::Ack(first)) => {
                let mut acks = vec![first];
                while acks.len() < MAX_ACKS_PER_COMMIT {
                    let next = intake.next_job_now(|job| match job {
                        WriteJob::Ack(ack) => Ok(ack),
                        other => Err(other),
                    });
                    let Some(ack) = next else { break };
                    acks.push(ack);
                }
                commit_acks(&mut writer.conn, acks);
            }
            Work::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// The writer connection with what its inserts need.
struct Writer {
    conn: Connection,
    retention_days: Option<u64>,
}

impl BatchWriter for Writer {
    /// One transaction: per row, find or create its box, then `INSERT OR IGNORE`, whose
    /// change count is the row's outcome (rows run in order, so a later duplicate within the
    /// batch is seen as one). Any error may be the statement's, so the batch may be split.
    async fn write(&mut self, rows: &[&NewMessage]) -> Result<Vec<InsertOutcome>, WriteFailure> {
        insert_rows(&mut self.conn, rows, self.retention_days)
            .map_err(|e| WriteFailure { error: e.into(), statement_level: true })
    }
}

fn insert_rows(
    conn: &mut Connection,
    rows: &[&NewMessage],
    retention_days: Option<u64>,
) -> Result<Vec<InsertOutcome>, rusqlite::Error> {
    let ts = now();
    let expires = expiry(ts, retention_days);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(rows.len());
    {
        let mut boxes: HashMap<(&str, &str), i64> = HashMap::new();
        let mut find = tx.prepare_cached("SELECT messageBoxId FROM messageBox WHERE identityKey = ?1 AND type = ?2")?;
        let mut create = tx.prepare_cached(
            "INSERT INTO messageBox (type, identityKey, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO messages \
             (messageId, messageBoxId, sender, recipient, body, created_at, updated_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
        )?;
        for row in rows {
            let key = (row.recipient.as_str(), row.box_type.as_str());
            let box_id = match boxes.get(&key) {
                Some(id) => *id,
                None => {
                    let id = match find.query_row(params![key.0, key.1], |r| r.get(0)).optional()? {
                        Some(id) => id,
                        None => {
                            create.execute(params![key.1, key.0, ts])?;
                            tx.last_insert_rowid()
                        }
                    };
                    boxes.insert(key, id);
                    id
                }
            };
            let changed =
                insert.execute(params![row.message_id, box_id, row.sender, row.recipient, &*row.body, ts, expires])?;
            out.push(if changed == 1 { InsertOutcome::Inserted } else { InsertOutcome::Duplicate });
        }
    }
    change_usage(&tx, &usage::inserted(rows, &out), Change::Add)?;
    tx.commit()?;
    Ok(out)
}

/// Whether [`change_usage`] adds or subtracts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Add,
    Subtract,
}

/// Applies `deltas` to `messagebox_sender_usage` ([`usage`]), inside the caller's transaction.
fn change_usage(conn: &Connection, deltas: &[usage::Delta<'_>], change: Change) -> rusqlite::Result<()> {
    for chunk in deltas.chunks(usage::MAX_SENDERS) {
        let (sql, params) = match change {
            Change::Add => usage::add(Dialect::Sqlite, chunk),
            Change::Subtract => usage::subtract(Dialect::Sqlite, chunk),
        };
        conn.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(params))?;
    }
    Ok(())
}

impl rusqlite::ToSql for usage::Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            usage::Param::Text(s) => s.to_sql(),
            usage::Param::Int(i) => i.to_sql(),
        }
    }
}

/// Runs a `DELETE … RETURNING sender, OCTET_LENGTH(body)` and subtracts what it deleted from
/// the senders' usage, in the caller's transaction; returns the deleted rows' senders and bytes.
fn delete_returning(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<(String, u64)>> {
    let gone = deleted_rows(conn, sql, params)?;
    change_usage(conn, &usage::deleted(&gone), Change::Subtract)?;
    Ok(gone)
}

/// Runs a `DELETE … RETURNING sender, OCTET_LENGTH(body)`; the deleted rows' senders and bytes.
fn deleted_rows(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<Vec<(String, u64)>> {
    conn.prepare_cached(sql)?
        .query_map(params, |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?
        .collect()
}

/// An acknowledgement's `DELETE … RETURNING` for `ids` ids. Parameters: recipient, then the ids.
///
/// `+recipient` keeps the recipient out of the index choice: given two ids or more, SQLite
/// otherwise reads the recipient's whole inbox through `(recipient, messageBoxId, …)` to find
/// them, where the unique `messageId` index finds each directly (the column's collation stays).
fn ack_delete(ids: usize) -> String {
    format!(
        "DELETE FROM messages WHERE +recipient = ? AND messageId IN ({}) RETURNING sender, OCTET_LENGTH(body)",
        sql::placeholders(ids)
    )
}

/// Deletes what `ack` names, in the caller's transaction; the deleted rows' senders and bytes.
fn delete_acked(conn: &Connection, ack: &Ack) -> rusqlite::Result<Vec<(String, u64)>> {
    let mut gone = Vec::new();
    for chunk in ack.ids.chunks(MAX_LIST) {
        let params = std::iter::once(ack.recipient.as_str()).chain(chunk.iter().map(String::as_str));
        gone.extend(deleted_rows(conn, &ack_delete(chunk.len()), rusqlite::params_from_iter(params))?);
    }
    Ok(gone)
}

/// What each acknowledgement of a batch deleted, or its error.
type AckResults = Vec<Result<Vec<(String, u64)>, StoreError>>;

/// Commits consecutive acknowledgements in ONE transaction, subtracts what they deleted from
/// the senders' usage once, and answers each only after the COMMIT. A failed COMMIT (or usage
/// update) fails them all.
///
/// They run without savepoints first (two statements fewer each). Should one fail, that
/// transaction is rolled back and the batch redone with each acknowledgement in a savepoint,
/// so the one that fails leaves the others.
fn commit_acks(conn: &mut Connection, acks: Vec<Ack>) {
    let (committed, results) = match run_acks(conn, &acks, false) {
        Ok(Some(results)) => (Ok(()), results),
        Ok(None) => match run_acks(conn, &acks, true) {
            Ok(results) => (Ok(()), results.unwrap_or_default()),
            Err(e) => (Err(e), Vec::new()),
        },
        Err(e) => (Err(e), Vec::new()),
    };
    for (ack, result) in acks.into_iter().zip(results.into_iter().map(Some).chain(std::iter::repeat_with(|| None))) {
        let answer = match (&committed, result) {
            (Err(e), _) => Err(e.clone()),
            (Ok(()), Some(Ok(gone))) => {
                // The inbox and these senders hold less: a quota refusal must ask the database again.
                ack.quotas.deleted(Some(&ack.recipient), usage::deleted(&gone).iter().map(|d| d.sender));
                Ok(gone.len() as u64)
            }
            (Ok(()), Some(Err(e))) => Err(e),
            (Ok(()), None) => Err(StoreError::database("acknowledgement not attempted")),
        };
        let _ = ack.reply.send(answer);
    }
}

/// One attempt of [`commit_acks`]: each acknowledgement in a savepoint when `isolated`.
/// `Ok(None)`: not isolated and one failed; nothing was committed.
fn run_acks(conn: &mut Connection, acks: &[Ack], isolated: bool) -> Result<Option<AckResults>, StoreError> {
    let mut results: AckResults = Vec::with_capacity(acks.len());
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for ack in acks {
        if !isolated {
            match delete_acked(&tx, ack) {
                Ok(gone) => results.push(Ok(gone)),
                // Dropping the transaction rolls it back.
                Err(_) => return Ok(None),
            }
            continue;
        }
        let mut sp = tx.savepoint()?;
        match delete_acked(&sp, ack) {
            Ok(gone) => {
                sp.commit()?;
                results.push(Ok(gone));
            }
            Err(e) => {
                // Undo this one only; dropping the savepoint then releases it.
                sp.rollback()?;
                results.push(Err(e.into()));
            }
        }
    }
    change_usage(&tx, &usage::deleted_all(results.iter().flatten()), Change::Subtract)?;
    tx.commit()?;
    Ok(Some(results))
}

/// Most expired rows one sweep transaction deletes (a sweep without a batch size runs several).
const SWEEP_CHUNK: u64 = 10_000;

/// The fee rule that applies, as in the MySQL backend: sender-specific first, else the
/// newest box-wide rule.
fn lookup_fee(conn: &Connection, recipient: &str, sender: &str, message_box: &str) -> Result<Option<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(sql::FEE_RULE)?;
    Ok(stmt.query_row(params![recipient, message_box, sender], |r| r.get(0)).optional()?)
}

/// One sender's fee rules for one box, on the writer's connection. Its calls block, so its
/// futures finish on their first poll (see [`blocking`]).
struct Fees<'a> {
    conn: &'a Connection,
    sender: &'a str,
    message_box: &'a str,
}

impl FeeRules for Fees<'_> {
    async fn lookup(&mut self, recipient: &str) -> Result<Option<i64>, StoreError> {
        lookup_fee(self.conn, recipient, self.sender, self.message_box)
    }

    async fn insert_default(&mut self, recipient: &str, fee: i64) -> Result<bool, StoreError> {
        let ts = now();
        let inserted = self.conn.prepare_cached(sql::INSERT_DEFAULT_FEE_SQLITE)?.execute(params![
            recipient,
            self.message_box,
            fee,
            ts,
            ts,
            recipient,
            self.message_box
        ])?;
        Ok(inserted == 1)
    }
}

/// The result of a future built only of blocking SQLite calls, which never waits (were one
/// ever to wait, that is an error for this request, not a panic of the writer thread).
fn blocking<T>(work: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    futures_util::FutureExt::now_or_never(work)
        .unwrap_or_else(|| Err(StoreError::Unavailable("SQLite work waited on the writer thread".into())))
}

fn permission(r: &rusqlite::Row<'_>) -> rusqlite::Result<Permission> {
    Ok(Permission {
        sender: r.get(0)?,
        message_box: r.get(1)?,
        recipient_fee: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
    })
}

fn devices(conn: &Connection, identity_key: &str, only_active: bool) -> Result<Vec<Device>, StoreError> {
    let mut stmt = conn.prepare_cached(sql::devices(only_active))?;
    let rows = stmt.query_map(params![identity_key, MAX_DEVICES], |r| {
        Ok(Device {
            id: r.get::<_, i64>(0)? as u64,
            device_id: r.get(1)?,
            platform: r.get(2)?,
            fcm_token: r.get(3)?,
            active: r.get::<_, Option<i64>>(4)?.is_some_and(|a| a != 0),
            created_at: r.get(5)?,
            updated_at: r.get(6)?,
            last_used: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The fee reads and writes themselves; [`Backend`]'s go through the fee cache.
impl SqliteStore {
    fn read_delivery_fee(&self, message_box: &str) -> StoreFuture<'_, Option<i64>> {
        let message_box = message_box.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(sql::DELIVERY_FEE)?;
            Ok(stmt.query_row([message_box], |r| r.get(0)).optional()?)
        })
    }

    fn write_delivery_fee(&self, message_box: &str, fee: i32) -> StoreFuture<'_, Option<i64>> {
        let message_box = message_box.to_string();
        self.write(move |conn| {
            let ts = now();
            // IMMEDIATE takes the write lock before the read, so another process (a server
            // on the same file) cannot change the row between the two.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let previous: Option<i64> =
                tx.prepare_cached(sql::DELIVERY_FEE)?.query_row([&message_box], |r| r.get(0)).optional()?;
            tx.prepare_cached(
                "INSERT INTO server_fees (message_box, delivery_fee, created_at, updated_at) VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT (message_box) DO UPDATE SET delivery_fee = excluded.delivery_fee, \
                 updated_at = excluded.updated_at",
            )?
            .execute(params![message_box, fee, ts])?;
            tx.commit()?;
            Ok(previous)
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
        Box::pin(async move {
            let (s, b, r) = (sender.clone(), message_box.clone(), recipients.clone());
            let found = self
                .read(move |conn| r.iter().map(|r| lookup_fee(conn, r, &s, &b)).collect::<Result<Vec<_>, _>>())
                .await?;
            if found.iter().all(Option::is_some) {
                return Ok(found.into_iter().flatten().collect());
            }
            // Create the missing box-wide defaults on the writer (the only writer in this
            // process, so no duplicate from here).
            self.write(move |conn| {
                let mut rules = Fees { conn, sender: &sender, message_box: &message_box };
                blocking(fees::with_defaults(&mut rules, &recipients, found, default_fee))
            })
            .await
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
        self.write(move |conn| {
            let ts = now();
            if let Some(sender) = sender {
                conn.prepare_cached(
                    "INSERT INTO message_permissions (recipient, sender, message_box, recipient_fee, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (recipient, sender, message_box) \
                     DO UPDATE SET recipient_fee = excluded.recipient_fee, updated_at = excluded.updated_at",
                )?
                .execute(params![recipient, sender, message_box, fee, ts])?;
                return Ok(());
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let newest: Option<i64> = tx
                .prepare_cached(sql::NEWEST_BOX_WIDE_ID)?
                .query_row(params![recipient, message_box], |r| r.get(0))
                .optional()?;
            match newest {
                Some(id) => tx.prepare_cached(sql::UPDATE_PERMISSION_FEE)?.execute(params![fee, ts, id])?,
                None => tx.prepare_cached(sql::INSERT_BOX_WIDE)?.execute(params![recipient, message_box, fee, ts, ts])?,
            };
            tx.commit()?;
            Ok(())
        })
    }
}

impl Backend for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn migrate(&self) -> StoreFuture<'_, MigrationReport> {
        // A migration of a large database (an index built, usage summed per sender) may sort
        // more than memory should hold: it gets SQLite's default temporary storage (files),
        // the writer's everyday `temp_store=MEMORY` (see `open`) comes back after it.
        self.write(|conn| {
            conn.pragma_update(None, "temp_store", "DEFAULT")?;
            let report = migrate::run_sqlite(conn);
            conn.pragma_update(None, "temp_store", "MEMORY")?;
            report
        })
    }

    fn delivery_fee(&self, message_box: &str) -> StoreFuture<'_, Option<i64>> {
        self.fees.delivery_fee(message_box, || self.read_delivery_fee(message_box))
    }

    fn server_fees(&self) -> StoreFuture<'_, Vec<ServerFee>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(sql::SERVER_FEES)?;
            let rows = stmt.query_map([], |r| {
                Ok(ServerFee {
                    message_box: r.get(0)?,
                    delivery_fee: r.get(1)?,
                    created_at: r.get(2)?,
                    updated_at: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
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
        self.writer.insert(messages)
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
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(sql::LIST_MESSAGES)?;
            let offset = i64::try_from(offset).unwrap_or(i64::MAX);
            let mut rows = stmt.query(params![recipient, box_type, recipient, now(), limit, offset])?;
            // Stepped lazily: rows past the byte bound are never read.
            let (mut page, mut tally) = (Vec::new(), PageTally::new(bound));
            while let Some(r) = rows.next()? {
                let m = StoredMessage {
                    message_id: r.get(0)?,
                    body: r.get(1)?,
                    sender: r.get(2)?,
                    created_at: r.get(3)?,
                    updated_at: r.get(4)?,
                };
                let more = tally.more_after(&m);
                page.push(m);
                if !more {
                    break;
                }
            }
            Ok(page)
        })
    }

    fn delete_expired(&self, now: Timestamp, batch: Option<u64>) -> StoreFuture<'_, u64> {
        let quotas = self.quotas.clone();
        self.write(move |conn| {
            let mut deleted = 0;
            loop {
                let limit = batch.map_or(SWEEP_CHUNK, |n| n.saturating_sub(deleted).min(SWEEP_CHUNK));
                if limit == 0 {
                    return Ok(deleted);
                }
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // SQLite's DELETE has no LIMIT unless compiled with it.
                let gone = delete_returning(
                    &tx,
                    "DELETE FROM messages WHERE rowid IN (SELECT rowid FROM messages \
                     WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2) \
                     RETURNING sender, OCTET_LENGTH(body)",
                    params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
                )?;
                tx.commit()?;
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
        self.read(move |conn| {
            let mut found = Vec::new();
            for chunk in ids.chunks(MAX_LIST) {
                let mut stmt = conn.prepare_cached(&sql::message_owners(chunk.len()))?;
                let rows = stmt.query_map(rusqlite::params_from_iter(chunk), |r| {
                    Ok(MessageOwner { message_id: r.get(0)?, sender: r.get(1)?, recipient: r.get(2)? })
                })?;
                for row in rows {
                    found.push(row?);
                }
            }
            Ok(found)
        })
    }

    fn claim_payment(&self, txid: &str) -> StoreFuture<'_, bool> {
        let txid = txid.to_string();
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO payment_replays (transaction_id, created_at, expires_at) VALUES (?1, ?2, NULL)",
                )?
                .execute(params![txid, now()])?;
            Ok(inserted == 1)
        })
    }

    fn release_payment(&self, txid: &str) -> StoreFuture<'_, ()> {
        let txid = txid.to_string();
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM payment_replays WHERE transaction_id = ?1")?.execute([txid])?;
            Ok(())
        })
    }

    fn quota_usage(
        &self,
        scope: super::quota::Scope,
        identity: &str,
        now: Timestamp,
    ) -> StoreFuture<'_, super::quota::Usage> {
        let identity = identity.to_string();
        self.read(move |conn| {
            let (messages, bytes): (i64, i64) = match scope {
                super::quota::Scope::Sender => conn
                    .prepare_cached(usage::READ)?
                    .query_row(params![identity], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?
                    .unwrap_or((0, 0)),
                super::quota::Scope::Inbox => conn
                    .prepare_cached(sql::INBOX_USAGE)?
                    .query_row(params![identity, now], |r| Ok((r.get(0)?, r.get(1)?)))?,
            };
            Ok(super::quota::Usage { messages: messages.max(0) as u64, bytes: bytes.max(0) as u64 })
        })
    }

    fn quotas(&self) -> &Arc<super::quota::Ledger> {
        &self.quotas
    }

    fn fee_cache(&self) -> &Arc<FeeCache> {
        &self.fees
    }

    fn acknowledge(&self, recipient: &str, message_ids: &[String]) -> StoreFuture<'_, u64> {
        let (recipient, ids) = (recipient.to_string(), message_ids.to_vec());
        let quotas = self.quotas.clone();
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(0);
            }
            let (reply, answer) = oneshot::channel();
            self.writer.job(WriteJob::Ack(Ack { recipient, ids, quotas, reply })).await?;
            answer.await.map_err(|_| gone())?
        })
    }

    fn register_device(&self, reg: DeviceRegistration) -> StoreFuture<'_, u64> {
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO device_registrations \
                 (identity_key, fcm_token, device_id, platform, created_at, updated_at, active, last_used) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, 1, ?5) ON CONFLICT (fcm_token) DO UPDATE SET \
                 identity_key = excluded.identity_key, device_id = excluded.device_id, platform = excluded.platform, \
                 updated_at = excluded.updated_at, active = 1, last_used = excluded.last_used RETURNING id",
            )?;
            let id: i64 = stmt
                .query_row(params![reg.identity_key, reg.fcm_token, reg.device_id, reg.platform, now()], |r| {
                    r.get(0)
                })?;
            Ok(id as u64)
        })
    }

    fn list_devices(&self, identity_key: &str) -> StoreFuture<'_, Vec<Device>> {
        let identity_key = identity_key.to_string();
        self.read(move |conn| devices(conn, &identity_key, false))
    }

    fn active_devices(&self, identity_key: &str) -> StoreFuture<'_, Vec<Device>> {
        let identity_key = identity_key.to_string();
        self.read(move |conn| devices(conn, &identity_key, true))
    }

    fn record_push(&self, fcm_token: &str, success: bool, deactivate: bool) -> StoreFuture<'_, ()> {
        let fcm_token = fcm_token.to_string();
        self.write(move |conn| {
            let ts = now();
            if success {
                conn.prepare_cached(sql::DEVICE_USED)?.execute(params![ts, ts, fcm_token])?;
            }
            if deactivate {
                conn.prepare_cached(sql::DEVICE_DEACTIVATED)?.execute(params![ts, fcm_token])?;
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
        self.read(move |conn| {
            let row = match sender {
                Some(sender) => conn
                    .prepare_cached(sql::SENDER_PERMISSION)?
                    .query_row(params![recipient, message_box, sender], permission)
                    .optional()?,
                None => conn
                    .prepare_cached(sql::BOX_WIDE_PERMISSION)?
                    .query_row(params![recipient, message_box], permission)
                    .optional()?,
            };
            Ok(row)
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
        self.read(move |conn| {
            // `?2 IS NULL` keeps one statement shape for "all boxes" and "one box"; the
            // page's `?` placeholders then number on from 3.
            let filter = "recipient = ?1 AND (?2 IS NULL OR message_box = ?2)";
            let total: i64 = conn
                .prepare_cached(&sql::count_permissions(filter))?
                .query_row(params![recipient, message_box], |r| r.get(0))?;
            let mut stmt = conn.prepare_cached(&sql::list_permissions(filter, created_asc))?;
            let offset = i64::try_from(offset).unwrap_or(i64::MAX);
            let page = stmt
                .query_map(params![recipient, message_box, limit, offset], permission)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((page, total.max(0) as u64))
        })
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        self.writer.flush()
    }

    fn stats(&self) -> WriterStats {
        let (on_core, handed_off) = self.placement.snapshot();
        WriterStats { on_core, handed_off, ..self.writer.stats() }
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    /// An in-memory database, configured as the store's connections are, with the schema.
    fn migrated_memory() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        configure(&conn, Duration::from_secs(5)).unwrap();
        super::super::migrate::run_sqlite(&mut conn).unwrap();
        conn
    }

    /// The writer keeps its journals in memory; a migration sets SQLite's default (files) and
    /// the writer has memory again after it.
    #[test]
    fn migrations_use_temporary_files_and_the_writer_memory() {
        let store = SqliteStore::open(":memory:", &StoreOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let temp_store = || store.write(|c| Ok(c.pragma_query_value(None, "temp_store", |r| r.get::<_, i64>(0))?));
            assert_eq!(temp_store().await.unwrap(), 2, "MEMORY");
            store.migrate().await.unwrap();
            assert_eq!(temp_store().await.unwrap(), 2, "MEMORY again after the migration");
        });
    }

    /// On a core, a read runs there; one past [`INLINE_READ_BUDGET`] is interrupted and redone
    /// on a reader thread, with the full answer. Off a core every read hands off.
    #[test]
    fn reads_run_on_the_core_within_their_budget() {
        const ROWS: u64 = 400_000;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("budget.sqlite3");
        let store = SqliteStore::open(path.to_str().unwrap(), &StoreOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            store.migrate().await.unwrap();
            // Enough of r's messages that counting them takes longer than the budget.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "INSERT INTO messageBox (messageBoxId, identityKey, type, created_at, updated_at) \
                 VALUES (1, 'r', 'inbox', 0, 0); \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
                 INSERT INTO messages (messageId, messageBoxId, sender, recipient, body, created_at, updated_at) \
                 SELECT 'id' || i, 1, 's', 'r', 'body', i, i FROM n;"
            ))
            .unwrap();
            let placed = |s: &SqliteStore| (s.stats().on_core, s.stats().handed_off);

            assert_eq!(store.list_messages("r", "inbox", 3, 0).await.unwrap().len(), 3);
            assert_eq!(placed(&store), (0, 1), "no core: handed off");

            let core = percore::enter();
            let page = store.list_messages("r", "inbox", 3, 0).await.unwrap();
            assert_eq!(page.iter().map(|m| m.message_id.as_str()).collect::<Vec<_>>(), ["id1", "id2", "id3"]);
            assert_eq!(placed(&store), (1, 1), "a short read runs on the core");

            let started = Instant::now();
            let usage = store.quota_usage(super::super::quota::Scope::Inbox, "r", now()).await.unwrap();
            assert_eq!(usage.messages, ROWS, "the full answer, from the reader thread");
            assert_eq!(placed(&store), (1, 2), "over its budget: handed off ({:?})", started.elapsed());
            core.close().await;
        });
    }

    /// An acknowledgement finds its ids through the unique `messageId` index, however many
    /// (not by reading the recipient's inbox), and deletes only the recipient's.
    #[test]
    fn acknowledgements_find_ids_by_their_index() {
        let conn = migrated_memory();
        for n in [1, 2, 3, 50, MAX_LIST] {
            let sql = format!("EXPLAIN QUERY PLAN {}", ack_delete(n));
            let params = std::iter::repeat_n("x", n + 1);
            let plan: Vec<String> = conn
                .prepare(&sql)
                .unwrap()
                .query_map(rusqlite::params_from_iter(params), |r| r.get(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(plan.len(), 1, "{n} ids: {plan:?}");
            assert!(plan[0].starts_with("SEARCH messages USING INDEX sqlite_autoindex_messages_"), "{n} ids: {plan:?}");
            assert!(plan[0].ends_with("(messageId=?)"), "{n} ids: {plan:?}");
        }
        conn.execute_batch(
            "INSERT INTO messageBox (messageBoxId, identityKey, type, created_at, updated_at) VALUES (1, 'r', 'inbox', 0, 0); \
             INSERT INTO messages (messageId, messageBoxId, sender, recipient, body, created_at, updated_at) VALUES \
             ('a', 1, 's', 'R', 'xy', 0, 0), ('b', 1, 's', 'other', 'xyz', 0, 0), ('c', 1, 't', 'r', 'é', 0, 0);",
        )
        .unwrap();
        let mut gone = deleted_rows(&conn, &ack_delete(3), params!["r", "A", "b", "c"]).unwrap();
        gone.sort();
        assert_eq!(gone, [("s".to_string(), 2), ("t".to_string(), 2)], "the recipient's rows, case-insensitively");
    }

    /// Consecutive acknowledgements commit together; when one fails its statement (a trigger
    /// refuses the row `bad`), the batch is redone with each in a savepoint: the others keep
    /// their own counts, the failed one gets the error and deletes nothing, usage stays exact.
    #[test]
    fn a_failed_acknowledgement_leaves_the_others() {
        let mut conn = migrated_memory();
        conn.execute_batch(
            "INSERT INTO messageBox (messageBoxId, identityKey, type, created_at, updated_at) VALUES (1, 'r', 'inbox', 0, 0); \
             WITH n(id) AS (VALUES ('g-3'), ('g-4'), ('bad'), ('g-5')) \
             INSERT INTO messages (messageId, messageBoxId, sender, recipient, body, created_at, updated_at) \
             SELECT id, 1, 's', 'r', 'body', 0, 0 FROM n; \
             INSERT INTO messagebox_sender_usage (sender, messages, bytes) VALUES ('s', 4, 16); \
             CREATE TRIGGER refuse BEFORE DELETE ON messages WHEN OLD.messageId = 'bad' \
             BEGIN SELECT RAISE(ABORT, 'bad row'); END;",
        )
        .unwrap();
        let quotas = super::super::quota::Ledger::new(StoreOptions::default().quotas);
        let mut answers = Vec::new();
        let acks = [&["g-3", "g-4"][..], &["bad", "g-5"], &["g-4", "g-5"]]
            .iter()
            .map(|ids| {
                let (reply, answer) = oneshot::channel();
                answers.push(answer);
                let ids = ids.iter().map(|id| id.to_string()).collect();
                Ack { recipient: "R".into(), ids, quotas: quotas.clone(), reply }
            })
            .collect();
        commit_acks(&mut conn, acks);
        let answers: Vec<_> = answers.into_iter().map(|mut a| a.try_recv().unwrap()).collect();
        assert_eq!(answers[0], Ok(2));
        assert!(answers[1].is_err(), "{:?}", answers[1]);
        assert_eq!(answers[2], Ok(1), "`g-5` was still there: the failed one deleted nothing");
        let left: Vec<String> = conn
            .prepare("SELECT messageId FROM messages")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(left, ["bad"]);
        let usage: (i64, i64) = conn
            .query_row("SELECT messages, bytes FROM messagebox_sender_usage", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(usage, (1, 4));
    }

    /// A cached statement is reused as is when its parameters change (see [`configure`]).
    #[test]
    fn rebinding_does_not_reprepare() {
        let conn = migrated_memory();
        conn.execute(
            "INSERT INTO messageBox (identityKey, type, created_at, updated_at) VALUES ('k', 'inbox', 0, 0)",
            [],
        )
        .unwrap();
        for i in 0..20i64 {
            let mut stmt = conn.prepare_cached(sql::LIST_MESSAGES).unwrap();
            let rows: Vec<String> = stmt
                .query_map(params!["k", "inbox", "k", 0, 10 + i, i], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert!(rows.is_empty());
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "round {i}");
        }
    }
}
