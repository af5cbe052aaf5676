//! The fee cache: what [`Backend::delivery_fee`](super::Backend::delivery_fee) and
//! [`Backend::recipient_fees`](super::Backend::recipient_fees) read, served again without a
//! database round trip, and forgotten whenever it may have changed. Both backends hold one
//! ([`Backend::fee_cache`](super::Backend::fee_cache)) and route their fee reads and writes
//! through it, so every send path (HTTP, live, quotes) uses it alike.
//!
//! # Correctness
//!
//! A cached fee is the database's answer to a read that *started* at its `loaded` instant;
//! it is served until `loaded + max age` at most, and dropped earlier by an invalidation:
//!
//! - **Permissions** (`message_permissions`, max age [`PERMISSION_MAX_AGE`]): a rule written
//!   through this store ([`Backend::set_permission`](super::Backend::set_permission))
//!   invalidates every cached fee of its recipient (every box, every sender: a box-wide rule
//!   applies to all senders, and the box is compared in SQL collation, which the cache does
//!   not imitate) once the write has committed and before the write's future resolves. In a
//!   fleet the invalidation is also published to every node ([`FleetNotices`]); a node serves
//!   cached permissions only while it hears those notices, and forgets them all when it
//!   starts hearing again. When the notice cannot be published, the write's future resolves
//!   only after [`PERMISSION_MAX_AGE`], when no node can still hold an older entry.
//! - **Delivery fees** (`server_fees`, max age [`DELIVERY_FEE_MAX_AGE`]): a write through
//!   this store invalidates all of them at once; another process (`messagebox fees set`)
//!   waits [`DELIVERY_FEE_SETTLES`] after its commit before it reports success, by when every
//!   running server's entry of the box was read after the commit.
//! - A read that raced an invalidation is not cached: each shard has a generation, bumped by
//!   every invalidation, and a fill whose shard moved on since its read began is dropped.
//! - Negative answers are cached alike: a box without a `server_fees` row (`None`), and a
//!   recipient whose fee came from the default rule (the store wrote the box-wide default row).
//!
//! Recipients are compared ignoring ASCII case (the store's callers pass identity keys, hex);
//! boxes and senders exactly, so each spelling of a box is its own entry.
//!
//! # Shape and bound
//!
//! Each table is [`SHARDS`] shards, each a mutex over a small map, chosen by a hash of the
//! recipient (permissions) or of the box and the thread (delivery fees, which every send
//! needs: each core keeps its own copy): the two server cores meet only when they look up
//! the same recipient at once, for a few tens of nanoseconds. The bound ([`DEFAULT_ENTRIES`]
//! permission entries unless configured) is split evenly over the shards; a full shard drops
//! an arbitrary entry (in effect a random one) for the new one. Expired entries are dropped
//! when looked up.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::{StoreError, StoreFuture};

/// How long a cached recipient fee may be served at most: the bound on staleness when an
/// invalidation could not reach a node (a fleet whose broker failed unnoticed, a rule changed
/// with raw SQL, another server on the database without `REDIS_URL`). Each hot
/// (recipient, box, sender) costs one read per this interval.
pub const PERMISSION_MAX_AGE: Duration = Duration::from_secs(5);

/// How long a cached delivery fee may be served at most. Only operators change `server_fees`
/// (`messagebox fees set`, another process), so this is how long a change takes to reach
/// every running server: one read per box per second.
pub const DELIVERY_FEE_MAX_AGE: Duration = Duration::from_secs(1);

/// How long `messagebox fees set` waits after its commit before it reports success:
/// [`DELIVERY_FEE_MAX_AGE`] plus a margin for timer granularity and clocks of other hosts.
pub const DELIVERY_FEE_SETTLES: Duration = Duration::from_millis(1_100);

/// Permission entries a process holds at most by default: the (recipient, box, sender)
/// triples sending within [`PERMISSION_MAX_AGE`] (≈13,000 new pairs a second) fit; an entry
/// holds two identity keys and a box name, about 300 bytes, so ≈20 MB at the bound.
pub const DEFAULT_ENTRIES: usize = 65_536;

/// Delivery-fee entries: one per box name spelling in use. Senders choose box names, so this
/// is bounded too, at a size far above the few boxes a server charges for.
const DELIVERY_ENTRIES: usize = 4_096;

/// Shards per table (a power of two).
pub const SHARDS: usize = 64;

