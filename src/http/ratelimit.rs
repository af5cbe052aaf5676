//! The HTTP rate limits (`../shared/spec/ts-next-ops.md` §1.4, §2.2): fixed windows per key,
//! the newer upstream's keys (the client IP with IPv6 grouped by `/56`; `identity:<key>`),
//! and the draft-8 `RateLimit` / `RateLimit-Policy` / `Retry-After` header values as
//! express-rate-limit writes them.
//!
//! One [`Limiter`] per scope is shared by every core: a small array of mutex-guarded maps
//! picked by the key's hash, so two cores rarely meet on a lock and a check is one hash, one
//! short lock and one map probe. The partition key of a bucket (a SHA-256) is computed once,
//! when the bucket is created. Each limiter tracks at most `rate_limit_keys` keys: expired
//! windows are dropped first, then arbitrary ones (a client whose window is dropped starts a
//! fresh one; memory stays bounded whatever an address spray does).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Instant;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::limits::RateLimit;

const SHARDS: usize = 16;

/// The rate-limit key of a client address: IPv4 as is, IPv6 by its `/56` (what one end
/// user controls), or the one bucket of every request whose forwarded address was unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpKey {
    Addr(IpAddr),
    Invalid,
}

impl IpKey {
    pub fn new(ip: Option<IpAddr>) -> IpKey {
        match ip {
            // An IPv4-mapped IPv6 peer (dual-stack listener) is the IPv4 client.
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => IpKey::Addr(IpAddr::V4(v4)),
                None => IpKey::Addr(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 72) - 1)))),
            },
            Some(v4) => IpKey::Addr(v4),
            None => IpKey::Invalid,
        }
    }

    /// The bucket key as express-rate-limit's `ipKeyGenerator` spells it (for the partition key,
    /// and the fleet-wide counter's key).
    pub fn bucket(&self) -> String {
        match self {
            IpKey::Addr(IpAddr::V6(v6)) => format!("{v6}/56"),
            IpKey::Addr(v4) => v4.to_string(),
            IpKey::Invalid => "invalid".into(),
        }
    }
}

struct Window {
    start_ms: u64,
    hits: u64,
    /// `pk` of `RateLimit-Policy`: base64 of the first 12 hex digits of SHA-256(bucket key).
    pk: [u8; 16],
}

/// The outcome of counting one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub remaining: u64,
    /// Seconds until the key's window resets (ceil, ≥ 0).
    pub reset_secs: u64,
    pk: [u8; 16],
}

/// A fixed-window limiter over keys `K`, shared by every core.
pub struct Limiter<K> {
    shards: Box<[Mutex<HashMap<K, Window>>]>,
    hasher: RandomState,
    limit: RateLimit,
    window_ms: u64,
    per_shard: usize,
    epoch: Instant,
    /// The policy name, `<limit>-in-<duration>`.
    name: String,
}

