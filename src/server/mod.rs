//! The thread-per-core runtime: one OS thread per core, each a tokio `current_thread`
//! runtime with its own `SO_REUSEPORT` listener serving HTTP/1.x with hyper, the guard that
//! keeps a second process off a port already served, and the graceful shutdown that stops
//! accepting, lets in-flight requests finish and reports when every core is done. Each core
//! thread is marked as one for the store (`store::percore`), which then runs the core's
//! database work on it.
//! Connection limits (caps at accept, idle deadlines, requests per socket) are in [`conn`].

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::http::App;

pub mod conn;

use conn::{AcceptErrors, Activity, Connections, Tracked};

/// Hard bounds of the HTTP parser (the JSON-answered limits of `http::HeaderLimits` sit
/// below these). The time allowed for a head is `MESSAGE_BOX_HEADERS_TIMEOUT_MS`
/// (`App::http`).
#[derive(Debug, Clone)]
pub struct ParserLimits {
    /// Most header fields the parser accepts.
    pub max_headers: usize,
    /// Largest request head (request line + headers) the parser buffers, in bytes.
    pub max_head_bytes: usize,
    /// How long shutdown waits for in-flight connections.
    pub drain_timeout: Duration,
}

impl Default for ParserLimits {
    fn default() -> Self {
        ParserLimits { max_headers: 256, max_head_bytes: 256 * 1024, drain_timeout: Duration::from_secs(30) }
    }
}

/// A running server: its address and the means to stop it.
pub struct Running {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when it is (set by `startup::start`).
    pub metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Held while serving (see [`PortLock`]).
    _lock: Option<PortLock>,
}

impl Running {
    /// Stops accepting, waits for in-flight requests (up to the drain timeout) and joins
    /// every core thread. Blocking.
    pub fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// A receiver that flips to `true` when shutdown begins (for other subsystems).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// A thread of another subsystem that [`Running::shutdown`] waits for too (it must end
    /// soon after [`Running::shutdown_signal`] flips).
    pub fn join_on_shutdown(&mut self, thread: std::thread::JoinHandle<()>) {
        self.threads.push(thread);
    }
}

fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Keeps a second process off an address this process serves.
///
/// `SO_REUSEPORT`, which lets our cores share one port, also lets any other process of the
/// same user bind it: two servers would then split the connections at random. Two checks
/// close that door before the cores bind:
/// * a lock named after the port in the abstract Unix-socket namespace (Linux). Binding
///   it is atomic, it belongs to the network namespace exactly as TCP ports do, and the
///   kernel releases it when the process dies (no stale lock file after a crash). It makes
///   two `messagebox` processes starting at the same instant exclude each other;
/// * a probe bind of the address without `SO_REUSEPORT`, which fails while any socket —
///   any program, any user — is bound there (`SO_REUSEADDR` only waives `TIME_WAIT`).
///
/// What remains is a foreign `SO_REUSEPORT` program binding between the probe and our
/// bind, a window of microseconds at start-up. Port 0 needs neither check.
struct PortLock {
    #[cfg(target_os = "linux")]
    _socket: std::os::unix::net::UnixListener,
}

impl PortLock {
    fn acquire(addr: SocketAddr) -> std::io::Result<PortLock> {
        #[cfg(target_os = "linux")]
        let lock = {
            use std::os::linux::net::SocketAddrExt;
            // By port, not address: `0.0.0.0:p`, `[::]:p` and `127.0.0.1:p` overlap, and with
            // SO_REUSEPORT the kernel would let them all bind.
            let name = format!("messagebox-listen-port-{}", addr.port());
            let unix = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            match std::os::unix::net::UnixListener::bind_addr(&unix) {
                Ok(s) => PortLock { _socket: s },
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::AddrInUse,
                        "address already in use (another messagebox process serves it)",
                    ))
                }
                Err(e) => return Err(e),
            }
        };
        #[cfg(not(target_os = "linux"))]
        let lock = PortLock {};
        check_free(addr)?;
        Ok(lock)
    }
}

/// Fails with [`std::io::ErrorKind::AddrInUse`] when another process is bound to `addr`
/// (a bind without `SO_REUSEPORT`; see [`PortLock`]). [`start`] checks again under its lock;
/// calling this first lets a server say so before it opens its database.
pub fn check_free(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "address already in use (another process listens on it)",
        )),
        Err(e) => Err(e),
    }
}

