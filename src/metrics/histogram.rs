//! A fixed-bucket histogram whose counts are plain relaxed atomics, for a metric written by
//! one thread (a core, the store writer) and read by the scrape.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bucket upper bounds for request and commit durations, in seconds: 100 µs (a request
/// costs about that much CPU) to 10 s (a stuck database).
pub const DURATION_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Bucket upper bounds for the rows of a group commit (powers of two up to the default
/// batch cap of 1024 rows and a little beyond).
pub const BATCH_ROWS_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0];

/// Observations in integer units of `unit` (nanoseconds for durations, rows for sizes), so
/// the sum is an exact integer counter too.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in the metric's unit (seconds, rows).
    bounds: &'static [f64],
    /// The same bounds in integer units, for the comparison on the hot path.
    raw_bounds: Box<[u64]>,
    unit: f64,
    /// Per bucket (not cumulative), with the `+Inf` bucket last.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    /// A histogram with `bounds` (ascending, in the metric's unit) observing integers that
    /// are `unit` each.
    pub fn new(bounds: &'static [f64], unit: f64) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bucket bounds ascend");
        let raw_bounds = bounds.iter().map(|b| (b / unit).round() as u64).collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { bounds, raw_bounds, unit, counts, sum: AtomicU64::new(0) }
    }

    /// A duration histogram (nanosecond resolution) with [`DURATION_BUCKETS`].
    pub fn durations() -> Histogram {
        Histogram::new(DURATION_BUCKETS, 1e-9)
    }

    /// Records `raw` units.
    pub fn observe(&self, raw: u64) {
        let i = self.raw_bounds.iter().position(|&b| raw <= b).unwrap_or(self.raw_bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(raw, Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The counts so far. Not one atomic read, so a snapshot taken during an observation
    /// may be one observation behind in its sum; Prometheus tolerates that.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            unit: self.unit,
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            raw_sum: self.sum.load(Relaxed),
        }
    }
}

/// A histogram's counts at one moment; snapshots of shards with the same buckets add up.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    bounds: &'static [f64],
    unit: f64,
    /// Per bucket, `+Inf` last.
    counts: Vec<u64>,
    raw_sum: u64,
}

impl HistogramSnapshot {
    /// An empty snapshot with these buckets.
    pub fn empty(bounds: &'static [f64], unit: f64) -> HistogramSnapshot {
        HistogramSnapshot { bounds, unit, counts: vec![0; bounds.len() + 1], raw_sum: 0 }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum of the observations, in the metric's unit.
    pub fn sum(&self) -> f64 {
        self.raw_sum as f64 * self.unit
    }

    /// `(upper bound, count)` per bucket (not cumulative: the encoder adds them up), `+Inf`
    /// last.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let bounds = self.bounds.iter().copied().chain(std::iter::once(f64::INFINITY));
        bounds.zip(self.counts.iter().copied()).collect()
    }

    /// `(upper bound, cumulative count)` per bucket, `+Inf` last, as the exposition shows.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        let bounds = self.bounds.iter().copied().chain(std::iter::once(f64::INFINITY));
        bounds
            .zip(&self.counts)
            .map(|(b, c)| {
                total += c;
                (b, total)
            })
            .collect()
    }

    /// Adds another shard's counts (same buckets).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        debug_assert_eq!(self.bounds, other.bounds);
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.raw_sum += other.raw_sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive_and_cumulative() {
        let h = Histogram::new(BATCH_ROWS_BUCKETS, 1.0);
        for rows in [1, 1, 2, 3, 1024, 5000] {
            h.observe(rows);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 6);
        assert_eq!(s.sum(), 6031.0);
        let c = s.cumulative();
        assert_eq!(c[0], (1.0, 2), "le=1 holds both ones");
        assert_eq!(c[1], (2.0, 3));
        assert_eq!(c[2], (4.0, 4), "3 falls in le=4");
        assert_eq!(c[10], (1024.0, 5));
        assert_eq!(c.last().copied(), Some((f64::INFINITY, 6)));
    }

    #[test]
    fn durations_in_seconds() {
        let h = Histogram::durations();
        h.observe_duration(Duration::from_micros(100));
        h.observe_duration(Duration::from_micros(101));
        h.observe_duration(Duration::from_secs(11));
        let s = h.snapshot();
        let c = s.cumulative();
        assert_eq!(c[0], (0.0001, 1), "exactly 100 µs is in the 100 µs bucket");
        assert_eq!(c[1], (0.00025, 2));
        assert_eq!(c[c.len() - 2], (10.0, 2));
        assert_eq!(c[c.len() - 1].1, 3);
        assert!((s.sum() - 11.000201).abs() < 1e-9);
    }

    #[test]
    fn shards_merge() {
        let (a, b) = (Histogram::durations(), Histogram::durations());
        a.observe_duration(Duration::from_millis(1));
        b.observe_duration(Duration::from_millis(3));
        let mut s = HistogramSnapshot::empty(DURATION_BUCKETS, 1e-9);
        s.merge(&a.snapshot());
        s.merge(&b.snapshot());
        assert_eq!(s.count(), 2);
        assert!((s.sum() - 0.004).abs() < 1e-12);
        assert_eq!(s.cumulative()[3], (0.001, 1));
        assert_eq!(s.cumulative()[5], (0.005, 2));
    }
}
