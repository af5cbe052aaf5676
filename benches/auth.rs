//! The BRC-103/104 hot path: verifying a signed request on a warm session, signing a
//! response, a full server-side handshake, and createNonce/verifyNonce.
//!
//! `cargo bench --bench auth`; figures are recorded in perf/RESULTS.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use messagebox::auth::nonce::{create_nonce, verify_nonce};
use messagebox::auth::payload::select_request_headers;
use messagebox::auth::{AuthHeaders, ClientIdentity, IncomingRequest, PrivateKey, ServerAuth, SessionConfig};
use messagebox::domain::IdentityKey;

const BODY: &[u8] = br#"{"message":{"recipient":"0333bfa5f454907bd86eb93d27d03b9b7f02c13723ad324c43887fb6a6da36466f","messageBox":"inbox","messageId":"3c1bf5baadee39721ae8c9882b3cf324f0bf3b9eb3fc1b8af8089ca7a7c2e669","body":"{\"encryptedMessage\":\"kTXRMM+EB3shTPCfztWEaz40dqK3DIFb2X4eN2JTu7321orXZ5mxVnWq1owekvOOFuM0o53aYXB/YU08Psty4IDOijNhMVIbmsY=\"}"}}"#;

fn server() -> ServerAuth {
    let config = SessionConfig { max_requests_per_session: usize::MAX, ..SessionConfig::default() };
    ServerAuth::new(PrivateKey::random(), config)
}

fn bench(c: &mut Criterion) {
    let server = server();
    let client = ClientIdentity::random();
    let (init, pending) = client.start_handshake();
    let (resp, _) = server.initial_response(&init).unwrap();
    let session = pending.finish(&client, &resp).unwrap();

    // Many distinct signed requests (the replay check refuses a repeated nonce).
    let requests: Vec<_> = (0..4096)
        .map(|_| {
            session
                .sign_request(&client, "POST", "/sendMessage", &[("content-type", "application/json")], Some(BODY))
                .unwrap()
        })
        .collect();
    let mut i = 0;
    c.bench_function("verify signed request (warm session)", |b| {
        b.iter(|| {
            let r = &requests[i % requests.len()];
            i += 1;
            let signed = select_request_headers(r.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
            let req = IncomingRequest {
                auth: AuthHeaders::from_pairs(&r.headers),
                method: "POST",
                path: "/sendMessage",
                query: None,
                signed_headers: &signed,
                body: BODY,
            };
            // Once every prepared request was seen, the replay check rejects: still the full cost.
            black_box(server.verify_request(&req).is_ok())
        })
    });

    let s = server.sessions().get(&session.server_nonce).unwrap();
    let response = br#"{"status":"success","message":"Your message has been sent to 1 recipient(s).","results":[{"recipient":"0333bfa5f454907bd86eb93d27d03b9b7f02c13723ad324c43887fb6a6da36466f","messageId":"3c1bf5baadee39721ae8c9882b3cf324f0bf3b9eb3fc1b8af8089ca7a7c2e669"}]}"#;
    let rid = [7u8; 32];
    c.bench_function("sign response", |b| {
        b.iter(|| black_box(server.sign_response(&s, &rid, 200, &[], response).unwrap()))
    });

    let inits: Vec<_> = (0..256).map(|_| ClientIdentity::random().start_handshake().0).collect();
    let mut j = 0;
    c.bench_function("server handshake (initialRequest -> initialResponse)", |b| {
        b.iter(|| {
            let m = &inits[j % inits.len()];
            j += 1;
            let (resp, session) = server.initial_response(m).unwrap();
            server.sessions().remove(&session.server_nonce);
            black_box(resp)
        })
    });

    let wallet = server.wallet();
    c.bench_function("createNonce", |b| b.iter(|| black_box(create_nonce(wallet, &mut rand::rng()))));
    let nonce = create_nonce(wallet, &mut rand::rng());
    c.bench_function("verifyNonce", |b| b.iter(|| black_box(verify_nonce(wallet, &nonce).is_ok())));

    // The reference the two above are judged against: bare libsecp256k1 on this machine.
    let secp = secp256k1::Secp256k1::new();
    let sk = secp256k1::SecretKey::from_byte_array([7u8; 32]).unwrap();
    let pk = secp256k1::PublicKey::from_secret_key(&secp, &sk);
    let digest = secp256k1::Message::from_digest([42u8; 32]);
    let sig = secp.sign_ecdsa(digest, &sk);
    c.bench_function("libsecp256k1 ECDSA verify (reference)", |b| {
        b.iter(|| black_box(secp.verify_ecdsa(black_box(digest), &sig, &pk).is_ok()))
    });
    c.bench_function("libsecp256k1 ECDSA sign (reference)", |b| {
        b.iter(|| black_box(secp.sign_ecdsa(black_box(digest), &sk)))
    });
    // A send's recipient: remembered by this thread after its first parse, and a key never
    // seen (the full check on the curve, a point decompression).
    let recipient = "0333bfa5f454907bd86eb93d27d03b9b7f02c13723ad324c43887fb6a6da36466f";
    c.bench_function("identity key parse (remembered)", |b| {
        b.iter(|| black_box(IdentityKey::parse(black_box(recipient)).is_ok()))
    });
    c.bench_function("identity key parse (uppercase: full check)", |b| {
        let upper = recipient.to_uppercase();
        b.iter(|| black_box(IdentityKey::parse(black_box(&upper)).is_ok()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
