//! Delivery-fee payments for tests: [`Payment`] builds one as `MessageBoxClient` does (a
//! BRC-29 output to the server's derived key at index 0, inside AtomicBEEF whose parent is
//! proven by a BUMP), and [`MockWallet`] is a local BRC-100 HTTP JSON wallet
//! (`POST /internalizeAction`) for `PAYMENT_WALLET_URL` that records what it is asked.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use messagebox::auth::keys::invoice_number;
use messagebox::auth::{PrivateKey, PublicKey};
use messagebox::payments::beef::{Beef, BeefTx, Leaf, MerklePath, Transaction, TxIn, TxOut, BEEF_V1};
use messagebox::payments::check::{p2pkh, BRC29_PROTOCOL};
use serde_json::{json, Value};

/// A payment from `payer` paying `satoshis` to `server`'s BRC-29 key.
pub struct Payment {
    pub payer: PrivateKey,
    pub server: PublicKey,
    pub satoshis: u64,
    /// Base64 of 32 random bytes, as the client makes them.
    pub prefix: String,
    pub suffix: String,
    /// Distinguishes otherwise equal payments (the parent's funding outpoint).
    pub nonce: u8,
}

impl Payment {
    pub fn new(payer: PrivateKey, server_identity: &str, satoshis: u64) -> Payment {
        use base64::Engine as _;
        let b64 = |b: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(b);
        Payment {
            payer,
            server: PublicKey::from_compressed_hex(server_identity).unwrap(),
            satoshis,
            prefix: b64(rand::random()),
            suffix: b64(rand::random()),
            nonce: rand::random(),
        }
    }

    /// The AtomicBEEF bytes: a proven parent paying the payer 10000 satoshis, and the payment
    /// spending it with the server's output first and change second.
    pub fn atomic_beef(&self) -> Vec<u8> {
        let payer_script = p2pkh(&self.payer.public_key());
        let parent = Transaction {
            version: 1,
            inputs: vec![TxIn {
                source_txid: [self.nonce; 32],
                source_index: 0,
                unlocking_script: vec![0x51],
                sequence: u32::MAX,
            }],
            outputs: vec![TxOut { satoshis: 10_000, locking_script: payer_script.clone() }],
            lock_time: 0,
        };
        let bump = MerklePath::new(
            900,
            vec![vec![
                Leaf { offset: 0, hash: Some(parent.txid()), txid: true },
                Leaf { offset: 1, hash: Some([0xcd; 32]), txid: false },
            ]],
        )
        .unwrap();
        let invoice = invoice_number(BRC29_PROTOCOL, &format!("{} {}", self.prefix, self.suffix)).unwrap();
        let to_server = self.server.derive_child(&self.payer, &invoice).unwrap();
        let payment = Transaction {
            version: 1,
            inputs: vec![TxIn {
                source_txid: parent.txid(),
                source_index: 0,
                unlocking_script: vec![0x51],
                sequence: u32::MAX,
            }],
            outputs: vec![
                TxOut { satoshis: self.satoshis, locking_script: p2pkh(&to_server) },
                TxOut { satoshis: 10_000 - self.satoshis - 1, locking_script: payer_script },
            ],
            lock_time: 0,
        };
        Beef {
            version: BEEF_V1,
            atomic_txid: Some(payment.txid()),
            bumps: vec![bump],
            txs: vec![BeefTx::Raw { tx: parent, bump: Some(0) }, BeefTx::Raw { tx: payment, bump: None }],
        }
        .to_bytes()
    }

    /// The payment's txid (display hex).
    pub fn txid(&self) -> String {
        let beef = Beef::from_bytes(&self.atomic_beef()).unwrap();
        messagebox::payments::beef::display_hex(&beef.atomic_txid.unwrap())
    }

    /// The delivery output as the client describes it.
    pub fn delivery_output(&self) -> Value {
        json!({"outputIndex": 0, "protocol": "wallet payment", "paymentRemittance": {
            "derivationPrefix": self.prefix, "derivationSuffix": self.suffix,
            "senderIdentityKey": self.payer.public_key().to_hex()}})
    }

    /// The request's `payment`, with `extra` outputs after the delivery output.
    pub fn json(&self, extra: &[Value]) -> Value {
        let mut outputs = vec![self.delivery_output()];
        outputs.extend_from_slice(extra);
        json!({"tx": self.atomic_beef(), "outputs": outputs, "description": "MessageBox delivery payment"})
    }
}

/// How the mock wallet answers `internalizeAction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalletMode {
    Accept,
    /// `{"accepted": false}`.
    Refuse,
    /// HTTP 400 `{"isError": true, "message": "boom"}`.
    Fail,
}

/// A local BRC-100 HTTP JSON wallet that records every request body.
pub struct MockWallet {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Value>>>,
    pub mode: Arc<Mutex<WalletMode>>,
}

impl MockWallet {
    pub async fn start() -> MockWallet {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let mode = Arc::new(Mutex::new(WalletMode::Accept));
        let (s, m) = (seen.clone(), mode.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (seen, mode) = (s.clone(), m.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (seen, mode) = (seen.clone(), mode.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let (status, reply) = if path == "/internalizeAction" {
                                let v: Value = serde_json::from_slice(&body).unwrap();
                                seen.lock().unwrap().push(v);
                                match *mode.lock().unwrap() {
                                    WalletMode::Accept => (200, json!({"accepted": true, "isMerge": false})),
                                    WalletMode::Refuse => (200, json!({"accepted": false})),
                                    WalletMode::Fail => (400, json!({"isError": true, "message": "boom"})),
                                }
                            } else {
                                (404, json!({"isError": true, "message": "no such method"}))
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
        MockWallet { addr, seen, mode }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn set(&self, mode: WalletMode) {
        *self.mode.lock().unwrap() = mode;
    }
}