impl<K: Hash + Eq> Limiter<K> {
    pub fn new(limit: RateLimit, max_keys: u64) -> Limiter<K> {
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
        let per_shard = (max_keys as usize).div_ceil(SHARDS).max(1);
        let window_ms = (limit.window.as_millis() as u64).max(1);
        Limiter {
            shards,
            hasher: RandomState::new(),
            limit,
            window_ms,
            per_shard,
            epoch: Instant::now(),
            name: policy_name(limit.max, window_ms),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Counts one request of `key`; `bucket` names the key for the partition key (called only
    /// when the key starts being tracked).
    pub fn check<Q>(&self, key: &Q, owned: impl FnOnce() -> (K, String)) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.check_at(key, owned, self.epoch.elapsed().as_millis() as u64)
    }

    fn check_at<Q>(&self, key: &Q, owned: impl FnOnce() -> (K, String), now: u64) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let window = match map.get_mut(key) {
            Some(w) => {
                if now >= w.start_ms + self.window_ms {
                    w.start_ms = now;
                    w.hits = 0;
                }
                w
            }
            None => {
                if map.len() >= self.per_shard {
                    self.make_room(&mut map, now);
                }
                let (k, bucket) = owned();
                map.entry(k).or_insert(Window { start_ms: now, hits: 0, pk: partition_key(&bucket) })
            }
        };
        window.hits = window.hits.saturating_add(1);
        let reset_ms = (window.start_ms + self.window_ms).saturating_sub(now);
        Decision {
            allowed: window.hits <= self.limit.max,
            remaining: self.limit.max.saturating_sub(window.hits),
            reset_secs: reset_ms.div_ceil(1000),
            pk: window.pk,
        }
    }

    /// Drops expired windows; if that frees less than an eighth of the shard, drops arbitrary
    /// ones too, so a spray of new keys costs amortised O(1) per insert.
    fn make_room(&self, map: &mut HashMap<K, Window>, now: u64) {
        map.retain(|_, w| now < w.start_ms + self.window_ms);
        let target = self.per_shard - self.per_shard.div_ceil(8);
        if map.len() > target {
            let excess = map.len() - target;
            let mut dropped = 0;
            map.retain(|_, _| {
                dropped += 1;
                dropped > excess
            });
        }
    }

    /// The decision for a count kept elsewhere (the fleet-wide counters,
    /// `crate::fleet::limits`): `hits` in a window with `ms_left` to run, for `bucket` as
    /// [`Self::check`] names it.
    pub fn decision(&self, hits: u64, ms_left: u64, bucket: &str) -> Decision {
        Decision {
            allowed: hits <= self.limit.max,
            remaining: self.limit.max.saturating_sub(hits),
            reset_secs: ms_left.div_ceil(1000),
            pk: partition_key(bucket),
        }
    }

    /// Keys tracked (tests).
    pub fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    /// The draft-8 `RateLimit-Policy` value of a decision.
    pub fn policy_header(&self, d: &Decision) -> String {
        let pk = std::str::from_utf8(&d.pk).unwrap_or_default();
        format!("\"{}\"; q={}; w={}; pk=:{pk}:", self.name, self.limit.max, self.window_ms.div_ceil(1000))
    }

    /// The draft-8 `RateLimit` value of a decision.
    pub fn state_header(&self, d: &Decision) -> String {
        format!("\"{}\"; r={}; t={}", self.name, d.remaining, d.reset_secs)
    }
}

/// express-rate-limit's default identifier: `<limit>-in-<n>sec|min|hr(s)|day(s)`.
fn policy_name(max: u64, window_ms: u64) -> String {
    let ms = window_ms as f64;
    let (seconds, minutes, hours, days) = (ms / 1000.0, ms / 60_000.0, ms / 3_600_000.0, ms / 86_400_000.0);
    let duration = if seconds < 60.0 {
        format!("{}sec", js_number(seconds))
    } else if minutes < 60.0 {
        format!("{}min", js_number(minutes))
    } else if hours < 24.0 {
        format!("{}hr{}", js_number(hours), if hours > 1.0 { "s" } else { "" })
    } else {
        format!("{}day{}", js_number(days), if days > 1.0 { "s" } else { "" })
    };
    format!("{max}-in-{duration}")
}

/// A number as JavaScript prints it (integers without a fraction; Rust's shortest
/// round-trip form otherwise, which agrees for the values a window produces).
fn js_number(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{}", x as u64)
    } else {
        format!("{x}")
    }
}

fn partition_key(bucket: &str) -> [u8; 16] {
    let digest = Sha256::digest(bucket.as_bytes());
    let hex = hex::encode(&digest[..6]);
    let mut out = [0u8; 16];
    let n = base64::engine::general_purpose::STANDARD.encode_slice(hex.as_bytes(), &mut out).unwrap_or(0);
    debug_assert_eq!(n, 16);
    out
}

/// The pre-authentication limiter (per client IP).
pub type IpLimiter = Limiter<IpKey>;

impl IpLimiter {
    pub fn check_ip(&self, key: IpKey) -> Decision {
        self.check(&key, || (key, key.bucket()))
    }
}

/// The per-identity limiter (after verification), keyed by the canonical identity key.
pub type IdentityLimiter = Limiter<Box<str>>;

impl IdentityLimiter {
    pub fn check_identity(&self, identity: &str) -> Decision {
        self.check(identity, || (identity.into(), identity_bucket(identity)))
    }
}

