//! The driver without sockets, in the spirit of quinn-proto's `Pair`: two real cores of one
//! [`LiveHub`] on one thread, an in-memory SQLite store, and clients that speak the protocol
//! over polling through the cores' session API (what the HTTP glue calls), with real
//! BRC-103 handshakes and signed events.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::core::LocalCore;
use super::{LiveCore, LiveHub};
use crate::auth::{PrivateKey, ServerAuth, SessionConfig};
use crate::live::engineio::{sid_core, ErrorCode, HttpReply};
use crate::live::events::Delivery;
use crate::live::testutil::JsClient;
use crate::live::LiveConfig;
use crate::metrics::Metrics;
use crate::store::{Store, StoreOptions};

/// Long enough for any step here; a hang fails instead of blocking the suite.
const STEP: Duration = Duration::from_secs(10);

struct Pair {
    hub: Arc<LiveHub>,
    metrics: Arc<Metrics>,
    cores: Vec<LiveCore>,
    store: Store,
    _shutdown: watch::Sender<bool>,
}

/// A client with one Engine.IO session (over polling).
struct Client {
    js: JsClient,
    sid: String,
}

impl Pair {
    /// Two cores; call inside a `LocalSet`.
    async fn new(seed: u64) -> Pair {
        Self::with_config(seed, LiveConfig::default()).await
    }

