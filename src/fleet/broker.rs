//! The node's link to the fleet's broker (Redis): a thread of its own, with its own tokio
//! runtime, owning a publish connection and a pub/sub connection. It carries live
//! deliveries between nodes (the rules are in [`super::delivery`]) and knows whether the
//! broker is reachable (`/ready` reports it).
//!
//! Nothing on a request's path waits for Redis: [`Broker::publish`] puts the delivery on a
//! bounded queue (bounded in deliveries and in bytes) and returns; the thread drains it in
//! pipelined batches, one write and one read per batch. A delivery that does not fit, or
//! that is made while the broker is down, is dropped and counted: the message is stored
//! already, so the recipient still lists it; only its live copy is lost. Drops are logged as
//! a count at most every [`DROP_REPORT_EVERY`], and an outage as one line when it starts and
//! one when it ends (with the deliveries it cost).
//!
//! Binding and unbinding a connection only note the identity ([`Broker::interest_changed`]);
//! the thread reconciles the subscriptions with the identity registry. After a reconnect it
//! subscribes to every identity held again, so live delivery resumes by itself within about
//! a second of Redis coming back ([`MAX_BACKOFF`]). A broker that stops answering without
//! closing the connection is noticed by the pings of the pub/sub connection
//! ([`PING_EVERY`], [`COMMAND_TIMEOUT`]).
//!
//! It also carries the fee cache's notices ([`super::fees`]): the pub/sub connection
//! subscribes to the fee channel first and tells the cache whether it hears it, and a third
//! connection publishes this node's notices, each awaited by the request that made it.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::delivery::{self, Channels, Health, Interest, Link, Transition};
use super::Fleet;
use crate::domain::Delivery;
use crate::live::driver::hub::RemoteNodes;
use crate::live::driver::LiveHub;
use crate::store::fee_cache::FeeCache;

/// Deliveries waiting to be published.
const QUEUE: usize = 16_384;
/// Bytes of deliveries waiting to be published (bodies may be up to a MiB each).
const QUEUE_BYTES: usize = 64 << 20;
/// Deliveries per pipelined batch.
const BATCH: usize = 512;
/// Channels per SUBSCRIBE when subscribing to everything again.
const SUBSCRIBE_CHUNK: usize = 1_000;
/// Connecting, and any one command or batch, fails after this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// The pub/sub connection is pinged this often, so a broker that hangs is noticed.
const PING_EVERY: Duration = Duration::from_secs(2);
/// Reconnection attempts start this soon and back off to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Deliveries dropped while the broker is up (a full queue) are logged at most this often.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);
/// Fee notices waiting to be published (each is a permission change awaiting its answer).
const NOTICE_QUEUE: usize = 1_024;
/// Connecting for, and publishing, one fee notice fails after this long (its request then
/// waits out the cache's max age instead).
const NOTICE_TIMEOUT: Duration = Duration::from_millis(500);

/// A fee notice and who waits to hear whether Redis took it.
type FeeNotice = (Vec<u8>, oneshot::Sender<bool>);

/// What the link has done since the start (for tests, metrics and the logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Both connections to the broker work.
    pub up: bool,
    /// Deliveries published to the broker.
    pub published: u64,
    /// Pipelined batches they went in (one broker round trip each).
    pub batches: u64,
    /// Deliveries not published: the broker was down, the queue was full, or the batch failed.
    pub dropped: u64,
    /// Deliveries received from other nodes and handed to this node's connections.
    pub received: u64,
    /// Publications refused as malformed.
    pub malformed: u64,
    /// Identities this node is subscribed to.
    pub subscribed: u64,
}

/// This node's link to the broker (one per process, shared as `Arc<Broker>`).
pub struct Broker {
    fleet: Arc<Fleet>,
    channels: Channels,
    up: AtomicBool,
    tx: mpsc::Sender<Arc<Delivery>>,
    rx: Mutex<Option<mpsc::Receiver<Arc<Delivery>>>>,
    queued_bytes: AtomicUsize,
    /// Identities whose connections changed since the thread last looked.
    changed: Mutex<HashSet<String>>,
    wake: Notify,
    published: AtomicU64,
    batches: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
    malformed: AtomicU64,
    subscribed: AtomicU64,
    /// The fee cache this node's notices keep correct ([`Broker::follow_fees`]).
    fees: OnceLock<Arc<FeeCache>>,
    fee_channel: String,
    notices: mpsc::Sender<FeeNotice>,
    notices_rx: Mutex<Option<mpsc::Receiver<FeeNotice>>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").field("up", &self.is_up()).field("stats", &self.stats()).finish()
    }
}

