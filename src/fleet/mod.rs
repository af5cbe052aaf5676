//! Running as one node of a fleet (`REDIS_URL`): what every node shares through Redis.
//!
//! This module owns the fleet's configuration ([`FleetConfig`]), this node's identity in the
//! fleet ([`Fleet`]: a random node id per process start, the URL other nodes reach it at) and
//! the key space in Redis ([`Fleet::key`]). The fleet features plug into it:
//! cross-node live delivery (the `Fanout` seam of `live::driver::hub`), sessions and request
//! nonces valid fleet-wide (plugged into `auth`), fleet-wide rate limits (plugged into
//! `http::edge`) and the forwarding of Engine.IO requests to the node that owns the session.
//!
//! Without `REDIS_URL` there is no [`Fleet`] and the server is a single node, as before.
//!
//! - [`sessions`]: BRC-103 session tokens any node can verify, and the fleet-wide rules of
//!   replay claims, idle expiry and retirement;
//! - [`limits`]: the one Redis round trip per request that applies them together with the
//!   fleet-wide rate limits, and the node-local fallback while Redis is unreachable;
//! - [`fees`]: the fee cache's invalidation notices, carried by the broker link.

pub mod broker;
pub mod delivery;
pub mod fees;
pub mod forward;
pub mod limits;
pub mod nodes;
pub mod sessions;

use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;

/// `REDIS_URL` and `MESSAGEBOX_NODE_URL`, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// `redis://…` or `rediss://…` (TLS).
    pub redis_url: String,
    /// `MESSAGEBOX_NODE_URL`: how other nodes reach this one (`http(s)://host:port`, no path).
    /// `None`: `http://<bind address>:<port>` once listening ([`Fleet::set_listening`]).
    pub node_url: Option<String>,
}

/// Why `REDIS_URL` or `MESSAGEBOX_NODE_URL` was refused (the text after `VAR: `).
pub fn check_redis_url(url: &str) -> Result<(), String> {
    let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
    if !scheme_ok {
        return Err(format!("must be redis://host:port[/db] or rediss://… (got {url:?})"));
    }
    redis::Client::open(url).map(|_| ()).map_err(|e| format!("{url:?} is not a Redis URL: {e}"))
}

/// `MESSAGEBOX_NODE_URL`: an http(s) origin, without a path; returned without a trailing `/`.
pub fn check_node_url(url: &str) -> Result<String, String> {
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| format!("must be http://host:port or https://host:port (got {url:?})"))?;
    if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(format!("must be an origin like http://10.0.0.5:8080, without a path (got {url:?})"));
    }
    Ok(trimmed.to_string())
}

/// This node's membership of the fleet. Cheap to share (`Arc<Fleet>`).
pub struct Fleet {
    config: FleetConfig,
    client: redis::Client,
    node_id: String,
    node_url: OnceLock<String>,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet").field("node_id", &self.node_id).field("node_url", &self.node_url.get()).finish()
    }
}

/// Prefix of every key and channel this server uses in Redis, so a Redis shared with other
/// applications keeps them apart.
pub const KEY_PREFIX: &str = "messagebox:";

impl Fleet {
    /// A node with a fresh random id. The URL was checked by [`check_redis_url`].
    pub fn new(config: FleetConfig) -> Result<Fleet, redis::RedisError> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let mut id = [0u8; 6];
        getrandom::fill(&mut id).expect("the OS random source works");
        let node_url = OnceLock::new();
        if let Some(u) = &config.node_url {
            let _ = node_url.set(u.clone());
        }
        Ok(Fleet { config, client, node_id: hex::encode(id), node_url })
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// The Redis client; open connections on the runtime that uses them.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// 12 lowercase hex digits, new at every start: ids this node hands out (Engine.IO sids)
    /// can carry it, and a restarted node never claims its predecessor's.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Records the address the server listens on; the node URL defaults to it
    /// (`127.0.0.1` for an unspecified bind address).
    pub fn set_listening(&self, addr: SocketAddr) {
        let ip = if addr.ip().is_unspecified() {
            match addr {
                SocketAddr::V4(_) => "127.0.0.1".to_string(),
                SocketAddr::V6(_) => "[::1]".to_string(),
            }
        } else {
            match addr {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            }
        };
        let _ = self.node_url.set(format!("http://{ip}:{}", addr.port()));
    }

    /// How other nodes reach this one; `None` before [`Fleet::set_listening`] unless configured.
    pub fn node_url(&self) -> Option<&str> {
        self.node_url.get().map(String::as_str)
    }

    /// A key or channel name in this server's key space: `messagebox:<part>`.
    pub fn key(&self, part: &str) -> String {
        let mut k = String::with_capacity(KEY_PREFIX.len() + part.len());
        k.push_str(KEY_PREFIX);
        k.push_str(part);
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(check_redis_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_redis_url("rediss://cache.example:6380").is_ok());
        assert!(check_redis_url("http://127.0.0.1:6379").is_err());
        assert!(check_redis_url("").is_err());
        assert_eq!(check_node_url("http://10.0.0.5:8080/").unwrap(), "http://10.0.0.5:8080");
        assert!(check_node_url("https://n1.example").is_ok());
        assert!(check_node_url("http://n1/api").is_err());
        assert!(check_node_url("10.0.0.5:8080").is_err());
    }

    #[test]
    fn node_identity() {
        let cfg = FleetConfig { redis_url: "redis://127.0.0.1:6379/0".into(), node_url: None };
        let a = Fleet::new(cfg.clone()).unwrap();
        let b = Fleet::new(cfg).unwrap();
        assert_eq!(a.node_id().len(), 12);
        assert_ne!(a.node_id(), b.node_id());
        assert_eq!(a.node_url(), None);
        a.set_listening("0.0.0.0:8080".parse().unwrap());
        assert_eq!(a.node_url(), Some("http://127.0.0.1:8080"));
        b.set_listening("[::1]:81".parse().unwrap());
        assert_eq!(b.node_url(), Some("http://[::1]:81"));
        assert_eq!(a.key("live:02ab"), "messagebox:live:02ab");
        let c = Fleet::new(FleetConfig {
            redis_url: "redis://127.0.0.1:6379/0".into(),
            node_url: Some("http://n3:3000".into()),
        })
        .unwrap();
        c.set_listening("0.0.0.0:1".parse().unwrap());
        assert_eq!(c.node_url(), Some("http://n3:3000"));
    }
}
