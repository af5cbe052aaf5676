//! The generator's threads and the main thread's watch over them.
//!
//! Every scenario runs the same way: `threads` OS threads, each a tokio `current_thread`
//! runtime with a `LocalSet` (no work stealing, no cross-thread wakeups, `Rc` state), set up
//! their connections; the phases are separated by a barrier shared with the main thread,
//! which measures the server (and the generator itself) around each phase and, during the
//! measured run, prints the progress line and samples memory.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::procfs::{Memory, Sample, Watch};
use crate::schedule::Plan;
use crate::stats::{Latency, Stats};

/// What the threads and the main thread share.
pub struct Shared {
    barrier: tokio::sync::Barrier,
    /// Set by the main thread before the run phase.
    pub plan: OnceLock<Arc<Plan>>,
    /// The first setup failure; the run is abandoned.
    pub failure: Mutex<Option<String>>,
    /// Threads whose workers are done with the run phase.
    pub finished: AtomicUsize,
    /// When the last worker finished.
    pub last_finish: Mutex<Option<Instant>>,
}

impl Shared {
    pub fn new(threads: usize) -> Arc<Shared> {
        Arc::new(Shared {
            barrier: tokio::sync::Barrier::new(threads + 1),
            plan: OnceLock::new(),
            failure: Mutex::new(None),
            finished: AtomicUsize::new(0),
            last_finish: Mutex::new(None),
        })
    }

    /// Waits for every thread and the main thread (from inside a thread's runtime).
    pub async fn sync(&self) {
        self.barrier.wait().await;
    }

    /// The same, from the main thread.
    pub fn sync_blocking(&self) {
        block_on(self.barrier.wait());
    }

    pub fn fail(&self, why: String) {
        let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert(why);
    }

    pub fn failed(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A thread's workers are done with the run.
    pub fn finish(&self) {
        *self.last_finish.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
}

/// Runs a future to completion on a throwaway runtime (main-thread waits).
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(f)
}

/// Starts `threads` generator threads running `body(thread index)` on their own runtime.
pub fn spawn<F, Fut>(threads: usize, body: F) -> Vec<std::thread::JoinHandle<()>>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let body = Arc::new(body);
    (0..threads)
        .map(|t| {
            let body = body.clone();
            std::thread::Builder::new()
                .name(format!("mbload-{t}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, body(t));
                })
                .expect("a thread")
        })
        .collect()
}

/// The server and the generator, measured around a stretch of time.
#[derive(Clone)]
pub struct Meter {
    pub server: Option<Watch>,
    /// `--db-pid`: another process measured over the same stretches (CPU only).
    pub db: Option<Watch>,
    pub me: Watch,
}

#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub server: Option<Sample>,
    pub db: Option<Sample>,
    pub me: Option<Sample>,
    pub at: Instant,
}

/// CPU and memory over a stretch.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Usage {
    pub seconds: f64,
    pub server_cpu_s: Option<f64>,
    pub server_mem_before: Option<Memory>,
    pub server_mem_after: Option<Memory>,
    /// Context switches of the server's threads.
    pub server_switches: Option<u64>,
    pub client_cpu_s: Option<f64>,
    pub db_cpu_s: Option<f64>,
}

impl Meter {
    pub fn mark(&self) -> Mark {
        Mark {
            server: self.server.as_ref().and_then(|w| w.sample().ok()),
            db: self.db.as_ref().and_then(|w| w.sample().ok()),
            me: self.me.sample().ok(),
            at: Instant::now(),
        }
    }

    pub fn usage(&self, from: &Mark, to: &Mark) -> Usage {
        Usage {
            seconds: to.at.duration_since(from.at).as_secs_f64(),
            server_cpu_s: from.server.zip(to.server).map(|(a, b)| b.cpu_s - a.cpu_s),
            server_mem_before: from.server.map(|s| s.mem),
            server_mem_after: to.server.map(|s| s.mem),
            server_switches: from.server.zip(to.server).map(|(a, b)| b.switches.saturating_sub(a.switches)),
            client_cpu_s: from.me.zip(to.me).map(|(a, b)| b.cpu_s - a.cpu_s),
            db_cpu_s: from.db.zip(to.db).map(|(a, b)| b.cpu_s - a.cpu_s),
        }
    }
}

