//! The fleet's node registry: which nodes are alive, and the URL each is reached at.
//!
//! Every node registers `messagebox:node:<node_id>` → its node URL in Redis with a TTL
//! ([`NodeTiming::ttl`]) and refreshes it in the background, on a thread of its own with a
//! current-thread runtime (so Redis I/O never runs on a serving core). A node that dies
//! stops refreshing and disappears after the TTL; a node that stops cleanly deletes its key.
//!
//! [`Nodes::lookup`] answers "where is node X" for the forwarding of Engine.IO requests
//! (`fleet::forward`). Answers are cached briefly per node id; a miss is one `GET` on the
//! registry thread. While Redis does not answer, the last address a node was seen at is
//! used (up to [`NodeTiming::stale`]): a node that died meanwhile refuses the connection and
//! its clients reconnect, so a stale address costs nothing but that attempt. After a failed
//! lookup, Redis is not asked again for [`NodeTiming::negative_cache`], so an outage delays
//! one lookup per interval by the Redis timeout, not every request.
//!
//! Node ids come from session ids, which clients send: the cache is bounded, and a flood of
//! made-up ids costs one Redis `GET` each, never memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use tokio::sync::{mpsc, oneshot, watch};

use super::Fleet;

/// The registry's clock settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeTiming {
    /// How long a registration lives unrefreshed: a node that dies is forgotten after this.
    pub ttl: Duration,
    /// How often a node refreshes its registration (a fraction of `ttl`, so one missed
    /// refresh does not drop it).
    pub refresh: Duration,
    /// How long a node's address, once looked up, is reused.
    pub cache: Duration,
    /// How long "no such node" is reused.
    pub negative_cache: Duration,
    /// Longest wait for one Redis command (and for a lookup as a whole).
    pub redis_timeout: Duration,
    /// While Redis fails, how old a cached address may be and still be used.
    pub stale: Duration,
}

impl Default for NodeTiming {
    fn default() -> Self {
        NodeTiming {
            ttl: Duration::from_secs(15),
            refresh: Duration::from_secs(5),
            cache: Duration::from_secs(5),
            negative_cache: Duration::from_secs(1),
            redis_timeout: Duration::from_secs(1),
            stale: Duration::from_secs(300),
        }
    }
}

/// Node ids remembered at most (made-up ids must not grow memory).
const MAX_CACHED: usize = 4096;
/// Lookups queued for the registry thread; beyond this a lookup answers "unknown".
const LOOKUP_QUEUE: usize = 1024;
/// How long [`Nodes::start`] waits for the first registration.
const FIRST_REGISTRATION: Duration = Duration::from_secs(3);

/// What Redis said about a node, as the registry thread reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// Registered at this URL.
    At(String),
    /// Not registered (never was, or expired).
    Absent,
    /// Redis did not answer.
    Failed,
}

/// The cache of lookups: pure, so its rules are tested without Redis.
#[derive(Debug, Default)]
struct Cache {
    entries: HashMap<String, (Option<String>, Instant)>,
    /// When Redis last failed a lookup: for `negative_cache` after it, lookups do not wait
    /// for Redis again (one request per interval pays the timeout, not every request).
    failed_at: Option<Instant>,
}

impl Cache {
    /// A fresh answer: `Some(Some(url))`, `Some(None)` (known absent), or `None` (ask Redis).
    /// Just after Redis failed, what [`Cache::record`] makes of a failure, without asking.
    fn fresh(&mut self, node: &str, now: Instant, t: &NodeTiming) -> Option<Option<String>> {
        if let Some((url, at)) = self.entries.get(node) {
            let max_age = if url.is_some() { t.cache } else { t.negative_cache };
            if now.saturating_duration_since(*at) < max_age {
                return Some(url.clone());
            }
        }
        let failing = self.failed_at.is_some_and(|f| now.saturating_duration_since(f) < t.negative_cache);
        failing.then(|| self.record(node, Answer::Failed, now, t))
    }

    /// Records `answer` and returns the address to use.
    fn record(&mut self, node: &str, answer: Answer, now: Instant, t: &NodeTiming) -> Option<String> {
        let url = match answer {
            Answer::At(url) => {
                self.failed_at = None;
                Some(url)
            }
            Answer::Absent => {
                self.failed_at = None;
                None
            }
            Answer::Failed => {
                if self.failed_at.is_none_or(|f| now.saturating_duration_since(f) >= t.negative_cache) {
                    self.failed_at = Some(now);
                }
                // Redis is away: the last address seen, if recent enough (not re-stamped, so
                // it ages out).
                return match self.entries.get(node) {
                    Some((Some(url), at)) if now.saturating_duration_since(*at) < t.stale => Some(url.clone()),
                    _ => None,
                };
            }
        };
        if self.entries.len() >= MAX_CACHED && !self.entries.contains_key(node) {
            // Made-up ids first, then anything past its freshness; if that frees nothing,
            // start over (real nodes are looked up again within one Redis round trip).
            self.entries.retain(|_, (u, at)| u.is_some() && now.saturating_duration_since(*at) < t.stale);
            if self.entries.len() >= MAX_CACHED {
                self.entries.clear();
            }
        }
        self.entries.insert(node.to_string(), (url.clone(), now));
        url
    }
}

