//! Prometheus metrics: what the server counts, where the counts live, and their text
//! exposition on the separate `MESSAGEBOX_METRICS_ADDR` listener ([`serve`]).
//!
//! Counting must not make the cores contend: each core records into its own
//! [`CoreMetrics`] shard (its own cache lines, written only by that core's thread), reached
//! through the [`Recorder`] the server hands that core; the store's group-commit writer
//! keeps its counters on its own thread; push outcomes are rare and share one set. A scrape
//! adds the shards up. With metrics off the recorder is empty and records nothing.
//!
//! The exposition is encoded by `prometheus-client` (the Prometheus project's Rust client)
//! from a snapshot taken at scrape time; the counters themselves are plain atomics because
//! the crate's metric types are shared by every thread that records into them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::auth::FailureReason;
use crate::fleet::broker::BrokerStats;
use crate::store::WriterStats;

pub mod histogram;
pub mod process;
mod server;

pub use histogram::{Histogram, HistogramSnapshot};
pub use server::{bind, serve};

/// The `Content-Type` of the exposition (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `route` label of an HTTP request: the route it matched (without `ROUTING_PREFIX`),
/// so the label set stays fixed whatever paths clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLabel {
    SendMessage,
    ListMessages,
    AcknowledgeMessage,
    RegisterDevice,
    ListDevices,
    SetPermission,
    GetPermission,
    GetQuote,
    ListPermissions,
    /// `/.well-known/auth`.
    Handshake,
    /// `/socket.io/` (polling requests and WebSocket upgrades).
    Live,
    Health,
    Healthz,
    Ready,
    /// `/docs`, `/docs/`, `/openapi.json`.
    Docs,
    /// CORS preflight (`OPTIONS`, any path).
    Preflight,
    /// Anything else (unknown paths, wrong methods).
    Other,
}

impl RouteLabel {
    pub const ALL: [RouteLabel; 17] = [
        RouteLabel::SendMessage,
        RouteLabel::ListMessages,
        RouteLabel::AcknowledgeMessage,
        RouteLabel::RegisterDevice,
        RouteLabel::ListDevices,
        RouteLabel::SetPermission,
        RouteLabel::GetPermission,
        RouteLabel::GetQuote,
        RouteLabel::ListPermissions,
        RouteLabel::Handshake,
        RouteLabel::Live,
        RouteLabel::Health,
        RouteLabel::Healthz,
        RouteLabel::Ready,
        RouteLabel::Docs,
        RouteLabel::Preflight,
        RouteLabel::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteLabel::SendMessage => "/sendMessage",
            RouteLabel::ListMessages => "/listMessages",
            RouteLabel::AcknowledgeMessage => "/acknowledgeMessage",
            RouteLabel::RegisterDevice => "/registerDevice",
            RouteLabel::ListDevices => "/devices",
            RouteLabel::SetPermission => "/permissions/set",
            RouteLabel::GetPermission => "/permissions/get",
            RouteLabel::GetQuote => "/permissions/quote",
            RouteLabel::ListPermissions => "/permissions/list",
            RouteLabel::Handshake => "/.well-known/auth",
            RouteLabel::Live => "/socket.io/",
            RouteLabel::Health => "/health",
            RouteLabel::Healthz => "/healthz",
            RouteLabel::Ready => "/ready",
            RouteLabel::Docs => "/docs",
            RouteLabel::Preflight => "OPTIONS",
            RouteLabel::Other => "other",
        }
    }
}

impl From<crate::api::Route> for RouteLabel {
    fn from(r: crate::api::Route) -> RouteLabel {
        use crate::api::Route;
        match r {
            Route::SendMessage => RouteLabel::SendMessage,
            Route::ListMessages => RouteLabel::ListMessages,
            Route::AcknowledgeMessage => RouteLabel::AcknowledgeMessage,
            Route::RegisterDevice => RouteLabel::RegisterDevice,
            Route::ListDevices => RouteLabel::ListDevices,
            Route::SetPermission => RouteLabel::SetPermission,
            Route::GetPermission => RouteLabel::GetPermission,
            Route::GetQuote => RouteLabel::GetQuote,
            Route::ListPermissions => RouteLabel::ListPermissions,
        }
    }
}

