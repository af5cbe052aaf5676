//! Configuration from the environment (and a `.env` file), with the original server's
//! variable names and defaults, plus our own `MESSAGEBOX_*` tuning knobs. Every bad value
//! is reported as one line naming the variable.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::api::Limits;
use crate::auth::{PrivateKey, SessionConfig};

/// One configuration error: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

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
    ("TRUST_PROXY_HOPS", "0..10; the client IP of the access log is taken this many proxies from the right of X-Forwarded-For (unset: the TCP peer)"),
    ("DATABASE_URL", "mysql://user:pass@host:port/db or sqlite://path; wins over KNEX_DB_CONNECTION"),
    ("KNEX_DB_CONNECTION", "the original's knex JSON, e.g. {\"host\":\"…\",\"port\":3306,\"user\":\"…\",\"password\":\"…\",\"database\":\"…\"}"),
    ("KNEX_DB_CLIENT", "mysql2 (default) | mysql | better-sqlite3 | sqlite3 (then KNEX_DB_CONNECTION is {\"filename\":…})"),
    ("MIGRATE_KEY", "accepted for compatibility; unused (the original removed /migrate)"),
    ("BSV_NETWORK", "mainnet (default) | testnet"),
    ("WALLET_STORAGE_URL", "accepted for compatibility; remote wallet storage is not used (see PAYMENT_WALLET_URL)"),
    ("PAYMENT_WALLET_URL", "http(s) URL of a BRC-100 JSON wallet (root key = SERVER_PRIVATE_KEY) that accepts delivery-fee payments; without it paid deliveries are refused"),
    ("HOSTING_DOMAIN", "accepted for compatibility; unused (the original advertises nothing)"),
    ("ENABLE_FIREBASE", "true enables FCM push for the notifications box"),
    ("FIREBASE_PROJECT_ID", "required when ENABLE_FIREBASE=true"),
    ("FIREBASE_SERVICE_ACCOUNT_JSON", "service-account JSON (private_key, client_email, project_id)"),
    ("FIREBASE_SERVICE_ACCOUNT_PATH", "path of a service-account JSON file (else GOOGLE_APPLICATION_CREDENTIALS, else the GCP metadata server)"),
    ("FIREBASE_FCM_ENDPOINT", "FCM base URL (default https://fcm.googleapis.com)"),
    ("MESSAGEBOX_PORT", "listen port; overrides the NODE_ENV port rule (0 = any free port)"),
    ("MESSAGEBOX_BIND", "listen address (default 0.0.0.0)"),
    ("MESSAGEBOX_THREADS", "worker threads, one runtime and listener each (default: available cores)"),
    ("MESSAGEBOX_MAX_BODY", "largest request body in bytes (default 16777216)"),
    ("MESSAGEBOX_SESSION_TTL", "seconds an idle BRC-103 session lives (default 3600)"),
    ("MESSAGEBOX_MAX_SESSIONS", "most live BRC-103 sessions (default 262144)"),
    ("MESSAGEBOX_UNUSED_SESSION_TTL", "seconds a session lives before its first request (default 120)"),
    ("MESSAGEBOX_MAX_REQUESTS_PER_SESSION", "requests before a session is retired and the client re-handshakes (default 4096)"),
    ("MESSAGEBOX_MAX_RECIPIENTS", "most recipients per /sendMessage or quote (default 1000)"),
    ("MESSAGEBOX_LIST_LIMIT", "default /listMessages page size (default 1000)"),
    ("MESSAGEBOX_LIST_MAX", "largest /listMessages page a request may ask for (default 10000)"),
    ("MESSAGEBOX_DB_POOL", "MySQL connections (default 8)"),
    ("MESSAGEBOX_KEY_FILE", "where the development key is kept (default: beside the database)"),
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
                    .ok_or_else(|| err("TRUST_PROXY_HOPS", "must be an integer from 0 to 10"))?,
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
        let firebase = Firebase {
            enabled: get("ENABLE_FIREBASE") == Some("true"),
            project_id: get("FIREBASE_PROJECT_ID").map(str::to_string),
            service_account_json: get("FIREBASE_SERVICE_ACCOUNT_JSON").map(str::to_string),
            service_account_path: get("FIREBASE_SERVICE_ACCOUNT_PATH").map(PathBuf::from),
            fcm_endpoint: get("FIREBASE_FCM_ENDPOINT").map(str::to_string),
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
        let max_body = num("MESSAGEBOX_MAX_BODY", 16 << 20, 1024, 1 << 30)? as usize;
        // Until the MESSAGE_BOX_* parsing lands, our older variable sets the body cap.
        let mut resources = crate::limits::ResourceLimits::default();
        if get("MESSAGEBOX_MAX_BODY").is_some() {
            resources.http.max_body_bytes = max_body as u64;
        }
        let sessions = SessionConfig {
            idle_ttl: Duration::from_secs(num("MESSAGEBOX_SESSION_TTL", 3600, 1, 30 * 86_400)?),
            max_sessions: num("MESSAGEBOX_MAX_SESSIONS", 262_144, 1, 100_000_000)? as usize,
            max_requests_per_session: num("MESSAGEBOX_MAX_REQUESTS_PER_SESSION", 4096, 1, 10_000_000)? as usize,
            unused_ttl: Duration::from_secs(num("MESSAGEBOX_UNUSED_SESSION_TTL", 120, 1, 86_400)?),
        };
        let list_max = num("MESSAGEBOX_LIST_MAX", 10_000, 1, 1_000_000)? as u32;
        let list_default = num("MESSAGEBOX_LIST_LIMIT", 1000.min(list_max as u64), 1, list_max as u64)? as u32;
        let limits = Limits {
            max_recipients: num("MESSAGEBOX_MAX_RECIPIENTS", 1000, 1, 100_000)? as usize,
            list_default,
            list_max,
            ..Limits::default()
        };
        let db_pool = num("MESSAGEBOX_DB_POOL", 8, 1, 1000)? as usize;
        if observability.metrics_addr.is_some_and(|m| port != 0 && m.port() == port) {
            return Err(err("MESSAGEBOX_METRICS_ADDR", format!("port {port} is the server's own port")));
        }
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
        assert_eq!(cfg(&[("MESSAGEBOX_MAX_BODY", "12")]).unwrap_err().var, "MESSAGEBOX_MAX_BODY");
        assert_eq!(cfg(&[("ENABLE_FIREBASE", "true")]).unwrap_err().var, "FIREBASE_PROJECT_ID");
        assert_eq!(cfg(&[("MESSAGEBOX_THREADS", "0")]).unwrap_err().var, "MESSAGEBOX_THREADS");
        assert_eq!(cfg(&[("PAYMENT_WALLET_URL", "ftp://x")]).unwrap_err().var, "PAYMENT_WALLET_URL");
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
