//! Connection-level limits: the global and per-IP caps checked at accept
//! (`MESSAGE_BOX_MAX_CONNECTIONS`, `max_connections_per_ip`), the idle deadlines of a
//! connection (`headers_timeout` before its first request, `keep_alive_timeout` between
//! requests, `socket_timeout` while a request is in flight and no byte moves), and the
//! once-per-episode log of accepts failing for lack of descriptors.
//!
//! A connection's slot is held by its socket ([`Tracked`] owns the [`Slot`]) until the socket
//! closes or the live channel adopts it after a WebSocket upgrade; from then on the live
//! limits (`MESSAGE_BOX_WEBSOCKET_MAX_CONNECTIONS`, per identity) count it. (The newer
//! upstream's `server.maxConnections` counts WebSockets too; carrying the slot into the live
//! driver's session would do the same.)

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::ratelimit::IpKey;
use crate::limits::HttpLimits;

const SHARDS: usize = 16;

/// Open connections of the process, in total and per client address (IPv6 by `/56`).
pub struct Connections {
    total: AtomicU64,
    max: Option<u64>,
    max_per_ip: Option<u64>,
    per_ip: Box<[Mutex<HashMap<IpKey, u64>>]>,
}

impl Connections {
    pub fn new(limits: &HttpLimits) -> Arc<Connections> {
        Arc::new(Connections {
            total: AtomicU64::new(0),
            max: limits.max_connections,
            max_per_ip: limits.max_connections_per_ip,
            per_ip: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        })
    }

    fn shard(&self, key: &IpKey) -> &Mutex<HashMap<IpKey, u64>> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        // A fixed hasher is enough to spread shards; the maps themselves are randomised.
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        &self.per_ip[h as usize % SHARDS]
    }

    /// A slot for a new connection from `ip`, or `None` when a cap is reached (the caller
    /// closes the socket at once).
    pub fn open(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Slot> {
        let before = self.total.fetch_add(1, Ordering::AcqRel);
        if self.max.is_some_and(|m| before >= m) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let key = IpKey::new(Some(ip));
        if self.max_per_ip.is_some() {
            let mut map = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(key).or_insert(0);
            if self.max_per_ip.is_some_and(|m| *n >= m) {
                if *n == 0 {
                    map.remove(&key);
                }
                drop(map);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            *n += 1;
        }
        Some(Slot { conns: self.clone(), key })
    }

    pub fn open_count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// One open connection's place in [`Connections`]; freed on drop.
pub struct Slot {
    conns: Arc<Connections>,
    key: IpKey,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.conns.max_per_ip.is_some() {
            let mut map = self.conns.shard(&self.key).lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.key);
                }
            }
        }
        self.conns.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the idle watchdog of a connection needs: when a byte last moved, whether a request
/// is in flight, how many requests the connection has carried.
pub struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicU32,
    requests: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        self.last_ms.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Marks a request as started; returns its number on this connection (1-based) and the
    /// guard that marks it finished.
    pub fn request(self: &Arc<Self>) -> (u64, InFlight) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        (n, InFlight(self.clone()))
    }

    /// Resolves when the connection has been idle past its deadline (see the module doc).
    pub async fn idle(&self, limits: &HttpLimits) {
        loop {
            let allowed = if self.in_flight.load(Ordering::Relaxed) > 0 {
                limits.socket_timeout
            } else if self.requests.load(Ordering::Relaxed) == 0 {
                limits.headers_timeout
            } else {
                limits.keep_alive_timeout
            };
            let deadline = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + allowed;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A request in flight on a connection.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The socket of a connection: records activity and holds the connection's [`Slot`].
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    slot: Slot,
}

impl<S> Tracked<S> {
    pub fn new(inner: S, activity: Arc<Activity>, slot: Slot) -> Self {
        Tracked { inner, activity, slot }
    }

    /// The socket and its slot (the live channel adopts upgraded sockets).
    pub fn into_parts(self) -> (S, Slot) {
        (self.inner, self.slot)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accept failures for lack of descriptors, logged once per episode across every core: a
/// warning when the first accept fails, an info line with the count when one succeeds again.
#[derive(Default)]
pub struct AcceptErrors {
    failing: AtomicBool,
    failed: AtomicU64,
}

impl AcceptErrors {
    /// Whether `e` means "out of descriptors" (EMFILE, ENFILE), the condition an episode covers.
    pub fn is_exhaustion(e: &io::Error) -> bool {
        matches!(e.raw_os_error(), Some(23 | 24))
    }

    pub fn failed(&self, core: usize, e: &io::Error) {
        if !Self::is_exhaustion(e) {
            // Per-connection failures (a peer that reset before accept): nothing to act on.
            tracing::debug!(core, error = %e, "accept failed");
            return;
        }
        self.failed.fetch_add(1, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(core, error = %e, "out of file descriptors: new connections are refused until some close");
        }
    }

    pub fn accepted(&self) {
        if self.failing.load(Ordering::Relaxed) && self.failing.swap(false, Ordering::AcqRel) {
            let failed = self.failed.swap(0, Ordering::Relaxed);
            tracing::info!(
                failed_accepts = failed,
                "accepting connections again after running out of file descriptors"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::ResourceLimits;

    #[test]
    fn caps_total_and_per_ip() {
        let mut l = ResourceLimits::default().http;
        l.max_connections = Some(3);
        l.max_connections_per_ip = Some(2);
        let c = Connections::new(&l);
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = c.open(a).unwrap();
        let _s2 = c.open(a).unwrap();
        assert!(c.open(a).is_none(), "per-IP cap");
        let _s3 = c.open(b).unwrap();
        assert!(c.open("10.0.0.3".parse().unwrap()).is_none(), "global cap");
        drop(s1);
        assert!(c.open(b).is_some());
        assert_eq!(c.open_count(), 2, "the slot just taken was dropped");
        let v6 = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        drop(c.open(b));
        let mut l2 = l.clone();
        l2.max_connections = None;
        let c2 = Connections::new(&l2);
        let _x = c2.open(v6("2001:db8:0:100::1")).unwrap();
        let _y = c2.open(v6("2001:db8:0:1ff::2")).unwrap();
        assert!(c2.open(v6("2001:db8:0:1aa::3")).is_none(), "IPv6 counted by /56");
    }

    #[test]
    fn exhaustion_errors() {
        assert!(AcceptErrors::is_exhaustion(&io::Error::from_raw_os_error(24)));
        assert!(AcceptErrors::is_exhaustion(&io::Error::from_raw_os_error(23)));
        assert!(!AcceptErrors::is_exhaustion(&io::Error::from_raw_os_error(103)));
    }
}
