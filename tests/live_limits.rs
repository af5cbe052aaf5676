//! The live channel's resource limits against a real server on loopback (issue 9, D5 and the
//! WebSocket limits of `ts-next-ops.md` §1.2, §6): sockets that never authenticate are
//! closed, the process's session cap answers `503`, and a real client that authenticates is
//! served throughout.
//!
//! The server runs in-process with `ENABLE_WEBSOCKETS=true` and its `config.resources`
//! adjusted (a short authentication deadline, a small session cap) so each test takes
//! seconds.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use messagebox::auth::{ClientIdentity, ClientSession, PrivateKey};
use messagebox::config::Config;
use messagebox::live::authsocket::{decode_envelope, envelope};
use messagebox::server::Running;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use common::live::{auth_frame, auth_message};
use common::{Kind, TestDb};

/// A server with WebSockets on, its resource limits adjusted by `tweak`.
async fn start(db: &TestDb, tweak: impl FnOnce(&mut Config)) -> Running {
    common::live::start_live_server(&db.url, &PrivateKey::random(), &[], tweak).await.0
}

/// One HTTP/1.1 request on its own connection: status, headers (lower-case names), body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tcp.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_lowercase(), body.to_string())
}

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket-only Engine.IO session (`transport=websocket`), after its open packet.
async fn ws_open(addr: SocketAddr) -> Ws {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.expect("the WebSocket handshake");
    let open = next_text(&mut ws).await.expect("the open packet");
    assert!(open.starts_with("0{"), "{open}");
    ws
}

/// The next text frame, answering Engine.IO pings; `None` once the socket is closed.
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) if t.as_str() == "2" => {
                ws.send(Message::text("3")).await.ok()?;
            }
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A client as `@bsv/message-box-client` is on the wire: handshake, `authenticated`.
struct RealClient {
    ws: Ws,
    me: ClientIdentity,
    session: ClientSession,
}

impl RealClient {
    async fn connect(addr: SocketAddr) -> RealClient {
        let mut ws = ws_open(addr).await;
        ws.send(Message::text("40")).await.unwrap();
        assert!(next_text(&mut ws).await.unwrap().starts_with("40{"));
        let me = ClientIdentity::random();
        let (req, pending) = me.start_handshake();
        ws.send(Message::text(auth_frame(&req))).await.unwrap();
        let resp = auth_message(&next_text(&mut ws).await.unwrap()).expect("the initialResponse");
        let session = pending.finish(&me, &resp).unwrap();
        let mut c = RealClient { ws, me, session };
        c.emit("authenticated", json!({ "identityKey": c.id() })).await;
        assert_eq!(c.recv().await, ("authenticationSuccess".into(), Some(json!({"status":"success"}))));
        c
    }

    fn id(&self) -> String {
        self.me.identity_hex().to_string()
    }

    async fn emit(&mut self, event: &str, data: Value) {
        let payload = envelope(event, Some(&data.to_string())).into_bytes();
        let msg = self.session.sign_general(&self.me, payload).unwrap();
        self.ws.send(Message::text(auth_frame(&msg))).await.unwrap();
    }

