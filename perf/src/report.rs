//! The final report: one struct, printed for people or as JSON (`--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::options::{Options, Scenario, Transport};
use crate::runner::{RssMark, Usage};
use crate::stats::{Latency, Merged};

/// Server-side cost over the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct ServerCost {
    /// The processes watched (a fleet's nodes: their CPU and memory are added up).
    pub pids: Vec<u32>,
    pub cpu_s: f64,
    /// Server CPU per unit of work (request, handshake, delivered message, connection).
    pub cpu_us_per_op: Option<f64>,
    /// Cores busy on average (1.0 = one core).
    pub cores: f64,
    pub rss_start_kib: u64,
    pub rss_end_kib: u64,
    /// Highest VmRSS sampled (once per 100 ms) during the window.
    pub rss_peak_sampled_kib: u64,
    /// VmHWM at the end: the process's lifetime peak.
    pub hwm_kib: u64,
    /// Context switches of the server's threads (voluntary + involuntary), and per unit of
    /// work: how often work hopped between threads or waited.
    pub ctx_switches: u64,
    pub ctx_switches_per_op: Option<f64>,
}

/// What an `abuse-*` run did and what the legitimate client got meanwhile.
#[derive(Debug, Clone, Serialize, Default)]
pub struct AbuseSummary {
    /// Where the legitimate client's connections came from.
    pub legit_source: Option<String>,
    pub legit_interval_ms: f64,
    /// The legitimate client's measured requests: answered 200 + success, failed.
    pub legit_ok: u64,
    pub legit_failed: u64,
    pub legit_success_rate: f64,
    pub legit_p50_ms: Option<f64>,
    pub legit_p99_ms: Option<f64>,
    /// The attack's counters over the whole run (warm-up included): attempts, accepted,
    /// refused by status and code, closed by the server, ...
    pub attack: BTreeMap<String, u64>,
    /// How long the server kept an attacking connection it closed (slow headers, sockets).
    pub held_p50_s: Option<f64>,
    pub held_max_s: Option<f64>,
}

/// A phase before or after the measured run (e.g. the live connects).
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    pub count: u64,
    pub seconds: f64,
    pub server_cpu_s: Option<f64>,
    pub server_cpu_us_each: Option<f64>,
    pub client_cpu_us_each: Option<f64>,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_after_kib: Option<u64>,
    /// Server RSS growth per item (idle: per connection).
    pub server_rss_kib_each: Option<f64>,
}