/// The partition-key name of an identity's bucket.
pub fn identity_bucket(identity: &str) -> String {
    format!("identity:{identity}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limiter(max: u64, secs: u64, keys: u64) -> IpLimiter {
        Limiter::new(RateLimit { max, window: Duration::from_secs(secs) }, keys)
    }

    #[test]
    fn fixed_windows_per_key() {
        let l = limiter(3, 60, 100);
        let a = IpKey::new(Some("10.0.0.1".parse().unwrap()));
        let b = IpKey::new(Some("10.0.0.2".parse().unwrap()));
        let owned = |k: IpKey| move || (k, k.bucket());
        let d: Vec<_> = (0..4).map(|_| l.check_at(&a, owned(a), 1000)).collect();
        assert_eq!(d.iter().map(|d| d.allowed).collect::<Vec<_>>(), [true, true, true, false]);
        assert_eq!(d.iter().map(|d| d.remaining).collect::<Vec<_>>(), [2, 1, 0, 0]);
        assert_eq!(d[3].reset_secs, 60);
        assert!(l.check_at(&b, owned(b), 1000).allowed, "another key is unaffected");
        assert_eq!(l.check_at(&a, owned(a), 30_500).reset_secs, 31, "ceil of the time left");
        let fresh = l.check_at(&a, owned(a), 61_000);
        assert!(fresh.allowed && fresh.remaining == 2, "a new window after the old one ends");
    }

    #[test]
    fn ipv6_by_56_and_mapped_ipv4() {
        let k = |s: &str| IpKey::new(Some(s.parse().unwrap()));
        assert_eq!(k("2001:db8:1234:5600::1"), k("2001:db8:1234:56ff:ffff::9"));
        assert_ne!(k("2001:db8:1234:5600::1"), k("2001:db8:1234:5700::1"));
        assert_eq!(k("2001:db8:1234:56ab::1").bucket(), "2001:db8:1234:5600::/56");
        assert_eq!(k("::ffff:1.2.3.4"), k("1.2.3.4"));
        assert_eq!(IpKey::new(None).bucket(), "invalid");
    }

    #[test]
    fn headers_as_express_rate_limit_writes_them() {
        let l = limiter(300, 60, 100);
        let d = l.check_ip(IpKey::new(Some("127.0.0.1".parse().unwrap())));
        // sha256("127.0.0.1") = 12ca17b49af2…; base64("12ca17b49af2").
        assert_eq!(l.policy_header(&d), "\"300-in-1min\"; q=300; w=60; pk=:MTJjYTE3YjQ5YWYy:");
        assert_eq!(l.state_header(&d), "\"300-in-1min\"; r=299; t=60");
        assert_eq!(policy_name(5, 1000), "5-in-1sec");
        assert_eq!(policy_name(5, 90_000), "5-in-1.5min");
        assert_eq!(policy_name(5, 3_600_000), "5-in-1hr");
        assert_eq!(policy_name(5, 7_200_000), "5-in-2hrs");
        assert_eq!(policy_name(5, 86_400_000), "5-in-1day");
    }

    #[test]
    fn decisions_for_counts_kept_elsewhere_match_local_ones() {
        let l = limiter(3, 60, 100);
        let key = IpKey::new(Some("10.0.0.1".parse().unwrap()));
        let local = l.check_at(&key, || (key, key.bucket()), 0);
        assert_eq!(l.decision(1, 60_000, &key.bucket()), local);
        let over = l.decision(4, 1_001, &key.bucket());
        assert!(!over.allowed);
        assert_eq!((over.remaining, over.reset_secs), (0, 2));
    }

    #[test]
    fn tracked_keys_stay_bounded() {
        let l = limiter(10, 60, 160);
        for i in 0..100_000u32 {
            l.check_ip(IpKey::new(Some(IpAddr::from(i.to_be_bytes()))));
        }
        assert!(l.tracked() <= 160, "{}", l.tracked());
        let id: IdentityLimiter = Limiter::new(RateLimit { max: 1, window: Duration::from_secs(60) }, 10);
        assert!(id.check_identity("02ab").allowed);
        assert!(!id.check_identity("02ab").allowed);
    }
}
