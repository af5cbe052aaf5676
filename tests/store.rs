//! The store suite: the same cases against SQLite (in memory and a file) and MySQL.
//!
//! MySQL cases need `MESSAGEBOX_TEST_MYSQL_URL` (see `tests/common/mod.rs`), e.g.
//! `MESSAGEBOX_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/ MESSAGEBOX_REQUIRE_ALL=1 cargo test --test store`.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{create_original, with_store, Kind, TestDb, KNEX_NAMES, ORIGINAL_DDL};
use messagebox::store::{
    self, mysql::MysqlStore, now, Backend, DeviceRegistration, InsertOutcome, NewMessage, Store, StoreError,
    StoreOptions,
};

use InsertOutcome::{Duplicate, Inserted};

/// `store_test!(name [kinds…] |db, store| body)` generates `name::<kind>` tests, each with a
/// fresh database and a migrated store.
macro_rules! store_test {
    ($name:ident [$($kind:ident),+] |$db:ident, $store:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                #[allow(unused_variables)]
                fn $kind() {
                    with_store(Kind::from_name(stringify!($kind)), StoreOptions::default(), |$db: Arc<TestDb>, $store: Store| async move $body);
                }
            )+
        }
    };
    ($name:ident |$db:ident, $store:ident| $body:block) => {
        store_test!($name [sqlite_memory, sqlite_file, mysql] |$db, $store| $body);
    };
}

const ALICE: &str = "02aaaa000000000000000000000000000000000000000000000000000000000001";
const BOB: &str = "02bbbb000000000000000000000000000000000000000000000000000000000002";
const CAROL: &str = "02cccc000000000000000000000000000000000000000000000000000000000003";

fn msg(id: &str, recipient: &str, box_type: &str) -> NewMessage {
    NewMessage {
        message_id: id.into(),
        recipient: recipient.into(),
        box_type: box_type.into(),
        sender: CAROL.into(),
        body: format!("{{\"message\":\"body of {id}\"}}").into(),
    }
}

async fn ids(store: &Store, recipient: &str, box_type: &str) -> Vec<String> {
    store.list_messages(recipient, box_type, 1000, 0).await.unwrap().into_iter().map(|m| m.message_id).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------- payment replays

store_test!(
    payments_are_claimed_once | db,
    store | {
        let txid = "42f2174455ed410e16a86fed7036e775f74c37ba38379fe096c9bfb07d82afec";
        assert!(store.claim_payment(txid).await.unwrap());
        assert!(!store.claim_payment(txid).await.unwrap(), "a second claim is a replay");
        // Released (the send bought nothing): claimable again, once.
        store.release_payment(txid).await.unwrap();
        store.release_payment(txid).await.unwrap();
        assert!(store.claim_payment(txid).await.unwrap());
        // Racing claims of one txid: exactly one wins.
        let other = "00f2174455ed410e16a86fed7036e775f74c37ba38379fe096c9bfb07d82af00";
        let claims = (0..8).map(|_| {
            let store = store.clone();
            async move { store.claim_payment(other).await }
        });
        let wins = futures_join_all(claims).await;
        assert_eq!(wins.iter().filter(|w| *w.as_ref().unwrap()).count(), 1);
    }
);

// ---------------------------------------------------------------- schema and fees

store_test!(
    migrate_is_idempotent_and_seeds_fees | db,
    store | {
        let again = store.migrate().await.unwrap();
        assert!(again.applied.is_empty(), "second run applied {:?}", again.applied);
        assert_eq!(store.delivery_fee("notifications").await.unwrap(), Some(10));
        assert_eq!(store.delivery_fee("inbox").await.unwrap(), Some(0));
        assert_eq!(store.delivery_fee("payment_inbox").await.unwrap(), Some(0));
        assert_eq!(store.delivery_fee("other").await.unwrap(), None);
        // The collation, not Rust, compares.
        assert_eq!(store.delivery_fee("NOTIFICATIONS").await.unwrap(), Some(10));
    }
);

store_test!(
    server_fees_list_and_set | db,
    store | {
        let rows = |fees: Vec<store::ServerFee>| -> Vec<(String, i64)> {
            fees.into_iter().map(|f| (f.message_box, f.delivery_fee)).collect()
        };
        let seeded = store.server_fees().await.unwrap();
        assert_eq!(
            rows(seeded.clone()),
            [("inbox".into(), 0), ("notifications".into(), 10), ("payment_inbox".into(), 0)],
            "the migration's seed, sorted by box"
        );
        assert!(seeded.iter().all(|f| f.created_at.is_some() && f.updated_at.is_some()));

        // A new box: no previous fee; it is listed in order and read by the fee gate.
        assert_eq!(store.set_delivery_fee("alerts", 4).await.unwrap(), None);
        assert_eq!(store.delivery_fee("alerts").await.unwrap(), Some(4));
        let listed = store.server_fees().await.unwrap();
        assert_eq!(listed[0].message_box, "alerts");
        let alerts = &listed[0];
        assert!(alerts.created_at.unwrap() >= now() - 5 && alerts.updated_at == alerts.created_at, "{alerts:?}");

        // An update returns the fee it replaced; the collation finds the row, whose name stays.
        assert_eq!(store.set_delivery_fee("notifications", 25).await.unwrap(), Some(10));
        assert_eq!(store.set_delivery_fee("NOTIFICATIONS", 30).await.unwrap(), Some(25));
        assert_eq!(store.set_delivery_fee("notifications", 30).await.unwrap(), Some(30));
        assert_eq!(store.delivery_fee("notifications").await.unwrap(), Some(30));
        // The whole column range.
        assert_eq!(store.set_delivery_fee("payment_inbox", i32::MAX).await.unwrap(), Some(0));
        assert_eq!(
            rows(store.server_fees().await.unwrap()),
            [
                ("alerts".into(), 4),
                ("inbox".into(), 0),
                ("notifications".into(), 30),
                ("payment_inbox".into(), i64::from(i32::MAX))
            ]
        );
    }
);

// `updated_at` moves on an update and `created_at` stays: the rows are backdated by raw SQL
// first (the schema has second precision), so a file or MySQL database.
store_test!(server_fee_updates_move_updated_at [sqlite_file, mysql] |db, store| {
    let old = if db.kind.is_mysql() { "'2025-09-01 10:00:00'" } else { "1756720800" };
    db.exec(&format!("UPDATE server_fees SET created_at = {old}, updated_at = {old}")).await;
    let before = store.server_fees().await.unwrap();
    let inbox = before.iter().find(|f| f.message_box == "inbox").unwrap().clone();
    assert_eq!((inbox.created_at, inbox.updated_at), (Some(1_756_720_800), Some(1_756_720_800)));

    assert_eq!(store.set_delivery_fee("inbox", 2).await.unwrap(), Some(0));
    let after = store.server_fees().await.unwrap();
    let inbox = after.iter().find(|f| f.message_box == "inbox").unwrap();
    assert_eq!(inbox.created_at, Some(1_756_720_800), "created_at stays");
    assert!(inbox.updated_at.unwrap() >= now() - 5, "updated_at moved: {inbox:?}");
    let others = after.iter().filter(|f| f.message_box != "inbox");
    assert!(others.into_iter().all(|f| f.updated_at == Some(1_756_720_800)), "only that row changed: {after:?}");
});

// Concurrent upserts of one new box: one inserts, the others update, no error and one row.
store_test!(concurrent_server_fee_upserts [sqlite_file, mysql] |db, store| {
    let mut tasks = Vec::new();
    for fee in 1..=8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.set_delivery_fee("raced", fee).await }));
    }
    let mut previous = Vec::new();
    for task in tasks {
        previous.push(task.await.unwrap().unwrap());
    }
    assert_eq!(previous.iter().filter(|p| p.is_none()).count(), 1, "one insert: {previous:?}");
    let rows = db.query("SELECT COUNT(*) FROM server_fees WHERE message_box = 'raced'").await;
    assert_eq!(rows[0][0].as_deref(), Some("1"));
});

store_test!(
    recipient_fees_default_insert_and_precedence | db,
    store | {
        // No rule: a box-wide default is created and returned.
        assert_eq!(store.recipient_fees(CAROL, "inbox", &strings(&[ALICE]), 0).await.unwrap(), vec![0]);
        let created = store.get_permission(ALICE, None, "inbox").await.unwrap().expect("default row");
        assert_eq!((created.sender, created.recipient_fee), (None, 0));
        assert!(created.created_at.unwrap() >= now() - 5);
        assert_eq!(
            store.recipient_fees(CAROL, "notifications", &strings(&[ALICE, BOB]), 10).await.unwrap(),
            vec![10, 10]
        );
        // Once created, the stored value wins over a different default.
        assert_eq!(store.recipient_fees(CAROL, "inbox", &strings(&[ALICE]), 99).await.unwrap(), vec![0]);

        // Sender-specific beats box-wide; other senders get the box-wide rule.
        store.set_permission(ALICE, Some(CAROL), "inbox", -1).await.unwrap();
        store.set_permission(ALICE, None, "inbox", 7).await.unwrap();
        assert_eq!(store.recipient_fees(CAROL, "inbox", &strings(&[ALICE]), 0).await.unwrap(), vec![-1]);
        assert_eq!(store.recipient_fees(BOB, "inbox", &strings(&[ALICE]), 0).await.unwrap(), vec![7]);
        // Mixed recipients, a repeated one, and case-insensitive keys, in one call.
        let fees = store
            .recipient_fees(CAROL, "inbox", &strings(&[ALICE, BOB, ALICE, &ALICE.to_uppercase()]), 3)
            .await
            .unwrap();
        assert_eq!(fees, vec![-1, 3, -1, -1]);
        let (rows, total) = store.list_permissions(BOB, Some("inbox"), 100, 0, true).await.unwrap();
        assert_eq!((rows.len(), total), (1, 1), "one default row for BOB despite two mentions");
        assert_eq!(store.recipient_fees(CAROL, "inbox", &[], 0).await.unwrap(), Vec::<i64>::new());

        // Many recipients (more than one lookup statement's worth).
        let many: Vec<String> = (0..300).map(|i| format!("03{i:064}")).collect();
        let fees = store.recipient_fees(CAROL, "bulk", &many, 4).await.unwrap();
        assert_eq!(fees, vec![4; 300]);
        store.set_permission(&many[299], Some(CAROL), "bulk", 12).await.unwrap();
        let fees = store.recipient_fees(CAROL, "bulk", &many, 0).await.unwrap();
        assert_eq!((fees[0], fees[299]), (4, 12));
    }
);

