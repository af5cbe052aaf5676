//! What the workers record and how it adds up: HDR latency histograms per operation kind,
//! error counts by kind, plain counters, and the once-a-second interval figures behind the
//! progress line.
//!
//! Each generator thread owns one [`ThreadStats`] behind a mutex that only its own tasks and
//! the reporter (once a second, and at the end) take, so recording never contends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly (µs); anything slower is clamped to it.
const MAX_US: u64 = 600_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// A signed answer with a status other than the expected one.
    Http(u16),
    /// BRC-103/104: an unsigned 401 after a fresh handshake, a signature that does not
    /// verify, a handshake refused.
    Auth,
    /// No answer within `--timeout`.
    Timeout,
    /// Could not connect, or the connection broke.
    Connect,
    /// An answer we could not read, or one that says the wrong thing.
    Protocol,
}

impl ErrorKind {
    pub fn key(&self) -> String {
        match self {
            ErrorKind::Http(s) => format!("http_{s}"),
            ErrorKind::Auth => "auth".into(),
            ErrorKind::Timeout => "timeout".into(),
            ErrorKind::Connect => "connect".into(),
            ErrorKind::Protocol => "protocol".into(),
        }
    }
}

/// One failed operation, with a sample message for the report.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {detail}", kind.key())]
pub struct OpError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl OpError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> OpError {
        OpError { kind, detail: detail.into() }
    }
    pub fn protocol(detail: impl Into<String>) -> OpError {
        OpError::new(ErrorKind::Protocol, detail)
    }
    pub fn auth(detail: impl Into<String>) -> OpError {
        OpError::new(ErrorKind::Auth, detail)
    }
    pub fn connect(detail: impl Into<String>) -> OpError {
        OpError::new(ErrorKind::Connect, detail)
    }
    pub fn timeout() -> OpError {
        OpError::new(ErrorKind::Timeout, "no answer in time")
    }
}

/// Everything one thread recorded.
#[derive(Debug)]
pub struct ThreadStats {
    /// Measured latencies per operation kind.
    pub latency: BTreeMap<&'static str, Histogram<u64>>,
    pub errors: BTreeMap<String, u64>,
    /// A sample message per error kind.
    pub error_samples: BTreeMap<String, String>,
    pub counters: BTreeMap<&'static str, u64>,
    /// Operations completed (successes and failures, measured or not).
    pub completed: u64,
    /// Measured operations completed (successes and failures).
    pub measured: u64,
    /// Since the last progress line: all operations, errors, and a histogram of all kinds.
    pub interval_ops: u64,
    pub interval_errors: u64,
    pub interval: Histogram<u64>,
}

impl Default for ThreadStats {
    fn default() -> Self {
        ThreadStats {
            latency: BTreeMap::new(),
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            counters: BTreeMap::new(),
            completed: 0,
            measured: 0,
            interval_ops: 0,
            interval_errors: 0,
            interval: histogram(),
        }
    }
}

fn us(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_US)
}

impl ThreadStats {
    /// An operation of `kind` finished after `latency` (from its scheduled start).
    pub fn record(&mut self, kind: &'static str, measured: bool, latency: Duration, result: Result<(), &OpError>) {
        let v = us(latency);
        self.completed += 1;
        self.interval_ops += 1;
        let _ = self.interval.record(v);
        if let Err(e) = result {
            self.interval_errors += 1;
            if measured {
                self.measured += 1;
                self.error(e);
            }
            return;
        }
        if measured {
            self.measured += 1;
            let _ = self.latency.entry(kind).or_insert_with(histogram).record(v);
        }
    }

    /// A latency that is not an operation (e.g. a live delivery), measured only.
    pub fn record_latency(&mut self, kind: &'static str, latency: Duration) {
        let _ = self.latency.entry(kind).or_insert_with(histogram).record(us(latency));
    }

    pub fn error(&mut self, e: &OpError) {
        let key = e.kind.key();
        self.error_samples.entry(key.clone()).or_insert_with(|| e.detail.clone());
        *self.errors.entry(key).or_default() += 1;
    }

    pub fn count(&mut self, name: &'static str, n: u64) {
        *self.counters.entry(name).or_default() += n;
    }
}

/// The stats of every thread.
#[derive(Debug, Clone)]
pub struct Stats {
    threads: Arc<Vec<Mutex<ThreadStats>>>,
}

impl Stats {
    pub fn new(threads: usize) -> Stats {
        Stats { threads: Arc::new((0..threads.max(1)).map(|_| Mutex::new(ThreadStats::default())).collect()) }
    }

