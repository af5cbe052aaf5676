//! The `abuse-*` scenarios: an attack runs for `--duration` while a legitimate client — its
//! own identity, its connections from another source address (`--legit-source`, 127.0.0.2
//! on loopback) — sends a signed `listMessages` every `--legit-interval`. The report gives
//! the server's RSS (start, end, sampled peak, VmHWM), the attack's counters (attempts,
//! accepted, refused by status and code, closed by the server, how long the server kept what
//! it closed) and the legitimate client's successes, failures and latency.
//!
//! - `abuse-handshake`: anonymous `initialRequest`s from fresh identities, back to back on
//!   `--attack-connections` keep-alive connections (each refusal read: status and code).
//! - `abuse-slow-headers`: connections that send a request head one byte per
//!   `--slow-interval` ([`SlowHead`]) and never finish it; reconnected when closed.
//! - `abuse-fanout`: signed sends of the largest accepted body to the most recipients
//!   allowed (the standard profile's caps unless given), back to back; the over-cap answers
//!   are probed once first. A sender whose quota is full is replaced by a fresh identity, as
//!   an attacker would.
//! - `abuse-sockets`: Engine.IO sessions (`--transport`: the real client's polling start and
//!   upgrade, or WebSocket directly) that send `40`, answer pings and never authenticate;
//!   reconnected when closed.
//!
//! Threads: the attack runs on `--threads` generator threads; the legitimate client has a
//! thread of its own, so its latency is not the generator's queueing behind the attack.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use messagebox::limits::ResourceLimits;
use rand::Rng;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

use crate::http::{self, Conn, HttpError, Target};
use crate::ident;
use crate::live;
use crate::options::{Options, Scenario, Transport};
use crate::peer::Peer;
use crate::report::{AbuseSummary, Phase, Report};
use crate::runner::{self, Meter, MonitorConfig, Shared};
use crate::schedule::Plan;
use crate::stats::{ErrorKind, Latency, OpError, Stats};

/// Seeds of the attack's identities, apart from the legitimate client's.
const ATTACK_SEED: u64 = 0xA77A_C4ED;
/// The legitimate client's identity index (far from any attack index).
const LEGIT_INDEX: usize = 1 << 40;
/// Recipient keys the fan-out draws from (fresh identities nobody uses).
const FANOUT_POOL: usize = 1000;
/// A connection closed within this of its connect was refused at accept.
const AT_ONCE: Duration = Duration::from_secs(1);
/// Pause after a refused connect or socket, so a refusal loop does not spin.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The attack's counters, shared by every attack task (few updates per second per task
/// beside the I/O, so one mutex is enough).
#[derive(Clone, Default)]
struct Tally(Arc<Mutex<BTreeMap<String, u64>>>);

impl Tally {
    fn add(&self, key: impl Into<String>, n: u64) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(key.into()).or_default() += n;
    }
    fn take(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The counter for an HTTP answer: `accepted` for a 200, else `refused_<status>_<code>` with
/// the `code` of a JSON error body (`nocode` without one).
pub fn outcome_key(status: u16, body: &[u8]) -> String {
    if status == 200 {
        return "accepted".into();
    }
    let code = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "nocode".into());
    format!("refused_{status}_{code}")
}

/// The counter for a failed attempt.
fn error_key(e: &OpError) -> String {
    match e.kind {
        ErrorKind::Http(s) => format!("refused_{s}"),
        ErrorKind::Connect => "closed_or_refused_connection".into(),
        ErrorKind::Timeout => "timeout".into(),
        ErrorKind::Auth => "auth_error".into(),
        ErrorKind::Protocol => "protocol_error".into(),
    }
}

/// The request head a slowloris connection writes, one byte at a time, forever: a request
/// line and `Host`, then header lines without end (never the blank line that ends a head).
#[derive(Debug, Clone)]
pub struct SlowHead {
    prefix: Vec<u8>,
}

/// The header line repeated after the prefix (non-empty, so no `\r\n\r\n` ever forms).
const SLOW_LINE: &[u8] = b"x-a: b\r\n";

