//! Configuration from the environment (and a `.env` file), with the original server's
//! variable names and defaults, plus our own `MESSAGEBOX_*` tuning knobs. Every bad value
//! is reported as one line naming the variable.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::api::Limits;
use crate::auth::{PrivateKey, SessionConfig};
use crate::limits::{
    DatabaseLimits, HttpLimits, Limit, MessageLimits, Profile, RateLimit, ResourceLimits, RetentionLimits,
    WebSocketLimits,
};

/// One configuration error: which variable, and what is wrong with it. Shown as
/// `<var>: <message>`, or as the message alone when it names the variable itself (the newer
/// upstream's texts, e.g. `MESSAGE_BOX_MAX_RECIPIENTS must be -1, unlimited, or a positive
/// integer`, which operators may grep for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.starts_with(self.var) {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.var, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError { var, message: message.into() }
}

/// Every variable the server reads, with its meaning (printed by `--help`).
pub const VARIABLES: &[(&str, &str)] = &[
    ("SERVER_PRIVATE_KEY", "64 hex digits; the server's BRC-103 identity. Required unless NODE_ENV=development, where a key is generated once and kept beside the database"),
    ("NODE_ENV", "development (default) | production | …; anything but development listens on port 3000"),
    ("PORT", "listen port in development (must be > 0)"),
    ("HTTP_PORT", "fallback listen port in development; else 8080"),
    ("ROUTING_PREFIX", "prefix of the business routes, e.g. /api (not applied to /.well-known/auth, /docs, /openapi.json, /socket.io/; the probes answer bare and prefixed)"),
    ("ENABLE_WEBSOCKETS", "true (default) | false, any case: the Socket.IO live channel on /socket.io/; anything else is a configuration error"),
    ("LOGGING_ENABLED", "true | false; logging is on unless false"),
    ("LOG_LEVEL", "trace | debug | info (default) | warn | error | fatal | silent; RUST_LOG wins when set"),
    ("LOG_FORMAT", "text (default; ANSI colours only when stdout is a terminal) | json (one object per line)"),
    ("MESSAGEBOX_ACCESS_LOG", "true | false (default): one info line per request (method, route, status, duration, client IP, identity)"),
    ("MESSAGEBOX_METRICS_ADDR", "host:port of the Prometheus listener (GET /metrics), e.g. 127.0.0.1:9464; unset (default): no metrics"),
    ("TRUST_PROXY_HOPS", "0..10; the client IP (access log, rate limits) is taken this many proxies from the right of X-Forwarded-For (unset: the TCP peer)"),
    ("DATABASE_URL", "mysql://user:pass@host:port/db or sqlite://path; wins over KNEX_DB_CONNECTION"),
    ("KNEX_DB_CONNECTION", "the original's knex JSON, e.g. {\"host\":\"…\",\"port\":3306,\"user\":\"…\",\"password\":\"…\",\"database\":\"…\"}"),
    ("KNEX_DB_CLIENT", "mysql2 (default) | mysql | better-sqlite3 | sqlite3 (then KNEX_DB_CONNECTION is {\"filename\":…})"),
    ("MIGRATE_KEY", "accepted for compatibility; unused (the original removed /migrate)"),
    ("BSV_NETWORK", "mainnet (default) | testnet"),
    ("WALLET_STORAGE_URL", "the remote wallet storage (wallet-toolbox StorageServer) where delivery fees are internalized into the server's wallet, as the original does; default https://storage.babbage.systems, with BSV_NETWORK=testnet https://staging-storage.babbage.systems; none: accept no payments"),
    ("WALLET_STORAGE_TIMEOUT_MS", "ours: longest wait for the wallet storage in one paid send, positive, at most 3600000 (30000); then 503 ERR_PAYMENT_UNAVAILABLE"),
    ("PAYMENT_WALLET_URL", "ours: http(s) URL of a BRC-100 JSON wallet (root key = SERVER_PRIVATE_KEY) that accepts delivery-fee payments instead of the wallet storage (wins over WALLET_STORAGE_URL)"),
    ("HOSTING_DOMAIN", "accepted for compatibility; unused (the original advertises nothing)"),
    ("ENABLE_FIREBASE", "true enables FCM push for the notifications box"),
    ("FIREBASE_PROJECT_ID", "required when ENABLE_FIREBASE=true"),
    ("FIREBASE_SERVICE_ACCOUNT_JSON", "service-account JSON (private_key, client_email, project_id)"),
    ("FIREBASE_SERVICE_ACCOUNT_PATH", "path of a service-account JSON file (else GOOGLE_APPLICATION_CREDENTIALS, else the GCP metadata server)"),
    ("FIREBASE_FCM_ENDPOINT", "FCM base URL (default https://fcm.googleapis.com)"),
    ("MESSAGEBOX_PORT", "listen port; overrides the NODE_ENV port rule (0 = any free port)"),
    ("MESSAGEBOX_BIND", "listen address (default 0.0.0.0)"),
    ("MESSAGEBOX_THREADS", "worker threads, one runtime and listener each (default: available cores)"),
    ("MESSAGEBOX_SESSION_TTL", "seconds an idle BRC-103 session lives (default 3600); MESSAGE_BOX_AUTH_SESSION_TTL_MS wins"),
    ("MESSAGE_BOX_AUTH_SESSION_TTL_MS", "the newer server's name for the idle session TTL, in ms (default: MESSAGEBOX_SESSION_TTL); -1 is refused"),
    ("MESSAGEBOX_MAX_SESSIONS", "most live BRC-103 sessions (default 262144); when full, the oldest never-used session is evicted"),
    ("MESSAGEBOX_UNUSED_SESSION_TTL", "seconds a session lives before its first request (default 120)"),
    ("MESSAGEBOX_MAX_REQUESTS_PER_SESSION", "requests before a session is retired and the client re-handshakes (default 4096)"),
    ("MESSAGE_BOX_DB_POOL_MAX", "MySQL connections in all, split between the cores and the store thread (default 8; alias MESSAGEBOX_DB_POOL)"),
    ("MESSAGEBOX_DB_POOL", "alias of MESSAGE_BOX_DB_POOL_MAX"),
    // The resource limits (spec ts-next-ops §1.2-§1.7). Limits take -1 or `unlimited` to
    // disable them unless said otherwise; defaults are per profile (small / standard /
    // high-throughput).
    ("MESSAGE_BOX_RESOURCE_PROFILE", "small | standard (default) | high-throughput: the defaults of every MESSAGE_BOX_* limit; RESOURCE_PROFILE is read when it is blank"),
    ("RESOURCE_PROFILE", "the profile for every service; MESSAGE_BOX_RESOURCE_PROFILE wins"),
    ("MESSAGE_BOX_MAX_BODY_BYTES", "largest JSON request body, bytes, at most 536870912 (1048576 / 4194304 / 16777216); alias MESSAGEBOX_MAX_BODY"),
    ("MESSAGEBOX_MAX_BODY", "alias of MESSAGE_BOX_MAX_BODY_BYTES"),
    ("MESSAGE_BOX_MAX_UNAUTHENTICATED_BODY_BYTES", "ours: largest body read before the request's session is known, and of handshakes (65536)"),
    ("MESSAGE_BOX_MAX_RESPONSE_BYTES", "largest response, at most 536870912 (default: MESSAGE_BOX_LIST_MAX_RESPONSE_BYTES)"),
    ("MESSAGE_BOX_MAX_CONCURRENT_REQUESTS", "requests in flight per process, at most 100000 (8 / 24 / 96); over it: 503 ERR_SERVER_BUSY"),
    ("MESSAGE_BOX_MAX_CONNECTIONS", "open TCP connections per process, WebSockets included, at most 1000000 (1000)"),
    ("MESSAGE_BOX_MAX_CONNECTIONS_PER_IP", "ours: open TCP connections per client IP, at most 1000000 (64 / 256 / 1024)"),
    ("MESSAGE_BOX_MAX_JSON_VALUES", "ours: JSON values (numbers, strings, array items, …) in one request body, counted before parsing (65536 / 262144 / 1048576)"),
    ("MESSAGE_BOX_RATE_LIMIT_MAX_KEYS", "ours: client IPs and identities the rate limiters track at once (default 100000)"),
    ("MESSAGE_BOX_REQUEST_TIMEOUT_MS", "positive, at most 3600000 (60000)"),
    ("MESSAGE_BOX_HEADERS_TIMEOUT_MS", "positive, at most the request timeout (15000)"),
    ("MESSAGE_BOX_KEEP_ALIVE_TIMEOUT_MS", "positive, at most the request timeout (5000)"),
    ("MESSAGE_BOX_SOCKET_TIMEOUT_MS", "idle connection timeout, positive, at most 3600000 (60000)"),
    ("MESSAGE_BOX_MAX_REQUESTS_PER_SOCKET", "positive, at most 1000000 (1000)"),
    ("MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX", "requests per client IP per window, positive, at most 1000000 (300)"),
    ("MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_WINDOW_MS", "positive, at most 86400000 (60000)"),
    ("MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX", "requests per identity per window, positive, at most 1000000 (1000)"),
    ("MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_WINDOW_MS", "positive, at most 86400000 (60000)"),
    ("MESSAGE_BOX_MAX_MESSAGE_BODY_BYTES", "UTF-8 bytes of one message body, HTTP and live (262144 / 1048576 / 4194304); over it: 413 ERR_MESSAGE_BODY_TOO_LARGE"),
    ("MESSAGE_BOX_MAX_RECIPIENTS", "recipients of one /sendMessage (25 / 100 / 250); alias MESSAGEBOX_MAX_RECIPIENTS"),
    ("MESSAGEBOX_MAX_RECIPIENTS", "alias of MESSAGE_BOX_MAX_RECIPIENTS"),
    ("MESSAGE_BOX_LIST_DEFAULT_LIMIT", "/listMessages page size when none is asked (250 / 1000 / 1000); alias MESSAGEBOX_LIST_LIMIT"),
    ("MESSAGEBOX_LIST_LIMIT", "alias of MESSAGE_BOX_LIST_DEFAULT_LIMIT"),
    ("MESSAGE_BOX_LIST_MAX_LIMIT", "largest /listMessages page (500 / 1000 / 5000); alias MESSAGEBOX_LIST_MAX"),
    ("MESSAGEBOX_LIST_MAX", "alias of MESSAGE_BOX_LIST_MAX_LIMIT"),
    ("MESSAGE_LIST_BATCH_SIZE", "legacy: when set, the default of both MESSAGE_BOX_LIST_DEFAULT_LIMIT and MESSAGE_BOX_LIST_MAX_LIMIT"),
    ("MESSAGE_BOX_LIST_MAX_OFFSET", "largest /listMessages offset (25000 / 100000 / 1000000)"),
    ("MESSAGE_BOX_LIST_MAX_RESPONSE_BYTES", "byte budget of one /listMessages page (4194304 / 8388608 / 33554432)"),
    ("MESSAGE_BOX_MAX_INBOX_MESSAGES", "unexpired messages per recipient (5000 / 10000 / 100000)"),
    ("MESSAGE_BOX_MAX_INBOX_BYTES", "stored bytes per recipient (268435456 / 1073741824 / 17179869184)"),
    ("MESSAGE_BOX_MAX_SENDER_MESSAGES", "unexpired messages per sender (5000 / 10000 / 100000)"),
    ("MESSAGE_BOX_MAX_SENDER_BYTES", "stored bytes per sender (268435456 / 1073741824 / 17179869184)"),
    ("MESSAGE_BOX_MAX_ACKNOWLEDGMENT_IDS", "ids of one /acknowledgeMessage (500 / 1000 / 5000)"),
    ("MESSAGE_BOX_DEVICE_LIST_DEFAULT_LIMIT", "GET /devices page size (50 / 100 / 500)"),
    ("MESSAGE_BOX_DEVICE_LIST_MAX_LIMIT", "(100 / 100 / 1000)"),
    ("MESSAGE_BOX_DEVICE_LIST_MAX_OFFSET", "(10000 / 100000 / 1000000)"),
    ("MESSAGE_BOX_PERMISSION_LIST_DEFAULT_LIMIT", "GET /permissions/list page size (50 / 100 / 500)"),
    ("MESSAGE_BOX_PERMISSION_LIST_MAX_LIMIT", "(100 / 100 / 1000)"),
    ("MESSAGE_BOX_PERMISSION_LIST_MAX_OFFSET", "(10000 / 100000 / 1000000)"),
    ("MESSAGE_BOX_MAX_NOTIFICATION_DEVICES", "FCM devices notified per recipient (25 / 100 / 500)"),
    ("MESSAGE_BOX_RETENTION_DAYS", "days a new message is kept (14 / 30 / 90); -1: never expires"),
    ("MESSAGE_BOX_RETENTION_CLEANUP_INTERVAL_MS", "period of the expired-message sweeper (900000); -1: once at start-up"),
    ("MESSAGE_BOX_RETENTION_CLEANUP_BATCH_SIZE", "rows deleted per table per sweep (1000); -1: no limit"),
    ("MESSAGE_BOX_WEBSOCKET_MAX_BODY_BYTES", "largest live-channel payload, at most 536870912 (1048576)"),
    ("MESSAGE_BOX_WEBSOCKET_MAX_CONNECTIONS", "live sessions per process (250 / 1000 / 10000)"),
    ("MESSAGE_BOX_WEBSOCKET_MAX_CONNECTIONS_PER_IDENTITY", "authenticated sockets per identity (5 / 25 / 100)"),
    ("MESSAGE_BOX_WEBSOCKET_MAX_ROOMS_PER_CONNECTION", "rooms one socket may join (32 / 128 / 512)"),
    ("MESSAGE_BOX_WEBSOCKET_CONTROL_RATE_LIMIT", "joinRoom + leaveRoom per socket per 60 s (120 / 600 / 2400)"),
    ("MESSAGE_BOX_WEBSOCKET_MAX_CONCURRENT_SENDS", "sendMessage events in flight per socket (2 / 4 / 16)"),
    ("MESSAGE_BOX_WEBSOCKET_SEND_RATE_LIMIT", "sendMessage events per socket per 60 s (60 / 300 / 1200)"),
    ("MESSAGE_BOX_WEBSOCKET_MAX_RECIPIENT_CONNECTIONS", "sockets that receive one live push (10 / 25 / 100)"),
    ("MESSAGE_BOX_WEBSOCKET_AUTH_TIMEOUT_MS", "ours: a socket not authenticated this long is closed, positive, at most 3600000 (10000)"),
    ("MESSAGE_BOX_DB_CONNECT_TIMEOUT_MS", "ours: establishing one database connection, positive, at most 3600000 (5000)"),
    ("MESSAGE_BOX_DB_ACQUIRE_TIMEOUT_MS", "ours: waiting for a pooled connection, positive, at most 3600000 (5000)"),
    ("MESSAGE_BOX_DB_QUERY_TIMEOUT_MS", "ours: one statement or transaction, positive, at most 3600000 (10000)"),
    ("MESSAGEBOX_KEY_FILE", "where the development key is kept (default: beside the database)"),
    ("REDIS_URL", "redis://host:port[/db] or rediss://…: run as one node of a fleet (requires MySQL; every node shares SERVER_PRIVATE_KEY, the database and REDIS_URL); unset (default): a single node"),
    ("MESSAGEBOX_NODE_URL", "with REDIS_URL: the http(s) origin other nodes reach this node at (default http://<bind address>:<port>, 127.0.0.1 for 0.0.0.0)"),
];

