//! The identity registry: which cores hold connections of which identity. Sharded by a hash of
//! the identity so no lock is global; a delivery asks it for the recipient's cores only, so
//! its cost is proportional to the recipient's connections, never to all connections.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

/// identity → connections per core.
type RegistryShard = Mutex<HashMap<String, Vec<u32>>>;

const REGISTRY_SHARDS: usize = 64;

/// Which cores hold connections of which identity.
pub struct Registry {
    shards: Box<[RegistryShard]>,
    hasher: RandomState,
    cores: usize,
}

impl Registry {
    /// An empty registry for `cores` cores.
    pub fn new(cores: usize) -> Self {
        Registry {
            shards: (0..REGISTRY_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            cores,
        }
    }

    fn shard(&self, identity: &str) -> MutexGuard<'_, HashMap<String, Vec<u32>>> {
        let i = (self.hasher.hash_one(identity) as usize) % REGISTRY_SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One more connection of `identity` on `core`.
    pub fn bind(&self, identity: &str, core: usize) {
        let mut s = self.shard(identity);
        let counts = s.entry(identity.to_string()).or_insert_with(|| vec![0; self.cores]);
        counts[core] += 1;
    }

    /// One connection of `identity` on `core` fewer; the identity is forgotten with its last.
    pub fn unbind(&self, identity: &str, core: usize) {
        let mut s = self.shard(identity);
        if let Some(counts) = s.get_mut(identity) {
            counts[core] = counts[core].saturating_sub(1);
            if counts.iter().all(|c| *c == 0) {
                s.remove(identity);
            }
        }
    }

    /// The cores with at least one connection bound to `identity`.
    pub fn cores_of(&self, identity: &str) -> Vec<usize> {
        self.shard(identity)
            .get(identity)
            .map(|c| c.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, _)| i).collect())
            .unwrap_or_default()
    }

    /// Connections bound to `identity` on all cores.
    pub fn connections_of(&self, identity: &str) -> u32 {
        self.shard(identity).get(identity).map(|c| c.iter().sum()).unwrap_or(0)
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
        let r = Registry::new(3);
        assert!(r.cores_of("a").is_empty());
        r.bind("a", 2);
        r.bind("a", 0);
        r.bind("a", 2);
        r.bind("b", 1);
        assert_eq!(r.cores_of("a"), vec![0, 2]);
        assert_eq!(r.connections_of("a"), 3);
        assert_eq!(r.cores_of("b"), vec![1]);
        r.unbind("a", 2);
        assert_eq!(r.cores_of("a"), vec![0, 2], "one connection left on core 2");
        r.unbind("a", 2);
        assert_eq!(r.cores_of("a"), vec![0]);
        r.unbind("a", 0);
        assert!(r.cores_of("a").is_empty());
        assert_eq!(r.connections_of("a"), 0);
        assert_eq!(r.identities(), 1, "an identity without connections is forgotten");
    }

    #[test]
    fn unbinding_what_is_not_bound_changes_nothing() {
        let r = Registry::new(2);
        r.unbind("nobody", 1);
        r.bind("a", 1);
        r.unbind("a", 0);
        assert_eq!(r.cores_of("a"), vec![1]);
        assert_eq!(r.identities(), 1);
    }

    #[test]
    fn many_identities_spread_over_the_shards() {
        let r = Registry::new(4);
        for i in 0..1000 {
            r.bind(&format!("id{i}"), i % 4);
        }
        assert_eq!(r.identities(), 1000);
        assert!(r.shards.iter().all(|s| !s.lock().unwrap().is_empty()));
        for i in 0..1000 {
            assert_eq!(r.cores_of(&format!("id{i}")), vec![i % 4]);
            r.unbind(&format!("id{i}"), i % 4);
        }
        assert_eq!(r.identities(), 0);
    }
}