impl SlowHead {
    pub fn new(host: &str, path: &str) -> SlowHead {
        SlowHead {
            prefix: format!("POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n").into_bytes(),
        }
    }

    /// Byte `k` of the endless head.
    pub fn byte(&self, k: u64) -> u8 {
        let p = self.prefix.len() as u64;
        if k < p {
            self.prefix[k as usize]
        } else {
            SLOW_LINE[((k - p) % SLOW_LINE.len() as u64) as usize]
        }
    }

    /// When byte `k` is due on a connection opened at `start`: one per `interval`, the first
    /// at once.
    pub fn due(start: Instant, interval: Duration, k: u64) -> Instant {
        start + interval.saturating_mul(k.min(u32::MAX as u64) as u32)
    }
}

/// The legitimate client's source: the option, else 127.0.0.2 for a loopback IPv4 target.
pub fn legit_source(opts: &Options, target: &Target) -> Option<IpAddr> {
    opts.legit_source.or_else(|| match target.addr.ip() {
        IpAddr::V4(v4) if v4.is_loopback() => Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2))),
        _ => None,
    })
}

struct Ctx {
    opts: Options,
    target: Target,
    tally: Tally,
    message_box: String,
    tag: String,
    legit_source: Option<IpAddr>,
    /// fanout: body characters and recipients per send, and the recipients' keys.
    fanout_body: usize,
    fanout_recipients: usize,
    pool: Vec<String>,
}

pub fn run(opts: Options, target: Target, meter: Meter) -> Result<Report, String> {
    let threads = opts.threads();
    let attackers = opts.attack_connections.unwrap_or_else(|| opts.scenario.default_attack_connections());
    let defaults = ResourceLimits::default().messages;
    let tag = ident::run_tag();
    let pool = if opts.scenario == Scenario::AbuseFanout {
        (0..FANOUT_POOL).map(|i| ident::identity(opts.seed ^ ATTACK_SEED, i).identity_hex().to_string()).collect()
    } else {
        Vec::new()
    };
    let ctx = Arc::new(Ctx {
        legit_source: legit_source(&opts, &target),
        message_box: opts.message_box.clone().unwrap_or_else(|| format!("mbload-abuse-{tag}")),
        fanout_body: opts.fanout_body_bytes.unwrap_or(defaults.max_message_body_bytes.map_or(1 << 20, |b| b as usize)),
        fanout_recipients: opts
            .fanout_recipients
            .unwrap_or(defaults.max_recipients.map_or(100, |r| r as usize))
            .min(FANOUT_POOL),
        pool,
        tag,
        opts: opts.clone(),
        target,
        tally: Tally::default(),
    });
    // Thread `threads` is the legitimate client's.
    let all = threads + 1;
    let stats = Stats::new(all);
    let shared = Shared::new(all);
    let handles = {
        let (ctx, stats, shared) = (ctx.clone(), stats.clone(), shared.clone());
        runner::spawn(all, move |t| {
            let (ctx, stats, shared) = (ctx.clone(), stats.clone(), shared.clone());
            async move { thread_main(t, threads, attackers, ctx, stats, shared).await }
        })
    };

    let m0 = meter.mark();
    shared.sync_blocking(); // set up
    let m1 = meter.mark();
    let failure = shared.failed();
    let plan = Arc::new(Plan::new(
        Instant::now() + Duration::from_millis(20),
        opts.warmup,
        Some(opts.duration.unwrap_or(Duration::from_secs(10))),
        None,
        None,
    ));
    if failure.is_some() {
        plan.stop();
    }
    let _ = shared.plan.set(plan.clone());
    let _ = stats.take_interval();
    shared.sync_blocking(); // plan set
    if let Some(f) = failure {
        for h in handles {
            let _ = h.join();
        }
        return Err(format!("setup failed: {f}"));
    }
    let cfg = MonitorConfig { quiet: opts.quiet, rss_every: None, scenario: opts.scenario.name(), unit: "op" };
    let watched = runner::watch(&shared, all, &plan, &stats, &meter, &cfg, || true);
    for h in handles {
        let _ = h.join();
    }

    let merged = stats.merged();
    let mut report = Report::base(&opts, 1, "legitimate request");
    report.concurrency = attackers;
    report.take_stats(&merged);
    report.window_s = watched.end.at.saturating_duration_since(watched.start.at).as_secs_f64();
    report.operations = merged.successes(&["legit"]);
    report.throughput_per_s = if report.window_s > 0.0 { report.operations as f64 / report.window_s } else { 0.0 };
    let usage = meter.usage(&watched.start, &watched.end);
    report.take_usage(&opts.server_pid, &usage, watched.peak_rss_kib, report.operations);
    report.phases.push(Phase::new("setup", 1, &meter.usage(&m0, &m1)));
    let legit = merged.latency.get("legit").map(Latency::of);
    let held = merged.latency.get("held").map(Latency::of);
    let failed = merged.error_total();
    let ok = report.operations;
    report.abuse = Some(AbuseSummary {
        legit_source: ctx.legit_source.map(|s| s.to_string()),
        legit_interval_ms: opts.legit_interval.as_secs_f64() * 1000.0,
        legit_ok: ok,
        legit_failed: failed,
        legit_success_rate: if ok + failed > 0 { ok as f64 / (ok + failed) as f64 } else { 0.0 },
        legit_p50_ms: legit.map(|l| l.p50_ms),
        legit_p99_ms: legit.map(|l| l.p99_ms),
        attack: ctx.tally.take(),
        held_p50_s: held.map(|l| l.p50_ms / 1000.0),
        held_max_s: held.map(|l| l.max_ms / 1000.0),
    });
    report.notes.push(format!(
        "{attackers} attacking {}; errors and latency are the legitimate client's (`legit`); `attack` latency is each attempt's answer time, `held` how long the server kept what it closed",
        match opts.scenario {
            Scenario::AbuseFanout => "senders",
            Scenario::AbuseSockets => "sockets",
            _ => "connections",
        }
    ));
    if opts.scenario == Scenario::AbuseFanout {
        report.notes.push(format!(
            "fan-out: {} body characters × {} recipients per send",
            ctx.fanout_body, ctx.fanout_recipients
        ));
    }
    Ok(report)
}

