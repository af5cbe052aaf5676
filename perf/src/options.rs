//! The command line: scenarios and every option, with the parsing of durations and of the
//! `mixed` ratio. Nothing here does I/O.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// What load to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// New BRC-103 sessions: `POST /.well-known/auth`, response verified.
    Handshake,
    /// Authenticated `POST /sendMessage` (`--body-size`, `--recipients`).
    Send,
    /// Authenticated `POST /listMessages` on a box holding `--messages` messages.
    List,
    /// Authenticated `POST /acknowledgeMessage` of one pre-sent message.
    Ack,
    /// send, list and ack (and optionally handshake) in the `--mix` ratio.
    Mixed,
    /// `--clients` authenticated socket clients; messages sent live between random pairs.
    Live,
    /// Hold `--clients` authenticated socket connections for `--duration`; report server memory.
    Idle,
    /// Abuse: anonymous `/.well-known/auth` initialRequests from fresh identities, as fast as
    /// `--attack-connections` connections go (a legitimate client is served meanwhile).
    AbuseHandshake,
    /// Abuse (slowloris): connections that send a request head one byte per
    /// `--slow-interval` and never finish it.
    AbuseSlowHeaders,
    /// Abuse: signed sends of the largest accepted body to the most recipients allowed.
    AbuseFanout,
    /// Abuse: Engine.IO sessions that send `40`, answer pings and never authenticate.
    AbuseSockets,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Handshake => "handshake",
            Scenario::Send => "send",
            Scenario::List => "list",
            Scenario::Ack => "ack",
            Scenario::Mixed => "mixed",
            Scenario::Live => "live",
            Scenario::Idle => "idle",
            Scenario::AbuseHandshake => "abuse-handshake",
            Scenario::AbuseSlowHeaders => "abuse-slow-headers",
            Scenario::AbuseFanout => "abuse-fanout",
            Scenario::AbuseSockets => "abuse-sockets",
        }
    }

    pub fn is_live(self) -> bool {
        matches!(self, Scenario::Live | Scenario::Idle)
    }

    /// The `abuse-*` family: an attack plus a legitimate client.
    pub fn is_abuse(self) -> bool {
        matches!(
            self,
            Scenario::AbuseHandshake | Scenario::AbuseSlowHeaders | Scenario::AbuseFanout | Scenario::AbuseSockets
        )
    }

    /// abuse: attacking connections (or sockets, or senders) when `--attack-connections` is
    /// not given: enough to meet the standard profile's caps (256 connections per IP, 1000
    /// live sessions), a few senders for the fan-out (each send is megabytes).
    pub fn default_attack_connections(self) -> usize {
        match self {
            Scenario::AbuseHandshake => 64,
            Scenario::AbuseSlowHeaders => 1000,
            Scenario::AbuseFanout => 4,
            Scenario::AbuseSockets => 1200,
            _ => 0,
        }
    }
}

/// live: which clients a message goes between, when several `--url`s are given (client `c`
/// is on node `c mod n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pairs {
    /// Random pairs, wherever they are.
    Any,
    /// The recipient is on the sender's node (delivered within a node).
    SameNode,
    /// The recipient is on another node than the sender (delivered through the broker).
    CrossNode,
}

/// How a live client reaches WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// As `@bsv/authsocket-client` does: polling handshake, `POST 40`, then upgrade
    /// (`2probe`/`3probe`/`5`).
    Upgrade,
    /// `transport=websocket` from the start.
    Websocket,
}

/// Weights of the operations of the `mixed` scenario, e.g. `send=1,list=2,ack=1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Mix {
    pub handshake: u32,
    pub send: u32,
    pub list: u32,
    pub ack: u32,
}

impl Mix {
    pub fn total(&self) -> u32 {
        self.handshake + self.send + self.list + self.ack
    }

    /// The operation for a uniform draw `x` in `0..total()`.
    pub fn pick(&self, x: u32) -> MixOp {
        let mut x = x;
        for (w, op) in [(self.send, MixOp::Send), (self.list, MixOp::List), (self.ack, MixOp::Ack)] {
            if x < w {
                return op;
            }
            x -= w;
        }
        MixOp::Handshake
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MixOp {
    Handshake,
    Send,
    List,
    Ack,
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Mix, String> {
        let mut mix = Mix { handshake: 0, send: 0, list: 0, ack: 0 };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected name=weight"))?;
            let weight: u32 = weight.trim().parse().map_err(|_| format!("{part:?}: weight is not a number"))?;
            match name.trim() {
                "handshake" => mix.handshake = weight,
                "send" => mix.send = weight,
                "list" => mix.list = weight,
                "ack" => mix.ack = weight,
                other => return Err(format!("unknown operation {other:?} (handshake, send, list, ack)")),
            }
        }
        if mix.total() == 0 {
            return Err("the mix has no operation with a weight above 0".into());
        }
        Ok(mix)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handshake={},send={},list={},ack={}", self.handshake, self.send, self.list, self.ack)
    }
}

/// `10s`, `500ms`, `2m`, `1h`, or a plain number of seconds (fractions allowed).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("{s:?}: not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?}: must be a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|_| format!("{s:?}: not a number"))?;
    if !(r.is_finite() && r > 0.0) {
        return Err("the rate must be above 0".into());
    }
    Ok(r)
}

