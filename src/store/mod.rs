//! Persistence: the [`Backend`] interface every route talks to, its two implementations
//! (MySQL/MariaDB for production, an embedded SQLite file as the default) and the
//! migrations that create or adopt the original server's schema. What the backends share
//! lives once: the group-commit writer (`batch`), the default-fee rule (`fees`), the fee
//! cache ([`fee_cache`]), the SQL both dialects read alike (`sql`) and the error type with its
//! classes ([`StoreError`]).
//!
//! Route handlers run on the per-core runtimes and must never wait there for long. Database
//! work stays on the core that received the request where it can ([`percore`]): MySQL
//! operations run on a small pool of the core, SQLite's short reads on a read connection of
//! the core, synchronously and within a time budget. Message inserts take one hand-off that
//! batches: the group-commit writer on the store's own thread (MySQL: a tokio runtime thread
//! that also serves callers that are no core; SQLite: the writer thread, which performs every
//! write, beside reader threads for reads from elsewhere). Every store future is awaitable
//! from any runtime.
//!
//! Comparisons stay in SQL so MySQL's case-insensitive collations behave as they did for
//! the original (`'INBOX'` finds the `inbox` box, ids `abc` and `ABC` collide).

use crate::metrics::HistogramSnapshot;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

mod batch;
mod error;
pub mod fee_cache;
mod fees;
pub mod migrate;
pub mod mysql;
pub mod percore;
pub mod quota;
mod sql;
pub mod sqlite;
mod usage;

pub use error::{DatabaseError, ErrorClass, ErrorCode, StoreError};

/// A boxed future returned by the backends (awaitable from any runtime).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Seconds since the Unix epoch, UTC. The schema has second precision.
pub type Timestamp = i64;

/// One message to store for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Stored as given (the original validates trimmed ids but stores them untrimmed).
    pub message_id: String,
    /// The box owner and `messages.recipient`.
    pub recipient: String,
    /// The box name (`messageBox.type`); the box row is created if missing.
    pub box_type: String,
    pub sender: String,
    /// The stored body string (the HTTP envelope or the raw WebSocket body). Shared: the
    /// rows of one multi-recipient send hold one copy of a body (D1).
    pub body: Arc<str>,
}

/// Whether a message row was written or ignored because its `messageId` already existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted,
    Duplicate,
}

/// Who a stored messageId belongs to (the duplicate-id rule, D8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageOwner {
    /// As stored (the lookup matched it in SQL collation, so its case may differ).
    pub message_id: String,
    pub sender: String,
    pub recipient: String,
}

/// A message as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub message_id: String,
    pub body: String,
    pub sender: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl StoredMessage {
    /// The bytes of its strings, a lower bound of its listing item's JSON (which quotes them).
    pub fn raw_len(&self) -> u64 {
        (self.message_id.len() + self.body.len() + self.sender.len()) as u64
    }
}

/// How much of a box one [`Store::list_page`] call may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteBound {
    /// The rows stop after the first one at which their `raw_len` sum exceeds this.
    pub max_bytes: u64,
    /// Rows one query may ask for. SQLite steps its rows lazily and stops at `max_bytes`; a
    /// MySQL result must be read to its end, so the rows it asked for past the cut are read
    /// and dropped: this bounds that waste (`domain::Limits::list_read_ahead`).
    pub read_ahead: u32,
}

/// The running sum of a [`Store::list_page`] call's rows against its [`ByteBound`].
#[derive(Debug)]
pub(crate) struct PageTally {
    left: Option<u64>,
}

impl PageTally {
    pub(crate) fn new(bound: Option<ByteBound>) -> PageTally {
        PageTally { left: bound.map(|b| b.max_bytes) }
    }