// First-time senders racing for the same boxes' default rows: MariaDB answers some of the
// `INSERT … SELECT … WHERE NOT EXISTS` with a deadlock or, for the AUTO-INC lock, error 1467
// ("Failed to read auto-increment value"); every caller still gets its fee and each box ends
// with exactly one default row.
store_test!(concurrent_first_fee_lookups [sqlite_file, mysql] |db, store| {
    let recipients: Vec<String> = (0..8).map(|i| format!("03{:064x}", i + 1)).collect();
    let mut tasks = Vec::new();
    for round in 0..8 {
        for sender in 0..24usize {
            let (store, recipients) = (store.clone(), recipients.clone());
            tasks.push(tokio::spawn(async move {
                let mine: Vec<String> = recipients.iter().cycle().skip(sender + round).take(3).cloned().collect();
                store.recipient_fees(&format!("02{sender:064x}"), "inbox", &mine, 5).await
            }));
        }
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), vec![5, 5, 5]);
    }
    for r in &recipients {
        assert_eq!(store.get_permission(r, None, "inbox").await.unwrap().map(|p| p.recipient_fee), Some(5), "{r}");
    }
});

store_test!(box_wide_newest_wins_over_preexisting_duplicates [sqlite_file, mysql] |db, store| {
    // The original inserted a new box-wide row on every set: databases hold duplicates.
    let ts = if db.kind.is_mysql() { "UTC_TIMESTAMP()".to_string() } else { now().to_string() };
    db.exec(&format!(
        "INSERT INTO message_permissions (recipient, sender, message_box, recipient_fee, created_at, updated_at) \
         VALUES ('{ALICE}', NULL, 'inbox', 1, {ts}, {ts}); \
         INSERT INTO message_permissions (recipient, sender, message_box, recipient_fee, created_at, updated_at) \
         VALUES ('{ALICE}', NULL, 'inbox', 2, {ts}, {ts});"
    ))
    .await;
    assert_eq!(store.recipient_fees(CAROL, "inbox", &strings(&[ALICE]), 0).await.unwrap(), vec![2]);
    assert_eq!(store.get_permission(ALICE, None, "inbox").await.unwrap().unwrap().recipient_fee, 2);
    // An upsert updates the newest row and adds none.
    store.set_permission(ALICE, None, "inbox", 9).await.unwrap();
    assert_eq!(store.recipient_fees(CAROL, "inbox", &strings(&[ALICE]), 0).await.unwrap(), vec![9]);
    let fees: Vec<String> = db
        .query(&format!("SELECT recipient_fee FROM message_permissions WHERE recipient = '{ALICE}' ORDER BY id"))
        .await
        .into_iter()
        .map(|r| r[0].clone().unwrap())
        .collect();
    assert_eq!(fees, ["1", "9"]);
});

store_test!(
    set_permission_upserts | db,
    store | {
        store.set_permission(ALICE, Some(BOB), "inbox", 5).await.unwrap();
        store.set_permission(ALICE, Some(BOB), "inbox", 6).await.unwrap();
        store.set_permission(ALICE, None, "inbox", 1).await.unwrap();
        store.set_permission(ALICE, None, "inbox", 2).await.unwrap();
        store.set_permission(ALICE, None, "INBOX", 3).await.unwrap();
        let (rows, total) = store.list_permissions(ALICE, None, 100, 0, true).await.unwrap();
        assert_eq!(total, 2, "{rows:?}");
        assert_eq!(rows[0].sender, None);
        assert_eq!(rows[0].recipient_fee, 3);
        assert_eq!(rows[1].sender.as_deref(), Some(BOB));
        assert_eq!(rows[1].recipient_fee, 6);
        let exact = store.get_permission(ALICE, Some(BOB), "inbox").await.unwrap().unwrap();
        assert_eq!((exact.sender.as_deref(), exact.message_box.as_str(), exact.recipient_fee), (Some(BOB), "inbox", 6));
        assert!(exact.updated_at.unwrap() >= exact.created_at.unwrap());
    }
);

store_test!(
    get_permission_is_exact | db,
    store | {
        assert_eq!(store.get_permission(ALICE, None, "inbox").await.unwrap(), None);
        store.set_permission(ALICE, None, "inbox", 4).await.unwrap();
        // No fallback from sender-specific to box-wide, and no auto-creation.
        assert_eq!(store.get_permission(ALICE, Some(BOB), "inbox").await.unwrap(), None);
        assert_eq!(store.get_permission(ALICE, None, "other").await.unwrap(), None);
        assert_eq!(store.get_permission(BOB, None, "inbox").await.unwrap(), None);
        assert_eq!(store.get_permission(ALICE, None, "inbox").await.unwrap().unwrap().recipient_fee, 4);
        let (_, total) = store.list_permissions(ALICE, None, 100, 0, true).await.unwrap();
        assert_eq!(total, 1);
    }
);

store_test!(
    list_permissions_orders_and_pages | db,
    store | {
        store.set_permission(ALICE, Some(BOB), "b", 1).await.unwrap();
        store.set_permission(ALICE, Some(CAROL), "b", 2).await.unwrap();
        store.set_permission(ALICE, None, "b", 3).await.unwrap();
        store.set_permission(ALICE, Some(BOB), "a", 4).await.unwrap();
        store.set_permission(BOB, None, "a", 5).await.unwrap();
        let fees = |rows: &[store::Permission]| rows.iter().map(|p| p.recipient_fee).collect::<Vec<_>>();
        // Box asc; box-wide first; then created_at (ties by id) in the requested direction.
        let (asc, total) = store.list_permissions(ALICE, None, 100, 0, true).await.unwrap();
        assert_eq!((fees(&asc), total), (vec![4, 3, 1, 2], 4));
        let (desc, _) = store.list_permissions(ALICE, None, 100, 0, false).await.unwrap();
        assert_eq!(fees(&desc), vec![4, 3, 2, 1]);
        let (page, total) = store.list_permissions(ALICE, None, 2, 1, true).await.unwrap();
        assert_eq!((fees(&page), total), (vec![3, 1], 4));
        let (only_b, total) = store.list_permissions(ALICE, Some("b"), 100, 0, true).await.unwrap();
        assert_eq!((fees(&only_b), total), (vec![3, 1, 2], 3));
        let (none, total) = store.list_permissions(ALICE, Some("b"), 10, 10, true).await.unwrap();
        assert_eq!((none.len(), total), (0, 3));
        let (nobody, total) = store.list_permissions(CAROL, None, 10, 0, true).await.unwrap();
        assert_eq!((nobody.len(), total), (0, 0));
    }
);

// ---------------------------------------------------------------- messages

store_test!(
    insert_and_list | db,
    store | {
        let before = now();
        let out = store.insert_messages(vec![msg("m1", ALICE, "inbox")]).await.unwrap();
        assert_eq!(out, vec![Inserted]);
        let listed = store.list_messages(ALICE, "inbox", 10, 0).await.unwrap();
        assert_eq!(listed.len(), 1);
        let m = &listed[0];
        assert_eq!((m.message_id.as_str(), m.sender.as_str()), ("m1", CAROL));
        assert_eq!(m.body, "{\"message\":\"body of m1\"}");
        assert!(
            m.created_at >= before - 1 && m.created_at <= now() + 1,
            "created_at {} vs now {}",
            m.created_at,
            now()
        );
        assert_eq!(m.created_at, m.updated_at);
        // Another box, another recipient, a box that does not exist.
        assert!(store.list_messages(ALICE, "other", 10, 0).await.unwrap().is_empty());
        assert!(store.list_messages(BOB, "inbox", 10, 0).await.unwrap().is_empty());
        assert_eq!(store.insert_messages(Vec::new()).await.unwrap(), Vec::new());
        // Box names and keys compare case-insensitively, as in MySQL.
        assert_eq!(ids(&store, &ALICE.to_uppercase(), "INBOX").await, ["m1"]);
        store.insert_messages(vec![msg("m2", &ALICE.to_uppercase(), "Inbox")]).await.unwrap();
        assert_eq!(ids(&store, ALICE, "inbox").await, ["m1", "m2"]);
    }
);

store_test!(boxes_are_created_on_insert_only [sqlite_file, mysql] |db, store| {
    store.list_messages(ALICE, "inbox", 10, 0).await.unwrap();
    assert_eq!(db.scalar("SELECT COUNT(*) FROM messageBox").await.as_deref(), Some("0"));
    store.insert_messages(vec![msg("m1", ALICE, "inbox"), msg("m2", BOB, "inbox"), msg("m3", ALICE, "inbox")])
        .await
        .unwrap();
    store.insert_messages(vec![msg("m4", ALICE, "INBOX")]).await.unwrap();
    assert_eq!(db.scalar("SELECT COUNT(*) FROM messageBox").await.as_deref(), Some("2"));
    let boxes = db
        .query(&format!("SELECT COUNT(DISTINCT messageBoxId) FROM messages WHERE recipient = '{ALICE}'"))
        .await;
    assert_eq!(boxes[0][0].as_deref(), Some("1"));
});

store_test!(
    duplicates_within_and_across_batches | db,
    store | {
        let out = store
            .insert_messages(vec![msg("a", ALICE, "inbox"), msg("b", ALICE, "inbox"), msg("a", BOB, "inbox")])
            .await
            .unwrap();
        assert_eq!(out, vec![Inserted, Inserted, Duplicate]);
        let out = store.insert_messages(vec![msg("b", ALICE, "inbox"), msg("c", ALICE, "inbox")]).await.unwrap();
        assert_eq!(out, vec![Duplicate, Inserted]);
        // Ids collide case-insensitively: within a batch and against stored rows.
        let out = store
            .insert_messages(vec![msg("ABC", ALICE, "inbox"), msg("abc", ALICE, "inbox"), msg("C", ALICE, "other")])
            .await
            .unwrap();
        assert_eq!(out, vec![Inserted, Duplicate, Duplicate]);
        assert_eq!(store.insert_messages(vec![msg("aBc", BOB, "x")]).await.unwrap(), vec![Duplicate]);
        // (Batches may straddle a second, so compare as a set here; ordering has its own test.)
        let stored: HashSet<String> = ids(&store, ALICE, "inbox").await.into_iter().collect();
        assert_eq!(stored, HashSet::from(["a", "ABC", "b", "c"].map(String::from)));
        assert!(ids(&store, BOB, "inbox").await.is_empty(), "the duplicate id for BOB was ignored");
        // The first stored body stays.
        let first = store.list_messages(ALICE, "inbox", 1, 0).await.unwrap();
        assert_eq!(first[0].body, "{\"message\":\"body of a\"}");

        // The same with small chunks: one request spans several INSERT statements.
        let small = db.open(&StoreOptions { max_batch_rows: 3, ..Default::default() }).await;
        let mut batch: Vec<NewMessage> = (0..10).map(|i| msg(&format!("k{i}"), CAROL, "inbox")).collect();
        batch.push(msg("K3", CAROL, "inbox"));
        batch.push(msg("k10", CAROL, "inbox"));
        let out = small.insert_messages(batch).await.unwrap();
        let mut expected = vec![Inserted; 10];
        expected.extend([Duplicate, Inserted]);
        assert_eq!(out, expected);
        assert_eq!(ids(&small, CAROL, "inbox").await.len(), 11);
        small.flush().await.unwrap();
    }
);

