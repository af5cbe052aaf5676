//! Storage quotas (issue 9, track C2): `MESSAGE_BOX_MAX_SENDER_MESSAGES` / `_BYTES` and
//! `MESSAGE_BOX_MAX_INBOX_MESSAGES` / `_BYTES` over HTTP `/sendMessage` and the live path, on
//! SQLite and MySQL: the 429 bodies exactly, the sender quota first, `-1` disables, expired
//! rows do not count (a sender's once swept), acknowledging frees the inbox and the sender, an
//! idempotent re-send stays 200, and concurrent sends never overshoot (the bound is 0:
//! reservations are atomic in the process).

mod common;

use std::time::Duration;

use common::{assert_error, on_both_stores, TestDb, TestServer};
use messagebox::auth::ClientIdentity;
use messagebox::client::AuthClient;
use messagebox::store::quota::{QuotaExceeded, QuotaLimits, Resource, Scope, RECHECK_AFTER};
use serde_json::{json, Value};

const SENDER_TEXT: &str = "The sender storage quota has been reached. Retry after messages expire.";
const INBOX_TEXT: &str =
    "The recipient inbox storage quota has been reached. Retry after messages are acknowledged or expire.";

fn send_body(to: &str, id: &str, body: &str) -> Value {
    json!({"message": {"recipient": to, "messageBox": "inbox", "body": body, "messageId": id}})
}

