//! The fee cache (issue 12, `store::fee_cache`): delivery fees and recipient fees are served
//! without a database read, and no send is charged an old fee once its change was
//! acknowledged — `permissions/set` under load, `messagebox fees set` (another process) under
//! load, and a fleet (set on one node, send on another; Redis down and back). SQLite and MySQL.
//!
//! MySQL and fleet cases need `MESSAGEBOX_TEST_MYSQL_URL` (and `redis-server` for the fleet).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fleet::{until, TestFleet};
use common::{on_both_stores, with_store, Kind, TestDb, TestServer};
use messagebox::auth::ClientIdentity;
use messagebox::client::AuthClient;
use messagebox::store::fee_cache::{DELIVERY_FEE_MAX_AGE, PERMISSION_MAX_AGE};
use messagebox::store::{Store, StoreOptions};
use serde_json::{json, Value};

const ALICE: &str = "02aaaa000000000000000000000000000000000000000000000000000000000001";
const BOB: &str = "02bbbb000000000000000000000000000000000000000000000000000000000002";
const CAROL: &str = "02cccc000000000000000000000000000000000000000000000000000000000003";
const DAVE: &str = "02dddd000000000000000000000000000000000000000000000000000000000004";

fn hex(c: &AuthClient) -> String {
    c.identity().identity_hex().to_string()
}

// ---------------------------------------------------------------- the store's cache

/// Each fee is read once: changed behind the store's back (raw SQL), the cached answers stay
/// (so the lookups did not read), while a rule written through the store is charged at once.
async fn cached_fees_are_not_read_again(db: Arc<TestDb>, store: Store) {
    let both = [ALICE.to_string(), BOB.to_string()];
    let fees = |sender: &'static str| {
        let (store, both) = (store.clone(), both.clone());
        async move { store.recipient_fees(sender, "inbox", &both, 0).await.unwrap() }
    };
    assert_eq!(store.delivery_fee("inbox").await.unwrap(), Some(0));
    assert_eq!(store.delivery_fee("nobox").await.unwrap(), None);
    assert_eq!(fees(CAROL).await, [0, 0], "the default rule (rows written)");

    db.exec("UPDATE server_fees SET delivery_fee = 7 WHERE message_box = 'inbox'").await;
    db.exec("INSERT INTO server_fees (message_box, delivery_fee) VALUES ('nobox', 9)").await;
    db.exec(&format!("UPDATE message_permissions SET recipient_fee = 3 WHERE recipient = '{ALICE}'")).await;
    let before = store.fee_cache().stats();
    assert_eq!(store.delivery_fee("inbox").await.unwrap(), Some(0), "served from the cache");
    assert_eq!(store.delivery_fee("nobox").await.unwrap(), None, "no row is cached too");
    assert_eq!(fees(CAROL).await, [0, 0], "served from the cache");
    let after = store.fee_cache().stats();
    assert_eq!((after.hits - before.hits, after.misses - before.misses), (4, 0));

    // Sender-specific, through the store: only that recipient is read again.
    store.set_permission(BOB, Some(CAROL), "inbox", 4).await.unwrap();
    assert_eq!(fees(CAROL).await, [0, 4], "Alice still cached, Bob read again");
    // Box-wide, in another spelling of the box: every sender of the recipient.
    assert_eq!(fees(DAVE).await, [3, 0]);
    store.set_permission(ALICE, None, "INBOX", 5).await.unwrap();
    assert_eq!(fees(CAROL).await, [5, 4]);
    assert_eq!(fees(DAVE).await, [5, 0]);

    // A delivery fee changed by another process is charged within the max age.
    tokio::time::sleep(DELIVERY_FEE_MAX_AGE).await;
    assert_eq!(store.delivery_fee("inbox").await.unwrap(), Some(7));
    assert_eq!(store.delivery_fee("nobox").await.unwrap(), Some(9));
    // Written through the store: at once.
    store.set_delivery_fee("inbox", 8).await.unwrap();
    assert_eq!(store.delivery_fee("inbox").await.unwrap(), Some(8));
}

#[test]
fn cached_fees_are_not_read_again_sqlite() {
    with_store(Kind::SqliteFile, StoreOptions::default(), cached_fees_are_not_read_again);
}

#[test]
fn cached_fees_are_not_read_again_mysql() {
    with_store(Kind::Mysql, StoreOptions::default(), cached_fees_are_not_read_again);
}

/// The cache holds at most its bound, and what it evicts is read again correctly.
async fn the_cache_is_bounded(_db: Arc<TestDb>, store: Store) {
    let many: Vec<String> = (0..2_000).map(|i| format!("02{i:064x}")).collect();
    store.set_permission(&many[1_999], Some(CAROL), "inbox", 6).await.unwrap();
    for _ in 0..2 {
        for chunk in many.chunks(100) {
            let fees = store.recipient_fees(CAROL, "inbox", chunk, 0).await.unwrap();
            let want: Vec<i64> = chunk.iter().map(|r| if *r == many[1_999] { 6 } else { 0 }).collect();
            assert_eq!(fees, want);
        }
    }
    let stats = store.fee_cache().stats();
    assert!(stats.permission_entries <= 128, "{stats:?}");
    assert!(stats.permission_entries > 0, "{stats:?}");
}

