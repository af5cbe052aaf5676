//! The HTTP edge's shared guards: the per-process concurrency gate, the two rate limiters and
//! the JSON structure budget. They are built once from `limits::HttpLimits` and shared by
//! every core (`App::edge`).
//!
//! Cost on the hot path (a send): the gate is one atomic add and one subtract; each limiter
//! one hash, one uncontended shard lock and one map probe, plus two short header strings; the
//! JSON pre-scan one pass over the body bytes. Against the signature verification of every
//! request (tens of µs) that is well under 1 %.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::fleet::limits::FleetLimits;
use crate::limits::HttpLimits;

use super::ratelimit::{IdentityLimiter, IpLimiter, Limiter};

/// Everything the edge shares across cores.
pub struct Edge {
    pub gate: Gate,
    pub ip: IpLimiter,
    pub identity: IdentityLimiter,
    /// Fleet mode: the limits count, and request nonces are claimed, fleet-wide; `ip` and
    /// `identity` then count only while Redis is unavailable.
    pub fleet: Option<FleetLimits>,
}

impl Edge {
    pub fn new(limits: &HttpLimits) -> Edge {
        Edge {
            gate: Gate::new(limits.max_concurrent_requests),
            ip: Limiter::new(limits.pre_auth_rate, limits.rate_limit_keys),
            identity: Limiter::new(limits.authenticated_rate, limits.rate_limit_keys),
            fleet: None,
        }
    }

    /// The edge of a fleet node.
    pub fn with_fleet(mut self, fleet: FleetLimits) -> Edge {
        self.fleet = Some(fleet);
        self
    }
}

/// `MESSAGE_BOX_MAX_CONCURRENT_REQUESTS`: requests in flight in this process.
pub struct Gate {
    in_flight: AtomicU64,
    max: Option<u64>,
}

impl Gate {
    pub fn new(max: Option<u64>) -> Gate {
        Gate { in_flight: AtomicU64::new(0), max }
    }

    /// A permit while under the cap (released on drop), `None` at capacity.
    pub fn enter(&self) -> Option<Permit<'_>> {
        let Some(max) = self.max else { return Some(Permit(None)) };
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Permit(Some(&self.in_flight)))
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A slot of the [`Gate`]; freed when the request's answer is built (or the request is
/// dropped because the client went away).
pub struct Permit<'a>(Option<&'a AtomicU64>);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.0 {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Whether a JSON text holds at most `max` values (scalars, strings — object keys included —
/// arrays and objects), counted in one pass without materialising anything. Parsed, each value
/// costs serde_json ~80 bytes (with `preserve_order`), so a 4 MB `[1,1,…]` would cost over
/// 160 MB and seconds of allocation; this refuses it after a few milliseconds of scanning.
/// Malformed text is counted as far as it goes and left to the parser to reject.
pub fn within_value_budget(body: &[u8], max: u64) -> bool {
    let mut count: u64 = 0;
    let mut in_scalar = false;
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        match b {
            b'"' => {
                count += 1;
                in_scalar = false;
                // Skip the string: its end is the next quote not escaped by a backslash.
                i += 1;
                while i < body.len() {
                    match body[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                count += 1;
                in_scalar = false;
            }
            b'-' | b'+' | b'.' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' => {
                if !in_scalar {
                    count += 1;
                    in_scalar = true;
                }
            }
            _ => in_scalar = false,
        }
        if count > max {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_budget_counts_values() {
        let count = |s: &str| (0..100).find(|&m| within_value_budget(s.as_bytes(), m)).unwrap();
        assert_eq!(count("{}"), 1);
        assert_eq!(count(r#"{"messageBox":"inbox"}"#), 3);
        assert_eq!(count("[1,22,-3.5e+7,true,null]"), 6);
        assert_eq!(count(r#"["a\"b,c", "\\", 7]"#), 4);
        assert_eq!(count(r#"{"a":[{"b":[]}]}"#), 6);
        let big = format!("[{}1]", "1,".repeat(2_000_000));
        let start = std::time::Instant::now();
        assert!(!within_value_budget(big.as_bytes(), 262_144));
        assert!(within_value_budget(big.as_bytes(), 2_000_002));
        assert!(start.elapsed().as_millis() < 2000);
    }

    #[test]
    fn gate_counts_permits() {
        let g = Gate::new(Some(2));
        let a = g.enter().unwrap();
        let _b = g.enter().unwrap();
        assert!(g.enter().is_none());
        drop(a);
        assert!(g.enter().is_some());
        assert_eq!(g.in_flight(), 1);
        let open = Gate::new(None);
        let _p: Vec<_> = (0..100).map(|_| open.enter().unwrap()).collect();
    }
}
