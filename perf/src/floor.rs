//! The crypto floor of the machine mbload runs on: what the BRC-103 crypto of one request
//! costs here, measured with a short bare loop before the load starts, so a server's CPU per
//! operation can be reported as a multiple of it (a ratio measured in one run survives the
//! machine's speed moving between days; absolute microseconds do not).
//!
//! One verify is what the server does to a signed request: parse the strict-DER signature,
//! fold the BRC-42 offset of the request's invoice into the ECDSA equation (one HMAC, one
//! scalar multiplication mod n) and verify over a SHA-256 digest with libsecp256k1 on the
//! thread's context (`messagebox::auth::SharedSecret::verify_digest`). One sign is the
//! server's answer: the BRC-42 child key (one HMAC, one scalar addition), ECDSA with RFC 6979
//! and low-S, DER encoding (`SharedSecret::sign_digest`). Hashing the payload is left out: it
//! scales with the body, and it is not the crypto the targets are stated in.
//!
//! The request floor is 1 verify + 1 sign; a live message's floor is 1 verify (the sender's
//! `sendMessage`) + 2 signs (its ack, and the delivery to the recipient).

use std::time::{Duration, Instant};

use messagebox::auth::keys::sha256;
use messagebox::auth::{PrivateKey, PublicKey, SharedSecret, Signature};
use serde::Serialize;

/// The floor in microseconds, and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Floor {
    /// One verify (`None` when the floor was given, not measured).
    pub verify_us: Option<f64>,
    /// One sign.
    pub sign_us: Option<f64>,
    /// The request floor: 1 verify + 1 sign.
    pub request_us: f64,
    /// The live floor: 1 verify + 2 signs (`None` when only `--floor-us` was given).
    pub live_us: Option<f64>,
    /// `measured` (the loop ran here) or `given` (`--floor-us`).
    pub source: &'static str,
    /// Time the loop took, and the timed batches of each primitive.
    pub seconds: f64,
    pub batches: usize,
    /// What the batches were timed with: `thread-cpu` (on-CPU time, preemption excluded) or
    /// `wall`.
    pub clock: &'static str,
    /// How `verify_us` and `sign_us` were taken from the batches: `p10` (the lowest decile).
    pub estimate: &'static str,
    /// The spread of the batches, µs per operation (`None` when given): a p90 far above the
    /// p10 says the loop was disturbed (another process on the core's sibling, a VM
    /// neighbour), and the floor may read high.
    pub verify_batches: Option<Spread>,
    pub sign_batches: Option<Spread>,
}

/// p10, p50 and p90 of a primitive's batches, µs per operation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

impl Spread {
    /// Sorts `v` (not empty) and reads its deciles.
    fn of(v: &mut [f64]) -> Spread {
        v.sort_by(f64::total_cmp);
        Spread { p10: quantile(v, 0.1), p50: quantile(v, 0.5), p90: quantile(v, 0.9) }
    }
}

impl Floor {
    /// A floor from the command line.
    pub fn given(request_us: f64, live_us: Option<f64>) -> Floor {
        Floor {
            verify_us: None,
            sign_us: None,
            request_us,
            live_us,
            source: "given",
            seconds: 0.0,
            batches: 0,
            clock: "given",
            estimate: "given",
            verify_batches: None,
            sign_batches: None,
        }
    }

    /// From the measured batches of each primitive: each one's p10.
    pub fn from_batches(verify: Spread, sign: Spread, seconds: f64, batches: usize, clock: &'static str) -> Floor {
        let (v, s) = (verify.p10, sign.p10);
        Floor {
            verify_us: Some(v),
            sign_us: Some(s),
            request_us: v + s,
            live_us: Some(v + 2.0 * s),
            source: "measured",
            seconds,
            batches,
            clock,
            estimate: "p10",
            verify_batches: Some(verify),
            sign_batches: Some(sign),
        }
    }

    /// The request floor's p90 over its p10 (1 when given): how disturbed the loop was.
    pub fn disturbance(&self) -> f64 {
        match (self.verify_batches, self.sign_batches) {
            (Some(v), Some(s)) => (v.p90 + s.p90) / (v.p10 + s.p10),
            _ => 1.0,
        }
    }
}

/// Distinct signed inputs, so the loop is not one input repeated.
const INPUTS: usize = 64;
/// Each timed batch lasts about this long: long enough that the clock's cost (a vDSO or
/// syscall read, under a µs) vanishes, short enough that many fit between disturbances.
const BATCH_TARGET: Duration = Duration::from_millis(2);

/// What one verify and one sign work on, as the server has them for a session.
struct Bench {
    server: PrivateKey,
    client: PublicKey,
    secret: SharedSecret,
    /// (invoice, digest, DER signature by the client's child key).
    signed: Vec<(Vec<u8>, [u8; 32], Vec<u8>)>,
}

impl Bench {
    fn new() -> Bench {
        let server = PrivateKey::from_bytes(&sha256(b"mbload floor server")).expect("a valid scalar");
        let client_key = PrivateKey::from_bytes(&sha256(b"mbload floor client")).expect("a valid scalar");
        let client = client_key.public_key();
        let secret = server.shared_secret(&client);
        // The client signs with the same shared point (ECDH is symmetric).
        let client_secret = client_key.shared_secret(&server.public_key());
        let signed = (0..INPUTS)
            .map(|i| {
                let invoice = format!("2-auth message signature-{i:032x} {i:032x}").into_bytes();
                let digest = sha256(&(i as u64).to_le_bytes());
                let sig = client_secret.sign_digest(&client_key, &invoice, &digest).expect("a child key");
                (invoice, digest, sig.to_der())
            })
            .collect();
        Bench { server, client, secret, signed }
    }

