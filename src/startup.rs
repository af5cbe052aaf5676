//! Turning a [`Config`] into a running server: the server key (generated once in
//! development), the store (opened and migrated, with retries while the database comes
//! up), the shared [`App`] and the cores. Used by `main` and by the integration tests.
//! Owns the startup errors and their exit codes ([`StartupError::exit_code`]).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::{Api, LiveDelivery, NoLive, NoPush, Notifier};
use crate::auth::{PrivateKey, ServerAuth};
use crate::config::{Config, ConfigError, KeySource};
use crate::http::App;
use crate::live::driver::LiveHub;
use crate::live::LiveConfig;
use crate::metrics::Metrics;
use crate::outbound::UrlError;
use crate::payments::storage::WalletStorage;
use crate::payments::{HttpJsonWallet, NoWallet, PaymentAcceptor};
use crate::push::{Fcm, FcmConfigError};
use crate::server::{ParserLimits, Running};
use crate::store::{self, ErrorCode, Store, StoreError, StoreOptions};

/// Why `messagebox` stops instead of serving. The text is the line printed after
/// `messagebox: `; [`exit_code`](StartupError::exit_code) tells operators what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("configuration error: {0}")]
    Config(#[source] ConfigError),
    #[error("configuration error: SERVER_PRIVATE_KEY: {0}")]
    Key(#[source] KeyFileError),
    /// `database` is the database as [`describe`](crate::config::Database::describe) names it.
    #[error("cannot open the database ({database}): {}", tidy(.source))]
    Database { database: String, source: StoreError },
    #[error("migration failed: {}", tidy(.0))]
    Migrate(#[source] StoreError),
    #[error("configuration error: {0}")]
    Parts(#[source] PartsError),
    #[error("cannot listen on {bind}:{port}: {source}")]
    Listen { bind: IpAddr, port: u16, source: std::io::Error },
    #[error("cannot listen for metrics on {addr} (MESSAGEBOX_METRICS_ADDR): {source}")]
    MetricsListen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot install the SIGTERM/SIGINT handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl StartupError {
    /// 2 for a configuration the operator must fix, 1 for a runtime failure (database,
    /// network) that may pass on a retry.
    pub fn exit_code(&self) -> u8 {
        match self {
            StartupError::Config(_) | StartupError::Key(_) | StartupError::Parts(_) => 2,
            StartupError::Database { .. }
            | StartupError::Migrate(_)
            | StartupError::Listen { .. }
            | StartupError::MetricsListen { .. }
            | StartupError::Signals(_) => 1,
        }
    }
}

/// The development key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{}: not a valid private key (64 hex digits)", .path.display())]
    Invalid { path: PathBuf },
    #[error("cannot write the development key to {}: {source}", .path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
}

/// An optional subsystem is configured in a way that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum PartsError {
    #[error("PAYMENT_WALLET_URL: {0}")]
    PaymentWallet(#[source] UrlError),
    #[error("WALLET_STORAGE_URL: {0}")]
    WalletStorage(#[source] UrlError),
    /// The wallet storage signs as the server: its key must be readable here too.
    #[error("SERVER_PRIVATE_KEY: {0}")]
    Key(#[source] KeyFileError),
    #[error(transparent)]
    Push(#[from] FcmConfigError),
}

/// Loads the development key file, creating it (mode 0600) on first use.
pub fn resolve_key(source: &KeySource) -> Result<PrivateKey, KeyFileError> {
    match source {
        KeySource::Given(k) => Ok(*k),
        KeySource::File(path) => load_or_create_key(path),
    }
}

fn load_or_create_key(path: &Path) -> Result<PrivateKey, KeyFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_hex(text.trim()).map_err(|_| KeyFileError::Invalid { path: path.to_path_buf() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = PrivateKey::random();
            write_private(path, &format!("{}\n", key.to_hex()))
                .map_err(|source| KeyFileError::Write { path: path.to_path_buf(), source })?;
            tracing::warn!(
                file = %path.display(),
                identity = %key.public_key(),
                "SERVER_PRIVATE_KEY is not set: generated a development key (set SERVER_PRIVATE_KEY in production)"
            );
            Ok(key)
        }
        Err(source) => Err(KeyFileError::Read { path: path.to_path_buf(), source }),
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(text.as_bytes())
}

/// Whether retrying cannot help: a bad URL or schema, wrong credentials, no such database,
/// a host name that does not exist. Everything else (refused connections, timeouts, a DNS
/// server that is not answering yet) may pass while a database container starts.
fn is_permanent(e: &StoreError) -> bool {
    // Access denied (1044, 1045, 1698) and unknown database (1049).
    const PERMANENT_MYSQL: [u16; 4] = [1044, 1045, 1049, 1698];
    // getaddrinfo: EAI_NONAME (glibc, BSD) and EAI_NODATA; EAI_AGAIN ("Temporary failure in
    // name resolution") stays transient. The resolver's error has no number of its own.
    const NO_SUCH_HOST: [&str; 3] =
        ["Name or service not known", "nodename nor servname provided", "No address associated with hostname"];
    match e {
        StoreError::Config(_) | StoreError::Schema(_) => true,
        StoreError::Database(d) => match d.code {
            Some(ErrorCode::Mysql(n)) => PERMANENT_MYSQL.contains(&n),
            _ => NO_SUCH_HOST.iter().any(|p| d.message.contains(p)),
        },
        StoreError::Unavailable(_) => false,
    }
}

/// A store error as one readable line: mysql_async nests its I/O errors, each level adding
/// `Input/output error: `, which is said once.
fn tidy(e: &StoreError) -> String {
    const IO: &str = "Input/output error: ";
    let mut text = e.to_string();
    while let Some(at) = text.find(IO) {
        let after = at + IO.len();
        if !text[after..].starts_with(IO) {
            break;
        }
        text.replace_range(after..after + IO.len(), "");
    }
    text
}

/// Opens and migrates the store, retrying for up to `patience` while the database is not
/// reachable (containers often start the server before the database); a permanent error
/// (see [`is_permanent`]) ends the attempt at once.
pub async fn open_store(config: &Config, patience: Duration) -> Result<Store, StoreError> {
    let options = StoreOptions {
        pool_size: config.db_pool,
        cores: config.threads,
        timeouts: config.resources.database,
        retention_days: config.resources.retention.days,
        quotas: crate::store::quota::QuotaLimits::from_resources(&config.resources),
        ..StoreOptions::default()
    };
    let url = config.database.url();
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = async {
            let s = store::open(&url, &options).await?;
            let report = s.migrate().await?;
            Ok::<_, StoreError>((s, report))
        };
        match attempt.await {
            Ok((s, report)) => {
                if report.adopted_existing {
                    tracing::info!("database created by the original server adopted");
                }
                if !report.applied.is_empty() {
                    tracing::info!(steps = ?report.applied, "migrations applied");
                }
                return Ok(s);
            }
            Err(e) if is_permanent(&e) => return Err(e),
            Err(e) if start.elapsed() + delay > patience => return Err(e),
            Err(e) => {
                tracing::warn!(error = %tidy(&e), retry_in_ms = delay.as_millis() as u64, "database not ready");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Asks the server on the configured port for `GET /health` and checks for a 200, all
/// within `timeout` (`messagebox healthcheck`, for container health checks). A wildcard
/// bind address is probed on loopback.
pub fn healthcheck(config: &Config, timeout: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    if config.port == 0 {
        return Err("the port is 0 (chosen at start-up), nothing to probe".into());
    }
    let ip = match config.bind {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, config.port);
    let deadline = std::time::Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(std::time::Instant::now()).max(Duration::from_millis(1));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_write_timeout(Some(left())).map_err(|e| e.to_string())?;
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| format!("{addr}: {e}"))?;
    // The status line is all that matters; read until it is complete.
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        stream.set_read_timeout(Some(left())).map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("{addr}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    match line.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!("{addr}: GET /health answered {line:?}")),
    }
}

/// The optional subsystems, replaceable by tests.
pub struct Parts {
    pub payments: Arc<dyn PaymentAcceptor>,
    pub push: Arc<dyn Notifier>,
    pub live: Arc<dyn LiveDelivery>,
    /// On when `MESSAGEBOX_METRICS_ADDR` is set.
    pub metrics: Arc<Metrics>,
}

impl Parts {
    /// Payments and push as configured. Errors name the variable at fault.
    pub fn from_config(config: &Config, store: &Store) -> Result<Parts, PartsError> {
        let metrics = Metrics::new(config.observability.metrics_addr.is_some());
        // An operator who sets PAYMENT_WALLET_URL chose that wallet; otherwise the storage,
        // as the original (its default URL when none is set); `WALLET_STORAGE_URL=none`: none.
        let payments: Arc<dyn PaymentAcceptor> = match (&config.payment_wallet_url, &config.wallet_storage_url) {
            (Some(url), _) => {
                Arc::new(HttpJsonWallet::new(url, "http://messagebox.server").map_err(PartsError::PaymentWallet)?)
            }
            (None, Some(url)) => {
                let key = resolve_key(&config.key).map_err(PartsError::Key)?;
                Arc::new(
                    WalletStorage::start(key, url, config.testnet, config.wallet_storage_timeout)
                        .map_err(PartsError::WalletStorage)?,
                )
            }
            (None, None) => Arc::new(NoWallet),
        };
        let push: Arc<dyn Notifier> = if config.firebase.enabled {
            Arc::new(Fcm::from_config(&config.firebase, store.clone(), metrics.push())?)
        } else {
            Arc::new(NoPush)
        };
        Ok(Parts { payments, push, live: Arc::new(NoLive), metrics })
    }
}

/// Builds the shared application state.
pub fn app(config: &Config, key: PrivateKey, store: Store, parts: Parts) -> Arc<App> {
    let auth = ServerAuth::new(key, config.sessions.clone());
    // A fleet's sessions are valid on every node (`fleet::sessions`).
    let auth = Arc::new(if config.fleet.is_some() { auth.with_fleet_sessions() } else { auth });
    let fleet = config
        .fleet
        .clone()
        .map(|f| Arc::new(crate::fleet::Fleet::new(f).expect("REDIS_URL was checked by the configuration")));
    let mut live_config = LiveConfig::from_limits(&config.resources.websocket);
    // In a fleet every sid names this node, so the others can forward its requests here.
    live_config.engine.sid_node = fleet.as_ref().and_then(|f| crate::fleet::forward::node_id_bytes(f.node_id()));
    let forward = fleet.as_ref().filter(|_| config.enable_websockets).map(|f| {
        let nodes = crate::fleet::nodes::Nodes::new(f.clone(), Default::default());
        Arc::new(crate::fleet::forward::Forwarder::new(nodes, &key, &live_config.engine))
    });
    let mut edge = crate::http::edge::Edge::new(&config.resources.http);
    if let Some(f) = &fleet {
        let limits =
            crate::fleet::limits::FleetLimits::new(f.client().clone(), &config.resources.http, &config.sessions);
        edge = edge.with_fleet(limits);
    }
    let hub = config.enable_websockets.then(|| {
        LiveHub::new(auth.clone(), store.clone(), live_config, config.threads).with_message_limits(&config.limits)
    });
    let live: Arc<dyn LiveDelivery> = match &hub {
        Some(h) => h.clone(),
        None => parts.live,
    };
    let broker = fleet.clone().map(crate::fleet::broker::Broker::new);
    if let Some(b) = &broker {
        // Before anything is served: cached permissions wait for the fee channel.
        b.follow_fees(store.fee_cache().clone());
    }
    if let (Some(b), Some(h)) = (&broker, &hub) {
        h.fanout().attach(b.clone());
    }
    let api = Api {
        store,
        payments: parts.payments,
        payment_checks: crate::payments::check::PaymentChecker::new(key),
        push: parts.push,
        live,
        limits: config.limits.clone(),
    };
    let openapi = serde_json::to_vec(&crate::http::docs::openapi(&config.routing_prefix)).expect("serialises");
    Arc::new(App {
        auth,
        limits: crate::http::HeaderLimits::default(),
        api,
        routing_prefix: config.routing_prefix.clone(),
        http: config.resources.http.clone(),
        edge,
        live: hub,
        openapi: openapi.into(),
        health: crate::http::health_body(&config.network, config.enable_websockets),
        observability: config.observability.clone(),
        metrics: parts.metrics,
        fleet,
        forward,
        broker,
    })
}

/// Starts the cores on the configured address, and the metrics listener when configured.
pub fn start(config: &Config, app: Arc<App>) -> Result<Running, StartupError> {
    let addr = SocketAddr::new(config.bind, config.port);
    let metrics = match config.observability.metrics_addr {
        Some(m) => Some(crate::metrics::bind(m).map_err(|source| StartupError::MetricsListen { addr: m, source })?),
        None => None,
    };
    let listen = |source| StartupError::Listen { bind: config.bind, port: config.port, source };
    let mut running =
        crate::server::start(app.clone(), addr, config.threads, ParserLimits::default()).map_err(listen)?;
    if let Some(fleet) = &app.fleet {
        fleet.set_listening(running.addr);
        tracing::info!(node_id = fleet.node_id(), node_url = fleet.node_url(), "fleet mode (REDIS_URL)");
    }
    if let Some(forward) = &app.forward {
        // Registered (a bounded wait) before start-up is reported done.
        if let Some(registry) = forward.nodes().start(running.shutdown_signal()).map_err(listen)? {
            // Shutdown waits for it to delete this node's registration.
            running.join_on_shutdown(registry);
        }
    }
    if let Some(broker) = &app.broker {
        broker.start(app.live.clone(), running.shutdown_signal()).map_err(listen)?;
    }
    if let Some(listener) = metrics {
        running.metrics_addr = Some(listener.local_addr().map_err(listen)?);
        crate::metrics::serve(listener, app.clone(), running.shutdown_signal()).map_err(listen)?;
    }
    start_retention_sweeper(app.api.store.clone(), config.resources.retention.clone(), running.shutdown_signal())
        .map_err(listen)?;
    // Expired sessions are swept in the background; lookups also drop them lazily.
    let mut stop = running.shutdown_signal();
    std::thread::Builder::new()
        .name("messagebox-sweeper".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("timer runtime");
            rt.block_on(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {
                            let n = app.auth.sessions().sweep();
                            if n > 0 {
                                tracing::debug!(expired = n, "sessions swept");
                            }
                        }
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
            });
        })
        .map_err(listen)?;
    Ok(running)
}

/// The retention sweeper: deletes at most `cleanup_batch` expired messages once at start-up
/// and then every `cleanup_interval` (never again when the interval is `-1`), as the newer
/// upstream's maintenance does; a backlog drains over several intervals, and expired rows
/// left meanwhile are invisible to listing. One log line per sweep that deleted something.
fn start_retention_sweeper(
    store: Store,
    retention: crate::limits::RetentionLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("messagebox-retention".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!(error = %e, "cannot start the retention sweeper"),
        };
        rt.block_on(async move {
            loop {
                match store.delete_expired(store::now(), retention.cleanup_batch).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "retention: removed expired messages"),
                    // An outage is logged by the store; the next sweep tries again.
                    Err(e) => tracing::debug!(error = %e, "retention: sweeping expired messages failed"),
                }
                let Some(every) = retention.cleanup_interval else { break };
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        });
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DatabaseError;

    #[test]
    fn exit_codes_and_texts() {
        let config = StartupError::Config(ConfigError { var: "PORT", message: "not a port: eighty".into() });
        assert_eq!(
            (config.exit_code(), config.to_string().as_str()),
            (2, "configuration error: PORT: not a port: eighty")
        );
        let key = StartupError::Key(KeyFileError::Invalid { path: "/k/dev.key".into() });
        assert_eq!(
            (key.exit_code(), key.to_string().as_str()),
            (2, "configuration error: SERVER_PRIVATE_KEY: /k/dev.key: not a valid private key (64 hex digits)")
        );
        let parts = StartupError::Parts(PartsError::Push(FcmConfigError::NoProjectId));
        assert_eq!(
            (parts.exit_code(), parts.to_string().as_str()),
            (2, "configuration error: FIREBASE_PROJECT_ID: required when ENABLE_FIREBASE=true")
        );
        let listen = StartupError::Listen {
            bind: "::1".parse().unwrap(),
            port: 8080,
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(listen.exit_code(), 1);
        assert!(listen.to_string().starts_with("cannot listen on ::1:8080: "), "{listen}");
        assert!(std::error::Error::source(&listen).is_some());
    }

    #[test]
    fn permanent_database_errors() {
        let db =
            |m: &str| StoreError::Database(DatabaseError { code: Some(ErrorCode::Disconnected), message: m.into() });
        let server = |n: u16, m: &str| {
            StoreError::Database(DatabaseError { code: Some(ErrorCode::Mysql(n)), message: m.into() })
        };
        assert!(is_permanent(&server(
            1045,
            "Server error: `ERROR 1045 (28000): Access denied for user 'u'@'h' (using password: YES)'"
        )));
        assert!(is_permanent(&server(1049, "Server error: `ERROR 1049 (42000): Unknown database 'x''")));
        assert!(!is_permanent(&server(1040, "Server error: `ERROR 1040 (08004): Too many connections'")));
        assert!(is_permanent(&db(
            "Input/output error: Input/output error: failed to lookup address information: Name or service not known"
        )));
        assert!(!is_permanent(&db("Input/output error: Input/output error: Connection refused (os error 111)")));
        assert!(!is_permanent(&db("failed to lookup address information: Temporary failure in name resolution")));
        assert!(!is_permanent(&StoreError::Unavailable("gone".into())));
        assert!(is_permanent(&StoreError::Config("bad URL".into())));
        let e = db("Input/output error: Input/output error: Connection refused (os error 111)");
        assert_eq!(tidy(&e), "database error: Input/output error: Connection refused (os error 111)");
        let e = StartupError::Database { database: "mysql://…@h:1/db".into(), source: e };
        assert_eq!(e.to_string().matches("Input/output error").count(), 1, "{e}");
    }

    #[test]
    fn key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.key");
        let created = resolve_key(&KeySource::File(path.clone())).unwrap();
        assert_eq!(resolve_key(&KeySource::File(path.clone())).unwrap(), created);
        std::fs::write(&path, "nothex").unwrap();
        let e = resolve_key(&KeySource::File(path.clone())).unwrap_err();
        assert!(matches!(&e, KeyFileError::Invalid { path: p } if *p == path));
        let e = resolve_key(&KeySource::File(dir.path().join("no/such/dir/dev.key"))).unwrap_err();
        assert!(matches!(e, KeyFileError::Write { .. }), "{e:?}");
    }
}