fn parse_positive(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?}: not a number"))?;
    if !(v.is_finite() && v > 0.0) {
        return Err("must be above 0".into());
    }
    Ok(v)
}

/// mbload: a load generator for MessageBox servers.
///
/// Closed loop (`--concurrency` workers back to back) unless `--rate` is given; then requests
/// start at a fixed arrival rate and latency is measured from each request's scheduled start,
/// so a stalled server cannot hide its queueing (no coordinated omission).
#[derive(Debug, Clone, Parser)]
#[command(name = "mbload", version, about, long_about = None)]
pub struct Options {
    /// The scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,

    /// Target server. A path is the ROUTING_PREFIX of the business routes
    /// (`/.well-known/auth` and `/socket.io/` stay at the root). http only. Several (repeat
    /// `--url`, or a comma list): the nodes of a fleet; workers and live clients are spread
    /// over them round robin (number `i` on URL `i mod n`); the abuse scenarios use the first.
    #[arg(long, short = 'u', value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub url: Vec<String>,

    /// Distinct client identities (default: one per connection, or per live client).
    #[arg(long, short = 'i')]
    pub identities: Option<usize>,

    /// Connections (HTTP) or in-flight senders (live): the workers.
    #[arg(long, short = 'c', default_value_t = 16)]
    pub concurrency: usize,

    /// Measured run time after the warm-up (default 10s unless --requests is given).
    #[arg(long, short = 'd', value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Measured operations after the warm-up (instead of --duration).
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,

    /// Open loop: operations started per second (all workers together).
    #[arg(long, short = 'r', value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Run this long before measuring; excluded from every figure.
    #[arg(long, short = 'w', value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,

    /// Seed of the identities, bodies and random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Generator threads, each with its own runtime (default: one per core).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,

    /// Server process to watch: CPU seconds, RSS (from /proc), CPU-µs per operation.
    /// Repeatable (or a comma list): a fleet's nodes, whose CPU and memory are added up.
    #[arg(long, short = 'p', value_delimiter = ',')]
    pub server_pid: Vec<u32>,

    /// Another process whose CPU over the same window is reported per operation and as a
    /// multiple of the floor (e.g. mariadbd). Repeatable (or a comma list): added up.
    #[arg(long, value_delimiter = ',')]
    pub db_pid: Vec<u32>,

    /// Don't measure the crypto floor at start (no floor ratios unless --floor-us is given).
    #[arg(long)]
    pub no_floor: bool,

    /// The request floor (1 verify + 1 sign) in µs, instead of measuring it.
    #[arg(long, value_parser = parse_positive)]
    pub floor_us: Option<f64>,

    /// With --floor-us: the live floor (1 verify + 2 signs) in µs.
    #[arg(long, value_parser = parse_positive, requires = "floor_us")]
    pub live_floor_us: Option<f64>,

    /// How long the floor loop runs (on one thread, before anything else).
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub floor_time: Duration,

    /// Find the highest open-loop rate whose p99 stays under --p99: short runs of
    /// --duration each, the rate doubled or halved from --rate (default: 0.2 / floor) until
    /// the bound is crossed, then bisected.
    #[arg(long)]
    pub find_rate: bool,

    /// --find-rate: the latency bound (p99 of the scenario's operation; live: of delivery).
    #[arg(long, value_parser = parse_duration, default_value = "50ms")]
    pub p99: Duration,

    /// --find-rate: most runs.
    #[arg(long, default_value_t = 10)]
    pub find_rate_steps: usize,

    /// --find-rate: stop bisecting when the failing rate is within this fraction above the
    /// passing one.
    #[arg(long, default_value_t = 0.05, value_parser = parse_positive)]
    pub find_rate_precision: f64,

    /// Print the final report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,

    /// Also write the JSON report to this file (the human report still goes to stdout).
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,

    /// No progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Free text recorded in the report (e.g. "ours, MySQL").
    #[arg(long)]
    pub label: Option<String>,

    /// Per-operation timeout.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,

    /// Skip verifying the server's signatures (they must still be present). Halves the
    /// generator's crypto; the default verifies everything, as a real client does.
    #[arg(long)]
    pub skip_verify: bool,

    /// send/live: characters in each message body.
    #[arg(long, default_value_t = 200)]
    pub body_size: usize,

