//! The live scenarios.
//!
//! - `live`: one message over HTTP into each identity's box first, one request at a time
//!   (`boxes`: the original creates boxes on first use and fails two concurrent first
//!   messages), then `--clients` socket clients connect (Engine.IO + BRC-103 + `authenticated`: the
//!   `connect` phase, costed on its own), join their own box (`join`), then the workers send
//!   messages between random pairs from the plan's tickets. Each message's id carries its
//!   scheduled time, so the recipient's reader records the delivery latency (schedule →
//!   `sendMessage-<room>` received) and the sender records the ack latency (`send`). The
//!   server's CPU over the window is divided by the messages delivered. A delivery counts
//!   once per (connection, message) and only at a connection of the addressed recipient (the
//!   `sendMessage-<room>` event names the room); copies a broadcasting server sends to
//!   everyone else are counted apart (`broadcast_copies`).
//!
//! With several `--url`s (a fleet's nodes) client `c` connects to node `c mod n`; message ids
//! carry the sender's node, so deliveries are also reported as same-node and cross-node
//! (latencies `delivery_same_node`, `delivery_cross_node`), and `--pairs` can keep every
//! message within a node or send every one across. The server's CPU is the sum over the
//! `--server-pid`s: the fleet's CPU per delivered message.
//! - `idle`: the same connects and joins, then the connections are held (pings answered) for
//!   `--duration`; the report gives the server's RSS before, after the connects and at the end,
//!   and per connection.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::Semaphore;

use crate::http::Target;
use crate::httpload::{Setup, SetupBox};
use crate::ident;
use crate::live::{self, Handle, LiveClient, Receiver};
use crate::options::{Options, Pairs, Scenario};
use crate::peer::Peer;
use crate::report::{LiveSummary, Phase, Report};
use crate::runner::{self, Meter, MonitorConfig, Shared};
use crate::schedule::Plan;
use crate::stats::{OpError, Stats};

/// How long to wait for deliveries still in flight after the last ack.
const DELIVERY_GRACE: Duration = Duration::from_secs(3);

struct Ctx {
    opts: Options,
    /// The servers (a fleet's nodes): client `c` connects to `targets[c % n]`.
    targets: Vec<Target>,
    /// Identity key of each client.
    keys: Arc<Vec<String>>,
    /// Connections per identity (a delivery reaches each of them).
    copies: Arc<Vec<u64>>,
    identities: Arc<Vec<messagebox::auth::ClientIdentity>>,
    message_box: String,
    tag: String,
    /// Messages acknowledged, and the deliveries they should give (warm-up included).
    acked: AtomicU64,
    expected: AtomicU64,
    delivered: Arc<AtomicU64>,
}