store_test!(
    list_orders_by_created_then_id_and_pages | db,
    store | {
        // One batch: equal created_at, so messageId (in collation order) decides.
        store
            .insert_messages(vec![msg("c", ALICE, "inbox"), msg("a", ALICE, "inbox"), msg("B", ALICE, "inbox")])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // Later created_at comes after, whatever its id.
        store.insert_messages(vec![msg("0", ALICE, "inbox")]).await.unwrap();
        assert_eq!(ids(&store, ALICE, "inbox").await, ["a", "B", "c", "0"]);
        let page = |limit, offset| {
            let store = store.clone();
            async move {
                store
                    .list_messages(ALICE, "inbox", limit, offset)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| m.message_id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(page(2, 0).await, ["a", "B"]);
        assert_eq!(page(2, 2).await, ["c", "0"]);
        assert_eq!(page(2, 3).await, ["0"]);
        assert!(page(2, 4).await.is_empty());
        assert!(page(0, 0).await.is_empty());
        let all = store.list_messages(ALICE, "inbox", 10, 0).await.unwrap();
        assert!(all[3].created_at > all[0].created_at);
    }
);

store_test!(
    byte_bounded_pages_stop_after_the_row_that_crosses | db,
    store | {
        // Ids m00..m11 in order, bodies of growing size; raw_len = id + body + sender.
        let rows: Vec<NewMessage> = (0..12)
            .map(|i| NewMessage { body: "x".repeat(10 * (i + 1)).into(), ..msg(&format!("m{i:02}"), ALICE, "inbox") })
            .collect();
        store.insert_messages(rows).await.unwrap();
        let all = store.list_messages(ALICE, "inbox", 100, 0).await.unwrap();
        assert_eq!(all.len(), 12);
        let raw: Vec<u64> = all.iter().map(|m| m.raw_len()).collect();
        assert_eq!(raw[0], 3 + 10 + 66);
        let page = |limit, offset, max_bytes, read_ahead| {
            let store = store.clone();
            async move {
                let bound = Some(store::ByteBound { max_bytes, read_ahead });
                let rows = store.list_page(ALICE, "inbox", limit, offset, bound).await.unwrap();
                rows.into_iter().map(|m| m.message_id).collect::<Vec<_>>()
            }
        };
        let sum = |n: usize| raw[..n].iter().sum::<u64>();
        let names = |r: std::ops::Range<usize>| r.map(|i| format!("m{i:02}")).collect::<Vec<_>>();
        // Exactly the sum of 5 rows: those 5 fit, the 6th crosses and is the last kept.
        for read_ahead in [1, 2, 3, 100] {
            assert_eq!(page(100, 0, sum(5), read_ahead).await, names(0..6), "read_ahead {read_ahead}");
            assert_eq!(page(100, 0, sum(5) - 1, read_ahead).await, names(0..5), "read_ahead {read_ahead}");
            // The row limit first; query chunks continue at the right offset.
            assert_eq!(page(7, 2, u64::MAX, read_ahead).await, names(2..9), "read_ahead {read_ahead}");
            assert_eq!(page(100, 9, u64::MAX, read_ahead).await, names(9..12), "read_ahead {read_ahead}");
            // A first row alone past the bound is still returned (the caller answers 413).
            assert_eq!(page(100, 3, 1, read_ahead).await, names(3..4), "read_ahead {read_ahead}");
        }
        // The connection (MySQL drains what it did not keep) serves the next call exactly.
        assert_eq!(page(3, 0, 0, 100).await, names(0..1));
        assert_eq!(ids(&store, ALICE, "inbox").await, names(0..12));
    }
);

store_test!(
    acknowledge_spans_boxes_but_not_recipients | db,
    store | {
        store
            .insert_messages(vec![
                msg("m1", ALICE, "inbox"),
                msg("m2", ALICE, "payment_inbox"),
                msg("m3", BOB, "inbox"),
                msg("m4", ALICE, "inbox"),
            ])
            .await
            .unwrap();
        // Across ALICE's boxes; BOB's message and unknown ids are ignored.
        let n = store.acknowledge(ALICE, &strings(&["m1", "M2", "m3", "nope", "m1"])).await.unwrap();
        assert_eq!(n, 2);
        assert_eq!(ids(&store, ALICE, "inbox").await, ["m4"]);
        assert!(ids(&store, ALICE, "payment_inbox").await.is_empty());
        assert_eq!(ids(&store, BOB, "inbox").await, ["m3"]);
        assert_eq!(store.acknowledge(ALICE, &strings(&["m1"])).await.unwrap(), 0);
        assert_eq!(store.acknowledge(ALICE, &[]).await.unwrap(), 0);
        assert_eq!(store.acknowledge(&BOB.to_uppercase(), &strings(&["m3"])).await.unwrap(), 1);

        // A long list is chunked.
        let many: Vec<NewMessage> = (0..1200).map(|i| msg(&format!("bulk{i}"), ALICE, "inbox")).collect();
        store.insert_messages(many).await.unwrap();
        let mut list: Vec<String> = (0..1500).map(|i| format!("bulk{i}")).collect();
        list.push("m4".into());
        assert_eq!(store.acknowledge(ALICE, &list).await.unwrap(), 1201);
        assert!(ids(&store, ALICE, "inbox").await.is_empty());
        // An acknowledged id can be used again.
        assert_eq!(store.insert_messages(vec![msg("m1", ALICE, "inbox")]).await.unwrap(), vec![Inserted]);
    }
);

// ---------------------------------------------------------------- devices

fn reg(identity: &str, token: &str, device_id: Option<&str>, platform: Option<&str>) -> DeviceRegistration {
    DeviceRegistration {
        identity_key: identity.into(),
        fcm_token: token.into(),
        device_id: device_id.map(str::to_string),
        platform: platform.map(str::to_string),
    }
}

store_test!(
    devices_register_move_list_and_push | db,
    store | {
        let id1 = store.register_device(reg(ALICE, "token-1", Some("phone"), Some("ios"))).await.unwrap();
        assert!(id1 > 0);
        let id2 = store.register_device(reg(ALICE, "token-2", None, Some("android"))).await.unwrap();
        assert!(id2 > id1);
        // Same second, same values: MySQL reports 0 (nothing changed), SQLite the existing id.
        let again = store.register_device(reg(ALICE, "token-2", None, Some("android"))).await.unwrap();
        assert!(again == 0 || again == id2, "got {again}");

        // Newest updated_at first, ties by id descending.
        let listed = store.list_devices(ALICE).await.unwrap();
        assert_eq!(listed.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id2, id1]);
        let d1 = listed.iter().find(|d| d.id == id1).unwrap();
        assert_eq!(
            (d1.fcm_token.as_str(), d1.device_id.as_deref(), d1.platform.as_deref()),
            ("token-1", Some("phone"), Some("ios"))
        );
        assert!(d1.active);
        assert!(d1.last_used.is_some() && d1.created_at.is_some() && d1.updated_at.is_some());

        // A later update sorts first even with a lower id.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(store.register_device(reg(ALICE, "token-1", Some("phone"), Some("web"))).await.unwrap(), id1);
        let listed = store.list_devices(ALICE).await.unwrap();
        assert_eq!(listed.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id1, id2]);
        assert_eq!(listed[0].platform.as_deref(), Some("web"));
        assert!(listed[0].updated_at > listed[1].updated_at);

        // Re-registering moves the token and resets the omitted fields to NULL.
        let moved = store.register_device(reg(BOB, "token-1", None, None)).await.unwrap();
        assert_eq!(moved, id1, "a changed row reports its existing id");
        let bobs = store.list_devices(BOB).await.unwrap();
        assert_eq!(bobs.len(), 1);
        assert_eq!((bobs[0].id, bobs[0].device_id.as_deref(), bobs[0].platform.as_deref()), (id1, None, None));
        assert_eq!(store.list_devices(ALICE).await.unwrap().len(), 1);

        // Pushes: failure with deactivation hides the device from push, not from the list.
        store.record_push("token-2", false, true).await.unwrap();
        assert!(store.active_devices(ALICE).await.unwrap().is_empty());
        let listed = store.list_devices(ALICE).await.unwrap();
        assert!(!listed[0].active);
        store.record_push("token-1", true, false).await.unwrap();
        let bob = &store.active_devices(BOB).await.unwrap()[0];
        assert!(bob.active && bob.last_used.unwrap() >= now() - 5);
        store.record_push("unknown-token", true, true).await.unwrap();
        store.record_push("token-1", false, false).await.unwrap();
        // Registering again reactivates.
        store.register_device(reg(ALICE, "token-2", None, None)).await.unwrap();
        assert_eq!(store.active_devices(ALICE).await.unwrap().len(), 1);
        assert!(store.list_devices(CAROL).await.unwrap().is_empty());
    }
);

// ---------------------------------------------------------------- group commit and concurrency

/// Many concurrent inserts from several threads, each with its own current_thread runtime
/// (like the server's cores), on one shared store.
fn hammer(store: Store, threads: usize, calls_per_thread: usize) -> Vec<Vec<InsertOutcome>> {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async move {
                    let calls = (0..calls_per_thread).map(|i| {
                        let store = store.clone();
                        async move {
                            // Every call also carries the one id all of them share.
                            let rows = vec![msg(&format!("t{t}-{i}"), ALICE, "inbox"), msg("shared", BOB, "inbox")];
                            store.insert_messages(rows).await.unwrap()
                        }
                    });
                    futures_join_all(calls).await
                })
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
}

/// `join_all` on a current_thread runtime without an extra dependency: spawn locally.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let handles: Vec<_> = futures.map(tokio::task::spawn_local).collect();
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                out.push(h.await.unwrap());
            }
            out
        })
        .await
}