/// The stored envelope's bytes for a string body: `{"message":"…"}`.
fn envelope_bytes(body: &str) -> u64 {
    (body.len() + r#"{"message":""}"#.len()) as u64
}

/// Asserts a quota 429: status, code, description, `resource` and `limit`.
fn assert_quota(got: &(u16, Value), scope: Scope, resource: &str, limit: u64) {
    let (code, text) = match scope {
        Scope::Sender => ("ERR_SENDER_QUOTA_EXCEEDED", SENDER_TEXT),
        Scope::Inbox => ("ERR_INBOX_QUOTA_EXCEEDED", INBOX_TEXT),
    };
    assert_error(got, 429, code, text);
    assert_eq!(got.1["resource"], resource, "{}", got.1);
    assert_eq!(got.1["limit"], limit, "{}", got.1);
    assert_eq!(got.1.as_object().unwrap().len(), 5, "status, code, description, resource, limit: {}", got.1);
}

async fn send(c: &mut AuthClient, to: &str, id: &str, body: &str) -> (u16, Value) {
    c.post_json("/sendMessage", &send_body(to, id, body)).await.unwrap()
}

async fn ok(c: &mut AuthClient, to: &str, id: &str, body: &str) {
    let got = send(c, to, id, body).await;
    assert_eq!(got.0, 200, "{id}: {}", got.1);
}

fn hex(c: &AuthClient) -> String {
    c.identity().identity_hex().to_string()
}

async fn count(db: &TestDb, column: &str, key: &str) -> u64 {
    db.scalar(&format!("SELECT COUNT(*) FROM messages WHERE {column} = '{key}'")).await.unwrap().parse().unwrap()
}

on_both_stores!(message_quotas_answer_429_sender_first, message_quotas, db);
on_both_stores!(byte_quotas_count_the_stored_envelope, byte_quotas, db);
on_both_stores!(minus_one_disables_each_quota, disabled_quotas, db);
on_both_stores!(expired_messages_do_not_count, expired_rows, db);
on_both_stores!(acknowledging_frees_the_inbox_quota, acknowledge_frees, db);
on_both_stores!(an_idempotent_resend_stays_200_and_counts_once, idempotent_resend, db);
on_both_stores!(concurrent_sends_never_overshoot, concurrent_sends, db);
on_both_stores!(the_live_path_is_held_to_the_quotas, live_path, db);
on_both_stores!(a_sender_at_its_quota_is_freed_by_an_ack_and_by_expiry, sender_freed, db);

/// Message counts: A fills its sender quota (2) and B's inbox (2) at once; A's third send is
/// refused by the sender quota (checked first although B's inbox is full too), C's by B's inbox.
/// Nothing is stored for a refused send.
async fn message_quotas(db: &TestDb) {
    let env = [("MESSAGE_BOX_MAX_SENDER_MESSAGES", "2"), ("MESSAGE_BOX_MAX_INBOX_MESSAGES", "2")];
    let s = TestServer::start(&db.url, &env).await;
    let (mut a, b, mut c) = (s.client(), s.client(), s.client());
    let bk = hex(&b);
    ok(&mut a, &bk, "m-1", "one").await;
    ok(&mut a, &bk, "m-2", "two").await;
    assert_quota(&send(&mut a, &bk, "m-3", "three").await, Scope::Sender, "messages", 2);
    assert_quota(&send(&mut c, &bk, "c-1", "from C").await, Scope::Inbox, "messages", 2);
    // A multi-recipient send: the second recipient's inbox refuses the whole send.
    let dk = hex(&s.client());
    let two =
        json!({"message": {"recipients": [dk, bk], "messageBox": "inbox", "body": "x", "messageId": ["c-2", "c-3"]}});
    assert_quota(&c.post_json("/sendMessage", &two).await.unwrap(), Scope::Inbox, "messages", 2);
    assert_eq!(count(db, "recipient", &bk).await, 2);
    assert_eq!(count(db, "recipient", &dk).await, 0, "a refused send stores nothing");
    s.stop();
}

/// Bytes count the stored envelope `{"message":…}`, not the body: two 10-byte bodies are
/// 2 × 24 bytes. A sender quota of 50 takes two, not a third; an inbox quota of 30 takes one.
async fn byte_quotas(db: &TestDb) {
    let body = "0123456789";
    assert_eq!(envelope_bytes(body), 24);
    let s =
        TestServer::start(&db.url, &[("MESSAGE_BOX_MAX_SENDER_BYTES", "50"), ("MESSAGE_BOX_MAX_INBOX_BYTES", "30")])
            .await;
    let (mut a, b, c) = (s.client(), s.client(), s.client());
    let (bk, ck) = (hex(&b), hex(&c));
    ok(&mut a, &bk, "b-1", body).await;
    assert_quota(&send(&mut a, &bk, "b-2", body).await, Scope::Inbox, "bytes", 30);
    ok(&mut a, &ck, "b-3", body).await;
    let dk = hex(&s.client());
    assert_quota(&send(&mut a, &dk, "b-4", body).await, Scope::Sender, "bytes", 50);
    // One send larger than a quota on its own is refused too (54 bytes: the sender's first).
    let mut e = s.client();
    assert_quota(&send(&mut e, &dk, "b-5", &"x".repeat(40)).await, Scope::Sender, "bytes", 50);
    s.stop();
}

/// `-1` disables each quota: with the sender's quotas off, only the inbox's (3) applies.
async fn disabled_quotas(db: &TestDb) {
    let env = [
        ("MESSAGE_BOX_MAX_SENDER_MESSAGES", "-1"),
        ("MESSAGE_BOX_MAX_SENDER_BYTES", "-1"),
        ("MESSAGE_BOX_MAX_INBOX_MESSAGES", "3"),
        ("MESSAGE_BOX_MAX_INBOX_BYTES", "-1"),
    ];
    let s = TestServer::start(&db.url, &env).await;
    let mut a = s.client();
    for r in 0..4 {
        let rk = hex(&s.client());
        for i in 0..3 {
            ok(&mut a, &rk, &format!("d-{r}-{i}"), &"y".repeat(1000)).await;
        }
        assert_quota(&send(&mut a, &rk, &format!("d-{r}-x"), "y").await, Scope::Inbox, "messages", 3);
    }
    let off = [
        ("MESSAGE_BOX_MAX_SENDER_MESSAGES", "-1"),
        ("MESSAGE_BOX_MAX_SENDER_BYTES", "unlimited"),
        ("MESSAGE_BOX_MAX_INBOX_MESSAGES", "-1"),
        ("MESSAGE_BOX_MAX_INBOX_BYTES", "-1"),
    ];
    s.stop();
    let s = TestServer::start(&db.url, &off).await;
    let (mut a, bk) = (s.client(), hex(&s.client()));
    for i in 0..20 {
        ok(&mut a, &bk, &format!("u-{i}"), "z").await;
    }
    s.stop();
}

/// Expired rows do not count: B's inbox is full (2), its rows expire, and a send is accepted
/// once the server asks the database again (at most [`RECHECK_AFTER`] after its last read).
async fn expired_rows(db: &TestDb) {
    let s = TestServer::start(&db.url, &[("MESSAGE_BOX_MAX_INBOX_MESSAGES", "2")]).await;
    let (mut a, b) = (s.client(), s.client());
    let bk = hex(&b);
    ok(&mut a, &bk, "e-1", "one").await;
    ok(&mut a, &bk, "e-2", "two").await;
    assert_quota(&send(&mut a, &bk, "e-3", "three").await, Scope::Inbox, "messages", 2);
    let past = if db.kind.is_mysql() { "'2001-01-01 00:00:00'" } else { "1" };
    db.exec(&format!("UPDATE messages SET expires_at = {past} WHERE recipient = '{bk}'")).await;
    tokio::time::sleep(RECHECK_AFTER + Duration::from_millis(100)).await;
    ok(&mut a, &bk, "e-3", "three").await;
    ok(&mut a, &bk, "e-4", "four").await;
    assert_quota(&send(&mut a, &bk, "e-5", "five").await, Scope::Inbox, "messages", 2);
    s.stop();
    // A fresh server reads the database on first sight: the expired rows do not count either.
    let s = TestServer::start(&db.url, &[("MESSAGE_BOX_MAX_INBOX_MESSAGES", "3")]).await;
    let mut c = s.client();
    ok(&mut c, &bk, "e-6", "six").await;
    assert_quota(&send(&mut c, &bk, "e-7", "seven").await, Scope::Inbox, "messages", 3);
    s.stop();
}

/// Acknowledging frees inbox quota at once (no recheck interval to wait out).
async fn acknowledge_frees(db: &TestDb) {
    let s = TestServer::start(&db.url, &[("MESSAGE_BOX_MAX_INBOX_MESSAGES", "2")]).await;
    let (mut a, mut b) = (s.client(), s.client());
    let bk = hex(&b);
    ok(&mut a, &bk, "k-1", "one").await;
    ok(&mut a, &bk, "k-2", "two").await;
    assert_quota(&send(&mut a, &bk, "k-3", "three").await, Scope::Inbox, "messages", 2);
    let acked = b.post_json("/acknowledgeMessage", &json!({"messageIds": ["k-1"]})).await.unwrap();
    assert_eq!(acked.0, 200, "{}", acked.1);
    ok(&mut a, &bk, "k-3", "three").await;
    assert_quota(&send(&mut a, &bk, "k-4", "four").await, Scope::Inbox, "messages", 2);
    s.stop();
}

/// A sender's usage is its row of `messagebox_sender_usage`, which counts expired rows until
/// they are swept. A's sender quota (2) is full; B acknowledges one of A's messages and A may
/// send one more at once (the delete names A's row); then both of A's rows expire, and once the
/// refusal's recheck interval has passed, the read that would confirm the refusal sweeps them
/// first: A sends two more, and the expired rows are gone from the database.
async fn sender_freed(db: &TestDb) {
    let s = TestServer::start(&db.url, &[("MESSAGE_BOX_MAX_SENDER_MESSAGES", "2")]).await;
    let (mut a, mut b) = (s.client(), s.client());
    let (ak, bk) = (hex(&a), hex(&b));
    ok(&mut a, &bk, "f-1", "one").await;
    ok(&mut a, &bk, "f-2", "two").await;
    assert_quota(&send(&mut a, &bk, "f-3", "three").await, Scope::Sender, "messages", 2);
    let acked = b.post_json("/acknowledgeMessage", &json!({"messageIds": ["f-1"]})).await.unwrap();
    assert_eq!(acked.0, 200, "{}", acked.1);
    ok(&mut a, &bk, "f-3", "three").await;
    assert_quota(&send(&mut a, &bk, "f-4", "four").await, Scope::Sender, "messages", 2);

    let past = if db.kind.is_mysql() { "'2001-01-01 00:00:00'" } else { "1" };
    db.exec(&format!("UPDATE messages SET expires_at = {past} WHERE sender = '{ak}'")).await;
    tokio::time::sleep(RECHECK_AFTER + Duration::from_millis(100)).await;
    ok(&mut a, &bk, "f-4", "four").await;
    ok(&mut a, &bk, "f-5", "five").await;
    assert_quota(&send(&mut a, &bk, "f-6", "six").await, Scope::Sender, "messages", 2);
    assert_eq!(count(db, "sender", &ak).await, 2, "the expired rows were swept");
    s.stop();
}

/// An idempotent re-send (same sender, id and recipient) stores nothing, so it is answered
/// 200 even at the quota the original send filled, and it does not count again: the quota
/// still refuses exactly the third new message.
async fn idempotent_resend(db: &TestDb) {
    let env = [("MESSAGE_BOX_MAX_SENDER_MESSAGES", "2"), ("MESSAGE_BOX_MAX_INBOX_MESSAGES", "2")];
    let s = TestServer::start(&db.url, &env).await;
    let (mut a, b) = (s.client(), s.client());
    let bk = hex(&b);
    ok(&mut a, &bk, "i-1", "one").await;
    ok(&mut a, &bk, "i-2", "two").await;
    for _ in 0..3 {
        ok(&mut a, &bk, "i-2", "two").await;
        ok(&mut a, &bk, "i-1", "one").await;
    }
    let both =
        json!({"message": {"recipients": [bk, bk], "messageBox": "inbox", "body": "x", "messageId": ["i-1", "i-1"]}});
    let got = a.post_json("/sendMessage", &both).await.unwrap();
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(count(db, "recipient", &bk).await, 2);
    assert_quota(&send(&mut a, &bk, "i-3", "three").await, Scope::Sender, "messages", 2);
    s.stop();
}

/// 8 clients send at once: one identity on 8 sessions against its sender quota (10), and
/// 8 identities against one inbox's quota (10). Exactly the quota is stored, never more
/// (bound: 0 rows), and every other send is a 429.
async fn concurrent_sends(db: &TestDb) {
    const CLIENTS: usize = 8;
    const EACH: usize = 5;
    const QUOTA: u64 = 10;
    let env = [("MESSAGE_BOX_MAX_SENDER_MESSAGES", "10"), ("MESSAGE_BOX_MAX_INBOX_MESSAGES", "10")];
    let s = TestServer::start(&db.url, &env).await;

    // One sender on 8 sessions, to 40 different recipients.
    let sender = ClientIdentity::random();
    let sk = sender.identity_hex().to_string();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut client = s.client_for(sender.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..EACH {
                    let to = ClientIdentity::random().identity_hex().to_string();
                    let got = send(&mut client, &to, &format!("s-{c}-{i}"), "payload").await;
                    if got.0 == 429 {
                        assert_quota(&got, Scope::Sender, "messages", QUOTA);
                    }
                    statuses.push(got.0);
                }
                statuses
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        for status in t.await.unwrap() {
            assert!(status == 200 || status == 429, "{status}");
            accepted += u64::from(status == 200);
        }
    }
    assert_eq!(accepted, QUOTA);
    assert_eq!(count(db, "sender", &sk).await, QUOTA);

    // 8 senders, one inbox.
    let bk = ClientIdentity::random().identity_hex().to_string();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut client = s.client();
            let bk = bk.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..EACH {
                    let got = send(&mut client, &bk, &format!("r-{c}-{i}"), "payload").await;
                    if got.0 == 429 {
                        assert_quota(&got, Scope::Inbox, "messages", QUOTA);
                    }
                    statuses.push(got.0);
                }
                statuses
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap().into_iter().filter(|s| *s == 200).count() as u64;
    }
    assert_eq!(accepted, QUOTA);
    assert_eq!(count(db, "recipient", &bk).await, QUOTA);
    s.stop();
}