#[test]
fn the_cache_is_bounded_sqlite() {
    with_store(Kind::SqliteFile, StoreOptions { fee_cache_entries: 128, ..Default::default() }, the_cache_is_bounded);
}

#[test]
fn the_cache_is_bounded_mysql() {
    with_store(Kind::Mysql, StoreOptions { fee_cache_entries: 128, ..Default::default() }, the_cache_is_bounded);
}

// ---------------------------------------------------------------- changes under load

/// One send or quote as the load saw it: when it started and ended, and its outcome.
type Seen = (Instant, Instant, i64);

/// Runs `n` copies of `op` in a loop until `stop`, logging each call.
fn load<F, Fut>(n: usize, stop: &Arc<AtomicBool>, op: F) -> (Arc<Mutex<Vec<Seen>>>, Vec<tokio::task::JoinHandle<()>>)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = i64> + Send,
{
    let log = Arc::new(Mutex::new(Vec::new()));
    let op = Arc::new(op);
    let tasks = (0..n)
        .map(|worker| {
            let (log, stop, op) = (log.clone(), stop.clone(), op.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let outcome = op(worker, i).await;
                    log.lock().unwrap().push((start, Instant::now(), outcome));
                    i += 1;
                }
            })
        })
        .collect();
    (log, tasks)
}

/// `n` clients of new identities, one per load worker.
fn workers(n: usize, addr: std::net::SocketAddr) -> Vec<Arc<tokio::sync::Mutex<AuthClient>>> {
    (0..n).map(|_| Arc::new(tokio::sync::Mutex::new(AuthClient::new(ClientIdentity::random(), addr)))).collect()
}

/// A fee change: when it was asked for, when it was acknowledged, and the outcome every call
/// made entirely between that acknowledgement and the next change must have.
struct Change {
    asked: Instant,
    acked: Instant,
    expect: i64,
}

/// Checks every logged call made entirely between a change's acknowledgement and the next
/// change's request; returns how many were checked and the distinct outcomes among them.
fn check(changes: &[Change], seen: &[Seen], end: Instant) -> (usize, Vec<i64>) {
    let mut checked = 0;
    let mut outcomes = Vec::new();
    for (k, c) in changes.iter().enumerate() {
        let until = changes.get(k + 1).map_or(end, |n| n.asked);
        for (start, stop, outcome) in seen.iter().filter(|(s, e, _)| *s >= c.acked && *e <= until) {
            assert_eq!(
                *outcome,
                c.expect,
                "change {k}: a call from {:?} to {:?} after its acknowledgement saw the old fee",
                *start - c.acked,
                *stop - c.acked
            );
            checked += 1;
            if !outcomes.contains(outcome) {
                outcomes.push(*outcome);
            }
        }
    }
    (checked, outcomes)
}