fn group_commit_case(kind: Kind) {
    let Some(db) = TestDb::new(kind) else { return };
    let (threads, calls) = (4, 150);
    let options = StoreOptions { max_queued_inserts: 64, ..Default::default() };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = rt.block_on(db.open(&options));
    let started = std::time::Instant::now();
    let outcomes = hammer(store.clone(), threads, calls);
    let elapsed = started.elapsed();
    let total_calls = threads * calls;
    assert_eq!(outcomes.len(), total_calls);
    assert!(outcomes.iter().all(|o| o[0] == Inserted), "every unique id is inserted");
    let shared_inserted = outcomes.iter().filter(|o| o[1] == Inserted).count();
    assert_eq!(shared_inserted, 1, "exactly one caller stored the shared id");
    rt.block_on(async {
        store.flush().await.unwrap();
        let listed = store.list_messages(ALICE, "inbox", 10_000, 0).await.unwrap();
        let unique: HashSet<String> = listed.into_iter().map(|m| m.message_id).collect();
        assert_eq!(unique.len(), total_calls);
        assert_eq!(ids(&store, BOB, "inbox").await, ["shared"]);
    });
    let s = store.stats();
    eprintln!(
        "{kind:?}: {total_calls} concurrent insert calls ({} rows) in {elapsed:?} = {:.0} rows/s; {} batches, {} fallbacks",
        total_calls * 2,
        (total_calls * 2) as f64 / elapsed.as_secs_f64(),
        s.batches,
        s.fallbacks
    );
    assert_eq!(s.requests, total_calls as u64);
    assert!(s.batches < total_calls as u64, "group commit must merge calls: {s:?}");
}

#[test]
fn group_commit_sqlite_memory() {
    group_commit_case(Kind::SqliteMemory);
}

#[test]
fn group_commit_sqlite_file() {
    group_commit_case(Kind::SqliteFile);
}

#[test]
fn group_commit_mysql() {
    group_commit_case(Kind::Mysql);
}

store_test!(
    back_pressure_with_a_tiny_queue | db,
    store | {
        let tiny = db.open(&StoreOptions { max_queued_inserts: 1, max_batch_rows: 2, ..Default::default() }).await;
        let calls = (0..200).map(|i| {
            let tiny = tiny.clone();
            async move { tiny.insert_messages(vec![msg(&format!("bp{i}"), ALICE, "inbox")]).await.unwrap() }
        });
        let out = futures_join_all(calls).await;
        assert!(out.iter().all(|o| o == &vec![Inserted]));
        assert_eq!(ids(&tiny, ALICE, "inbox").await.len(), 200);
        tiny.flush().await.unwrap();
    }
);

store_test!(
    flush_waits_for_queued_inserts | db,
    store | {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                // Queue inserts without awaiting their answers, then flush.
                let handles: Vec<_> = (0..50)
                    .map(|i| {
                        let store = store.clone();
                        tokio::task::spawn_local(async move {
                            store.insert_messages(vec![msg(&format!("f{i}"), ALICE, "inbox")]).await.unwrap()
                        })
                    })
                    .collect();
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                store.flush().await.unwrap();
                // Committed before any answer has been awaited.
                assert_eq!(ids(&store, ALICE, "inbox").await.len(), 50);
                for h in handles {
                    assert_eq!(h.await.unwrap(), vec![Inserted]);
                }
            })
            .await;
    }
);

store_test!(two_store_instances_share_a_database [sqlite_file, mysql] |db, store| {
    let other = db.open(&StoreOptions::default()).await;
    let a = store.insert_messages(vec![msg("x1", ALICE, "inbox"), msg("dup", ALICE, "inbox")]);
    let b = other.insert_messages(vec![msg("x2", ALICE, "inbox"), msg("DUP", ALICE, "inbox")]);
    let (a, b) = tokio::join!(a, b);
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a[0], b[0]), (Inserted, Inserted));
    let dups = [a[1], b[1]];
    assert!(dups.contains(&Inserted) && dups.contains(&Duplicate), "{dups:?}");
    assert_eq!(ids(&store, ALICE, "inbox").await.len(), 3);
    assert_eq!(ids(&other, ALICE, "inbox").await.len(), 3);
    assert_eq!(other.acknowledge(ALICE, &strings(&["x1"])).await.unwrap(), 1);
    assert_eq!(ids(&store, ALICE, "inbox").await.len(), 2);
    other.flush().await.unwrap();
});

#[test]
fn sqlite_file_persists_across_reopen() {
    let db = TestDb::new(Kind::SqliteFile).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = db.open(&StoreOptions::default()).await;
        store.insert_messages(vec![msg("kept", ALICE, "inbox")]).await.unwrap();
        store.set_permission(ALICE, None, "inbox", 8).await.unwrap();
        store.flush().await.unwrap();
        drop(store);
        let reopened = db.open(&StoreOptions::default()).await;
        assert_eq!(ids(&reopened, ALICE, "inbox").await, ["kept"]);
        assert_eq!(reopened.get_permission(ALICE, None, "inbox").await.unwrap().unwrap().recipient_fee, 8);
        assert!(reopened.migrate().await.unwrap().applied.is_empty());
    });
}

#[test]
fn open_rejects_unknown_urls() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let err = |r: Result<Store, StoreError>| r.err().expect("should fail");
        assert!(matches!(err(store::open("postgres://x/y", &Default::default()).await), StoreError::Config(_)));
        assert!(matches!(
            err(store::open("mysql://root@127.0.0.1:1/", &Default::default()).await),
            StoreError::Config(_)
        ));
        let dir = std::env::temp_dir().join("messagebox-no-such-dir").join("x").join("db.sqlite3");
        let url = format!("sqlite://{}", dir.display());
        assert!(matches!(err(store::open(&url, &Default::default()).await), StoreError::Config(_)));
        let memory = store::open("sqlite::memory:", &Default::default()).await.unwrap();
        assert_eq!(memory.kind(), "sqlite");
        // A database error is an error, not a silent success: no tables yet.
        assert!(matches!(memory.delivery_fee("inbox").await, Err(StoreError::Database(_))));
    });
}

// ---------------------------------------------------------------- MySQL specifics

#[test]
fn mysql_errors_surface() {
    with_store(Kind::Mysql, StoreOptions::default(), |_db, store| async move {
        // recipient_fee is INT: out of range is an error in strict mode, never a silent success.
        let r = store.set_permission(ALICE, None, "inbox", i64::from(i32::MAX) + 1).await;
        assert!(matches!(r, Err(StoreError::Database(_))), "{r:?}");
        let r = store.set_permission(ALICE, Some(BOB), "inbox", i64::from(i32::MAX) + 1).await;
        assert!(matches!(r, Err(StoreError::Database(_))), "{r:?}");
    });
}

#[test]
fn mysql_unreachable_server_is_an_error() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = store::open("mysql://root@127.0.0.1:1/nothing", &Default::default()).await;
        assert!(matches!(r, Err(StoreError::Database(_))), "{:?}", r.err());
    });
}

#[test]
fn mysql_recovers_when_an_operator_deletes_a_box() {
    with_store(Kind::Mysql, StoreOptions::default(), |db, store| async move {
        store.insert_messages(vec![msg("before", ALICE, "inbox")]).await.unwrap();
        // Deleting the box cascades to its messages and leaves our cached id stale.
        db.exec(&format!("DELETE FROM messageBox WHERE identityKey = '{ALICE}'")).await;
        assert!(ids(&store, ALICE, "inbox").await.is_empty());
        assert_eq!(store.insert_messages(vec![msg("after", ALICE, "inbox")]).await.unwrap(), vec![Inserted]);
        db.exec(&format!("DELETE FROM messageBox WHERE identityKey = '{ALICE}'")).await;
        let out = store
            .insert_messages(vec![
                msg("after2", ALICE, "inbox"),
                msg("after3", ALICE, "inbox"),
                msg("before", BOB, "x"),
            ])
            .await
            .unwrap();
        assert_eq!(out, vec![Inserted, Inserted, Inserted]);
        assert_eq!(ids(&store, ALICE, "inbox").await, ["after2", "after3"]);
    });
}

/// The writer's one-round-trip batch (MySQL): a batch that meets a stored id is stopped by
/// its guard and redone on the exact path, so outcomes and the sender's usage stay exact;
/// ids, senders and bodies with quotes, backslashes, NUL and emoji are stored byte-exact.
#[test]
fn mysql_one_trip_batches_fall_back_exactly() {
    use messagebox::store::quota::{Scope, Usage};
    with_store(Kind::Mysql, StoreOptions::default(), |db, store| async move {
        let usage = |sender: String| {
            let store = store.clone();
            async move { store.quota_usage(Scope::Sender, &sender, now()).await.unwrap() }
        };
        let first = msg("dup-1", ALICE, "inbox");
        let one = first.body.len() as u64;
        assert_eq!(store.insert_messages(vec![first.clone()]).await.unwrap(), [Inserted]);
        // A single row that is a duplicate (any case), then a batch with one stored id.
        assert_eq!(store.insert_messages(vec![msg("DUP-1", ALICE, "inbox")]).await.unwrap(), [Duplicate]);
        assert_eq!(usage(CAROL.into()).await, Usage { messages: 1, bytes: one });
        let batch = vec![msg("dup-2", ALICE, "inbox"), msg("dup-1", ALICE, "inbox"), msg("dup-3", BOB, "inbox")];
        assert_eq!(store.insert_messages(batch).await.unwrap(), [Inserted, Duplicate, Inserted]);
        assert_eq!(usage(CAROL.into()).await, Usage { messages: 3, bytes: 3 * one });
        assert_eq!(ids(&store, ALICE, "inbox").await, ["dup-1", "dup-2"]);
        sender_usage::matches_messages(&db).await;

        let nasty = ["it's", "back\\slash\\", "nul\0byte", "\\'; DROP TABLE messages; --", "emoji 😀 \"q\"\n\r\x1a"];
        let rows: Vec<NewMessage> = nasty
            .iter()
            .map(|n| NewMessage {
                sender: format!("{n} sender"),
                body: format!("{{\"b\":\"{n}\"}} {n}").into(),
                ..msg(n, BOB, "inbox")
            })
            .collect();
        assert_eq!(store.insert_messages(rows.clone()).await.unwrap(), [Inserted; 5]);
        assert_eq!(store.insert_messages(vec![rows[3].clone()]).await.unwrap(), [Duplicate]);
        let mut got: Vec<(String, String, String)> = store
            .list_messages(BOB, "inbox", 100, 0)
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.message_id != "dup-3")
            .map(|m| (m.message_id, m.sender, m.body))
            .collect();
        let mut want: Vec<(String, String, String)> =
            rows.iter().map(|r| (r.message_id.clone(), r.sender.clone(), r.body.to_string())).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        for row in &rows {
            assert_eq!(usage(row.sender.clone()).await, Usage { messages: 1, bytes: row.body.len() as u64 });
        }
        sender_usage::matches_messages(&db).await;

        // The acknowledgement inlines the ids as well (MariaDB's two-round-trip path).
        let nasty_ids: Vec<String> = rows.iter().map(|r| r.message_id.clone()).collect();
        assert_eq!(store.acknowledge(BOB, &nasty_ids).await.unwrap(), 5);
        assert_eq!(ids(&store, BOB, "inbox").await, ["dup-3"]);
        for row in &rows {
            assert_eq!(usage(row.sender.clone()).await, Usage { messages: 0, bytes: 0 });
        }
        sender_usage::matches_messages(&db).await;
    });
}