/// The database to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Mysql { url: String },
    Sqlite { path: PathBuf },
}

impl Database {
    pub fn url(&self) -> String {
        match self {
            Database::Mysql { url } => url.clone(),
            Database::Sqlite { path } => format!("sqlite://{}", path.display()),
        }
    }

    /// A log-safe description (no password).
    pub fn describe(&self) -> String {
        match self {
            Database::Mysql { url } => match (url.find("://"), url.rfind('@')) {
                (Some(s), Some(a)) if a > s => format!("mysql://…@{}", &url[a + 1..]),
                _ => url.clone(),
            },
            Database::Sqlite { path } => format!("sqlite {}", path.display()),
        }
    }
}

/// Firebase Cloud Messaging settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firebase {
    pub enabled: bool,
    pub project_id: Option<String>,
    pub service_account_json: Option<String>,
    pub service_account_path: Option<PathBuf>,
    /// FCM base URL (default https://fcm.googleapis.com), for proxies and tests.
    pub fcm_endpoint: Option<String>,
    /// `MESSAGE_BOX_MAX_NOTIFICATION_DEVICES`: newest active devices notified per recipient.
    pub max_devices: Option<usize>,
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging and request-observation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observability {
    pub log_format: LogFormat,
    /// The `tracing` filter `LOG_LEVEL` names (`RUST_LOG`, read at start-up, wins over it).
    pub log_level: &'static str,
    /// `MESSAGEBOX_ACCESS_LOG=true`: one `info` line per request.
    pub access_log: bool,
    /// `TRUST_PROXY_HOPS`: how many proxies in front of the server may be believed about the
    /// client address (`X-Forwarded-For`); 0 when unset.
    pub trust_proxy_hops: u8,
    /// `MESSAGEBOX_METRICS_ADDR`: where `/metrics` is served; `None`: metrics off.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Default for Observability {
    fn default() -> Self {
        Observability {
            log_format: LogFormat::Text,
            log_level: "info",
            access_log: false,
            trust_proxy_hops: 0,
            metrics_addr: None,
        }
    }
}