    /// send: recipients per sendMessage (drawn from the identities).
    #[arg(long, default_value_t = 1)]
    pub recipients: usize,

    /// list: messages in each listed box.
    #[arg(long, default_value_t = 10)]
    pub messages: usize,

    /// ack: messages pre-sent per worker (default: enough for the planned run).
    #[arg(long)]
    pub prefill: Option<u64>,

    /// Message box name (default: one unique to this run, so list/ack counts are exact).
    #[arg(long)]
    pub message_box: Option<String>,

    /// mixed: operation weights.
    #[arg(long, default_value = "send=1,list=2,ack=1")]
    pub mix: Mix,

    /// live/idle: socket clients.
    #[arg(long, short = 'k', default_value_t = 100)]
    pub clients: usize,

    /// live, with several `--url`s: which clients messages go between.
    #[arg(long, value_enum, default_value = "any")]
    pub pairs: Pairs,

    /// live/idle: how clients reach WebSocket.
    #[arg(long, value_enum, default_value = "upgrade")]
    pub transport: Transport,

    /// Connections being set up at once (HTTP handshakes before the run, live connects).
    #[arg(long, default_value_t = 32)]
    pub connect_concurrency: usize,

    /// With --server-pid: also sample the server's RSS every N completed operations
    /// (the memory-flatness check).
    #[arg(long)]
    pub rss_every: Option<u64>,

    /// abuse: attacking connections, sockets or senders (default per kind: handshake 64,
    /// slow-headers 1000, fanout 4, sockets 1200).
    #[arg(long)]
    pub attack_connections: Option<usize>,

    /// abuse: local address of the legitimate client's connections (default 127.0.0.2 when
    /// the target is loopback IPv4, so per-IP limits tell it from the attack; otherwise the
    /// OS's choice).
    #[arg(long)]
    pub legit_source: Option<std::net::IpAddr>,

    /// abuse: the legitimate client's signed listMessages start this often (open loop).
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub legit_interval: Duration,

    /// abuse-slow-headers: one byte of the request head per connection this often.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub slow_interval: Duration,

    /// abuse-fanout: body characters (default: the standard profile's
    /// MESSAGE_BOX_MAX_MESSAGE_BODY_BYTES, the largest a default server accepts).
    #[arg(long)]
    pub fanout_body_bytes: Option<usize>,

    /// abuse-fanout: recipients per send (default: the standard profile's
    /// MESSAGE_BOX_MAX_RECIPIENTS).
    #[arg(long)]
    pub fanout_recipients: Option<usize>,
}

