//! The fleet-wide edge: per-IP and per-identity rate limits counted across nodes, and the
//! replay claim and liveness of a request's session ([`super::sessions`]), in **one** Redis
//! round trip per request — one atomic Lua script ([`SCRIPT`]) — with a bounded wait and a
//! node-local fallback when Redis does not answer.
//!
//! # Counters
//!
//! Each limit is a counter per key (`messagebox:rl:ip:<bucket>`, `messagebox:rl:id:<identity>`)
//! whose window starts at its first hit and lasts the configured window (`INCR`, `PEXPIRE`
//! on the first hit, `PTTL`): the same fixed windows per key the node-local limiters count,
//! so the 429 bodies and the draft-8 headers are computed the same way from (hits, time
//! left). Every node must run with the same limits.
//!
//! # One round trip
//!
//! A signed request is counted after its signature verified: the script counts its IP, stops
//! there when the IP is over its limit (no claim, as a node refuses such a request before
//! authenticating it), claims its nonce in its session's set, and counts its identity only
//! when the claim succeeded (a replay is refused before the identity limit, as on one node).
//! Every other request (handshakes, probes, unsigned or unverifiable requests) costs one
//! round trip of the IP counter alone.
//!
//! # Redis down
//!
//! Each core holds its own multiplexed connection (redis-rs `ConnectionManager`, which
//! reconnects by itself) and its own circuit breaker ([`Breaker`]): a round trip that fails
//! or takes longer than [`ROUND_TRIP_TIMEOUT`] opens it, and until a background `PING`
//! (at most one per [`PROBE_INTERVAL`] per core) gets an answer, requests skip Redis
//! entirely and the caller falls back to the node-local limiters and replay memory (`None`
//! from [`FleetLimits::count_ip`] / [`FleetLimits::count_request`]). So a hung Redis delays a
//! core's requests by at most one timeout, once, and a dead one by nothing. One warning is
//! logged when the first core loses Redis and one line when the last one has it back.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::sessions::{nonce_member, unix_ms, view, ClaimOutcome, ClaimPolicy};
use super::KEY_PREFIX;
use crate::auth::session::SessionConfig;
use crate::limits::{HttpLimits, RateLimit};

/// The longest a request waits for Redis before it falls back to node-local state.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_millis(250);
/// While Redis is unreachable, each core tries it again this often (in the background).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// KEYS: the IP counter, then (signed requests) the session's claim set and the identity
/// counter. ARGV: IP max, IP window ms, nonce member, first use allowed (`1`/`0`), idle TTL
/// ms, max requests per session, identity window ms. Returns `{ip hits, ip ms left}`, then
/// the claim code of [`ClaimOutcome::from_code`], then `{identity hits, ms left}` when claimed.
pub const SCRIPT_SOURCE: &str = r#"
local function hit(key, window)
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, window) end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('PEXPIRE', key, window)
    ttl = tonumber(window)
  end
  return {n, ttl}
end
local ip = hit(KEYS[1], ARGV[2])
if #KEYS == 1 or ip[1] > tonumber(ARGV[1]) then return ip end
local n = 0
if redis.call('EXISTS', KEYS[2]) == 0 then
  if ARGV[4] ~= '1' then return {ip[1], ip[2], -1} end
else
  n = redis.call('SCARD', KEYS[2])
  if n >= tonumber(ARGV[6]) then return {ip[1], ip[2], -2} end
end
if redis.call('SADD', KEYS[2], ARGV[3]) == 0 then return {ip[1], ip[2], -3} end
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local id = hit(KEYS[3], ARGV[7])
return {ip[1], ip[2], n + 1, id[1], id[2]}
"#;

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SCRIPT_SOURCE));

/// One counter's state after a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub hits: u64,
    /// Until the key's window ends.
    pub ms_left: u64,
}

/// The fleet's answer for a signed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCounts {
    pub ip: Count,
    /// `None`: the IP is over its limit and nothing else was done.
    pub claim: Option<ClaimOutcome>,
    /// Counted only for a claimed (fresh) request.
    pub identity: Option<Count>,
}