#[test]
fn mysql_statements_per_single_recipient_send() {
    with_store(Kind::Mysql, StoreOptions::default(), |db, store| async move {
        // Warm the box cache and the fee cache, then count statements of one send.
        store.delivery_fee("inbox").await.unwrap();
        store.recipient_fees(CAROL, "inbox", &strings(&[ALICE]), 0).await.unwrap();
        store.insert_messages(vec![msg("warm", ALICE, "inbox")]).await.unwrap();
        let count = || async {
            let rows = db
                .query("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME IN ('COM_STMT_EXECUTE', 'COM_INSERT')")
                .await;
            rows.iter().map(|r| r[0].as_ref().unwrap().parse::<u64>().unwrap()).sum::<u64>()
        };
        let before = count().await;
        store.delivery_fee("inbox").await.unwrap();
        store.recipient_fees(CAROL, "inbox", &strings(&[ALICE]), 0).await.unwrap();
        store.insert_messages(vec![msg("counted", ALICE, "inbox")]).await.unwrap();
        let executed = count().await - before;
        eprintln!("statements executed for one single-recipient send: {executed}");
        // Other tests run concurrently on the same server, so this only bounds from below
        // when the machine is busy; alone it is 2: the insert and the sender's usage upsert, in
        // one transaction (text INSERTs of the one-round-trip batch count in COM_INSERT; prepared
        // ones in COM_STMT_EXECUTE, and may count in both); the fees come from the fee cache
        // (`tests/fee_cache.rs` shows that no statement reads them).
        assert!(executed >= 2);
    });
}

// ---------------------------------------------------------------- MySQL migrations

/// Operator and user data in an original database (all five steps present).
async fn add_original_data(db: &TestDb) {
    db.exec(&format!(
        "insert into server_fees (message_box, delivery_fee, created_at, updated_at) values ('notifications', 25, '2025-09-01 10:00:00', '2025-09-01 10:00:00'); \
         insert into messageBox (type, identityKey, created_at, updated_at) values ('inbox', '{ALICE}', '2025-09-01 10:00:00', '2025-09-01 10:00:00'); \
         insert into messages (messageBoxId, sender, recipient, body, messageId, created_at, updated_at) \
           select messageBoxId, '{CAROL}', '{ALICE}', '{{\"message\":\"old\"}}', 'old-1', '2025-09-01 10:00:01', '2025-09-01 10:00:01' from messageBox; \
         insert into message_permissions (recipient, sender, message_box, recipient_fee, created_at, updated_at) values ('{ALICE}', NULL, 'inbox', 0, '2025-09-01 10:00:00', '2025-09-01 10:00:00'); \
         insert into device_registrations (identity_key, fcm_token, platform, created_at, updated_at, last_used, active) values ('{ALICE}', 'old-token', 'ios', '2025-09-01 10:00:00', '2025-09-01 10:00:00', NULL, 1)"
    ))
    .await;
}

async fn knex_names(db: &TestDb) -> Vec<(String, String)> {
    db.query("SELECT name, batch FROM knex_migrations ORDER BY id")
        .await
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect()
}

async fn show_create(db: &TestDb, table: &str) -> String {
    db.query(&format!("SHOW CREATE TABLE `{table}`")).await[0][1].clone().unwrap()
}

/// The original data is intact and the store works on it.
async fn check_works_on_original_data(db: &TestDb, store: &Store) {
    assert_eq!(store.delivery_fee("notifications").await.unwrap(), Some(25), "operator's server_fees untouched");
    assert_eq!(store.delivery_fee("inbox").await.unwrap(), None, "no seed re-applied to an adopted database");
    let old = store.list_messages(ALICE, "inbox", 10, 0).await.unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!((old[0].message_id.as_str(), old[0].body.as_str()), ("old-1", "{\"message\":\"old\"}"));
    assert_eq!(store::iso8601(old[0].created_at), "2025-09-01T10:00:01.000Z");
    assert_eq!(store.recipient_fees(CAROL, "inbox", &strings(&[ALICE]), 5).await.unwrap(), vec![0]);
    assert_eq!(store.insert_messages(vec![msg("new-1", ALICE, "inbox")]).await.unwrap(), vec![Inserted]);
    assert_eq!(store.insert_messages(vec![msg("OLD-1", BOB, "inbox")]).await.unwrap(), vec![Duplicate]);
    assert_eq!(ids(store, ALICE, "inbox").await, ["old-1", "new-1"]);
    assert_eq!(store.acknowledge(ALICE, &strings(&["old-1", "new-1"])).await.unwrap(), 2);
    let devices = store.list_devices(ALICE).await.unwrap();
    assert_eq!((devices.len(), devices[0].fcm_token.as_str(), devices[0].last_used), (1, "old-token", None));
    let boxes = db.scalar(&format!("SELECT COUNT(*) FROM messageBox WHERE identityKey = '{ALICE}'")).await;
    assert_eq!(boxes.as_deref(), Some("1"), "the existing box was reused");
}

#[test]
fn mysql_migrates_a_fresh_database_to_the_original_schema() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = store::open(&db.url, &Default::default()).await.unwrap();
        assert_eq!(store.kind(), "mysql");
        let report = store.migrate().await.unwrap();
        assert!(!report.adopted_existing);
        let mut expected: Vec<String> = KNEX_NAMES.iter().map(|n| format!("{n}.js")).collect();
        expected.push("0001_index_messages_recipient_box_created_at".into());
        expected.push("0002_messages_expires_at".into());
        expected.push("0004_payment_replays".into());
        expected.push("0005_messagebox_sender_usage".into());
        assert_eq!(report.applied, expected);

        let messages = show_create(&db, "messages").await;
        assert!(!messages.contains("PRIMARY KEY"), "{messages}");
        assert!(messages.contains("UNIQUE KEY `messages_messageid_unique` (`messageId`)"), "{messages}");
        assert!(messages.contains("FOREIGN KEY (`messageBoxId`) REFERENCES `messageBox` (`messageBoxId`) ON DELETE CASCADE"), "{messages}");
        assert!(messages.contains("KEY `messages_recipient_messageboxid_created_at_index` (`recipient`,`messageBoxId`,`created_at`)"), "{messages}");
        assert!(!messages.contains("acknowledged"));
        let columns: Vec<String> = db
            .query("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages' ORDER BY ORDINAL_POSITION")
            .await
            .into_iter()
            .map(|r| r[0].clone().unwrap())
            .collect();
        assert_eq!(columns, ["created_at", "updated_at", "messageBoxId", "sender", "recipient", "body", "messageId", "expires_at"]);
        let message_box = show_create(&db, "messageBox").await;
        assert!(message_box.contains("PRIMARY KEY (`messageBoxId`)") && message_box.contains("UNIQUE KEY `messagebox_type_identitykey_unique` (`type`,`identityKey`)"), "{message_box}");
        let permissions = show_create(&db, "message_permissions").await;
        for key in ["message_permissions_recipient_sender_message_box_unique", "message_permissions_recipient_index", "message_permissions_recipient_message_box_index", "message_permissions_message_box_index", "message_permissions_sender_index"] {
            assert!(permissions.contains(key), "{permissions}");
        }
        let devices = show_create(&db, "device_registrations").await;
        assert!(devices.contains("`fcm_token` varchar(500) NOT NULL") && devices.contains("`active` tinyint(1) DEFAULT 1"), "{devices}");
        assert!(show_create(&db, "server_fees").await.contains("UNIQUE KEY `server_fees_message_box_unique` (`message_box`)"));

        let knex = knex_names(&db).await;
        assert_eq!(knex, KNEX_NAMES.iter().map(|n| (format!("{n}.js"), "1".to_string())).collect::<Vec<_>>());
        assert_eq!(db.query("SELECT `index`, is_locked FROM knex_migrations_lock").await, vec![vec![Some("1".into()), Some("0".into())]]);
        let fees = db.query("SELECT id, message_box, delivery_fee FROM server_fees ORDER BY id").await;
        assert_eq!(fees.len(), 3);
        assert_eq!(fees[0], vec![Some("1".into()), Some("notifications".into()), Some("10".into())]);
        let own = db.query("SELECT name FROM messagebox_migrations").await;
        assert_eq!(
            own,
            vec![
                vec![Some("0001_index_messages_recipient_box_created_at".into())],
                vec![Some("0002_messages_expires_at".into())],
                vec![Some("0004_payment_replays".into())],
                vec![Some("0005_messagebox_sender_usage".into())]
            ]
        );

        let again = store.migrate().await.unwrap();
        assert!(again.adopted_existing && again.applied.is_empty(), "{again:?}");
        assert_eq!(knex_names(&db).await.len(), 5);
    });
}

#[test]
fn mysql_adopts_a_database_created_by_the_original() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        create_original(&db, 5, ".js").await;
        add_original_data(&db).await;
        let tables_before = show_create(&db, "messages").await;
        let store = store::open(&db.url, &Default::default()).await.unwrap();
        let report = store.migrate().await.unwrap();
        assert!(report.adopted_existing);
        assert_eq!(
            report.applied,
            [
                "0001_index_messages_recipient_box_created_at",
                "0002_messages_expires_at",
                "0004_payment_replays",
                "0005_messagebox_sender_usage"
            ]
        );
        assert_eq!(knex_names(&db).await.len(), 5, "nothing recorded in knex_migrations");
        // The table is as it was, plus our recipient index, `expires_at` and its index.
        let after = show_create(&db, "messages").await;
        for line in tables_before.lines().filter(|l| l.starts_with("  ")) {
            assert!(after.contains(line.trim_end_matches(',')), "{line} missing from {after}");
        }
        assert_eq!(after.lines().count(), tables_before.lines().count() + 3, "{after}");
        assert!(!after.contains("messages_sender_expires_at_index"), "{after}");
        check_works_on_original_data(&db, &store).await;
        assert!(store.migrate().await.unwrap().applied.is_empty());
    });
}

