//! The live channel's codecs and its per-message path: Engine.IO/Socket.IO framing, the
//! authsocket envelope, and a whole inbound `sendMessage` event through the BRC-103 tunnel
//! (verify) plus an outbound delivery (sign); and the typed live path against the `Value`
//! reading it replaced, on the same input (`typed vs value` group), with the per-message
//! verify on the session's parsed key against parsing the key each time.
//!
//! `cargo bench --bench live`; figures are recorded in perf/RESULTS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use messagebox::auth::{AuthMessage, ClientIdentity, PrivateKey, PublicKey, ServerAuth, SessionConfig, Signature};
use messagebox::live::authsocket::{decode_envelope, envelope};
use messagebox::live::engineio::{decode_payload, encode_payload, Packet as EnginePacket};
use messagebox::live::socketio::{event, Packet as SocketPacket};
use messagebox::live::AuthTunnel;

fn bench(c: &mut Criterion) {
    let config = SessionConfig { max_requests_per_session: usize::MAX, ..SessionConfig::default() };
    let server = Arc::new(ServerAuth::new(PrivateKey::random(), config));
    let client = ClientIdentity::random();
    let mut tunnel = AuthTunnel::new(server.clone());

    // Handshake through the tunnel, as a socket client would.
    let (init, pending) = client.start_handshake();
    tunnel.handle(&init.to_json()).unwrap();
    let reply = tunnel.poll_send().unwrap();
    let session =
        pending.finish(&client, &messagebox::auth::AuthMessage::from_json(reply.as_bytes()).unwrap()).unwrap();

    let room = format!("{}-inbox", client.identity_hex());
    let data = format!(
        r#"{{"roomId":"{room}","message":{{"messageId":"4efe61c3a9b1","recipient":"{}","body":"{{\"encryptedMessage\":\"kTXRMM+EB3shTPCfztWEaz40dqK3DIFb2X4eN2JTu7321orXZ5mxVnWq1owekvOOFuM0o53aYXB/YU08Psty4IDOijNhMVIbmsY=\"}}"}}}}"#,
        client.identity_hex()
    );
    let payload = envelope("sendMessage", Some(&data)).into_bytes();
    // Distinct signed frames (the replay check refuses a repeated nonce).
    let frames: Vec<String> = (0..4096)
        .map(|_| {
            let m = session.sign_general(&client, payload.clone()).unwrap();
            event("authMessage", &m.to_json())
        })
        .collect();
    let engine_frame = EnginePacket::Message(frames[0].clone()).encode();

    c.bench_function("engine.io decode message frame", |b| {
        b.iter(|| black_box(EnginePacket::decode(&engine_frame).unwrap()))
    });
    c.bench_function("socket.io decode authMessage event", |b| {
        b.iter(|| black_box(SocketPacket::decode(&frames[0]).unwrap()))
    });
    let packets = [frames[0].as_str(), "2", frames[1].as_str()];
    let body = encode_payload(packets);
    c.bench_function("polling payload decode (3 packets)", |b| b.iter(|| black_box(decode_payload(&body).count())));
    c.bench_function("authsocket envelope encode+decode", |b| {
        b.iter(|| black_box(decode_envelope(envelope("sendMessage", Some(&data)).as_bytes())))
    });

    let mut i = 0;
    c.bench_function("inbound sendMessage event: decode + verify + envelope", |b| {
        b.iter(|| {
            let f = &frames[i % frames.len()];
            i += 1;
            let SocketPacket::Event { args, .. } = SocketPacket::decode(f).unwrap() else { unreachable!() };
            // Past the first 4096 the replay check refuses: the full verification still ran.
            black_box(tunnel.handle(args[0].get()).is_ok())
        })
    });

    let delivery = format!(r#"{{"sender":"{}","messageId":"4efe61c3a9b1","body":"hello"}}"#, client.identity_hex());
    let name = format!("sendMessage-{room}");
    c.bench_function("outbound delivery: envelope + sign + frame", |b| {
        b.iter(|| {
            tunnel.emit(&name, Some(&delivery));
            let json = tunnel.poll_send().unwrap();
            black_box(EnginePacket::Message(event("authMessage", &json)).encode())
        })
    });
}

/// The `Value` reading of an envelope that `decode_envelope` replaced.
fn decode_envelope_value(payload: &[u8]) -> Option<(String, Option<serde_json::Value>)> {
    use serde_json::Value;
    let text = String::from_utf8_lossy(payload);
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(&text) else { return None };
    let Some(Value::String(name)) = map.remove("eventName") else { return None };
    Some((name, map.remove("data")))
}

fn typed_vs_value(c: &mut Criterion) {
    let config = SessionConfig { max_requests_per_session: usize::MAX, ..SessionConfig::default() };
    let server = Arc::new(ServerAuth::new(PrivateKey::random(), config));
    let client = ClientIdentity::random();
    let (init, pending) = client.start_handshake();
    let (resp, _) = server.initial_response(&init).unwrap();
    let session = pending.finish(&client, &resp).unwrap();
    let server_session = server.sessions().get(&session.server_nonce).unwrap();
    let recipient = PrivateKey::random().public_key().to_hex();

    // A sendMessage as MessageBoxClient sends it (an encrypted body), and the delivery the
    // server signs for the recipient.
    let body = format!(
        r#"{{\"encryptedMessage\":\"{}\"}}"#,
        "kTXRMM+EB3shTPCfztWEaz40dqK3DIFb2X4eN2JTu7321orXZ5mxVnWq1owekvOOFuM0o53aYXB/YU08Psty4IDOijNhMVIbmsY="
    );
    let send = envelope(
        "sendMessage",
        Some(&format!(
            r#"{{"roomId":"{recipient}-inbox","message":{{"messageId":"3c1bf5baadee39721ae8c9882b3cf324f0bf3b9eb3fc1b8af8089ca7a7c2e669","recipient":"{recipient}","body":"{body}"}}}}"#
        )),
    );
    let delivery = envelope(
        &format!("sendMessage-{recipient}-inbox"),
        Some(&format!(
            r#"{{"sender":"{}","messageId":"3c1bf5baadee39721ae8c9882b3cf324f0bf3b9eb3fc1b8af8089ca7a7c2e669","body":"{body}"}}"#,
            client.identity_hex()
        )),
    );
    let send_msg = session.sign_general(&client, send.clone().into_bytes()).unwrap();
    let delivery_msg = server.sign_general(&server_session, delivery.clone().into_bytes()).unwrap();

    let mut g = c.benchmark_group("typed vs value");
    for (what, msg, env) in [("sendMessage", &send_msg, &send), ("delivery", &delivery_msg, &delivery)] {
        let json = msg.to_json();
        assert_eq!(AuthMessage::from_json(json.as_bytes()), AuthMessage::from_json_value(json.as_bytes()));
        assert_eq!(json, serde_json::to_string(msg).unwrap());
        g.bench_function(format!("{what}: BRC-103 decode, typed"), |b| {
            b.iter(|| black_box(AuthMessage::from_json(black_box(json.as_bytes())).unwrap()))
        });
        g.bench_function(format!("{what}: BRC-103 decode, Value"), |b| {
            b.iter(|| black_box(AuthMessage::from_json_value(black_box(json.as_bytes())).unwrap()))
        });
        g.bench_function(format!("{what}: BRC-103 encode, typed"), |b| b.iter(|| black_box(msg.to_json())));
        g.bench_function(format!("{what}: BRC-103 encode, serde Serialize"), |b| {
            b.iter(|| black_box(serde_json::to_string(msg).unwrap()))
        });
        let payload = env.as_bytes();
        g.bench_function(format!("{what}: envelope decode, typed"), |b| {
            b.iter(|| black_box(decode_envelope(black_box(payload)).unwrap()))
        });
        g.bench_function(format!("{what}: envelope decode, Value"), |b| {
            b.iter(|| black_box(decode_envelope_value(black_box(payload)).unwrap()))
        });
    }

    // A payload's byte array alone: scanned from its text, or read by serde per element.
    let AuthMessage::General(general) = &send_msg else { unreachable!() };
    let array = serde_json::to_string(general.payload.as_ref().unwrap()).unwrap();
    g.bench_function("payload byte array: scan", |b| {
        b.iter(|| black_box(messagebox::json::parse_byte_array(black_box(&array)).unwrap()))
    });
    g.bench_function("payload byte array: serde Vec<u8>", |b| {
        b.iter(|| black_box(serde_json::from_str::<Vec<u8>>(black_box(&array)).unwrap()))
    });
    g.bench_function("payload byte array: serde Value", |b| {
        b.iter(|| black_box(serde_json::from_str::<serde_json::Value>(black_box(&array)).unwrap()))
    });

    // The verify of one general message (the BRC-42 child key folded in), on the session's
    // parsed key or parsing the identity key (a decompression) first.
    let payload = general.payload.clone().unwrap();
    let sig = Signature::from_der(general.signature.as_deref().unwrap()).unwrap();
    let mut invoice = b"2-auth message signature-".to_vec();
    invoice.extend_from_slice(general.nonce.as_deref().unwrap().as_bytes());
    invoice.push(b' ');
    invoice.extend_from_slice(server_session.server_nonce.as_bytes());
    let s = &server_session;
    assert!(s.secret.verify(&s.peer, &invoice, &payload, &sig));
    g.bench_function("general verify, session's parsed key", |b| {
        b.iter(|| black_box(s.secret.verify(&s.peer, &invoice, &payload, &sig)))
    });
    g.bench_function("general verify, key parsed each time", |b| {
        b.iter(|| {
            let peer = PublicKey::from_compressed_hex(black_box(&s.peer_hex)).unwrap();
            black_box(s.secret.verify(&peer, &invoice, &payload, &sig))
        })
    });
    g.bench_function("key decompression (from_compressed_hex)", |b| {
        b.iter(|| black_box(PublicKey::from_compressed_hex(black_box(&recipient)).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, bench, typed_vs_value);
criterion_main!(benches);
