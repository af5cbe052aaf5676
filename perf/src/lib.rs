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

/// Runs one scenario to the end and returns its report.
pub fn run(opts: Options) -> Result<Report, String> {
    opts.validate()?;
    let targets = runner::block_on(async {
        let mut all = Vec::with_capacity(opts.url.len());
        for url in &opts.url {
            all.push(http::Target::resolve(url).await?);
        }
        Ok::<_, String>(all)
    })?;
    let hz = procfs::clock_ticks_per_second();
    let server = (!opts.server_pid.is_empty()).then(|| procfs::Watch::of(&opts.server_pid, hz)).transpose()?;
    let me = procfs::Watch::new(None, hz)?;
    let meter = runner::Meter { server, me };
    if opts.scenario.is_abuse() {
        let first = targets.into_iter().next().expect("validated: at least one URL");
        abuse::run(opts, first, meter)
    } else if opts.scenario.is_live() {
        liveload::run(opts, targets, meter)
    } else {
        httpload::run(opts, targets, meter)
    }
}
