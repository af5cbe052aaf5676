//! Runs one auth operation N times, for instruction counts under callgrind:
//! `valgrind --tool=callgrind target/release/examples/auth_loop verify 1000` minus the same
//! with 0, divided by 1000. Operations: verify, sign, handshake, nonce, raw-verify.

use messagebox::auth::nonce::create_nonce;
use messagebox::auth::payload::select_request_headers;
use messagebox::auth::{AuthHeaders, ClientIdentity, IncomingRequest, PrivateKey, ServerAuth, SessionConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| "verify".into());
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let config = SessionConfig { max_requests_per_session: usize::MAX, ..SessionConfig::default() };
    let server = ServerAuth::new(PrivateKey::from_bytes(&[7; 32]).unwrap(), config);
    let client = ClientIdentity::new(PrivateKey::from_bytes(&[9; 32]).unwrap());
    let (init, pending) = client.start_handshake();
    let (resp, _) = server.initial_response(&init).unwrap();
    let session = pending.finish(&client, &resp).unwrap();
    let body = br#"{"message":{"recipient":"0333bfa5f454907bd86eb93d27d03b9b7f02c13723ad324c43887fb6a6da36466f","messageBox":"inbox","messageId":"abc","body":"hello"}}"#;
    let reqs: Vec<_> = (0..n)
        .map(|_| {
            session
                .sign_request(&client, "POST", "/sendMessage", &[("content-type", "application/json")], Some(body))
                .unwrap()
        })
        .collect();
    let inits: Vec<_> = (0..n).map(|_| ClientIdentity::random().start_handshake().0).collect();
    let s = server.sessions().get(&session.server_nonce).unwrap();
    let mut ok = 0usize;
    match op.as_str() {
        "verify" => {
            for r in &reqs {
                let signed = select_request_headers(r.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
                let req = IncomingRequest {
                    auth: AuthHeaders::from_pairs(&r.headers),
                    method: "POST",
                    path: "/sendMessage",
                    query: None,
                    signed_headers: &signed,
                    body,
                };
                ok += server.verify_request(&req).is_ok() as usize;
            }
        }
        "sign" => {
            for _ in 0..n {
                ok += server.sign_response(&s, &[1; 32], 200, &[], body).is_ok() as usize;
            }
        }
        "handshake" => {
            for m in &inits {
                ok += server.initial_response(m).is_ok() as usize;
            }
        }
        "nonce" => {
            for _ in 0..n {
                ok += create_nonce(server.wallet(), &mut rand::rng()).len();
            }
        }
        "raw-verify" => {
            let k = PrivateKey::from_bytes(&[3; 32]).unwrap();
            let sig = k.sign(b"x");
            let p = k.public_key();
            for _ in 0..n {
                ok += p.verify(b"x", &sig) as usize;
            }
        }
        "setup" => {}
        other => panic!("unknown op {other}"),
    }
    println!("{op} x{n}: {ok}");
}