    /// Counts a kept row; `false` once the rows' sum exceeds `max_bytes` (read no more).
    pub(crate) fn more_after(&mut self, m: &StoredMessage) -> bool {
        match self.left.as_mut() {
            None => true,
            Some(left) => match left.checked_sub(m.raw_len()) {
                Some(rest) => {
                    *left = rest;
                    true
                }
                None => false,
            },
        }
    }
}

/// A row of `message_permissions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    /// `None` for a box-wide rule.
    pub sender: Option<String>,
    pub message_box: String,
    pub recipient_fee: i64,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

/// A row of `device_registrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: u64,
    pub device_id: Option<String>,
    pub platform: Option<String>,
    /// The full token; the route masks it.
    pub fcm_token: String,
    pub active: bool,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
    pub last_used: Option<Timestamp>,
}

/// A device registration request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRegistration {
    pub identity_key: String,
    /// Already trimmed.
    pub fcm_token: String,
    /// Already trimmed; `None` stores NULL (also when re-registering).
    pub device_id: Option<String>,
    pub platform: Option<String>,
}

/// Fees that apply to one send: the server's delivery fee for the box and each
/// recipient's fee for this sender, in recipient order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fees {
    pub delivery: i64,
    pub recipients: Vec<i64>,
}

/// A row of `server_fees`: the server's delivery fee for one box (operators set these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFee {
    pub message_box: String,
    /// Satoshis; the column is a signed 32-bit `int`.
    pub delivery_fee: i64,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
}

/// What a migration run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// The database already had the original's schema (knex_migrations with all five).
    pub adopted_existing: bool,
    /// Names of the steps applied in this run.
    pub applied: Vec<String>,
}