async fn thread_main(t: usize, threads: usize, attackers: usize, ctx: Arc<Ctx>, stats: Stats, shared: Arc<Shared>) {
    let legit_thread = t == threads;
    // Setup: the legitimate client handshakes; the fan-out probes the caps once.
    let mut legit = None;
    if legit_thread {
        let id = ident::identity(ctx.opts.seed, LEGIT_INDEX);
        let mut peer = Peer::from_source(id, ctx.target.clone(), !ctx.opts.skip_verify, ctx.legit_source);
        match tokio::time::timeout(ctx.opts.timeout, peer.handshake()).await {
            Ok(Ok(())) => legit = Some(peer),
            Ok(Err(e)) => shared.fail(format!("legitimate client: {e}")),
            Err(_) => shared.fail("legitimate client: handshake timed out".into()),
        }
    } else if t == 0 && ctx.opts.scenario == Scenario::AbuseFanout {
        probe_fanout_caps(&ctx).await;
    }
    shared.sync().await;
    shared.sync().await;
    let plan = shared.plan.get().expect("plan set").clone();
    if plan.is_stopped() {
        shared.finish();
        return;
    }
    if let Some(peer) = legit {
        legitimate(peer, &ctx, &plan, &stats, t).await;
        shared.finish();
        return;
    }
    let mut tasks = Vec::new();
    for w in (t..attackers).step_by(threads) {
        let (ctx, plan, stats) = (ctx.clone(), plan.clone(), stats.clone());
        tasks.push(tokio::task::spawn_local(async move {
            match ctx.opts.scenario {
                Scenario::AbuseHandshake => handshake_flood(w, &ctx, &plan, &stats, t).await,
                Scenario::AbuseSlowHeaders => slow_headers(&ctx, &plan, &stats, t).await,
                Scenario::AbuseFanout => fanout(w, &ctx, &plan, &stats, t).await,
                _ => unauthenticated_socket(&ctx, &plan, &stats, t).await,
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    shared.finish();
}

/// A signed listMessages every `--legit-interval`, latency from its scheduled start.
async fn legitimate(mut peer: Peer, ctx: &Ctx, plan: &Plan, stats: &Stats, t: usize) {
    let end = plan.end().expect("abuse runs have a duration");
    let body = serde_json::to_vec(&json!({ "messageBox": ctx.message_box })).expect("JSON");
    for k in 0u64.. {
        let due = SlowHead::due(plan.start, ctx.opts.legit_interval, k);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let r = match tokio::time::timeout(ctx.opts.timeout, peer.post_ok("/listMessages", &body)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => {
                peer.reset_connection();
                Err(OpError::timeout())
            }
        };
        stats.thread(t).record(
            "legit",
            due >= plan.warmup_end,
            Instant::now().saturating_duration_since(due),
            r.as_ref().map(|_| ()),
        );
    }
}

async fn probe_fanout_caps(ctx: &Ctx) {
    let mut peer = Peer::new(ident::identity(ctx.opts.seed ^ ATTACK_SEED, LEGIT_INDEX + 1), ctx.target.clone(), false);
    let path = ctx.target.route("/sendMessage");
    let probes =
        [("probe_body_over_cap", ctx.fanout_body + 1, 1), ("probe_recipients_over_cap", 8, ctx.fanout_recipients + 1)];
    for (name, body_len, n) in probes {
        let n = n.min(ctx.pool.len());
        let recipients: Vec<&str> = ctx.pool[..n].iter().map(String::as_str).collect();
        let ids: Vec<String> = (0..n).map(|i| format!("{}-probe-{name}-{i}", ctx.tag)).collect();
        let body = "A".repeat(body_len);
        let msg = json!({"message": {"recipients": recipients, "messageBox": ctx.message_box, "messageId": ids, "body": body}});
        let bytes = serde_json::to_vec(&msg).expect("JSON");
        let key = match tokio::time::timeout(ctx.opts.timeout, peer.call_raw("POST", &path, &bytes)).await {
            Ok(Ok(r)) => outcome_key(r.status, &r.body),
            Ok(Err(e)) => error_key(&e),
            Err(_) => "timeout".into(),
        };
        ctx.tally.add(format!("{name}:{key}"), 1);
    }
}

async fn handshake_flood(w: usize, ctx: &Ctx, plan: &Plan, stats: &Stats, t: usize) {
    let mut conn = Conn::new(ctx.target.clone());
    let headers = [("content-type".to_string(), "application/json".to_string())];
    let mut n = 0u64;
    while let Some(ticket) = plan.next().await {
        let id = ident::identity(ctx.opts.seed ^ ATTACK_SEED, (w << 32) | n as usize);
        n += 1;
        let (msg, _pending) = id.start_handshake();
        let body = msg.to_json().into_bytes();
        let key =
            match tokio::time::timeout(ctx.opts.timeout, conn.request("POST", "/.well-known/auth", &headers, &body))
                .await
            {
                Ok(Ok(r)) => outcome_key(r.status, &r.body),
                Ok(Err(HttpError::Connect(_))) => "connect_failed".into(),
                Ok(Err(_)) => "closed_by_server".into(),
                Err(_) => {
                    conn.reset();
                    "timeout".into()
                }
            };
        ctx.tally.add("attempts", 1);
        ctx.tally.add(key, 1);
        let lat = Instant::now().saturating_duration_since(ticket.scheduled);
        stats.thread(t).record("attack", ticket.measured, lat, Ok(()));
    }
    ctx.tally.add("connections_opened", conn.connects);
}

/// One slowloris connection after another until the end of the run.
async fn slow_headers(ctx: &Ctx, plan: &Plan, stats: &Stats, t: usize) {
    let end = plan.end().expect("abuse runs have a duration");
    let head = SlowHead::new(&ctx.target.host, &ctx.target.route("/listMessages"));
    let mut buf = [0u8; 512];
    while Instant::now() < end {
        ctx.tally.add("attempts", 1);
        let start = Instant::now();
        let mut stream = match tokio::time::timeout(ctx.opts.timeout, http::connect_from(ctx.target.addr, None)).await {
            Ok(Ok(s)) => s,
            _ => {
                ctx.tally.add("connect_failed", 1);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let mut k = 0u64;
        let closed = loop {
            let due = SlowHead::due(start, ctx.opts.slow_interval, k).min(end);
            tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => {
                    if Instant::now() >= end {
                        break None;
                    }
                    if stream.write_all(&[head.byte(k)]).await.is_err() {
                        break Some("closed_by_server".to_string());
                    }
                    k += 1;
                }
                r = stream.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break Some("closed_by_server".to_string()),
                    Ok(n) => {
                        // An answer (e.g. 408 or 431): count its status, then the close.
                        let status = std::str::from_utf8(&buf[..n]).ok()
                            .and_then(|s| s.split_ascii_whitespace().nth(1).map(str::to_string))
                            .unwrap_or_else(|| "unparsed".into());
                        break Some(format!("answered_{status}"));
                    }
                },
            }
        };
        let held = start.elapsed();
        ctx.tally.add("bytes_sent", k);
        match closed {
            None => ctx.tally.add("open_at_end", 1),
            Some(why) => {
                ctx.tally.add(why, 1);
                if held < AT_ONCE {
                    ctx.tally.add("closed_at_once", 1);
                    tokio::time::sleep(RETRY_PAUSE).await;
                } else {
                    ctx.tally.add("accepted", 1);
                    stats.thread(t).record_latency("held", held);
                }
            }
        }
    }
}

async fn fanout(w: usize, ctx: &Ctx, plan: &Plan, stats: &Stats, t: usize) {
    let mut generation = 0usize;
    let new_peer = |g: usize| {
        Peer::new(
            ident::identity(ctx.opts.seed ^ ATTACK_SEED, LEGIT_INDEX + 2 + (w << 20) + g),
            ctx.target.clone(),
            false,
        )
    };
    let mut peer = new_peer(generation);
    let mut rng = ident::rng(ctx.opts.seed ^ ATTACK_SEED, w);
    let body = ident::body(&mut rng, ctx.fanout_body);
    let path = ctx.target.route("/sendMessage");
    let mut sent = 0u64;
    while let Some(ticket) = plan.next().await {
        let n = ctx.fanout_recipients;
        let first = rng.random_range(0..ctx.pool.len());
        let recipients: Vec<&str> = (0..n).map(|i| ctx.pool[(first + i) % ctx.pool.len()].as_str()).collect();
        let ids: Vec<String> = (0..n)
            .map(|_| {
                sent += 1;
                format!("{}-f{w:x}-{sent:x}", ctx.tag)
            })
            .collect();
        let msg = json!({"message": {"recipients": recipients, "messageBox": ctx.message_box, "messageId": ids, "body": body}});
        let bytes = serde_json::to_vec(&msg).expect("JSON");
        drop(msg);
        let key = match tokio::time::timeout(ctx.opts.timeout, peer.call_raw("POST", &path, &bytes)).await {
            Ok(Ok(r)) => outcome_key(r.status, &r.body),
            Ok(Err(e)) => error_key(&e),
            Err(_) => {
                peer.reset_connection();
                "timeout".into()
            }
        };
        ctx.tally.add("attempts", 1);
        if key == "accepted" {
            ctx.tally.add("bytes_accepted", (ctx.fanout_body * n) as u64);
        }
        if key.contains("QUOTA_EXCEEDED") || key.starts_with("refused_429") {
            // A fresh identity: free, as the issue says.
            generation += 1;
            ctx.tally.add("identities_replaced", 1);
            peer = new_peer(generation);
        }
        ctx.tally.add(key, 1);
        let lat = Instant::now().saturating_duration_since(ticket.scheduled);
        stats.thread(t).record("attack", ticket.measured, lat, Ok(()));
    }
}

/// Unauthenticated Engine.IO sessions, one after another until the end of the run.
async fn unauthenticated_socket(ctx: &Ctx, plan: &Plan, stats: &Stats, t: usize) {
    let end = plan.end().expect("abuse runs have a duration");
    while Instant::now() < end {
        ctx.tally.add("attempts", 1);
        let start = Instant::now();
        let open = async {
            match ctx.opts.transport {
                Transport::Upgrade => live::upgrade(&ctx.target).await,
                Transport::Websocket => live::direct(&ctx.target).await,
            }
        };
        let mut ws = match tokio::time::timeout_at(end.into(), tokio::time::timeout(ctx.opts.timeout, open)).await {
            Err(_) => break,
            Ok(Ok(Ok(ws))) => ws,
            Ok(Ok(Err(e))) => {
                ctx.tally.add(error_key(&e), 1);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            Ok(Err(_)) => {
                ctx.tally.add("timeout", 1);
                continue;
            }
        };
        ctx.tally.add("accepted", 1);
        let closed = loop {
            match tokio::time::timeout_at(end.into(), live::next_raw(&mut ws)).await {
                Err(_) => break false,
                Ok(Ok(messagebox::live::engineio::Packet::Ping(_))) => {
                    ctx.tally.add("pings_answered", 1);
                    if ws.send(Message::text("3")).await.is_err() {
                        break true;
                    }
                }
                Ok(Ok(messagebox::live::engineio::Packet::Close)) | Ok(Err(_)) => break true,
                Ok(Ok(messagebox::live::engineio::Packet::Message(m))) if m.starts_with('1') => break true,
                Ok(Ok(_)) => {}
            }
        };
        if closed {
            ctx.tally.add("closed_by_server", 1);
            stats.thread(t).record_latency("held", start.elapsed());
        } else {
            ctx.tally.add("open_at_end", 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_by_status_and_code() {
        assert_eq!(outcome_key(200, b"{}"), "accepted");
        let body = br#"{"status":"error","code":"ERR_RATE_LIMITED","description":"Too many requests."}"#;
        assert_eq!(outcome_key(429, body), "refused_429_ERR_RATE_LIMITED");
        assert_eq!(outcome_key(503, b"busy"), "refused_503_nocode");
        assert_eq!(error_key(&OpError::new(ErrorKind::Http(503), "x")), "refused_503");
        assert_eq!(error_key(&OpError::timeout()), "timeout");
    }

    #[test]
    fn the_slow_head_never_ends() {
        let h = SlowHead::new("127.0.0.1:8080", "/listMessages");
        let bytes: Vec<u8> = (0..20_000).map(|k| h.byte(k)).collect();
        assert!(bytes.starts_with(b"POST /listMessages HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n"));
        assert!(!bytes.windows(4).any(|w| w == b"\r\n\r\n"), "a blank line would end the head");
        let mut parsed = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut parsed);
        // Partial (or, past 16 headers, too many): never a complete request.
        assert!(!matches!(req.parse(&bytes[..200]), Ok(httparse::Status::Complete(_))));
    }

    #[test]
    fn the_slow_schedule() {
        let t0 = Instant::now();
        let i = Duration::from_millis(250);
        assert_eq!(SlowHead::due(t0, i, 0), t0);
        assert_eq!(SlowHead::due(t0, i, 1), t0 + i);
        assert_eq!(SlowHead::due(t0, i, 40), t0 + Duration::from_secs(10));
        // Over a 15 s head deadline at 1 byte/s, 15 bytes go out: the server must not wait
        // for a head that grows this slowly.
        let second = Duration::from_secs(1);
        let sent = (0u64..).take_while(|&k| SlowHead::due(t0, second, k) < t0 + Duration::from_secs(15)).count();
        assert_eq!(sent, 15);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn legit_source_defaults_to_another_loopback_address() {
        let o: Options = clap::Parser::try_parse_from(["mbload", "abuse-sockets"]).unwrap();
        let t = Target::resolve("http://127.0.0.1:9").await.unwrap();
        assert_eq!(legit_source(&o, &t), Some("127.0.0.2".parse().unwrap()));
        let t6 = Target::resolve("http://[::1]:9").await.unwrap();
        assert_eq!(legit_source(&o, &t6), None);
        let o: Options =
            clap::Parser::try_parse_from(["mbload", "abuse-sockets", "--legit-source", "127.0.0.9"]).unwrap();
        assert_eq!(legit_source(&o, &t), Some("127.0.0.9".parse().unwrap()));
    }
}
