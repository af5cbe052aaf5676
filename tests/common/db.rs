//! A throwaway database per test, on every backend.
//!
//! * MySQL comes from `MESSAGEBOX_TEST_MYSQL_URL` (a server URL such as
//!   `mysql://root@127.0.0.1:3306/`; any database in its path is replaced). Each [`TestDb`]
//!   creates its own database `mbtest_<pid>_<n>` and drops it when dropped. When the variable
//!   is unset MySQL cases are skipped with a loud message, unless `MESSAGEBOX_REQUIRE_ALL=1`
//!   (CI), which makes them panic instead.
//! * SQLite: `Kind::SqliteFile` is a fresh file in the temp directory, removed on drop;
//!   `Kind::SqliteMemory` is `sqlite::memory:` (every `open` of it is a new, private database).
//! * [`TestDb::exec`] / [`TestDb::query`] run raw SQL beside the store (MySQL and SQLite files;
//!   an in-memory database has no second connection).

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use messagebox::store::{self, Store, StoreOptions};
use mysql_async::prelude::Queryable;

/// The MySQL server for tests, e.g. `mysql://root@127.0.0.1:3306/`.
pub const MYSQL_URL_ENV: &str = "MESSAGEBOX_TEST_MYSQL_URL";
/// Set to `1` to make a missing MySQL a failure instead of a skip.
pub const REQUIRE_ALL_ENV: &str = "MESSAGEBOX_REQUIRE_ALL";

/// Which backend a [`TestDb`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    SqliteMemory,
    SqliteFile,
    Mysql,
}

impl Kind {
    /// `sqlite_memory`, `sqlite_file`, `mysql` (the test-function names the macros use).
    pub fn from_name(name: &str) -> Kind {
        match name {
            "sqlite_memory" => Kind::SqliteMemory,
            "sqlite_file" => Kind::SqliteFile,
            "mysql" => Kind::Mysql,
            other => panic!("unknown backend kind {other}"),
        }
    }

    pub fn is_mysql(self) -> bool {
        self == Kind::Mysql
    }
}

/// A database that exists for one test.
pub struct TestDb {
    /// What to pass to `messagebox::store::open`.
    pub url: String,
    pub kind: Kind,
    /// The MySQL database name, or the SQLite file name.
    pub name: String,
    /// MySQL: the server URL without a database (for creating and dropping).
    server_url: Option<String>,
    file: Option<PathBuf>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn unique_name() -> String {
    format!("mbtest_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Runs `f`'s future to completion on a fresh runtime on its own thread (usable from sync
/// code and from inside another runtime alike).
pub fn run_isolated<T, Fut>(f: impl FnOnce() -> Fut + Send + 'static) -> T
where
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("test runtime");
        rt.block_on(f())
    })
    .join()
    .expect("isolated task panicked")
}

/// `mysql://u@h:p/anything?x=y` → (`mysql://u@h:p`, `?x=y`).
fn split_server_url(url: &str) -> (String, String) {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let host_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[host_start..].find('/').map_or(base.len(), |i| host_start + i);
    (base[..host_end].to_string(), query)
}

impl TestDb {
    /// A fresh database of `kind`; `None` when MySQL is not configured (and not required).
    pub fn new(kind: Kind) -> Option<TestDb> {
        match kind {
            Kind::SqliteMemory => Some(TestDb {
                url: "sqlite::memory:".into(),
                kind,
                name: ":memory:".into(),
                server_url: None,
                file: None,
            }),
            Kind::SqliteFile => {
                let name = format!("{}.sqlite3", unique_name());
                let path = std::env::temp_dir().join(&name);
                let _ = std::fs::remove_file(&path);
                Some(TestDb {
                    url: format!("sqlite://{}", path.display()),
                    kind,
                    name,
                    server_url: None,
                    file: Some(path),
                })
            }
            Kind::Mysql => {
                let server = mysql_server_url()?;
                let (base, query) = split_server_url(&server);
                let name = unique_name();
                let admin = format!("{base}/{query}");
                let create = format!("CREATE DATABASE `{name}`");
                run_isolated(move || async move {
                    let mut conn = mysql_async::Conn::from_url(admin).await.expect("connect to the test MySQL server");
                    conn.query_drop(create).await.expect("create the test database");
                    conn.disconnect().await.ok();
                });
                Some(TestDb {
                    url: format!("{base}/{name}{query}"),
                    kind,
                    name,
                    server_url: Some(format!("{base}/{query}")),
                    file: None,
                })
            }
        }
    }