/// How a BRC-103 session was established (`transport` label of the handshake counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `POST /.well-known/auth`.
    Http,
    /// The authsocket tunnel of the live channel.
    Live,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::Http, Transport::Live];

    fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Live => "live",
        }
    }
}

/// Which limit refused a request (`scope` label of the rate-limit counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
    /// Per client IP, before authentication.
    Ip,
    /// Per authenticated identity.
    Identity,
    /// `sendMessage` events per live socket.
    LiveSend,
    /// `joinRoom` / `leaveRoom` events per live socket.
    LiveControl,
}

impl RateScope {
    const ALL: [RateScope; 4] = [RateScope::Ip, RateScope::Identity, RateScope::LiveSend, RateScope::LiveControl];

    fn as_str(self) -> &'static str {
        match self {
            RateScope::Ip => "ip",
            RateScope::Identity => "identity",
            RateScope::LiveSend => "live_send",
            RateScope::LiveControl => "live_control",
        }
    }
}

/// What became of one push notification to one device (`outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// FCM accepted it.
    Sent,
    /// FCM refused it or could not be reached.
    Failed,
    /// FCM said the token is dead; the device was deactivated.
    Deactivated,
    /// Not attempted: too many notifications in flight.
    Dropped,
    /// Not attempted: the devices could not be listed or no FCM access token was obtained.
    Error,
}

impl PushOutcome {
    const ALL: [PushOutcome; 5] =
        [PushOutcome::Sent, PushOutcome::Failed, PushOutcome::Deactivated, PushOutcome::Dropped, PushOutcome::Error];

    fn as_str(self) -> &'static str {
        match self {
            PushOutcome::Sent => "sent",
            PushOutcome::Failed => "failed",
            PushOutcome::Deactivated => "deactivated",
            PushOutcome::Dropped => "dropped",
            PushOutcome::Error => "error",
        }
    }
}

/// Status codes 100..=599 each have a slot per route.
const STATUSES: usize = 500;

fn status_slot(status: u16) -> usize {
    usize::from(status.clamp(100, 599) - 100)
}

/// One core's counters. Aligned so no two shards share a cache line.
#[repr(align(128))]
#[derive(Debug)]
pub struct CoreMetrics {
    /// `route × status` request counts.
    requests: Box<[AtomicU64]>,
    durations: Box<[Histogram]>,
    auth_failures: [AtomicU64; FailureReason::ALL.len()],
    handshakes: [AtomicU64; Transport::ALL.len()],
    /// Connections opened minus closed on this core.
    live_connections: AtomicI64,
    live_deliveries: AtomicU64,
    rate_limited: [AtomicU64; RateScope::ALL.len()],
}

impl CoreMetrics {
    fn new() -> CoreMetrics {
        CoreMetrics {
            requests: (0..RouteLabel::ALL.len() * STATUSES).map(|_| AtomicU64::new(0)).collect(),
            durations: RouteLabel::ALL.iter().map(|_| Histogram::durations()).collect(),
            auth_failures: Default::default(),
            handshakes: Default::default(),
            live_connections: AtomicI64::new(0),
            live_deliveries: AtomicU64::new(0),
            rate_limited: Default::default(),
        }
    }
}

/// A core's handle for recording; empty (records nothing) when metrics are off. Cheap to
/// clone; keep it on the core it was made for.
#[derive(Debug, Clone, Default)]
pub struct Recorder(Option<Arc<CoreMetrics>>);