impl RequestCounts {
    /// Reads the script's reply.
    pub fn from_reply(v: &[i64]) -> Option<RequestCounts> {
        let count = |h: i64, t: i64| Count { hits: h.max(0) as u64, ms_left: t.max(0) as u64 };
        match *v {
            [h, t] => Some(RequestCounts { ip: count(h, t), claim: None, identity: None }),
            [h, t, c] => {
                Some(RequestCounts { ip: count(h, t), claim: Some(ClaimOutcome::from_code(c)?), identity: None })
            }
            [h, t, c, ih, it] => Some(RequestCounts {
                ip: count(h, t),
                claim: Some(ClaimOutcome::from_code(c)?),
                identity: Some(count(ih, it)),
            }),
            _ => None,
        }
    }
}

/// The fleet-wide counters and claims of one node.
pub struct FleetLimits {
    link: Link,
    ip: RateLimit,
    identity: RateLimit,
    policy: ClaimPolicy,
}

impl std::fmt::Debug for FleetLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetLimits").field("ip", &self.ip).field("identity", &self.identity).finish()
    }
}

fn window_ms(l: &RateLimit) -> u64 {
    (l.window.as_millis() as u64).max(1)
}

impl FleetLimits {
    pub fn new(client: redis::Client, http: &HttpLimits, sessions: &SessionConfig) -> FleetLimits {
        FleetLimits {
            link: Link::new(client, ROUND_TRIP_TIMEOUT),
            ip: http.pre_auth_rate,
            identity: http.authenticated_rate,
            policy: ClaimPolicy::new(sessions),
        }
    }

    pub fn policy(&self) -> &ClaimPolicy {
        &self.policy
    }

    /// Counts a request of the IP bucket `bucket` fleet-wide; `None`: Redis is unavailable.
    pub async fn count_ip(&self, bucket: &str) -> Option<Count> {
        let key = format!("{KEY_PREFIX}rl:ip:{bucket}");
        let (max, window) = (self.ip.max, window_ms(&self.ip));
        let reply: Vec<i64> = self
            .link
            .run(|mut c| {
                let key = key.clone();
                async move { SCRIPT.key(key).arg(max).arg(window).invoke_async(&mut c).await }
            })
            .await?;
        RequestCounts::from_reply(&reply).map(|r| r.ip)
    }

