//! A live client for the tests, as `@bsv/message-box-client` is on the wire: WebSocket
//! transport, the BRC-103 handshake inside `authMessage` events, `authenticated` ([`Listener`],
//! reading in the background so it keeps receiving while a test does other things), and the
//! frame helpers ([`auth_frame`], [`auth_message`]); and a server with the live channel on
//! ([`start_live_server`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use messagebox::auth::{AuthMessage, ClientIdentity, PrivateKey};
use messagebox::config::Config;
use messagebox::http::App;
use messagebox::live::authsocket::{decode_envelope, envelope, AUTH_EVENT};
use messagebox::live::socketio;
use messagebox::server::Running;
use messagebox::startup::{self, Parts};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A live client on one node: WebSocket transport, BRC-103 handshake, `authenticated`. A
/// task reads in the background (answering pings, verifying every event), so it keeps
/// receiving while the test does other things.
pub struct Listener {
    pub me: ClientIdentity,
    session: messagebox::auth::ClientSession,
    out: mpsc::UnboundedSender<Message>,
    events: mpsc::UnboundedReceiver<(String, Option<Value>)>,
}

/// A server in this process with WebSockets on, on `db_url`, signing with `key`: `extra`
/// environment over the defaults, then its configuration adjusted by `tweak`.
pub async fn start_live_server(
    db_url: &str,
    key: &PrivateKey,
    extra: &[(&str, &str)],
    tweak: impl FnOnce(&mut Config),
) -> (Running, Arc<App>) {
    let key_hex = key.to_hex();
    let mut map: HashMap<String, String> = [
        ("MESSAGEBOX_PORT", "0"),
        ("MESSAGEBOX_BIND", "127.0.0.1"),
        ("MESSAGEBOX_THREADS", "2"),
        ("LOGGING_ENABLED", "false"),
        ("ENABLE_WEBSOCKETS", "true"),
        ("WALLET_STORAGE_URL", "none"),
        ("SERVER_PRIVATE_KEY", &key_hex),
        ("DATABASE_URL", db_url),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    map.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut config = Config::from_map(&map).expect("test config");
    tweak(&mut config);
    let store = startup::open_store(&config, Duration::from_secs(10)).await.expect("store opens");
    let parts = Parts::from_config(&config, &store).expect("parts");
    let app = startup::app(&config, *key, store, parts);
    let running = startup::start(&config, app.clone()).expect("server starts");
    (running, app)
}

/// `4` + a Socket.IO `authMessage` event.
pub fn auth_frame(msg: &AuthMessage) -> String {
    format!("4{}", socketio::event(AUTH_EVENT, &msg.to_json()))
}

/// The BRC-103 message of an `authMessage` frame.
pub fn auth_message(frame: &str) -> Option<AuthMessage> {
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
                    let data = ev.data_value();
                    if events_tx.send((ev.name, data)).is_err() {
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
