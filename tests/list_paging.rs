//! `/listMessages` paging and its byte budget (issue 9, D2): a page stops at
//! `MESSAGE_BOX_LIST_MAX_RESPONSE_BYTES`, its rows are one store read bounded by it, the answer keeps
//! 1.1.5's `{status, messages}` unless the request paged or the page was cut, and the paging
//! errors carry the newer upstream's texts. SQLite and MySQL.

mod common;

use std::process::Stdio;
use std::sync::Arc;

use common::process::{vm_hwm, Proc};
use common::{assert_error, on_both_stores, TestDb, TestServer};
use messagebox::auth::{ClientIdentity, PrivateKey};
use messagebox::client::AuthClient;
use messagebox::store::{NewMessage, StoreOptions};
use serde_json::{json, Value};

fn send_body(to: &str, box_name: &str, id: &str, body: &str) -> Value {
    json!({"message": {"recipient": to, "messageBox": box_name, "body": body, "messageId": id}})
}

async fn list(client: &mut AuthClient, body: Value) -> (u16, Value) {
    client.post_json("/listMessages", &body).await.unwrap()
}

fn ids(answer: &Value) -> Vec<String> {
    answer["messages"].as_array().unwrap().iter().map(|m| m["messageId"].as_str().unwrap().to_string()).collect()
}

fn keys(answer: &Value) -> Vec<String> {
    answer.as_object().unwrap().keys().cloned().collect()
}

const PAGED_KEYS: [&str; 6] = ["status", "messages", "limit", "offset", "nextOffset", "hasMore"];

on_both_stores!(d2_a_full_box_is_listed_within_the_byte_budget, d2_full_box, db);