/// How a node tells the rest of its fleet that a recipient's rules changed (`fleet::fees`).
pub trait FleetNotices: Send + Sync + 'static {
    /// Publishes the change; `true` once the broker has taken it for every node.
    fn permission_changed<'a>(&'a self, recipient: &'a str) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// Counters of a cache (for tests and the bench).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeeCacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that went to the database (not cached, expired, or the cache was not usable).
    pub misses: u64,
    /// Permission entries held now.
    pub permission_entries: usize,
    /// Delivery-fee entries held now.
    pub delivery_entries: usize,
}

/// The fee cache of one store (see the module documentation).
pub struct FeeCache {
    permissions: Table<PermissionKey, i64>,
    delivery: Table<Box<str>, Option<i64>>,
    /// Whether cached permissions may be served: always on a single node; in a fleet only
    /// while this node hears the fleet's invalidation notices.
    hearing: AtomicBool,
    fleet: OnceLock<Arc<dyn FleetNotices>>,
}

impl std::fmt::Debug for FeeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeeCache").field("stats", &self.stats()).finish()
    }
}

impl FeeCache {
    /// A cache of at most `entries` permission entries (rounded down to a multiple of
    /// [`SHARDS`], at least one per shard).
    pub fn new(entries: usize) -> FeeCache {
        FeeCache::with_ages(entries, PERMISSION_MAX_AGE, DELIVERY_FEE_MAX_AGE)
    }

    fn with_ages(entries: usize, permission_age: Duration, delivery_age: Duration) -> FeeCache {
        FeeCache {
            permissions: Table::new(entries, permission_age),
            delivery: Table::new(DELIVERY_ENTRIES, delivery_age),
            hearing: AtomicBool::new(true),
            fleet: OnceLock::new(),
        }
    }

    pub fn stats(&self) -> FeeCacheStats {
        let (ph, pm, pe) = self.permissions.counts();
        let (dh, dm, de) = self.delivery.counts();
        FeeCacheStats { hits: ph + dh, misses: pm + dm, permission_entries: pe, delivery_entries: de }
    }

