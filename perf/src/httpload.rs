//! The HTTP scenarios: `handshake`, `send`, `list`, `ack` and `mixed`.
//!
//! Each worker owns one keep-alive connection, one identity and its BRC-103 session. Setup
//! (before the clock starts): every worker connects and handshakes; `list` fills each
//! identity's box with `--messages` messages and `ack` pre-sends the messages each worker will
//! acknowledge, both with batched `sendMessage`s whose ids are derived, so no worker has to
//! tell another what it sent. Then the workers take tickets from the shared [`Plan`].
//!
//! The setup sizes itself to the server: the first message into each (recipient, box) is sent
//! by one worker, one request at a time, before the others start (`boxes`; send and mixed get
//! one such message per identity too), because the original creates a box on first use and
//! answers 500 to two concurrent first sends; the recipients per setup send halve while the
//! server says there are too many; a 429 rate limit or a 503 is waited out (`Retry-After`);
//! a 429 quota stops the prefill where it is, and the run uses exactly what was stored.

use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::http::Target;
use crate::ident;
use crate::options::{MixOp, Options, Scenario};
use crate::peer::Peer;
use crate::report::{Phase, PrefillSummary, Report};
use crate::runner::{self, Meter, MonitorConfig, Shared};
use crate::schedule::Plan;
use crate::stats::{ErrorKind, OpError, Stats};

/// The most recipients one setup `sendMessage` starts with; halved while the server answers
/// that a send has too many recipients (ours: 100 in the standard profile) or is too large.
const BATCH: usize = 500;

/// The longest one prefill worker waits in total after 429 rate-limit or 503 busy answers
/// before it stops with what it stored (a default rate-limit window is a minute).
const BACKOFF_BUDGET: Duration = Duration::from_secs(70);
/// One wait when the answer names none (`Retry-After`), and the longest single wait.
const BACKOFF_DEFAULT: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

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
    /// The setup's sends, sized to the server (see [`Setup`]).
    setup: Setup,
}

/// The setup's sends, shared by every worker: the recipients per send (shrunk when the
/// server refuses a size), and, per step of the prefill, how many of its recipients (a
/// prefix, the chunks go in order) have their message stored, so the run knows exactly which
/// messages exist when the server's quota stopped the prefill short.
pub(crate) struct Setup {
    batch: AtomicUsize,
    stored: Vec<AtomicUsize>,
    backoffs: AtomicU64,
    stopped_by: Mutex<Option<String>>,
}

impl Setup {
    pub(crate) fn new(steps: u64) -> Setup {
        Setup {
            batch: AtomicUsize::new(BATCH),
            stored: (0..steps).map(|_| AtomicUsize::new(0)).collect(),
            backoffs: AtomicU64::new(0),
            stopped_by: Mutex::new(None),
        }
    }

    fn stop(&self, why: String) {
        self.stopped_by.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(why);
    }

    pub(crate) fn stopped_by(&self) -> Option<String> {
        self.stopped_by.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Steps whose message to recipient `r` is stored.
    fn steps_stored_for(&self, r: usize) -> impl Iterator<Item = u64> + '_ {
        self.stored.iter().enumerate().filter(move |(_, n)| n.load(Ordering::SeqCst) > r).map(|(k, _)| k as u64)
    }

    pub(crate) fn total_stored(&self) -> u64 {
        self.stored.iter().map(|n| n.load(Ordering::SeqCst) as u64).sum()
    }
}

/// How the server answered a setup send.
#[derive(Debug, PartialEq, Eq)]
enum SetupAnswer {
    Stored,
    /// Too many recipients or too large a body: send fewer at once.
    TooBig,
    /// Rate limited or busy: wait (`Retry-After`, or a second) and send again.
    Later(Duration),
    /// Refused for good with this status and code (a storage quota): stop the prefill.
    Refused(String),
    /// Anything else: the setup fails.
    Failed(String),
}

/// The `code` of a JSON error answer.
fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
        .unwrap_or_else(|| "no code".into())
}

