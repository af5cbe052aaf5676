//! `--find-rate`: the highest open-loop rate whose p99 stays under a bound, found with short
//! runs. The rate doubles (or halves) from the start until one run passes and one fails, then
//! the interval between the highest pass and the lowest failure is bisected until it is
//! narrower than the precision or the runs run out. [`Search`] holds that rule without I/O;
//! [`run`] drives it with real runs.

use crate::floor::Floor;
use crate::options::{Options, Scenario};
use crate::report::{FindRate, RateStep, Report};

/// Below this many operations a second the search gives up (nothing passes).
const MIN_RATE: f64 = 1.0;

/// The search's state: the highest rate that passed and the lowest that failed.
#[derive(Debug, Clone)]
pub struct Search {
    pass: Option<f64>,
    fail: Option<f64>,
    next: Option<f64>,
    runs_left: usize,
    precision: f64,
}

impl Search {
    pub fn new(start: f64, runs: usize, precision: f64) -> Search {
        Search { pass: None, fail: None, next: Some(start), runs_left: runs, precision }
    }

    /// The rate to run next, or `None` when the search is over.
    pub fn next(&self) -> Option<f64> {
        self.next.filter(|_| self.runs_left > 0)
    }

    /// The outcome of running `rate`.
    pub fn record(&mut self, rate: f64, pass: bool) {
        self.runs_left = self.runs_left.saturating_sub(1);
        if pass {
            self.pass = Some(self.pass.map_or(rate, |p| p.max(rate)));
        } else {
            self.fail = Some(self.fail.map_or(rate, |f| f.min(rate)));
        }
        self.next = match (self.pass, self.fail) {
            (Some(p), None) => Some(p * 2.0),
            (None, Some(f)) => Some(f / 2.0).filter(|&r| r >= MIN_RATE),
            (Some(p), Some(f)) if f > p * (1.0 + self.precision) => Some((p + f) / 2.0),
            _ => None,
        };
    }

    /// The highest rate that passed.
    pub fn found(&self) -> Option<f64> {
        self.pass
    }
}

/// A run passes when it had no errors and the bounded p99 is under the bound.
fn passes(report: &Report, bound_ms: f64) -> (String, Option<f64>, bool) {
    let (kind, p99) = report.bounded_p99();
    let pass = report.error_total() == 0 && report.operations > 0 && p99.is_some_and(|p| p < bound_ms);
    (kind, p99, pass)
}

/// Runs the search with `once` running one open-loop scenario; the report returned is the
/// highest passing run's (or the last run's when none passed), with the steps attached.
pub fn run(
    opts: &Options,
    floor: Option<Floor>,
    mut once: impl FnMut(Options) -> Result<Report, String>,
) -> Result<Report, String> {
    let basis_us = floor.and_then(|f| if opts.scenario == Scenario::Live { f.live_us } else { Some(f.request_us) });
    // From the floor: 0.2 / floor is a fifth of what one core could do if the crypto were
    // all a request cost, a rate every server worth measuring sustains.
    let start = match (opts.rate, basis_us) {
        (Some(r), _) => r,
        (None, Some(us)) => (0.2 / (us / 1e6)).round().max(MIN_RATE),
        (None, None) => return Err("--find-rate needs --rate to start from, or the floor".into()),
    };
    let bound_ms = opts.p99.as_secs_f64() * 1000.0;
    let mut search = Search::new(start, opts.find_rate_steps, opts.find_rate_precision);
    let mut steps = Vec::new();
    let mut best: Option<Report> = None;
    let mut last: Option<Report> = None;
    let mut latency = String::new();
    while let Some(rate) = search.next() {
        let mut o = opts.clone();
        o.rate = Some(rate);
        o.find_rate = false;
        let report = once(o)?;
        let (kind, p99, pass) = passes(&report, bound_ms);
        latency = kind;
        if !opts.quiet {
            let p = p99.map_or("-".into(), |v| format!("{v:.2} ms"));
            eprintln!(
                "find-rate: {rate:.1}/s: p99 {p}, {:.1}/s done, {} errors: {}",
                report.throughput_per_s,
                report.error_total(),
                if pass { "pass" } else { "fail" }
            );
        }
        steps.push(RateStep {
            rate,
            p99_ms: p99,
            throughput_per_s: report.throughput_per_s,
            errors: report.error_total(),
            pass,
        });
        search.record(rate, pass);
        if pass && best.as_ref().is_none_or(|b| b.rate < Some(rate)) {
            best = Some(report);
        } else {
            last = Some(report);
        }
    }
    let mut report = best.or(last).ok_or("--find-rate made no run")?;
    report.find_rate =
        Some(FindRate { p99_bound_ms: bound_ms, latency, rate: search.found(), rate_x_floor: None, steps });
    report.apply_floor(floor);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the search against a server that sustains up to `capacity`.
    fn search(start: f64, capacity: f64, runs: usize) -> (Option<f64>, Vec<f64>) {
        let mut s = Search::new(start, runs, 0.05);
        let mut tried = Vec::new();
        while let Some(r) = s.next() {
            tried.push(r);
            s.record(r, r <= capacity);
        }
        (s.found(), tried)
    }

    #[test]
    fn doubles_then_bisects() {
        let (found, tried) = search(1000.0, 3000.0, 20);
        assert_eq!(&tried[..3], &[1000.0, 2000.0, 4000.0]);
        let f = found.unwrap();
        assert!(f <= 3000.0 && f > 3000.0 / 1.05, "{f} {tried:?}");
    }

    #[test]
    fn halves_when_the_start_fails() {
        let (found, tried) = search(1000.0, 300.0, 20);
        assert_eq!(&tried[..3], &[1000.0, 500.0, 250.0]);
        let f = found.unwrap();
        assert!(f <= 300.0 && f > 300.0 / 1.05, "{f} {tried:?}");
    }

    #[test]
    fn stops_at_the_run_budget_and_below_the_minimum() {
        let (_, tried) = search(1000.0, 3000.0, 4);
        assert_eq!(tried.len(), 4);
        let (found, tried) = search(4.0, 0.5, 20);
        assert_eq!(found, None);
        assert_eq!(tried, [4.0, 2.0, 1.0], "no rate below 1/s");
    }
}