/// Server RSS when the measured operation count passed a mark (`--rss-every`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssMark {
    pub operations: u64,
    pub rss_kib: u64,
}

/// What the main thread saw of the measured run.
#[derive(Debug)]
pub struct Watched {
    pub start: Mark,
    pub end: Mark,
    /// Highest server VmRSS sampled during the run.
    pub peak_rss_kib: Option<u64>,
    pub rss_marks: Vec<RssMark>,
}

pub struct MonitorConfig {
    pub quiet: bool,
    pub rss_every: Option<u64>,
    pub scenario: &'static str,
    pub unit: &'static str,
}

/// Watches the run phase until every thread reports finished (and then `extra_wait`, e.g.
/// for live deliveries still in flight, returns true): the progress line once a second on
/// stderr, the window's start sample at the end of the warm-up, memory samples.
pub fn watch(
    shared: &Shared,
    threads: usize,
    plan: &Plan,
    stats: &Stats,
    meter: &Meter,
    cfg: &MonitorConfig,
    mut extra_wait: impl FnMut() -> bool,
) -> Watched {
    let tick = Duration::from_millis(100);
    let mut start: Option<Mark> = None;
    let mut peak: Option<u64> = None;
    let mut marks = Vec::new();
    let mut next_mark = cfg.rss_every;
    let mut next_line = plan.start + Duration::from_secs(1);
    let mut last_line = plan.start;
    loop {
        let now = Instant::now();
        let mut wake = (now + tick).min(next_line);
        if start.is_none() {
            wake = wake.min(plan.warmup_end.max(now));
        }
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        if start.is_none() && now >= plan.warmup_end {
            start = Some(meter.mark());
        }
        let server_now = meter.server.as_ref().and_then(|w| w.sample().ok());
        if let Some(s) = server_now {
            if start.is_some() {
                peak = Some(peak.map_or(s.mem.rss_kib, |p| p.max(s.mem.rss_kib)));
            }
        }
        if let (Some(every), Some(due), Some(s)) = (cfg.rss_every, next_mark, server_now) {
            let (_, measured) = stats.completed();
            if measured >= due {
                marks.push(RssMark { operations: measured, rss_kib: s.mem.rss_kib });
                next_mark = Some((measured / every + 1) * every);
            }
        }
        if now >= next_line {
            let i = stats.take_interval();
            let secs = now.duration_since(last_line).as_secs_f64().max(1e-3);
            last_line = now;
            next_line = now + Duration::from_secs(1);
            if !cfg.quiet {
                let phase = if now < plan.warmup_end { "warm-up" } else { "measure" };
                let lat = Latency::of(&i.hist);
                let mut line = format!(
                    "[{:>5.1}s] {} {phase:<7} {:>8.0} {}/s  p50 {:>7.2}ms  p99 {:>7.2}ms  errors {}  done {}",
                    now.duration_since(plan.start).as_secs_f64(),
                    cfg.scenario,
                    i.ops as f64 / secs,
                    cfg.unit,
                    lat.p50_ms,
                    lat.p99_ms,
                    i.errors,
                    i.measured,
                );
                if let Some(s) = server_now {
                    line.push_str(&format!("  server rss {:.1} MiB", s.mem.rss_kib as f64 / 1024.0));
                }
                eprintln!("{line}");
            }
        }
        if shared.finished.load(Ordering::SeqCst) >= threads && extra_wait() {
            break;
        }
    }
    let end = meter.mark();
    let start = start.unwrap_or_else(|| meter.mark());
    if let Some(s) = end.server {
        peak = Some(peak.map_or(s.mem.rss_kib, |p| p.max(s.mem.rss_kib)));
    }
    Watched { start, end, peak_rss_kib: peak, rss_marks: marks }
}