fn setup_answer(resp: &crate::http::Response) -> SetupAnswer {
    let code = error_code(&resp.body);
    match resp.status {
        200 if success(&resp.body) => SetupAnswer::Stored,
        400 if code == "ERR_TOO_MANY_RECIPIENTS" => SetupAnswer::TooBig,
        413 => SetupAnswer::TooBig,
        429 if code == "ERR_RATE_LIMITED" => SetupAnswer::Later(retry_after(resp)),
        503 => SetupAnswer::Later(retry_after(resp)),
        429 => SetupAnswer::Refused(format!(
            "HTTP 429 {code}: {}",
            serde_json::from_slice::<Value>(&resp.body)
                .ok()
                .and_then(|v| v["description"].as_str().map(str::to_string))
                .unwrap_or_default()
        )),
        s => SetupAnswer::Failed(format!("HTTP {s}: {}", crate::peer::snippet(&resp.body))),
    }
}

fn retry_after(resp: &crate::http::Response) -> Duration {
    resp.header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(BACKOFF_DEFAULT, Duration::from_secs)
        .clamp(Duration::from_millis(100), BACKOFF_MAX)
}

impl Ctx {
    fn ack_id(&self, worker: usize, k: u64) -> String {
        format!("{}-a{worker:x}-{k:x}", self.tag)
    }
    fn list_id(&self, identity: usize, k: u64) -> String {
        format!("{}-l{identity:x}-{k:x}", self.tag)
    }
    /// send, mixed: the message that creates `identity`'s box.
    fn box_id(&self, identity: usize) -> String {
        format!("{}-b{identity:x}", self.tag)
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
    /// list: the messages in this worker's box (what the prefill stored).
    expect: Option<usize>,
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
            Scenario::List => {
                let expect = self.expect;
                ("list", self.list(ctx, expect).await)
            }
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

/// Sends step `k` of the setup: one message to each of `recipients` (ids from `id(recipient
/// index, k)`), in chunks of the current batch size, recording what was stored. `Ok(false)`:
/// the server's quota (or a rate limit that outlasted the waits) stopped it, which
/// `ctx.setup` records.
async fn send_step(
    w: &mut Worker,
    ctx: &Ctx,
    recipients: &[String],
    k: u64,
    waited: &mut Duration,
    id: &impl Fn(usize, u64) -> String,
) -> Result<bool, OpError> {
    let into = SetupBox { setup: &ctx.setup, message_box: &ctx.message_box, body_size: ctx.opts.body_size };
    into.send_step(&mut w.peer, &mut w.rng, recipients, k, waited, id).await
}

/// Where setup sends go: the shared [`Setup`] state and the box.
pub(crate) struct SetupBox<'a> {
    pub setup: &'a Setup,
    pub message_box: &'a str,
    pub body_size: usize,
}

impl SetupBox<'_> {
    /// [`send_step`] on any peer (live's boxes are made over HTTP too).
    pub(crate) async fn send_step(
        &self,
        peer: &mut Peer,
        rng: &mut StdRng,
        recipients: &[String],
        k: u64,
        waited: &mut Duration,
        id: &impl Fn(usize, u64) -> String,
    ) -> Result<bool, OpError> {
        let route = peer.target().route("/sendMessage");
        let setup = self.setup;
        let mut i = 0;
        while i < recipients.len() {
            let n = setup.batch.load(Ordering::SeqCst).min(recipients.len() - i);
            let chunk = &recipients[i..i + n];
            let ids: Vec<String> = (i..i + n).map(|r| id(r, k)).collect();
            let body = ident::body(rng, self.body_size);
            let msg = json!({"message": {"recipients": chunk, "messageBox": self.message_box, "messageId": ids, "body": body}});
            let bytes = serde_json::to_vec(&msg).expect("JSON serialises");
            let resp = peer.call("POST", &route, Some(&bytes)).await?;
            match setup_answer(&resp) {
                SetupAnswer::Stored => {
                    i += n;
                    if let Some(stored) = setup.stored.get(k as usize) {
                        stored.store(i, Ordering::SeqCst);
                    }
                }
                SetupAnswer::TooBig if n > 1 => {
                    setup.batch.fetch_min(n / 2, Ordering::SeqCst);
                }
                SetupAnswer::Later(wait) if *waited + wait <= BACKOFF_BUDGET => {
                    setup.backoffs.fetch_add(1, Ordering::Relaxed);
                    *waited += wait;
                    tokio::time::sleep(wait).await;
                }
                SetupAnswer::Later(_) => {
                    setup.stop(format!(
                        "the server's rate limit: still refused after {} s of waits ({})",
                        waited.as_secs(),
                        error_code(&resp.body)
                    ));
                    return Ok(false);
                }
                SetupAnswer::Refused(why) => {
                    setup.stop(why);
                    return Ok(false);
                }
                SetupAnswer::TooBig | SetupAnswer::Failed(_) => {
                    return Err(OpError::new(
                        ErrorKind::Http(resp.status),
                        format!("setup sendMessage: {}", crate::peer::snippet(&resp.body)),
                    ));
                }
            }
        }
        Ok(true)
    }
}