/// The live path's gate (`store_live`) uses the same quotas: a refusal is
/// `LiveOutcome::QuotaExceeded`, and the duplicate of a stored message stays a success.
async fn live_path(db: &TestDb) {
    use messagebox::domain::send::{store_live, LiveMessage, LiveOutcome};
    use messagebox::domain::IdentityKey;
    use messagebox::store::StoreOptions;
    let quotas = QuotaLimits { inbox_messages: Some(1), ..QuotaLimits::NONE };
    let store = db.open(&StoreOptions { quotas, ..Default::default() }).await;
    let key = |c: ClientIdentity| IdentityKey::parse(c.identity_hex()).unwrap();
    let (a, b) = (key(ClientIdentity::random()), key(ClientIdentity::random()));
    let live = |id: &str| LiveMessage {
        sender: a.clone(),
        recipient: b.clone(),
        message_box: "inbox".into(),
        message_id: id.into(),
        body: "hi".into(),
    };
    assert_eq!(store_live(&store, None, live("l-1")).await, LiveOutcome::Stored);
    assert_eq!(store_live(&store, None, live("l-1")).await, LiveOutcome::Duplicate);
    let refused = QuotaExceeded { scope: Scope::Inbox, resource: Resource::Messages, limit: 1 };
    assert_eq!(store_live(&store, None, live("l-2")).await, LiveOutcome::QuotaExceeded(refused));
    store.flush().await.unwrap();
}

