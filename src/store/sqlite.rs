//! The embedded SQLite backend (`rusqlite`, bundled), the default when no MySQL is named.
//!
//! SQLite calls block, so no connection is ever used on a caller's thread:
//! * one **writer thread** owns the read-write connection and performs every write. Message
//!   inserts queued while it was busy are drained into one transaction (group commit, as in
//!   the MySQL backend); other writes run one by one in queue order;
//! * for a file, `sqlite_readers` **reader threads** own one connection each and serve
//!   reads (WAL lets them read while the writer writes); `:memory:` has a single connection,
//!   so the writer thread serves reads too.
//!
//! Callers hand closures to these threads over bounded channels (a full channel makes the
//! caller wait) and get results back through oneshot channels, awaitable from any runtime.
//! The file runs in WAL mode with `synchronous=NORMAL`: a commit is durable against a
//! process crash, and against power loss up to the last checkpoint. Timestamps are INTEGER
//! seconds since the epoch, UTC; text keys are `COLLATE NOCASE` (see the migration).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::{
    migrate, now, Backend, Device, DeviceRegistration, InsertOutcome, MigrationReport, NewMessage, Permission,
    StoreError, StoreFuture, StoreOptions, StoredMessage, WriterStats, MAX_DEVICES,
};

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements cached per connection.
const STMT_CACHE_SIZE: usize = 64;
/// Most ids in one `IN (...)` list.
const MAX_LIST: usize = 500;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(e.to_string())
    }
}

type WriteJob = Box<dyn FnOnce(&mut Connection) + Send>;
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

enum WriterMsg {
    Insert { rows: Vec<NewMessage>, reply: oneshot::Sender<Result<Vec<InsertOutcome>, StoreError>> },
    Job(WriteJob),
    Flush(oneshot::Sender<()>),
}

/// The SQLite store handle. Dropping it closes the queues; the threads finish what is
/// queued and close their connections.
pub struct SqliteStore {
    writer: mpsc::Sender<WriterMsg>,
    /// `None` for `:memory:` (reads go to the writer).
    readers: Option<mpsc::Sender<ReadJob>>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    batches: AtomicU64,
    requests: AtomicU64,
    rows: AtomicU64,
    fallbacks: AtomicU64,
}

const LIST_MESSAGES_SQL: &str = "SELECT m.messageId, m.body, m.sender, m.created_at, m.updated_at \
     FROM messageBox b JOIN messages m ON m.messageBoxId = b.messageBoxId \
     WHERE b.identityKey = ?1 AND b.type = ?2 AND m.recipient = ?1 \
     ORDER BY m.created_at, m.messageId LIMIT ?3 OFFSET ?4";