/// The setup's sends (list, ack, and the boxes of send and mixed): step `k` sends one message
/// to each recipient. Step 0 is sent by worker 0 alone, before any other, so each (recipient,
/// box) is created by one send at a time (the original answers 500 to concurrent first sends
/// into a box); `first_only` is that phase. Then worker `w` sends the steps `k ≡ w` (mod
/// workers), `k ≥ 1`, until the server's quota stops it.
async fn prefill(
    w: &mut Worker,
    ctx: &Ctx,
    workers: usize,
    recipients: &[String],
    steps: u64,
    first_only: bool,
    id: impl Fn(usize, u64) -> String,
) -> Result<(), OpError> {
    let mut waited = Duration::ZERO;
    if first_only {
        if w.index == 0 && steps > 0 {
            send_step(w, ctx, recipients, 0, &mut waited, &id).await?;
        }
        return Ok(());
    }
    if ctx.setup.stopped_by().is_some() {
        return Ok(());
    }
    let mut k = if w.index == 0 { workers as u64 } else { w.index as u64 };
    while k < steps {
        if !send_step(w, ctx, recipients, k, &mut waited, &id).await? {
            break;
        }
        k += workers as u64;
    }
    Ok(())
}

/// Steps of the setup: list `--messages`, ack the per-worker prefill, send and mixed one
/// (the boxes), handshake none.
fn setup_steps(o: &Options, per_worker: u64) -> u64 {
    match o.scenario {
        Scenario::List => o.messages as u64,
        Scenario::Ack => per_worker,
        Scenario::Send | Scenario::Mixed => 1,
        _ => 0,
    }
}

