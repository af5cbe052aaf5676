//! `messagebox`: serve (default), migrate, keygen, healthcheck, fees (list, set).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use messagebox::admin::FeesCommand;
use messagebox::auth::PrivateKey;
use messagebox::config::{Config, LogFormat, VARIABLES};
use messagebox::startup::{self, StartupError};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "messagebox", version, about = "MessageBox server: BRC-103 authenticated store-and-forward messaging")]
#[command(after_help = env_help())]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (the default).
    Serve,
    /// Create or adopt the database schema, then exit.
    Migrate,
    /// Print a new private key (hex) and its identity key.
    Keygen,
    /// Exit 0 when the server on the configured port answers GET /health with 200, else 1
    /// (for container health checks; no curl needed).
    Healthcheck,
    /// Show or change the delivery fee the server charges per message box (`server_fees`).
    ///
    /// Uses the database `serve` uses (the same configuration); a running server charges a
    /// new fee on its next send or quote, without a restart.
    Fees {
        #[command(subcommand)]
        action: FeesAction,
    },
}

#[derive(Subcommand)]
enum FeesAction {
    /// Print every box's delivery fee, sorted by box, one per line under a header.
    List,
    /// Set a box's delivery fee (adding the box if it has none) and print what changed.
    Set {
        /// The message box, e.g. notifications (at most 255 characters).
        #[arg(value_name = "BOX")]
        message_box: String,
        /// The fee in satoshis, 0 to 2147483647.
        // Hyphen values reach our own check, which answers `-1` in one line instead of
        // clap's "unexpected argument" usage text.
        #[arg(allow_hyphen_values = true)]
        satoshis: String,
    },
}

fn env_help() -> String {
    let mut s = String::from("Configuration is read from the environment and a .env file in the working directory:\n");
    for (name, meaning) in VARIABLES {
        s.push_str(&format!("  {name:<48} {meaning}\n"));
    }
    s.push_str("  RUST_LOG                                         tracing filter, e.g. messagebox=debug; wins over LOG_LEVEL\n");
    s.push_str("\nExit codes: 0 success, 1 runtime failure, 2 bad configuration or arguments.");
    s
}

/// Where the log goes and what it lets through unless `RUST_LOG` says otherwise.
#[derive(Clone, Copy)]
enum LogTo {
    /// The server's log: stdout, at `LOG_LEVEL`.
    Stdout,
    /// A command whose stdout is its answer (`fees`): stderr, errors only, so the answer
    /// stays greppable and a failure stays the one line the command prints.
    StderrErrors,
}

/// `LOG_FORMAT=json` as one JSON object per line, else text with ANSI colours only when the
/// log's stream is a terminal (never into files or pipes) and `NO_COLOR` is unset.
fn init_logging(config: &Config, to: LogTo) {
    use std::io::IsTerminal;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = if config.logging {
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| match to {
            LogTo::Stdout => {
                // The access log is at info: asking for it keeps it whatever LOG_LEVEL says.
                let access = if config.observability.access_log { ",messagebox::access=info" } else { "" };
                format!("{}{access}", config.observability.log_level).into()
            }
            LogTo::StderrErrors => "error".into(),
        })
    } else {
        "off".into()
    };
    let (writer, terminal) = match to {
        LogTo::Stdout => (BoxMakeWriter::new(std::io::stdout), std::io::stdout().is_terminal()),
        LogTo::StderrErrors => (BoxMakeWriter::new(std::io::stderr), std::io::stderr().is_terminal()),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let _ = match config.observability.log_format {
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
        LogFormat::Text => {
            let colour = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_target(false).with_ansi(colour).try_init()
        }
    };
}

/// Prints the one line an operator reads and picks the exit code.
fn fail(e: StartupError) -> ExitCode {
    eprintln!("messagebox: {e}");
    ExitCode::from(e.exit_code())
}

fn config() -> Result<Config, ExitCode> {
    Config::from_env().map_err(|e| fail(StartupError::Config(e)))
}

