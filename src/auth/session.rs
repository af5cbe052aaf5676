//! Server-side BRC-103 sessions, keyed by the server's session nonce and shared by every
//! core: a fixed number of independently locked shards, so no global lock sits on the hot
//! path and a lookup holds a shard lock only for a hash-map probe.
//!
//! Each session caches what every request needs: the peer's parsed identity key, the ECDH
//! point between the server key and that identity (the HMAC key of all BRC-42 derivations
//! between the two) and the client's session nonce. Sessions expire after an idle TTL.
//! Replay protection keeps the request nonces seen in the session; when a session has
//! seen its maximum number of requests it is retired (the client gets 401 and re-handshakes,
//! which every SDK client does by itself), so memory per session stays bounded without ever
//! forgetting a nonce of a live session.
//!
//! When the table is full, a new handshake evicts the oldest session that never carried a
//! request (handshake done, never used): a flood of bare handshakes, which costs a stranger
//! nothing, then only ever displaces its own kind, never a session in use, and a legitimate
//! client that handshakes after it is still admitted (D3). Only when every session has been
//! used is the handshake refused ([`SessionsFull`]).
//!
//! The table reads time only through an injected [`Clock`] ([`SystemClock`] in production,
//! [`ManualClock`] in tests, which advance it instead of sleeping).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::keys::{PublicKey, SharedSecret};

const SHARDS: usize = 64;

/// The time source of the session table: milliseconds on a monotonic scale whose origin is
/// the clock's own (only differences are used).
pub trait Clock: Send + Sync + fmt::Debug {
    fn now_ms(&self) -> u64;
}

/// The monotonic system clock, counting from its creation.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    epoch: Instant,
}

impl SystemClock {
    pub fn new() -> Self {
        SystemClock { epoch: Instant::now() }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// A clock that moves only when told to; share it (`Arc`) between a test and the table.
#[derive(Debug, Default)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn advance(&self, by: Duration) {
        self.ms.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::Relaxed)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A session unused this long is forgotten.
    pub idle_ttl: Duration,
    /// At most this many live sessions; when full, a handshake evicts the oldest never-used
    /// session, and is refused only when every session has been used.
    pub max_sessions: usize,
    /// Requests accepted in one session before it is retired (bounds the replay set).
    pub max_requests_per_session: usize,
    /// A session that never carried a request is forgotten after this long (real clients
    /// use a new session at once; a flood of bare handshakes must not fill the table).
    pub unused_ttl: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_ttl: Duration::from_secs(3600),
            max_sessions: 262_144,
            max_requests_per_session: 4096,
            unused_ttl: Duration::from_secs(120),
        }
    }
}

/// One authenticated peer session.
#[derive(Debug)]
pub struct Session {
    /// Our session nonce (`Ns`), the lookup key; the peer echoes it in `yourNonce`.
    pub server_nonce: String,
    /// The peer's session nonce (`Nc`), echoed back in our `yourNonce`.
    pub client_nonce: String,
    pub peer: PublicKey,
    /// The peer identity as canonical compressed lowercase hex.
    pub peer_hex: String,
    /// `serverKey · peerKey`, compressed.
    pub secret: SharedSecret,
    last_used_ms: AtomicU64,
    /// Set by the first request; until then the session lives only `unused_ttl`.
    used: AtomicBool,
    seen: Mutex<HashSet<u64>>,
}