impl Recorder {
    /// Whether anything is recorded (callers can skip measuring time when not).
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// One answered HTTP request.
    pub fn http_request(&self, route: RouteLabel, status: u16, elapsed: Duration) {
        if let Some(m) = &self.0 {
            let r = route as usize;
            m.requests[r * STATUSES + status_slot(status)].fetch_add(1, Relaxed);
            m.durations[r].observe_duration(elapsed);
        }
    }

    pub fn auth_failure(&self, reason: FailureReason) {
        if let Some(m) = &self.0 {
            m.auth_failures[reason as usize].fetch_add(1, Relaxed);
        }
    }

    /// A BRC-103 session established (the server's half of the handshake done).
    pub fn handshake(&self, transport: Transport) {
        if let Some(m) = &self.0 {
            m.handshakes[transport as usize].fetch_add(1, Relaxed);
        }
    }

    pub fn live_connection_opened(&self) {
        if let Some(m) = &self.0 {
            m.live_connections.fetch_add(1, Relaxed);
        }
    }

    pub fn live_connection_closed(&self) {
        if let Some(m) = &self.0 {
            m.live_connections.fetch_sub(1, Relaxed);
        }
    }

    /// A message or event delivered to a live connection.
    pub fn live_delivery(&self) {
        if let Some(m) = &self.0 {
            m.live_deliveries.fetch_add(1, Relaxed);
        }
    }

    pub fn rate_limited(&self, scope: RateScope) {
        if let Some(m) = &self.0 {
            m.rate_limited[scope as usize].fetch_add(1, Relaxed);
        }
    }
}

/// Push outcomes, shared by the push tasks (a cold path: one count per device notified).
#[derive(Debug, Default)]
pub struct PushCounters([AtomicU64; PushOutcome::ALL.len()]);

impl PushCounters {
    pub fn count(&self, outcome: PushOutcome) {
        self.0[outcome as usize].fetch_add(1, Relaxed);
    }

    pub fn get(&self, outcome: PushOutcome) -> u64 {
        self.0[outcome as usize].load(Relaxed)
    }
}

/// The process's metrics: the per-core shards and the shared counters.
#[derive(Debug)]
pub struct Metrics {
    enabled: bool,
    cores: Mutex<Vec<Arc<CoreMetrics>>>,
    push: Arc<PushCounters>,
}

impl Metrics {
    /// `enabled` is whether anything will scrape them (`MESSAGEBOX_METRICS_ADDR` is set);
    /// when not, cores record nothing.
    pub fn new(enabled: bool) -> Arc<Metrics> {
        Arc::new(Metrics { enabled, cores: Mutex::new(Vec::new()), push: Arc::default() })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// A new shard for one core (or another thread that records per request).
    pub fn core(&self) -> Recorder {
        if !self.enabled {
            return Recorder(None);
        }
        let shard = Arc::new(CoreMetrics::new());
        self.cores.lock().unwrap_or_else(|p| p.into_inner()).push(shard.clone());
        Recorder(Some(shard))
    }

    /// The push outcome counters (counted whether or not metrics are served: it is cheap).
    pub fn push(&self) -> Arc<PushCounters> {
        self.push.clone()
    }

    /// The exposition: everything counted so far, the store writer's counters (`writer`),
    /// the number of open BRC-103 sessions, and the process's stats from `/proc`.
    /// `fleet`: the broker link's state, in fleet mode (`REDIS_URL`).
    pub fn render(&self, writer: &WriterStats, sessions: usize, fleet: Option<BrokerStats>) -> String {
        let mut scrape = Scrape::take(self, writer, sessions);
        scrape.fleet = fleet;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(scrape));
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// The sums of every shard at one moment, as encoded.
#[derive(Debug)]
struct Scrape {
    requests: Vec<u64>,
    durations: Vec<HistogramSnapshot>,
    auth_failures: Vec<u64>,
    handshakes: Vec<u64>,
    live_connections: i64,
    live_deliveries: u64,
    rate_limited: Vec<u64>,
    push: Vec<u64>,
    writer: WriterStats,
    sessions: usize,
    process: Option<process::ProcessStats>,
    fleet: Option<BrokerStats>,
}

fn add(into: &mut [u64], from: &[AtomicU64]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b.load(Relaxed);
    }
}

impl Scrape {
    fn take(m: &Metrics, writer: &WriterStats, sessions: usize) -> Scrape {
        let mut s = Scrape {
            requests: vec![0; RouteLabel::ALL.len() * STATUSES],
            durations: RouteLabel::ALL
                .iter()
                .map(|_| HistogramSnapshot::empty(histogram::DURATION_BUCKETS, 1e-9))
                .collect(),
            auth_failures: vec![0; FailureReason::ALL.len()],
            handshakes: vec![0; Transport::ALL.len()],
            live_connections: 0,
            live_deliveries: 0,
            rate_limited: vec![0; RateScope::ALL.len()],
            push: PushOutcome::ALL.iter().map(|&o| m.push.get(o)).collect(),
            writer: writer.clone(),
            sessions,
            process: process::read(),
            fleet: None,
        };
        for core in m.cores.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            add(&mut s.requests, &core.requests);
            for (a, h) in s.durations.iter_mut().zip(core.durations.iter()) {
                a.merge(&h.snapshot());
            }
            add(&mut s.auth_failures, &core.auth_failures);
            add(&mut s.handshakes, &core.handshakes);
            s.live_connections += core.live_connections.load(Relaxed);
            s.live_deliveries += core.live_deliveries.load(Relaxed);
            add(&mut s.rate_limited, &core.rate_limited);
        }
        s
    }
}