on_both_stores!(concurrent_sends_never_overshoot_a_byte_quota, concurrent_bytes, db);

/// 8 senders with bodies of different sizes against one inbox's byte quota (2000): the
/// stored envelopes never add up to more (bound: 0 bytes), and the inbox ends within one
/// largest message of the quota (no send was refused while it would still have fit).
async fn concurrent_bytes(db: &TestDb) {
    const QUOTA: u64 = 2000;
    let s = TestServer::start(&db.url, &[("MESSAGE_BOX_MAX_INBOX_BYTES", "2000")]).await;
    let bk = ClientIdentity::random().identity_hex().to_string();
    let tasks: Vec<_> = (0..8)
        .map(|c| {
            let mut client = s.client();
            let bk = bk.clone();
            tokio::spawn(async move {
                for i in 0..10 {
                    let body = "b".repeat(10 + 37 * ((c + i) % 5));
                    let got = send(&mut client, &bk, &format!("y-{c}-{i}"), &body).await;
                    if got.0 != 200 {
                        assert_quota(&got, Scope::Inbox, "bytes", QUOTA);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let sql = format!("SELECT COALESCE(SUM(OCTET_LENGTH(body)), 0) FROM messages WHERE recipient = '{bk}'");
    let stored: u64 = db.scalar(&sql).await.unwrap().parse().unwrap();
    assert!(stored <= QUOTA, "{stored} bytes stored over a quota of {QUOTA}");
    assert!(stored > QUOTA - envelope_bytes(&"b".repeat(10 + 37 * 4)), "{stored}");
    s.stop();
}
