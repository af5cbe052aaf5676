//! Starts our server in-process (SQLite in a temporary directory, live channel on) and runs
//! every scenario against it for about a second, through the same entry point as the binary.

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use messagebox::auth::PrivateKey;
use messagebox::config::Config;
use messagebox::startup::{self, Parts};

fn start_server(db: &std::path::Path) -> messagebox::server::Running {
    start_server_with(db, &[])
}

/// With `extra` settings over the defaults.
fn start_server_with(db: &std::path::Path, extra: &[(&str, &str)]) -> messagebox::server::Running {
    let mut map: HashMap<String, String> = [
        ("MESSAGEBOX_PORT", "0".to_string()),
        ("MESSAGEBOX_BIND", "127.0.0.1".into()),
        ("MESSAGEBOX_THREADS", "2".into()),
        ("LOGGING_ENABLED", "false".into()),
        ("ENABLE_WEBSOCKETS", "true".into()),
        ("WALLET_STORAGE_URL", "none".into()),
        // A load generator on one socket outruns the per-socket send limit (300 a minute in
        // the standard profile); the benchmark scripts lift it the same way (limits.sh).
        ("MESSAGE_BOX_WEBSOCKET_SEND_RATE_LIMIT", "-1".into()),
        ("SERVER_PRIVATE_KEY", PrivateKey::random().to_hex()),
        ("DATABASE_URL", format!("sqlite://{}", db.display())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    map.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::from_map(&map).expect("config");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = rt.block_on(startup::open_store(&config, Duration::from_secs(10))).expect("store");
    let parts = Parts::from_config(&config, &store).unwrap();
    let app = startup::app(&config, PrivateKey::random(), store, parts);
    startup::start(&config, app).expect("server starts")
}

#[test]
fn every_scenario_runs_against_our_server() {
    let dir = tempfile::tempdir().unwrap();
    // The scenarios run back to back from one address: the per-IP and per-identity request
    // limits (300 and 1000 a minute by default) would refuse most of them.
    let lifted =
        [("MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX", "1000000"), ("MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX", "1000000")];
    let server = start_server_with(&dir.path().join("smoke.sqlite3"), &lifted);
    let url = format!("http://{}", server.addr);
    let pid = std::process::id().to_string();
    // The test process is also named as the "database": its CPU over the same window.
    let common = [
        "--url",
        &url,
        "-d",
        "1s",
        "-w",
        "200ms",
        "-c",
        "2",
        "-t",
        "2",
        "-q",
        "--server-pid",
        &pid,
        "--db-pid",
        &pid,
        "--floor-time",
        "150ms",
    ];
    let runs: &[(&str, &[&str])] = &[
        ("handshake", &[]),
        ("send", &["--recipients", "2", "--body-size", "64"]),
        ("list", &["--messages", "3"]),
        ("ack", &["--prefill", "300"]),
        ("mixed", &["--mix", "send=2,list=1,ack=1,handshake=1"]),
        ("send", &["--rate", "100"]),
        ("live", &["-k", "4", "--rate", "50"]),
        ("live", &["-k", "3"]),
        ("idle", &["-k", "5"]),
    ];
    for (scenario, extra) in runs {
        let mut args = vec!["mbload", scenario];
        args.extend(common);
        args.extend(extra.iter().copied());
        let opts = mbload::Options::try_parse_from(&args).expect("options");
        let report = mbload::run(opts).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(report.errors.is_empty(), "{args:?}: {}", report.human());
        assert!(report.operations > 0, "{args:?}: {}", report.human());
        let server_cost = report.server.as_ref().expect("--server-pid is reported");
        assert!(server_cost.rss_end_kib > 0);
        if *scenario == "live" {
            assert!(report.latency.contains_key("delivery"), "{}", report.human());
            assert!(report.counters.get("delivered_measured").copied().unwrap_or(0) > 0);
            // Our server sends a message to its recipient's connections only, once.
            let live = report.live.as_ref().expect("a live summary");
            assert_eq!((live.broadcast_copies, live.duplicates), (0, 0), "{}", report.human());
            assert_eq!(live.delivered, live.expected, "{}", report.human());
            assert_eq!(live.delivered_measured, report.cost_basis);
            let boxes = report.phases.iter().find(|p| p.name == "boxes").expect("the boxes were made first");
            assert_eq!(boxes.count, report.identities as u64, "{}", report.human());
        }
        check_floor(scenario, extra, &report);
        if ["send", "list", "ack", "mixed"].contains(scenario) {
            // The boxes were made first; nothing this small meets a quota.
            let p = report.prefill.as_ref().expect("a prefill summary");
            assert!(p.stored > 0 && p.stored == p.planned && p.stopped_by.is_none(), "{}", report.human());
            assert_eq!(report.phases[1].name, "boxes", "{}", report.human());
        }
        if *scenario == "idle" {
            assert_eq!(report.phases[0].name, "connect");
        }
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenario"], *scenario);
    }
    server.shutdown();
}

/// The floor was measured at start and every cost is also reported as a multiple of it: the
/// request floor for the HTTP scenarios, the live one (1 verify + 2 signs) for `live`.
fn check_floor(scenario: &str, extra: &[&str], report: &mbload::Report) {
    let f = report.floor.expect("the floor is measured by default");
    let (v, g) = (f.verify_us.unwrap(), f.sign_us.unwrap());
    assert!(v > 0.0 && g > 0.0 && f.source == "measured", "{f:?}");
    assert_eq!(report.floor_us, Some(f.request_us));
    assert!((f.request_us - (v + g)).abs() < 1e-9 && (report.live_floor_us.unwrap() - (v + 2.0 * g)).abs() < 1e-9);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    let json = serde_json::to_value(report).unwrap();
    let server = report.server.as_ref().unwrap();
    let db = report.db.as_ref().expect("--db-pid is reported");
    assert_eq!(db.pids, [std::process::id()]);
    if scenario == "idle" {
        assert_eq!((report.floor_basis, server.floor_ratio), (None, None), "no floor per connection");
        return;
    }
    let basis = if scenario == "live" { report.live_floor_us.unwrap() } else { f.request_us };
    assert_eq!(report.floor_basis, Some(if scenario == "live" { "live message" } else { "request" }));
    let cpu = server.cpu_us_per_op.expect("operations were counted");
    assert!(close(server.floor_ratio.unwrap(), cpu / basis), "{}", report.human());
    assert!(close(db.floor_ratio.unwrap(), db.cpu_us_per_op.unwrap() / basis), "{}", report.human());
    assert_eq!(json["server"]["floor_ratio"].as_f64(), server.floor_ratio);
    assert_eq!(json["db"]["floor_ratio"].as_f64(), db.floor_ratio);
    assert_eq!(json["floor_us"].as_f64(), Some(f.request_us));
    match (extra.iter().position(|a| *a == "--rate"), report.rate_x_floor) {
        (Some(i), Some(x)) => assert!(close(x, extra[i + 1].parse::<f64>().unwrap() * basis / 1e6)),
        (None, None) => {}
        other => panic!("rate × floor {other:?}: {}", report.human()),
    }
    assert!(report.human().contains("floor"), "{}", report.human());
}

/// The setup sizes itself to a server with small limits instead of failing: the recipients
/// per setup send halve to the server's cap, a quota stops the prefill where it is and the run
/// uses exactly what was stored, and a rate limit is waited out.
#[test]
fn the_prefill_sizes_itself_to_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let limits = [
        ("MESSAGE_BOX_MAX_RECIPIENTS", "2"),
        ("MESSAGE_BOX_MAX_INBOX_MESSAGES", "40"),
        ("MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX", "1000000"),
        ("MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX", "1000000"),
    ];
    let server = start_server_with(&dir.path().join("sized.sqlite3"), &limits);
    let url = format!("http://{}", server.addr);
    let run = |scenario: &str, extra: &[&str]| {
        let mut args = vec!["mbload", scenario, "--url", &url, "-d", "1s", "-t", "1", "-q", "--no-floor"];
        args.extend(extra);
        mbload::run(mbload::Options::try_parse_from(&args).unwrap()).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    };
    // list: 5 identities' boxes of 30 messages, at most 2 recipients a send; the inbox quota
    // (40) is not reached.
    let r = run("list", &["-c", "2", "-i", "5", "--messages", "30", "-w", "200ms"]);
    let p = r.prefill.as_ref().unwrap();
    assert_eq!((p.planned, p.stored, p.recipients_per_send, p.stopped_by.as_deref()), (150, 150, 2, None));
    assert!(r.errors.is_empty() && r.operations > 0, "{}", r.human());
    // ack: 100 messages per worker would overflow each inbox (40): the prefill stops at the
    // quota and the workers acknowledge only what is stored.
    // (Another seed: the list's identities already hold 30 messages each.)
    let r = run("ack", &["-c", "2", "--prefill", "100", "--rate", "200", "-w", "0s", "--seed", "2"]);
    let p = r.prefill.as_ref().unwrap();
    assert!(p.stopped_by.as_deref().is_some_and(|w| w.contains("ERR_INBOX_QUOTA_EXCEEDED")), "{}", r.human());
    assert_eq!(p.stored, 80, "40 in each of the two inboxes: {}", r.human());
    assert!(r.errors.is_empty(), "no ack of a message that was never stored: {}", r.human());
    let acked = r.latency.get("ack").map_or(0, |l| l.count);
    assert_eq!(acked, p.stored, "each stored message acknowledged once: {}", r.human());
    assert!(r.notes.iter().any(|n| n.contains("the prefill stopped")), "{}", r.human());
    server.shutdown();

    // A per-identity rate limit of 40 a second: the prefill (75 sends per worker) waits.
    let limited = [
        ("MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX", "40"),
        ("MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_WINDOW_MS", "1000"),
        ("MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX", "1000000"),
    ];
    let server = start_server_with(&dir.path().join("limited.sqlite3"), &limited);
    let url = format!("http://{}", server.addr);
    let args = ["mbload", "list", "--url", &url, "-c", "2", "--messages", "150", "-d", "300ms", "-w", "0s", "-t", "1"];
    let mut args = args.to_vec();
    args.extend(["-q", "--no-floor", "--rate", "5"]);
    let r = mbload::run(mbload::Options::try_parse_from(&args).unwrap()).unwrap();
    let p = r.prefill.as_ref().unwrap();
    assert!(p.backoffs > 0 && p.stored == p.planned && p.stopped_by.is_none(), "{}", r.human());
    server.shutdown();
}

/// `--find-rate` steps the open-loop rate: a generous bound passes every step, so the rate
/// doubles each time and the highest is reported with rate × floor.
#[test]
fn find_rate_steps_the_open_loop_rate() {
    let dir = tempfile::tempdir().unwrap();
    let lifted =
        [("MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX", "1000000"), ("MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX", "1000000")];
    let server = start_server_with(&dir.path().join("rate.sqlite3"), &lifted);
    let url = format!("http://{}", server.addr);
    let args = [
        "mbload",
        "send",
        "--url",
        &url,
        "--find-rate",
        "--rate",
        "20",
        "--find-rate-steps",
        "2",
        "--p99",
        "5s",
        "-d",
        "500ms",
        "-w",
        "100ms",
        "-c",
        "2",
        "-t",
        "1",
        "-q",
        "--floor-us",
        "50",
        "--live-floor-us",
        "70",
    ];
    let r = mbload::run(mbload::Options::try_parse_from(args).unwrap()).unwrap();
    let fr = r.find_rate.as_ref().expect("a find-rate summary");
    let rates: Vec<f64> = fr.steps.iter().map(|s| s.rate).collect();
    assert_eq!(rates, [20.0, 40.0], "{}", r.human());
    assert!(fr.steps.iter().all(|s| s.pass && s.p99_ms.is_some()), "{}", r.human());
    assert_eq!((fr.rate, r.rate), (Some(40.0), Some(40.0)), "the report is the best run's");
    assert!((fr.rate_x_floor.unwrap() - 40.0 * 50e-6).abs() < 1e-12);
    assert_eq!(r.floor.unwrap().source, "given");
    assert_eq!(fr.latency, "send");
    server.shutdown();
}

/// Each `abuse-*` kind runs for two seconds against our server (small attacks: the point is
/// that the scenario works end to end and the legitimate client, from 127.0.0.2, is served
/// and counted).
#[test]
fn every_abuse_kind_runs_against_our_server() {
    let dir = tempfile::tempdir().unwrap();
    let pid = std::process::id().to_string();
    let runs: &[(&str, &[&str])] = &[
        ("abuse-handshake", &["--attack-connections", "4"]),
        ("abuse-slow-headers", &["--attack-connections", "8", "--slow-interval", "100ms"]),
        ("abuse-fanout", &["--attack-connections", "2", "--fanout-body-bytes", "4096", "--fanout-recipients", "5"]),
        ("abuse-sockets", &["--attack-connections", "4"]),
        ("abuse-sockets", &["--attack-connections", "4", "--transport", "websocket"]),
    ];
    for (i, (scenario, extra)) in runs.iter().enumerate() {
        // A server each: the attacks spend 127.0.0.1's per-IP request budget.
        let server = start_server(&dir.path().join(format!("abuse-{i}.sqlite3")));
        let url = format!("http://{}", server.addr);
        // 2 s: a debug build on a busy machine needs more than one to open its first sockets.
        let common = ["--url", &url, "-d", "2s", "-w", "200ms", "-t", "1", "-q", "--server-pid", &pid];
        let mut args = vec!["mbload", scenario];
        args.extend(common);
        args.extend(extra.iter().copied());
        let opts = mbload::Options::try_parse_from(&args).expect("options");
        let report = mbload::run(opts).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let abuse = report.abuse.as_ref().expect("an abuse summary");
        assert_eq!(abuse.legit_source.as_deref(), Some("127.0.0.2"));
        assert!(abuse.legit_ok > 0 && abuse.legit_failed == 0, "{args:?}: {}", report.human());
        assert!(abuse.attack.get("attempts").copied().unwrap_or(0) > 0, "{args:?}: {}", report.human());
        let accepted = abuse.attack.get("accepted").copied().unwrap_or(0);
        assert!(accepted > 0 || *scenario == "abuse-slow-headers", "{args:?}: {}", report.human());
        if *scenario == "abuse-fanout" {
            // Small overrides: the probes are under the server's caps, but they are made.
            assert!(abuse.attack.keys().any(|k| k.starts_with("probe_body_over_cap:")), "{}", report.human());
            assert!(abuse.attack.keys().any(|k| k.starts_with("probe_recipients_over_cap:")), "{}", report.human());
        }
        assert!(report.server.is_some());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenario"], *scenario);
        server.shutdown();
    }
}

/// Several `--url`s: the live clients spread over them round robin and deliveries are told
/// apart by the sender's and the receiver's node. Here both URLs name one server (the
/// cross-node path through a broker is measured in `perf/RESULTS.md`, "Fleet"); `--pairs
/// cross-node` sends every message from a client of one URL to a client of the other, and
/// the two `--server-pid`s are added up.
#[test]
fn live_spreads_its_clients_over_several_urls() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("urls.sqlite3"));
    let url = format!("http://{}", server.addr);
    let pid = std::process::id().to_string();
    let urls = format!("{url},{url}");
    let args = [
        "mbload",
        "live",
        "--url",
        &urls,
        "-k",
        "4",
        "--rate",
        "40",
        "--pairs",
        "cross-node",
        "-d",
        "1s",
        "-w",
        "200ms",
        "-t",
        "1",
        "-q",
        "--server-pid",
        &pid,
        "--server-pid",
        &pid,
    ];
    let report = mbload::run(mbload::Options::try_parse_from(args).unwrap()).unwrap();
    assert!(report.errors.is_empty(), "{}", report.human());
    let count = |k: &str| report.counters.get(k).copied().unwrap_or(0);
    assert!(count("delivered_cross_node") > 0, "{}", report.human());
    assert_eq!(count("delivered_same_node"), 0, "{}", report.human());
    assert_eq!(count("delivered_cross_node"), count("delivered_measured"));
    assert!(report.latency.contains_key("delivery_cross_node"));
    assert_eq!(report.url, urls);
    assert_eq!(report.server.as_ref().unwrap().pids.len(), 2);
    server.shutdown();
}