/// The operations the routes need. Every method is one logical operation with the
/// semantics of `spec/ts-server.md` §3–§6 except where noted.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs (`mysql`, `sqlite`).
    fn kind(&self) -> &'static str;

    /// Creates or adopts the schema (see [`migrate`]). Idempotent.
    fn migrate(&self) -> StoreFuture<'_, MigrationReport>;

    /// `server_fees.delivery_fee` for the box (exact match in SQL collation), `None` if no row.
    /// Served from the [`fee_cache`] when it holds the box (at most
    /// [`fee_cache::DELIVERY_FEE_MAX_AGE`] old).
    fn delivery_fee(&self, message_box: &str) -> StoreFuture<'_, Option<i64>>;

    /// Every `server_fees` row, ordered by box (in SQL collation). For operators
    /// (`messagebox fees list`); the routes read one box with [`Backend::delivery_fee`].
    fn server_fees(&self) -> StoreFuture<'_, Vec<ServerFee>>;

    /// Sets the box's delivery fee: updates its row (the box as the collation matches it, so
    /// `INBOX` updates `inbox`) with `updated_at` = now, or inserts one. Returns the previous
    /// fee, `None` for a new box; read and upsert are one transaction. The column is a signed
    /// 32-bit `int`, hence `i32`; that fees are not negative is the caller's rule. This
    /// process's cached delivery fees are forgotten once it committed; other processes' expire
    /// within [`fee_cache::DELIVERY_FEE_SETTLES`] (`messagebox fees set` waits that long).
    fn set_delivery_fee(&self, message_box: &str, fee: i32) -> StoreFuture<'_, Option<i64>>;

    /// The fee each recipient charges `sender` for `message_box`: the sender-specific rule
    /// if one exists, else the box-wide rule (the newest row if duplicates exist), else a
    /// box-wide row with `default_fee` is inserted and `default_fee` returned. Served from the
    /// [`fee_cache`] for the recipients it holds; the others are resolved in one round trip
    /// where possible.
    fn recipient_fees(
        &self,
        sender: &str,
        message_box: &str,
        recipients: &[String],
        default_fee: i64,
    ) -> StoreFuture<'_, Vec<i64>>;

    /// Stores messages, creating missing boxes. Concurrent calls are group-committed: many
    /// requests' rows go into one multi-row `INSERT IGNORE` in one transaction, with one
    /// upsert of the senders' usage (`store::usage`) for the rows really inserted, and each future
    /// resolves only after its batch committed. A duplicate `messageId` is ignored.
    fn insert_messages(&self, messages: Vec<NewMessage>) -> StoreFuture<'_, Vec<InsertOutcome>>;

    /// The stored rows whose messageId equals one of `message_ids` in SQL collation (MySQL's
    /// unique key ignores case: `squat-1` and `SQUAT-1` are one id), expired or not.
    fn message_owners(&self, message_ids: &[String]) -> StoreFuture<'_, Vec<MessageOwner>>;

    /// Claims a delivery payment's transaction for one send: inserts `txid` (display hex)
    /// into `payment_replays` with `expires_at` NULL, as the newer upstream records body
    /// payments (never swept). `true` when this call inserted it, `false` when it was there
    /// already: the payment was used before (by this server or one sharing the database).
    fn claim_payment(&self, txid: &str) -> StoreFuture<'_, bool>;

    /// Deletes a claim, for a send that stored nothing after claiming (see
    /// `domain::send`): the same payment may then be offered again.
    fn release_payment(&self, txid: &str) -> StoreFuture<'_, ()>;

    /// Unexpired messages of `recipient`'s box `box_type` ordered by `created_at`, then
    /// `messageId`; `limit`/`offset` page through them. No box → empty (the box is not created).
    ///
    /// With a [`ByteBound`], the rows stop after the first one at which their
    /// [`StoredMessage::raw_len`] sum exceeds its `max_bytes`: `/listMessages` passes what its
    /// byte budget allows, so a page is one call and holds at most the budget plus one message
    /// of stored rows, however full the box (`domain::MessageBox::list_into`).
    fn list_page(
        &self,
        recipient: &str,
        box_type: &str,
        limit: u32,
        offset: u64,
        bound: Option<ByteBound>,
    ) -> StoreFuture<'_, Vec<StoredMessage>>;

    /// [`Store::list_page`] without a byte bound.
    fn list_messages(
        &self,
        recipient: &str,
        box_type: &str,
        limit: u32,
        offset: u64,
    ) -> StoreFuture<'_, Vec<StoredMessage>> {
        self.list_page(recipient, box_type, limit, offset, None)
    }

    /// Deletes up to `batch` (`None`: all, in transactions of at most 10 000 rows) messages
    /// whose `expires_at` is at or before `now`, subtracting them from their senders' usage in
    /// the same transaction (`store::usage`); returns how many went (the retention sweeper, and the
    /// quota ledger before it confirms a sender's refusal).
    fn delete_expired(&self, now: Timestamp, batch: Option<u64>) -> StoreFuture<'_, u64>;

    /// What the storage quotas count ([`quota`]) for `identity` (compared in SQL collation):
    /// as a recipient, its rows unexpired at `now` and the UTF-8 bytes of their bodies; as a
    /// sender, its row of `messagebox_sender_usage` (`store::usage`: every stored row until it is
    /// deleted, expired or not; `now` is unused), zero without one.
    fn quota_usage(&self, scope: quota::Scope, identity: &str, now: Timestamp) -> StoreFuture<'_, quota::Usage>;

    /// The storage quotas and this process's ledger of what each identity stored
    /// ([`quota::Ledger`]); every send reserves in it before inserting.
    fn quotas(&self) -> &Arc<quota::Ledger>;

    /// Deletes `recipient`'s messages with these ids (any box, expired or not), subtracting
    /// them from their senders' usage in the same transaction; returns how many went.
    fn acknowledge(&self, recipient: &str, message_ids: &[String]) -> StoreFuture<'_, u64>;

    /// Upsert on `fcm_token`; returns the MySQL-style `insertId` (new id, the existing id
    /// when a row changed, 0 when nothing changed). SQLite returns the new id on insert and
    /// the existing id on every update (it cannot tell "unchanged").
    fn register_device(&self, reg: DeviceRegistration) -> StoreFuture<'_, u64>;

    /// All devices of an identity, newest `updated_at` first (ties: highest id first), at most
    /// [`MAX_DEVICES`].
    fn list_devices(&self, identity_key: &str) -> StoreFuture<'_, Vec<Device>>;

    /// Active devices of an identity (for push), at most [`MAX_DEVICES`].
    fn active_devices(&self, identity_key: &str) -> StoreFuture<'_, Vec<Device>>;

    /// After a push: success sets `last_used` and `updated_at` to now; `deactivate` sets
    /// `active = 0` and `updated_at` to now (as the original does). A token that is not
    /// registered is not an error.
    fn record_push(&self, fcm_token: &str, success: bool, deactivate: bool) -> StoreFuture<'_, ()>;

    /// Upsert a rule. Sender-specific rules update in place; box-wide rules (sender NULL)
    /// are upserted too (update the newest box-wide row, insert if none) — the original
    /// inserted a duplicate on every call. The recipient's cached fees are forgotten (in a
    /// fleet, on every node) before the future resolves ([`fee_cache`]).
    fn set_permission(&self, recipient: &str, sender: Option<&str>, message_box: &str, fee: i64)
        -> StoreFuture<'_, ()>;

    /// The exact rule (sender-specific, or box-wide when `sender` is `None`), no fallback and
    /// no auto-creation; box-wide duplicates: the newest.
    fn get_permission(
        &self,
        recipient: &str,
        sender: Option<&str>,
        message_box: &str,
    ) -> StoreFuture<'_, Option<Permission>>;

    /// A page of `recipient`'s rules, optionally for one box, ordered by `message_box` asc,
    /// box-wide rows first, then `created_at` (asc or desc); with the total count.
    fn list_permissions(
        &self,
        recipient: &str,
        message_box: Option<&str>,
        limit: u32,
        offset: u64,
        created_asc: bool,
    ) -> StoreFuture<'_, (Vec<Permission>, u64)>;

    /// The cache of [`Backend::delivery_fee`] and [`Backend::recipient_fees`] (a fleet node
    /// plugs its invalidation notices into it).
    fn fee_cache(&self) -> &Arc<fee_cache::FeeCache>;

    /// Waits until every accepted write is committed (graceful shutdown).
    fn flush(&self) -> StoreFuture<'_, ()>;

    /// Counters of the group-commit writer behind [`Backend::insert_messages`].
    fn stats(&self) -> WriterStats;

    /// One cheap round trip (`SELECT 1`) for the readiness probe; callers bound it with a
    /// timeout (a stopped database never answers).
    fn ping(&self) -> StoreFuture<'_, ()>;
}

