//! Database work on the server core that received the request.
//!
//! A server core (`server`) is an OS thread running a tokio `current_thread` runtime of its
//! own. `server` marks its thread with [`enter`] when the core starts, and the returned
//! [`CoreScope`] closes what the stores opened on it when the core stops. On a marked thread
//! the backends do their work in place instead of handing it to their own threads:
//! * MySQL runs every operation but the inserts on a small pool created on the core's
//!   runtime (mysql_async connections belong to the runtime that created them, so each core
//!   needs its own); inserts still go to the group-commit writer, one hand-off that batches;
//! * SQLite runs the short indexed reads synchronously on a read connection of the core.
//!
//! A thread that is not marked (a multi-thread test runtime, the retention sweeper, admin
//! commands, the payments thread) is no core: its calls hop to the store's threads as before.
//! What a store keeps on a core is kept here per thread, keyed by the store's [`StoreId`],
//! so two stores in one process (tests) never share a connection. [`Placement`] counts where
//! each operation ran ([`super::WriterStats::on_core`] / [`super::WriterStats::handed_off`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How long a stopping core waits for a MySQL pool to close its connections (a database
/// that hangs must not hold up the shutdown; the connections are then just dropped).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Names one store instance for the per-core registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StoreId(u64);

impl StoreId {
    /// A new id, unique in this process.
    pub(crate) fn next() -> StoreId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        StoreId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What one store keeps on one core.
#[derive(Clone)]
pub(crate) enum Resource {
    /// A pool created on this core's runtime.
    Mysql(mysql_async::Pool),
    /// A read-only connection to the store's file; `None` when opening it failed (logged
    /// once; this core's reads then keep handing off).
    Sqlite(Option<Rc<rusqlite::Connection>>),
}

thread_local! {
    /// `Some` on a server core: the resources of each store used on it.
    static CORE: RefCell<Option<HashMap<StoreId, Resource>>> = const { RefCell::new(None) };
}

/// Marks the calling thread as a server core until the scope is closed or dropped. Call it
/// on the core's own thread, inside its runtime, before it serves anything.
pub fn enter() -> CoreScope {
    CORE.with(|c| *c.borrow_mut() = Some(HashMap::new()));
    CoreScope { closed: false }
}

/// The mark of a server core (see [`enter`]).
pub struct CoreScope {
    closed: bool,
}

impl CoreScope {
    /// Unmarks the thread and closes what the stores opened on it: MySQL pools disconnect
    /// (on this runtime, which their connections need), SQLite connections close.
    pub async fn close(mut self) {
        self.closed = true;
        let resources = CORE.with(|c| c.borrow_mut().take()).unwrap_or_default();
        for resource in resources.into_values() {
            if let Resource::Mysql(pool) = resource {
                match tokio::time::timeout(CLOSE_WAIT, pool.disconnect()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "closing a core's MySQL pool failed"),
                    Err(_) => tracing::debug!("a core's MySQL pool did not close in time; dropping it"),
                }
            }
        }
    }
}

impl Drop for CoreScope {
    fn drop(&mut self) {
        if !self.closed {
            // Not closed (the core's future was dropped): the connections just go.
            let _ = CORE.try_with(|c| c.borrow_mut().take());
        }
    }
}

/// `store`'s resource on this core, opened by `open` on first use. `None` off a core.
/// `open` must not call back into this module.
pub(crate) fn resource(store: StoreId, open: impl FnOnce() -> Resource) -> Option<Resource> {
    CORE.try_with(|c| {
        let mut c = c.borrow_mut();
        let map = c.as_mut()?;
        Some(map.entry(store).or_insert_with(open).clone())
    })
    .ok()
    .flatten()
}

/// Where a store's operations (other than message inserts) ran, for tests and metrics.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    on_core: AtomicU64,
    handed_off: AtomicU64,
}

impl Placement {
    pub(crate) fn count(&self, on_core: bool) {
        let counter = if on_core { &self.on_core } else { &self.handed_off };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `(on_core, handed_off)`.
    pub(crate) fn snapshot(&self) -> (u64, u64) {
        (self.on_core.load(Ordering::Relaxed), self.handed_off.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_core() -> bool {
        CORE.with(|c| c.borrow().is_some())
    }

    #[test]
    fn only_a_marked_thread_is_a_core_and_resources_are_per_store() {
        assert!(!on_core());
        let a = StoreId::next();
        let b = StoreId::next();
        assert_ne!(a, b);
        assert!(resource(a, || Resource::Sqlite(None)).is_none(), "off a core nothing opens");
        let scope = enter();
        assert!(on_core());
        let mut opened = 0;
        for _ in 0..3 {
            resource(a, || {
                opened += 1;
                Resource::Sqlite(None)
            })
            .unwrap();
        }
        resource(b, || {
            opened += 1;
            Resource::Sqlite(None)
        })
        .unwrap();
        assert_eq!(opened, 2, "opened once per store");
        // Another thread is no core.
        assert!(!std::thread::spawn(on_core).join().unwrap());
        drop(scope);
        assert!(!on_core());
    }
}
