//! Paid delivery through HTTP, on both stores, against a local BRC-100 HTTP JSON wallet
//! (`PAYMENT_WALLET_URL`) that records what it is asked: a valid payment is stored and
//! internalized once; the same payment again is refused (also by another server process on
//! the same database) while an identical retry of the stored send still succeeds; every
//! payment the local checks refuse — too little, another server's key, another sender's
//! remittance, a basket insertion, garbage bytes — is a 4xx, stores nothing and never
//! reaches the wallet; a payment the wallet does not take, or a send the store refuses, can
//! be offered again.

mod common;

use common::payments::{MockWallet, Payment, WalletMode};
use common::{assert_error, key, on_both_stores, TestServer};
use messagebox::auth::{ClientIdentity, PrivateKey};
use messagebox::client::AuthClient;
use serde_json::{json, Value};

on_both_stores!(paid_delivery, paid_delivery);
on_both_stores!(refused_payments_never_reach_the_wallet, refused_payments_never_reach_the_wallet);
on_both_stores!(unused_payments_can_be_offered_again, unused_payments_can_be_offered_again);

async fn send(c: &mut AuthClient, body: &Value) -> (u16, Value) {
    c.post_json("/sendMessage", body).await.unwrap()
}

fn note(recipient: &str, id: &str, payment: Value) -> Value {
    json!({"message": {"recipient": recipient, "messageBox": "notifications", "body": "paid ping", "messageId": id}, "payment": payment})
}

/// A recipient fee output the server only copies into the stored message.
fn recipient_output(i: u32) -> Value {
    json!({"outputIndex": i, "protocol": "wallet payment", "paymentRemittance": {"derivationPrefix": "AAAA", "derivationSuffix": "BBBB", "senderIdentityKey": "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"}})
}

async fn listed(c: &mut AuthClient) -> Vec<String> {
    let (st, v) = c.post_json("/listMessages", &json!({"messageBox": "notifications"})).await.unwrap();
    assert_eq!(st, 200, "{v}");
    v["messages"].as_array().unwrap().iter().map(|m| m["messageId"].as_str().unwrap().to_string()).collect()
}

struct Setup {
    server: TestServer,
    server_key: PrivateKey,
    wallet: MockWallet,
    payer: PrivateKey,
    sender: AuthClient,
    recipient: AuthClient,
    rk: String,
}

async fn setup(url: &str) -> Setup {
    let wallet = MockWallet::start().await;
    let server_key = PrivateKey::random();
    let server =
        TestServer::start(url, &[("PAYMENT_WALLET_URL", &wallet.url()), ("SERVER_PRIVATE_KEY", &server_key.to_hex())])
            .await;
    let payer = PrivateKey::random();
    let sender = server.client_for(ClientIdentity::new(payer));
    let mut recipient = server.client();
    recipient.handshake().await.unwrap();
    let rk = recipient.identity().identity_hex().to_string();
    Setup { server, server_key, wallet, payer, sender, recipient, rk }
}

async fn paid_delivery(url: &str) {
    let Setup { server, server_key, wallet, payer, mut sender, mut recipient, rk } = setup(url).await;
    // notifications: delivery fee 10 (the server's), recipient fee 10 (copied to the recipient).
    let payment = Payment::new(payer, &server.identity, 10);
    let body = payment.json(&[recipient_output(1)]);
    let got = send(&mut sender, &note(&rk, "paid-1", body.clone())).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(wallet.calls(), 1);
    let asked = wallet.seen.lock().unwrap()[0].clone();
    assert_eq!(
        asked,
        json!({"tx": body["tx"], "outputs": [payment.delivery_output()], "description": "MessageBox delivery payment"})
    );
    assert_eq!(listed(&mut recipient).await, ["paid-1"]);

    // The same payment for another message: refused, nothing stored, the wallet not asked.
    let got = send(&mut sender, &note(&rk, "paid-2", body.clone())).await;
    assert_error(&got, 409, "ERR_PAYMENT_REPLAYED", "This payment was already used.");
    assert_eq!(wallet.calls(), 1);
    // An identical retry of the stored send is answered as the original answers it.
    let got = send(&mut sender, &note(&rk, "paid-1", body.clone())).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(wallet.calls(), 1);
    assert_eq!(listed(&mut recipient).await, ["paid-1"]);

    // The same server restarted (another process on the same database) knows the payment.
    drop(server);
    let server =
        TestServer::start(url, &[("PAYMENT_WALLET_URL", &wallet.url()), ("SERVER_PRIVATE_KEY", &server_key.to_hex())])
            .await;
    let mut sender = server.client_for(ClientIdentity::new(payer));
    let got = send(&mut sender, &note(&rk, "paid-3", body)).await;
    assert_error(&got, 409, "ERR_PAYMENT_REPLAYED", "This payment was already used.");
    assert_eq!(wallet.calls(), 1);

    // Two recipients: the delivery fee is charged once per request, as the original charges
    // it and MessageBoxClient's batch send pays it; each recipient gets its own output.
    let other = server.client();
    let ok = other.identity().identity_hex().to_string();
    let payment = Payment::new(payer, &server.identity, 10);
    let batch = json!({"message": {"recipients": [rk, ok], "messageBox": "notifications", "body": "to both", "messageId": ["b-1", "b-2"]},
        "payment": payment.json(&[recipient_output(1), recipient_output(2)])});
    let got = send(&mut sender, &batch).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(wallet.calls(), 2);
    let mut recipient = server.client_for(recipient.identity().clone());
    // (Listed by created_at in seconds, then messageId.)
    let mut ids = listed(&mut recipient).await;
    ids.sort();
    assert_eq!(ids, ["b-1", "paid-1"]);
}

