//! Database work stays on the core (issue 12): requests a server core receives run their
//! store operations on that core (MySQL on the core's own pool, SQLite reads on the core's
//! read connection); only callers that are no core hand off to the store's threads. Counted
//! by `WriterStats::on_core` / `handed_off` (and `messagebox_store_operations_total`).

mod common;

use common::{on_both_stores, TestServer};
use serde_json::json;

on_both_stores!(requests_run_their_database_work_on_the_core, on_the_core);

async fn on_the_core(url: &str) {
    let s = TestServer::start(url, &[]).await;
    let store = s.app.api.store.clone();
    let mut alice = s.client();
    let me = alice.identity().identity_hex().to_string();
    let send = |id: &str| json!({"message": {"recipient": me, "messageBox": "inbox", "messageId": id, "body": "hi"}});

    // First sight of the identity (its quota usage, its default fee): on the core too, but
    // the start-up's own calls (the store's ping, the first retention sweep) are no core's.
    let (status, body) = alice.post_json("/sendMessage", &send("warm")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let before = store.stats();

    const ROUNDS: u64 = 5;
    for i in 0..ROUNDS {
        let (status, body) = alice.post_json("/sendMessage", &send(&format!("m{i}"))).await.unwrap();
        assert_eq!(status, 200, "{body}");
        let (status, body) = alice.post_json("/listMessages", &json!({"messageBox": "inbox"})).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["messages"].as_array().unwrap().len() as u64, i + 2, "{body}");
    }
    let after = store.stats();
    // Each list reads at least once; sends read their fees (unless cached).
    assert!(after.on_core - before.on_core >= ROUNDS, "{before:?} → {after:?}");
    assert_eq!(after.handed_off, before.handed_off, "no request hopped to the store's threads");
    // The inserts took the one hand-off, to the group-commit writer.
    assert_eq!(after.requests - before.requests, ROUNDS);

    // This test's runtime is no core: its call hands off (and still works).
    let page = store.list_messages(&me, "inbox", 100, 0).await.unwrap();
    assert_eq!(page.len() as u64, ROUNDS + 1);
    let last = store.stats();
    assert_eq!((last.on_core, last.handed_off), (after.on_core, after.handed_off + 1));
    s.stop();
}