    async fn with_config(seed: u64, config: LiveConfig) -> Pair {
        let store = crate::store::open("sqlite::memory:", &StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        let auth = Arc::new(ServerAuth::new(PrivateKey::random(), SessionConfig::default()));
        let ids = rand::rngs::StdRng::seed_from_u64(seed);
        let hub = LiveHub::with_rng(auth, store.clone(), config, 2, ids);
        let (tx, rx) = watch::channel(false);
        let metrics = Metrics::new(true);
        let cores = (0..2).map(|i| hub.start_core(i, rx.clone(), metrics.core()).unwrap()).collect();
        assert!(hub.start_core(0, rx, metrics.core()).is_none(), "a core starts once");
        Pair { hub, metrics, cores, store, _shutdown: tx }
    }

    fn core(&self, i: usize) -> &Rc<LocalCore> {
        &self.cores[i].0
    }

    /// Opens a session on core `home`, connects `/`, handshakes and authenticates.
    async fn connect(&self, home: usize) -> Client {
        self.connect_as(home, JsClient::new()).await
    }

    /// Opens a session on core `home` and connects `/` (no handshake yet).
    async fn open(&self, home: usize, js: JsClient) -> Client {
        let open = self.core(home).open_polling(Instant::now());
        let v: Value = serde_json::from_str(open.body.strip_prefix('0').unwrap()).unwrap();
        let mut c = Client { js, sid: v["sid"].as_str().unwrap().to_string() };
        assert_eq!(sid_core(&c.sid), Some(home as u8));
        self.post(home, &c, &["40"]).await;
        self.get(home, &mut c).await;
        assert!(c.js.engine.pop().unwrap().starts_with(r#"40{"sid":""#));
        c
    }

    /// As [`Self::connect`], as the identity of `js`.
    async fn connect_as(&self, home: usize, js: JsClient) -> Client {
        let mut c = self.open(home, js).await;
        let hs = c.js.handshake();
        self.post(home, &c, &[&hs]).await;
        self.get(home, &mut c).await;
        assert_eq!(c.js.sessions.len(), 1);
        let id = c.js.id();
        self.emit(home, &c, "authenticated", json!({ "identityKey": id })).await;
        assert_eq!(self.recv(home, &mut c, 1).await[0].0, "authenticationSuccess");
        c
    }

    /// A POST of `packets` through core `via`.
    async fn post(&self, via: usize, c: &Client, packets: &[&str]) {
        let body = packets.join("\x1e");
        let reply = self.core(via).post(&c.sid, Some(body.len()), None, Bytes::from(body)).await;
        assert_eq!(reply, HttpReply::post_ok());
    }

    async fn emit(&self, via: usize, c: &Client, event: &str, data: Value) {
        let packet = c.js.emit(event, Some(data));
        self.post(via, c, &[&packet]).await;
    }

    /// One GET through core `via` (held until the session has something to send).
    async fn get(&self, via: usize, c: &mut Client) -> HttpReply {
        let reply = tokio::time::timeout(STEP, self.core(via).poll(&c.sid)).await.expect("the GET is answered");
        if reply.status == 200 {
            c.js.receive_payload(&reply.body);
        }
        reply
    }

    /// GETs until `n` events arrived; returns them.
    async fn recv(&self, via: usize, c: &mut Client, n: usize) -> Vec<(String, Option<Value>)> {
        while c.js.received.len() < n {
            let reply = self.get(via, c).await;
            assert_eq!(reply.status, 200, "{reply:?}");
        }
        c.js.take()
    }

    async fn send(&self, via: usize, from: &mut Client, to: &Client, room: &str, id: &str) {
        let message = json!({ "roomId": room, "message": { "messageId": id, "recipient": to.js.id(), "body": id } });
        self.emit(via, from, "sendMessage", message).await;
        let ack = self.recv(via, from, 1).await;
        assert_eq!(
            ack,
            vec![(format!("sendMessageAck-{room}"), Some(json!({ "status": "success", "messageId": id })))]
        );
    }

    async fn join(&self, via: usize, c: &mut Client, room: &str) {
        self.emit(via, c, "joinRoom", json!(room)).await;
        assert_eq!(self.recv(via, c, 1).await, vec![("joinedRoom".into(), Some(json!({ "roomId": room })))]);
    }

    /// Waits (bounded) until `f` holds; the cores run meanwhile.
    async fn until(&self, what: &str, f: impl Fn(&Pair) -> bool) {
        let deadline = Instant::now() + STEP;
        while !f(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn run(test: impl std::future::Future<Output = ()>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio::task::LocalSet::new().block_on(&rt, test);
}

#[test]
fn delivery_crosses_cores_and_is_stored() {
    run(async {
        let p = Pair::new(1).await;
        let mut a = p.connect(0).await;
        let mut b = p.connect(1).await;
        let inbox = format!("{}-inbox", a.js.id());
        p.join(0, &mut a, &inbox).await;
        assert_eq!(p.hub.registry().cores_of(&a.js.id()), vec![0]);
        assert_eq!(p.hub.registry().cores_of(&b.js.id()), vec![1]);

        // B (core 1) sends to A (core 0): stored, acked to B, delivered to A only.
        p.send(1, &mut b, &a, &inbox, "m1").await;
        let got = p.recv(0, &mut a, 1).await;
        assert_eq!(
            got,
            vec![(
                format!("sendMessage-{inbox}"),
                Some(json!({ "sender": b.js.id(), "messageId": "m1", "body": "m1" }))
            )]
        );
        let listed = p.store.list_messages(&a.js.id(), "inbox", 100, 0).await.unwrap();
        assert_eq!(listed.len(), 1);

        // HTTP `/sendMessage` delivers through the same seam.
        use crate::domain::{Delivery, IdentityKey, LiveDelivery};
        let recipient = IdentityKey::from_canonical(a.js.id());
        p.hub.deliver(Delivery::message(&recipient, "-inbox", "http-sender", "m2", "via http"));
        let got = p.recv(0, &mut a, 1).await;
        assert_eq!(got[0].1, Some(json!({ "sender": "http-sender", "messageId": "m2", "body": "via http" })));
        assert!(b.js.take().is_empty());

        // The cores counted it: two connections, two live handshakes, two deliveries to A.
        let text = p.metrics.render(&p.store.stats(), 0, None);
        for line in [
            "messagebox_live_connections 2",
            r#"messagebox_handshakes_total{transport="live"} 2"#,
            "messagebox_live_deliveries_total 2",
            "messagebox_messages_stored_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    });
}

#[test]
fn requests_are_handed_to_the_owning_core() {
    run(async {
        let p = Pair::new(2).await;
        let mut a = p.connect(0).await;
        // Every request of A's session through core 1 reaches its task on core 0.
        let own = format!("{}-own", a.js.id());
        p.join(1, &mut a, &own).await;
        let message = json!({ "roomId": own, "message": { "messageId": "self", "recipient": a.js.id(), "body": "x" } });
        p.emit(1, &a, "sendMessage", message).await;
        let got = p.recv(1, &mut a, 2).await;
        let names: Vec<_> = got.into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![format!("sendMessageAck-{own}"), format!("sendMessage-{own}")]);
        assert_eq!((p.cores[0].connections(), p.cores[1].connections()), (1, 0));

        // An unknown sid naming core 0 is refused there, whichever core it arrives on.
        let mut ghost = Client { js: JsClient::new(), sid: format!("{}{}", &a.sid[..2], "A".repeat(18)) };
        assert_eq!(sid_core(&ghost.sid), Some(0));
        for via in 0..2 {
            assert_eq!(p.get(via, &mut ghost).await, ErrorCode::UnknownSid.http_reply());
        }
    });
}

#[test]
fn leave_room_stops_its_deliveries() {
    run(async {
        let p = Pair::new(3).await;
        let mut a = p.connect(0).await;
        let mut b = p.connect(1).await;
        let (inbox, other) = (format!("{}-inbox", a.js.id()), format!("{}-other", a.js.id()));
        p.join(0, &mut a, &inbox).await;
        p.join(0, &mut a, &other).await;
        p.emit(0, &a, "leaveRoom", json!(inbox)).await;
        assert_eq!(p.recv(0, &mut a, 1).await, vec![("leftRoom".into(), Some(json!({ "roomId": inbox })))]);

        // Both are stored; only the room A still listens to is delivered (same path, in order).
        p.send(1, &mut b, &a, &inbox, "left").await;
        p.send(1, &mut b, &a, &other, "kept").await;
        let got = p.recv(0, &mut a, 1).await;
        assert_eq!(got.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(), vec![format!("sendMessage-{other}")]);
        assert_eq!(p.store.list_messages(&a.js.id(), "inbox", 100, 0).await.unwrap().len(), 1);
    });
}

#[test]
fn a_slow_consumer_is_dropped() {
    run(async {
        // A closing polling session waits this long for a GET to carry its `1`.
        let mut config = LiveConfig::default();
        config.engine.close_timeout = Duration::from_millis(100);
        let p = Pair::with_config(4, config).await;
        let mut a = p.connect(0).await;
        let b = p.connect(0).await;
        let d = Arc::new(Delivery {
            recipient: a.js.id(),
            room_id: format!("{}-inbox", a.js.id()),
            event: format!("sendMessage-{}-inbox", a.js.id()),
            data: r#"{"sender":"s","messageId":"m","body":"b"}"#.into(),
        });
        // More than its queue takes before its task runs once: it is dropped as too slow, and
        // its session is unknown at once.
        for _ in 0..300 {
            p.core(0).deliver_local(&d, 0);
        }
        assert_eq!(p.get(0, &mut a).await, ErrorCode::UnknownSid.http_reply());
        // Its task works off the queue, closes, and is unbound.
        p.until("the slow connection to end", |p| p.cores[0].connections() == 1).await;
        assert_eq!(p.hub.registry().connections_of(&a.js.id()), 0);
        // The other connection on that core is untouched.
        assert_eq!(p.hub.registry().connections_of(&b.js.id()), 1);
    });
}

#[test]
fn shutdown_completes_when_the_connections_have_closed() {
    run(async {
        let p = Pair::new(5).await;
        let a = p.connect(0).await;
        let b = p.connect(1).await;
        // Both hold a GET, as idle polling clients do.
        let held: Vec<_> = [(0, &a), (1, &b)]
            .into_iter()
            .map(|(via, c)| {
                let (core, sid) = (p.core(via).clone(), c.sid.clone());
                tokio::task::spawn_local(async move { core.poll(&sid).await })
            })
            .collect();
        tokio::task::yield_now().await;
        let start = Instant::now();
        for core in &p.cores {
            core.stop(Duration::from_secs(5)).await;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "signalled, not timed out: {:?}", start.elapsed());
        assert_eq!((p.cores[0].connections(), p.cores[1].connections()), (0, 0));
        for h in held {
            let reply = tokio::time::timeout(STEP, h).await.unwrap().unwrap();
            assert_eq!((reply.status, reply.body.as_str()), (200, "1"), "the close packet, no DISCONNECT");
        }
        assert_eq!(p.hub.registry().connections_of(&a.js.id()), 0);
        // A core without connections stops at once.
        p.cores[0].stop(Duration::from_secs(5)).await;
    });
}

#[test]
fn seeded_ids_are_reproducible() {
    run(async {
        let sids = |p: Pair| async move {
            let s0 = p.core(0).open_polling(Instant::now()).body;
            let s1 = p.core(1).open_polling(Instant::now()).body;
            (s0[..30].to_string(), s1[..30].to_string())
        };
        let first = sids(Pair::new(9).await).await;
        assert_eq!(first, sids(Pair::new(9).await).await);
        assert_ne!(first, sids(Pair::new(10).await).await);
    });
}

/// Per idle connection the task holds one boxed [`Connection`](super::task::Connection) and a
/// queue of [`Input`](super::core::Input)s; neither may grow unnoticed (sizes on 64-bit).
#[cfg(target_pointer_width = "64")]
#[test]
fn idle_connection_state_does_not_grow() {
    assert_eq!(std::mem::size_of::<super::core::Input>(), 16);
    let task = std::mem::size_of::<super::task::Connection>();
    assert!(task <= 1480, "the connection task's state grew to {task} bytes");
}

fn js_as(me: &crate::auth::ClientIdentity) -> JsClient {
    let mut js = JsClient::new();
    js.me = me.clone();
    js
}

/// `max_connections_per_identity` holds across cores: the connection over the cap is told
/// `authenticationFailed` and disconnected, the others keep receiving, and a place freed is
/// taken again. Before: any number of connections per identity.
#[test]
fn connections_per_identity_are_capped_across_cores() {
    run(async {
        let config = LiveConfig { max_connections_per_identity: Some(2), ..Default::default() };
        let p = Pair::with_config(6, config).await;
        let me = crate::auth::ClientIdentity::random();
        let mut a0 = p.connect_as(0, js_as(&me)).await;
        let _a1 = p.connect_as(1, js_as(&me)).await;
        let mut third = p.open(0, js_as(&me)).await;
        let hs = third.js.handshake();
        p.post(0, &third, &[&hs]).await;
        let mut got = Vec::new();
        while !third.js.engine.iter().any(|e| e == "1") {
            let reply = p.get(0, &mut third).await;
            if reply.status != 200 {
                break;
            }
            got.extend(third.js.take());
        }
        assert_eq!(
            got,
            vec![(
                "authenticationFailed".into(),
                Some(json!({"reason": "WebSocket identity connection limit exceeded"}))
            )]
        );
        assert!(third.js.engine.iter().any(|e| e == "41"), "disconnected: {:?}", third.js.engine);
        assert_eq!(p.hub.registry().connections_of(me.identity_hex()), 2);
        p.until("the refused session to end", |p| p.hub.sessions() == 2).await;

        // The first leaves; a new one takes its place.
        p.post(0, &a0, &["41", "1"]).await;
        let _ = p.get(0, &mut a0).await;
        p.until("the first to unbind", |p| p.hub.registry().connections_of(me.identity_hex()) == 1).await;
        let _again = p.connect_as(0, js_as(&me)).await;
        assert_eq!(p.hub.registry().connections_of(me.identity_hex()), 2);
    });
}

/// `max_connections` live sessions per process, on all cores: the handshake over the cap is
/// answered `503` `ERR_SERVER_BUSY` with `Retry-After`, and a closed session frees its place.
#[test]
fn sessions_per_process_are_capped() {
    run(async {
        let config = LiveConfig { max_connections: Some(2), ..Default::default() };
        let p = Pair::with_config(7, config).await;
        let mut a = p.connect(0).await;
        let _b = p.connect(1).await;
        for core in 0..2 {
            let r = p.core(core).open_polling(Instant::now());
            assert_eq!((r.status, r.header("Retry-After")), (503, Some("1")));
            assert_eq!(
                serde_json::from_str::<Value>(&r.body).unwrap(),
                json!({"status":"error","code":"ERR_SERVER_BUSY","description":"The service is temporarily at capacity."})
            );
            assert!(p.core(core).open_websocket(Instant::now()).is_none());
        }
        assert_eq!(p.hub.sessions(), 2);
        p.post(0, &a, &["41", "1"]).await;
        let _ = p.get(0, &mut a).await;
        p.until("a place to free", |p| p.hub.sessions() == 1).await;
        let _c = p.connect(0).await;
    });
}

/// `max_recipient_connections`: a delivery reaches only the newest connections of its
/// recipient, whichever cores they are on. Before: every connection of the recipient.
#[test]
fn a_delivery_reaches_the_newest_connections_only() {
    run(async {
        let config = LiveConfig { max_recipient_connections: Some(2), ..Default::default() };
        let p = Pair::with_config(8, config).await;
        let me = crate::auth::ClientIdentity::random();
        let mut old = p.connect_as(0, js_as(&me)).await;
        let mut mid = p.connect_as(1, js_as(&me)).await;
        let mut new = p.connect_as(0, js_as(&me)).await;
        use crate::domain::{Delivery, IdentityKey, LiveDelivery};
        let recipient = IdentityKey::from_canonical(me.identity_hex().to_string());
        p.hub.deliver(Delivery::message(&recipient, "-inbox", "s", "m1", "b"));
        assert_eq!(p.recv(1, &mut mid, 1).await.len(), 1);
        assert_eq!(p.recv(0, &mut new, 1).await.len(), 1);
        // The oldest gets nothing: its next GET is the engine's ping, not the message.
        let held = {
            let (core, sid) = (p.core(0).clone(), old.sid.clone());
            tokio::task::spawn_local(async move { core.poll(&sid).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!held.is_finished(), "nothing for the oldest connection");
        held.abort();
        assert!(old.js.take().is_empty());
    });
}

/// Refusals by the per-socket rate limits are counted in the core's metrics.
#[test]
fn rate_limited_events_are_counted() {
    run(async {
        let mut config = LiveConfig::default();
        config.events.send_rate = Some(1);
        config.events.control_rate = Some(0);
        let p = Pair::with_config(9, config).await;
        let mut a = p.connect(0).await;
        let room = format!("{}-inbox", a.js.id());
        p.emit(0, &a, "joinRoom", json!(room)).await;
        p.emit(0, &a, "sendMessage", json!(null)).await;
        p.emit(0, &a, "sendMessage", json!(null)).await;
        let got = p.recv(0, &mut a, 3).await;
        assert_eq!(got[0].1.as_ref().unwrap()["code"], "ERR_WEBSOCKET_CONTROL_RATE_LIMITED");
        assert_eq!(
            got[2].1,
            Some(json!({"reason":"WebSocket send rate limit exceeded","code":"ERR_WEBSOCKET_RATE_LIMITED"}))
        );
        let text = p.metrics.render(&p.store.stats(), 0, None);
        for line in [
            r#"messagebox_rate_limited_total{scope="live_send"} 1"#,
            r#"messagebox_rate_limited_total{scope="live_control"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?}");
        }
    });
}