/// Most devices one identity lists (a bound on a query the original left unbounded).
pub const MAX_DEVICES: u32 = 1000;

/// Counters of a backend's group-commit writer (for tests and metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct WriterStats {
    /// Committed insert batches; each is one transaction holding one or more requests.
    pub batches: u64,
    /// `insert_messages` calls the writer has answered.
    pub requests: u64,
    /// Message rows written or found duplicate in committed batches.
    pub rows: u64,
    /// Of `rows`, those written (not duplicates).
    pub inserted: u64,
    /// Batches redone row by row because the multi-row outcome was ambiguous (MySQL), or
    /// batches split into their requests after an error (both backends).
    pub fallbacks: u64,
    /// Rows per committed transaction.
    pub batch_rows: HistogramSnapshot,
    /// Time to write and commit each transaction, in seconds.
    pub commit_seconds: HistogramSnapshot,
    /// Operations other than message inserts that ran on the server core that asked for
    /// them ([`percore`]).
    pub on_core: u64,
    /// Operations other than message inserts handed to the store's own threads (callers
    /// that are no core; SQLite reads that gave up on the core).
    pub handed_off: u64,
}

impl Default for WriterStats {
    fn default() -> Self {
        WriterStats {
            batches: 0,
            requests: 0,
            rows: 0,
            inserted: 0,
            fallbacks: 0,
            batch_rows: HistogramSnapshot::empty(crate::metrics::histogram::BATCH_ROWS_BUCKETS, 1.0),
            commit_seconds: HistogramSnapshot::empty(crate::metrics::histogram::DURATION_BUCKETS, 1e-9),
            on_core: 0,
            handed_off: 0,
        }
    }
}

