//! A fleet on loopback for the tests: nodes that share one MySQL database, one Redis and one
//! server key ([`Node`], in-process, with its [`App`] at hand for the broker's counters),
//! a live client that keeps reading in the background ([`Listener`]: WebSocket transport,
//! BRC-103 inside, as `@bsv/message-box-client` is on the wire), and direct questions to
//! Redis ([`numsub`], [`live_channels`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use messagebox::auth::{AuthMessage, ClientIdentity, PrivateKey};
use messagebox::config::Config;
use messagebox::fleet::delivery::Channels;
use messagebox::http::App;
use messagebox::live::authsocket::{decode_envelope, envelope, AUTH_EVENT};
use messagebox::live::socketio;
use messagebox::server::Running;
use messagebox::startup::{self, Parts};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// One node of a test fleet, in this process.
pub struct Node {
    pub addr: SocketAddr,
    pub app: Arc<App>,
    running: Option<Running>,
}

impl Node {
    /// A node with WebSockets on, on `db_url` and `redis_url`, signing with `key`.
    pub async fn start(db_url: &str, redis_url: &str, key: &PrivateKey) -> Node {
        let map: HashMap<String, String> = [
            ("MESSAGEBOX_PORT", "0"),
            ("MESSAGEBOX_BIND", "127.0.0.1"),
            ("MESSAGEBOX_THREADS", "2"),
            ("LOGGING_ENABLED", "false"),
            ("ENABLE_WEBSOCKETS", "true"),
            ("SERVER_PRIVATE_KEY", &key.to_hex()),
            ("DATABASE_URL", db_url),
            ("REDIS_URL", redis_url),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut config = Config::from_map(&map).expect("test config");
        // Every test client comes from 127.0.0.1 (see `process::LIFTED_RATES`).
        config.resources.http.pre_auth_rate.max = u64::MAX / 2;
        config.resources.http.authenticated_rate.max = u64::MAX / 2;
        let store = startup::open_store(&config, Duration::from_secs(10)).await.expect("store opens");
        let parts = Parts::from_config(&config, &store).expect("parts");
        let app = startup::app(&config, *key, store, parts);
        let running = startup::start(&config, app.clone()).expect("node starts");
        Node { addr: running.addr, app, running: Some(running) }
    }

    /// This node's broker link.
    pub fn broker(&self) -> &messagebox::fleet::broker::Broker {
        self.app.broker.as_deref().expect("a fleet node has a broker link")
    }

    /// Waits (bounded) until this node's link to the broker is up, or down.
    pub async fn until_broker(&self, up: bool, within: Duration) {
        until(&format!("broker {}", if up { "up" } else { "down" }), within, || self.broker().is_up() == up).await;
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

/// Polls `cond` every 20 ms; panics naming `what` after `within`.
pub async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The live channel of `identity` (Redis database 0).
pub fn channel(identity: &str) -> String {
    Channels::new(0).of(identity)
}

fn redis_conn(redis_url: &str) -> redis::Connection {
    let client = redis::Client::open(redis_url).expect("a Redis URL");
    client.get_connection_with_timeout(Duration::from_secs(2)).expect("Redis answers")
}

/// `PUBSUB NUMSUB <channel>`: how many connections (nodes) subscribe to it.
pub fn numsub(redis_url: &str, channel: &str) -> i64 {
    let v: Vec<(String, i64)> =
        redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query(&mut redis_conn(redis_url)).expect("PUBSUB NUMSUB");
    v.first().map_or(0, |(_, n)| *n)
}

/// `PUBSUB CHANNELS messagebox:live:*`, sorted.
pub fn live_channels(redis_url: &str) -> Vec<String> {
    let mut v: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("messagebox:live:*")
        .query(&mut redis_conn(redis_url))
        .expect("PUBSUB CHANNELS");
    v.sort();
    v
}

/// A live client on one node: WebSocket transport, BRC-103 handshake, `authenticated`. A
/// task reads in the background (answering pings, verifying every event), so it keeps
/// receiving while the test does other things.
pub struct Listener {
    pub me: ClientIdentity,
    session: messagebox::auth::ClientSession,
    out: mpsc::UnboundedSender<Message>,
    events: mpsc::UnboundedReceiver<(String, Option<Value>)>,
}

/// `4` + a Socket.IO `authMessage` event.
fn auth_frame(msg: &AuthMessage) -> String {
    format!("4{}", socketio::event(AUTH_EVENT, &msg.to_json()))
}

/// The BRC-103 message of an `authMessage` frame.
fn auth_message(frame: &str) -> Option<AuthMessage> {
    let v: Vec<Value> = serde_json::from_str(frame.strip_prefix("42")?).ok()?;
    (v.first()? == AUTH_EVENT).then(|| AuthMessage::from_value(v[1].clone()).ok())?
}

impl Listener {
    /// Connects to `addr` as a new identity and authenticates.
    pub async fn connect(addr: SocketAddr) -> Listener {
        Self::connect_as(addr, ClientIdentity::random()).await
    }

    pub async fn connect_as(addr: SocketAddr, me: ClientIdentity) -> Listener {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let (ws, _) = tokio_tungstenite::client_async(url, tcp).await.expect("the WebSocket handshake");
        let (mut sink, mut stream) = ws.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
        let (frames_tx, mut frames) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(m) = out_rx.recv().await {
                let close = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || close {
                    break;
                }
            }
        });
        let pong = out.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                match m {
                    Message::Text(t) if t.as_str() == "2" => {
                        let _ = pong.send(Message::text("3"));
                    }
                    Message::Text(t) if frames_tx.send(t.to_string()).is_err() => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        });
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(10), frames.recv())
                .await
                .expect("a frame within 10 s")
                .expect("open")
        };
        assert!(next().await.starts_with("0{"), "the open packet");
        out.send(Message::text("40")).unwrap();
        assert!(next().await.starts_with("40{"), "the CONNECT reply");
        let (req, pending) = me.start_handshake();
        out.send(Message::text(auth_frame(&req))).unwrap();
        let resp = loop {
            if let Some(m) = auth_message(&next().await) {
                break m;
            }
        };
        let session = pending.finish(&me, &resp).expect("the handshake completes");
        // Verified events from here on.
        let (events_tx, events) = mpsc::unbounded_channel();
        let verifier = session.clone();
        tokio::spawn(async move {
            while let Some(frame) = frames.recv().await {
                let Some(msg) = auth_message(&frame) else { continue };
                let Ok(payload) = verifier.verify_general(&msg) else { continue };
                if let Some(ev) = decode_envelope(&payload) {
                    if events_tx.send((ev.name, ev.data)).is_err() {
                        break;
                    }
                }
            }
        });
        let mut l = Listener { me, session, out, events };
        let id = l.id();
        l.emit("authenticated", json!({ "identityKey": id })).await;
        assert_eq!(l.recv().await, ("authenticationSuccess".into(), Some(json!({"status":"success"}))));
        l
    }

    pub fn id(&self) -> String {
        self.me.identity_hex().to_string()
    }

    pub async fn emit(&mut self, event: &str, data: Value) {
        let payload = envelope(event, Some(&data.to_string())).into_bytes();
        let msg = self.session.sign_general(&self.me, payload).unwrap();
        self.out.send(Message::text(auth_frame(&msg))).expect("the socket is open");
    }

    /// The next event, within 10 s.
    pub async fn recv(&mut self) -> (String, Option<Value>) {
        self.recv_within(Duration::from_secs(10)).await.expect("an event within 10 s")
    }

    /// The next event, or `None` when none comes within `d`.
    pub async fn recv_within(&mut self, d: Duration) -> Option<(String, Option<Value>)> {
        tokio::time::timeout(d, self.events.recv()).await.ok().map(|e| e.expect("the socket stays open"))
    }

    /// Joins `<me>-<box>` and waits for `joinedRoom`.
    pub async fn join(&mut self, message_box: &str) {
        let room = format!("{}-{message_box}", self.id());
        self.emit("joinRoom", json!(room)).await;
        assert_eq!(self.recv().await, ("joinedRoom".into(), Some(json!({ "roomId": room }))));
    }

    /// Sends over the socket to `recipient`'s `message_box`; returns the ack's data.
    pub async fn send(&mut self, recipient: &str, message_box: &str, id: &str, body: &str) -> Value {
        let room = format!("{recipient}-{message_box}");
        let message = json!({ "roomId": room, "message": { "messageId": id, "recipient": recipient, "body": body } });
        self.emit("sendMessage", message).await;
        let (name, data) = self.recv().await;
        assert_eq!(name, format!("sendMessageAck-{room}"), "{data:?}");
        data.unwrap_or(Value::Null)
    }

    /// Waits for the delivery `sendMessage-<me>-<box>` and returns its data.
    pub async fn delivery(&mut self, message_box: &str, within: Duration) -> Option<Value> {
        let want = format!("sendMessage-{}-{message_box}", self.id());
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (name, data) = self.recv_within(left).await?;
            if name == want {
                return data;
            }
        }
    }
}

