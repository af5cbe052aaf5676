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
    let common = ["--url", &url, "-d", "1s", "-w", "200ms", "-c", "2", "-t", "2", "-q", "--server-pid", &pid];
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
        }
        if *scenario == "idle" {
            assert_eq!(report.phases[0].name, "connect");
        }
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["scenario"], *scenario);
    }
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