struct Lookup {
    node: String,
    reply: oneshot::Sender<Answer>,
}

/// This node's registration and the lookups of the others. Shared by every core.
pub struct Nodes {
    fleet: Arc<Fleet>,
    timing: NodeTiming,
    cache: Mutex<Cache>,
    lookups: mpsc::Sender<Lookup>,
    /// Taken by [`Nodes::start`].
    receiver: Mutex<Option<mpsc::Receiver<Lookup>>>,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes").field("node_id", &self.fleet.node_id()).field("timing", &self.timing).finish()
    }
}

impl Nodes {
    pub fn new(fleet: Arc<Fleet>, timing: NodeTiming) -> Arc<Nodes> {
        let (tx, rx) = mpsc::channel(LOOKUP_QUEUE);
        Arc::new(Nodes {
            fleet,
            timing,
            cache: Mutex::new(Cache::default()),
            lookups: tx,
            receiver: Mutex::new(Some(rx)),
        })
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    pub fn timing(&self) -> &NodeTiming {
        &self.timing
    }

    /// The Redis key of a node's registration.
    pub fn key_of(&self, node_id: &str) -> String {
        self.fleet.key(&format!("node:{node_id}"))
    }

    /// Starts the registry thread (once; the node URL must be known, see
    /// [`Fleet::set_listening`]) and waits, up to 3 s, for the first registration, so sids
    /// handed out from now on can be found by the other nodes. Redis being down is logged
    /// and retried; only a failure to start the thread is an error. The registration is
    /// deleted when `shutdown` flips, and then the thread ends (join the handle to wait for
    /// the deletion; `None` when the registry was started already).
    pub fn start(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Option<std::thread::JoinHandle<()>>> {
        let Some(rx) = self.receiver.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(None);
        };
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let nodes = self.clone();
        let thread = std::thread::Builder::new().name("messagebox-fleet-nodes".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the node registry's runtime");
                    return;
                }
            };
            rt.block_on(nodes.run(rx, shutdown, first_tx));
        })?;
        let _ = first_rx.recv_timeout(FIRST_REGISTRATION);
        Ok(Some(thread))
    }

    /// The URL of node `node_id` (12 hex digits), or `None` when it is not registered (dead,
    /// never existed) or cannot be found out now.
    pub async fn lookup(&self, node_id: &str) -> Option<String> {
        let now = Instant::now();
        let cached = self.cache.lock().unwrap_or_else(|p| p.into_inner()).fresh(node_id, now, &self.timing);
        if let Some(cached) = cached {
            return cached;
        }
        let (tx, rx) = oneshot::channel();
        let answer = match self.lookups.try_send(Lookup { node: node_id.to_string(), reply: tx }) {
            Ok(()) => tokio::time::timeout(self.timing.redis_timeout, rx)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(Answer::Failed),
            // Queue full, or the registry is not running.
            Err(_) => Answer::Failed,
        };
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).record(node_id, answer, Instant::now(), &self.timing)
    }

    async fn run(
        self: Arc<Self>,
        mut lookups: mpsc::Receiver<Lookup>,
        mut shutdown: watch::Receiver<bool>,
        first: std::sync::mpsc::Sender<()>,
    ) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timing.redis_timeout))
            .set_response_timeout(Some(self.timing.redis_timeout))
            .set_number_of_retries(1);
        let redis = match ConnectionManager::new_lazy_with_config(self.fleet.client().clone(), config) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "node registry: cannot set up the Redis connection");
                let _ = first.send(());
                return;
            }
        };
        let node_id = self.fleet.node_id().to_string();
        let key = self.key_of(&node_id);
        let url = self.fleet.node_url().unwrap_or_default().to_string();
        let ttl_secs = self.timing.ttl.as_secs().max(1);
        let mut failing = false;
        let mut first = Some(first);
        let mut tick = tokio::time::interval(self.timing.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let mut c = redis.clone();
                    let set: Result<(), _> = c.set_ex(&key, &url, ttl_secs).await;
                    match set {
                        Ok(()) if failing => {
                            failing = false;
                            tracing::info!(node_id, "node registry: registered again");
                        }
                        Ok(()) => {}
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(node_id, error = %e, "node registry: cannot register this node in Redis; other nodes cannot forward to it until it can");
                        }
                        Err(_) => {}
                    }
                    if let Some(f) = first.take() {
                        let _ = f.send(());
                    }
                }
                Some(lookup) = lookups.recv() => {
                    let mut c = redis.clone();
                    let key = self.key_of(&lookup.node);
                    // One task per lookup: a slow answer does not hold up the refresh.
                    tokio::spawn(async move {
                        let got: Result<Option<String>, _> = c.get(&key).await;
                        let answer = match got {
                            Ok(Some(url)) => Answer::At(url),
                            Ok(None) => Answer::Absent,
                            Err(e) => {
                                tracing::debug!(error = %e, "node registry: lookup failed");
                                Answer::Failed
                            }
                        };
                        let _ = lookup.reply.send(answer);
                    });
                }
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        // Stopping: the other nodes stop forwarding here at once instead of after the TTL.
        let mut c = redis.clone();
        let del = tokio::time::timeout(self.timing.redis_timeout, c.del::<_, ()>(&key)).await;
        if !matches!(del, Ok(Ok(()))) {
            tracing::debug!(node_id, "node registry: could not delete the registration; it expires by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_rules() {
        let t = NodeTiming::default();
        let t0 = Instant::now();
        let mut c = Cache::default();
        assert_eq!(c.fresh("a", t0, &t), None, "nothing known: ask Redis");
        assert_eq!(c.record("a", Answer::At("http://a:1".into()), t0, &t), Some("http://a:1".into()));
        assert_eq!(c.fresh("a", t0 + t.cache / 2, &t), Some(Some("http://a:1".into())));
        assert_eq!(c.fresh("a", t0 + t.cache, &t), None, "positive answers age out");
        assert_eq!(c.record("b", Answer::Absent, t0, &t), None);
        assert_eq!(c.fresh("b", t0, &t), Some(None), "absence is cached");
        assert_eq!(c.fresh("b", t0 + t.negative_cache, &t), None, "briefly");
        // Redis failing: the last address, while not older than `stale`.
        let later = t0 + t.cache * 3;
        assert_eq!(c.record("a", Answer::Failed, later, &t), Some("http://a:1".into()));
        assert_eq!(c.record("a", Answer::Failed, t0 + t.stale, &t), None, "too old to trust");
        assert_eq!(c.record("b", Answer::Failed, later, &t), None, "a known absence stays absent");
        assert_eq!(c.record("z", Answer::Failed, later, &t), None, "never seen");
        // A node that expired is forgotten.
        assert_eq!(c.record("a", Answer::Absent, later, &t), None);
        assert_eq!(c.record("a", Answer::Failed, later, &t), None);
    }

    #[test]
    fn after_a_failure_lookups_do_not_wait_for_redis() {
        let t = NodeTiming::default();
        let t0 = Instant::now();
        let mut c = Cache::default();
        c.record("a", Answer::At("http://a:1".into()), t0, &t);
        let t1 = t0 + t.cache;
        assert_eq!(c.fresh("a", t1, &t), None, "stale: ask Redis");
        assert_eq!(c.record("a", Answer::Failed, t1, &t), Some("http://a:1".into()));
        // Within a second of the failure: the stale address at once, and nothing for others.
        assert_eq!(c.fresh("a", t1 + t.negative_cache / 2, &t), Some(Some("http://a:1".into())));
        assert_eq!(c.fresh("z", t1 + t.negative_cache / 2, &t), Some(None));
        // Later, Redis is asked again; an answer ends the episode.
        assert_eq!(c.fresh("a", t1 + t.negative_cache, &t), None);
        c.record("a", Answer::At("http://a:2".into()), t1 + t.negative_cache, &t);
        assert_eq!(c.fresh("z", t1 + t.negative_cache, &t), None, "Redis answers again: ask it");
    }

    #[test]
    fn cache_is_bounded() {
        let t = NodeTiming::default();
        let t0 = Instant::now();
        let mut c = Cache::default();
        c.record("real", Answer::At("http://r:1".into()), t0, &t);
        for i in 0..3 * MAX_CACHED {
            c.record(&format!("junk{i}"), Answer::Absent, t0, &t);
            assert!(c.entries.len() <= MAX_CACHED);
        }
        assert_eq!(c.fresh("real", t0, &t), Some(Some("http://r:1".into())), "real nodes outlive made-up ids");
    }
}