impl Phase {
    pub fn new(name: &str, count: u64, u: &Usage) -> Phase {
        let each = |v: Option<f64>| v.filter(|_| count > 0).map(|v| v * 1e6 / count as f64);
        let before = u.server_mem_before.map(|m| m.rss_kib);
        let after = u.server_mem_after.map(|m| m.rss_kib);
        Phase {
            name: name.into(),
            count,
            seconds: u.seconds,
            server_cpu_s: u.server_cpu_s,
            server_cpu_us_each: each(u.server_cpu_s),
            client_cpu_us_each: each(u.client_cpu_s),
            server_rss_before_kib: before,
            server_rss_after_kib: after,
            server_rss_kib_each: before
                .zip(after)
                .filter(|_| count > 0)
                .map(|(b, a)| (a as f64 - b as f64) / count as f64),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub label: Option<String>,
    pub url: String,
    pub threads: usize,
    pub concurrency: usize,
    pub identities: usize,
    pub clients: Option<usize>,
    pub transport: Option<Transport>,
    /// Open-loop arrival rate; `None` is closed loop.
    pub rate: Option<f64>,
    pub warmup_s: f64,
    pub seed: u64,
    pub verify: bool,
    /// What one operation is ("request", "handshake", "message").
    pub unit: &'static str,
    /// The measured window (after the warm-up).
    pub window_s: f64,
    /// Successful measured operations.
    pub operations: u64,
    pub throughput_per_s: f64,
    /// Per kind of operation (and live: `delivery`, `connect`, `join`).
    pub latency: BTreeMap<String, Latency>,
    pub errors: BTreeMap<String, u64>,
    pub error_samples: BTreeMap<String, String>,
    pub counters: BTreeMap<String, u64>,
    /// What the server's CPU is divided by (`operations`, or live: delivered messages).
    pub cost_basis: u64,
    pub server: Option<ServerCost>,
    pub client_cpu_s: Option<f64>,
    pub client_cpu_us_per_op: Option<f64>,
    pub phases: Vec<Phase>,
    pub rss_marks: Vec<RssMark>,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abuse: Option<AbuseSummary>,
}

impl Report {
    /// The fields every scenario fills the same way.
    pub fn base(o: &Options, identities: usize, unit: &'static str) -> Report {
        Report {
            scenario: o.scenario,
            label: o.label.clone(),
            url: o.url.join(","),
            threads: o.threads(),
            concurrency: o.concurrency,
            identities,
            clients: o.scenario.is_live().then_some(o.clients),
            transport: o.scenario.is_live().then_some(o.transport),
            rate: o.rate,
            warmup_s: o.warmup.as_secs_f64(),
            seed: o.seed,
            verify: !o.skip_verify,
            unit,
            window_s: 0.0,
            operations: 0,
            throughput_per_s: 0.0,
            latency: BTreeMap::new(),
            errors: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            counters: BTreeMap::new(),
            cost_basis: 0,
            server: None,
            client_cpu_s: None,
            client_cpu_us_per_op: None,
            phases: Vec::new(),
            rss_marks: Vec::new(),
            notes: Vec::new(),
            abuse: None,
        }
    }

    /// Fills latencies, errors and counters from the merged stats.
    pub fn take_stats(&mut self, m: &Merged) {
        self.latency = m.latency.iter().map(|(k, h)| (k.to_string(), Latency::of(h))).collect();
        self.errors = m.errors.clone();
        self.error_samples = m.error_samples.clone();
        self.counters = m.counters.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    }

    /// Fills the window's cost: server and generator CPU divided by `basis`.
    pub fn take_usage(&mut self, pids: &[u32], u: &Usage, peak_rss_kib: Option<u64>, basis: u64) {
        self.cost_basis = basis;
        let per = |cpu: f64| (basis > 0).then(|| cpu * 1e6 / basis as f64);
        if let (false, Some(cpu), Some(before), Some(after)) =
            (pids.is_empty(), u.server_cpu_s, u.server_mem_before, u.server_mem_after)
        {
            self.server = Some(ServerCost {
                pids: pids.to_vec(),
                cpu_s: cpu,
                cpu_us_per_op: per(cpu),
                cores: if u.seconds > 0.0 { cpu / u.seconds } else { 0.0 },
                rss_start_kib: before.rss_kib,
                rss_end_kib: after.rss_kib,
                rss_peak_sampled_kib: peak_rss_kib.unwrap_or(after.rss_kib),
                hwm_kib: after.hwm_kib,
                ctx_switches: u.server_switches.unwrap_or(0),
                ctx_switches_per_op: (basis > 0).then(|| u.server_switches.unwrap_or(0) as f64 / basis as f64),
            });
        }
        self.client_cpu_s = u.client_cpu_s;
        self.client_cpu_us_per_op = u.client_cpu_s.and_then(per);
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The report for people.
    pub fn human(&self) -> String {
        let mut s = String::new();
        let label = self.label.as_deref().map(|l| format!(" ({l})")).unwrap_or_default();
        let _ = writeln!(s, "mbload {} -> {}{label}", self.scenario.name(), self.url);
        let mode = match self.rate {
            Some(r) => format!("open loop {r}/s"),
            None => "closed loop".into(),
        };
        let mut setup = format!(
            "  {} threads, {} workers, {} identities, {mode}, warm-up {}s, measured {:.1}s, seed {}",
            self.threads, self.concurrency, self.identities, self.warmup_s, self.window_s, self.seed
        );
        if let (Some(k), Some(t)) = (self.clients, self.transport) {
            let _ = write!(setup, ", {k} clients over {t:?}");
        }
        if !self.verify {
            setup.push_str(", server signatures NOT verified");
        }
        let _ = writeln!(s, "{setup}");
        let _ = writeln!(
            s,
            "  throughput   {:.1} {}/s  ({} ok, {} errors)",
            self.throughput_per_s,
            self.unit,
            self.operations,
            self.error_total()
        );
        for (kind, l) in &self.latency {
            let _ = writeln!(
                s,
                "  latency ms   {kind:<9} n={:<8} p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
                l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
            );
        }
        let mib = |k: u64| k as f64 / 1024.0;
        if let Some(c) = &self.server {
            let per = c.cpu_us_per_op.map_or("-".into(), |v| format!("{v:.1}"));
            let _ = writeln!(
                s,
                "  server       CPU {:.2} s = {per} µs per {} ({} counted), {:.2} cores; RSS {:.1} -> {:.1} MiB (peak sampled {:.1}, VmHWM {:.1})",
                c.cpu_s,
                self.unit,
                self.cost_basis,
                c.cores,
                mib(c.rss_start_kib),
                mib(c.rss_end_kib),
                mib(c.rss_peak_sampled_kib),
                mib(c.hwm_kib)
            );
            let per = c.ctx_switches_per_op.map_or("-".into(), |v| format!("{v:.2}"));
            let _ = writeln!(s, "  server       context switches {} = {per} per {}", c.ctx_switches, self.unit);
        }
        if let (Some(cpu), Some(per)) = (self.client_cpu_s, self.client_cpu_us_per_op) {
            let _ = writeln!(s, "  generator    CPU {cpu:.2} s = {per:.1} µs per {}", self.unit);
        }
        for p in &self.phases {
            let mut line = format!("  phase        {:<9} n={} in {:.2}s", p.name, p.count, p.seconds);
            if let Some(v) = p.server_cpu_us_each {
                let _ = write!(line, ", server {v:.1} CPU-µs each");
            }
            if let Some(v) = p.client_cpu_us_each {
                let _ = write!(line, ", generator {v:.1} CPU-µs each");
            }
            if let (Some(b), Some(a)) = (p.server_rss_before_kib, p.server_rss_after_kib) {
                let _ = write!(line, ", server RSS {:.1} -> {:.1} MiB", mib(b), mib(a));
            }
            if let Some(k) = p.server_rss_kib_each {
                let _ = write!(line, " ({k:.1} KiB each)");
            }
            let _ = writeln!(s, "{line}");
        }
        if !self.rss_marks.is_empty() {
            let marks: Vec<String> =
                self.rss_marks.iter().map(|m| format!("{}: {:.1} MiB", m.operations, mib(m.rss_kib))).collect();
            let _ = writeln!(s, "  server RSS   after {}", marks.join(", "));
        }
        if self.errors.is_empty() {
            let _ = writeln!(s, "  errors       none");
        } else {
            for (k, n) in &self.errors {
                let sample = self.error_samples.get(k).map(String::as_str).unwrap_or("");
                let _ = writeln!(s, "  errors       {k}: {n}  (e.g. {sample})");
            }
        }
        if !self.counters.is_empty() {
            let c: Vec<String> = self.counters.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(s, "  counters     {}", c.join(", "));
        }
        if let Some(a) = &self.abuse {
            let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
            let _ = writeln!(
                s,
                "  legitimate   from {}, every {} ms: {} ok, {} failed ({:.1} % served), p50 {} ms, p99 {} ms",
                a.legit_source.as_deref().unwrap_or("the OS's choice"),
                a.legit_interval_ms,
                a.legit_ok,
                a.legit_failed,
                a.legit_success_rate * 100.0,
                ms(a.legit_p50_ms),
                ms(a.legit_p99_ms)
            );
            let c: Vec<String> = a.attack.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(s, "  attack       {}", c.join(", "));
            if let (Some(p50), Some(max)) = (a.held_p50_s, a.held_max_s) {
                let _ = writeln!(
                    s,
                    "  held         the server closed attacking connections after p50 {p50:.1} s, max {max:.1} s"
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note         {n}");
        }
        s
    }
}