fn main() -> ExitCode {
    // Before any thread exists (setting the environment is only sound then).
    messagebox::store::mysql::bound_driver_buffers();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Keygen => {
            use std::io::Write;
            let key = PrivateKey::random();
            // A closed pipe (`keygen | head -1`) is not an error worth a panic.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "SERVER_PRIVATE_KEY={}", key.to_hex());
            let _ = writeln!(out, "identity key: {}", key.public_key());
            ExitCode::SUCCESS
        }
        Command::Migrate => {
            let config = match config() {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&config, LogTo::Stdout);
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            match rt.block_on(startup::open_store(&config, Duration::from_secs(30))) {
                Ok(store) => {
                    let _ = rt.block_on(store.flush());
                    tracing::info!(database = %config.database.describe(), "schema is up to date");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(StartupError::Migrate(e)),
            }
        }
        Command::Serve => {
            let config = match config() {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(&config, LogTo::Stdout);
            serve(config)
        }
        Command::Fees { action } => fees(action),
        Command::Healthcheck => {
            // Exit 2 means "reserved" to Docker's HEALTHCHECK: a bad configuration is unhealthy (1).
            let config = match Config::from_env() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("messagebox: healthcheck failed: {}", StartupError::Config(e));
                    return ExitCode::from(1);
                }
            };
            match startup::healthcheck(&config, Duration::from_secs(3)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("messagebox: healthcheck failed: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `messagebox fees list|set`: exit 2 for bad arguments or configuration, 1 when the
/// database fails, each with one line on stderr.
fn fees(action: FeesAction) -> ExitCode {
    // Arguments first: a typo is reported without touching the database.
    let command = match action {
        FeesAction::List => FeesCommand::List,
        FeesAction::Set { message_box, satoshis } => match FeesCommand::set(&message_box, &satoshis) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("messagebox: fees set: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let config = match config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(&config, LogTo::StderrErrors);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // Opened as `migrate` opens it (schema up to date, permanent errors at once), but an
    // operator at a prompt waits for a database that is still starting 10 s, not 30.
    let store = match rt.block_on(startup::open_store(&config, Duration::from_secs(10))) {
        Ok(s) => s,
        Err(source) => return fail(StartupError::Database { database: config.database.describe(), source }),
    };
    match rt.block_on(command.run(&store)) {
        Ok(text) => {
            use std::io::Write;
            // A closed pipe (`fees list | head -1`) is not an error worth a panic.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("messagebox: fees {}: {e}", command.name());
            ExitCode::from(1)
        }
    }
}

fn serve(config: Config) -> ExitCode {
    let key = match startup::resolve_key(&config.key) {
        Ok(k) => k,
        Err(e) => return fail(StartupError::Key(e)),
    };
    // A busy port is reported before the database is touched (checked again when binding).
    if let Err(source) = messagebox::server::check_free(std::net::SocketAddr::new(config.bind, config.port)) {
        return fail(StartupError::Listen { bind: config.bind, port: config.port, source });
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let store = match rt.block_on(startup::open_store(&config, Duration::from_secs(60))) {
        Ok(s) => s,
        Err(source) => return fail(StartupError::Database { database: config.database.describe(), source }),
    };
    let parts = match startup::Parts::from_config(&config, &store) {
        Ok(p) => p,
        Err(e) => return fail(StartupError::Parts(e)),
    };
    let payments = parts.payments.describe();
    let mut signals = match rt.block_on(async { StopSignals::install() }) {
        Ok(s) => s,
        Err(e) => return fail(StartupError::Signals(e)),
    };
    let app = startup::app(&config, key, store.clone(), parts);
    let running = match startup::start(&config, app) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        addr = %running.addr,
        threads = config.threads,
        identity = %key.public_key(),
        database = %config.database.describe(),
        payments = %payments,
        node_env = %config.node_env,
        websockets = if config.enable_websockets { "on" } else { "off" },
        metrics = %running.metrics_addr.map_or_else(|| "off".to_string(), |a| format!("http://{a}/metrics")),
        "messagebox listening"
    );
    rt.block_on(signals.recv());
    tracing::info!("shutting down: no new connections, finishing requests");
    running.shutdown();
    if let Err(e) = rt.block_on(store.flush()) {
        tracing::error!(error = %e, "flushing the store failed");
        return ExitCode::from(1);
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// SIGTERM and SIGINT, listened for from before the server listens: a signal that arrives
/// while the cores start (an orchestrator stopping a container at once) is not lost.
struct StopSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers; call inside the runtime.
    fn install() -> std::io::Result<StopSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(StopSignals { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
        }
        #[cfg(not(unix))]
        Ok(StopSignals {})
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