    /// The box's delivery fee: cached, or `load`ed (called at once, on a miss only) and cached.
    pub(crate) fn delivery_fee<'a>(
        &'a self,
        message_box: &str,
        load: impl FnOnce() -> StoreFuture<'a, Option<i64>>,
    ) -> StoreFuture<'a, Option<i64>> {
        let (shard, id) = delivery_hash(message_box);
        let ticket = match self.delivery.lookup(shard, id, |k| **k == *message_box) {
            Ok(fee) => return Box::pin(std::future::ready(Ok(fee))),
            Err(ticket) => ticket,
        };
        let key: Box<str> = message_box.into();
        let read = load();
        Box::pin(async move {
            let fee = read.await?;
            self.delivery.fill(ticket, key, fee);
            Ok(fee)
        })
    }

    /// Each recipient's fee for `sender`: the cached ones, and the others `load`ed in one call
    /// (at once, with the recipients that missed, in order) and cached.
    pub(crate) fn recipient_fees<'a>(
        &'a self,
        sender: &str,
        message_box: &str,
        recipients: &[String],
        load: impl FnOnce(Vec<String>) -> StoreFuture<'a, Vec<i64>>,
    ) -> StoreFuture<'a, Vec<i64>> {
        let hearing = self.hearing.load(Ordering::Acquire);
        let mut fees = Vec::with_capacity(recipients.len());
        let mut missed: Vec<(usize, Option<Ticket>)> = Vec::new();
        for (i, recipient) in recipients.iter().enumerate() {
            let (shard, id) = permission_hash(recipient, message_box, sender);
            if !hearing {
                self.permissions.bypassed(shard);
                missed.push((i, None));
                fees.push(0);
                continue;
            }
            match self.permissions.lookup(shard, id, |k| k.is(recipient, message_box, sender)) {
                Ok(fee) => fees.push(fee),
                Err(ticket) => {
                    missed.push((i, Some(ticket)));
                    fees.push(0);
                }
            }
        }
        if missed.is_empty() {
            return Box::pin(std::future::ready(Ok(fees)));
        }
        let keys: Vec<Option<PermissionKey>> = missed
            .iter()
            .map(|(i, t)| t.as_ref().map(|_| PermissionKey::new(&recipients[*i], message_box, sender)))
            .collect();
        let read = load(missed.iter().map(|(i, _)| recipients[*i].clone()).collect());
        Box::pin(async move {
            let loaded = read.await?;
            if loaded.len() != missed.len() {
                return Err(StoreError::Database(super::DatabaseError {
                    code: None,
                    message: format!("fee lookup answered {} fees for {} recipients", loaded.len(), missed.len()),
                }));
            }
            for (((i, ticket), key), fee) in missed.into_iter().zip(keys).zip(loaded) {
                fees[i] = fee;
                if let (Some(ticket), Some(key)) = (ticket, key) {
                    self.permissions.fill(ticket, key, fee);
                }
            }
            Ok(fees)
        })
    }

    /// Runs `write`, a change of `recipient`'s rules, then forgets the recipient's cached fees
    /// here and, in a fleet, on every node (see the module documentation). Forgotten whatever
    /// the write's outcome: a write that failed late may have committed.
    pub(crate) fn permission_write<'a>(&'a self, recipient: &str, write: StoreFuture<'a, ()>) -> StoreFuture<'a, ()> {
        let recipient = recipient.to_string();
        Box::pin(async move {
            let result = write.await;
            self.forget_recipient(&recipient);
            if let Some(fleet) = self.fleet.get() {
                if !fleet.permission_changed(&recipient).await && result.is_ok() {
                    tracing::warn!(
                        "fleet: a permission change could not be published; answering once other nodes' cached fees have expired"
                    );
                    tokio::time::sleep(self.permissions.max_age).await;
                }
            }
            result
        })
    }

    /// Runs `write`, a change of a box's delivery fee, then forgets every cached delivery fee
    /// of this process (other processes: [`DELIVERY_FEE_SETTLES`]).
    pub(crate) fn delivery_fee_write<'a, T: Send + 'a>(&'a self, write: StoreFuture<'a, T>) -> StoreFuture<'a, T> {
        Box::pin(async move {
            let result = write.await;
            self.delivery.forget_all();
            result
        })
    }

    /// Forgets every cached fee of `recipient` (a change made here, or on another node).
    pub fn forget_recipient(&self, recipient: &str) {
        let shard = shard_of(fold_hash(FNV_OFFSET, recipient.as_bytes()));
        self.permissions.forget(shard, |k| k.recipient.eq_ignore_ascii_case(recipient));
    }

    /// Makes this cache a fleet node's: cached permissions are served only between
    /// [`FeeCache::fleet_hearing`] and [`FeeCache::fleet_deaf`], and changes are published
    /// through `notices`. Call before serving; once.
    pub fn join_fleet(&self, notices: Arc<dyn FleetNotices>) {
        if self.fleet.set(notices).is_ok() {
            self.fleet_deaf();
        }
    }

    /// This node hears the fleet's notices from now on: what it cached before may have missed
    /// one, so it is forgotten, and cached permissions are served again.
    pub fn fleet_hearing(&self) {
        self.permissions.forget_all();
        self.hearing.store(true, Ordering::Release);
    }

    /// This node stopped hearing the fleet's notices: permissions are read from the database
    /// per send until [`FeeCache::fleet_hearing`].
    pub fn fleet_deaf(&self) {
        self.hearing.store(false, Ordering::Release);
        self.permissions.forget_all();
    }

    /// Whether cached permissions are served now.
    pub fn is_hearing(&self) -> bool {
        self.hearing.load(Ordering::Acquire)
    }
}

/// A cached recipient fee's key.
struct PermissionKey {
    recipient: Box<str>,
    message_box: Box<str>,
    sender: Box<str>,
}

impl PermissionKey {
    fn new(recipient: &str, message_box: &str, sender: &str) -> PermissionKey {
        PermissionKey { recipient: recipient.into(), message_box: message_box.into(), sender: sender.into() }
    }

    fn is(&self, recipient: &str, message_box: &str, sender: &str) -> bool {
        *self.message_box == *message_box && *self.sender == *sender && self.recipient.eq_ignore_ascii_case(recipient)
    }
}

// ---------------------------------------------------------------------------------------------
// Hashing: FNV-1a, 64 bits. An entry's id only finds its slot (the key is compared in full),
// so a crafted collision costs its makers cache misses and nothing else.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME);
    }
    h
}

/// [`fnv`] of the ASCII-lowercased bytes.
fn fold_hash(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h = (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(FNV_PRIME);
    }
    h
}

/// FNV mixes a key's last bytes into few bits; MurmurHash3's finaliser spreads them over all
/// before the shard is taken.
fn shard_of(mut h: u64) -> usize {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as usize % SHARDS
}