#[test]
fn mysql_adopts_an_original_database_with_upstream_additions() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        create_original(&db, 5, ".ts").await;
        add_original_data(&db).await;
        db.exec(
            "create table auth_sessions (id int unsigned not null auto_increment primary key, session_nonce varchar(255) not null); \
             alter table messages add expires_at timestamp null; \
             alter table device_registrations add app_version varchar(50) null; \
             create table payment_replays (transaction_id varchar(64) not null, created_at timestamp not null default CURRENT_TIMESTAMP, expires_at timestamp null, primary key (transaction_id)); \
             alter table payment_replays add index payment_replays_expires_at_index(expires_at); \
             insert into payment_replays (transaction_id, expires_at) values ('aa00000000000000000000000000000000000000000000000000000000000000', null); \
             insert into knex_migrations (name, batch, migration_time) values ('2026-02-01-001-upstream-future.js', 2, '2026-02-01 00:00:00')",
        )
        .await;
        let store = store::open(&db.url, &Default::default()).await.unwrap();
        let report = store.migrate().await.unwrap();
        assert!(report.adopted_existing, ".ts names count as recorded");
        assert_eq!(report.applied, ["0001_index_messages_recipient_box_created_at", "0002_messages_expires_at", "0004_payment_replays", "0005_messagebox_sender_usage"]);
        check_works_on_original_data(&db, &store).await;
        let knex = knex_names(&db).await;
        assert_eq!(knex.len(), 6);
        assert!(knex.iter().take(5).all(|(n, _)| n.ends_with(".ts")), "names are never rewritten: {knex:?}");
        assert!(show_create(&db, "auth_sessions").await.contains("session_nonce"));
        let expires = db.scalar("SELECT COUNT(*) FROM messages WHERE expires_at IS NULL").await;
        assert_eq!(expires.as_deref(), Some("0"), "all acknowledged");
        store.insert_messages(vec![msg("with-extra-col", ALICE, "inbox")]).await.unwrap();
        // The upstream's column is adopted, not re-added: new rows get their expiry in it.
        assert_eq!(db.scalar("SELECT COUNT(*) FROM messages WHERE expires_at IS NULL").await.as_deref(), Some("0"));
        assert_eq!(db.scalar("SELECT COUNT(*) FROM messages WHERE expires_at IS NOT NULL").await.as_deref(), Some("1"));
        // The upstream's replay table is used as it is: its claims are ours.
        assert!(!store.claim_payment("aa00000000000000000000000000000000000000000000000000000000000000").await.unwrap());
        assert!(store.claim_payment("bb00000000000000000000000000000000000000000000000000000000000000").await.unwrap());
        assert_eq!(db.scalar("SELECT COUNT(*) FROM payment_replays WHERE expires_at IS NULL").await.as_deref(), Some("2"));
    });
}

#[test]
fn mysql_completes_a_partially_migrated_original_database() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        create_original(&db, 3, ".js").await;
        // A step whose DDL ran but was not recorded (a crash): its guards make it a no-op.
        for sql in ORIGINAL_DDL[3].iter().take(2) {
            db.exec(sql).await;
        }
        let store = store::open(&db.url, &Default::default()).await.unwrap();
        let report = store.migrate().await.unwrap();
        assert!(!report.adopted_existing);
        assert_eq!(
            report.applied,
            [
                "2025-01-31-001-notification-permissions.js",
                "2025-01-31-002-device-registrations.js",
                "0001_index_messages_recipient_box_created_at",
                "0002_messages_expires_at",
                "0004_payment_replays",
                "0005_messagebox_sender_usage"
            ]
        );
        let knex = knex_names(&db).await;
        assert_eq!(knex.len(), 5);
        assert_eq!(knex[3], ("2025-01-31-001-notification-permissions.js".to_string(), "2".to_string()));
        assert_eq!(knex[4].1, "2");
        assert_eq!(store.delivery_fee("notifications").await.unwrap(), Some(10), "seeded with the step");
        assert!(show_create(&db, "server_fees").await.contains("server_fees_message_box_unique"));
        store.insert_messages(vec![msg("p1", ALICE, "inbox")]).await.unwrap();
        assert_eq!(ids(&store, ALICE, "inbox").await, ["p1"]);
        store.register_device(reg(ALICE, "tok", None, None)).await.unwrap();
        let again = store.migrate().await.unwrap();
        assert!(again.adopted_existing && again.applied.is_empty());
    });
}

#[test]
fn mysql_concurrent_migrations_do_not_race() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let url = db.url.clone();
    // Two "processes": separate stores, each on its own thread and runtime.
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let store = store::open(&url, &Default::default()).await.unwrap();
                    store.migrate().await.unwrap()
                })
            })
        })
        .collect();
    let reports: Vec<_> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    let applied: Vec<usize> = reports.iter().map(|r| r.applied.len()).collect();
    assert!(applied.contains(&9) && applied.contains(&0), "{reports:?}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        assert_eq!(knex_names(&db).await.len(), 5);
        assert_eq!(db.scalar("SELECT COUNT(*) FROM server_fees").await.as_deref(), Some("3"));
        assert_eq!(db.scalar("SELECT COUNT(*) FROM messagebox_migrations").await.as_deref(), Some("4"));
    });
}

#[test]
fn mysql_refuses_a_schema_missing_columns() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        create_original(&db, 5, ".js").await;
        db.exec("alter table device_registrations drop platform").await;
        let store = store::open(&db.url, &Default::default()).await.unwrap();
        let err = store.migrate().await.unwrap_err();
        assert!(matches!(&err, StoreError::Schema(m) if m.contains("device_registrations.platform")), "{err}");
    });
}

#[test]
fn mysql_collation_beyond_case_falls_back_row_by_row() {
    let Some(db) = TestDb::new(Kind::Mysql) else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = MysqlStore::open(&db.url, &Default::default()).await.unwrap();
        store.migrate().await.unwrap();
        // The default collations also equate accents (`e` = `é`), which our Rust-side key
        // does not model: the affected-row check catches it and the batch is redone exactly.
        let out = store.insert_messages(vec![msg("e", ALICE, "inbox"), msg("é", ALICE, "inbox")]).await.unwrap();
        assert_eq!(out, vec![Inserted, Duplicate]);
        let fallbacks = store.stats().fallbacks;
        assert!(fallbacks >= 1);
        // A stored id that matches a candidate only under the collation.
        let out = store.insert_messages(vec![msg("É", BOB, "inbox"), msg("f", BOB, "inbox")]).await.unwrap();
        assert_eq!(out, vec![Duplicate, Inserted]);
        assert!(store.stats().fallbacks > fallbacks);
        let all = store.list_messages(ALICE, "inbox", 10, 0).await.unwrap();
        assert_eq!(all.iter().map(|m| m.message_id.as_str()).collect::<Vec<_>>(), ["e"]);
        store.flush().await.unwrap();
    });
}

/// Group-commit throughput on this machine. Run explicitly:
/// `MESSAGEBOX_TEST_MYSQL_URL=… cargo test --release --test store group_commit_throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn group_commit_throughput() {
    let unbatched = StoreOptions { max_batch_rows: 1, ..Default::default() };
    for (kind, label, options) in [
        (Kind::SqliteFile, "group commit", StoreOptions::default()),
        (Kind::Mysql, "group commit", StoreOptions::default()),
        (Kind::Mysql, "one row per transaction", unbatched),
    ] {
        let Some(db) = TestDb::new(kind) else { continue };
        let (threads, per_thread, in_flight) = (2, 20_000, 128);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = rt.block_on(db.open(&options));
        let started = std::time::Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, async move {
                        let next = std::rc::Rc::new(std::cell::Cell::new(0usize));
                        let workers: Vec<_> = (0..in_flight)
                            .map(|_| {
                                let (store, next) = (store.clone(), next.clone());
                                tokio::task::spawn_local(async move {
                                    loop {
                                        let i = next.get();
                                        if i >= per_thread {
                                            break;
                                        }
                                        next.set(i + 1);
                                        let mut m = msg(&format!("tp{t}-{i}"), ALICE, "inbox");
                                        m.body = format!("{{\"message\":\"{}\"}}", "x".repeat(200)).into();
                                        store.insert_messages(vec![m]).await.unwrap();
                                    }
                                })
                            })
                            .collect();
                        for w in workers {
                            w.await.unwrap();
                        }
                    })
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let elapsed = started.elapsed();
        let rows = threads * per_thread;
        let s = store.stats();
        eprintln!(
            "{kind:?} {label}: {rows} single-row inserts, {} in flight, in {elapsed:.2?} = {:.0} rows/s ({} batches, {:.1} rows/batch)",
            threads * in_flight,
            rows as f64 / elapsed.as_secs_f64(),
            s.batches,
            s.rows as f64 / s.batches.max(1) as f64
        );
        rt.block_on(store.flush()).unwrap();
    }
}

/// Retention on every backend: `expires_at` = created + `retention_days`; listing skips
/// expired rows, the duplicate-id lookup and acknowledge still see them, and the sweep
/// deletes them in batches. `retention_days: None` (`-1`) never expires.
mod retention {
    use super::*;

    fn case(kind: Kind) {
        // 0 days: a message expires the second it is stored.
        let expired = StoreOptions { retention_days: Some(0), ..Default::default() };
        with_store(kind, expired, |_db, store| async move {
            let out = store
                .insert_messages(vec![msg("e-1", BOB, "inbox"), msg("e-2", BOB, "inbox"), msg("e-3", BOB, "inbox")])
                .await
                .unwrap();
            assert_eq!(out, vec![Inserted; 3]);
            assert!(ids(&store, BOB, "inbox").await.is_empty(), "expired rows are not listed");
            let owners = store.message_owners(&strings(&["E-1"])).await.unwrap();
            assert_eq!(owners.len(), 1, "the duplicate check sees expired rows");
            assert_eq!(store.acknowledge(BOB, &strings(&["e-3"])).await.unwrap(), 1, "acknowledge sees them too");
            assert_eq!(store.delete_expired(now(), Some(1)).await.unwrap(), 1, "one batch");
            assert_eq!(store.delete_expired(now(), None).await.unwrap(), 1);
            assert_eq!(store.delete_expired(now(), None).await.unwrap(), 0);
        });
        let month = StoreOptions { retention_days: Some(30), ..Default::default() };
        with_store(kind, month, |_db, store| async move {
            store.insert_messages(vec![msg("m-1", BOB, "inbox")]).await.unwrap();
            assert_eq!(ids(&store, BOB, "inbox").await, ["m-1"]);
            assert_eq!(store.delete_expired(now(), Some(1000)).await.unwrap(), 0);
            assert_eq!(store.delete_expired(now() + 29 * 86_400, Some(1000)).await.unwrap(), 0);
            assert_eq!(store.delete_expired(now() + 31 * 86_400, Some(1000)).await.unwrap(), 1);
            assert!(ids(&store, BOB, "inbox").await.is_empty());
        });
        let forever = StoreOptions { retention_days: None, ..Default::default() };
        with_store(kind, forever, |_db, store| async move {
            store.insert_messages(vec![msg("f-1", BOB, "inbox")]).await.unwrap();
            assert_eq!(store.delete_expired(now() + 3650 * 86_400, None).await.unwrap(), 0);
            assert_eq!(ids(&store, BOB, "inbox").await, ["f-1"]);
        });
    }

