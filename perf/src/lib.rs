//! mbload: a load generator for MessageBox servers — ours or the TypeScript original, over
//! loopback or a network — reusing the server library's BRC-103/104 crypto and live-channel
//! codecs, so the client side costs what a fast client costs.
//!
//! What each module owns:
//! - [`options`]: the command line (scenarios, options, durations, the `mixed` ratio).
//! - [`schedule`]: when operations start (open loop at a fixed arrival rate, or closed loop),
//!   the warm-up, the end of the run.
//! - [`stats`]: HDR latency histograms, error kinds, counters, the progress interval.
//! - [`procfs`]: CPU seconds and RSS of a process from `/proc`.
//! - [`floor`]: the machine's crypto floor (1 verify + 1 sign, as the server does them),
//!   measured at start; server and database CPU are also reported as multiples of it.
//! - [`findrate`]: `--find-rate`, the search for the highest open-loop rate under a p99 bound.
//! - [`http`]: a lean keep-alive HTTP/1.1 client connection.
//! - [`peer`]: a BRC-104 client on one connection (handshake, signed requests, verified
//!   responses, re-handshake on 401).
//! - [`live`]: a Socket.IO + BRC-103 live client.
//! - [`ident`]: seeded identities and bodies, the run tag.
//! - [`runner`]: the generator threads, the phase barrier, the main thread's watch (progress
//!   line, samples).
//! - [`httpload`], [`liveload`]: the scenarios.
//! - [`abuse`]: the `abuse-*` scenarios (an attack beside a legitimate client).
//! - [`report`]: the final report, for people or as JSON.

pub mod abuse;
pub mod findrate;
pub mod floor;
pub mod http;
pub mod httpload;
pub mod ident;
pub mod live;
pub mod liveload;
pub mod options;
pub mod peer;
pub mod procfs;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod stats;

pub use options::{Options, Pairs, Scenario, Transport};
pub use report::Report;

/// Runs one scenario to the end (or, with `--find-rate`, the search's runs) and returns its
/// report. The crypto floor is measured first, while nothing else runs.
pub fn run(opts: Options) -> Result<Report, String> {
    opts.validate()?;
    let floor = crypto_floor(&opts)?;
    if opts.find_rate {
        return findrate::run(&opts, floor, |o| run_once(o, floor));
    }
    run_once(opts, floor)
}

/// The floor: given (`--floor-us`), skipped (`--no-floor`) or measured on this thread.
fn crypto_floor(opts: &Options) -> Result<Option<floor::Floor>, String> {
    if let Some(us) = opts.floor_us {
        return Ok(Some(floor::Floor::given(us, opts.live_floor_us)));
    }
    if opts.no_floor {
        return Ok(None);
    }
    let f = floor::measure(opts.floor_time)?;
    if !opts.quiet {
        eprintln!(
            "mbload: crypto floor {:.1} µs per request (verify {:.1} + sign {:.1}), {:.1} µs per live message; batches p50 {:.1}, p90/p10 {:.2}",
            f.request_us,
            f.verify_us.unwrap_or_default(),
            f.sign_us.unwrap_or_default(),
            f.live_us.unwrap_or_default(),
            f.verify_batches.zip(f.sign_batches).map_or(0.0, |(v, s)| v.p50 + s.p50),
            f.disturbance()
        );
    }
    Ok(Some(f))
}

fn run_once(opts: Options, floor: Option<floor::Floor>) -> Result<Report, String> {
    let targets = runner::block_on(async {
        let mut all = Vec::with_capacity(opts.url.len());
        for url in &opts.url {
            all.push(http::Target::resolve(url).await?);
        }
        Ok::<_, String>(all)
    })?;
    let hz = procfs::clock_ticks_per_second();
    let server = (!opts.server_pid.is_empty()).then(|| procfs::Watch::of(&opts.server_pid, hz)).transpose()?;
    let db = (!opts.db_pid.is_empty()).then(|| procfs::Watch::of(&opts.db_pid, hz)).transpose()?;
    let me = procfs::Watch::new(None, hz)?;
    let meter = runner::Meter { server, db, me };
    let mut report = if opts.scenario.is_abuse() {
        let first = targets.into_iter().next().expect("validated: at least one URL");
        abuse::run(opts, first, meter)
    } else if opts.scenario.is_live() {
        liveload::run(opts, targets, meter)
    } else {
        httpload::run(opts, targets, meter)
    }?;
    report.apply_floor(floor);
    Ok(report)
}