/// (shard, id) of a permission entry: the shard follows the recipient alone, so forgetting a
/// recipient visits one shard.
fn permission_hash(recipient: &str, message_box: &str, sender: &str) -> (usize, u64) {
    let r = fold_hash(FNV_OFFSET, recipient.as_bytes());
    // A separator byte no identity key holds keeps ("ab","c") and ("a","bc") apart.
    let id = fnv(fnv(fnv(r, &[0xff]), message_box.as_bytes()), &[0xff]);
    (shard_of(r), fnv(id, sender.as_bytes()))
}

/// (shard, id) of a delivery-fee entry. Every send needs its box's fee, and most go to a few
/// boxes: each thread (a server core) keeps its own copy of a box's entry, in a shard of its
/// own, so the cores never meet on one lock for `inbox`. The price: each core reads a box's
/// fee once per max age.
fn delivery_hash(message_box: &str) -> (usize, u64) {
    static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
    }
    let h = fnv(FNV_OFFSET, message_box.as_bytes());
    (shard_of(h).wrapping_add(SLOT.with(|s| *s)) % SHARDS, h)
}

// ---------------------------------------------------------------------------------------------
// The sharded table.

/// A shard's lock, on its own cache lines so the cores' locks do not share one.
#[repr(align(128))]
struct Padded<K, V>(Mutex<Shard<K, V>>);

struct Table<K, V> {
    shards: Box<[Padded<K, V>]>,
    per_shard: usize,
    max_age: Duration,
}

struct Shard<K, V> {
    entries: HashMap<u64, Entry<K, V>>,
    /// Bumped by every invalidation of the shard.
    generation: u64,
    hits: u64,
    misses: u64,
}

struct Entry<K, V> {
    key: K,
    value: V,
    expires: Instant,
}

/// A miss's permission to cache what its read finds: valid while the shard's generation is
/// the one seen before the read began.
struct Ticket {
    shard: usize,
    id: u64,
    generation: u64,
    /// Before the read began: the entry's age counts from here.
    loaded: Instant,
}

impl<K, V: Copy> Table<K, V> {
    fn new(entries: usize, max_age: Duration) -> Table<K, V> {
        let shards = (0..SHARDS)
            .map(|_| Padded(Mutex::new(Shard { entries: HashMap::new(), generation: 0, hits: 0, misses: 0 })))
            .collect();
        Table { shards, per_shard: (entries / SHARDS).max(1), max_age }
    }

    fn shard(&self, i: usize) -> MutexGuard<'_, Shard<K, V>> {
        // A panic while holding a shard leaves a consistent map (no invariant spans calls).
        self.shards[i].0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value of the entry `id` in `shard` that `matches`, unless expired; else a ticket
    /// to fill it.
    fn lookup(&self, shard: usize, id: u64, matches: impl FnOnce(&K) -> bool) -> Result<V, Ticket> {
        let now = Instant::now();
        let mut s = self.shard(shard);
        match s.entries.get(&id) {
            Some(e) if e.expires > now && matches(&e.key) => {
                let value = e.value;
                s.hits += 1;
                return Ok(value);
            }
            Some(e) if e.expires <= now => {
                s.entries.remove(&id);
            }
            _ => {}
        }
        s.misses += 1;
        Err(Ticket { shard, id, generation: s.generation, loaded: now })
    }

    /// Counts a lookup that did not consult the cache.
    fn bypassed(&self, shard: usize) {
        self.shard(shard).misses += 1;
    }

    /// Caches what a miss's read found, unless the shard was invalidated since it began.
    fn fill(&self, ticket: Ticket, key: K, value: V) {
        let expires = ticket.loaded + self.max_age;
        let mut s = self.shard(ticket.shard);
        if s.generation != ticket.generation || expires <= Instant::now() {
            return;
        }
        if s.entries.len() >= self.per_shard && !s.entries.contains_key(&ticket.id) {
            if let Some(victim) = s.entries.keys().next().copied() {
                s.entries.remove(&victim);
            }
        }
        s.entries.insert(ticket.id, Entry { key, value, expires });
    }

    /// Drops the entries of `shard` that `pred` names, and every fill in flight there.
    fn forget(&self, shard: usize, mut pred: impl FnMut(&K) -> bool) {
        let mut s = self.shard(shard);
        s.generation += 1;
        s.entries.retain(|_, e| !pred(&e.key));
    }