impl Session {
    pub fn new(server_nonce: String, client_nonce: String, peer: PublicKey, secret: SharedSecret) -> Self {
        Session {
            server_nonce,
            client_nonce,
            peer_hex: peer.to_hex(),
            peer,
            secret,
            last_used_ms: AtomicU64::new(0),
            used: AtomicBool::new(false),
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// True when `claimed` names this session's identity (hex case is not significant).
    pub fn is_identity(&self, claimed: &str) -> bool {
        claimed.eq_ignore_ascii_case(&self.peer_hex)
    }
}

/// The outcome of recording a request nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceRecord {
    Fresh,
    /// Accepted, and the session has now used its budget: it is gone for the next request.
    FreshAndRetired,
    Replayed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many open sessions")]
pub struct SessionsFull;

type Shard = Mutex<HashMap<String, Arc<Session>>>;

/// A full table sweeps for expired sessions at most this often (a sweep visits every
/// session; a table full of sessions in use must not sweep once per refused handshake).
const FULL_SWEEP_INTERVAL_MS: u64 = 100;

/// The process-wide session table.
pub struct SessionManager {
    shards: Box<[Shard]>,
    hasher: RandomState,
    clock: Box<dyn Clock>,
    count: AtomicUsize,
    config: SessionConfig,
    /// Sessions in handshake order that were never used when queued: the eviction
    /// candidates, oldest first. Entries whose session has since been used or removed are
    /// skipped when met and compacted away when the queue outgrows the table.
    unused: Mutex<VecDeque<Weak<Session>>>,
    /// When a full table last swept (`u64::MAX`: never).
    last_full_sweep_ms: AtomicU64,
    evicted: AtomicU64,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager").field("sessions", &self.len()).field("config", &self.config).finish()
    }
}

impl SessionManager {
    /// A table on the system clock.
    pub fn new(config: SessionConfig) -> Self {
        Self::with_clock(config, SystemClock::new())
    }

    pub fn with_clock(config: SessionConfig, clock: impl Clock + 'static) -> Self {
        SessionManager {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            clock: Box::new(clock),
            count: AtomicUsize::new(0),
            config,
            unused: Mutex::new(VecDeque::new()),
            last_full_sweep_ms: AtomicU64::new(u64::MAX),
            evicted: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn shard(&self, nonce: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(nonce) as usize) % SHARDS]
    }