/// Recipients of each setup step: ack, the workers' own identities; otherwise every identity.
fn setup_recipients(o: &Options, identities: usize) -> usize {
    match o.scenario {
        Scenario::Ack => o.concurrency.min(identities),
        _ => identities,
    }
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
    let setup = Setup::new(setup_steps(&opts, per_worker));
    let ctx = Arc::new(Ctx { opts: opts.clone(), targets, pool, message_box, tag, setup });
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
    // Phase 2: the boxes, one send at a time (worker 0's first step), then the prefill.
    shared.sync_blocking();
    let mb = meter.mark();
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
    let recipients = setup_recipients(&opts, identities) as u64;
    let steps = ctx.setup.stored.len() as u64;
    if steps > 0 {
        let first = ctx.setup.stored[0].load(Ordering::SeqCst) as u64;
        report.phases.push(Phase::new("boxes", first, &meter.usage(&m1, &mb)));
        let stored = ctx.setup.total_stored();
        if steps > 1 {
            report.phases.push(Phase::new("prefill", stored - first, &meter.usage(&mb, &m2)));
        }
        let summary = PrefillSummary {
            planned: steps * recipients,
            stored,
            recipients_per_send: ctx.setup.batch.load(Ordering::SeqCst),
            backoffs: ctx.setup.backoffs.load(Ordering::Relaxed),
            stopped_by: ctx.setup.stopped_by(),
        };
        if let Some(why) = &summary.stopped_by {
            report.notes.push(format!(
                "the prefill stopped at {} of {} messages: {why}; the run uses the messages stored (list expects each box's own count, ack acknowledges only stored ones)",
                summary.stored, summary.planned
            ));
        }
        report.prefill = Some(summary);
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
                expect: None,
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

    // Phase 2: the boxes (worker 0 alone), then the prefill (everyone).
    for first_only in [true, false] {
        if shared.failed().is_none() {
            let mut tasks = Vec::new();
            for mut w in mine.drain(..) {
                let ctx = ctx.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    let n = setup_recipients(&ctx.opts, ctx.pool.len());
                    let recipients = &ctx.pool[..n];
                    let steps = ctx.setup.stored.len() as u64;
                    let r = match ctx.opts.scenario {
                        Scenario::List => {
                            prefill(&mut w, &ctx, workers, recipients, steps, first_only, |i, k| ctx.list_id(i, k))
                                .await
                        }
                        Scenario::Ack => {
                            prefill(&mut w, &ctx, workers, recipients, steps, first_only, |i, k| ctx.ack_id(i, k)).await
                        }
                        Scenario::Send | Scenario::Mixed => {
                            prefill(&mut w, &ctx, workers, recipients, steps, first_only, |i, _| ctx.box_id(i)).await
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
    }
    // What the prefill stored is what the run expects.
    for w in &mut mine {
        match ctx.opts.scenario {
            Scenario::Ack => w.to_ack = ctx.setup.steps_stored_for(w.index).map(|k| ctx.ack_id(w.index, k)).collect(),
            Scenario::List => w.expect = Some(ctx.setup.steps_stored_for(w.index % ctx.pool.len()).count()),
            _ => {}
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Response;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> SetupAnswer {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        setup_answer(&Response { status, headers, body: body.as_bytes().to_vec() })
    }

    #[test]
    fn setup_answers_size_the_prefill() {
        assert_eq!(answer(200, &[], r#"{"status":"success"}"#), SetupAnswer::Stored);
        assert!(matches!(answer(200, &[], r#"{"status":"error"}"#), SetupAnswer::Failed(_)));
        let many = r#"{"status":"error","code":"ERR_TOO_MANY_RECIPIENTS","description":"at most 100"}"#;
        assert_eq!(answer(400, &[], many), SetupAnswer::TooBig);
        assert_eq!(answer(413, &[], "too large"), SetupAnswer::TooBig);
        let limited = r#"{"status":"error","code":"ERR_RATE_LIMITED"}"#;
        assert_eq!(answer(429, &[("retry-after", "7")], limited), SetupAnswer::Later(Duration::from_secs(7)));
        assert_eq!(answer(429, &[], limited), SetupAnswer::Later(BACKOFF_DEFAULT));
        assert_eq!(answer(503, &[("retry-after", "3600")], "busy"), SetupAnswer::Later(BACKOFF_MAX));
        let quota = r#"{"status":"error","code":"ERR_INBOX_QUOTA_EXCEEDED","description":"Inbox full."}"#;
        assert_eq!(
            answer(429, &[], quota),
            SetupAnswer::Refused("HTTP 429 ERR_INBOX_QUOTA_EXCEEDED: Inbox full.".into())
        );
        assert!(matches!(answer(400, &[], r#"{"code":"ERR_INVALID"}"#), SetupAnswer::Failed(_)));
        assert!(matches!(answer(500, &[], "boom"), SetupAnswer::Failed(_)));
    }

    #[test]
    fn the_run_expects_what_was_stored() {
        let s = Setup::new(4);
        // Step 0 reached all 3 recipients, step 1 only the first 2 (a quota), step 3 none.
        s.stored[0].store(3, Ordering::SeqCst);
        s.stored[1].store(2, Ordering::SeqCst);
        s.stored[2].store(3, Ordering::SeqCst);
        assert_eq!(s.steps_stored_for(0).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(s.steps_stored_for(2).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(s.total_stored(), 8);
        s.stop("first".into());
        s.stop("second".into());
        assert_eq!(s.stopped_by().as_deref(), Some("first"));
    }
}