pub fn run(opts: Options, targets: Vec<Target>, meter: Meter) -> Result<Report, String> {
    let threads = opts.threads();
    let k = opts.clients;
    let n_ids = opts.identities.unwrap_or(k).min(k);
    let identities: Vec<_> = (0..n_ids).map(|i| ident::identity(opts.seed, i)).collect();
    let keys: Vec<String> = (0..k).map(|c| identities[c % n_ids].identity_hex().to_string()).collect();
    let mut copies = vec![0u64; n_ids];
    for c in 0..k {
        copies[c % n_ids] += 1;
    }
    let tag = ident::run_tag();
    let message_box = opts.message_box.clone().unwrap_or_else(|| format!("mbload-{}-{tag}", opts.scenario.name()));
    let ctx = Arc::new(Ctx {
        opts: opts.clone(),
        targets,
        keys: Arc::new(keys),
        copies: Arc::new(copies),
        identities: Arc::new(identities),
        message_box,
        tag,
        acked: AtomicU64::new(0),
        expected: AtomicU64::new(0),
        delivered: Arc::new(AtomicU64::new(0)),
    });
    // live: each recipient's box exists before the concurrent sends (see `make_boxes`).
    let boxes = Setup::new(u64::from(opts.scenario == Scenario::Live));
    let before_boxes = meter.mark();
    if opts.scenario == Scenario::Live {
        make_boxes(&ctx, &boxes).map_err(|e| format!("setup failed: the boxes: {e}"))?;
    }
    let after_boxes = meter.mark();
    let stats = Stats::new(threads);
    let shared = Shared::new(threads);
    let handles = {
        let (ctx, stats, shared) = (ctx.clone(), stats.clone(), shared.clone());
        runner::spawn(threads, move |t| {
            let (ctx, stats, shared) = (ctx.clone(), stats.clone(), shared.clone());
            async move { thread_main(t, threads, ctx, stats, shared).await }
        })
    };

    let m0 = meter.mark();
    shared.sync_blocking(); // connected
    let m1 = meter.mark();
    shared.sync_blocking(); // joined
    let m2 = meter.mark();
    let failure = shared.failed();
    let warmup = if opts.scenario == Scenario::Idle { Duration::ZERO } else { opts.warmup };
    let plan = Arc::new(Plan::new(
        Instant::now() + Duration::from_millis(20),
        warmup,
        opts.duration_or_default(),
        if opts.scenario == Scenario::Idle { None } else { opts.requests },
        opts.rate,
    ));
    if failure.is_some() {
        plan.stop();
    }
    let _ = shared.plan.set(plan.clone());
    let _ = stats.take_interval();
    shared.sync_blocking(); // plan set
    if let Some(f) = failure {
        shared.sync_blocking();
        for h in handles {
            let _ = h.join();
        }
        return Err(format!("setup failed: {f}"));
    }

    let unit = if opts.scenario == Scenario::Idle { "connection" } else { "message" };
    let cfg = MonitorConfig { quiet: opts.quiet, rss_every: opts.rss_every, scenario: opts.scenario.name(), unit };
    let mut grace_until: Option<Instant> = None;
    let watched = runner::watch(&shared, threads, &plan, &stats, &meter, &cfg, || {
        let deadline = *grace_until.get_or_insert_with(|| Instant::now() + DELIVERY_GRACE);
        ctx.delivered.load(Ordering::Relaxed) >= ctx.expected.load(Ordering::Relaxed) || Instant::now() >= deadline
    });
    shared.sync_blocking(); // the threads close their clients
    for h in handles {
        let _ = h.join();
    }

    let merged = stats.merged();
    let mut report = Report::base(&opts, n_ids, unit);
    report.warmup_s = warmup.as_secs_f64();
    report.take_stats(&merged);
    report.window_s = watched.end.at.saturating_duration_since(watched.start.at).as_secs_f64();
    report.phases.push(Phase::new("connect", k as u64, &meter.usage(&m0, &m1)));
    report.phases.push(Phase::new("join", k as u64, &meter.usage(&m1, &m2)));
    if opts.scenario == Scenario::Live {
        report.phases.push(Phase::new("boxes", boxes.total_stored(), &meter.usage(&before_boxes, &after_boxes)));
        if let Some(why) = boxes.stopped_by() {
            report.notes.push(format!("not every box was made before the run: {why}"));
        }
    }
    let usage = meter.usage(&watched.start, &watched.end);
    if opts.scenario == Scenario::Idle {
        report.operations = k as u64;
        report.take_usage(&opts.server_pid, &usage, watched.peak_rss_kib, k as u64);
        report.phases.push(Phase::new("hold", k as u64, &usage));
        report.notes.push(
            "idle: server CPU is per connection over the hold; see the connect phase for RSS per connection".into(),
        );
    } else {
        report.operations = merged.successes(&["send"]);
        report.throughput_per_s = if report.window_s > 0.0 { report.operations as f64 / report.window_s } else { 0.0 };
        let delivered = report.counters.get("delivered_measured").copied().unwrap_or(0);
        report.take_usage(&opts.server_pid, &usage, watched.peak_rss_kib, delivered);
        let expected = ctx.expected.load(Ordering::Relaxed);
        let got = ctx.delivered.load(Ordering::Relaxed);
        let count = |k: &str| report.counters.get(k).copied().unwrap_or(0);
        report.live = Some(LiveSummary {
            expected,
            delivered: got,
            delivered_measured: delivered,
            broadcast_copies: count("broadcast_copies"),
            duplicates: count("duplicate_deliveries"),
        });
        if count("broadcast_copies") > 0 {
            report.notes.push(format!(
                "the server sent {} copies of messages to connections they were not addressed to (a broadcast): not counted as deliveries, their cost is in the server's CPU per delivered message",
                count("broadcast_copies")
            ));
        }
        if got < expected {
            report.errors.insert("undelivered".into(), expected - got);
            report.error_samples.insert("undelivered".into(), format!("{got} of {expected} deliveries arrived"));
        }
        report.notes.push(format!(
            "{delivered} measured deliveries ({:.1}/s); server CPU is per delivered message; `send` latency is until the sendMessageAck",
            delivered as f64 / report.window_s.max(1e-9)
        ));
        if ctx.targets.len() > 1 {
            let count = |k: &str| report.counters.get(k).copied().unwrap_or(0);
            report.notes.push(format!(
                "{} nodes, clients round robin, pairs {:?}: {} measured deliveries within a node, {} across nodes; server CPU is the sum over the --server-pids",
                ctx.targets.len(),
                opts.pairs,
                count("delivered_same_node"),
                count("delivered_cross_node")
            ));
        }
    }
    Ok(report)
}

