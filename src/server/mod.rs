//! The thread-per-core runtime: one OS thread per core, each a tokio `current_thread`
//! runtime with its own `SO_REUSEPORT` listener serving HTTP/1.x with hyper, and the
//! graceful shutdown that stops accepting, lets in-flight requests finish and reports when
//! every core is done.

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

/// Hard bounds of the HTTP parser (the JSON-answered limits of `http::HeaderLimits` sit
/// below these).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Most header fields the parser accepts.
    pub max_headers: usize,
    /// Largest request head (request line + headers) the parser buffers, in bytes.
    pub max_head_bytes: usize,
    /// Time allowed to receive a request head.
    pub header_timeout: Duration,
    /// How long shutdown waits for in-flight connections.
    pub drain_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_headers: 256,
            max_head_bytes: 256 * 1024,
            header_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A running server: its address and the means to stop it.
pub struct Running {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
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

/// Binds `threads` listeners on one port (port 0 picks a free one) and starts a core on each.
pub fn start(app: Arc<App>, addr: SocketAddr, threads: usize, limits: HttpLimits) -> std::io::Result<Running> {
    let first = listener(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(listener(addr)?);
    }
    let (tx, rx) = watch::channel(false);
    let mut handles = Vec::with_capacity(threads);
    for (core, l) in listeners.into_iter().enumerate() {
        let (app, rx, limits) = (app.clone(), rx.clone(), limits.clone());
        let handle = std::thread::Builder::new().name(format!("messagebox-core-{core}")).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(core, error = %e, "cannot build the core runtime");
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, serve(core, app, l, rx, limits));
        })?;
        handles.push(handle);
    }
    Ok(Running { addr, shutdown: tx, threads: handles })
}

async fn serve(
    core: usize,
    app: Arc<App>,
    listener: std::net::TcpListener,
    shutdown: watch::Receiver<bool>,
    limits: HttpLimits,
) {
    let mut stop = shutdown.clone();
    let live = app.live.as_ref().and_then(|hub| hub.start_core(core, shutdown.clone()));
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
        .header_read_timeout(limits.header_timeout);
    let builder = Rc::new(builder);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (app, live, builder, mut shutdown) = (app.clone(), live.clone(), builder.clone(), shutdown.clone());
                    connections.spawn_local(async move {
                        let svc = service_fn(move |req| crate::http::handle(app.clone(), live.clone(), req));
                        let conn = builder.serve_connection(TokioIo::new(stream), svc).with_upgrades();
                        tokio::pin!(conn);
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            _ = shutdown.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
                        }
                        let _ = conn.await;
                    });
                }
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    tracing::warn!(core, error = %e, "accept failed");
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