fn gone() -> StoreError {
    StoreError::Unavailable("the SQLite worker has stopped".into())
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
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
        configure(&writer_conn)?;
        if !memory {
            // Before any reader opens, so every connection sees WAL.
            let mode: String = writer_conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(path, mode, "SQLite did not switch to WAL mode");
            }
            writer_conn.pragma_update(None, "synchronous", "NORMAL")?;
        }

        let queue = options.max_queued_inserts.max(1);
        let stats = Arc::new(Stats::default());
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
                configure(&conn)?;
                conn.pragma_update(None, "query_only", "ON")?;
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("messagebox-sqlite-r{n}"))
                    .spawn(move || reader_main(conn, rx))
                    .map_err(|e| StoreError::Config(format!("cannot start an SQLite reader thread: {e}")))?;
            }
            Some(tx)
        };

        let (tx, rx) = mpsc::channel(queue);
        let writer =
            Writer { conn: writer_conn, rx, max_batch_rows: options.max_batch_rows.max(1), stats: stats.clone() };
        std::thread::Builder::new()
            .name("messagebox-sqlite-w".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Config(format!("cannot start the SQLite writer thread: {e}")))?;
        let reader_threads = if memory { 0 } else { options.sqlite_readers.max(1) };
        tracing::info!(path, reader_threads, max_batch_rows = options.max_batch_rows.max(1), "SQLite store ready");
        Ok(SqliteStore { writer: tx, readers, stats })
    }

    /// Counters of the group-commit writer.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            requests: self.stats.requests.load(Ordering::Relaxed),
            rows: self.stats.rows.load(Ordering::Relaxed),
            fallbacks: self.stats.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// Runs `f` on a reader connection (the writer's for `:memory:`).
    fn read<T, F>(&self, f: F) -> StoreFuture<'_, T>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = move |conn: &Connection| {
            let _ = reply.send(f(conn));
        };
        Box::pin(async move {
            match &self.readers {
                Some(readers) => readers.send(Box::new(job)).await.map_err(|_| gone())?,
                None => {
                    let job: WriteJob = Box::new(move |conn: &mut Connection| job(conn));
                    self.writer.send(WriterMsg::Job(job)).await.map_err(|_| gone())?
                }
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
        let job: WriteJob = Box::new(move |conn: &mut Connection| {
            let _ = reply.send(f(conn));
        });
        Box::pin(async move {
            self.writer.send(WriterMsg::Job(job)).await.map_err(|_| gone())?;
            answer.await.map_err(|_| gone())?
        })
    }
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

struct Pending {
    rows: Vec<NewMessage>,
    reply: oneshot::Sender<Result<Vec<InsertOutcome>, StoreError>>,
}

struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<WriterMsg>,
    max_batch_rows: usize,
    stats: Arc<Stats>,
}

impl Writer {
    fn run(mut self) {
        let mut held: Option<WriterMsg> = None;
        while let Some(msg) = held.take().or_else(|| self.rx.blocking_recv()) {
            match msg {
                WriterMsg::Job(job) => job(&mut self.conn),
                WriterMsg::Flush(done) => {
                    let _ = done.send(());
                }
                WriterMsg::Insert { rows, reply } => {
                    let mut count = rows.len();
                    let mut batch = vec![Pending { rows, reply }];
                    while count < self.max_batch_rows {
                        match self.rx.try_recv() {
                            Ok(WriterMsg::Insert { rows, reply }) => {
                                count += rows.len();
                                batch.push(Pending { rows, reply });
                            }
                            // Keep queue order: commit the batch, then run this.
                            Ok(other) => {
                                held = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit(batch);
                }
            }
        }
    }

    fn commit(&mut self, batch: Vec<Pending>) {
        self.stats.requests.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let all: Vec<&NewMessage> = batch.iter().flat_map(|p| p.rows.iter()).collect();
        match self.write(&all) {
            Ok(outcomes) => {
                let mut outcomes = outcomes.into_iter();
                for p in batch {
                    let mine = outcomes.by_ref().take(p.rows.len()).collect();
                    let _ = p.reply.send(Ok(mine));
                }
            }
            Err(e) if batch.len() > 1 => {
                tracing::warn!(error = %e, requests = batch.len(), "group-committed insert failed; retrying each request alone");
                self.stats.fallbacks.fetch_add(1, Ordering::Relaxed);
                for p in batch {
                    let rows: Vec<&NewMessage> = p.rows.iter().collect();
                    let _ = p.reply.send(self.write(&rows).map_err(StoreError::from));
                }
            }
            Err(e) => {
                let e = StoreError::from(e);
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// One transaction: per row, find or create its box, then `INSERT OR IGNORE`, whose
    /// change count is the row's outcome (rows run in order, so a later duplicate within the
    /// batch is seen as one).
    fn write(&mut self, rows: &[&NewMessage]) -> Result<Vec<InsertOutcome>, rusqlite::Error> {
        let ts = now();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut out = Vec::with_capacity(rows.len());
        {
            let mut boxes: HashMap<(&str, &str), i64> = HashMap::new();
            let mut find =
                tx.prepare_cached("SELECT messageBoxId FROM messageBox WHERE identityKey = ?1 AND type = ?2")?;
            let mut create = tx.prepare_cached(
                "INSERT INTO messageBox (type, identityKey, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
            )?;
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO messages (messageId, messageBoxId, sender, recipient, body, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
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
                    insert.execute(params![row.message_id, box_id, row.sender, row.recipient, row.body, ts])?;
                out.push(if changed == 1 { InsertOutcome::Inserted } else { InsertOutcome::Duplicate });
            }
        }
        tx.commit()?;
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.rows.fetch_add(rows.len() as u64, Ordering::Relaxed);
        Ok(out)
    }
}

fn list(n: usize) -> String {
    let mut s = String::with_capacity(n * 2);
    for i in 0..n {
        s.push_str(if i == 0 { "?" } else { ",?" });
    }
    s
}

/// The fee rule that applies, as in the MySQL backend: sender-specific first, else the
/// newest box-wide rule.
fn lookup_fee(conn: &Connection, recipient: &str, sender: &str, message_box: &str) -> Result<Option<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT recipient_fee FROM message_permissions \
         WHERE recipient = ?1 AND message_box = ?2 AND (sender = ?3 OR sender IS NULL) \
         ORDER BY sender IS NULL, id DESC LIMIT 1",
    )?;
    Ok(stmt.query_row(params![recipient, message_box, sender], |r| r.get(0)).optional()?)
}

const PERMISSION_COLUMNS: &str = "sender, message_box, recipient_fee, created_at, updated_at";

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
    let filter = if only_active { " AND active = 1" } else { "" };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, device_id, platform, fcm_token, active, created_at, updated_at, last_used \
         FROM device_registrations WHERE identity_key = ?1{filter} ORDER BY updated_at DESC, id DESC LIMIT ?2"
    ))?;
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

impl Backend for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn migrate(&self) -> StoreFuture<'_, MigrationReport> {
        self.write(migrate::run_sqlite)
    }

    fn delivery_fee(&self, message_box: &str) -> StoreFuture<'_, Option<i64>> {
        let message_box = message_box.to_string();
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT delivery_fee FROM server_fees WHERE message_box = ?1 LIMIT 1")?;
            Ok(stmt.query_row([message_box], |r| r.get(0)).optional()?)
        })
    }

    fn recipient_fees(
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
            // process, so no duplicate from here), then read what applies now.
            self.write(move |conn| {
                let ts = now();
                let mut fees = Vec::with_capacity(recipients.len());
                for (recipient, fee) in recipients.iter().zip(found) {
                    if let Some(fee) = fee {
                        fees.push(fee);
                        continue;
                    }
                    let inserted = conn.prepare_cached(
                        "INSERT INTO message_permissions (recipient, sender, message_box, recipient_fee, created_at, updated_at) \
                         SELECT ?1, NULL, ?2, ?3, ?4, ?4 WHERE NOT EXISTS (SELECT 1 FROM message_permissions \
                         WHERE recipient = ?1 AND message_box = ?2 AND sender IS NULL)",
                    )?
                    .execute(params![recipient, message_box, default_fee, ts])?;
                    if inserted == 1 {
                        fees.push(default_fee);
                    } else {
                        fees.push(lookup_fee(conn, recipient, &sender, &message_box)?.unwrap_or(default_fee));
                    }
                }
                Ok(fees)
            })
            .await
        })
    }

    fn insert_messages(&self, messages: Vec<NewMessage>) -> StoreFuture<'_, Vec<InsertOutcome>> {
        Box::pin(async move {
            if messages.is_empty() {
                return Ok(Vec::new());
            }
            let (reply, answer) = oneshot::channel();
            self.writer.send(WriterMsg::Insert { rows: messages, reply }).await.map_err(|_| gone())?;
            answer.await.map_err(|_| gone())?
        })
    }

    fn list_messages(
        &self,
        recipient: &str,
        box_type: &str,
        limit: u32,
        offset: u64,
    ) -> StoreFuture<'_, Vec<StoredMessage>> {
        let (recipient, box_type) = (recipient.to_string(), box_type.to_string());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(LIST_MESSAGES_SQL)?;
            let offset = i64::try_from(offset).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![recipient, box_type, limit, offset], |r| {
                Ok(StoredMessage {
                    message_id: r.get(0)?,
                    body: r.get(1)?,
                    sender: r.get(2)?,
                    created_at: r.get(3)?,
                    updated_at: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn acknowledge(&self, recipient: &str, message_ids: &[String]) -> StoreFuture<'_, u64> {
        let (recipient, ids) = (recipient.to_string(), message_ids.to_vec());
        self.write(move |conn| {
            if ids.is_empty() {
                return Ok(0);
            }
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut deleted = 0;
            for chunk in ids.chunks(MAX_LIST) {
                let sql = format!("DELETE FROM messages WHERE recipient = ? AND messageId IN ({})", list(chunk.len()));
                let params = std::iter::once(recipient.as_str()).chain(chunk.iter().map(String::as_str));
                deleted += tx.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(params))? as u64;
            }
            tx.commit()?;
            Ok(deleted)
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
                conn.prepare_cached(
                    "UPDATE device_registrations SET last_used = ?1, updated_at = ?1 WHERE fcm_token = ?2",
                )?
                .execute(params![ts, fcm_token])?;
            }
            if deactivate {
                conn.prepare_cached(
                    "UPDATE device_registrations SET active = 0, updated_at = ?1 WHERE fcm_token = ?2",
                )?
                .execute(params![ts, fcm_token])?;
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
                .prepare_cached(
                    "SELECT id FROM message_permissions WHERE recipient = ?1 AND message_box = ?2 AND sender IS NULL \
                     ORDER BY id DESC LIMIT 1",
                )?
                .query_row(params![recipient, message_box], |r| r.get(0))
                .optional()?;
            match newest {
                Some(id) => tx
                    .prepare_cached("UPDATE message_permissions SET recipient_fee = ?1, updated_at = ?2 WHERE id = ?3")?
                    .execute(params![fee, ts, id])?,
                None => tx
                    .prepare_cached(
                        "INSERT INTO message_permissions (recipient, sender, message_box, recipient_fee, created_at, updated_at) \
                         VALUES (?1, NULL, ?2, ?3, ?4, ?4)",
                    )?
                    .execute(params![recipient, message_box, fee, ts])?,
            };
            tx.commit()?;
            Ok(())
        })
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
                    .prepare_cached(&format!(
                        "SELECT {PERMISSION_COLUMNS} FROM message_permissions \
                         WHERE recipient = ?1 AND message_box = ?2 AND sender = ?3 ORDER BY id DESC LIMIT 1"
                    ))?
                    .query_row(params![recipient, message_box, sender], permission)
                    .optional()?,
                None => conn
                    .prepare_cached(&format!(
                        "SELECT {PERMISSION_COLUMNS} FROM message_permissions \
                         WHERE recipient = ?1 AND message_box = ?2 AND sender IS NULL ORDER BY id DESC LIMIT 1"
                    ))?
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
            let dir = if created_asc { "ASC" } else { "DESC" };
            // `?2 IS NULL` keeps one statement shape for "all boxes" and "one box".
            let filter = "recipient = ?1 AND (?2 IS NULL OR message_box = ?2)";
            let total: i64 = conn
                .prepare_cached(&format!("SELECT COUNT(*) FROM message_permissions WHERE {filter}"))?
                .query_row(params![recipient, message_box], |r| r.get(0))?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PERMISSION_COLUMNS} FROM message_permissions WHERE {filter} \
                 ORDER BY message_box ASC, (sender IS NOT NULL) ASC, created_at {dir}, id {dir} LIMIT ?3 OFFSET ?4"
            ))?;
            let offset = i64::try_from(offset).unwrap_or(i64::MAX);
            let page = stmt
                .query_map(params![recipient, message_box, limit, offset], permission)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((page, total.max(0) as u64))
        })
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let (done, finished) = oneshot::channel();
            self.writer.send(WriterMsg::Flush(done)).await.map_err(|_| gone())?;
            finished.await.map_err(|_| gone())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    /// A cached statement is reused as is when its parameters change (see [`configure`]).
    #[test]
    fn rebinding_does_not_reprepare() {
        let mut conn = Connection::open_in_memory().unwrap();
        configure(&conn).unwrap();
        super::super::migrate::run_sqlite(&mut conn).unwrap();
        conn.execute(
            "INSERT INTO messageBox (identityKey, type, created_at, updated_at) VALUES ('k', 'inbox', 0, 0)",
            [],
        )
        .unwrap();
        for i in 0..20i64 {
            let mut stmt = conn.prepare_cached(LIST_MESSAGES_SQL).unwrap();
            let rows: Vec<String> =
                stmt.query_map(params!["k", "inbox", 10 + i, i], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
            assert!(rows.is_empty());
            assert_eq!(stmt.get_status(StatementStatus::RePrepare), 0, "round {i}");
        }
    }
}
