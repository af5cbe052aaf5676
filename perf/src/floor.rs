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
        }
    }

    /// From measured per-operation times.
    pub fn from_parts(verify_us: f64, sign_us: f64, seconds: f64, batches: usize, clock: &'static str) -> Floor {
        Floor {
            verify_us: Some(verify_us),
            sign_us: Some(sign_us),
            request_us: verify_us + sign_us,
            live_us: Some(verify_us + 2.0 * sign_us),
            source: "measured",
            seconds,
            batches,
            clock,
        }
    }
}

/// Distinct signed inputs, so the loop is not one input repeated.
const INPUTS: usize = 64;
/// Each timed batch lasts about this long: long enough that the clock's cost vanishes,
/// short enough that a preemption spoils only a few of them.
const BATCH_TARGET: Duration = Duration::from_millis(10);

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

/// This thread's time on a CPU in nanoseconds: the first field of
/// `/proc/thread-self/schedstat`. `None` where the kernel does not provide it.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_ascii_whitespace().next()?.parse().ok()
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

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Runs the loop on the calling thread for about `budget`: alternating timed batches of
/// verifies and of signs; each primitive's cost is the median batch's on-CPU time per run
/// (a batch disturbed anyway, e.g. by a busy sibling hyperthread, is an outlier the median
/// ignores).
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
    while verify.len() < 3 || started.elapsed() < budget {
        verify.push(batch(n, |i| usize::from(bench.verify(i))));
        sign.push(batch(n, |i| bench.sign(i)));
        if verify.len() >= 1000 {
            break;
        }
    }
    let batches = verify.len();
    let clock = if thread_cpu_ns().is_some() { "thread-cpu" } else { "wall" };
    Ok(Floor::from_parts(median(&mut verify), median(&mut sign), started.elapsed().as_secs_f64(), batches, clock))
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
        assert!(f.batches >= 3 && f.seconds > 0.0);
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
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