/// Senders send to one recipient without pause while the recipient toggles its box-wide rule
/// between blocked and free: every send made after a change was acknowledged is refused or
/// stored as the new rule says.
async fn permission_changes_under_load(db: &TestDb) {
    let server = TestServer::start(&db.url, &[]).await;
    let mut recipient = server.client();
    let to = hex(&recipient);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = workers(4, server.addr);
    let (log, tasks) = load(clients.len(), &stop, move |w, i| {
        let (client, to) = (clients[w].clone(), to.clone());
        async move {
            let (status, v) = send_to(&mut *client.lock().await, &to, format!("w{w}-{i}")).await;
            assert!(status == 200 || status == 403, "{status} {v}");
            i64::from(status)
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut changes = Vec::new();
    for k in 0..12 {
        let fee = if k % 2 == 0 { -1 } else { 0 };
        let asked = Instant::now();
        let (status, v) = recipient
            .post_json("/permissions/set", &json!({"messageBox": "inbox", "recipientFee": fee}))
            .await
            .unwrap();
        assert_eq!(status, 200, "{v}");
        changes.push(Change { asked, acked: Instant::now(), expect: if fee < 0 { 403 } else { 200 } });
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let seen = log.lock().unwrap().clone();
    let (checked, outcomes) = check(&changes, &seen, end);
    assert!(checked >= 24, "only {checked} of {} sends fell between changes", seen.len());
    assert_eq!(outcomes.len(), 2, "both rules were seen: {outcomes:?}");
    let stats = server.app.api.store.fee_cache().stats();
    assert!(stats.hits > stats.misses, "the sends were served from the cache: {stats:?}");
}

on_both_stores!(no_send_is_charged_a_stale_permission, permission_changes_under_load, db);

/// `messagebox fees set` run by an operator while quotes run without pause: every quote that
/// started after the command reported success names the new fee.
async fn fee_changes_under_load(db: &TestDb) {
    let server = TestServer::start(&db.url, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let to = common::key();
    let clients = workers(2, server.addr);
    let (log, tasks) = load(clients.len(), &stop, move |w, _| {
        let (client, to) = (clients[w].clone(), to.clone());
        async move {
            let target = format!("/permissions/quote?recipient={to}&messageBox=notifications");
            let (status, v) = client.lock().await.get_json(&target).await.unwrap();
            assert_eq!(status, 200, "{v}");
            v["quote"]["deliveryFee"].as_i64().unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    let url = db.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::process::BIN)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", url)
            .current_dir(std::env::temp_dir())
            .args(["fees", "set", "notifications", "25"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let acked = Instant::now();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "notifications: 10 -> 25 satoshis\n");
    assert!(acked - asked >= DELIVERY_FEE_MAX_AGE, "fees set waits out the cache's max age");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let end = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let seen = log.lock().unwrap().clone();
    let before: Vec<i64> = seen.iter().filter(|(_, e, _)| *e <= asked).map(|s| s.2).collect();
    assert!(!before.is_empty() && before.iter().all(|f| *f == 10), "before: {before:?}");
    let changes = [Change { asked, acked, expect: 25 }];
    let (checked, _) = check(&changes, &seen, end);
    assert!(checked >= 10, "only {checked} quotes after the change");
    let stats = server.app.api.store.fee_cache().stats();
    assert!(stats.hits > stats.misses, "the quotes were served from the cache: {stats:?}");
}

on_both_stores!(fees_set_is_charged_once_it_reports_success, fee_changes_under_load, db);

// ---------------------------------------------------------------- a fleet

/// A rule set on node A is charged by node B on the next send; while Redis is down B reads
/// rules from the database and A answers a change after the cache's max age; once Redis is
/// back B serves cached rules again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_set_on_one_node_is_charged_on_every_node() {
    let Some(mut fleet) = TestFleet::start(2).await else { return };
    let (a, b) = (&fleet.nodes[0], &fleet.nodes[1]);
    let (a_cache, b_cache) = (a.app.api.store.fee_cache().clone(), b.app.api.store.fee_cache().clone());
    until("both nodes hear the fee channel", Duration::from_secs(5), || a_cache.is_hearing() && b_cache.is_hearing())
        .await;
    let mut recipient = AuthClient::new(ClientIdentity::random(), a.addr);
    let mut sender = AuthClient::new(ClientIdentity::random(), b.addr);
    let to = hex(&recipient);
    let sent = AtomicUsize::new(0);
    let id = || format!("m{}", sent.fetch_add(1, Ordering::Relaxed));
    let expect = |fee: i64| if fee < 0 { 403 } else { 200 };

    let hits = b_cache.stats().hits;
    for k in 0..10 {
        let fee = if k % 2 == 0 { -1 } else { 0 };
        set_rule(&mut recipient, fee).await;
        for n in 0..3 {
            let (status, v) = send_to(&mut sender, &to, id()).await;
            assert_eq!(status, expect(fee), "change {k}, send {n} on the other node: {v}");
        }
    }
    assert!(b_cache.stats().hits >= hits + 20, "node B served the repeated sends from its cache");

    // Redis down: nobody serves cached rules, and a change is answered after the max age.
    fleet.redis.stop();
    until("both nodes stop hearing", Duration::from_secs(10), || !a_cache.is_hearing() && !b_cache.is_hearing()).await;
    for fee in [-1, 0] {
        let asked = Instant::now();
        set_rule(&mut recipient, fee).await;
        assert!(asked.elapsed() >= PERMISSION_MAX_AGE, "answered after {:?}", asked.elapsed());
        assert_eq!(send_to(&mut sender, &to, id()).await.0, expect(fee));
        assert_eq!(send_to(&mut sender, &to, id()).await.0, expect(fee));
    }

    // Back: the nodes hear again, and changes are answered at once.
    fleet.redis.restart();
    until("both nodes hear again", Duration::from_secs(10), || {
        a_cache.is_hearing() && b_cache.is_hearing() && a.broker().is_up()
    })
    .await;
    for k in 0..4 {
        let fee = if k % 2 == 0 { -1 } else { 0 };
        let asked = Instant::now();
        set_rule(&mut recipient, fee).await;
        assert!(asked.elapsed() < PERMISSION_MAX_AGE, "published, not waited out: {:?}", asked.elapsed());
        for _ in 0..2 {
            assert_eq!(send_to(&mut sender, &to, id()).await.0, expect(fee), "after Redis came back, change {k}");
        }
    }
}

async fn send_to(sender: &mut AuthClient, to: &str, id: String) -> (u16, Value) {
    let body = json!({"message": {"recipient": to, "messageBox": "inbox", "body": "hi", "messageId": id}});
    sender.post_json("/sendMessage", &body).await.unwrap()
}

/// Sets the caller's box-wide rule for `inbox`.
async fn set_rule(recipient: &mut AuthClient, fee: i64) {
    let rule = json!({"messageBox": "inbox", "recipientFee": fee});
    let (status, v) = recipient.post_json("/permissions/set", &rule).await.unwrap();
    assert_eq!(status, 200, "{v}");
}