impl Drop for Listener {
    /// Closes the WebSocket (the server then unbinds the connection).
    fn drop(&mut self) {
        let _ = self.out.send(Message::Close(None));
    }
}

/// Whether node and the interop packages (`npm ci --prefix tests/interop`) are there; when
/// not, a loud skip, or a panic under `MESSAGEBOX_REQUIRE_ALL=1`.
pub fn js_clients_available() -> bool {
    let dir = interop_dir();
    let node = std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let packages = ["@bsv/sdk", "@bsv/message-box-client", "@bsv/authsocket-client"]
        .iter()
        .all(|p| dir.join("node_modules").join(p).join("package.json").is_file());
    if node && packages {
        return true;
    }
    let what = "node and `npm ci --prefix tests/interop`";
    assert!(std::env::var(super::REQUIRE_ALL_ENV).as_deref() != Ok("1"), "the JS clients need {what}");
    eprintln!("SKIPPED: the JS clients need {what}");
    false
}

fn interop_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("interop")
}

/// Runs `tests/interop/<script>` with `args` (the output contract of `tests/interop/lib.mjs`),
/// answering each `@@CONTROL <request>` with `control(request)`; panics with its output
/// unless it exits 0 with every check passed, within `within`. Returns the checks passed.
/// Blocking: call it from `spawn_blocking` in async tests.
pub fn run_node_script(
    script: &str,
    args: &[&str],
    within: Duration,
    mut control: impl FnMut(&str) -> Result<(), String>,
) -> usize {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let mut child = Command::new("node")
        .current_dir(interop_dir())
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let suite = script.trim_end_matches(".mjs");
    let deadline = Instant::now() + within;
    let mut output = Vec::new();
    let mut summary = None;
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(request) = line.strip_prefix("@@CONTROL ") {
            let answer = match control(request) {
                Ok(()) => format!("@@CONTROL {request} done\n"),
                Err(e) => format!("@@CONTROL {request} failed {e}\n"),
            };
            let _ = stdin.write_all(answer.as_bytes());
        } else if let Some(counts) = line.strip_prefix(&format!("{suite}: ")) {
            summary = counts
                .split_once(", ")
                .and_then(|(p, f)| Some((p.strip_suffix(" passed")?.parse::<usize>().ok()?, f == "0 failed")));
        }
        output.push(line);
    }
    let _ = child.kill();
    let status = child.wait().expect("node exits");
    let output = output.join("\n");
    println!("----- {script} -----\n{output}\n----- end of {script} -----");
    match summary {
        Some((passed, true)) if status.success() && passed > 0 => passed,
        _ => panic!("{script} failed (exit {status:?}):\n{output}"),
    }
}
