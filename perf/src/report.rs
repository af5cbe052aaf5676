//! The final report: one struct, printed for people or as JSON (`--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::floor::Floor;
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
    /// `cpu_us_per_op` over the floor named by the report's `floor_basis`.
    pub floor_ratio: Option<f64>,
    /// Context switches of the server's threads (voluntary + involuntary), and per unit of
    /// work: how often work hopped between threads or waited.
    pub ctx_switches: u64,
    pub ctx_switches_per_op: Option<f64>,
}

/// `--db-pid`: another process's CPU over the measured window (e.g. the database's).
#[derive(Debug, Clone, Serialize)]
pub struct DbCost {
    pub pids: Vec<u32>,
    pub cpu_s: f64,
    /// Per unit of work, divided by the same count as the server's.
    pub cpu_us_per_op: Option<f64>,
    pub cores: f64,
    pub floor_ratio: Option<f64>,
}

/// How live messages were received (`live`).
#[derive(Debug, Clone, Serialize, Default)]
pub struct LiveSummary {
    /// Deliveries the acknowledged messages should give (one per connection of the addressed
    /// recipient), warm-up included.
    pub expected: u64,
    /// First copies of our messages at a connection of the addressed recipient, warm-up
    /// included; `delivered_measured` of them were sent in the measured window.
    pub delivered: u64,
    pub delivered_measured: u64,
    /// Copies of our messages that reached a connection of someone else (a server that
    /// broadcasts to every socket): not deliveries.
    pub broadcast_copies: u64,
    /// A message arriving again at a connection that already had it: not counted again.
    pub duplicates: u64,
}

/// The setup's messages (the boxes of `send`, `mixed`; `list`, `ack`), sized to the server.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PrefillSummary {
    /// Messages planned and stored.
    pub planned: u64,
    pub stored: u64,
    /// Recipients per setup `sendMessage` in the end (halved on a too-many-recipients or
    /// too-large answer).
    pub recipients_per_send: usize,
    /// Waits after a 429 rate limit or a 503 busy answer.
    pub backoffs: u64,
    /// Why the prefill stopped short (the server's quota, or a rate limit that outlasted the
    /// waits), when it did.
    pub stopped_by: Option<String>,
}

/// One run of `--find-rate`.
#[derive(Debug, Clone, Serialize)]
pub struct RateStep {
    pub rate: f64,
    pub p99_ms: Option<f64>,
    pub throughput_per_s: f64,
    pub errors: u64,
    pub pass: bool,
}

