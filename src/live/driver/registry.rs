//! The identity registry: which cores hold connections of which identity, and in which order
//! they were bound. Sharded by a hash of the identity so no lock is global; a delivery asks it
//! for the recipient's cores only, so its cost is proportional to the recipient's
//! connections, never to all connections.
//!
//! It also enforces the two identity-wide limits of the live channel, as the one place that
//! sees every core's connections: at most `max_connections_per_identity` connections bound
//! to an identity ([`Registry::try_bind`]), and a delivery reaches only the newest
//! `max_recipient_connections` of them ([`Registry::targets`]; the newer upstream keeps the
//! newest "so an old tab population cannot exclude the currently joining tab").

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

/// One bound connection: its bind sequence number (process-wide, increasing) and its core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Binding {
    seq: u64,
    core: u32,
}

/// identity → its bound connections, oldest first.
type RegistryShard = Mutex<HashMap<String, Vec<Binding>>>;

const REGISTRY_SHARDS: usize = 64;

/// Which cores hold connections of which identity.
pub struct Registry {
    shards: Box<[RegistryShard]>,
    hasher: RandomState,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry {
            shards: (0..REGISTRY_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, identity: &str) -> MutexGuard<'_, HashMap<String, Vec<Binding>>> {
        let i = (self.hasher.hash_one(identity) as usize) % REGISTRY_SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more connection of `identity` on `core`, bound as number `seq` (increasing across
    /// the process), unless `identity` already has `max` connections: then false and nothing
    /// changes. Check and insertion are one step under the shard's lock.
    pub fn try_bind(&self, identity: &str, core: usize, seq: u64, max: Option<usize>) -> bool {
        let mut s = self.shard(identity);
        let list = s.entry(identity.to_string()).or_default();
        if max.is_some_and(|m| list.len() >= m) {
            if list.is_empty() {
                s.remove(identity);
            }
            return false;
        }
        // Sequence numbers are taken before the lock, so keep the list ordered explicitly.
        let at = list.partition_point(|b| b.seq < seq);
        list.insert(at, Binding { seq, core: core as u32 });
        true
    }

    /// The connection `seq` of `identity` on `core` is gone; the identity is forgotten with
    /// its last.
    pub fn unbind(&self, identity: &str, core: usize, seq: u64) {
        let mut s = self.shard(identity);
        if let Some(list) = s.get_mut(identity) {
            if let Some(i) = list.iter().position(|b| b.seq == seq && b.core as usize == core) {
                list.remove(i);
            }
            if list.is_empty() {
                s.remove(identity);
            }
        }
    }

    /// The cores with at least one connection bound to `identity`.
    pub fn cores_of(&self, identity: &str) -> Vec<usize> {
        self.targets(identity, None).into_iter().map(|(core, _)| core).collect()
    }

    /// Where a delivery to `identity` goes when at most `newest` connections receive it: each
    /// core holding one of the newest `newest` connections, with the lowest sequence number
    /// of those on it (the core delivers to its connections bound at or after it). Sorted by
    /// core.
    pub fn targets(&self, identity: &str, newest: Option<usize>) -> Vec<(usize, u64)> {
        let s = self.shard(identity);
        let Some(list) = s.get(identity) else { return Vec::new() };
        let skip = newest.map_or(0, |n| list.len().saturating_sub(n));
        let mut out: Vec<(usize, u64)> = Vec::new();
        // Oldest first, so the first seen on a core is its lowest.
        for b in &list[skip..] {
            if !out.iter().any(|(c, _)| *c == b.core as usize) {
                out.push((b.core as usize, b.seq));
            }
        }
        out.sort_unstable();
        out
    }

    /// Connections bound to `identity` on all cores.
    pub fn connections_of(&self, identity: &str) -> u32 {
        self.shard(identity).get(identity).map_or(0, |l| l.len() as u32)
    }

    /// Identities with at least one connection.
    #[cfg(test)]
    fn identities(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_connections_per_core() {
        let r = Registry::new();
        assert!(r.cores_of("a").is_empty());
        assert!(r.try_bind("a", 2, 1, None));
        assert!(r.try_bind("a", 0, 2, None));
        assert!(r.try_bind("a", 2, 3, None));
        assert!(r.try_bind("b", 1, 4, None));
        assert_eq!(r.cores_of("a"), vec![0, 2]);
        assert_eq!(r.connections_of("a"), 3);
        assert_eq!(r.cores_of("b"), vec![1]);
        r.unbind("a", 2, 3);
        assert_eq!(r.cores_of("a"), vec![0, 2], "one connection left on core 2");
        r.unbind("a", 2, 1);
        assert_eq!(r.cores_of("a"), vec![0]);
        r.unbind("a", 0, 2);
        assert!(r.cores_of("a").is_empty());
        assert_eq!(r.connections_of("a"), 0);
        assert_eq!(r.identities(), 1, "an identity without connections is forgotten");
    }

    #[test]
    fn unbinding_what_is_not_bound_changes_nothing() {
        let r = Registry::new();
        r.unbind("nobody", 1, 0);
        assert!(r.try_bind("a", 1, 7, None));
        r.unbind("a", 0, 7);
        r.unbind("a", 1, 8);
        assert_eq!(r.cores_of("a"), vec![1]);
        assert_eq!(r.identities(), 1);
    }

    #[test]
    fn many_identities_spread_over_the_shards() {
        let r = Registry::new();
        for i in 0..1000 {
            assert!(r.try_bind(&format!("id{i}"), i % 4, i as u64, None));
        }
        assert_eq!(r.identities(), 1000);
        assert!(r.shards.iter().all(|s| !s.lock().unwrap().is_empty()));
        for i in 0..1000 {
            assert_eq!(r.cores_of(&format!("id{i}")), vec![i % 4]);
            r.unbind(&format!("id{i}"), i % 4, i as u64);
        }
        assert_eq!(r.identities(), 0);
    }

    #[test]
    fn connections_per_identity_are_capped() {
        let r = Registry::new();
        assert!(r.try_bind("a", 0, 1, Some(2)));
        assert!(r.try_bind("a", 1, 2, Some(2)));
        assert!(!r.try_bind("a", 0, 3, Some(2)), "a third is refused, on any core");
        assert_eq!(r.connections_of("a"), 2);
        assert!(r.try_bind("b", 0, 4, Some(2)), "other identities are not affected");
        r.unbind("a", 0, 1);
        assert!(r.try_bind("a", 0, 5, Some(2)), "room again once one left");
        // A refusal of an identity without connections leaves nothing behind.
        assert!(!r.try_bind("c", 0, 6, Some(0)));
        assert_eq!(r.identities(), 2);
    }

    #[test]
    fn deliveries_reach_the_newest_connections() {
        let r = Registry::new();
        // Bound in this order: seq 1 on core 0, 2 on core 1, 3 on core 0, 4 on core 2, 5 on core 1;
        // out-of-order insertion (seq taken before the lock) still sorts.
        for (seq, core) in [(1, 0), (3, 0), (2, 1), (5, 1), (4, 2)] {
            assert!(r.try_bind("a", core, seq, None));
        }
        assert_eq!(r.targets("a", None), vec![(0, 1), (1, 2), (2, 4)]);
        // The newest three are 3 (core 0), 4 (core 2), 5 (core 1).
        assert_eq!(r.targets("a", Some(3)), vec![(0, 3), (1, 5), (2, 4)]);
        assert_eq!(r.targets("a", Some(1)), vec![(1, 5)]);
        assert_eq!(r.targets("a", Some(0)), vec![]);
        assert_eq!(r.targets("nobody", Some(3)), vec![]);
    }
}