impl Options {
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1)
    }

    /// The measured duration when neither a duration nor a count is given.
    pub fn duration_or_default(&self) -> Option<Duration> {
        match (self.duration, self.requests) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        }
    }

    /// Checks combinations clap cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.scenario.is_live() && self.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        if self.scenario == Scenario::Live && self.clients < 2 {
            return Err("live needs at least 2 --clients (messages go between them)".into());
        }
        if self.identities == Some(0) {
            return Err("--identities must be at least 1".into());
        }
        if self.recipients == 0 {
            return Err("--recipients must be at least 1".into());
        }
        if self.body_size == 0 {
            return Err("--body-size must be at least 1 (the server refuses a blank body)".into());
        }
        if self.scenario == Scenario::Ack && self.identities.is_some_and(|i| i < self.concurrency) {
            return Err("ack needs an identity per worker: --identities >= --concurrency".into());
        }
        if self.scenario.is_abuse() {
            if self.attack_connections == Some(0) {
                return Err("--attack-connections must be at least 1".into());
            }
            if self.legit_interval.is_zero() || self.slow_interval.is_zero() {
                return Err("--legit-interval and --slow-interval must be above 0".into());
            }
            if self.fanout_body_bytes == Some(0) || self.fanout_recipients == Some(0) {
                return Err("--fanout-body-bytes and --fanout-recipients must be at least 1".into());
            }
        }
        if self.url.is_empty() {
            return Err("--url must name at least one server".into());
        }
        let per_node = 2 * self.url.len();
        if self.pairs != Pairs::Any
            && (self.url.len() < 2 || self.clients < per_node || self.identities.is_some_and(|i| i < per_node))
        {
            return Err(
                "--pairs same-node/cross-node need several --url and two --clients (and identities) per URL".into()
            );
        }
        if self.find_rate {
            if self.scenario.is_abuse() || self.scenario == Scenario::Idle {
                return Err("--find-rate needs a scenario with operations to pace (not idle or abuse-*)".into());
            }
            if self.requests.is_some() {
                return Err("--find-rate runs steps of --duration, not --requests".into());
            }
            if self.find_rate_steps < 2 {
                return Err("--find-rate-steps must be at least 2".into());
            }
            if self.p99.is_zero() {
                return Err("--p99 must be above 0".into());
            }
            if self.no_floor && self.floor_us.is_none() && self.rate.is_none() {
                return Err("--find-rate starts from --rate, or from the floor (drop --no-floor)".into());
            }
        }
        if self.rss_every.is_some() && self.server_pid.is_empty() {
            return Err("--rss-every needs --server-pid".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn mix_parses_and_picks_in_proportion() {
        let m: Mix = "send=1, list=2,ack=1".parse().unwrap();
        assert_eq!(m, Mix { handshake: 0, send: 1, list: 2, ack: 1 });
        let picks: Vec<MixOp> = (0..m.total()).map(|x| m.pick(x)).collect();
        assert_eq!(picks, [MixOp::Send, MixOp::List, MixOp::List, MixOp::Ack]);
        let h: Mix = "handshake=1,send=1".parse().unwrap();
        assert_eq!(h.pick(1), MixOp::Handshake);
        assert!("send=0".parse::<Mix>().is_err());
        assert!("post=1".parse::<Mix>().is_err());
        assert!("send".parse::<Mix>().is_err());
        assert_eq!(m.to_string().parse::<Mix>().unwrap(), m);
    }

    #[test]
    fn options_parse_and_validate() {
        let o =
            Options::try_parse_from(["mbload", "send", "--rate", "2000", "-d", "30s", "--server-pid", "7"]).unwrap();
        assert_eq!(o.scenario, Scenario::Send);
        assert_eq!(o.rate, Some(2000.0));
        assert_eq!(o.duration_or_default(), Some(Duration::from_secs(30)));
        o.validate().unwrap();
        let o = Options::try_parse_from(["mbload", "ack", "-c", "8", "-i", "4"]).unwrap();
        assert!(o.validate().is_err());
        let o = Options::try_parse_from(["mbload", "list", "-n", "1000"]).unwrap();
        assert_eq!(o.duration_or_default(), None);
        assert!(Options::try_parse_from(["mbload", "send", "--rate", "0"]).is_err());
    }

    #[test]
    fn several_urls_and_pids() {
        let o = Options::try_parse_from([
            "mbload",
            "live",
            "--url",
            "http://a:1,http://b:2",
            "--url",
            "http://c:3",
            "--server-pid",
            "7,8",
            "-p",
            "9",
            "--pairs",
            "cross-node",
        ])
        .unwrap();
        assert_eq!(o.url, ["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(o.server_pid, [7, 8, 9]);
        assert_eq!(o.pairs, Pairs::CrossNode);
        o.validate().unwrap();
        let one = Options::try_parse_from(["mbload", "live", "--pairs", "same-node"]).unwrap();
        assert!(one.validate().is_err(), "pairs need several nodes");
        let few = Options::try_parse_from([
            "mbload",
            "live",
            "-u",
            "http://a:1,http://b:2",
            "-k",
            "3",
            "--pairs",
            "cross-node",
        ])
        .unwrap();
        assert!(few.validate().is_err(), "two clients per node");
        let d = Options::try_parse_from(["mbload", "send"]).unwrap();
        assert_eq!((d.url, d.server_pid, d.pairs), (vec!["http://127.0.0.1:8080".to_string()], vec![], Pairs::Any));
    }

    #[test]
    fn abuse_options() {
        let o = Options::try_parse_from([
            "mbload",
            "abuse-slow-headers",
            "--attack-connections",
            "300",
            "--slow-interval",
            "500ms",
            "--legit-source",
            "127.0.0.3",
        ])
        .unwrap();
        assert_eq!(o.scenario, Scenario::AbuseSlowHeaders);
        assert!(o.scenario.is_abuse() && !o.scenario.is_live());
        assert_eq!(o.attack_connections, Some(300));
        assert_eq!(o.slow_interval, Duration::from_millis(500));
        assert_eq!(o.legit_interval, Duration::from_millis(100));
        assert_eq!(o.legit_source, Some("127.0.0.3".parse().unwrap()));
        o.validate().unwrap();
        for (name, s) in [
            ("abuse-handshake", Scenario::AbuseHandshake),
            ("abuse-fanout", Scenario::AbuseFanout),
            ("abuse-sockets", Scenario::AbuseSockets),
        ] {
            let o = Options::try_parse_from(["mbload", name]).unwrap();
            assert_eq!((o.scenario, o.scenario.name()), (s, name));
            assert!(o.scenario.default_attack_connections() > 0);
        }
        let o = Options::try_parse_from(["mbload", "abuse-fanout", "--fanout-recipients", "0"]).unwrap();
        assert!(o.validate().is_err());
        let o = Options::try_parse_from(["mbload", "abuse-sockets", "--legit-interval", "0s"]).unwrap();
        assert!(o.validate().is_err());
        assert!(Options::try_parse_from(["mbload", "abuse-sockets", "--legit-source", "nowhere"]).is_err());
    }
}
