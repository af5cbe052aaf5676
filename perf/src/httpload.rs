//! The HTTP scenarios: `handshake`, `send`, `list`, `ack` and `mixed`.
//!
//! Each worker owns one keep-alive connection, one identity and its BRC-103 session. Setup
//! (before the clock starts): every worker connects and handshakes; `list` fills each
//! identity's box with `--messages` messages and `ack` pre-sends the messages each worker will
//! acknowledge, both with batched `sendMessage`s whose ids are derived, so no worker has to
//! tell another what it sent. Then the workers take tickets from the shared [`Plan`].

use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::http::Target;
use crate::ident;
use crate::options::{MixOp, Options, Scenario};
use crate::peer::Peer;
use crate::report::{Phase, Report};
use crate::runner::{self, Meter, MonitorConfig, Shared};
use crate::schedule::Plan;
use crate::stats::{OpError, Stats};

/// The most recipients one setup `sendMessage` carries (the server's default cap is 1000).
const BATCH: usize = 500;

/// mixed: most ids one acknowledgeMessage carries.
const ACK_MAX: usize = 1000;

/// What every worker needs to know.
struct Ctx {
    opts: Options,
    /// The servers (a fleet's nodes): worker `w` uses `targets[w % n]`.
    targets: Vec<Target>,
    /// Identity keys of the pool (recipients are drawn from it).
    pool: Arc<Vec<String>>,
    message_box: String,
    tag: String,
    /// ack: messages pre-sent per worker.
    per_worker: u64,
}

impl Ctx {
    fn ack_id(&self, worker: usize, k: u64) -> String {
        format!("{}-a{worker:x}-{k:x}", self.tag)
    }
    fn list_id(&self, identity: usize, k: u64) -> String {
        format!("{}-l{identity:x}-{k:x}", self.tag)
    }
}

struct Worker {
    index: usize,
    peer: Peer,
    rng: StdRng,
    sent: u64,
    /// ack / mixed: ids to acknowledge; mixed: the same as a set, to skip re-listed ones.
    to_ack: VecDeque<String>,
    queued: HashSet<String>,
}