/// Where the server key comes from.
#[derive(Debug, Clone)]
pub enum KeySource {
    Given(PrivateKey),
    /// Development without SERVER_PRIVATE_KEY: load or create this file.
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Config {
    pub node_env: String,
    pub port: u16,
    pub bind: IpAddr,
    pub threads: usize,
    pub key: KeySource,
    pub routing_prefix: String,
    pub enable_websockets: bool,
    pub logging: bool,
    pub observability: Observability,
    /// The resource profile and every limit (`MESSAGE_BOX_*`).
    pub resources: crate::limits::ResourceLimits,
    pub database: Database,
    pub testnet: bool,
    /// `BSV_NETWORK` as given (default `mainnet`), reported by `/health` as TS-next does.
    pub network: String,
    pub payment_wallet_url: Option<String>,
    /// `REDIS_URL` set: this process is one node of a fleet.
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// `WALLET_STORAGE_URL`, or the network's default; `None` for `none`.
    pub wallet_storage_url: Option<String>,
    /// `WALLET_STORAGE_TIMEOUT_MS`: one paid send's whole exchange with the storage.
    pub wallet_storage_timeout: Duration,
    pub firebase: Firebase,
    pub max_body: usize,
    pub sessions: SessionConfig,
    pub limits: Limits,
    pub db_pool: usize,
}

impl Config {
    pub fn development(&self) -> bool {
        self.node_env == "development"
    }

    /// Reads the process environment (after loading `.env`, which does not override it).
    pub fn from_env() -> Result<Config, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_map(&std::env::vars().collect())
    }