/// D2: a victim's box holds 100 × 1 MiB messages; the victim lists it with no paging. The
/// answer is cut at the budget (8 MiB in the standard profile) with `hasMore: true` and
/// `nextOffset`, and paging on with `offset` reaches every message exactly once. The server's
/// peak RSS (VmHWM of the binary) grows by less than 6 × the budget for the list (measured
/// 29–30 MiB on SQLite, 38–39 MiB on MySQL, the same before and after the page became one
/// store call: the page, the 8 stored rows up to the one past the budget, the database's
/// cache or the MySQL client's packet buffers, and freed rows the allocator keeps resident)
/// and by less than 10 × over the 15 pages. Before: the whole box was one answer — RSS
/// +460 MB for one list (the figure), and a box larger than memory could not be
/// listed at all.
async fn d2_full_box(db: &TestDb) {
    const BODY: usize = 1 << 20;
    const MESSAGES: usize = 100;
    const BUDGET: u64 = 8 << 20;
    let victim = ClientIdentity::random();
    let victim_key = victim.identity_hex().to_string();
    let sender = ClientIdentity::random().identity_hex().to_string();
    // Filled through the store: the send path caps bodies and (track C2) inboxes.
    {
        let store = db.open(&StoreOptions::default()).await;
        let body: Arc<str> = Arc::from(json!({ "message": "x".repeat(BODY) }).to_string());
        for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(10) {
            let rows = chunk
                .iter()
                .map(|i| NewMessage {
                    message_id: format!("d2-{i:03}"),
                    recipient: victim_key.clone(),
                    box_type: "inbox".into(),
                    sender: sender.clone(),
                    body: body.clone(),
                })
                .collect();
            store.insert_messages(rows).await.unwrap();
        }
        let small: Vec<NewMessage> = (0..3)
            .map(|i| NewMessage {
                message_id: format!("warm-{i}"),
                recipient: victim_key.clone(),
                box_type: "warm".into(),
                sender: sender.clone(),
                body: Arc::from("{\"message\":\"hi\"}"),
            })
            .collect();
        store.insert_messages(small).await.unwrap();
        store.flush().await.unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let key = PrivateKey::random().to_hex();
    let env = [("DATABASE_URL", db.url.as_str()), ("SERVER_PRIVATE_KEY", key.as_str()), ("LOG_FORMAT", "json")];
    let server = Proc::spawn(&env, dir.path(), Stdio::null());
    let pid = server.child.as_ref().unwrap().id();
    let mut client = AuthClient::new(victim, server.addr);
    // Warm up the same path (session, statements, buffers) on a small box.
    let (status, warm) = list(&mut client, json!({"messageBox": "warm"})).await;
    assert_eq!((status, warm["messages"].as_array().unwrap().len()), (200, 3), "{warm}");
    let before = vm_hwm(pid);

    let started = std::time::Instant::now();
    let (status, page) = list(&mut client, json!({"messageBox": "inbox"})).await;
    let elapsed = started.elapsed();
    let grown = vm_hwm(pid).saturating_sub(before);
    assert_eq!(status, 200, "{}", page["code"]);
    assert_eq!(keys(&page), PAGED_KEYS, "a cut page says so");
    let count = page["messages"].as_array().unwrap().len();
    // 256 + 7 × (1 MiB + ~230) fits 8 MiB; an eighth item does not.
    assert_eq!(count, 7);
    assert_eq!((page["hasMore"].clone(), page["nextOffset"].clone()), (json!(true), json!(count)));
    assert_eq!((page["limit"].clone(), page["offset"].clone()), (json!(1000), json!(0)));
    assert_eq!(ids(&page), (0..count).map(|i| format!("d2-{i:03}")).collect::<Vec<_>>());
    // The page (budget), the rows read for it, the database's cache and what the allocator
    // keeps: 29–39 MiB measured, against a 100 MiB box and the
    // +460 MB before. The bound is a multiple of the budget, not of the box.
    assert!(grown < 6 * BUDGET, "VmHWM grew by {} MiB for one list", grown >> 20);
    eprintln!("D2 ({:?}): VmHWM +{} KiB for a 100 MiB box, answered in {elapsed:?}", db.kind, grown >> 10);

    // Paging on reaches every message exactly once, in order.
    let mut seen = ids(&page);
    let mut offset = count;
    loop {
        let (status, page) = list(&mut client, json!({"messageBox": "inbox", "offset": offset})).await;
        assert_eq!(status, 200, "{}", page["code"]);
        let got = ids(&page);
        assert_eq!(page["offset"], json!(offset));
        offset += got.len();
        assert_eq!(page["nextOffset"], json!(offset));
        seen.extend(got);
        if page["hasMore"] == json!(false) {
            break;
        }
    }
    assert_eq!(seen, (0..MESSAGES).map(|i| format!("d2-{i:03}")).collect::<Vec<_>>());
    let peak = vm_hwm(pid).saturating_sub(before);
    assert!(peak < 10 * BUDGET, "VmHWM grew by {} MiB over the paging", peak >> 20);
    drop(server);
}

on_both_stores!(paging_shape_and_errors, shape_and_errors, db);

/// The answer's shape: 1.1.5's `{status, messages}` when the request did not page and
/// nothing was cut; the paging fields when it paged (`limit`, `offset` or `skip`) or the page
/// was cut by its limit or the budget. `hasMore` when one more row exists beyond the limit;
/// here a MySQL query asks for at most 16 rows (4 × budget 4096 / body cap 1000). The paging
/// errors.
async fn shape_and_errors(db: &TestDb) {
    let env = [
        ("MESSAGE_BOX_LIST_DEFAULT_LIMIT", "5"),
        ("MESSAGE_BOX_LIST_MAX_LIMIT", "50"),
        ("MESSAGE_BOX_LIST_MAX_OFFSET", "20"),
        ("MESSAGE_BOX_LIST_MAX_RESPONSE_BYTES", "4096"),
        ("MESSAGE_BOX_MAX_MESSAGE_BODY_BYTES", "1000"),
    ];
    let s = TestServer::start(&db.url, &env).await;
    let (mut alice, mut bob) = (s.client(), s.client());
    let bob_key = bob.identity().identity_hex().to_string();
    for i in 0..3 {
        let got =
            alice.post_json("/sendMessage", &send_body(&bob_key, "inbox", &format!("m-{i}"), "hi")).await.unwrap();
        assert_eq!(got.0, 200, "{}", got.1);
    }

    // Unpaged, nothing cut: exactly 1.1.5's shape.
    let (status, page) = list(&mut bob, json!({"messageBox": "inbox"})).await;
    assert_eq!(status, 200);
    assert_eq!(keys(&page), ["status", "messages"]);
    assert_eq!(ids(&page), ["m-0", "m-1", "m-2"]);
    let item = &page["messages"][0];
    assert_eq!(
        item.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["messageId", "body", "sender", "createdAt", "updatedAt"]
    );
    assert_eq!(item["body"], "{\"message\":\"hi\"}");
    assert_eq!(list(&mut bob, json!({"messageBox": "none"})).await.1, json!({"status": "success", "messages": []}));
    let (_, unpaged) = list(&mut bob, json!({"messageBox": "inbox", "limit": null, "offset": null})).await;
    assert_eq!(keys(&unpaged), ["status", "messages"], "null is not given");

    // Paged: the fields follow `messages`; hasMore from the row beyond the limit.
    let (_, page) = list(&mut bob, json!({"messageBox": "inbox", "limit": 2})).await;
    assert_eq!(keys(&page), PAGED_KEYS);
    assert_eq!(
        (&page["limit"], &page["offset"], &page["nextOffset"], &page["hasMore"]),
        (&json!(2), &json!(0), &json!(2), &json!(true))
    );
    let (_, page) = list(&mut bob, json!({"messageBox": "inbox", "limit": 3})).await;
    assert_eq!((ids(&page).len(), &page["nextOffset"], &page["hasMore"]), (3, &json!(3), &json!(false)));
    let (_, page) = list(&mut bob, json!({"messageBox": "inbox", "offset": 1})).await;
    assert_eq!(ids(&page), ["m-1", "m-2"]);
    assert_eq!(
        (&page["limit"], &page["offset"], &page["nextOffset"], &page["hasMore"]),
        (&json!(5), &json!(1), &json!(3), &json!(false))
    );
    let (_, page) = list(&mut bob, json!({"messageBox": "inbox", "skip": 2, "offset": 2})).await;
    assert_eq!((ids(&page), &page["offset"]), (vec!["m-2".to_string()], &json!(2)));
    let (_, page) = list(&mut bob, json!({"messageBox": "inbox", "skip": 2})).await;
    assert_eq!(ids(&page), ["m-2"], "skip is offset's alias");
    let (_, page) = list(&mut bob, json!({"messageBox": "none", "offset": 4})).await;
    assert_eq!(
        page,
        json!({"status": "success", "messages": [], "limit": 5, "offset": 4, "nextOffset": 4, "hasMore": false})
    );

    // Unpaged but cut by the default limit (5 of 6, the 6th read to know): the fields say so.
    for i in 3..6 {
        let got =
            alice.post_json("/sendMessage", &send_body(&bob_key, "inbox", &format!("m-{i}"), "hi")).await.unwrap();
        assert_eq!(got.0, 200, "{}", got.1);
    }
    let (_, page) = list(&mut bob, json!({"messageBox": "inbox"})).await;
    assert_eq!(keys(&page), PAGED_KEYS);
    assert_eq!(ids(&page), ["m-0", "m-1", "m-2", "m-3", "m-4"]);
    assert_eq!((&page["nextOffset"], &page["hasMore"]), (&json!(5), &json!(true)));

    // Unpaged but cut by the budget: 256 + 3 × (~1150 + 1) fits 4096, a fourth item does not.
    let big = "b".repeat(900);
    for i in 0..5 {
        let got =
            alice.post_json("/sendMessage", &send_body(&bob_key, "big", &format!("big-{i}"), &big)).await.unwrap();
        assert_eq!(got.0, 200, "{}", got.1);
    }
    let (status, page) = list(&mut bob, json!({"messageBox": "big"})).await;
    assert_eq!(status, 200);
    assert_eq!(keys(&page), PAGED_KEYS);
    assert_eq!(ids(&page), ["big-0", "big-1", "big-2"]);
    assert_eq!((&page["nextOffset"], &page["hasMore"], &page["limit"]), (&json!(3), &json!(true), &json!(5)));
    let answer_bytes = serde_json::to_vec(&page).unwrap().len();
    assert!(answer_bytes <= 4096, "the answer fits the budget: {answer_bytes}");
    let (_, rest) = list(&mut bob, json!({"messageBox": "big", "offset": 3})).await;
    assert_eq!((ids(&rest), &rest["hasMore"]), (vec!["big-3".to_string(), "big-4".to_string()], &json!(false)));

    // The paging errors (1.1.5 ignored these fields; its own two errors come first).
    let bad_limit = "limit must be an integer between 1 and 50.";
    for limit in [json!(0), json!(51), json!(1.5), json!("5"), json!(-3)] {
        let got = list(&mut bob, json!({"messageBox": "inbox", "limit": limit})).await;
        assert_error(&got, 400, "ERR_INVALID_LIMIT", bad_limit);
    }
    let bad_offset = "offset must be an integer between 0 and 20.";
    for offset in [json!(-1), json!(21), json!("1"), json!(0.5)] {
        let got = list(&mut bob, json!({"messageBox": "inbox", "offset": offset})).await;
        assert_error(&got, 400, "ERR_INVALID_OFFSET", bad_offset);
    }
    let got = list(&mut bob, json!({"messageBox": "inbox", "skip": 21})).await;
    assert_error(&got, 400, "ERR_INVALID_OFFSET", bad_offset);
    let got = list(&mut bob, json!({"messageBox": "inbox", "offset": 1, "skip": 2})).await;
    assert_error(&got, 400, "ERR_INVALID_OFFSET", "offset and skip must match when both are provided.");
    let got = list(&mut bob, json!({"messageBox": 7, "limit": 0})).await;
    assert_error(&got, 400, "ERR_INVALID_MESSAGEBOX", "MessageBox name must be a string!");
    let got = list(&mut bob, json!({"limit": 0})).await;
    assert_error(&got, 400, "ERR_MESSAGEBOX_REQUIRED", "Please provide the name of a valid MessageBox!");
    s.stop();

    // A first message larger than the whole budget: 413; the client can page past it.
    let env = [("MESSAGE_BOX_LIST_MAX_RESPONSE_BYTES", "4096"), ("MESSAGE_BOX_MAX_MESSAGE_BODY_BYTES", "8000")];
    let s = TestServer::start(&db.url, &env).await;
    let mut alice = s.client();
    let mut carol = s.client();
    let carol_key = carol.identity().identity_hex().to_string();
    for (id, body) in [("a-huge", "h".repeat(5000)), ("b-after", "small".to_string())] {
        let got = alice.post_json("/sendMessage", &send_body(&carol_key, "inbox", id, &body)).await.unwrap();
        assert_eq!(got.0, 200, "{}", got.1);
    }
    let got = list(&mut carol, json!({"messageBox": "inbox"})).await;
    assert_error(
        &got,
        413,
        "ERR_MESSAGE_RESPONSE_TOO_LARGE",
        "The oldest message exceeds the configured listing response budget.",
    );
    let (status, page) = list(&mut carol, json!({"messageBox": "inbox", "offset": 1})).await;
    assert_eq!((status, ids(&page)), (200, vec!["b-after".to_string()]));
    s.stop();
}
