//! "batch build": the CPU of building one MySQL insert batch's statement for 1, 16 and 64
//! rows of 200-byte bodies — the text batch (escaped literals, the INSERT and the usage
//! upsert; `store::mysql::text_batch_sql`) against the prepared path's SQL and
//! parameters (`store::mysql::prepared_batch_statement`; the driver's binary encoding of
//! the parameters is not included).
//!
//! `cargo bench --bench batch`; `cargo test --benches` runs each case once.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use messagebox::store::mysql::{prepared_batch_statement, text_batch_sql};
use messagebox::store::NewMessage;

const SENDER: &str = "02cccc000000000000000000000000000000000000000000000000000000000003";
const RECIPIENT: &str = "02aaaa000000000000000000000000000000000000000000000000000000000001";

fn rows(n: usize) -> Vec<NewMessage> {
    (0..n)
        .map(|i| NewMessage {
            message_id: format!("{i:064x}"),
            recipient: RECIPIENT.into(),
            box_type: "inbox".into(),
            sender: SENDER.into(),
            // 200 bytes with a quote and a backslash to escape.
            body: format!("{{\"message\":\"it's \\\\ {}\"}}", "x".repeat(178)).into(),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch build");
    let created = 1_764_750_896;
    for n in [1, 16, 64] {
        let rows = rows(n);
        assert_eq!(rows[0].body.len(), 200);
        let refs: Vec<&NewMessage> = rows.iter().collect();
        let box_ids = vec![7u32; n];
        group.bench_with_input(BenchmarkId::new("text", n), &refs, |b, refs| {
            b.iter(|| text_batch_sql(black_box(refs), &box_ids, created, Some(created + 86_400), false))
        });
        group.bench_with_input(BenchmarkId::new("prepared", n), &refs, |b, refs| {
            b.iter(|| prepared_batch_statement(black_box(refs), &box_ids, created, Some(created + 86_400), 512))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