impl Broker {
    /// The link of `fleet`, not running yet ([`Broker::start`]); down until it connects.
    pub fn new(fleet: Arc<Fleet>) -> Arc<Broker> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let (notices, notices_rx) = mpsc::channel(NOTICE_QUEUE);
        let db = fleet.client().get_connection_info().redis_settings().db();
        Arc::new(Broker {
            fees: OnceLock::new(),
            fee_channel: super::fees::channel(db),
            notices,
            notices_rx: Mutex::new(Some(notices_rx)),
            fleet,
            channels: Channels::new(db),
            up: AtomicBool::new(false),
            tx,
            rx: Mutex::new(Some(rx)),
            queued_bytes: AtomicUsize::new(0),
            changed: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            published: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            received: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            subscribed: AtomicU64::new(0),
        })
    }

    /// Whether both connections to the broker work.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn stats(&self) -> BrokerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BrokerStats {
            up: self.is_up(),
            published: get(&self.published),
            batches: get(&self.batches),
            dropped: get(&self.dropped),
            received: get(&self.received),
            malformed: get(&self.malformed),
            subscribed: get(&self.subscribed),
        }
    }

    /// The channel `identity`'s deliveries are published on.
    pub fn channel_of(&self, identity: &str) -> String {
        self.channels.of(identity)
    }

    /// Keeps `cache` correct across the fleet: this node's permission changes are published
    /// to the other nodes, theirs are forgotten here, and cached permissions are served only
    /// while the fee channel is heard. Call before [`Broker::start`]; once.
    pub fn follow_fees(self: &Arc<Self>, cache: Arc<FeeCache>) {
        if self.fees.set(cache.clone()).is_ok() {
            cache.join_fleet(Arc::new(super::fees::BrokerNotices(Arc::downgrade(self))));
        }
    }

    /// Publishes a fee notice; `true` once Redis took it (so every node subscribed then
    /// receives it), `false` when the broker is down or did not answer in time.
    pub async fn publish_fee_notice(&self, payload: Vec<u8>) -> bool {
        if !self.is_up() {
            return false;
        }
        let (done, answer) = oneshot::channel();
        if self.notices.try_send((payload, done)).is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }

    /// Starts the link's thread: deliveries from other nodes go to `hub`'s connections
    /// (`None`: WebSockets are off; the link then only watches the broker's health). It
    /// stops when `stop` turns true. Call once.
    pub fn start(self: &Arc<Self>, hub: Option<Arc<LiveHub>>, stop: watch::Receiver<bool>) -> std::io::Result<()> {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take().expect("the broker link starts once");
        let notices = self.notices_rx.lock().unwrap_or_else(|p| p.into_inner()).take().expect("starts once");
        let link = self.clone();
        std::thread::Builder::new().name("messagebox-fleet".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!(error = %e, "cannot start the fleet's broker link"),
            };
            let run =
                Run { link, hub, health: RefCell::new(Health::new(Instant::now())), reported_drops: Cell::new(0) };
            rt.block_on(async {
                tokio::join!(
                    until_stopped(stop.clone(), run.publisher(rx)),
                    until_stopped(stop.clone(), run.subscriber()),
                    until_stopped(stop.clone(), run.fee_notices(notices)),
                    until_stopped(stop, run.report_drops()),
                );
            });
        })?;
        Ok(())
    }

    fn drop_deliveries(&self, n: usize) {
        self.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The changed identities noted since the last call.
    fn take_changed(&self) -> Vec<String> {
        let mut set = self.changed.lock().unwrap_or_else(|p| p.into_inner());
        set.drain().collect()
    }
}

/// What a queued delivery holds in memory, roughly.
fn footprint(d: &Delivery) -> usize {
    d.recipient.len() + d.room_id.len() + d.event.len() + d.data.len() + 64
}

impl RemoteNodes for Broker {
    fn publish(&self, d: &Arc<Delivery>) {
        if !self.is_up() {
            return self.drop_deliveries(1);
        }
        let size = footprint(d);
        if self.queued_bytes.fetch_add(size, Ordering::AcqRel) + size > QUEUE_BYTES {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return self.drop_deliveries(1);
        }
        if self.tx.try_send(d.clone()).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            self.drop_deliveries(1);
        }
    }

    fn interest_changed(&self, identity: &str) {
        self.changed.lock().unwrap_or_else(|p| p.into_inner()).insert(identity.to_string());
        self.wake.notify_one();
    }

    fn is_up(&self) -> bool {
        Broker::is_up(self)
    }
}

