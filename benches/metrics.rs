//! What counting costs on the request path: one HTTP request recorded into a core's shard,
//! the same from two threads into their own shards versus into one shared shard (the
//! cross-core contention the per-core shards avoid), and a scrape.
//!
//! `cargo bench --bench metrics`; figures are recorded in perf/RESULTS.md.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use messagebox::metrics::{Metrics, Recorder, RouteLabel};
use messagebox::store::WriterStats;

/// Records `n` requests on each of two threads, each into its recorder; the wall time.
fn two_threads(a: &Recorder, b: &Recorder, n: u64) -> Duration {
    let start = Barrier::new(2);
    let record = |r: &Recorder| {
        start.wait();
        let t = Instant::now();
        for i in 0..n {
            r.http_request(RouteLabel::SendMessage, 200, Duration::from_nanos(black_box(120_000 + i % 7)));
        }
        t.elapsed()
    };
    std::thread::scope(|s| {
        let ta = s.spawn(|| record(a));
        let tb = s.spawn(|| record(b));
        ta.join().unwrap().max(tb.join().unwrap())
    })
}

fn bench(c: &mut Criterion) {
    let metrics = Metrics::new(true);
    let core = metrics.core();
    c.bench_function("metrics: record one HTTP request (timer + counter + histogram)", |b| {
        b.iter(|| {
            let t = Instant::now();
            black_box(&core).http_request(RouteLabel::SendMessage, 200, t.elapsed());
        })
    });
    let off = Metrics::new(false).core();
    c.bench_function("metrics: record with metrics off", |b| {
        b.iter(|| black_box(&off).http_request(RouteLabel::SendMessage, 200, Duration::from_micros(120)))
    });
    let (a, b2) = (metrics.core(), metrics.core());
    c.bench_function("metrics: 2 threads x 100k requests, one shard each", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| two_threads(&a, &b2, 100_000)).sum())
    });
    let shared = metrics.core();
    c.bench_function("metrics: 2 threads x 100k requests, one shared shard", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| two_threads(&shared, &shared, 100_000)).sum())
    });
    let stats = WriterStats::default();
    c.bench_function("metrics: scrape (render the exposition)", |b| b.iter(|| metrics.render(&stats, 100, None).len()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