/// The store handle shared by every core.
pub type Store = Arc<dyn Backend>;

/// Opens the store named by a URL: `mysql://user:pass@host:port/db` (or `mariadb://…`;
/// mysql_async URL parameters allowed) or `sqlite://path` (`sqlite:///abs/path`,
/// `sqlite::memory:` for a private in-memory database). It does not migrate; call
/// [`Backend::migrate`]. A MySQL store checks that the server answers; an SQLite file is
/// opened (created if missing) right away, on the calling thread (startup only).
pub async fn open(url: &str, options: &StoreOptions) -> Result<Store, StoreError> {
    if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        Ok(Arc::new(mysql::MysqlStore::open(url, options).await?))
    } else if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        Ok(Arc::new(sqlite::SqliteStore::open(path, options)?))
    } else {
        Err(StoreError::Config(format!("unsupported database URL (use mysql://… or sqlite://…): {url}")))
    }
}

/// Tuning shared by both backends.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connect, pool-acquire and statement timeouts (`config.resources.database`). MySQL
    /// bounds every operation by them; SQLite uses the statement timeout as its busy timeout.
    pub timeouts: crate::limits::DatabaseLimits,
    /// `MESSAGE_BOX_RETENTION_DAYS`: a stored message's `expires_at` is its `created_at` plus
    /// this many days (`None`: NULL, never expires).
    pub retention_days: Option<u64>,
    /// The storage quotas sends are held to (`config.resources.messages`).
    pub quotas: quota::QuotaLimits,
    /// MySQL connections in all, split between the store thread and the server cores (see
    /// `mysql::split_pool`).
    pub pool_size: usize,
    /// Server cores that will use the store, each with a pool of its own (MySQL); 0 when no
    /// server runs on it (every operation then uses the store thread's pool).
    pub cores: usize,
    /// Most rows in one group-committed insert.
    pub max_batch_rows: usize,
    /// Most queued insert requests before callers wait (back-pressure). SQLite also bounds
    /// its queue of reads by this.
    pub max_queued_inserts: usize,
    /// Reader threads (one connection each) for an SQLite file; `:memory:` uses the
    /// writer's connection for everything.
    pub sqlite_readers: usize,
    /// Most recipient fees the [`fee_cache`] holds.
    pub fee_cache_entries: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            timeouts: crate::limits::ResourceLimits::default().database,
            retention_days: crate::limits::ResourceLimits::default().retention.days,
            quotas: quota::QuotaLimits::default(),
            pool_size: 8,
            cores: 0,
            max_batch_rows: 512,
            max_queued_inserts: 65_536,
            sqlite_readers: 2,
            fee_cache_entries: fee_cache::DEFAULT_ENTRIES,
        }
    }
}

/// Whether the database is reachable, as the store's operations find it: the first
/// operation that fails as unavailable logs one warning, the first that succeeds after it
/// logs one line saying the database is back. Requests in between are answered 503 without
/// a line each (an outage must not flood the log).
#[derive(Debug, Default)]
pub(crate) struct Health {
    down: std::sync::atomic::AtomicBool,
}