/// The answer says `"status":"success"` (a byte search: the generator parses only what it checks).
fn success(body: &[u8]) -> bool {
    const NEEDLE: &[u8] = br#""status":"success""#;
    body.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

impl Worker {
    fn message_id(&mut self, tag: &str) -> String {
        self.sent += 1;
        format!("{tag}-s{:x}-{:x}", self.index, self.sent)
    }

    async fn send(&mut self, ctx: &Ctx) -> Result<(), OpError> {
        let n = ctx.opts.recipients.min(ctx.pool.len());
        let mut picks: Vec<usize> = Vec::with_capacity(n);
        while picks.len() < n {
            let r = self.rng.random_range(0..ctx.pool.len());
            if !picks.contains(&r) {
                picks.push(r);
            }
        }
        let body = ident::body(&mut self.rng, ctx.opts.body_size);
        let message = if n == 1 {
            json!({"recipient": ctx.pool[picks[0]], "messageBox": ctx.message_box,
                   "messageId": self.message_id(&ctx.tag), "body": body})
        } else {
            let ids: Vec<String> = (0..n).map(|_| self.message_id(&ctx.tag)).collect();
            let recipients: Vec<&str> = picks.iter().map(|&i| ctx.pool[i].as_str()).collect();
            json!({"recipients": recipients, "messageBox": ctx.message_box, "messageId": ids, "body": body})
        };
        self.post_success("/sendMessage", &json!({ "message": message })).await.map(|_| ())
    }

    async fn post_success(&mut self, route: &str, body: &Value) -> Result<Vec<u8>, OpError> {
        let bytes = serde_json::to_vec(body).expect("JSON serialises");
        let resp = self.peer.post_ok(route, &bytes).await?;
        if !success(&resp.body) {
            return Err(OpError::protocol(format!("{route}: no success status: {}", crate::peer::snippet(&resp.body))));
        }
        Ok(resp.body)
    }

    async fn list(&mut self, ctx: &Ctx, expect: Option<usize>) -> Result<(), OpError> {
        let body = self.post_success("/listMessages", &json!({ "messageBox": ctx.message_box })).await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| OpError::protocol(format!("listMessages: {e}")))?;
        let messages = v["messages"].as_array().ok_or_else(|| OpError::protocol("listMessages: no messages array"))?;
        if let Some(n) = expect {
            if messages.len() != n {
                return Err(OpError::protocol(format!("listMessages: {} messages, expected {n}", messages.len())));
            }
        }
        if ctx.opts.scenario == Scenario::Mixed {
            for m in messages {
                if let Some(id) = m["messageId"].as_str() {
                    if self.queued.insert(id.to_string()) {
                        self.to_ack.push_back(id.to_string());
                    }
                }
            }
        }
        Ok(())
    }

    async fn ack(&mut self, ids: Vec<String>) -> Result<(), OpError> {
        let r = self.post_success("/acknowledgeMessage", &json!({ "messageIds": ids })).await.map(|_| ());
        for id in &ids {
            self.queued.remove(id);
        }
        r
    }

    /// One operation; returns its kind for the stats, or `None` when the worker has nothing
    /// left to do (ack ran out of pre-sent messages).
    async fn op(&mut self, ctx: &Ctx) -> Option<(&'static str, Result<(), OpError>)> {
        Some(match ctx.opts.scenario {
            Scenario::Handshake => ("handshake", self.peer.handshake().await),
            Scenario::Send => ("send", self.send(ctx).await),
            Scenario::List => ("list", self.list(ctx, Some(ctx.opts.messages)).await),
            Scenario::Ack => {
                let id = self.to_ack.pop_front()?;
                ("ack", self.ack(vec![id]).await)
            }
            Scenario::Mixed => {
                let mix = ctx.opts.mix;
                match mix.pick(self.rng.random_range(0..mix.total())) {
                    MixOp::Handshake => ("handshake", self.peer.handshake().await),
                    MixOp::Send => ("send", self.send(ctx).await),
                    // As a client does: acknowledge everything listed so far in one request
                    // (per-message acks would let a big box slow its own lists and grow).
                    MixOp::Ack if !self.to_ack.is_empty() => {
                        let n = self.to_ack.len().min(ACK_MAX);
                        let ids: Vec<String> = self.to_ack.drain(..n).collect();
                        ("ack", self.ack(ids).await)
                    }
                    // Nothing listed yet to acknowledge: list instead, as a client would.
                    MixOp::List | MixOp::Ack => ("list", self.list(ctx, None).await),
                }
            }
            _ => unreachable!("live and abuse scenarios run elsewhere"),
        })
    }
}

/// Pre-sends messages in batches: step `k` of `steps` sends one message to each of
/// `recipients` (id from `id(recipient index, k)`); this worker does the steps `k ≡ w`.
async fn prefill(
    w: &mut Worker,
    ctx: &Ctx,
    workers: usize,
    recipients: &[String],
    steps: u64,
    id: impl Fn(usize, u64) -> String,
) -> Result<(), OpError> {
    let mut k = w.index as u64;
    while k < steps {
        for (c, chunk) in recipients.chunks(BATCH).enumerate() {
            let ids: Vec<String> = (0..chunk.len()).map(|i| id(c * BATCH + i, k)).collect();
            let body = ident::body(&mut w.rng, ctx.opts.body_size);
            let msg = json!({"message": {"recipients": chunk, "messageBox": ctx.message_box, "messageId": ids, "body": body}});
            w.post_success("/sendMessage", &msg).await?;
        }
        k += workers as u64;
    }
    Ok(())
}

/// How many operations the run will do, for sizing the ack prefill.
fn planned_ops(o: &Options) -> u64 {
    // A guess at closed-loop speed when nothing else says how many will run.
    const CLOSED_LOOP_GUESS: f64 = 6000.0;
    let probe = Plan::new(Instant::now(), o.warmup, o.duration_or_default(), o.requests, o.rate);
    probe.planned_tickets().map_or_else(
        || (CLOSED_LOOP_GUESS * (o.warmup + o.duration_or_default().unwrap_or_default()).as_secs_f64()) as u64,
        |n| if o.rate.is_none() { n + (CLOSED_LOOP_GUESS * o.warmup.as_secs_f64()) as u64 } else { n },
    )
}