    /// Counts a verified request (IP, claim, identity, see the module doc); `None`: Redis is
    /// unavailable, or `token` is not a fleet session token (claim it locally).
    pub async fn count_request(
        &self,
        ip_bucket: &str,
        token: &str,
        nonce: &str,
        identity: &str,
    ) -> Option<RequestCounts> {
        let session = view(token)?;
        let first_use = self.policy.first_use_allowed(session.created_ms, unix_ms());
        let keys = [
            format!("{KEY_PREFIX}rl:ip:{ip_bucket}"),
            session_key(&session.id),
            format!("{KEY_PREFIX}rl:id:{identity}"),
        ];
        let member = nonce_member(nonce);
        let (ip, id, p) = (self.ip, self.identity, self.policy);
        let reply: Vec<i64> = self
            .link
            .run(|mut c| {
                let mut inv = SCRIPT.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(ip.max).arg(window_ms(&ip)).arg(&member[..]).arg(if first_use { "1" } else { "0" });
                inv.arg(p.idle_ttl_ms).arg(p.max_requests).arg(window_ms(&id));
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        RequestCounts::from_reply(&reply)
    }

    /// Records a request nonce claimed node-locally because Redis was unavailable, for Redis
    /// once it answers again.
    pub fn journal_local_claim(&self, token: &str, nonce: &str) {
        let Some(session) = view(token) else { return };
        self.link.health.journal.push(JournalEntry {
            key: session_key(&session.id),
            member: nonce_member(nonce),
            until_ms: unix_ms() + self.policy.idle_ttl_ms,
        });
    }
}

fn session_key(id: &[u8; 16]) -> String {
    format!("{KEY_PREFIX}sess:{}", hex::encode(id))
}

// ---------------------------------------------------------------------------------------------
// The outage journal: claims accepted node-locally, written to Redis when it is back.

/// Most claims a node remembers for Redis while it is unreachable (~60 bytes each); beyond
/// it the oldest are dropped, with a warning.
pub const JOURNAL_MAX: usize = 65_536;
/// Claims written per script call when the journal is flushed.
const FLUSH_BATCH: usize = 512;

/// KEYS: claim sets; ARGV: per key, the member and the ms the set must live at least.
const FLUSH_SOURCE: &str = r#"
for i, key in ipairs(KEYS) do
  local ms = tonumber(ARGV[2 * i])
  redis.call('SADD', key, ARGV[2 * i - 1])
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
return #KEYS
"#;

static FLUSH: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(FLUSH_SOURCE));

struct JournalEntry {
    key: String,
    member: [u8; 16],
    /// When the session's set would expire had Redis seen the claim (Unix ms).
    until_ms: u64,
}

/// Request nonces this node accepted while Redis was unreachable: once Redis answers again
/// they are added to their sessions' claim sets, so another node refuses their replay too.
#[derive(Default)]
struct Journal {
    entries: Mutex<std::collections::VecDeque<JournalEntry>>,
    dropped: AtomicUsize,
}

impl Journal {
    fn push(&self, entry: JournalEntry) {
        let mut q = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= JOURNAL_MAX {
            q.pop_front();
            if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    max = JOURNAL_MAX,
                    "Redis is still unreachable: the oldest replay claims made meanwhile will not be shared"
                );
            }
        }
        q.push_back(entry);
    }

    /// Writes the journal to Redis (best effort, each batch within `timeout`); what fails is
    /// dropped with a warning (its nonces stay refused by this node).
    async fn flush(&self, conn: &mut ConnectionManager, timeout: Duration) {
        let entries: Vec<JournalEntry> = self.entries.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect();
        self.dropped.store(0, Ordering::Relaxed);
        let now = unix_ms();
        let live: Vec<&JournalEntry> = entries.iter().filter(|e| e.until_ms > now).collect();
        for batch in live.chunks(FLUSH_BATCH) {
            let mut inv = FLUSH.prepare_invoke();
            for e in batch {
                inv.key(&e.key).arg(&e.member[..]).arg(e.until_ms - now);
            }
            if !matches!(tokio::time::timeout(timeout, inv.invoke_async::<i64>(conn)).await, Ok(Ok(_))) {
                tracing::warn!(claims = batch.len(), "could not share replay claims made while Redis was unreachable");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The link: a connection per core, a breaker per core, one log line per outage.

/// A core's circuit breaker: open while Redis is believed unreachable.
#[derive(Debug, Default)]
pub struct Breaker {
    open: AtomicBool,
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// A round trip failed; true when this opened the breaker (its caller starts the probes).
    pub fn failed(&self) -> bool {
        !self.open.swap(true, Ordering::Relaxed)
    }

    /// A probe succeeded; true when this closed the breaker.
    pub fn succeeded(&self) -> bool {
        self.open.swap(false, Ordering::Relaxed)
    }
}

static NEXT_LINK: AtomicUsize = AtomicUsize::new(0);

struct CoreConn {
    link: usize,
    conn: ConnectionManager,
    breaker: Arc<Breaker>,
}

thread_local! {
    /// This thread's (core's) connection of each link.
    static CONNS: RefCell<Vec<CoreConn>> = const { RefCell::new(Vec::new()) };
}

/// What the cores of one process share about Redis's health.
struct Health {
    cores_down: AtomicUsize,
    since: Mutex<Option<Instant>>,
    journal: Journal,
}

impl Health {
    fn core_down(&self, error: &str) {
        if self.cores_down.fetch_add(1, Ordering::AcqRel) == 0 {
            *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            tracing::warn!(
                error,
                "Redis is unreachable: sessions, replay claims and rate limits fall back to this node until it answers again"
            );
        }
    }

    fn core_up(&self) {
        if self.cores_down.fetch_sub(1, Ordering::AcqRel) == 1 {
            let since = self.since.lock().unwrap_or_else(|p| p.into_inner()).take();
            let outage_ms = since.map_or(0, |s| s.elapsed().as_millis() as u64);
            tracing::info!(outage_ms, "Redis answers again: sessions, replay claims and rate limits are fleet-wide");
        }
    }
}

struct Link {
    id: usize,
    client: redis::Client,
    timeout: Duration,
    health: Arc<Health>,
}

impl Link {
    fn new(client: redis::Client, timeout: Duration) -> Link {
        let health =
            Arc::new(Health { cores_down: AtomicUsize::new(0), since: Mutex::new(None), journal: Journal::default() });
        Link { id: NEXT_LINK.fetch_add(1, Ordering::Relaxed), client, timeout, health }
    }

    /// This core's connection (made on first use, on this core's runtime) and breaker.
    fn core(&self) -> Option<(ConnectionManager, Arc<Breaker>)> {
        CONNS.with(|c| {
            let mut conns = c.borrow_mut();
            if let Some(cc) = conns.iter().find(|cc| cc.link == self.id) {
                return Some((cc.conn.clone(), cc.breaker.clone()));
            }
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_millis(500));
            let conn = match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::error!(error = %e, "cannot set up the Redis connection");
                    return None;
                }
            };
            let breaker = Arc::new(Breaker::default());
            conns.push(CoreConn { link: self.id, conn: conn.clone(), breaker: breaker.clone() });
            Some((conn, breaker))
        })
    }

    /// Runs `op` on this core's connection within the timeout; `None` when Redis is skipped
    /// (breaker open) or the round trip failed (which opens the breaker). A connection found
    /// dropped (Redis restarted since this core last used it) is replaced and the round trip
    /// tried once more, within the same timeout.
    async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (conn, breaker) = self.core()?;
        if breaker.is_open() {
            return None;
        }
        let attempts = async {
            match op(conn.clone()).await {
                Err(e) if e.is_unrecoverable_error() => op(conn.clone()).await,
                other => other,
            }
        };
        let error = match tokio::time::timeout(self.timeout, attempts).await {
            Ok(Ok(v)) => return Some(v),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", self.timeout.as_millis()),
        };
        if breaker.failed() {
            self.health.core_down(&error);
            self.probe(conn, breaker);
        }
        None
    }

    /// `PING`s in the background, one per [`PROBE_INTERVAL`] (each bounded by the timeout),
    /// until one is answered; that closes the breaker. On this core's runtime: it ends with it.
    fn probe(&self, mut conn: ConnectionManager, breaker: Arc<Breaker>) {
        let (health, timeout) = (self.health.clone(), self.timeout);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_INTERVAL).await;
                let ping = redis::cmd("PING");
                if let Ok(Ok(_)) = tokio::time::timeout(timeout, ping.query_async::<String>(&mut conn)).await {
                    break;
                }
            }
            // Before this core uses Redis again: what the node accepted meanwhile.
            health.journal.flush(&mut conn, timeout).await;
            if breaker.succeeded() {
                health.core_up();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        let r = RequestCounts::from_reply(&[3, 59_000]).unwrap();
        assert_eq!((r.ip, r.claim, r.identity), (Count { hits: 3, ms_left: 59_000 }, None, None));
        let r = RequestCounts::from_reply(&[1, 10, -3]).unwrap();
        assert_eq!(r.claim, Some(ClaimOutcome::Replayed));
        let r = RequestCounts::from_reply(&[1, 10, 7, 2, 20]).unwrap();
        assert_eq!(r.claim, Some(ClaimOutcome::Fresh { n: 7 }));
        assert_eq!(r.identity, Some(Count { hits: 2, ms_left: 20 }));
        assert!(RequestCounts::from_reply(&[1]).is_none());
        assert!(RequestCounts::from_reply(&[1, 2, 0]).is_none());
    }

    #[test]
    fn the_breaker_opens_and_closes_once() {
        let b = Breaker::default();
        assert!(!b.is_open());
        assert!(b.failed(), "the first failure opens it (and starts the probes)");
        assert!(!b.failed(), "a concurrent failure does not");
        assert!(b.is_open());
        assert!(b.succeeded());
        assert!(!b.succeeded());
        assert!(!b.is_open());
    }
}