/// Binds `threads` listeners on one port (port 0 picks a free one) and starts a core on each.
/// A port another process already serves is refused with [`std::io::ErrorKind::AddrInUse`].
pub fn start(app: Arc<App>, addr: SocketAddr, threads: usize, limits: ParserLimits) -> std::io::Result<Running> {
    let lock = if addr.port() == 0 { None } else { Some(PortLock::acquire(addr)?) };
    let first = listener(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(listener(addr)?);
    }
    let (tx, rx) = watch::channel(false);
    let mut handles = Vec::with_capacity(threads);
    // Shared by every core: the caps and the descriptor episodes are per process.
    let shared = Shared { conns: Connections::new(&app.http), accept_errors: Arc::new(AcceptErrors::default()) };
    for (core, l) in listeners.into_iter().enumerate() {
        let (app, rx, limits, shared) = (app.clone(), rx.clone(), limits.clone(), shared.clone());
        let handle = std::thread::Builder::new().name(format!("messagebox-core-{core}")).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(core, error = %e, "cannot build the core runtime");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                // The stores run this core's database work here while it serves (`store::percore`).
                let databases = crate::store::percore::enter();
                serve(core, app, l, rx, limits, shared).await;
                databases.close().await;
            });
        })?;
        handles.push(handle);
    }
    Ok(Running { addr, metrics_addr: None, shutdown: tx, threads: handles, _lock: lock })
}

/// What the cores share.
#[derive(Clone)]
struct Shared {
    conns: Arc<Connections>,
    accept_errors: Arc<AcceptErrors>,
}

async fn serve(
    core: usize,
    app: Arc<App>,
    listener: std::net::TcpListener,
    shutdown: watch::Receiver<bool>,
    limits: ParserLimits,
    shared: Shared,
) {
    let mut stop = shutdown.clone();
    // This core's metrics shard (empty when metrics are off).
    let metrics = app.metrics.core();
    let live = app.live.as_ref().and_then(|hub| hub.start_core(core, shutdown.clone(), metrics.clone()));
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(core, error = %e, "cannot register the listener");
            return;
        }
    };
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .timer(TokioTimer::new())
        .header_read_timeout(app.http.headers_timeout);
    let builder = Rc::new(builder);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.accept_errors.accepted();
                    // Over a cap: the socket is closed at once (dropped), before any read.
                    let Some(slot) = shared.conns.open(peer.ip()) else { continue };
                    let _ = stream.set_nodelay(true);
                    let (app, live, builder, mut shutdown) = (app.clone(), live.clone(), builder.clone(), shutdown.clone());
                    let metrics = metrics.clone();
                    let activity = Activity::new();
                    let io = Tracked::new(stream, activity.clone(), slot);
                    connections.spawn_local(async move {
                        let max_requests = app.http.max_requests_per_socket;
                        let watched = activity.clone();
                        let app2 = app.clone();
                        let svc = service_fn(move |req| {
                            let (n, in_flight) = activity.request();
                            let answer = crate::http::handle(app.clone(), live.clone(), metrics.clone(), peer, req);
                            async move {
                                let mut r = answer.await?;
                                // `MESSAGE_BOX_MAX_REQUESTS_PER_SOCKET`: the last one closes it.
                                if n >= max_requests {
                                    r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                                }
                                drop(in_flight);
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        });
                        let conn = builder.serve_connection(TokioIo::new(io), svc).with_upgrades();
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            // Idle past its deadline: dropping the connection closes the socket.
                            _ = watched.idle(&app2.http) => return,
                            _ = shutdown.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
                        }
                        let _ = conn.await;
                    });
                }
                Err(e) => {
                    shared.accept_errors.failed(core, &e);
                    // Back off instead of spinning while descriptors are short.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    drop(listener);
    if let Some(live) = &live {
        // Live clients are told to go (they reconnect to another instance or after restart).
        live.stop(Duration::from_secs(5)).await;
    }
    let open = connections.len();
    if open > 0 {
        tracing::info!(core, open, "draining connections");
    }
    let drained =
        tokio::time::timeout(limits.drain_timeout, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(core, left = connections.len(), "drain timeout; closing the remaining connections");
        connections.abort_all();
    }
}