    /// The SQLite file, if this is one.
    pub fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    /// Opens a store on this database and migrates it.
    pub async fn open(&self, options: &StoreOptions) -> Store {
        let store = store::open(&self.url, options).await.unwrap_or_else(|e| panic!("open {}: {e}", self.url));
        store.migrate().await.unwrap_or_else(|e| panic!("migrate {}: {e}", self.url));
        store
    }

    /// Runs raw SQL (several `;`-separated statements allowed).
    pub async fn exec(&self, sql: &str) {
        match self.kind {
            Kind::Mysql => {
                let mut conn = mysql_async::Conn::from_url(self.url.as_str()).await.expect("connect");
                conn.query_drop("SET time_zone = '+00:00'").await.expect("time zone");
                conn.query_drop(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                conn.disconnect().await.ok();
            }
            Kind::SqliteFile => {
                let conn = rusqlite::Connection::open(self.file().unwrap()).expect("open sqlite");
                conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
                conn.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            Kind::SqliteMemory => panic!("raw SQL needs a file or MySQL database"),
        }
    }

    /// Runs a raw query; every value as text (`None` for NULL).
    pub async fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self.kind {
            Kind::Mysql => {
                let mut conn = mysql_async::Conn::from_url(self.url.as_str()).await.expect("connect");
                conn.query_drop("SET time_zone = '+00:00'").await.expect("time zone");
                let rows: Vec<mysql_async::Row> = conn.query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                conn.disconnect().await.ok();
                rows.into_iter()
                    .map(|r| {
                        r.unwrap()
                            .into_iter()
                            .map(|v| match v {
                                mysql_async::Value::NULL => None,
                                mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                                other => Some(other.as_sql(true).trim_matches('\'').to_string()),
                            })
                            .collect()
                    })
                    .collect()
            }
            Kind::SqliteFile => {
                let conn = rusqlite::Connection::open(self.file().unwrap()).expect("open sqlite");
                let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = stmt.column_count();
                let rows = stmt
                    .query_map([], |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => None,
                                    rusqlite::types::ValueRef::Integer(i) => Some(i.to_string()),
                                    rusqlite::types::ValueRef::Real(f) => Some(f.to_string()),
                                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                                        Some(String::from_utf8_lossy(t).into_owned())
                                    }
                                })
                            })
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .unwrap();
                rows.collect::<rusqlite::Result<_>>().unwrap()
            }
            Kind::SqliteMemory => panic!("raw SQL needs a file or MySQL database"),
        }
    }

    /// The first column of the first row of `sql`.
    pub async fn scalar(&self, sql: &str) -> Option<String> {
        self.query(sql).await.into_iter().next().and_then(|r| r.into_iter().next()).flatten()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(path) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
        if let Some(server) = self.server_url.clone() {
            let drop = format!("DROP DATABASE IF EXISTS `{}`", self.name);
            run_isolated(move || async move {
                match mysql_async::Conn::from_url(server).await {
                    Ok(mut conn) => {
                        if let Err(e) = conn.query_drop(drop).await {
                            eprintln!("could not drop a test database: {e}");
                        }
                        conn.disconnect().await.ok();
                    }
                    Err(e) => eprintln!("could not connect to drop a test database: {e}"),
                }
            });
        }
    }
}

/// The MySQL server URL, `None` (with a loud note) when unset, a panic when required.
pub fn mysql_server_url() -> Option<String> {
    match std::env::var(MYSQL_URL_ENV) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var(REQUIRE_ALL_ENV).is_ok_and(|v| v == "1") {
                panic!("{MYSQL_URL_ENV} is not set but {REQUIRE_ALL_ENV}=1: MySQL tests must run");
            }
            eprintln!(
                "\n!!!!!!!! SKIPPED a MySQL test: set {MYSQL_URL_ENV} (e.g. mysql://root@127.0.0.1:3306/) to run it !!!!!!!!\n"
            );
            None
        }
    }
}

/// Runs `case` against a fresh database of `kind` with a migrated store, on a
/// current_thread runtime (like a server core), then flushes the store. Skips (returns)
/// when `kind` is MySQL and no server is configured.
pub fn with_store<F, Fut>(kind: Kind, options: StoreOptions, case: F)
where
    F: FnOnce(Arc<TestDb>, Store) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(db) = TestDb::new(kind) else {
        return;
    };
    let db = Arc::new(db);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("test runtime");
    rt.block_on(async {
        let store = db.open(&options).await;
        case(db.clone(), store.clone()).await;
        store.flush().await.expect("flush");
    });
}