    #[test]
    fn sqlite_memory() {
        case(Kind::SqliteMemory);
    }

    #[test]
    fn sqlite_file() {
        case(Kind::SqliteFile);
    }

    #[test]
    fn mysql() {
        case(Kind::Mysql);
    }
}

/// What the storage quotas read (`quota_usage`) on every backend: a sender's rows across
/// recipients (until deleted: expired ones count until swept) and a recipient's across boxes
/// (unexpired only), bytes as stored (UTF-8, so a multi-byte character counts its bytes),
/// identities compared in SQL collation.
mod quota_usage {
    use super::*;
    use messagebox::store::quota::{Scope, Usage};

    fn case(kind: Kind) {
        with_store(kind, StoreOptions::default(), |_db, store| async move {
            let mut rows = vec![msg("q-1", BOB, "inbox"), msg("q-2", BOB, "other"), msg("q-3", ALICE, "inbox")];
            rows[2].body = "é€".into(); // 2 + 3 bytes
            store.insert_messages(rows).await.unwrap();
            let body = |id: &str| format!("{{\"message\":\"body of {id}\"}}").len() as u64;
            let usage = |scope, key: &'static str, at| {
                let store = store.clone();
                async move { store.quota_usage(scope, key, at).await.unwrap() }
            };
            let t = now();
            assert_eq!(usage(Scope::Inbox, BOB, t).await, Usage { messages: 2, bytes: body("q-1") + body("q-2") });
            assert_eq!(usage(Scope::Inbox, ALICE, t).await, Usage { messages: 1, bytes: 5 });
            assert_eq!(
                usage(Scope::Sender, CAROL, t).await,
                Usage { messages: 3, bytes: body("q-1") + body("q-2") + 5 }
            );
            let upper = "02CCCC000000000000000000000000000000000000000000000000000000000003";
            assert_eq!(usage(Scope::Sender, upper, t).await.messages, 3, "the collation compares");
            assert_eq!(usage(Scope::Sender, BOB, t).await, Usage::default());
            // 31 days on (retention is 30 by default), every row has expired: the inbox's
            // aggregate skips them, the sender's row counts them until they are swept.
            let later = t + 31 * 86_400;
            assert_eq!(usage(Scope::Inbox, BOB, later).await, Usage::default());
            assert_eq!(usage(Scope::Sender, CAROL, later).await.messages, 3);
            store.acknowledge(BOB, &strings(&["q-1"])).await.unwrap();
            assert_eq!(usage(Scope::Inbox, BOB, t).await, Usage { messages: 1, bytes: body("q-2") });
            assert_eq!(usage(Scope::Sender, CAROL, t).await, Usage { messages: 2, bytes: body("q-2") + 5 });
            assert_eq!(store.delete_expired(later, None).await.unwrap(), 2);
            assert_eq!(usage(Scope::Sender, CAROL, later).await, Usage::default());
        });
    }

    #[test]
    fn sqlite_memory() {
        case(Kind::SqliteMemory);
    }

    #[test]
    fn sqlite_file() {
        case(Kind::SqliteFile);
    }

    #[test]
    fn mysql() {
        case(Kind::Mysql);
    }
}

/// `messagebox_sender_usage`, what the sender quota reads (`quota_usage(Scope::Sender, …)`),
/// stays exact through every change this server makes to `messages`: group-committed batches
/// (several senders, a multi-byte body, several recipients of one sender), re-sent and
/// in-batch duplicate ids (which add nothing), acknowledgements and retention sweeps (which
/// subtract what they deleted). Expired rows count until swept. On a file or MySQL the table
/// is also compared with an aggregate over `messages`.
mod sender_usage {
    use super::*;
    use messagebox::store::quota::{Scope, Usage};

    fn from(id: &str, sender: &str, recipient: &str) -> NewMessage {
        NewMessage { sender: sender.into(), ..msg(id, recipient, "inbox") }
    }

    fn used(rows: &[&NewMessage]) -> Usage {
        Usage { messages: rows.len() as u64, bytes: rows.iter().map(|m| m.body.len() as u64).sum() }
    }

    async fn usage(store: &Store, sender: &str) -> Usage {
        store.quota_usage(Scope::Sender, sender, now()).await.unwrap()
    }

    /// The table holds what `messages` holds, per sender (rows at 0 may stay).
    pub(super) async fn matches_messages(db: &TestDb) {
        if db.kind == Kind::SqliteMemory {
            return;
        }
        let table = db
            .query("SELECT sender, messages, bytes FROM messagebox_sender_usage WHERE messages <> 0 OR bytes <> 0 ORDER BY sender")
            .await;
        let rows = db
            .query("SELECT sender, COUNT(*), SUM(OCTET_LENGTH(body)) FROM messages GROUP BY sender ORDER BY sender")
            .await;
        assert_eq!(table, rows);
    }

    fn case(kind: Kind) {
        with_store(kind, StoreOptions::default(), |db, store| async move {
            let mut first = vec![from("u-1", ALICE, BOB), from("u-2", ALICE, CAROL), from("u-3", BOB, CAROL)];
            first[2].body = "é€".into(); // 2 + 3 bytes
            assert_eq!(store.insert_messages(first.clone()).await.unwrap(), [Inserted; 3]);
            assert_eq!(usage(&store, ALICE).await, used(&[&first[0], &first[1]]));
            assert_eq!(usage(&store, BOB).await, Usage { messages: 1, bytes: 5 });
            assert_eq!(usage(&store, CAROL).await, Usage::default(), "no row: nothing stored");
            let upper = ALICE.to_uppercase();
            assert_eq!(usage(&store, &upper).await, usage(&store, ALICE).await, "the collation compares");

            // A re-sent id and an id repeated in one call (any case) store, and add, nothing.
            let second = vec![from("u-1", ALICE, BOB), from("u-4", ALICE, BOB), from("U-4", ALICE, BOB)];
            assert_eq!(store.insert_messages(second.clone()).await.unwrap(), [Duplicate, Inserted, Duplicate]);
            assert_eq!(usage(&store, ALICE).await, used(&[&first[0], &first[1], &second[1]]));

            // Concurrent calls, group-committed into batches of several requests and senders.
            let calls = (0..40).map(|i| {
                let (store, sender) = (store.clone(), if i % 2 == 0 { ALICE } else { CAROL });
                async move { store.insert_messages(vec![from(&format!("c-{i}"), sender, BOB)]).await }
            });
            assert!(futures_join_all(calls).await.iter().all(|o| o.as_deref() == Ok(&[Inserted][..])));
            let carol: Vec<NewMessage> = (1..40).step_by(2).map(|i| from(&format!("c-{i}"), CAROL, BOB)).collect();
            assert_eq!(usage(&store, CAROL).await, used(&carol.iter().collect::<Vec<_>>()));
            assert_eq!(usage(&store, ALICE).await.messages, 3 + 20);
            matches_messages(&db).await;

            // An acknowledgement subtracts what it deleted, per sender; unknown ids nothing.
            let acked = store.acknowledge(BOB, &strings(&["U-1", "c-0", "c-1", "c-3", "nope"])).await.unwrap();
            assert_eq!(acked, 4);
            assert_eq!(usage(&store, ALICE).await.messages, 3 + 20 - 2);
            let carol_left: Vec<&NewMessage> = carol.iter().skip(2).collect();
            assert_eq!(usage(&store, CAROL).await, used(&carol_left));
            assert_eq!(store.acknowledge(CAROL, &strings(&["u-2", "u-3"])).await.unwrap(), 2);
            assert_eq!(usage(&store, BOB).await, Usage::default());
            matches_messages(&db).await;

            // Concurrent acknowledgements (both backends commit consecutive ones together), each
            // racing its neighbour for one id, amid sends to another inbox: every row is
            // deleted, and subtracted, once; what was sent meanwhile counts.
            let rest = ids(&store, BOB, "inbox").await;
            assert_eq!(rest.len(), 1 + 20 - 1 + 20 - 2);
            let sent: Vec<NewMessage> = (0..10).map(|i| from(&format!("s-{i}"), CAROL, ALICE)).collect();
            type Call = std::pin::Pin<Box<dyn std::future::Future<Output = u64>>>;
            let mut calls: Vec<Call> = Vec::new();
            for (i, id) in rest.iter().enumerate() {
                let acker = store.clone();
                let mine = vec![id.clone(), rest[(i + 1) % rest.len()].clone(), "nope".to_string()];
                calls.push(Box::pin(async move { acker.acknowledge(BOB, &mine).await.unwrap() }));
                if let Some(row) = sent.get(i / 4).filter(|_| i % 4 == 0) {
                    let (store, row) = (store.clone(), row.clone());
                    calls.push(Box::pin(async move {
                        assert_eq!(store.insert_messages(vec![row]).await.unwrap(), [Inserted]);
                        0
                    }));
                }
            }
            let deleted: u64 = futures_join_all(calls.into_iter()).await.into_iter().sum();
            assert_eq!(deleted, rest.len() as u64);
            assert!(ids(&store, BOB, "inbox").await.is_empty());
            assert_eq!(usage(&store, ALICE).await, Usage::default());
            assert_eq!(usage(&store, CAROL).await, used(&sent.iter().collect::<Vec<_>>()));
            matches_messages(&db).await;
            let left = ids(&store, ALICE, "inbox").await;
            assert_eq!(store.acknowledge(ALICE, &left).await.unwrap(), sent.len() as u64);
            assert_eq!(usage(&store, CAROL).await, Usage::default());
        });

        // Retention 0 days: rows expire the second they are stored, and count until swept.
        let expired = StoreOptions { retention_days: Some(0), ..Default::default() };
        with_store(kind, expired, |db, store| async move {
            let rows: Vec<NewMessage> =
                ["x-1", "x-2", "x-3"].iter().map(|id| from(id, ALICE, BOB)).chain([from("x-4", CAROL, BOB)]).collect();
            store.insert_messages(rows.clone()).await.unwrap();
            assert_eq!(usage(&store, ALICE).await, used(&[&rows[0], &rows[1], &rows[2]]), "expired, not swept");
            assert_eq!(store.delete_expired(now(), Some(3)).await.unwrap(), 3, "a bounded sweep");
            let left = usage(&store, ALICE).await.messages + usage(&store, CAROL).await.messages;
            assert_eq!(left, 1);
            matches_messages(&db).await;
            assert_eq!(store.delete_expired(now(), None).await.unwrap(), 1);
            assert_eq!((usage(&store, ALICE).await, usage(&store, CAROL).await), (Usage::default(), Usage::default()));
            matches_messages(&db).await;
        });
    }