    pub fn from_map(env: &HashMap<String, String>) -> Result<Config, ConfigError> {
        // An empty variable counts as unset, as `process.env.X || default` treats it.
        let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let node_env = get("NODE_ENV").unwrap_or("development").to_string();
        let development = node_env == "development";

        let port = match get("MESSAGEBOX_PORT") {
            Some(p) => p.parse::<u16>().map_err(|_| err("MESSAGEBOX_PORT", format!("not a port number: {p}")))?,
            None if !development => 3000,
            None => match (get("PORT"), get("HTTP_PORT")) {
                (Some(p), _) => positive_port("PORT", p)?,
                (None, Some(p)) => positive_port("HTTP_PORT", p)?,
                (None, None) => 8080,
            },
        };
        let bind = match get("MESSAGEBOX_BIND") {
            Some(b) => b.parse().map_err(|_| err("MESSAGEBOX_BIND", format!("not an IP address: {b}")))?,
            None => IpAddr::from([0, 0, 0, 0]),
        };
        let threads = match get("MESSAGEBOX_THREADS") {
            Some(t) => t
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=256).contains(n))
                .ok_or_else(|| err("MESSAGEBOX_THREADS", format!("expected 1..256, got {t}")))?,
            None => std::thread::available_parallelism().map(|n| n.get().min(256)).unwrap_or(1),
        };
        let database = database(env)?;
        let key = match get("SERVER_PRIVATE_KEY") {
            Some(k) => KeySource::Given(
                PrivateKey::from_hex(k)
                    .map_err(|_| err("SERVER_PRIVATE_KEY", "expected 64 hex digits of a valid secp256k1 key"))?,
            ),
            None if development => KeySource::File(match get("MESSAGEBOX_KEY_FILE") {
                Some(p) => PathBuf::from(p),
                None => default_key_file(&database),
            }),
            None => return Err(err("SERVER_PRIVATE_KEY", "required when NODE_ENV is not development")),
        };
        let routing_prefix = env.get("ROUTING_PREFIX").cloned().unwrap_or_default();
        // The original compares with `true` case-insensitively, so a typo such as `yes`
        // silently turned the live channel off; such a value is refused instead.
        let enable_websockets = match get("ENABLE_WEBSOCKETS") {
            None => true,
            Some(v) => boolean("ENABLE_WEBSOCKETS", v)?,
        };
        let logging = get("LOGGING_ENABLED").is_none_or(|v| !v.eq_ignore_ascii_case("false"));
        let observability = Observability {
            log_format: match get("LOG_FORMAT").map(str::to_ascii_lowercase).as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => return Err(err("LOG_FORMAT", format!("expected text or json, got {other}"))),
            },
            log_level: match get("LOG_LEVEL") {
                None => "info",
                Some(v) => log_level(v).ok_or_else(|| {
                    err("LOG_LEVEL", format!("expected trace, debug, info, warn, error, fatal or silent, got {v}"))
                })?,
            },
            access_log: match get("MESSAGEBOX_ACCESS_LOG") {
                None => false,
                Some(v) => boolean("MESSAGEBOX_ACCESS_LOG", v)?,
            },
            trust_proxy_hops: match get("TRUST_PROXY_HOPS") {
                None => 0,
                // TS-next's rule and message: digits only, at most 10.
                Some(v) => v
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| v.parse::<u8>().ok())
                    .flatten()
                    .filter(|n| *n <= 10)
                    .ok_or_else(|| err("TRUST_PROXY_HOPS", "TRUST_PROXY_HOPS must be an integer from 0 to 10"))?,
            },
            metrics_addr: match get("MESSAGEBOX_METRICS_ADDR") {
                None => None,
                Some(v) => Some(socket_addr(v).ok_or_else(|| {
                    err("MESSAGEBOX_METRICS_ADDR", format!("expected host:port, e.g. 127.0.0.1:9464, got {v}"))
                })?),
            },
        };
        let testnet = get("BSV_NETWORK") == Some("testnet");
        let network = get("BSV_NETWORK").unwrap_or("mainnet").to_string();
        let payment_wallet_url = get("PAYMENT_WALLET_URL").map(str::to_string);
        if let Some(u) = &payment_wallet_url {
            crate::payments::HttpJsonWallet::new(u, "x").map_err(|m| err("PAYMENT_WALLET_URL", m.to_string()))?;
        }
        let fleet = match get("REDIS_URL").filter(|u| !u.is_empty()) {
            None => None,
            Some(url) => {
                crate::fleet::check_redis_url(url).map_err(|m| err("REDIS_URL", m))?;
                if matches!(database, Database::Sqlite { .. }) {
                    return Err(err(
                        "REDIS_URL",
                        "a fleet needs MySQL: every node must share one database (set DATABASE_URL=mysql://…, or unset REDIS_URL)",
                    ));
                }
                let node_url = match get("MESSAGEBOX_NODE_URL").filter(|u| !u.is_empty()) {
                    Some(u) => Some(crate::fleet::check_node_url(u).map_err(|m| err("MESSAGEBOX_NODE_URL", m))?),
                    None => None,
                };
                Some(crate::fleet::FleetConfig { redis_url: url.to_string(), node_url })
            }
        };
        let wallet_storage_url = match get("WALLET_STORAGE_URL") {
            Some(none) if none.eq_ignore_ascii_case("none") => None,
            Some(url) => Some(url.to_string()),
            None => Some(crate::payments::storage::default_url(testnet).to_string()),
        };
        if let Some(u) = &wallet_storage_url {
            crate::payments::storage::Endpoint::parse(u).map_err(|m| err("WALLET_STORAGE_URL", m.to_string()))?;
        }
        let wallet_storage_timeout =
            Env(env).millis(&["WALLET_STORAGE_TIMEOUT_MS"], Duration::from_secs(30), MAX_TIMEOUT_MS)?;
        let firebase = Firebase {
            enabled: get("ENABLE_FIREBASE") == Some("true"),
            project_id: get("FIREBASE_PROJECT_ID").map(str::to_string),
            service_account_json: get("FIREBASE_SERVICE_ACCOUNT_JSON").map(str::to_string),
            service_account_path: get("FIREBASE_SERVICE_ACCOUNT_PATH").map(PathBuf::from),
            fcm_endpoint: get("FIREBASE_FCM_ENDPOINT").map(str::to_string),
            max_devices: None,
        };
        if firebase.enabled && firebase.project_id.is_none() {
            return Err(err("FIREBASE_PROJECT_ID", "required when ENABLE_FIREBASE=true"));
        }
        let num = |var: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => v
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| err(var, format!("expected an integer in {min}..={max}, got {v}"))),
            }
        };
        let resources = resource_limits(env)?;
        let max_body = usize::try_from(resources.http.max_body_bytes).unwrap_or(usize::MAX);
        let e = Env(env);
        // The newer server's session TTL (milliseconds, sliding) wins over ours (seconds).
        const SESSION_TTL_MS: &str = "MESSAGE_BOX_AUTH_SESSION_TTL_MS";
        let idle_ttl = if e.first(&[SESSION_TTL_MS]).is_some() {
            match e.limit(&[SESSION_TTL_MS], None, MAX_SAFE_INTEGER)? {
                Some(ms) => Duration::from_millis(ms),
                None => return Err(err(SESSION_TTL_MS, format!("{SESSION_TTL_MS} must be finite"))),
            }
        } else {
            Duration::from_secs(num("MESSAGEBOX_SESSION_TTL", 3600, 1, 30 * 86_400)?)
        };
        let sessions = SessionConfig {
            idle_ttl,
            max_sessions: num("MESSAGEBOX_MAX_SESSIONS", 262_144, 1, 100_000_000)? as usize,
            max_requests_per_session: num("MESSAGEBOX_MAX_REQUESTS_PER_SESSION", 4096, 1, 10_000_000)? as usize,
            unused_ttl: Duration::from_secs(num("MESSAGEBOX_UNUSED_SESSION_TTL", 120, 1, 86_400)?),
        };
        let limits = Limits::from_resources(&resources);
        // Ours stays 8 (one pool serves every core); the newer server's name wins over ours.
        let db_pool = e.positive(&["MESSAGE_BOX_DB_POOL_MAX", "MESSAGEBOX_DB_POOL"], 8, MAX_SAFE_INTEGER)? as usize;
        if observability.metrics_addr.is_some_and(|m| port != 0 && m.port() == port) {
            return Err(err("MESSAGEBOX_METRICS_ADDR", format!("port {port} is the server's own port")));
        }
        let firebase = Firebase {
            max_devices: resources.messages.max_notification_devices.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            ..firebase
        };
        Ok(Config {
            node_env,
            port,
            bind,
            threads,
            key,
            routing_prefix,
            enable_websockets,
            logging,
            observability,
            resources,
            database,
            testnet,
            network,
            payment_wallet_url,
            fleet,
            wallet_storage_url,
            wallet_storage_timeout,
            firebase,
            max_body,
            sessions,
            limits,
            db_pool,
        })
    }
}

/// `host:port`, the host an IP address or a name that resolves (to its first address).
fn socket_addr(v: &str) -> Option<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    v.parse().ok().or_else(|| v.to_socket_addrs().ok()?.next())
}

/// `true` or `false` in any case.
fn boolean(var: &'static str, v: &str) -> Result<bool, ConfigError> {
    if v.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if v.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(err(var, format!("expected true or false, got {v}")))
    }
}

