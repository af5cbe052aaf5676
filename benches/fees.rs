//! What a send's fee gate costs once the fee cache (`store::fee_cache`) holds its fees: the
//! delivery fee of the box and each recipient's fee for the sender, answered without a
//! database round trip (before the cache: 3 statements in 2 sequential MySQL round trips per
//! send, ~95 µs each). One recipient and ten; then from two threads at once, the two cores of
//! this machine meeting on the cache's shards (different recipients, and all on one).
//!
//! `cargo bench --bench fees`; figures are recorded in perf/RESULTS.md ("Issue 12: the fee
//! cache").

use std::future::Future;
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use messagebox::domain::{fees, IdentityKey};
use messagebox::store::{Store, StoreOptions};

/// A distinct valid identity key per `n`.
fn key(n: u8) -> IdentityKey {
    IdentityKey::from(&messagebox::auth::PrivateKey::from_bytes(&[n; 32]).expect("a key").public_key())
}

/// The quote of one send, polled once off any runtime: a cached quote never waits. The
/// steady state includes the reads the max ages call for (the delivery fee once a second, a
/// recipient's fee every 5 s), finished on a runtime of this thread's own.
fn cached_quote(store: &Store, sender: &IdentityKey, recipients: &[IdentityKey]) -> i64 {
    thread_local! {
        static RT: tokio::runtime::Runtime =
            tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    }
    let fut = fees::quote(store, sender, "inbox", recipients);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut fut = std::pin::pin!(fut);
    let quote = match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(q) => q,
        std::task::Poll::Pending => RT.with(|rt| rt.block_on(fut)),
    };
    quote.expect("quote").recipients.iter().sum()
}

/// `per_thread` operations on each of two threads; the wall time of the slower.
fn two_threads(per_thread: u64, op: impl Fn(usize) + Sync) -> Duration {
    let start = Barrier::new(2);
    let run = |thread: usize| {
        start.wait();
        let t = Instant::now();
        for _ in 0..per_thread {
            op(thread);
        }
        t.elapsed()
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| run(0));
        let b = s.spawn(|| run(1));
        a.join().unwrap().max(b.join().unwrap())
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = rt.block_on(messagebox::store::open("sqlite::memory:", &StoreOptions::default())).expect("store");
    rt.block_on(store.migrate()).expect("migrate");
    let senders = [key(1), key(2)];
    let recipients: Vec<IdentityKey> = (10..20).map(key).collect();
    // Warm: each fee read once (the recipients' default rules are written then).
    for s in &senders {
        rt.block_on(fees::quote(&store, s, "inbox", &recipients)).expect("quote");
    }
    let one = &recipients[..1];
    c.bench_function("fee cache: quote of a send to 1 recipient, cached", |b| {
        b.iter(|| black_box(cached_quote(&store, &senders[0], black_box(one))))
    });
    c.bench_function("fee cache: quote of a send to 10 recipients, cached", |b| {
        b.iter(|| black_box(cached_quote(&store, &senders[0], black_box(&recipients))))
    });
    c.bench_function("fee cache: 1 recipient from two threads, different recipients (per quote)", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |t| {
                black_box(cached_quote(&store, &senders[t], &recipients[t..t + 1]));
            })
        })
    });
    c.bench_function("fee cache: 1 recipient from two threads, the same recipient (per quote)", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |t| {
                black_box(cached_quote(&store, &senders[t], one));
            })
        })
    });
    let stats = store.fee_cache().stats();
    // Under `cargo bench` (criterion is given `--bench`) every benchmark runs long enough
    // that misses (the warm-up and the cache's max age) are rare; under `cargo test` each
    // runs once, so only a real benchmark run can check that it measured hits.
    if std::env::args().any(|a| a == "--bench") {
        assert!(stats.hits > stats.misses * 1000, "the benchmark measured the cache: {stats:?}");
    }
    eprintln!("fee cache: {stats:?}");
}

criterion_group!(benches, bench);
criterion_main!(benches);