impl Health {
    /// Notes an operation's result.
    pub(crate) fn observe<T>(&self, backend: &str, result: &Result<T, StoreError>) {
        use std::sync::atomic::Ordering;
        match result {
            Err(e) if e.class() == ErrorClass::Unavailable && !self.down.swap(true, Ordering::AcqRel) => {
                tracing::warn!(backend, error = %e, "database unavailable: answering 503 until it recovers");
            }
            Ok(_) if self.down.load(Ordering::Acquire) && self.down.swap(false, Ordering::AcqRel) => {
                tracing::info!(backend, "database available again");
            }
            _ => {}
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.000Z`, as the original's JS `Date` values serialise.
///
/// Written digit by digit for years 0–9999 (two per listed message, so it shows in a list's
/// profile); other years take `format!`.
pub fn iso8601(ts: Timestamp) -> String {
    let (y, m, d, hh, mm, ss) = civil_from_timestamp(ts);
    if !(0..=9999).contains(&y) {
        return format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.000Z");
    }
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let y = y as u32;
    for (i, n) in [(0, y / 100), (2, y % 100), (5, m), (8, d), (11, hh), (14, mm), (17, ss)] {
        out[i] = b'0' + (n / 10) as u8;
        out[i + 1] = b'0' + (n % 10) as u8;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// A timestamp → (year, month, day, hour, minute, second), UTC.
pub(crate) fn civil_from_timestamp(ts: Timestamp) -> (i64, u32, u32, u32, u32, u32) {
    let (y, m, d) = civil_from_days(ts.div_euclid(86_400));
    let secs = ts.rem_euclid(86_400) as u32;
    (y, m, d, secs / 3600, (secs / 60) % 60, secs % 60)
}

/// (year, month, day, hour, minute, second), UTC → a timestamp (H. Hinnant's algorithm).
pub(crate) fn timestamp_from_civil(y: i64, m: u32, d: u32, hh: u32, mm: u32, ss: u32) -> Timestamp {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + i64::from(hh) * 3600 + i64::from(mm) * 60 + i64::from(ss)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `expires_at` of a message created at `created` under `retention_days`.
pub(crate) fn expiry(created: Timestamp, retention_days: Option<u64>) -> Option<Timestamp> {
    retention_days.map(|d| created.saturating_add(i64::try_from(d).unwrap_or(i64::MAX).saturating_mul(86_400)))
}

/// Now, in whole seconds (the schema's precision).
pub fn now() -> Timestamp {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A message for `r`'s inbox with this id.
    pub(crate) fn message(id: &str) -> NewMessage {
        NewMessage {
            message_id: id.into(),
            recipient: "r".into(),
            box_type: "inbox".into(),
            sender: "s".into(),
            body: "b".into(),
        }
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_764_750_896), "2025-12-03T08:34:56.000Z");
        assert_eq!(iso8601(2_147_483_647), "2038-01-19T03:14:07.000Z");
        // The digit-by-digit form is the formatted one, years 0–9999 and beyond.
        let formatted = |ts: Timestamp| {
            let (y, m, d, hh, mm, ss) = civil_from_timestamp(ts);
            format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.000Z")
        };
        for ts in (-62_200_000_000i64..253_500_000_000).step_by(7_919_993) {
            assert_eq!(iso8601(ts), formatted(ts), "{ts}");
        }
        assert_eq!(iso8601(-62_167_219_200), "0000-01-01T00:00:00.000Z");
        assert_eq!(iso8601(253_402_300_799), "9999-12-31T23:59:59.000Z");
        assert_eq!(iso8601(253_402_300_800), "10000-01-01T00:00:00.000Z");
    }

    #[test]
    fn civil_round_trips() {
        assert_eq!(timestamp_from_civil(2025, 12, 3, 8, 34, 56), 1_764_750_896);
        assert_eq!(timestamp_from_civil(2000, 2, 29, 0, 0, 0), 951_782_400);
        assert_eq!(civil_from_timestamp(1_764_750_896), (2025, 12, 3, 8, 34, 56));
        for ts in (-10_000_000_000i64..10_000_000_000).step_by(86_399_917) {
            let (y, m, d, hh, mm, ss) = civil_from_timestamp(ts);
            assert_eq!(timestamp_from_civil(y, m, d, hh, mm, ss), ts);
        }
    }
}