pub fn run(opts: Options, targets: Vec<Target>, meter: Meter) -> Result<Report, String> {
    let threads = opts.threads();
    let workers = opts.concurrency;
    let identities = opts.identities.unwrap_or(workers);
    if opts.recipients > identities {
        return Err(format!("--recipients {} is more than --identities {identities}", opts.recipients));
    }
    let tag = ident::run_tag();
    let message_box = opts.message_box.clone().unwrap_or_else(|| format!("mbload-{}-{tag}", opts.scenario.name()));
    let per_worker = match opts.scenario {
        Scenario::Ack => opts.prefill.unwrap_or_else(|| planned_ops(&opts) * 11 / 10 / workers as u64 + 16),
        _ => 0,
    };
    let ids: Vec<_> = (0..identities).map(|i| ident::identity(opts.seed, i)).collect();
    let pool = Arc::new(ids.iter().map(|i| i.identity_hex().to_string()).collect::<Vec<_>>());
    let ctx = Arc::new(Ctx { opts: opts.clone(), targets, pool, message_box, tag, per_worker });
    let ids = Arc::new(ids);
    let stats = Stats::new(threads);
    let shared = Shared::new(threads);
    let setup_limit = (opts.connect_concurrency / threads).max(1);

    let handles = {
        let (ctx, ids, stats, shared) = (ctx.clone(), ids.clone(), stats.clone(), shared.clone());
        runner::spawn(threads, move |t| {
            let (ctx, ids, stats, shared) = (ctx.clone(), ids.clone(), stats.clone(), shared.clone());
            async move { thread_main(t, threads, setup_limit, ctx, ids, stats, shared).await }
        })
    };

    // Phase 1: connect + handshake every worker.
    let m0 = meter.mark();
    shared.sync_blocking();
    let m1 = meter.mark();
    // Phase 2: prefill (list, ack).
    shared.sync_blocking();
    let m2 = meter.mark();
    let failure = shared.failed();
    let plan = Arc::new(Plan::new(
        Instant::now() + std::time::Duration::from_millis(20),
        opts.warmup,
        opts.duration_or_default(),
        opts.requests,
        opts.rate,
    ));
    if failure.is_some() {
        plan.stop();
    }
    let _ = shared.plan.set(plan.clone());
    shared.sync_blocking();
    if let Some(f) = failure {
        for h in handles {
            let _ = h.join();
        }
        return Err(format!("setup failed: {f}"));
    }

    let unit = if opts.scenario == Scenario::Handshake { "handshake" } else { "request" };
    let cfg = MonitorConfig { quiet: opts.quiet, rss_every: opts.rss_every, scenario: opts.scenario.name(), unit };
    let watched = runner::watch(&shared, threads, &plan, &stats, &meter, &cfg, || true);
    for h in handles {
        let _ = h.join();
    }

    let merged = stats.merged();
    let mut report = Report::base(&opts, identities, unit);
    report.take_stats(&merged);
    let last = shared.last_finish.lock().unwrap_or_else(|p| p.into_inner()).unwrap_or(watched.end.at);
    report.window_s = last.saturating_duration_since(watched.start.at).as_secs_f64();
    let kinds = ["handshake", "send", "list", "ack"];
    report.operations = merged.successes(&kinds);
    report.throughput_per_s = if report.window_s > 0.0 { report.operations as f64 / report.window_s } else { 0.0 };
    let usage = meter.usage(&watched.start, &watched.end);
    report.take_usage(&opts.server_pid, &usage, watched.peak_rss_kib, report.operations);
    report.rss_marks = watched.rss_marks;
    report.phases.push(Phase::new("setup", workers as u64, &meter.usage(&m0, &m1)));
    if per_worker > 0 || opts.scenario == Scenario::List {
        let n = if opts.scenario == Scenario::List {
            (identities * opts.messages) as u64
        } else {
            per_worker * workers as u64
        };
        report.phases.push(Phase::new("prefill", n, &meter.usage(&m1, &m2)));
    }
    if let Some(n) = report.counters.get("ack_exhausted") {
        report.notes.push(format!("{n} workers ran out of pre-sent messages; raise --prefill"));
    }
    if opts.scenario == Scenario::Handshake {
        report.notes.push("every handshake leaves a session in the server's table until it expires".into());
    }
    Ok(report)
}