    fn lock<'a>(shard: &'a Shard) -> std::sync::MutexGuard<'a, HashMap<String, Arc<Session>>> {
        // A panic while holding a shard cannot leave a map half-updated; keep serving.
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn expired(&self, s: &Session, now: u64) -> bool {
        let ttl = if s.used.load(Ordering::Relaxed) { self.config.idle_ttl } else { self.config.unused_ttl };
        now.saturating_sub(s.last_used_ms.load(Ordering::Relaxed)) > ttl.as_millis() as u64
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a session. When the table is full, the oldest never-used session makes room;
    /// when there is none, expired sessions are swept (at most every
    /// [`FULL_SWEEP_INTERVAL_MS`]) and, failing that, the handshake is refused.
    pub fn insert(&self, session: Session) -> Result<Arc<Session>, SessionsFull> {
        if self.len() >= self.config.max_sessions && !self.evict_unused() && !self.sweep_when_full() {
            return Err(SessionsFull);
        }
        session.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
        let session = Arc::new(session);
        let previous =
            Self::lock(self.shard(&session.server_nonce)).insert(session.server_nonce.clone(), session.clone());
        if previous.is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        self.queue_unused(&session);
        Ok(session)
    }

    /// How many never-used sessions were evicted to admit new handshakes.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn unused_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Weak<Session>>> {
        self.unused.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a new session as an eviction candidate, dropping stale entries from the front
    /// and compacting the queue when it holds far more entries than the table has sessions
    /// (each handshake adds one; most sessions are used at once and leave it stale).
    fn queue_unused(&self, session: &Arc<Session>) {
        let mut queue = self.unused_queue();
        queue.push_back(Arc::downgrade(session));
        while queue.front().is_some_and(|w| w.upgrade().is_none_or(|s| s.used.load(Ordering::Relaxed))) {
            queue.pop_front();
        }
        if queue.len() > 2 * self.config.max_sessions + 1024 {
            queue.retain(|w| w.upgrade().is_some_and(|s| !s.used.load(Ordering::Relaxed)));
        }
    }

    /// Removes the oldest session that was never used; false when there is none.
    fn evict_unused(&self) -> bool {
        loop {
            let Some(candidate) = self.unused_queue().pop_front() else { return false };
            let Some(session) = candidate.upgrade() else { continue };
            let mut shard = Self::lock(self.shard(&session.server_nonce));
            // Checked under the shard lock: a session whose first request is being recorded
            // right now may still be taken (its client gets 401 and handshakes again).
            if session.used.load(Ordering::Relaxed) {
                continue;
            }
            if shard.get(&session.server_nonce).is_some_and(|s| Arc::ptr_eq(s, &session)) {
                shard.remove(&session.server_nonce);
                self.count.fetch_sub(1, Ordering::Relaxed);
                self.evicted.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
    }

    /// A full table of used sessions: sweep the expired ones, not more often than
    /// [`FULL_SWEEP_INTERVAL_MS`]; true when there is room now.
    fn sweep_when_full(&self) -> bool {
        let now = self.now_ms();
        let last = self.last_full_sweep_ms.load(Ordering::Relaxed);
        if last == u64::MAX || now.saturating_sub(last) >= FULL_SWEEP_INTERVAL_MS {
            self.last_full_sweep_ms.store(now, Ordering::Relaxed);
            self.sweep();
        }
        self.len() < self.config.max_sessions
    }

    /// The live session for a server nonce; an expired one is removed and not returned.
    pub fn get(&self, server_nonce: &str) -> Option<Arc<Session>> {
        let now = self.now_ms();
        let mut shard = Self::lock(self.shard(server_nonce));
        let session = shard.get(server_nonce)?;
        if self.expired(session, now) {
            shard.remove(server_nonce);
            self.count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(session.clone())
    }

    pub fn remove(&self, server_nonce: &str) -> bool {
        let removed = Self::lock(self.shard(server_nonce)).remove(server_nonce).is_some();
        if removed {
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Marks the session used now and records a request nonce.
    pub fn record_request(&self, session: &Session, request_nonce: &str) -> NonceRecord {
        session.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
        session.used.store(true, Ordering::Relaxed);
        let key = self.hasher.hash_one(request_nonce);
        let full = {
            let mut seen = session.seen.lock().unwrap_or_else(|p| p.into_inner());
            if !seen.insert(key) {
                return NonceRecord::Replayed;
            }
            seen.len() >= self.config.max_requests_per_session
        };
        if full {
            self.remove(&session.server_nonce);
            NonceRecord::FreshAndRetired
        } else {
            NonceRecord::Fresh
        }
    }

    /// Marks the session used without a request nonce (socket traffic that carries none).
    pub fn touch(&self, session: &Session) {
        session.last_used_ms.store(self.now_ms(), Ordering::Relaxed);
        session.used.store(true, Ordering::Relaxed);
    }

    /// Removes every expired session; returns how many went.
    pub fn sweep(&self) -> usize {
        let now = self.now_ms();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut map = Self::lock(shard);
            let before = map.len();
            map.retain(|_, s| !self.expired(s, now));
            removed += before - map.len();
        }
        self.count.fetch_sub(removed, Ordering::Relaxed);
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::PrivateKey;

    fn session(n: &str) -> Session {
        let k = PrivateKey::random();
        Session::new(n.into(), "c".into(), k.public_key(), k.shared_secret(&k.public_key()))
    }

    fn manual(config: SessionConfig) -> (SessionManager, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        (SessionManager::with_clock(config, clock.clone()), clock)
    }

    #[test]
    fn insert_get_expire() {
        let short = Duration::from_millis(300);
        let (m, clock) = manual(SessionConfig { idle_ttl: short, unused_ttl: short, ..Default::default() });
        m.insert(session("a")).unwrap();
        assert!(m.get("a").is_some());
        assert!(m.get("b").is_none());
        clock.advance(short);
        assert!(m.get("a").is_some(), "expiry is strictly after the TTL");
        clock.advance(Duration::from_millis(1));
        assert!(m.get("a").is_none());
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn capacity_is_enforced_after_sweeping() {
        let (m, clock) = manual(SessionConfig {
            max_sessions: 2,
            idle_ttl: Duration::from_millis(300),
            unused_ttl: Duration::from_millis(300),
            ..Default::default()
        });
        let a = m.insert(session("a")).unwrap();
        let b = m.insert(session("b")).unwrap();
        m.touch(&a);
        assert_eq!(m.record_request(&b, "n"), NonceRecord::Fresh);
        assert_eq!(m.insert(session("c")).unwrap_err(), SessionsFull, "sessions in use are never evicted");
        clock.advance(Duration::from_millis(700));
        m.insert(session("c")).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m.evicted(), 0);
    }

    #[test]
    fn a_full_table_evicts_the_oldest_never_used_session() {
        let (m, _) = manual(SessionConfig { max_sessions: 3, ..Default::default() });
        let used = m.insert(session("used")).unwrap();
        assert_eq!(m.record_request(&used, "n"), NonceRecord::Fresh);
        m.insert(session("bare1")).unwrap();
        m.insert(session("bare2")).unwrap();
        // Full: each new handshake displaces the oldest bare one, never the used one.
        m.insert(session("new1")).unwrap();
        assert!(m.get("bare1").is_none() && m.get("bare2").is_some());
        m.insert(session("new2")).unwrap();
        assert!(m.get("bare2").is_none() && m.get("new1").is_some());
        assert_eq!((m.len(), m.evicted()), (3, 2));
        assert!(m.get("used").is_some());
        // Once every session is in use, the table refuses.
        for n in ["new1", "new2"] {
            let s = m.get(n).unwrap();
            m.touch(&s);
        }
        assert_eq!(m.insert(session("late")).unwrap_err(), SessionsFull);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn the_eviction_queue_stays_bounded() {
        let (m, _) = manual(SessionConfig { max_sessions: 10, ..Default::default() });
        // Every session used at once (the normal client): nothing to evict, nothing kept.
        for i in 0..5000 {
            let s = m.insert(session(&format!("s{i}"))).unwrap();
            m.touch(&s);
            m.remove(&s.server_nonce);
        }
        assert!(m.unused_queue().len() <= 1, "{}", m.unused_queue().len());
        // A flood of bare handshakes on a full table: the queue is bounded by the table.
        for i in 0..5000 {
            m.insert(session(&format!("f{i}"))).unwrap();
        }
        assert_eq!(m.len(), 10);
        assert!(m.unused_queue().len() <= 2 * 10 + 1024);
    }

    #[test]
    fn unused_sessions_expire_first() {
        let (m, clock) = manual(SessionConfig {
            idle_ttl: Duration::from_secs(60),
            unused_ttl: Duration::from_millis(300),
            ..Default::default()
        });
        let used = m.insert(session("used")).unwrap();
        m.insert(session("bare")).unwrap();
        assert_eq!(m.record_request(&used, "n"), NonceRecord::Fresh);
        clock.advance(Duration::from_millis(700));
        assert!(m.get("bare").is_none(), "a session never used is gone after unused_ttl");
        assert!(m.get("used").is_some(), "a used one lives for idle_ttl");
    }

    #[test]
    fn use_restarts_the_idle_ttl() {
        let ttl = Duration::from_secs(60);
        let (m, clock) = manual(SessionConfig { idle_ttl: ttl, ..Default::default() });
        let s = m.insert(session("a")).unwrap();
        assert_eq!(m.record_request(&s, "n1"), NonceRecord::Fresh);
        clock.advance(Duration::from_secs(50));
        m.touch(&s);
        clock.advance(Duration::from_secs(50));
        assert!(m.get("a").is_some(), "touched 50 s ago");
        clock.advance(Duration::from_secs(11));
        assert!(m.get("a").is_none());
        assert_eq!(m.sweep(), 0);
    }

    #[test]
    fn replay_and_retirement() {
        let (m, _) = manual(SessionConfig { max_requests_per_session: 3, ..Default::default() });
        let s = m.insert(session("a")).unwrap();
        assert_eq!(m.record_request(&s, "n1"), NonceRecord::Fresh);
        assert_eq!(m.record_request(&s, "n1"), NonceRecord::Replayed);
        assert_eq!(m.record_request(&s, "n2"), NonceRecord::Fresh);
        assert_eq!(m.record_request(&s, "n3"), NonceRecord::FreshAndRetired);
        assert!(m.get("a").is_none());
        assert_eq!(m.len(), 0);
    }
}