/// Sends one message over HTTP into every identity's box, from the first identity, one
/// request at a time, before any socket connects: the original creates a box on a live
/// message's first use too, and two concurrent first messages into one box fail there
/// ("Failed to store message"). Sized to the server as the HTTP scenarios' setup is.
fn make_boxes(ctx: &Ctx, boxes: &Setup) -> Result<(), OpError> {
    let recipients: Vec<String> = ctx.identities.iter().map(|i| i.identity_hex().to_string()).collect();
    let mut peer = Peer::new(ctx.identities[0].clone(), ctx.targets[0].clone(), !ctx.opts.skip_verify);
    // Not a sender slot's RNG (those are 0..concurrency).
    let mut rng = ident::rng(ctx.opts.seed, ctx.opts.concurrency);
    let into = SetupBox { setup: boxes, message_box: &ctx.message_box, body_size: ctx.opts.body_size };
    let id = |i: usize, _| format!("{}-b{i:x}", ctx.tag);
    runner::block_on(async {
        let mut waited = Duration::ZERO;
        into.send_step(&mut peer, &mut rng, &recipients, 0, &mut waited, &id).await.map(|_| ())
    })
}

async fn thread_main(t: usize, threads: usize, ctx: Arc<Ctx>, stats: Stats, shared: Arc<Shared>) {
    let o = &ctx.opts;
    let verify = !o.skip_verify;
    let gate = Rc::new(Semaphore::new((o.connect_concurrency / threads).max(1)));

    // Phase 1: connect.
    let mut tasks = Vec::new();
    for c in (t..o.clients).step_by(threads) {
        let (ctx, gate, stats) = (ctx.clone(), gate.clone(), stats.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let _permit = gate.acquire().await.expect("open");
            let o = &ctx.opts;
            let id = ctx.identities[c % ctx.identities.len()].clone();
            let start = Instant::now();
            let target = &ctx.targets[c % ctx.targets.len()];
            let r = match tokio::time::timeout(o.timeout, LiveClient::connect(target, id, o.transport, verify)).await {
                Ok(r) => r,
                Err(_) => Err(OpError::timeout()),
            };
            stats.thread(t).record("connect", true, start.elapsed(), r.as_ref().map(|_| ()));
            r.map(|cl| (c, cl)).map_err(|e| format!("client {c}: {e}"))
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        match task.await.expect("connect task") {
            Ok(c) => clients.push(c),
            Err(e) => shared.fail(e),
        }
    }
    shared.sync().await;

    // Phase 2: join.
    if shared.failed().is_none() {
        let mut tasks = Vec::new();
        for (c, mut cl) in clients.drain(..) {
            let (ctx, gate, stats) = (ctx.clone(), gate.clone(), stats.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let _permit = gate.acquire().await.expect("open");
                let start = Instant::now();
                let r = match tokio::time::timeout(ctx.opts.timeout, cl.join(&ctx.message_box)).await {
                    Ok(r) => r,
                    Err(_) => Err(OpError::timeout()),
                };
                stats.thread(t).record("join", true, start.elapsed(), r.as_ref().map(|_| ()));
                r.map(|_| (c, cl)).map_err(|e| format!("client {c} join: {e}"))
            }));
        }
        for task in tasks {
            match task.await.expect("join task") {
                Ok(c) => clients.push(c),
                Err(e) => shared.fail(e),
            }
        }
    }
    shared.sync().await;
    shared.sync().await;
    let plan = shared.plan.get().expect("plan set").clone();
    let receiver = Rc::new(Receiver {
        stats: stats.clone(),
        thread: t,
        tag: ctx.tag.clone(),
        base: RefCell::new(Some(plan.start)),
        delivered: Rc::new(Cell::new(0)),
        global_delivered: ctx.delivered.clone(),
        nodes: ctx.targets.len(),
    });
    let nodes = ctx.targets.len();
    let handles: Rc<Vec<Handle>> =
        Rc::new(clients.into_iter().map(|(c, cl)| cl.start(receiver.clone(), c % nodes)).collect());

    // Phase 3: the run.
    if plan.is_stopped() {
        // Setup failed elsewhere.
    } else if o.scenario == Scenario::Idle {
        if let Some(end) = plan.end() {
            tokio::time::sleep_until(end.into()).await;
        }
    } else {
        let mut tasks = Vec::new();
        for slot in (t..o.concurrency).step_by(threads) {
            let (ctx, plan, stats, handles) = (ctx.clone(), plan.clone(), stats.clone(), handles.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let mut rng = ident::rng(ctx.opts.seed, slot);
                let k = ctx.keys.len();
                while let Some(ticket) = plan.next().await {
                    let sender = &handles[rng.random_range(0..handles.len())];
                    let recipient = loop {
                        let r = rng.random_range(0..k);
                        let on_node = match ctx.opts.pairs {
                            Pairs::Any => true,
                            Pairs::SameNode => r % nodes == sender.node(),
                            Pairs::CrossNode => r % nodes != sender.node(),
                        };
                        if on_node && (ctx.keys[r] != sender.identity_hex() || k == 1) {
                            break r;
                        }
                    };
                    let key = &ctx.keys[recipient];
                    let id = live::message_id(
                        &ctx.tag,
                        ticket.seq,
                        ticket.scheduled.saturating_duration_since(plan.start),
                        ticket.measured,
                        sender.node(),
                    );
                    let body = ident::body(&mut rng, ctx.opts.body_size);
                    let r = match tokio::time::timeout(ctx.opts.timeout, sender.send(key, &ctx.message_box, id, &body))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(OpError::timeout()),
                    };
                    if r.is_ok() {
                        ctx.acked.fetch_add(1, Ordering::Relaxed);
                        ctx.expected.fetch_add(ctx.copies[recipient % ctx.copies.len()], Ordering::Relaxed);
                    }
                    let lat = Instant::now().saturating_duration_since(ticket.scheduled);
                    stats.thread(t).record("send", ticket.measured, lat, r.as_ref().map(|_| ()));
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }
    shared.finish();
    // Deliveries keep arriving on the reader tasks until the main thread has seen them.
    shared.sync().await;
    for h in handles.iter() {
        h.close();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}