/// Runs `f` until `stop` turns true.
async fn until_stopped(mut stop: watch::Receiver<bool>, f: impl Future<Output = ()>) {
    tokio::select! {
        _ = f => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// The link's thread: its two connections share the health state (one thread, no locks).
struct Run {
    link: Arc<Broker>,
    hub: Option<Arc<LiveHub>>,
    health: RefCell<Health>,
    /// `dropped` as far as a log line has reported it.
    reported_drops: Cell<u64>,
}

impl Run {
    fn ok(&self, part: Link) {
        let t = self.health.borrow_mut().ok(part, Instant::now());
        self.note(t);
    }

    fn failed(&self, part: Link, reason: impl std::fmt::Display) {
        let t = self.health.borrow_mut().failed(part, reason, Instant::now());
        self.note(t);
    }

    fn note(&self, t: Option<Transition>) {
        let up = self.health.borrow().is_up();
        self.link.up.store(up, Ordering::Release);
        match t {
            Some(Transition::Down { link, reason }) => {
                tracing::warn!(
                    link = ?link,
                    reason = %reason,
                    "fleet: the broker (REDIS_URL) is unreachable; live delivery to other nodes is paused, messages are still stored"
                );
            }
            Some(Transition::Up { outage }) => {
                let now = self.link.dropped.load(Ordering::Relaxed);
                let dropped = now.saturating_sub(self.reported_drops.replace(now));
                tracing::info!(
                    outage_ms = outage.as_millis() as u64,
                    live_deliveries_dropped = dropped,
                    "fleet: the broker is reachable again; live delivery to other nodes resumed"
                );
            }
            None => {}
        }
    }

    async fn connect(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        self.link.fleet.client().get_multiplexed_async_connection_with_config(&config).await
    }

    /// Drains the queue into pipelined PUBLISH batches. A batch that fails is tried once more
    /// on a new connection (the old one may only have gone stale while Redis restarted).
    async fn publisher(&self, mut rx: mpsc::Receiver<Arc<Delivery>>) {
        let mut backoff = MIN_BACKOFF;
        let mut retry: Vec<Arc<Delivery>> = Vec::new();
        loop {
            let mut conn = match self.connect().await {
                Ok(c) => c,
                Err(e) => {
                    self.failed(Link::Publish, &e);
                    self.link.drop_deliveries(retry.len());
                    retry.clear();
                    // Down: what is queued would be stale by the time it went out.
                    while let Ok(d) = rx.try_recv() {
                        self.release(&d);
                        self.link.drop_deliveries(1);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = MIN_BACKOFF;
            if !retry.is_empty() {
                let batch = std::mem::take(&mut retry);
                if let Err(e) = self.send(&mut conn, &batch).await {
                    self.link.drop_deliveries(batch.len());
                    self.failed(Link::Publish, e);
                    continue;
                }
            }
            self.ok(Link::Publish);
            loop {
                let Some(first) = rx.recv().await else { return };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(d) => batch.push(d),
                        Err(_) => break,
                    }
                }
                for d in &batch {
                    self.release(d);
                }
                if self.send(&mut conn, &batch).await.is_err() {
                    retry = batch;
                    break;
                }
            }
        }
    }

    /// Publishes the fee notices one by one on a connection of their own, answering each. A
    /// notice that fails is tried once more on a new connection (the old one may only have
    /// gone stale while Redis restarted).
    async fn fee_notices(&self, mut rx: mpsc::Receiver<FeeNotice>) {
        let mut conn: Option<redis::aio::MultiplexedConnection> = None;
        while let Some((payload, done)) = rx.recv().await {
            let mut published = false;
            for _ in 0..2 {
                if conn.is_none() {
                    conn = tokio::time::timeout(NOTICE_TIMEOUT, self.connect()).await.ok().and_then(Result::ok);
                }
                let Some(c) = conn.as_mut() else { break };
                let mut publish = redis::cmd("PUBLISH");
                publish.arg(&self.link.fee_channel).arg(&payload[..]);
                if let Ok(Ok(_)) = tokio::time::timeout(NOTICE_TIMEOUT, publish.query_async::<i64>(c)).await {
                    published = true;
                    break;
                }
                conn = None;
            }
            let _ = done.send(published);
        }
    }

    fn release(&self, d: &Delivery) {
        self.link.queued_bytes.fetch_sub(footprint(d), Ordering::AcqRel);
    }

    /// One pipelined batch of PUBLISHes: one write, one read.
    async fn send(&self, conn: &mut redis::aio::MultiplexedConnection, batch: &[Arc<Delivery>]) -> Result<(), String> {
        let node = self.link.fleet.node_id();
        let mut pipe = redis::pipe();
        for d in batch {
            pipe.cmd("PUBLISH").arg(self.link.channels.of(&d.recipient)).arg(delivery::encode(node, d)).ignore();
        }
        match tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(conn)).await {
            Ok(Ok(())) => {
                self.link.published.fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.link.batches.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", COMMAND_TIMEOUT.as_millis())),
        }
    }

    /// Whether this node holds a connection of `identity`.
    fn held(&self, identity: &str) -> bool {
        self.hub.as_ref().is_some_and(|h| h.registry().connections_of(identity) > 0)
    }

    /// Brings the subscriptions in line with the registry (without sending anything: used
    /// while disconnected, when the next connection subscribes to everything anyway).
    fn reconcile(&self, interest: &mut Interest) -> delivery::Changes {
        let changes = interest.reconcile(self.link.take_changed(), |id| self.held(id));
        self.link.subscribed.store(interest.len() as u64, Ordering::Relaxed);
        changes
    }

    /// Keeps the pub/sub connection: subscribes to every identity held, follows the changes,
    /// hands what other nodes publish to this node's connections, pings.
    async fn subscriber(&self) {
        let mut interest = Interest::default();
        let mut backoff = MIN_BACKOFF;
        loop {
            let mut subscribed = false;
            let result = self.subscribe_session(&mut interest, &mut subscribed).await;
            if let Some(fees) = self.link.fees.get() {
                fees.fleet_deaf();
            }
            match result {
                Ok(()) => return,
                Err(e) => self.failed(Link::Subscribe, e),
            }
            if subscribed {
                // It worked until now: try again at once, then back off.
                backoff = MIN_BACKOFF;
            }
            // Identities keep changing while disconnected: follow them, so the set stays
            // bounded by what is held and is right for the next connection.
            let pause = tokio::time::sleep(backoff);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    _ = self.link.wake.notified() => { self.reconcile(&mut interest); }
                }
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One pub/sub connection, from connecting until it fails (`Err`) or its stream ends.
    /// `subscribed` turns true once it is subscribed to everything held.
    async fn subscribe_session(&self, interest: &mut Interest, subscribed: &mut bool) -> Result<(), String> {
        let timed =
            |what: &'static str| move |_| format!("{what}: no answer within {} ms", COMMAND_TIMEOUT.as_millis());
        let pubsub = tokio::time::timeout(COMMAND_TIMEOUT, self.link.fleet.client().get_async_pubsub())
            .await
            .map_err(timed("connect"))?
            .map_err(|e| e.to_string())?;
        let (mut sink, mut stream) = pubsub.split();
        if self.link.fees.get().is_some() {
            tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&self.link.fee_channel))
                .await
                .map_err(timed("SUBSCRIBE"))?
                .map_err(|e| e.to_string())?;
        }
        self.reconcile(interest);
        for chunk in interest.all().chunks(SUBSCRIBE_CHUNK) {
            let channels: Vec<String> = chunk.iter().map(|id| self.link.channels.of(id)).collect();
            tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(&channels))
                .await
                .map_err(timed("SUBSCRIBE"))?
                .map_err(|e| e.to_string())?;
        }
        *subscribed = true;
        if let Some(fees) = self.link.fees.get() {
            // Every notice published from now on reaches this node.
            fees.fleet_hearing();
        }
        self.ok(Link::Subscribe);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => self.inbound(&msg),
                    None => return Err("the connection closed".into()),
                },
                _ = self.link.wake.notified() => {
                    let changes = self.reconcile(interest);
                    let of = |ids: &[String]| ids.iter().map(|id| self.link.channels.of(id)).collect::<Vec<_>>();
                    if !changes.subscribe.is_empty() {
                        tokio::time::timeout(COMMAND_TIMEOUT, sink.subscribe(of(&changes.subscribe)))
                            .await
                            .map_err(timed("SUBSCRIBE"))?
                            .map_err(|e| e.to_string())?;
                    }
                    if !changes.unsubscribe.is_empty() {
                        tokio::time::timeout(COMMAND_TIMEOUT, sink.unsubscribe(of(&changes.unsubscribe)))
                            .await
                            .map_err(timed("UNSUBSCRIBE"))?
                            .map_err(|e| e.to_string())?;
                    }
                }
                _ = ping.tick() => {
                    tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>())
                        .await
                        .map_err(timed("PING"))?
                        .map_err(|e| e.to_string())?;
                }
            }
        }
    }

    /// A publication from the broker: to this node's connections of its recipient, unless
    /// this node published it (it delivered it locally already).
    fn inbound(&self, msg: &redis::Msg) {
        if msg.get_channel_name() == self.link.fee_channel {
            match (self.link.fees.get(), super::fees::decode_permission_change(msg.get_payload_bytes())) {
                (Some(fees), Some(recipient)) => fees.forget_recipient(recipient),
                _ => {
                    self.link.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(channel = msg.get_channel_name(), "fleet: a fee notice was ignored");
                }
            }
            return;
        }
        let Some(hub) = &self.hub else { return };
        let Some(recipient) = self.link.channels.identity(msg.get_channel_name()) else { return };
        match delivery::decode(recipient, msg.get_payload_bytes()) {
            Ok(inbound) if inbound.node_id == self.link.fleet.node_id() => {}
            Ok(inbound) => {
                self.link.received.fetch_add(1, Ordering::Relaxed);
                hub.fanout().publish_local(&Arc::new(inbound.delivery));
            }
            Err(e) => {
                // Counted; logged at debug only, so a stray publisher cannot flood the log.
                self.link.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, channel = msg.get_channel_name(), "fleet: a publication was ignored");
            }
        }
    }

    /// Logs the deliveries a full queue dropped while the broker was up, as one count per
    /// [`DROP_REPORT_EVERY`] (an outage's drops are in its closing line).
    async fn report_drops(&self) {
        loop {
            tokio::time::sleep(DROP_REPORT_EVERY).await;
            let now = self.link.dropped.load(Ordering::Relaxed);
            let last = self.reported_drops.get();
            if now > last && self.health.borrow().is_up() {
                self.reported_drops.set(now);
                tracing::warn!(
                    dropped = now - last,
                    "fleet: live deliveries to other nodes dropped (publish queue full: the broker is slow); the messages are stored"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IdentityKey;
    use crate::fleet::FleetConfig;

    /// A link that is not running: nothing drains its queue.
    fn idle_link(up: bool) -> Arc<Broker> {
        let fleet = Fleet::new(FleetConfig { redis_url: "redis://127.0.0.1:1/0".into(), node_url: None }).unwrap();
        let link = Broker::new(Arc::new(fleet));
        link.up.store(up, Ordering::Release);
        link
    }

    fn delivery(body_len: usize) -> Arc<Delivery> {
        let to = IdentityKey::from_canonical("02c0a8a3b0fcb1c0a3d2b6c7f4b1f7e2d8c9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4");
        Arc::new(Delivery::message(&to, "-inbox", "03ab", "m", &"x".repeat(body_len)))
    }

    #[test]
    fn the_publish_queue_is_bounded_in_deliveries() {
        let link = idle_link(true);
        let d = delivery(10);
        for _ in 0..QUEUE + 100 {
            link.publish(&d);
        }
        assert_eq!(link.stats().dropped, 100);
        assert!(link.queued_bytes.load(Ordering::Acquire) <= QUEUE_BYTES);
    }

    #[test]
    fn the_publish_queue_is_bounded_in_bytes() {
        let link = idle_link(true);
        let big = delivery(1 << 20);
        for _ in 0..100 {
            link.publish(&big);
        }
        let kept = 100 - link.stats().dropped as usize;
        assert_eq!(kept, QUEUE_BYTES / footprint(&big), "{:?}", link.stats());
        assert!(link.queued_bytes.load(Ordering::Acquire) <= QUEUE_BYTES);
    }

    #[test]
    fn nothing_is_queued_while_the_broker_is_down() {
        let link = idle_link(false);
        link.publish(&delivery(10));
        assert_eq!(link.stats(), BrokerStats { dropped: 1, ..BrokerStats::default() });
        assert_eq!(link.queued_bytes.load(Ordering::Acquire), 0);
    }
}