/// A pino level name (as TS-next's `LOG_LEVEL`) → the `tracing` filter directive.
fn log_level(v: &str) -> Option<&'static str> {
    Some(match v.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" => "warn",
        "error" | "fatal" => "error",
        "silent" => "off",
        _ => return None,
    })
}

fn positive_port(var: &'static str, v: &str) -> Result<u16, ConfigError> {
    v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| err(var, format!("not a port number: {v}")))
}

fn default_key_file(db: &Database) -> PathBuf {
    match db {
        Database::Sqlite { path } if path.to_str() != Some(":memory:") => path.with_extension("server-key"),
        _ => PathBuf::from("messagebox.server-key"),
    }
}

fn database(env: &HashMap<String, String>) -> Result<Database, ConfigError> {
    let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if let Some(url) = get("DATABASE_URL") {
        return if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            Ok(Database::Mysql { url: url.to_string() })
        } else if let Some(p) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if p.is_empty() {
                Err(err("DATABASE_URL", "sqlite:// needs a path"))
            } else {
                Ok(Database::Sqlite { path: PathBuf::from(p) })
            }
        } else {
            Err(err("DATABASE_URL", "expected mysql://… or sqlite://…"))
        };
    }
    let client = get("KNEX_DB_CLIENT").unwrap_or("mysql2");
    let Some(conn) = get("KNEX_DB_CONNECTION") else {
        return Ok(Database::Sqlite { path: PathBuf::from("messagebox.sqlite3") });
    };
    let json: serde_json::Value =
        serde_json::from_str(conn).map_err(|e| err("KNEX_DB_CONNECTION", format!("invalid JSON: {e}")))?;
    let obj = json.as_object().ok_or_else(|| err("KNEX_DB_CONNECTION", "expected a JSON object"))?;
    let s =
        |k: &str| obj.get(k).and_then(|v| v.as_str().map(str::to_string).or_else(|| v.as_u64().map(|n| n.to_string())));
    match client {
        "better-sqlite3" | "sqlite3" | "sqlite" => {
            let f = s("filename").ok_or_else(|| err("KNEX_DB_CONNECTION", "sqlite needs {\"filename\": …}"))?;
            Ok(Database::Sqlite { path: PathBuf::from(f) })
        }
        "mysql2" | "mysql" => {
            let enc = |v: String| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>().replace('+', "%20");
            let user = s("user").map(enc).unwrap_or_else(|| "root".into());
            let auth = match s("password") {
                Some(p) if !p.is_empty() => format!("{user}:{}", enc(p)),
                _ => user,
            };
            let host = s("host").unwrap_or_else(|| "localhost".into());
            let port = s("port").unwrap_or_else(|| "3306".into());
            port.parse::<u16>().map_err(|_| err("KNEX_DB_CONNECTION", format!("bad port {port}")))?;
            let db = s("database").map(enc).unwrap_or_default();
            let mut url = format!("mysql://{auth}@{host}:{port}/{db}");
            if let Some(sock) = s("socketPath") {
                url.push_str(&format!("?socket={}", enc(sock)));
            }
            Ok(Database::Mysql { url })
        }
        other => Err(err("KNEX_DB_CLIENT", format!("unsupported client {other} (use mysql2 or better-sqlite3)"))),
    }
}

// --- resource limits (the newer upstream's `MESSAGE_BOX_*` variables, spec §1.1–§1.7) ------

/// `Number.MAX_SAFE_INTEGER`: the newer server's default bound of a limit, and what `-1`
/// means for a body size.
pub const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;
/// The bound of `readBodyLimitBytes` and of `MESSAGE_BOX_MAX_RESPONSE_BYTES`.
const MAX_BODY_BOUND: u64 = 536_870_912;
/// The bound of the HTTP timeouts (one hour).
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// `^[1-9]\d*$`.
fn positive_digits(v: &str) -> bool {
    v.as_bytes().first().is_some_and(|b| (b'1'..=b'9').contains(b)) && v.bytes().all(|b| b.is_ascii_digit())
}

/// The value of digits that passed [`positive_digits`]; too many digits for `u64` is simply
/// more than any bound.
fn digits_value(v: &str) -> u64 {
    v.parse().unwrap_or(u64::MAX)
}

/// Reads the environment as the newer upstream's parsers do. Each reader takes the variable
/// names in order of precedence (the `MESSAGE_BOX_*` name first, then our older alias): the
/// first that is set and not blank is read, and an error names the variable it read.
struct Env<'a>(&'a HashMap<String, String>);

impl<'a> Env<'a> {
    fn first(&self, names: &[&'static str]) -> Option<(&'static str, &'a str)> {
        names.iter().find_map(|n| self.0.get(*n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v.as_str())))
    }