async fn thread_main(
    t: usize,
    threads: usize,
    setup_limit: usize,
    ctx: Arc<Ctx>,
    ids: Arc<Vec<messagebox::auth::ClientIdentity>>,
    stats: Stats,
    shared: Arc<Shared>,
) {
    let workers = ctx.opts.concurrency;
    let verify = !ctx.opts.skip_verify;
    let timeout = ctx.opts.timeout;

    // Phase 1: connect and handshake.
    let gate = Rc::new(Semaphore::new(setup_limit));
    let mut tasks = Vec::new();
    for w in (t..workers).step_by(threads) {
        let (ctx, ids, gate) = (ctx.clone(), ids.clone(), gate.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = gate.acquire().await.expect("open");
            let peer = Peer::new(ids[w % ids.len()].clone(), ctx.targets[w % ctx.targets.len()].clone(), verify);
            let mut worker = Worker {
                index: w,
                peer,
                rng: ident::rng(ctx.opts.seed, w),
                sent: 0,
                to_ack: VecDeque::new(),
                queued: HashSet::new(),
            };
            match tokio::time::timeout(timeout, worker.peer.handshake()).await {
                Ok(Ok(())) => Ok(worker),
                Ok(Err(e)) => Err(format!("worker {w}: {e}")),
                Err(_) => Err(format!("worker {w}: handshake timed out")),
            }
        }));
    }
    let mut mine = Vec::new();
    for task in tasks {
        match task.await.expect("setup task") {
            Ok(w) => mine.push(w),
            Err(e) => shared.fail(e),
        }
    }
    shared.sync().await;

    // Phase 2: prefill.
    if shared.failed().is_none() {
        let mut tasks = Vec::new();
        for mut w in mine.drain(..) {
            let ctx = ctx.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let r = match ctx.opts.scenario {
                    Scenario::List => {
                        let pool = ctx.pool.clone();
                        prefill(&mut w, &ctx, workers, &pool, ctx.opts.messages as u64, |i, k| ctx.list_id(i, k)).await
                    }
                    Scenario::Ack => {
                        let recipients: Vec<String> = ctx.pool[..workers].to_vec();
                        let r =
                            prefill(&mut w, &ctx, workers, &recipients, ctx.per_worker, |i, k| ctx.ack_id(i, k)).await;
                        w.to_ack = (0..ctx.per_worker).map(|k| ctx.ack_id(w.index, k)).collect();
                        r
                    }
                    _ => Ok(()),
                };
                (w, r)
            }));
        }
        for task in tasks {
            let (w, r) = task.await.expect("prefill task");
            if let Err(e) = r {
                shared.fail(format!("prefill: {e}"));
            }
            mine.push(w);
        }
    }
    shared.sync().await;
    shared.sync().await;
    let plan = shared.plan.get().expect("plan set before the run").clone();

    // Phase 3: the run.
    let ctx_run = ctx.clone();
    let mut tasks = Vec::new();
    for mut w in mine {
        let (ctx, plan, stats) = (ctx_run.clone(), plan.clone(), stats.clone());
        tasks.push(tokio::task::spawn_local(async move {
            while let Some(ticket) = plan.next().await {
                let outcome = tokio::time::timeout(timeout, w.op(&ctx)).await;
                let done = Instant::now();
                let (kind, result) = match outcome {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        stats.thread(t).count("ack_exhausted", 1);
                        break;
                    }
                    Err(_) => {
                        w.peer.reset_connection();
                        (kind_of(&ctx.opts), Err(OpError::timeout()))
                    }
                };
                let mut s = stats.thread(t);
                s.record(
                    kind,
                    ticket.measured,
                    done.saturating_duration_since(ticket.scheduled),
                    result.as_ref().map(|_| ()),
                );
            }
            let mut s = stats.thread(t);
            s.count("handshakes", w.peer.handshakes);
            if w.peer.rehandshakes > 0 {
                s.count("rehandshakes_after_401", w.peer.rehandshakes);
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    shared.finish();
}

fn kind_of(o: &Options) -> &'static str {
    match o.scenario {
        Scenario::Handshake => "handshake",
        Scenario::Send => "send",
        Scenario::List => "list",
        Scenario::Ack => "ack",
        _ => "mixed",
    }
}