    fn forget_all(&self) {
        for i in 0..SHARDS {
            let mut s = self.shard(i);
            s.generation += 1;
            s.entries.clear();
        }
    }

    /// (hits, misses, entries).
    fn counts(&self) -> (u64, u64, usize) {
        (0..SHARDS).fold((0, 0, 0), |(h, m, n), i| {
            let s = self.shard(i);
            (h + s.hits, m + s.misses, n + s.entries.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: &str = "02aaaa000000000000000000000000000000000000000000000000000000000001";
    const R2: &str = "02bbbb000000000000000000000000000000000000000000000000000000000002";
    const S1: &str = "03cccc000000000000000000000000000000000000000000000000000000000003";
    const S2: &str = "03dddd000000000000000000000000000000000000000000000000000000000004";

    /// A fake database: the fee per recipient, and how many reads it served.
    #[derive(Default)]
    struct Db {
        fee: Mutex<HashMap<String, i64>>,
        reads: AtomicUsize,
    }

    impl Db {
        fn set(&self, r: &str, fee: i64) {
            self.fee.lock().unwrap().insert(r.to_string(), fee);
        }

        fn load(&self, recipients: Vec<String>) -> StoreFuture<'_, Vec<i64>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let fees = recipients.iter().map(|r| self.fee.lock().unwrap().get(r).copied().unwrap_or(0)).collect();
            Box::pin(std::future::ready(Ok(fees)))
        }

        fn reads(&self) -> usize {
            self.reads.load(Ordering::Relaxed)
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    fn fees(cache: &FeeCache, db: &Db, sender: &str, box_: &str, rs: &[&str]) -> Vec<i64> {
        let rs: Vec<String> = rs.iter().map(|r| r.to_string()).collect();
        rt().block_on(cache.recipient_fees(sender, box_, &rs, |m| db.load(m))).unwrap()
    }

    #[test]
    fn hits_are_served_without_a_read_and_misses_read_once_for_all() {
        let (cache, db) = (FeeCache::new(1024), Db::default());
        db.set(R1, 5);
        db.set(R2, -1);
        assert_eq!(fees(&cache, &db, S1, "inbox", &[R1, R2]), [5, -1]);
        assert_eq!(db.reads(), 1, "both misses in one read");
        db.set(R1, 6);
        assert_eq!(fees(&cache, &db, S1, "inbox", &[R1, R2]), [5, -1], "cached: the database is not asked");
        assert_eq!(db.reads(), 1);
        // Another sender or box is another entry; only the missing one is read.
        assert_eq!(fees(&cache, &db, S2, "inbox", &[R2, R1]), [-1, 6]);
        assert_eq!(db.reads(), 2);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.permission_entries), (2, 4, 4));
    }

    #[test]
    fn a_change_forgets_every_sender_and_box_of_the_recipient() {
        let (cache, db) = (FeeCache::new(1024), Db::default());
        db.set(R1, 1);
        db.set(R2, 2);
        for (s, b) in [(S1, "inbox"), (S2, "inbox"), (S1, "INBOX"), (S1, "other")] {
            fees(&cache, &db, s, b, &[R1, R2]);
        }
        assert_eq!(cache.stats().permission_entries, 8);
        db.set(R1, 9);
        // A box-wide change, written with the recipient spelt in upper case.
        rt().block_on(cache.permission_write(&R1.to_uppercase(), Box::pin(std::future::ready(Ok(()))))).unwrap();
        assert_eq!(cache.stats().permission_entries, 4, "R2's entries stay");
        for (s, b) in [(S1, "inbox"), (S2, "inbox"), (S1, "INBOX"), (S1, "other")] {
            assert_eq!(fees(&cache, &db, s, b, &[R1, R2]), [9, 2], "{s} {b}");
        }
    }

    #[test]
    fn a_read_that_raced_a_change_is_not_cached() {
        let (cache, db) = (FeeCache::new(1024), Db::default());
        db.set(R1, 1);
        let rs = vec![R1.to_string()];
        let rt = rt();
        // The read starts (its ticket taken), the change commits and is forgotten, then the
        // read's stale answer arrives: it is returned (the send began before the change) but
        // not cached.
        let read = cache.recipient_fees(S1, "inbox", &rs, |m| db.load(m));
        db.set(R1, 2);
        rt.block_on(cache.permission_write(R1, Box::pin(std::future::ready(Ok(()))))).unwrap();
        assert_eq!(rt.block_on(read).unwrap(), [1]);
        assert_eq!(cache.stats().permission_entries, 0);
        assert_eq!(fees(&cache, &db, S1, "inbox", &[R1]), [2]);
    }

    #[test]
    fn entries_expire() {
        let cache = FeeCache::with_ages(1024, Duration::from_millis(30), Duration::from_millis(30));
        let db = Db::default();
        db.set(R1, 1);
        fees(&cache, &db, S1, "inbox", &[R1]);
        db.set(R1, 2);
        assert_eq!(fees(&cache, &db, S1, "inbox", &[R1]), [1]);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(fees(&cache, &db, S1, "inbox", &[R1]), [2], "expired: read again");
        let rt = rt();
        let reads = AtomicUsize::new(0);
        let load = |fee: Option<i64>| {
            reads.fetch_add(1, Ordering::Relaxed);
            Box::pin(std::future::ready(Ok(fee))) as StoreFuture<'_, Option<i64>>
        };
        assert_eq!(rt.block_on(cache.delivery_fee("inbox", || load(Some(3)))).unwrap(), Some(3));
        assert_eq!(rt.block_on(cache.delivery_fee("inbox", || load(Some(4)))).unwrap(), Some(3));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(rt.block_on(cache.delivery_fee("inbox", || load(None))).unwrap(), None);
        assert_eq!(rt.block_on(cache.delivery_fee("inbox", || load(Some(5)))).unwrap(), None, "negative cached");
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        rt.block_on(cache.delivery_fee_write(Box::pin(std::future::ready(Ok(()))))).unwrap();
        assert_eq!(rt.block_on(cache.delivery_fee("inbox", || load(Some(5)))).unwrap(), Some(5));
    }

    #[test]
    fn the_size_is_bounded() {
        let (cache, db) = (FeeCache::new(256), Db::default());
        let many: Vec<String> = (0..5_000).map(|i| format!("02{i:064x}")).collect();
        for chunk in many.chunks(100) {
            let rs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            fees(&cache, &db, S1, "inbox", &rs);
        }
        let s = cache.stats();
        assert!(s.permission_entries <= 256, "{s:?}");
        assert!(s.permission_entries >= 128, "the shards fill evenly enough: {s:?}");
    }

    struct Notices {
        ok: bool,
        published: Mutex<Vec<String>>,
    }

    impl FleetNotices for Notices {
        fn permission_changed<'a>(&'a self, r: &'a str) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
            self.published.lock().unwrap().push(r.to_string());
            Box::pin(std::future::ready(self.ok))
        }
    }

    #[test]
    fn a_fleet_node_serves_cached_permissions_only_while_it_hears_the_fleet() {
        let (cache, db) = (FeeCache::new(1024), Db::default());
        let notices = Arc::new(Notices { ok: true, published: Mutex::default() });
        cache.join_fleet(notices.clone());
        db.set(R1, 1);
        fees(&cache, &db, S1, "inbox", &[R1]);
        fees(&cache, &db, S1, "inbox", &[R1]);
        assert_eq!((db.reads(), cache.stats().permission_entries), (2, 0), "deaf: every lookup reads");
        cache.fleet_hearing();
        fees(&cache, &db, S1, "inbox", &[R1]);
        fees(&cache, &db, S1, "inbox", &[R1]);
        assert_eq!(db.reads(), 3, "hearing: cached");
        // A change on another node arrives as a notice.
        db.set(R1, 2);
        cache.forget_recipient(R1);
        assert_eq!(fees(&cache, &db, S1, "inbox", &[R1]), [2]);
        // A change here is published.
        rt().block_on(cache.permission_write(R2, Box::pin(std::future::ready(Ok(()))))).unwrap();
        assert_eq!(*notices.published.lock().unwrap(), [R2]);
        cache.fleet_deaf();
        assert_eq!(cache.stats().permission_entries, 0);
        db.set(R1, 3);
        assert_eq!(fees(&cache, &db, S1, "inbox", &[R1]), [3]);
    }

    #[test]
    fn an_unpublished_change_is_answered_after_the_max_age() {
        let age = Duration::from_millis(50);
        let cache = FeeCache::with_ages(1024, age, age);
        cache.join_fleet(Arc::new(Notices { ok: false, published: Mutex::default() }));
        let start = Instant::now();
        rt().block_on(cache.permission_write(R1, Box::pin(std::future::ready(Ok(()))))).unwrap();
        assert!(start.elapsed() >= age, "{:?}", start.elapsed());
    }
}