/// What `--find-rate` found.
#[derive(Debug, Clone, Serialize)]
pub struct FindRate {
    pub p99_bound_ms: f64,
    /// The latency whose p99 is bounded.
    pub latency: String,
    /// The highest rate that passed (`None`: none did).
    pub rate: Option<f64>,
    /// `rate` (per s) × the floor (s) named by `floor_basis`.
    pub rate_x_floor: Option<f64>,
    pub steps: Vec<RateStep>,
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
    pub db_cpu_us_each: Option<f64>,
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
            db_cpu_us_each: each(u.db_cpu_s),
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
    pub db: Option<DbCost>,
    /// The request floor (1 verify + 1 sign) and the live floor (1 verify + 2 signs) in µs.
    pub floor_us: Option<f64>,
    pub live_floor_us: Option<f64>,
    pub floor: Option<Floor>,
    /// Which floor the ratios divide by: `request` (HTTP scenarios) or `live message`.
    pub floor_basis: Option<&'static str>,
    /// Open loop: `rate` (per s) × that floor (s).
    pub rate_x_floor: Option<f64>,
    pub client_cpu_s: Option<f64>,
    pub client_cpu_us_per_op: Option<f64>,
    pub phases: Vec<Phase>,
    pub rss_marks: Vec<RssMark>,
    pub notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abuse: Option<AbuseSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill: Option<PrefillSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub find_rate: Option<FindRate>,
    /// `--db-pid`s, for `take_usage`.
    #[serde(skip)]
    db_pids: Vec<u32>,
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
            db: None,
            floor_us: None,
            live_floor_us: None,
            floor: None,
            floor_basis: None,
            rate_x_floor: None,
            client_cpu_s: None,
            client_cpu_us_per_op: None,
            phases: Vec::new(),
            rss_marks: Vec::new(),
            notes: Vec::new(),
            abuse: None,
            live: None,
            prefill: None,
            find_rate: None,
            db_pids: o.db_pid.clone(),
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
                floor_ratio: None,
                ctx_switches: u.server_switches.unwrap_or(0),
                ctx_switches_per_op: (basis > 0).then(|| u.server_switches.unwrap_or(0) as f64 / basis as f64),
            });
        }
        if let (false, Some(cpu)) = (self.db_pids.is_empty(), u.db_cpu_s) {
            self.db = Some(DbCost {
                pids: self.db_pids.clone(),
                cpu_s: cpu,
                cpu_us_per_op: per(cpu),
                cores: if u.seconds > 0.0 { cpu / u.seconds } else { 0.0 },
                floor_ratio: None,
            });
        }
        self.client_cpu_s = u.client_cpu_s;
        self.client_cpu_us_per_op = u.client_cpu_s.and_then(per);
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The floor a unit of this report's work is judged against: a request's for the HTTP
    /// scenarios (a handshake's too, as a yardstick), a live message's for `live`; none for
    /// `idle` (per connection) and the abuse scenarios.
    pub fn basis_floor(&self, f: &Floor) -> Option<(&'static str, f64)> {
        if self.scenario.is_abuse() {
            return None;
        }
        match self.scenario {
            Scenario::Idle => None,
            Scenario::Live => f.live_us.map(|v| ("live message", v)),
            _ => Some(("request", f.request_us)),
        }
    }

    /// Records the floor and divides the measured costs by it.
    pub fn apply_floor(&mut self, floor: Option<Floor>) {
        let Some(f) = floor else { return };
        self.floor = Some(f);
        self.floor_us = Some(f.request_us);
        self.live_floor_us = f.live_us;
        let Some((basis, us)) = self.basis_floor(&f) else { return };
        self.floor_basis = Some(basis);
        if let Some(s) = &mut self.server {
            s.floor_ratio = s.cpu_us_per_op.map(|c| c / us);
        }
        if let Some(d) = &mut self.db {
            d.floor_ratio = d.cpu_us_per_op.map(|c| c / us);
        }
        self.rate_x_floor = self.rate.map(|r| r * us / 1e6);
        if let Some(fr) = &mut self.find_rate {
            fr.rate_x_floor = fr.rate.map(|r| r * us / 1e6);
        }
    }

    /// The p99 `--find-rate` bounds: a live message's delivery, otherwise the slowest of the
    /// operation kinds run.
    pub fn bounded_p99(&self) -> (String, Option<f64>) {
        if self.scenario == Scenario::Live {
            return ("delivery".into(), self.latency.get("delivery").map(|l| l.p99_ms));
        }
        let kinds = ["handshake", "send", "list", "ack"];
        let worst = self
            .latency
            .iter()
            .filter(|(k, _)| kinds.contains(&k.as_str()))
            .map(|(_, l)| l.p99_ms)
            .max_by(f64::total_cmp);
        let names: Vec<&str> = kinds.iter().copied().filter(|k| self.latency.contains_key(*k)).collect();
        (names.join("/"), worst)
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
        let basis = self.floor_basis.unwrap_or("request");
        let ratio = |r: Option<f64>| r.map_or(String::new(), |r| format!(" = {r:.2}× the {basis} floor"));
        if let Some(c) = &self.server {
            let per = c.cpu_us_per_op.map_or("-".into(), |v| format!("{v:.1}"));
            let _ = writeln!(
                s,
                "  server       CPU {:.2} s = {per} µs per {}{} ({} counted), {:.2} cores; RSS {:.1} -> {:.1} MiB (peak sampled {:.1}, VmHWM {:.1})",
                c.cpu_s,
                self.unit,
                ratio(c.floor_ratio),
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
        if let Some(d) = &self.db {
            let per = d.cpu_us_per_op.map_or("-".into(), |v| format!("{v:.1}"));
            let _ = writeln!(
                s,
                "  db           CPU {:.2} s = {per} µs per {}{}, {:.2} cores (pids {:?})",
                d.cpu_s,
                self.unit,
                ratio(d.floor_ratio),
                d.cores,
                d.pids
            );
        }
        if let Some(f) = &self.floor {
            let parts = match (f.verify_us, f.sign_us) {
                (Some(v), Some(g)) => format!(" (verify {v:.1} + sign {g:.1})"),
                _ => String::new(),
            };
            let live = f.live_us.map_or("-".into(), |v| format!("{v:.1}"));
            let how = if let (Some(v), Some(g)) = (f.verify_batches, f.sign_batches) {
                format!(
                    "measured here in {:.2} s, {} of {} batches ({} time; batches p10/p50/p90 {:.1}/{:.1}/{:.1})",
                    f.seconds,
                    f.estimate,
                    f.batches,
                    f.clock,
                    v.p10 + g.p10,
                    v.p50 + g.p50,
                    v.p90 + g.p90
                )
            } else {
                "given".into()
            };
            let _ = writeln!(s, "  floor        request {:.1} µs{parts}, live {live} µs; {how}", f.request_us);
        }
        if let (Some(r), Some(x)) = (self.rate, self.rate_x_floor) {
            let _ = writeln!(s, "  open loop    rate {r}/s × {basis} floor = {x:.3}");
        }
        if let Some(l) = &self.live {
            let _ = writeln!(
                s,
                "  live         {} delivered of {} expected ({} measured); {} broadcast copies to others, {} duplicates (not counted)",
                l.delivered, l.expected, l.delivered_measured, l.broadcast_copies, l.duplicates
            );
        }
        if let Some(p) = &self.prefill {
            let mut line = format!(
                "  prefill      {} of {} messages stored, {} recipients per send, {} back-offs",
                p.stored, p.planned, p.recipients_per_send, p.backoffs
            );
            if let Some(why) = &p.stopped_by {
                let _ = write!(line, "; stopped by {why}");
            }
            let _ = writeln!(s, "{line}");
        }
        if let Some(fr) = &self.find_rate {
            let found = match (fr.rate, fr.rate_x_floor) {
                (Some(r), Some(x)) => format!("{r:.0}/s (rate × {basis} floor = {x:.3})"),
                (Some(r), None) => format!("{r:.0}/s"),
                (None, _) => "no rate passed".into(),
            };
            let _ = writeln!(s, "  find rate    {} p99 < {} ms: {found}", fr.latency, fr.p99_bound_ms);
            for st in &fr.steps {
                let p99 = st.p99_ms.map_or("-".into(), |v| format!("{v:.2}"));
                let _ = writeln!(
                    s,
                    "    step       {:>9.1}/s  p99 {p99} ms  {:.1}/s done  {} errors  {}",
                    st.rate,
                    st.throughput_per_s,
                    st.errors,
                    if st.pass { "pass" } else { "FAIL" }
                );
            }
        }
        if let (Some(cpu), Some(per)) = (self.client_cpu_s, self.client_cpu_us_per_op) {
            let _ = writeln!(s, "  generator    CPU {cpu:.2} s = {per:.1} µs per {}", self.unit);
        }
        for p in &self.phases {
            let mut line = format!("  phase        {:<9} n={} in {:.2}s", p.name, p.count, p.seconds);
            if let Some(v) = p.server_cpu_us_each {
                let _ = write!(line, ", server {v:.1} CPU-µs each");
            }
            if let Some(v) = p.db_cpu_us_each {
                let _ = write!(line, ", db {v:.1} CPU-µs each");
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
