//! Helpers shared by the integration tests: one module, included by each test binary with
//! `mod common;`.
//!
//! * [`db`]: a throwaway database per test, on every backend ([`TestDb`], [`with_store`]).
//! * [`node`]: node children driving the real npm packages ([`node::run_script`]).
//! * [`original`]: a database as the TypeScript server leaves it ([`create_original`]).
//! * [`payments`]: delivery payments built as the JS client builds them, and a mock wallet.
//! * [`fleet`]: in-process nodes of a fleet on one MySQL and one Redis, questions to Redis
//!   about subscriptions, the JS clients run as node scripts.
//! * [`live`]: a live-channel client that reads in the background, and its frame helpers.
//! * [`process`]: the binary in a child process ([`process::Proc`]), a private MariaDB a test
//!   can stop ([`process::PrivateMariaDb`]), a private Redis ([`process::PrivateRedis`]), a
//!   plain GET ([`process::get`]).
//! * [`server`]: a real server in-process on loopback and clients for it ([`TestServer`]),
//!   plus [`assert_error`], [`key`] and [`free_port`].
//!
//! ```ignore
//! mod common;
//! use common::{Kind, TestDb, TestServer};
//!
//! // One database per test; `None` means "MySQL not configured, skipped" (already logged).
//! let Some(db) = TestDb::new(Kind::Mysql) else { return };
//! let store = messagebox::store::open(&db.url, &Default::default()).await?;
//!
//! // Or let the harness do it: fresh database, store opened and migrated, flushed at the end.
//! common::with_store(Kind::SqliteFile, Default::default(), |db, store| async move { /* … */ });
//!
//! // A server on that database, and a client that has done the BRC-103 handshake on first use.
//! let server = TestServer::start(&db.url, &[]).await;
//! let mut client = server.client();
//! ```

// Each test binary uses a different part of this module (and of its re-exports).
#![allow(dead_code, unused_imports, unused_macros)]

pub mod db;
pub mod fleet;
pub mod live;
pub mod node;
pub mod original;
pub mod payments;
pub mod process;
pub mod proxy;
pub mod server;

pub use db::{mysql_server_url, run_isolated, with_store, Kind, TestDb, MYSQL_URL_ENV, REQUIRE_ALL_ENV};
pub use original::{create_original, KNEX_NAMES, ORIGINAL_DDL};
pub use server::{assert_error, free_port, key, TestServer};

/// Runs `$body` once per backend, as the tests `$name::sqlite` and `$name::mysql` (skipped,
/// or failed under `MESSAGEBOX_REQUIRE_ALL=1`, without MySQL). `$body` is an async fn taking
/// the database URL as `&str`, or with `db` after it, the [`TestDb`] itself. Use with
/// `use common::on_both_stores;`.
macro_rules! on_both_stores {
    ($name:ident, $body:ident, db) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::common::TestDb::new(super::common::Kind::SqliteFile).unwrap();
                super::$body(&db).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                let Some(db) = super::common::TestDb::new(super::common::Kind::Mysql) else { return };
                super::$body(&db).await;
            }
        }
    };
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::common::TestDb::new(super::common::Kind::SqliteFile).unwrap();
                super::$body(&db.url).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                let Some(db) = super::common::TestDb::new(super::common::Kind::Mysql) else { return };
                super::$body(&db.url).await;
            }
        }
    };
}
pub(crate) use on_both_stores;