    pub fn thread(&self, i: usize) -> MutexGuard<'_, ThreadStats> {
        self.threads[i % self.threads.len()].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the interval figures of every thread (and resets them).
    pub fn take_interval(&self) -> Interval {
        let mut out = Interval { ops: 0, errors: 0, completed: 0, measured: 0, hist: histogram() };
        for t in self.threads.iter() {
            let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
            out.ops += t.interval_ops;
            out.errors += t.interval_errors;
            out.completed += t.completed;
            out.measured += t.measured;
            let _ = out.hist.add(&t.interval);
            t.interval_ops = 0;
            t.interval_errors = 0;
            t.interval.reset();
        }
        out
    }

    /// Operations completed so far, and measured ones.
    pub fn completed(&self) -> (u64, u64) {
        self.threads.iter().fold((0, 0), |(c, m), t| {
            let t = t.lock().unwrap_or_else(|p| p.into_inner());
            (c + t.completed, m + t.measured)
        })
    }

    /// Everything merged.
    pub fn merged(&self) -> Merged {
        let mut m = Merged::default();
        for t in self.threads.iter() {
            let t = t.lock().unwrap_or_else(|p| p.into_inner());
            for (k, h) in &t.latency {
                let _ = m.latency.entry(k).or_insert_with(histogram).add(h);
            }
            for (k, n) in &t.errors {
                *m.errors.entry(k.clone()).or_default() += n;
            }
            for (k, s) in &t.error_samples {
                m.error_samples.entry(k.clone()).or_insert_with(|| s.clone());
            }
            for (k, n) in &t.counters {
                *m.counters.entry(k).or_default() += n;
            }
            m.measured += t.measured;
            m.completed += t.completed;
        }
        m
    }
}

/// One progress-line interval.
#[derive(Debug)]
pub struct Interval {
    pub ops: u64,
    pub errors: u64,
    pub completed: u64,
    pub measured: u64,
    pub hist: Histogram<u64>,
}

/// All threads' figures added up.
#[derive(Debug, Default)]
pub struct Merged {
    pub latency: BTreeMap<&'static str, Histogram<u64>>,
    pub errors: BTreeMap<String, u64>,
    pub error_samples: BTreeMap<String, String>,
    pub counters: BTreeMap<&'static str, u64>,
    pub measured: u64,
    pub completed: u64,
}

impl Merged {
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful measured operations of the given kinds.
    pub fn successes(&self, kinds: &[&str]) -> u64 {
        self.latency.iter().filter(|(k, _)| kinds.contains(k)).map(|(_, h)| h.len()).sum()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let ms = |v: u64| v as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_and_errors_are_kept_apart() {
        let stats = Stats::new(2);
        let err = OpError::new(ErrorKind::Http(500), "boom");
        {
            let mut t = stats.thread(0);
            t.record("send", false, Duration::from_millis(5), Ok(()));
            t.record("send", true, Duration::from_millis(1), Ok(()));
            t.record("send", true, Duration::from_millis(2), Err(&err));
        }
        {
            let mut t = stats.thread(1);
            t.record("send", true, Duration::from_millis(3), Ok(()));
            t.record("list", true, Duration::from_micros(10), Ok(()));
            t.record("send", false, Duration::from_millis(1), Err(&OpError::timeout()));
            t.count("rehandshake", 2);
        }
        let m = stats.merged();
        assert_eq!(m.measured, 4);
        assert_eq!(m.completed, 6);
        assert_eq!(m.latency["send"].len(), 2, "the warm-up and the failure are not in the histogram");
        assert_eq!(m.successes(&["send", "list"]), 3);
        assert_eq!(m.errors, BTreeMap::from([("http_500".to_string(), 1)]), "warm-up errors are not reported");
        assert_eq!(m.error_samples["http_500"], "boom");
        assert_eq!(m.counters["rehandshake"], 2);
        let i = stats.take_interval();
        assert_eq!((i.ops, i.errors, i.hist.len()), (6, 2, 6));
        assert_eq!(stats.take_interval().ops, 0, "the interval resets");
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let mut h = histogram();
        for v in 1..=1000u64 {
            h.record(v * 10).unwrap(); // 10 µs .. 10 ms
        }
        let l = Latency::of(&h);
        assert_eq!(l.count, 1000);
        assert!((l.p50_ms - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.p99_ms - 9.9).abs() < 0.01, "{l:?}");
        assert!((l.max_ms - 10.0).abs() < 0.01, "{l:?}");
        assert!(l.p90_ms <= l.p99_ms && l.p99_ms <= l.p999_ms && l.p999_ms <= l.max_ms);
    }

    #[test]
    fn latency_is_clamped_not_lost() {
        let mut t = ThreadStats::default();
        t.record("x", true, Duration::ZERO, Ok(()));
        t.record("x", true, Duration::from_secs(100_000), Ok(()));
        assert_eq!(t.latency["x"].len(), 2);
    }
}