    #[test]
    fn sqlite_memory() {
        case(Kind::SqliteMemory);
    }

    #[test]
    fn sqlite_file() {
        case(Kind::SqliteFile);
    }

    #[test]
    fn mysql() {
        case(Kind::Mysql);
    }
}

/// A group-committed batch that fails on one request's row is written again request by
/// request (the writer's fallback): the failed batch's usage was rolled back with it, and each
/// request that then succeeds adds its own, exactly once. The test holds the writer (SQLite:
/// another connection's write lock; MySQL: rows whose trigger sleeps 1 s, filling the
/// writer's pipeline) so that three requests queue into one batch; a trigger fails the row `bad`.
mod sender_usage_after_a_fallback {
    use super::*;
    use messagebox::store::quota::{Scope, Usage};

    fn call(store: &Store, id: &str) -> tokio::task::JoinHandle<Result<Vec<InsertOutcome>, StoreError>> {
        let (store, row) = (store.clone(), NewMessage { sender: ALICE.into(), ..msg(id, BOB, "inbox") });
        tokio::spawn(async move { store.insert_messages(vec![row]).await })
    }

    fn case(kind: Kind) {
        with_store(kind, StoreOptions::default(), |db, store| async move {
            let pause = || tokio::time::sleep(Duration::from_millis(150));
            let mut blocker = None;
            let mut calls = Vec::new();
            if kind.is_mysql() {
                db.exec(
                    "CREATE TRIGGER mb_test_rows BEFORE INSERT ON messages FOR EACH ROW BEGIN \
                     IF NEW.messageId = 'bad' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bad row'; END IF; \
                     IF NEW.messageId LIKE 'slow%' THEN DO SLEEP(1); END IF; END",
                )
                .await;
                for id in ["slow-0", "slow-1", "g-2"] {
                    calls.push(call(&store, id));
                    pause().await;
                }
            } else {
                db.exec(
                    "CREATE TRIGGER mb_test_rows BEFORE INSERT ON messages WHEN NEW.messageId = 'bad' \
                     BEGIN SELECT RAISE(ABORT, 'bad row'); END",
                )
                .await;
                let conn = rusqlite::Connection::open(db.file().unwrap()).unwrap();
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                blocker = Some(conn);
                calls.push(call(&store, "g-0"));
                pause().await;
            }
            let before = store.stats().fallbacks;
            for id in ["g-3", "bad", "g-4"] {
                calls.push(call(&store, id));
            }
            pause().await;
            drop(blocker);
            let mut outcomes = Vec::new();
            for c in calls {
                outcomes.push(c.await.unwrap());
            }
            let bad = outcomes.len() - 2;
            assert!(outcomes[bad].is_err(), "{:?}", outcomes[bad]);
            assert!(
                outcomes.iter().enumerate().all(|(i, o)| i == bad || o.as_deref() == Ok(&[Inserted][..])),
                "{outcomes:?}"
            );
            assert_eq!(store.stats().fallbacks, before + 1, "the batch of three was split");
            let stored: &[&str] =
                if kind.is_mysql() { &["slow-0", "slow-1", "g-2", "g-3", "g-4"] } else { &["g-0", "g-3", "g-4"] };
            let bytes = stored.iter().map(|id| msg(id, BOB, "inbox").body.len() as u64).sum();
            let got = store.quota_usage(Scope::Sender, ALICE, now()).await.unwrap();
            assert_eq!(got, Usage { messages: stored.len() as u64, bytes });
            super::sender_usage::matches_messages(&db).await;
        });
    }

    #[test]
    fn sqlite_file() {
        case(Kind::SqliteFile);
    }

    #[test]
    fn mysql() {
        case(Kind::Mysql);
    }
}

/// MySQL commits consecutive acknowledgements in one transaction; when one of them fails its
/// statement (a trigger refuses the row `bad`), the others are redone alone and answered with
/// their own counts, the failed one gets the error, and usage stays exact. Two acknowledgements
/// of rows whose trigger sleeps 1 s fill the writer's pipeline, so that three queue into one batch.
mod acknowledgement_fallback {
    use super::*;
    use messagebox::store::quota::{Scope, Usage};

    #[test]
    fn mysql() {
        with_store(Kind::Mysql, StoreOptions::default(), |db, store| async move {
            db.exec(
                "CREATE TRIGGER mb_test_deletes BEFORE DELETE ON messages FOR EACH ROW BEGIN \
                 IF OLD.messageId = 'bad' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'bad row'; END IF; \
                 IF OLD.messageId LIKE 'slow%' THEN DO SLEEP(1); END IF; END",
            )
            .await;
            let all = ["slow-0", "slow-1", "g-3", "bad", "g-4", "g-5"];
            let rows: Vec<NewMessage> =
                all.iter().map(|id| NewMessage { sender: ALICE.into(), ..msg(id, BOB, "inbox") }).collect();
            store.insert_messages(rows).await.unwrap();
            let ack = |ids: &[&str]| {
                let (store, ids) = (store.clone(), strings(ids));
                tokio::spawn(async move { store.acknowledge(BOB, &ids).await })
            };
            let mut calls = Vec::new();
            for ids in [&["slow-0"][..], &["slow-1"]] {
                calls.push(ack(ids));
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            let before = store.stats().fallbacks;
            for ids in [&["g-3", "g-4"][..], &["bad", "g-5"], &["g-4", "g-5"]] {
                calls.push(ack(ids));
            }
            let mut answers = Vec::new();
            for c in calls {
                answers.push(c.await.unwrap());
            }
            assert_eq!(answers[..3], [Ok(1), Ok(1), Ok(2)]);
            assert!(answers[3].is_err(), "{:?}", answers[3]);
            assert_eq!(answers[4], Ok(1), "alone, after `bad` failed: `g-5` was still there");
            assert_eq!(store.stats().fallbacks, before + 1, "the batch of three was split");
            assert_eq!(ids(&store, BOB, "inbox").await, ["bad"]);
            let one = msg("bad", BOB, "inbox").body.len() as u64;
            assert_eq!(
                store.quota_usage(Scope::Sender, ALICE, now()).await.unwrap(),
                Usage { messages: 1, bytes: one }
            );
            super::sender_usage::matches_messages(&db).await;
        });
    }
}

/// The sender usage migration on a database an earlier version left: rows already stored
/// (several senders, expired and not) and the `(sender, expires_at)` index. The step fills the
/// table from `messages` with one aggregate, drops the index, and runs once.
mod sender_usage_migration {
    use super::*;
    use messagebox::store::quota::{Scope, Usage};

    fn case(kind: Kind) {
        let Some(db) = TestDb::new(kind) else { return };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = db.open(&StoreOptions::default()).await;
            let rows = vec![
                NewMessage { sender: ALICE.into(), ..msg("o-1", BOB, "inbox") },
                NewMessage { sender: ALICE.into(), body: "é€".into(), ..msg("o-2", CAROL, "other") },
                NewMessage { sender: BOB.into(), ..msg("o-3", CAROL, "inbox") },
            ];
            store.insert_messages(rows.clone()).await.unwrap();
            store.flush().await.unwrap();
            drop(store);
            // Back to what the earlier version left: no usage table, the sender index, its record.
            let (step, old_step, index) = if kind.is_mysql() {
                (
                    "0005_messagebox_sender_usage",
                    "INSERT INTO messagebox_migrations (name, applied_at) VALUES ('0003_index_messages_sender_expires_at', NOW())",
                    "ALTER TABLE messages ADD INDEX messages_sender_expires_at_index (sender, expires_at)",
                )
            } else {
                (
                    "0006_messagebox_sender_usage",
                    "INSERT INTO messagebox_migrations (name, applied_at) VALUES ('0004_index_messages_sender_expires_at', 0)",
                    "CREATE INDEX messages_sender_expires_at_index ON messages (sender, expires_at)",
                )
            };
            db.exec("DROP TABLE messagebox_sender_usage").await;
            db.exec(&format!("DELETE FROM messagebox_migrations WHERE name = '{step}'")).await;
            db.exec(old_step).await;
            db.exec(index).await;
            let expired = if kind.is_mysql() { "'2001-01-01 00:00:00'" } else { "1" };
            db.exec(&format!("UPDATE messages SET expires_at = {expired} WHERE messageId = 'o-1'")).await;

            let store = store::open(&db.url, &StoreOptions::default()).await.unwrap();
            assert_eq!(store.migrate().await.unwrap().applied, [step]);
            let indexes = if kind.is_mysql() {
                db.query("SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'messages'").await
            } else {
                db.query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages'").await
            };
            assert!(!indexes.iter().any(|r| r[0].as_deref() == Some("messages_sender_expires_at_index")), "{indexes:?}");
            let bytes = |m: &NewMessage| m.body.len() as u64;
            let usage = |key: &'static str| {
                let store = store.clone();
                async move { store.quota_usage(Scope::Sender, key, now()).await.unwrap() }
            };
            assert_eq!(usage(ALICE).await, Usage { messages: 2, bytes: bytes(&rows[0]) + 5 }, "expired rows count until swept");
            assert_eq!(usage(BOB).await, Usage { messages: 1, bytes: bytes(&rows[2]) });
            super::sender_usage::matches_messages(&db).await;
            assert!(store.migrate().await.unwrap().applied.is_empty());
            // From here on the server keeps it: the sweep subtracts the expired row.
            assert_eq!(store.delete_expired(now(), None).await.unwrap(), 1);
            assert_eq!(usage(ALICE).await, Usage { messages: 1, bytes: 5 });
            super::sender_usage::matches_messages(&db).await;
        });
    }

    #[test]
    fn sqlite_file() {
        case(Kind::SqliteFile);
    }

    #[test]
    fn mysql() {
        case(Kind::Mysql);
    }
}
