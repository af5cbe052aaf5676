//! A round-robin HTTP proxy for fleet tests, as a load balancer without affinity: each
//! HTTP/1.1 request goes to the next node in turn (on a new upstream connection,
//! `Connection: close`; the client's connection is kept alive), a WebSocket upgrade becomes a
//! tunnel to the next node, and a node that refuses connections (dead) is skipped, as nginx's
//! `proxy_next_upstream error` does. It can also refuse every upgrade (400), as a balancer
//! that does not pass WebSockets, so Engine.IO clients stay on polling.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct RoundRobin {
    pub addr: SocketAddr,
    served: Arc<Vec<AtomicUsize>>,
    upgrades: Arc<AtomicUsize>,
}

impl RoundRobin {
    pub fn start(nodes: Vec<SocketAddr>) -> RoundRobin {
        Self::start_with(nodes, true)
    }

    /// `upgrades`: whether WebSocket upgrades are tunnelled (else answered 400).
    pub fn start_with(nodes: Vec<SocketAddr>, upgrades: bool) -> RoundRobin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served: Arc<Vec<AtomicUsize>> = Arc::new(nodes.iter().map(|_| AtomicUsize::new(0)).collect());
        let tunnels = Arc::new(AtomicUsize::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let (counts, tunnels2) = (served.clone(), tunnels.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (nodes, next, counts, tunnels) = (nodes.clone(), next.clone(), counts.clone(), tunnels2.clone());
                std::thread::spawn(move || {
                    let _ = relay(conn, &nodes, &next, &counts, upgrades.then_some(&*tunnels));
                });
            }
        });
        RoundRobin { addr, served, upgrades: tunnels }
    }

    /// Requests (and tunnels) each node got.
    pub fn served(&self) -> Vec<usize> {
        self.served.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    /// WebSocket tunnels opened.
    pub fn tunnels(&self) -> usize {
        self.upgrades.load(Ordering::Relaxed)
    }
}

/// The next node that accepts a connection (each tried once), and its index.
fn connect_next(nodes: &[SocketAddr], next: &AtomicUsize) -> std::io::Result<(usize, TcpStream)> {
    let mut last = None;
    for _ in 0..nodes.len() {
        let i = next.fetch_add(1, Ordering::Relaxed) % nodes.len();
        match TcpStream::connect_timeout(&nodes[i], Duration::from_secs(2)) {
            Ok(s) => return Ok((i, s)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap())
}

fn relay(
    client: TcpStream,
    nodes: &[SocketAddr],
    next: &AtomicUsize,
    counts: &[AtomicUsize],
    tunnels: Option<&AtomicUsize>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            head.push(line);
        }
        let header = |name: &str| {
            head.iter().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        if header("transfer-encoding").is_some() {
            client.write_all(b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
            return Ok(());
        }
        if header("upgrade").is_some() {
            let Some(tunnels) = tunnels else {
                client.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
                return Ok(());
            };
            let (i, mut up) = connect_next(nodes, next)?;
            counts[i].fetch_add(1, Ordering::Relaxed);
            tunnels.fetch_add(1, Ordering::Relaxed);
            up.write_all(head.concat().as_bytes())?;
            up.write_all(b"\r\n")?;
            up.write_all(reader.buffer())?;
            let (mut from, mut to) = (up.try_clone()?, client.try_clone()?);
            let back = std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(std::net::Shutdown::Write);
            });
            let _ = std::io::copy(&mut client, &mut up);
            let _ = up.shutdown(std::net::Shutdown::Write);
            let _ = back.join();
            return Ok(());
        }
        let mut body = vec![0; header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0)];
        reader.read_exact(&mut body)?;
        let (i, mut up) = connect_next(nodes, next)?;
        counts[i].fetch_add(1, Ordering::Relaxed);
        let mut req = Vec::new();
        for l in &head {
            let name = l.split(':').next().unwrap_or_default().trim();
            if !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("keep-alive") {
                req.extend_from_slice(l.as_bytes());
            }
        }
        req.extend_from_slice(b"connection: close\r\n\r\n");
        req.extend_from_slice(&body);
        up.write_all(&req)?;
        let mut resp = Vec::new();
        up.read_to_end(&mut resp)?;
        // The client's connection stays open: the upstream's `connection: close` is dropped
        // (its answer has a Content-Length).
        let split = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |i| i + 4);
        let (head, body) = resp.split_at(split);
        let head = String::from_utf8_lossy(head);
        let kept: String =
            head.split_inclusive("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
        client.write_all(kept.as_bytes())?;
        client.write_all(body)?;
    }
}