    async fn recv(&mut self) -> (String, Option<Value>) {
        let read = async {
            loop {
                let frame = next_text(&mut self.ws).await.expect("the socket stays open");
                if let Some(msg) = auth_message(&frame) {
                    let ev = decode_envelope(&self.session.verify_general(&msg).unwrap()).unwrap();
                    let data = ev.data_value();
                    return (ev.name, data);
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read).await.expect("an event within 10 s")
    }

    /// Sends to its own inbox: acknowledged after it is stored, then delivered back.
    async fn served(&mut self, id: &str) {
        let room = format!("{}-inbox", self.id());
        let message = json!({ "roomId": room, "message": { "messageId": id, "recipient": self.id(), "body": "hi" } });
        self.emit("sendMessage", message).await;
        let mut got = [self.recv().await, self.recv().await];
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got[0],
            (format!("sendMessage-{room}"), Some(json!({"sender": self.id(), "messageId": id, "body": "hi"})))
        );
        assert_eq!(got[1], (format!("sendMessageAck-{room}"), Some(json!({"status":"success","messageId": id}))));
    }
}

/// D5: live sessions that never authenticate are closed at the deadline
/// (`server_handshake_grace` 3 s + `auth_timeout`, here 1 s), over WebSocket (they CONNECT and
/// answer pings but ignore the server-initiated BRC-103 handshake) and over polling (they
/// CONNECT and keep polling); a real client that authenticated before them stays and is
/// served after. Before: every one of them was still open at the end of the test (kept for
/// as long as it answered pings); now all are closed within 4–6 s.
fn unauthenticated_sockets_are_closed(kind: Kind) {
    let Some(db) = TestDb::new(kind) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = start(&db, |c| c.resources.websocket.auth_timeout = Duration::from_secs(1)).await;
        let addr = server.addr;
        let window = Duration::from_secs(4);
        let mut real = RealClient::connect(addr).await;

        const N: usize = 20;
        let start = Instant::now();
        let mut idlers = Vec::new();
        for _ in 0..N {
            // WebSocket: `40`, then pings answered, the server's handshake ignored.
            idlers.push(tokio::spawn(async move {
                let mut ws = ws_open(addr).await;
                ws.send(Message::text("40")).await.unwrap();
                while next_text(&mut ws).await.is_some() {}
                start.elapsed()
            }));
            // Polling: `40`, then GETs until the session ends (`1`, or its sid unknown).
            idlers.push(tokio::spawn(async move {
                let (st, _, open) = http(addr, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
                assert_eq!(st, 200, "{open}");
                let sid = serde_json::from_str::<Value>(&open[1..]).unwrap()["sid"].as_str().unwrap().to_string();
                let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
                assert_eq!(http(addr, "POST", &path, "40").await.0, 200);
                loop {
                    let (st, _, body) = http(addr, "GET", &path, "").await;
                    if st != 200 || body.split('\x1e').any(|p| p == "1") {
                        return start.elapsed();
                    }
                }
            }));
        }
        let bound = window + Duration::from_secs(2);
        for idler in idlers {
            let closed = tokio::time::timeout(bound + Duration::from_secs(5), idler)
                .await
                .expect("an unauthenticated session was kept")
                .unwrap();
            assert!(closed <= bound, "closed after {closed:?}, bound {bound:?}");
            assert!(closed + Duration::from_millis(500) >= window, "closed early, after {closed:?}");
        }
        // The real client, connected for longer than the deadline, is still served.
        assert!(start.elapsed() >= window);
        real.served("after-idlers").await;
        server.shutdown();
    });
}

#[test]
fn unauthenticated_sockets_are_closed_sqlite() {
    unauthenticated_sockets_are_closed(Kind::SqliteFile);
}

#[test]
fn unauthenticated_sockets_are_closed_mysql() {
    unauthenticated_sockets_are_closed(Kind::Mysql);
}

/// `MESSAGE_BOX_WEBSOCKET_MAX_CONNECTIONS`: past the cap a new live session, polling or
/// WebSocket, is answered `503` `ERR_SERVER_BUSY` with `Retry-After: 1` (no session is made);
/// the sessions already open are served, and a closed one frees its place. Before: no cap.
fn live_sessions_are_capped(kind: Kind) {
    let Some(db) = TestDb::new(kind) else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let server = start(&db, |c| c.resources.websocket.max_connections = Some(2)).await;
        let addr = server.addr;
        let mut a = RealClient::connect(addr).await;
        let b = RealClient::connect(addr).await;
        let busy =
            json!({"status":"error","code":"ERR_SERVER_BUSY","description":"The service is temporarily at capacity."});
        let (st, head, body) = http(addr, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
        assert_eq!((st, serde_json::from_str::<Value>(&body).unwrap()), (503, busy.clone()));
        assert!(head.contains("retry-after: 1"), "{head}");
        let tcp = TcpStream::connect(addr).await.unwrap();
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let refused = tokio_tungstenite::client_async(url, tcp).await.expect_err("no 101 past the cap");
        assert!(refused.to_string().contains("503"), "{refused}");
        a.served("within-the-cap").await;

        // B leaves (`41`, then the socket closes): its place is free again.
        let mut ws = b.ws;
        ws.send(Message::text("41")).await.unwrap();
        ws.close(None).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (st, _, _) = http(addr, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
            if st == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "the place was not freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server.shutdown();
    });
}

#[test]
fn live_sessions_are_capped_sqlite() {
    live_sessions_are_capped(Kind::SqliteFile);
}

#[test]
fn live_sessions_are_capped_mysql() {
    live_sessions_are_capped(Kind::Mysql);
}
