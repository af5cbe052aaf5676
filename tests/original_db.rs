//! The server started on a MySQL database the TypeScript original created (its knex DDL,
//! its bookkeeping rows, operator and user data in it), with and without the newer
//! upstream additions: it adopts the database as is and lists, sends and acknowledges on
//! it, and the original's operator data keeps governing (a modified `server_fees` row).

mod common;

use common::TestServer;
use messagebox::auth::{ClientIdentity, PrivateKey};
use serde_json::json;

async fn original_database_serves(upstream_extras: bool) {
    let Some(db) = common::TestDb::new(common::Kind::Mysql) else { return };
    common::create_original(&db, 5, ".js").await;
    if upstream_extras {
        db.exec(
            "create table auth_sessions (id int unsigned not null auto_increment primary key, session_nonce varchar(255) not null); \
             alter table messages add expires_at timestamp null; \
             insert into knex_migrations (name, batch, migration_time) values ('2026-02-01-001-upstream-future.js', 2, '2026-02-01 00:00:00')",
        )
        .await;
    }
    let alice = ClientIdentity::new(PrivateKey::random());
    let carol = PrivateKey::random().public_key().to_hex();
    let ak = alice.identity_hex().to_string();
    // What the original left behind: operator fees (changed by hand), a box, two messages,
    // a box-wide permission, a device.
    db.exec(&format!(
        "insert into server_fees (message_box, delivery_fee, created_at, updated_at) values ('notifications', 25, '2025-09-01 10:00:00', '2025-09-01 10:00:00'), ('inbox', 0, '2025-09-01 10:00:00', '2025-09-01 10:00:00'); \
         insert into messageBox (type, identityKey, created_at, updated_at) values ('inbox', '{ak}', '2025-09-01 10:00:00', '2025-09-01 10:00:00'); \
         insert into messages (messageBoxId, sender, recipient, body, messageId, created_at, updated_at) \
           select messageBoxId, '{carol}', '{ak}', '{{\"message\":\"old one\"}}', 'old-1', '2025-09-01 10:00:01', '2025-09-01 10:00:01' from messageBox; \
         insert into messages (messageBoxId, sender, recipient, body, messageId, created_at, updated_at) \
           select messageBoxId, '{carol}', '{ak}', 'raw websocket body', 'old-2', '2025-09-01 10:00:02', '2025-09-01 10:00:02' from messageBox; \
         insert into message_permissions (recipient, sender, message_box, recipient_fee, created_at, updated_at) values ('{ak}', NULL, 'inbox', 0, '2025-09-01 10:00:00', '2025-09-01 10:00:00'); \
         insert into device_registrations (identity_key, fcm_token, platform, created_at, updated_at, last_used, active) values ('{ak}', 'old-token-abcdefghijkl', 'ios', '2025-09-01 10:00:00', '2025-09-01 10:00:00', NULL, 1)"
    ))
    .await;

    let s = TestServer::start(&db.url, &[]).await;
    let mut a = s.client_for(alice.clone());

    // The original's rows list as the original listed them.
    let (st, v) = a.post_json("/listMessages", &json!({"messageBox": "inbox"})).await.unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["messages"],
        json!([
            {"messageId": "old-1", "body": "{\"message\":\"old one\"}", "sender": carol, "createdAt": "2025-09-01T10:00:01.000Z", "updatedAt": "2025-09-01T10:00:01.000Z"},
            {"messageId": "old-2", "body": "raw websocket body", "sender": carol, "createdAt": "2025-09-01T10:00:02.000Z", "updatedAt": "2025-09-01T10:00:02.000Z"}
        ])
    );
    // Existing devices and permissions are read from the original's tables.
    let (_, v) = a.get_json("/devices").await.unwrap();
    assert_eq!(v["devices"][0]["fcmToken"], "...cdefghijkl");
    let (_, v) = a.get_json("/permissions/get?messageBox=inbox").await.unwrap();
    assert_eq!(v["permission"]["createdAt"], "2025-09-01T10:00:00.000Z");

    // Sending into the existing box and a new one; the operator's fee governs quotes.
    let mut c = s.client();
    let (st, v) = c
        .post_json(
            "/sendMessage",
            &json!({"message": {"recipient": ak, "messageBox": "inbox", "body": "new", "messageId": "new-1"}}),
        )
        .await
        .unwrap();
    assert_eq!(st, 200, "{v}");
    let (st, _) = c
        .post_json(
            "/sendMessage",
            &json!({"message": {"recipient": ak, "messageBox": "fresh", "body": "n", "messageId": "new-2"}}),
        )
        .await
        .unwrap();
    assert_eq!(st, 200);
    let (_, q) = c.get_json(&format!("/permissions/quote?recipient={ak}&messageBox=notifications")).await.unwrap();
    assert_eq!(q["quote"]["deliveryFee"], 25, "the operator's server_fees row is kept");
    let (_, v) = a.post_json("/listMessages", &json!({"messageBox": "inbox"})).await.unwrap();
    let ids: Vec<&str> = v["messages"].as_array().unwrap().iter().map(|m| m["messageId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["old-1", "old-2", "new-1"]);

    // Acknowledging old and new rows.
    let (st, _) =
        a.post_json("/acknowledgeMessage", &json!({"messageIds": ["old-1", "new-1", "new-2"]})).await.unwrap();
    assert_eq!(st, 200);
    let (_, v) = a.post_json("/listMessages", &json!({"messageBox": "inbox"})).await.unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    assert_eq!(v["messages"][0]["messageId"], "old-2");

    // The original's bookkeeping is untouched (the TS server can still be pointed at it).
    let names = db.query("select name from knex_migrations order by id").await;
    assert_eq!(names.len(), if upstream_extras { 6 } else { 5 });
    assert_eq!(
        db.scalar("select delivery_fee from server_fees where message_box = 'notifications'").await.as_deref(),
        Some("25")
    );
    assert_eq!(db.scalar("select count(*) from server_fees").await.as_deref(), Some("2"), "no seed rows were added");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_created_by_the_original() {
    original_database_serves(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_created_by_the_original_with_upstream_additions() {
    original_database_serves(true).await;
}
