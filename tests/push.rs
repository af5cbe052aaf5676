//! Push notifications against a local stand-in for Google's OAuth2 and FCM endpoints that
//! checks what it receives: a correctly signed RS256 assertion, the bearer token on every
//! send, the original's message shape, one send per active device; a token FCM reports as
//! unregistered is deactivated; the sendMessage response never waits for the push.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use common::TestServer;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use serde_json::{json, Value};

const KEY_PEM: &str = include_str!("vectors/fcm_test_key.pem");

#[derive(Default)]
struct Seen {
    token_requests: Vec<String>,
    sends: Vec<(String, Value)>,
}

fn public_key_der() -> Vec<u8> {
    let b64: String = KEY_PEM.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    ring::signature::KeyPair::public_key(&pair).as_ref().to_vec()
}

async fn mock(seen: Arc<Mutex<Seen>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let auth = req.headers().get("authorization").map(|v| v.to_str().unwrap().to_string());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let (status, reply) = if path == "/token" {
                            seen.lock().unwrap().token_requests.push(String::from_utf8(body.to_vec()).unwrap());
                            (200, json!({"access_token": "tok-123", "expires_in": 3600, "token_type": "Bearer"}))
                        } else if path == "/v1/projects/proj-1/messages:send" {
                            let v: Value = serde_json::from_slice(&body).unwrap();
                            seen.lock().unwrap().sends.push((auth.unwrap_or_default(), v.clone()));
                            // A slow FCM must not slow the sender down.
                            tokio::time::sleep(Duration::from_millis(3000)).await;
                            if v["message"]["token"] == "dead-token-0123456789" {
                                (
                                    404,
                                    json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
                                    "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]}}),
                                )
                            } else {
                                (200, json!({"name": "projects/proj-1/messages/1"}))
                            }
                        } else {
                            (404, json!({}))
                        };
                        let mut r = http::Response::new(Full::new(Bytes::from(reply.to_string())));
                        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_pushed_to_every_active_device() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let m = mock(seen.clone()).await;
    let account = json!({
        "type": "service_account",
        "project_id": "proj-1",
        "private_key": KEY_PEM,
        "client_email": "messagebox@proj-1.iam.gserviceaccount.com",
        "token_uri": format!("http://{m}/token"),
    })
    .to_string();
    let db = common::TestDb::new(common::Kind::SqliteFile).unwrap();
    let endpoint = format!("http://{m}");
    let s = TestServer::start(
        &db.url,
        &[
            ("ENABLE_FIREBASE", "true"),
            ("FIREBASE_PROJECT_ID", "proj-1"),
            ("FIREBASE_SERVICE_ACCOUNT_JSON", &account),
            ("FIREBASE_FCM_ENDPOINT", &endpoint),
        ],
    )
    .await;
    // Free notifications, so no payment is needed to reach the push.
    db.exec("UPDATE server_fees SET delivery_fee = 0 WHERE message_box = 'notifications'").await;
    let mut recipient = s.client();
    let (st, _) = recipient
        .post_json("/permissions/set", &json!({"messageBox": "notifications", "recipientFee": 0}))
        .await
        .unwrap();
    assert_eq!(st, 200);
    for (token, platform) in
        [("good-token-0123456789", "android"), ("dead-token-0123456789", "ios"), ("idle-token-0123456789", "web")]
    {
        let (st, _) =
            recipient.post_json("/registerDevice", &json!({"fcmToken": token, "platform": platform})).await.unwrap();
        assert_eq!(st, 200);
    }
    // A device registered to someone else gets nothing.
    let mut other = s.client();
    other.post_json("/registerDevice", &json!({"fcmToken": "other-token-0123456789"})).await.unwrap();

    let mut sender = s.client();
    sender.handshake().await.unwrap();
    let rk = recipient.identity().identity_hex().to_string();
    let started = Instant::now();
    let (st, v) = sender
        .post_json(
            "/sendMessage",
            &json!({"message": {"recipient": rk, "messageBox": "notifications", "body": "ping", "messageId": "n-1"}}),
        )
        .await
        .unwrap();
    assert_eq!(st, 200, "{v}");
    assert!(started.elapsed() < Duration::from_millis(2500), "the response did not wait for FCM");
    // A non-notifications box pushes nothing.
    sender
        .post_json(
            "/sendMessage",
            &json!({"message": {"recipient": rk, "messageBox": "inbox", "body": "x", "messageId": "n-2"}}),
        )
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().sends.len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The sends answer after 3 s; then the results are recorded.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.token_requests.len(), 1, "the access token is cached");
        let form: std::collections::HashMap<String, String> =
            form_urlencoded::parse(seen.token_requests[0].as_bytes()).into_owned().collect();
        assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
        let parts: Vec<&str> = form["assertion"].split('.').collect();
        let dec = |p: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).unwrap();
        let header: Value = serde_json::from_slice(&dec(parts[0])).unwrap();
        let claims: Value = serde_json::from_slice(&dec(parts[1])).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(claims["iss"], "messagebox@proj-1.iam.gserviceaccount.com");
        assert_eq!(claims["scope"], "https://www.googleapis.com/auth/firebase.messaging");
        assert_eq!(claims["aud"], format!("http://{m}/token"));
        let key =
            ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, public_key_der());
        key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &dec(parts[2]))
            .expect("assertion signed with the service account key");

        assert_eq!(seen.sends.len(), 3, "one send per active device of the recipient");
        let mut tokens: Vec<&str> = seen.sends.iter().map(|(_, v)| v["message"]["token"].as_str().unwrap()).collect();
        tokens.sort();
        assert_eq!(tokens, ["dead-token-0123456789", "good-token-0123456789", "idle-token-0123456789"]);
        for (auth, v) in &seen.sends {
            assert_eq!(auth, "Bearer tok-123");
            let mut expected = messagebox::push::payload(v["message"]["token"].as_str().unwrap(), "n-1");
            expected["token"] = v["message"]["token"].clone();
            assert_eq!(v["message"], expected);
        }
    }
    // The unregistered token is deactivated; the delivered ones got last_used.
    let (_, v) = recipient.get_json("/devices").await.unwrap();
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.iter().filter(|d| d["active"] == 0).count(), 1, "{v}");
    assert_eq!(devices.iter().filter(|d| d["active"] == 1).count(), 2, "{v}");
    // The metrics counted each device's outcome (they are counted whether or not served).
    use messagebox::metrics::PushOutcome::{Deactivated, Dropped, Error, Failed, Sent};
    let counts = s.app.metrics.push();
    let outcomes =
        || -> Vec<u64> { [Sent, Deactivated, Failed, Dropped, Error].iter().map(|&o| counts.get(o)).collect() };
    // The push task counts each device just before recording it; give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while outcomes() != [2, 1, 0, 0, 0] && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(outcomes(), [2, 1, 0, 0, 0], "sent, deactivated, failed, dropped, error");
}