    /// `readResourceLimit`: trimmed and lower-cased; `-1` or `unlimited` → `None`; else a
    /// positive integer at most `max`; unset or blank → `fallback`.
    fn limit(&self, names: &[&'static str], fallback: Limit, max: u64) -> Result<Limit, ConfigError> {
        let Some((name, raw)) = self.first(names) else { return Ok(fallback) };
        let v = raw.trim().to_ascii_lowercase();
        if v == "-1" || v == "unlimited" {
            return Ok(None);
        }
        if !positive_digits(&v) {
            return Err(err(name, format!("{name} must be -1, unlimited, or a positive integer")));
        }
        let n = digits_value(&v);
        if n > max {
            return Err(err(name, format!("{name} must not exceed {max}")));
        }
        Ok(Some(n))
    }

    /// `readPositiveInteger` / `readBoundedInteger`: the raw value (not trimmed) a positive
    /// integer at most `max`; no `-1`; unset or blank → `fallback`.
    fn positive(&self, names: &[&'static str], fallback: u64, max: u64) -> Result<u64, ConfigError> {
        let Some((name, v)) = self.first(names) else { return Ok(fallback) };
        if !positive_digits(v) {
            return Err(err(name, format!("{name} must be a positive integer")));
        }
        let n = digits_value(v);
        if n > max {
            return Err(err(name, format!("{name} must not exceed {max}")));
        }
        Ok(n)
    }

    /// `readBodyLimitBytes`: a limit at most 512 MiB, `-1` meaning `Number.MAX_SAFE_INTEGER`.
    fn body_bytes(&self, names: &[&'static str], fallback: u64) -> Result<u64, ConfigError> {
        Ok(self.limit(names, Some(fallback), MAX_BODY_BOUND)?.unwrap_or(MAX_SAFE_INTEGER))
    }

    fn millis(&self, names: &[&'static str], fallback: Duration, max: u64) -> Result<Duration, ConfigError> {
        self.positive(names, fallback.as_millis() as u64, max).map(Duration::from_millis)
    }
}

/// `readResourceProfile`: `MESSAGE_BOX_RESOURCE_PROFILE` when not blank, else
/// `RESOURCE_PROFILE`, trimmed and lower-cased. As upstream, a `RESOURCE_PROFILE` that is
/// present but empty is refused (only absence means the default), and the message always
/// names the prefixed variable.
fn resource_profile(env: &HashMap<String, String>) -> Result<Profile, ConfigError> {
    const NAME: &str = "MESSAGE_BOX_RESOURCE_PROFILE";
    let prefixed = env.get(NAME).filter(|v| !v.trim().is_empty());
    let Some(value) = prefixed.or_else(|| env.get("RESOURCE_PROFILE")) else { return Ok(Profile::Standard) };
    match value.trim().to_ascii_lowercase().as_str() {
        "small" => Ok(Profile::Small),
        "standard" => Ok(Profile::Standard),
        "high-throughput" => Ok(Profile::HighThroughput),
        _ => Err(err(NAME, format!("{NAME} must be small, standard, or high-throughput"))),
    }
}

/// The legacy `MESSAGE_LIST_BATCH_SIZE`: when set, the profile default of both list limits.
fn legacy_list_batch(env: &HashMap<String, String>) -> Result<Option<Limit>, ConfigError> {
    const NAME: &str = "MESSAGE_LIST_BATCH_SIZE";
    let Some((_, raw)) = Env(env).first(&[NAME]) else { return Ok(None) };
    let v = raw.trim().to_ascii_lowercase();
    if v == "-1" || v == "unlimited" {
        return Ok(Some(None));
    }
    if !positive_digits(&v) {
        return Err(err(NAME, format!("{NAME} must be -1, unlimited, or a positive integer")));
    }
    let n = digits_value(&v);
    if n > MAX_SAFE_INTEGER {
        return Err(err(NAME, format!("{NAME} must be a safe integer")));
    }
    Ok(Some(Some(n)))
}

/// `default` must not exceed `max` unless either is unlimited (`readMessageBoxResourceConfig`).
fn not_above(default: Limit, max: Limit, default_name: &'static str, max_name: &str) -> Result<(), ConfigError> {
    match (default, max) {
        (Some(d), Some(m)) if d > m => Err(err(default_name, format!("{default_name} must not exceed {max_name}"))),
        _ => Ok(()),
    }
}

/// Every resource limit: the profile's defaults, each overridden by its variable.
pub fn resource_limits(env: &HashMap<String, String>) -> Result<ResourceLimits, ConfigError> {
    let d = ResourceLimits::for_profile(resource_profile(env)?);
    let e = Env(env);
    let any = MAX_SAFE_INTEGER;
    let dm = &d.messages;
    let batch = legacy_list_batch(env)?;
    let messages = MessageLimits {
        max_message_body_bytes: e.limit(&["MESSAGE_BOX_MAX_MESSAGE_BODY_BYTES"], dm.max_message_body_bytes, any)?,
        max_recipients: e.limit(
            &["MESSAGE_BOX_MAX_RECIPIENTS", "MESSAGEBOX_MAX_RECIPIENTS"],
            dm.max_recipients,
            any,
        )?,
        list_default_limit: e.limit(
            &["MESSAGE_BOX_LIST_DEFAULT_LIMIT", "MESSAGEBOX_LIST_LIMIT"],
            batch.unwrap_or(dm.list_default_limit),
            any,
        )?,
        list_max_limit: e.limit(
            &["MESSAGE_BOX_LIST_MAX_LIMIT", "MESSAGEBOX_LIST_MAX"],
            batch.unwrap_or(dm.list_max_limit),
            any,
        )?,
        list_max_offset: e.limit(&["MESSAGE_BOX_LIST_MAX_OFFSET"], dm.list_max_offset, any)?,
        list_max_response_bytes: e.limit(&["MESSAGE_BOX_LIST_MAX_RESPONSE_BYTES"], dm.list_max_response_bytes, any)?,
        max_inbox_messages: e.limit(&["MESSAGE_BOX_MAX_INBOX_MESSAGES"], dm.max_inbox_messages, any)?,
        max_inbox_bytes: e.limit(&["MESSAGE_BOX_MAX_INBOX_BYTES"], dm.max_inbox_bytes, any)?,
        max_sender_messages: e.limit(&["MESSAGE_BOX_MAX_SENDER_MESSAGES"], dm.max_sender_messages, any)?,
        max_sender_bytes: e.limit(&["MESSAGE_BOX_MAX_SENDER_BYTES"], dm.max_sender_bytes, any)?,
        max_acknowledgment_ids: e.limit(&["MESSAGE_BOX_MAX_ACKNOWLEDGMENT_IDS"], dm.max_acknowledgment_ids, any)?,
        device_list_default_limit: e.limit(
            &["MESSAGE_BOX_DEVICE_LIST_DEFAULT_LIMIT"],
            dm.device_list_default_limit,
            any,
        )?,
        device_list_max_limit: e.limit(&["MESSAGE_BOX_DEVICE_LIST_MAX_LIMIT"], dm.device_list_max_limit, any)?,
        device_list_max_offset: e.limit(&["MESSAGE_BOX_DEVICE_LIST_MAX_OFFSET"], dm.device_list_max_offset, any)?,
        permission_list_default_limit: e.limit(
            &["MESSAGE_BOX_PERMISSION_LIST_DEFAULT_LIMIT"],
            dm.permission_list_default_limit,
            any,
        )?,
        permission_list_max_limit: e.limit(
            &["MESSAGE_BOX_PERMISSION_LIST_MAX_LIMIT"],
            dm.permission_list_max_limit,
            any,
        )?,
        permission_list_max_offset: e.limit(
            &["MESSAGE_BOX_PERMISSION_LIST_MAX_OFFSET"],
            dm.permission_list_max_offset,
            any,
        )?,
        max_notification_devices: e.limit(
            &["MESSAGE_BOX_MAX_NOTIFICATION_DEVICES"],
            dm.max_notification_devices,
            any,
        )?,
    };
    let m = &messages;
    not_above(m.list_default_limit, m.list_max_limit, "MESSAGE_BOX_LIST_DEFAULT_LIMIT", "MESSAGE_BOX_LIST_MAX_LIMIT")?;
    not_above(
        m.device_list_default_limit,
        m.device_list_max_limit,
        "MESSAGE_BOX_DEVICE_LIST_DEFAULT_LIMIT",
        "MESSAGE_BOX_DEVICE_LIST_MAX_LIMIT",
    )?;
    not_above(
        m.permission_list_default_limit,
        m.permission_list_max_limit,
        "MESSAGE_BOX_PERMISSION_LIST_DEFAULT_LIMIT",
        "MESSAGE_BOX_PERMISSION_LIST_MAX_LIMIT",
    )?;

    let dh = &d.http;
    let request_timeout = e.millis(&["MESSAGE_BOX_REQUEST_TIMEOUT_MS"], dh.request_timeout, MAX_TIMEOUT_MS)?;
    let request_ms = request_timeout.as_millis() as u64;
    let rate = |max: &'static str, window: &'static str, d: RateLimit| -> Result<RateLimit, ConfigError> {
        Ok(RateLimit { max: e.positive(&[max], d.max, 1_000_000)?, window: e.millis(&[window], d.window, 86_400_000)? })
    };
    let http = HttpLimits {
        max_body_bytes: e.body_bytes(&["MESSAGE_BOX_MAX_BODY_BYTES", "MESSAGEBOX_MAX_BODY"], dh.max_body_bytes)?,
        max_unauthenticated_body_bytes: e
            .body_bytes(&["MESSAGE_BOX_MAX_UNAUTHENTICATED_BODY_BYTES"], dh.max_unauthenticated_body_bytes)?,
        // Upstream's default is the effective listing budget, whatever it was set to.
        max_response_bytes: e.limit(&["MESSAGE_BOX_MAX_RESPONSE_BYTES"], m.list_max_response_bytes, MAX_BODY_BOUND)?,
        max_concurrent_requests: e.limit(
            &["MESSAGE_BOX_MAX_CONCURRENT_REQUESTS"],
            dh.max_concurrent_requests,
            100_000,
        )?,
        max_connections: e.limit(&["MESSAGE_BOX_MAX_CONNECTIONS"], dh.max_connections, 1_000_000)?,
        max_connections_per_ip: e.limit(
            &["MESSAGE_BOX_MAX_CONNECTIONS_PER_IP"],
            dh.max_connections_per_ip,
            1_000_000,
        )?,
        max_json_values: e.positive(&["MESSAGE_BOX_MAX_JSON_VALUES"], dh.max_json_values, 100_000_000)?,
        rate_limit_keys: e.positive(&["MESSAGE_BOX_RATE_LIMIT_MAX_KEYS"], dh.rate_limit_keys, 100_000_000)?,
        request_timeout,
        headers_timeout: e.millis(&["MESSAGE_BOX_HEADERS_TIMEOUT_MS"], dh.headers_timeout, request_ms)?,
        keep_alive_timeout: e.millis(&["MESSAGE_BOX_KEEP_ALIVE_TIMEOUT_MS"], dh.keep_alive_timeout, request_ms)?,
        socket_timeout: e.millis(&["MESSAGE_BOX_SOCKET_TIMEOUT_MS"], dh.socket_timeout, MAX_TIMEOUT_MS)?,
        max_requests_per_socket: e.positive(
            &["MESSAGE_BOX_MAX_REQUESTS_PER_SOCKET"],
            dh.max_requests_per_socket,
            1_000_000,
        )?,
        pre_auth_rate: rate(
            "MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_MAX",
            "MESSAGE_BOX_PRE_AUTH_RATE_LIMIT_WINDOW_MS",
            dh.pre_auth_rate,
        )?,
        authenticated_rate: rate(
            "MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_MAX",
            "MESSAGE_BOX_AUTHENTICATED_RATE_LIMIT_WINDOW_MS",
            dh.authenticated_rate,
        )?,
    };

    let dr = &d.retention;
    let retention = RetentionLimits {
        days: e.limit(&["MESSAGE_BOX_RETENTION_DAYS"], dr.days, any)?,
        cleanup_interval: e
            .limit(
                &["MESSAGE_BOX_RETENTION_CLEANUP_INTERVAL_MS"],
                dr.cleanup_interval.map(|i| i.as_millis() as u64),
                any,
            )?
            .map(Duration::from_millis),
        cleanup_batch: e.limit(&["MESSAGE_BOX_RETENTION_CLEANUP_BATCH_SIZE"], dr.cleanup_batch, any)?,
    };

    let dw = &d.websocket;
    let websocket = WebSocketLimits {
        max_body_bytes: e.body_bytes(&["MESSAGE_BOX_WEBSOCKET_MAX_BODY_BYTES"], dw.max_body_bytes)?,
        max_connections: e.limit(&["MESSAGE_BOX_WEBSOCKET_MAX_CONNECTIONS"], dw.max_connections, any)?,
        max_connections_per_identity: e.limit(
            &["MESSAGE_BOX_WEBSOCKET_MAX_CONNECTIONS_PER_IDENTITY"],
            dw.max_connections_per_identity,
            any,
        )?,
        max_rooms_per_connection: e.limit(
            &["MESSAGE_BOX_WEBSOCKET_MAX_ROOMS_PER_CONNECTION"],
            dw.max_rooms_per_connection,
            any,
        )?,
        control_rate_limit: e.limit(&["MESSAGE_BOX_WEBSOCKET_CONTROL_RATE_LIMIT"], dw.control_rate_limit, any)?,
        max_concurrent_sends: e.limit(&["MESSAGE_BOX_WEBSOCKET_MAX_CONCURRENT_SENDS"], dw.max_concurrent_sends, any)?,
        send_rate_limit: e.limit(&["MESSAGE_BOX_WEBSOCKET_SEND_RATE_LIMIT"], dw.send_rate_limit, any)?,
        max_recipient_connections: e.limit(
            &["MESSAGE_BOX_WEBSOCKET_MAX_RECIPIENT_CONNECTIONS"],
            dw.max_recipient_connections,
            any,
        )?,
        auth_timeout: e.millis(&["MESSAGE_BOX_WEBSOCKET_AUTH_TIMEOUT_MS"], dw.auth_timeout, MAX_TIMEOUT_MS)?,
    };

    let dd = &d.database;
    let database = DatabaseLimits {
        connect_timeout: e.millis(&["MESSAGE_BOX_DB_CONNECT_TIMEOUT_MS"], dd.connect_timeout, MAX_TIMEOUT_MS)?,
        acquire_timeout: e.millis(&["MESSAGE_BOX_DB_ACQUIRE_TIMEOUT_MS"], dd.acquire_timeout, MAX_TIMEOUT_MS)?,
        query_timeout: e.millis(&["MESSAGE_BOX_DB_QUERY_TIMEOUT_MS"], dd.query_timeout, MAX_TIMEOUT_MS)?,
    };

    Ok(ResourceLimits { profile: d.profile, http, messages, retention, websocket, database })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_map(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    const KEY: &str = "a3c47c449055370024aa71a2906d92b965f045aa6b3f9ac32da536d9c7df191c";

    #[test]
    fn port_rule() {
        assert_eq!(cfg(&[]).unwrap().port, 8080);
        assert_eq!(cfg(&[("PORT", "5001")]).unwrap().port, 5001);
        assert_eq!(cfg(&[("HTTP_PORT", "5002")]).unwrap().port, 5002);
        assert_eq!(
            cfg(&[("PORT", "5001"), ("NODE_ENV", "production"), ("SERVER_PRIVATE_KEY", KEY)]).unwrap().port,
            3000
        );
        assert_eq!(cfg(&[("MESSAGEBOX_PORT", "0")]).unwrap().port, 0);
        assert_eq!(cfg(&[("PORT", "abc")]).unwrap_err().var, "PORT");
        assert_eq!(cfg(&[("PORT", "0")]).unwrap_err().var, "PORT");
    }

    #[test]
    fn keys() {
        assert!(matches!(cfg(&[]).unwrap().key, KeySource::File(p) if p.as_os_str() == "messagebox.server-key"));
        assert_eq!(cfg(&[("NODE_ENV", "production")]).unwrap_err().var, "SERVER_PRIVATE_KEY");
        assert_eq!(cfg(&[("SERVER_PRIVATE_KEY", "xyz")]).unwrap_err().var, "SERVER_PRIVATE_KEY");
        assert!(matches!(cfg(&[("SERVER_PRIVATE_KEY", KEY)]).unwrap().key, KeySource::Given(_)));
    }

    #[test]
    fn databases() {
        assert_eq!(cfg(&[]).unwrap().database, Database::Sqlite { path: "messagebox.sqlite3".into() });
        let knex = r#"{"host":"db","port":3307,"user":"u","password":"p@ss","database":"mb"}"#;
        assert_eq!(
            cfg(&[("KNEX_DB_CONNECTION", knex)]).unwrap().database,
            Database::Mysql { url: "mysql://u:p%40ss@db:3307/mb".into() }
        );
        assert_eq!(
            cfg(&[("KNEX_DB_CONNECTION", knex), ("DATABASE_URL", "sqlite:///tmp/x.db")]).unwrap().database,
            Database::Sqlite { path: "/tmp/x.db".into() }
        );
        assert_eq!(cfg(&[("KNEX_DB_CONNECTION", "{bad")]).unwrap_err().var, "KNEX_DB_CONNECTION");
        assert_eq!(cfg(&[("DATABASE_URL", "postgres://x")]).unwrap_err().var, "DATABASE_URL");
        assert_eq!(
            cfg(&[("KNEX_DB_CLIENT", "better-sqlite3"), ("KNEX_DB_CONNECTION", r#"{"filename":"a.db"}"#)])
                .unwrap()
                .database,
            Database::Sqlite { path: "a.db".into() }
        );
        let d = Database::Mysql { url: "mysql://u:secret@h:1/db".into() };
        assert!(!d.describe().contains("secret"));
    }

    #[test]
    fn flags_and_limits() {
        assert!(!cfg(&[("ENABLE_WEBSOCKETS", "FALSE")]).unwrap().enable_websockets);
        assert!(cfg(&[("ENABLE_WEBSOCKETS", "TRUE")]).unwrap().enable_websockets);
        assert_eq!(cfg(&[("MESSAGEBOX_MAX_BODY", "0")]).unwrap_err().var, "MESSAGEBOX_MAX_BODY");
        assert_eq!(cfg(&[("ENABLE_FIREBASE", "true")]).unwrap_err().var, "FIREBASE_PROJECT_ID");
        assert_eq!(cfg(&[("MESSAGEBOX_THREADS", "0")]).unwrap_err().var, "MESSAGEBOX_THREADS");
        assert_eq!(cfg(&[("PAYMENT_WALLET_URL", "ftp://x")]).unwrap_err().var, "PAYMENT_WALLET_URL");
    }

    /// `WALLET_STORAGE_URL` defaults as wallet-toolbox does for the chain `BSV_NETWORK`
    /// names (exactly `testnet` is the test chain, as in the original); `none` turns it off.
    #[test]
    fn wallet_storage() {
        let url = |env: &[(&str, &str)]| cfg(env).unwrap().wallet_storage_url;
        assert_eq!(url(&[]).as_deref(), Some("https://storage.babbage.systems"));
        assert_eq!(url(&[("BSV_NETWORK", "testnet")]).as_deref(), Some("https://staging-storage.babbage.systems"));
        assert_eq!(url(&[("BSV_NETWORK", "test")]).as_deref(), Some("https://storage.babbage.systems"));
        assert_eq!(url(&[("WALLET_STORAGE_URL", "")]).as_deref(), Some("https://storage.babbage.systems"));
        assert_eq!(
            url(&[("WALLET_STORAGE_URL", " http://127.0.0.1:8100/ ")]).as_deref(),
            Some("http://127.0.0.1:8100/")
        );
        assert_eq!(url(&[("WALLET_STORAGE_URL", "None")]), None);
        assert_eq!(cfg(&[("WALLET_STORAGE_URL", "storage.local")]).unwrap_err().var, "WALLET_STORAGE_URL");
        assert_eq!(cfg(&[]).unwrap().wallet_storage_timeout, Duration::from_secs(30));
        assert_eq!(
            cfg(&[("WALLET_STORAGE_TIMEOUT_MS", "1500")]).unwrap().wallet_storage_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(cfg(&[("WALLET_STORAGE_TIMEOUT_MS", "0")]).unwrap_err().var, "WALLET_STORAGE_TIMEOUT_MS");
    }

    #[test]
    fn websockets_flag_is_true_or_false() {
        assert!(cfg(&[]).unwrap().enable_websockets);
        assert!(cfg(&[("ENABLE_WEBSOCKETS", "")]).unwrap().enable_websockets);
        assert!(cfg(&[("ENABLE_WEBSOCKETS", "True")]).unwrap().enable_websockets);
        assert!(!cfg(&[("ENABLE_WEBSOCKETS", "false")]).unwrap().enable_websockets);
        for bad in ["yes", "1", "off", "truee"] {
            let e = cfg(&[("ENABLE_WEBSOCKETS", bad)]).unwrap_err();
            assert_eq!(e.var, "ENABLE_WEBSOCKETS", "{bad}");
        }
    }

    #[test]
    fn notification_devices_reach_the_push_settings() {
        assert_eq!(cfg(&[]).unwrap().firebase.max_devices, Some(100), "standard profile");
        let c = cfg(&[("MESSAGE_BOX_MAX_NOTIFICATION_DEVICES", "3")]).unwrap();
        assert_eq!(c.firebase.max_devices, Some(3));
        assert_eq!(cfg(&[("MESSAGE_BOX_MAX_NOTIFICATION_DEVICES", "-1")]).unwrap().firebase.max_devices, None);
    }

    #[test]
    fn observability() {
        let o = cfg(&[]).unwrap().observability;
        assert_eq!(o, Observability::default());
        let o = cfg(&[
            ("LOG_FORMAT", "JSON"),
            ("LOG_LEVEL", "fatal"),
            ("MESSAGEBOX_ACCESS_LOG", "true"),
            ("TRUST_PROXY_HOPS", "2"),
            ("LOGGING_ENABLED", "false"),
        ])
        .unwrap()
        .observability;
        assert_eq!(
            o,
            Observability {
                log_format: LogFormat::Json,
                log_level: "error",
                access_log: true,
                trust_proxy_hops: 2,
                metrics_addr: None
            }
        );
        let m = cfg(&[("MESSAGEBOX_METRICS_ADDR", "127.0.0.1:9464")]).unwrap().observability.metrics_addr;
        assert_eq!(m, Some("127.0.0.1:9464".parse().unwrap()));
        let m = cfg(&[("MESSAGEBOX_METRICS_ADDR", "localhost:9464")]).unwrap().observability.metrics_addr;
        assert_eq!(m.map(|a| (a.ip().is_loopback(), a.port())), Some((true, 9464)));
        assert_eq!(cfg(&[("LOG_LEVEL", "silent")]).unwrap().observability.log_level, "off");
        for (var, bad) in [
            ("LOG_FORMAT", "xml"),
            ("LOG_LEVEL", "verbose"),
            ("MESSAGEBOX_ACCESS_LOG", "on"),
            ("TRUST_PROXY_HOPS", "true"),
            ("TRUST_PROXY_HOPS", "11"),
            ("TRUST_PROXY_HOPS", "-1"),
            ("MESSAGEBOX_METRICS_ADDR", "9464"),
            ("MESSAGEBOX_METRICS_ADDR", "127.0.0.1"),
            ("MESSAGEBOX_METRICS_ADDR", "127.0.0.1:99999"),
        ] {
            assert_eq!(cfg(&[(var, bad)]).unwrap_err().var, var, "{var}={bad}");
        }
        assert_eq!(cfg(&[("BSV_NETWORK", "ttn")]).unwrap().network, "ttn");
        assert_eq!(cfg(&[]).unwrap().network, "mainnet");
    }
}