    /// One verify, as the server does it; false never happens with these inputs.
    fn verify(&self, i: usize) -> bool {
        let (invoice, digest, der) = &self.signed[i % INPUTS];
        Signature::from_der(der).is_some_and(|sig| self.secret.verify_digest(&self.client, invoice, digest, &sig))
    }

    /// One sign, as the server does it; the DER's length keeps the work observable.
    fn sign(&self, i: usize) -> usize {
        let (invoice, digest, _) = &self.signed[i % INPUTS];
        self.secret.sign_digest(&self.server, invoice, digest).map_or(0, |s| s.to_der().len())
    }
}

/// This thread's time on a CPU in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`), exact to the
/// call: the kernel adds the running slice. (`/proc/thread-self/schedstat` is not: it
/// advances only at scheduler ticks, 4 ms here, which made 10 ms batches read ±40 %.)
/// `None` where the clock is missing.
fn thread_cpu_ns() -> Option<u64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration; the clock id is a
    // constant the kernel knows or rejects with an error.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Times `n` runs of `op`; µs per run. On-CPU time when the kernel reports it, so time the
/// thread spent preempted by other processes (a shared machine) is not counted; otherwise
/// wall time.
fn batch(n: usize, mut op: impl FnMut(usize) -> usize) -> f64 {
    let cpu = thread_cpu_ns();
    let start = Instant::now();
    let mut acc = 0usize;
    for i in 0..n {
        acc = acc.wrapping_add(op(i));
    }
    std::hint::black_box(acc);
    let wall = start.elapsed();
    let spent = match (cpu, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => Duration::from_nanos(b - a),
        _ => wall,
    };
    spent.as_secs_f64() * 1e6 / n as f64
}

/// The `q` quantile of sorted, non-empty `v`, interpolated between neighbours.
fn quantile(v: &[f64], q: f64) -> f64 {
    let at = q * (v.len() - 1) as f64;
    let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (at - lo as f64)
}

/// Runs the loop on the calling thread for about `budget`: alternating timed batches of
/// verifies and of signs; each primitive's cost is its batches' lowest decile. On-CPU time
/// already leaves out preemption, but not what slows the core while the thread runs (a VM
/// neighbour, a busy sibling, a cold cache after a switch): that only ever adds time, so the
/// quiet batches are the machine's speed and the median of a busy machine's batches reads
/// high. The p10 rather than the minimum, so one odd batch does not set the floor.
pub fn measure(budget: Duration) -> Result<Floor, String> {
    let started = Instant::now();
    let bench = Bench::new();
    if !(0..INPUTS).all(|i| bench.verify(i)) {
        return Err("crypto floor: a signature made here does not verify".into());
    }
    // Calibrate the batch size on a few of each (this also warms the thread's context).
    let probe = batch(16, |i| usize::from(bench.verify(i))) + batch(16, |i| bench.sign(i));
    let n = ((BATCH_TARGET.as_secs_f64() * 1e6 / probe.max(0.01)) as usize).clamp(8, 100_000);
    let (mut verify, mut sign) = (Vec::new(), Vec::new());
    while verify.len() < 10 || started.elapsed() < budget {
        verify.push(batch(n, |i| usize::from(bench.verify(i))));
        sign.push(batch(n, |i| bench.sign(i)));
        if verify.len() >= 5000 {
            break;
        }
    }
    let batches = verify.len();
    let clock = if thread_cpu_ns().is_some() { "thread-cpu" } else { "wall" };
    let (verify, sign) = (Spread::of(&mut verify), Spread::of(&mut sign));
    Ok(Floor::from_batches(verify, sign, started.elapsed().as_secs_f64(), batches, clock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_measured_and_adds_up() {
        let f = measure(Duration::from_millis(50)).unwrap();
        let (v, s) = (f.verify_us.unwrap(), f.sign_us.unwrap());
        assert!(v > 0.0 && s > 0.0, "{f:?}");
        assert!((f.request_us - (v + s)).abs() < 1e-9);
        assert!((f.live_us.unwrap() - (v + 2.0 * s)).abs() < 1e-9);
        assert!(f.batches >= 10 && f.seconds > 0.0);
        let (vb, sb) = (f.verify_batches.unwrap(), f.sign_batches.unwrap());
        assert_eq!((vb.p10, sb.p10), (v, s));
        assert!(vb.p10 <= vb.p50 && vb.p50 <= vb.p90 && sb.p10 <= sb.p50 && sb.p50 <= sb.p90);
        assert!(f.disturbance() >= 1.0);
        assert_eq!(f.source, "measured");
    }

    #[test]
    fn the_server_side_verify_accepts_only_what_was_signed() {
        let b = Bench::new();
        assert!(b.verify(3));
        // A signature over another invoice's key does not verify under this one.
        let (inv, digest, _) = &b.signed[0];
        let (_, _, other) = &b.signed[1];
        let sig = Signature::from_der(other).unwrap();
        assert!(!b.secret.verify_digest(&b.client, inv, digest, &sig));
        assert!(b.sign(0) >= 8);
    }

    #[test]
    fn quantiles() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[5.0], 0.1), 5.0);
        let s = Spread::of(&mut (0..=100).rev().map(f64::from).collect::<Vec<_>>());
        assert_eq!((s.p10, s.p50, s.p90), (10.0, 50.0, 90.0));
    }
}
