//! The live channel's codecs and its per-message path: Engine.IO/Socket.IO framing, the
//! authsocket envelope, and a whole inbound `sendMessage` event through the BRC-103 tunnel
//! (verify) plus an outbound delivery (sign).
//!
//! `cargo bench --bench live`; figures are recorded in perf/RESULTS.md.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use messagebox::auth::{ClientIdentity, PrivateKey, ServerAuth, SessionConfig};
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

criterion_group!(benches, bench);
criterion_main!(benches);