type Fmt = Result<(), std::fmt::Error>;

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Fmt {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, v: i64) -> Fmt {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

fn gauge_f(e: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, v: f64) -> Fmt {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, unit, g.metric_type())?)
}

/// A counter family with one label whose values are all listed (zeros included, so rates
/// work from the first scrape).
fn labelled_counters<'a>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'a str, u64)>,
) -> Fmt {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        let labels = [(label, value)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn histogram(e: &mut prometheus_client::encoding::MetricEncoder, h: &HistogramSnapshot) -> Fmt {
    e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum(), h.count(), &h.buckets(), None)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Fmt {
        {
            let mut family = e.encode_descriptor(
                "messagebox_http_requests",
                "HTTP requests answered, by route and status.",
                None,
                MetricType::Counter,
            )?;
            for (i, route) in RouteLabel::ALL.iter().enumerate() {
                for (slot, &n) in self.requests[i * STATUSES..(i + 1) * STATUSES].iter().enumerate() {
                    if n > 0 {
                        let status = (slot + 100).to_string();
                        let labels = [("route", route.as_str()), ("status", status.as_str())];
                        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        {
            let mut family = e.encode_descriptor(
                "messagebox_http_request_duration",
                "Time from a request's head to its answer, by route.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (route, h) in RouteLabel::ALL.iter().zip(&self.durations) {
                if h.count() > 0 {
                    let labels = [("route", route.as_str())];
                    histogram(&mut family.encode_family(&labels)?, h)?;
                }
            }
        }
        labelled_counters(
            &mut e,
            "messagebox_auth_failures",
            "BRC-103/104 authentication failures (HTTP requests and handshakes), by reason.",
            "reason",
            FailureReason::ALL.iter().map(|r| r.as_str()).zip(self.auth_failures.iter().copied()),
        )?;
        labelled_counters(
            &mut e,
            "messagebox_handshakes",
            "BRC-103 sessions established, by transport.",
            "transport",
            Transport::ALL.iter().map(|t| t.as_str()).zip(self.handshakes.iter().copied()),
        )?;
        gauge(&mut e, "messagebox_auth_sessions", "Open BRC-103 sessions (HTTP).", None, self.sessions as i64)?;
        gauge(
            &mut e,
            "messagebox_live_connections",
            "Open live-channel (Engine.IO) sessions.",
            None,
            self.live_connections,
        )?;
        counter(&mut e, "messagebox_live_deliveries", "Events delivered to live connections.", self.live_deliveries)?;
        counter(
            &mut e,
            "messagebox_messages_stored",
            "Message rows committed (one per recipient; duplicates not counted).",
            self.writer.inserted,
        )?;
        labelled_counters(
            &mut e,
            "messagebox_store_operations",
            "Store operations other than message inserts, by where they ran: on the server core that asked (core) or handed to the store's threads (handoff).",
            "placement",
            [("core", self.writer.on_core), ("handoff", self.writer.handed_off)].into_iter(),
        )?;
        {
            let mut m = e.encode_descriptor(
                "messagebox_store_batch_size",
                "Message rows per group commit.",
                None,
                MetricType::Histogram,
            )?;
            histogram(&mut m, &self.writer.batch_rows)?;
        }
        {
            let mut m = e.encode_descriptor(
                "messagebox_store_commit_duration",
                "Time to write and commit one group commit.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            histogram(&mut m, &self.writer.commit_seconds)?;
        }
        labelled_counters(
            &mut e,
            "messagebox_rate_limited",
            "Requests and live events refused by a rate limit, by scope.",
            "scope",
            RateScope::ALL.iter().map(|s| s.as_str()).zip(self.rate_limited.iter().copied()),
        )?;
        labelled_counters(
            &mut e,
            "messagebox_push",
            "Push notifications per device, by outcome.",
            "outcome",
            PushOutcome::ALL.iter().map(|o| o.as_str()).zip(self.push.iter().copied()),
        )?;
        {
            let mut m =
                e.encode_descriptor("messagebox_build_info", "The running version.", None, MetricType::Gauge)?;
            let labels = [("version", env!("CARGO_PKG_VERSION"))];
            ConstGauge::new(1i64).encode(m.encode_family(&labels)?)?;
        }
        if let Some(f) = &self.fleet {
            gauge(
                &mut e,
                "messagebox_fleet_broker_up",
                "1 while both connections to the broker (REDIS_URL) work.",
                None,
                i64::from(f.up),
            )?;
            labelled_counters(
                &mut e,
                "messagebox_fleet_deliveries",
                "Live deliveries between nodes: published to the broker, dropped (broker down or publish queue full; the messages are stored), received from other nodes, malformed publications ignored.",
                "outcome",
                [("published", f.published), ("dropped", f.dropped), ("received", f.received), ("malformed", f.malformed)]
                    .into_iter(),
            )?;
            counter(
                &mut e,
                "messagebox_fleet_publish_batches",
                "Pipelined PUBLISH batches sent to the broker (one round trip each).",
                f.batches,
            )?;
            gauge(
                &mut e,
                "messagebox_fleet_subscriptions",
                "Identities this node subscribes to in the broker (those it holds a live connection of).",
                None,
                f.subscribed as i64,
            )?;
        }
        if let Some(p) = &self.process {
            let c = ConstCounter::new(p.cpu_seconds);
            c.encode(e.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent.",
                Some(&Unit::Seconds),
                c.metric_type(),
            )?)?;
            gauge(
                &mut e,
                "process_resident_memory",
                "Resident memory size.",
                Some(&Unit::Bytes),
                p.resident_bytes as i64,
            )?;
            gauge(
                &mut e,
                "process_virtual_memory",
                "Virtual memory size.",
                Some(&Unit::Bytes),
                p.virtual_bytes as i64,
            )?;
            gauge(&mut e, "process_open_fds", "Open file descriptors.", None, p.open_fds as i64)?;
            if let Some(max) = p.max_fds {
                gauge(&mut e, "process_max_fds", "Maximum number of open file descriptors.", None, max as i64)?;
            }
            if let Some(start) = p.start_time_seconds {
                gauge_f(
                    &mut e,
                    "process_start_time",
                    "Start time of the process since the Unix epoch.",
                    Some(&Unit::Seconds),
                    start,
                )?;
            }
            gauge(&mut e, "process_threads", "OS threads of the process.", None, p.threads as i64)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(m: &Metrics) -> String {
        m.render(&WriterStats::default(), 3, None)
    }

    /// In fleet mode the broker link's state is exposed; without a fleet nothing of it.
    #[test]
    fn fleet_metrics_only_in_a_fleet() {
        let m = Metrics::new(true);
        assert!(!render(&m).contains("messagebox_fleet"));
        let stats =
            BrokerStats { up: true, published: 5, batches: 4, dropped: 2, received: 7, malformed: 1, subscribed: 3 };
        let text = m.render(&WriterStats::default(), 0, Some(stats));
        for line in [
            "messagebox_fleet_broker_up 1",
            r#"messagebox_fleet_deliveries_total{outcome="published"} 5"#,
            r#"messagebox_fleet_deliveries_total{outcome="dropped"} 2"#,
            r#"messagebox_fleet_deliveries_total{outcome="received"} 7"#,
            r#"messagebox_fleet_deliveries_total{outcome="malformed"} 1"#,
            "messagebox_fleet_subscriptions 3",
            "messagebox_fleet_publish_batches_total 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn shards_add_up_and_labels_stay_fixed() {
        let m = Metrics::new(true);
        let (a, b) = (m.core(), m.core());
        a.http_request(RouteLabel::SendMessage, 200, Duration::from_micros(150));
        b.http_request(RouteLabel::SendMessage, 200, Duration::from_micros(300));
        b.http_request(RouteLabel::Other, 404, Duration::from_micros(10));
        a.auth_failure(FailureReason::BadSignature);
        b.handshake(Transport::Live);
        a.live_connection_opened();
        b.live_connection_opened();
        a.live_connection_closed();
        b.live_delivery();
        m.push().count(PushOutcome::Sent);
        let text = render(&m);
        for line in [
            r#"messagebox_http_requests_total{route="/sendMessage",status="200"} 2"#,
            r#"messagebox_http_requests_total{route="other",status="404"} 1"#,
            r#"messagebox_http_request_duration_seconds_count{route="/sendMessage"} 2"#,
            r#"messagebox_http_request_duration_seconds_bucket{route="/sendMessage",le="0.00025"} 1"#,
            r#"messagebox_http_request_duration_seconds_bucket{route="/sendMessage",le="0.0005"} 2"#,
            r#"messagebox_http_request_duration_seconds_bucket{route="/sendMessage",le="+Inf"} 2"#,
            r#"messagebox_auth_failures_total{reason="bad_signature"} 1"#,
            r#"messagebox_auth_failures_total{reason="replay"} 0"#,
            r#"messagebox_handshakes_total{transport="live"} 1"#,
            "messagebox_live_connections 1",
            "messagebox_live_deliveries_total 1",
            "messagebox_auth_sessions 3",
            r#"messagebox_push_total{outcome="sent"} 1"#,
            r#"messagebox_rate_limited_total{scope="ip"} 0"#,
            "messagebox_store_batch_size_count 0",
            "# TYPE messagebox_store_commit_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains(r#"route="/listMessages""#), "routes never asked for are left out");
    }

    #[test]
    fn off_records_nothing() {
        let m = Metrics::new(false);
        let r = m.core();
        assert!(!r.enabled());
        r.http_request(RouteLabel::SendMessage, 200, Duration::from_micros(1));
        assert!(!render(&m).contains("route="));
    }

    #[test]
    fn status_slots_are_clamped() {
        assert_eq!(status_slot(100), 0);
        assert_eq!(status_slot(599), 499);
        assert_eq!(status_slot(42), 0);
        assert_eq!(status_slot(999), 499);
    }
}