async fn refused_payments_never_reach_the_wallet(url: &str) {
    let Setup { server, wallet, payer, mut sender, mut recipient, rk, .. } = setup(url).await;
    let invalid = |text: &str| (400u16, "ERR_INVALID_PAYMENT", text.to_string());
    let brc29 = "The paymentRemittance parameter must be locked by script conforming to BRC-29";
    let cases: Vec<(&str, Value, (u16, &str, String))> = vec![
        (
            "too little",
            Payment::new(payer, &server.identity, 9).json(&[recipient_output(1)]),
            (400, "ERR_INSUFFICIENT_PAYMENT", "The server delivery output does not pay the required amount.".into()),
        ),
        ("another server's key", Payment::new(payer, &key(), 10).json(&[recipient_output(1)]), invalid(brc29)),
        (
            "another sender's payment",
            Payment::new(PrivateKey::random(), &server.identity, 10).json(&[recipient_output(1)]),
            invalid(messagebox::payments::check::WRONG_SENDER),
        ),
        (
            "garbage bytes",
            json!({"tx": [1, 2, 3], "outputs": [Payment::new(payer, &server.identity, 10).delivery_output(), recipient_output(1)]}),
            invalid("The tx parameter must be valid with at least one transaction to internalize an output from"),
        ),
        (
            "a description too short",
            {
                let mut p = Payment::new(payer, &server.identity, 10).json(&[recipient_output(1)]);
                p["description"] = json!("pay");
                p
            },
            invalid("The description parameter must be at least 5 length."),
        ),
        (
            "a basket insertion",
            {
                let mut p = Payment::new(payer, &server.identity, 10).json(&[recipient_output(1)]);
                p["outputs"][0] = json!({"outputIndex": 0, "protocol": "basket insertion", "insertionRemittance": {"basket": "loot"}});
                p
            },
            invalid(messagebox::payments::check::NOT_WALLET_PAYMENT),
        ),
        (
            "the change output",
            {
                let mut p = Payment::new(payer, &server.identity, 10).json(&[recipient_output(1)]);
                p["outputs"][0]["outputIndex"] = json!(1);
                p
            },
            invalid(brc29),
        ),
    ];
    for (i, (what, payment, (status, code, text))) in cases.into_iter().enumerate() {
        let got = send(&mut sender, &note(&rk, &format!("bad-{i}"), payment)).await;
        assert_eq!(got.0, status, "{what}: {}", got.1);
        assert_error(&got, status, code, &text);
    }
    assert_eq!(wallet.calls(), 0, "the wallet was never asked");
    assert!(listed(&mut recipient).await.is_empty(), "nothing stored");
}

async fn unused_payments_can_be_offered_again(url: &str) {
    let Setup { server, wallet, payer, mut sender, mut recipient, rk, .. } = setup(url).await;
    let payment = Payment::new(payer, &server.identity, 10);
    let body = payment.json(&[recipient_output(1)]);
    // The wallet fails, then refuses: the claim goes each time, nothing is stored.
    wallet.set(WalletMode::Fail);
    let got = send(&mut sender, &note(&rk, "again-1", body.clone())).await;
    assert_error(&got, 500, "ERR_INTERNALIZE_FAILED", "Failed to internalize payment: boom");
    wallet.set(WalletMode::Refuse);
    let got = send(&mut sender, &note(&rk, "again-1", body.clone())).await;
    assert_error(&got, 400, "ERR_INSUFFICIENT_PAYMENT", "Payment was not accepted by the server.");
    // The wallet took it but the store refused the send (the messageId is someone else's):
    // the payment bought nothing, so it stays usable.
    wallet.set(WalletMode::Accept);
    let mut squatter = server.client();
    let got = send(
        &mut squatter,
        &json!({"message": {"recipient": rk, "messageBox": "inbox", "body": "x", "messageId": "taken"}}),
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.1);
    let got = send(&mut sender, &note(&rk, "taken", body.clone())).await;
    assert_error(&got, 400, "ERR_DUPLICATE_MESSAGE", "Duplicate message.");
    assert!(listed(&mut recipient).await.is_empty());
    let got = send(&mut sender, &note(&rk, "again-1", body.clone())).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(wallet.calls(), 4);
    assert_eq!(listed(&mut recipient).await, ["again-1"]);
    let got = send(&mut sender, &note(&rk, "again-2", body)).await;
    assert_error(&got, 409, "ERR_PAYMENT_REPLAYED", "This payment was already used.");
    assert_eq!(wallet.calls(), 4);
}
