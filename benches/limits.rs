//! What issue 9's per-request checks cost on the path of a send: the two rate limiters (per
//! client IP before authentication, per identity after) with the draft-8 header values every
//! answer carries, and the storage-quota ledger's reserve and settle for an identity it
//! already knows (the steady state: the database is read only on first sight and at a quota).
//! Each is also run from two threads at once, the two cores of this machine meeting on the
//! shared limiter and ledger.
//!
//! `cargo bench --bench limits`; figures are recorded in perf/RESULTS.md ("Issue 9's cost
//! per request").

use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use messagebox::http::ratelimit::{IdentityLimiter, IpKey, IpLimiter};
use messagebox::limits::RateLimit;
use messagebox::store::quota::{Charge, QuotaLimits};
use messagebox::store::{InsertOutcome, Store, StoreOptions};

const SENDER: &str = "028d37b941208cd6b8a4c28288eda5f2f16c2b3ab0fcb6d13c18b47fe37b971fc1";
const RECIPIENT: &str = "0236d3b5b3c6c6b1c1a2f3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f70819";
/// A second pair, for two threads that send as different identities.
const SENDER_2: &str = "03f2a1c8b0e4d6f70819a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7a1";
const RECIPIENT_2: &str = "02c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3";

/// Lifted maxima (as a benchmark runs): the limiters count every request but never refuse.
fn limiters() -> (IpLimiter, IdentityLimiter) {
    let rate = RateLimit { max: 1_000_000_000, window: Duration::from_secs(60) };
    (IpLimiter::new(rate, 100_000), IdentityLimiter::new(rate, 100_000))
}

/// Both checks of one request and the header values of its answer.
fn rate_limit_request(ip: &IpLimiter, id: &IdentityLimiter, addr: IpAddr, identity: &str) -> usize {
    let a = ip.check_ip(IpKey::new(Some(addr)));
    let b = id.check_identity(identity);
    ip.policy_header(&a).len() + ip.state_header(&a).len() + id.policy_header(&b).len() + id.state_header(&b).len()
}

async fn quota_send(store: &Store, n: u64) {
    quota_send_as(store, SENDER, RECIPIENT, n).await
}

async fn quota_send_as(store: &Store, sender: &str, recipient: &str, n: u64) {
    let charge = Charge { sender, recipient, bytes: 120 + n % 7 };
    let r = store.quotas().reserve(store.as_ref(), &[charge], messagebox::store::now()).await.expect("fits");
    r.stored(|_| InsertOutcome::Inserted);
}

/// `per_thread` operations on each of two threads; the wall time of the slower.
fn two_threads(per_thread: u64, op: impl Fn(u64) + Sync) -> Duration {
    two_threads_each(per_thread, |_, i| op(i))
}

/// The same, telling `op` which thread (0 or 1) runs it.
fn two_threads_each(per_thread: u64, op: impl Fn(usize, u64) + Sync) -> Duration {
    let start = Barrier::new(2);
    let run = |thread: usize| {
        let op = &op;
        let start = &start;
        move || {
            start.wait();
            let t = Instant::now();
            for i in 0..per_thread {
                op(thread, i);
            }
            t.elapsed()
        }
    };
    std::thread::scope(|s| {
        let a = s.spawn(run(0));
        let b = s.spawn(run(1));
        a.join().unwrap().max(b.join().unwrap())
    })
}

fn bench(c: &mut Criterion) {
    let (ip, id) = limiters();
    let addr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    c.bench_function("rate limits: IP + identity check and their headers, one request", |b| {
        b.iter(|| black_box(rate_limit_request(&ip, &id, black_box(addr), black_box(SENDER))))
    });
    c.bench_function("rate limits: the same from two threads at once (per request)", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_| {
                black_box(rate_limit_request(&ip, &id, addr, SENDER));
            })
        })
    });

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Every quota on, high enough that the rows the ledger counts (none reach the database
    // here) never fill one.
    let big = Some(u64::MAX / 4);
    let quotas = QuotaLimits { sender_messages: big, sender_bytes: big, inbox_messages: big, inbox_bytes: big };
    let options = StoreOptions { quotas, ..StoreOptions::default() };
    let store = rt.block_on(messagebox::store::open("sqlite::memory:", &options)).expect("store");
    rt.block_on(store.migrate()).expect("migrate");
    // First sight reads the (empty) database once; from then on the ledger answers.
    rt.block_on(quota_send(&store, 0));
    let mut n = 0u64;
    c.bench_function("quota ledger: reserve + settle one send, identity known", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(quota_send(&store, n))
        })
    });
    c.bench_function("quota ledger: the same from two threads at once (per send)", |b| {
        b.iter_custom(|iters| two_threads(iters, |i| poll_once(&store, i)))
    });
    // As two cores serving different clients do: each thread its own sender and recipient.
    rt.block_on(quota_send_as(&store, SENDER_2, RECIPIENT_2, 0));
    c.bench_function("quota ledger: two threads, each its own identities (per send)", |b| {
        b.iter_custom(|iters| {
            two_threads_each(iters, |thread, i| {
                let (sender, recipient) = if thread == 0 { (SENDER, RECIPIENT) } else { (SENDER_2, RECIPIENT_2) };
                poll_ready(quota_send_as(&store, sender, recipient, i))
            })
        })
    });
}

/// One quota send polled once, off any runtime: a known identity's reservation never waits.
fn poll_once(store: &Store, i: u64) {
    poll_ready(quota_send(store, i))
}

fn poll_ready(fut: impl Future<Output = ()>) {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut fut = std::pin::pin!(fut);
    assert!(fut.as_mut().poll(&mut cx).is_ready(), "a known identity's reservation does not wait");
}

criterion_group!(benches, bench);
criterion_main!(benches);
