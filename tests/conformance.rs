//! Runs every vector of the BSV SDK conformance corpus (tests/vectors/conformance/, see its
//! README) against the crate's own primitives in `messagebox::auth::keys`: HMAC-SHA256,
//! ECDSA signing and verification, BRC-42 key derivation, and the BRC-100 `createHmac`,
//! `createSignature` and `verifySignature` of a `KeyDeriver`.
//!
//! Every vector is checked, and every field of its `expected` object: a field this file does
//! not know fails the test instead of being skipped, so a vector added to the corpus cannot
//! pass unchecked.

use messagebox::auth::keys::{hmac_sha256, Counterparty, KeyDeriver, PrivateKey, Protocol, PublicKey, Signature};
use serde_json::{Map, Value};

/// One file of the corpus: its vectors, each handed to `check` with its id for messages.
/// Returns how many were checked (all of them, or the test has failed).
fn run(name: &str, text: &str, check: impl Fn(&str, &Value, &Map<String, Value>)) -> usize {
    let file: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
    let vectors = file["vectors"].as_array().unwrap_or_else(|| panic!("{name}: no vectors"));
    assert!(!vectors.is_empty(), "{name}: no vectors");
    for v in vectors {
        let id = v["id"].as_str().unwrap_or_else(|| panic!("{name}: a vector without an id"));
        let expected = v["expected"].as_object().unwrap_or_else(|| panic!("{id}: no expected object"));
        check(id, &v["input"], expected);
    }
    println!("{name}: {} vectors checked", vectors.len());
    vectors.len()
}

fn str_at<'a>(id: &str, v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{id}: {key} is not a string"))
}

fn bool_at(id: &str, v: &Map<String, Value>, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or_else(|| panic!("{id}: {key} is not a boolean"))
}

fn u64_at(id: &str, v: &Map<String, Value>, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or_else(|| panic!("{id}: {key} is not a number"))
}

/// A JSON array of byte values.
fn bytes_at(id: &str, v: &Value, key: &str) -> Vec<u8> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{id}: {key} is not an array"))
        .iter()
        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).unwrap_or_else(|| panic!("{id}: {key}: not a byte")))
        .collect()
}

fn unhex(id: &str, s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("{id}: {s}: {e}"))
}

/// A big-endian number of at most 32 bytes, left-padded: an ECDSA message or scalar.
fn be32(id: &str, hex_digits: &str) -> [u8; 32] {
    let digits = format!("{hex_digits:0>64}");
    unhex(id, &digits).try_into().unwrap_or_else(|_| panic!("{id}: {hex_digits} is wider than 256 bits"))
}

fn private_key(id: &str, hex_digits: &str) -> PrivateKey {
    PrivateKey::from_hex(hex_digits).unwrap_or_else(|e| panic!("{id}: {hex_digits}: {e}"))
}

fn public_key(id: &str, hex_digits: &str) -> PublicKey {
    PublicKey::from_compressed_hex(hex_digits).unwrap_or_else(|e| panic!("{id}: {hex_digits}: {e}"))
}

/// Fails on an `expected` field that no check of the vector's family reads.
fn only_fields(id: &str, expected: &Map<String, Value>, known: &[&str]) {
    for k in expected.keys() {
        assert!(k == "note" || known.contains(&k.as_str()), "{id}: expected.{k} is not checked by this file");
    }
}

// ------------------------------------------------------------------------------ HMAC-SHA256

#[test]
fn sdk_crypto_hmac() {
    let n = run("sdk_crypto_hmac.json", include_str!("vectors/conformance/sdk_crypto_hmac.json"), |id, input, exp| {
        only_fields(id, exp, &["hmac"]);
        assert_eq!(str_at(id, input, "algorithm"), "hmac-sha256", "{id}");
        let decode = |field: &str| match str_at(id, input, &format!("{field}_encoding")) {
            "hex" => unhex(id, str_at(id, input, field)),
            "utf8" => str_at(id, input, field).as_bytes().to_vec(),
            other => panic!("{id}: unknown encoding {other}"),
        };
        let mac = hmac_sha256(&decode("key"), &decode("message"));
        assert_eq!(hex::encode(mac), str_at(id, &Value::Object(exp.clone()), "hmac"), "{id}");
    });
    assert_eq!(n, 7);
}

// ------------------------------------------------------------------------------------- ECDSA

#[test]
fn sdk_crypto_ecdsa() {
    let half_n = be32("n/2", "7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0");
    let n =
        run("sdk_crypto_ecdsa.json", include_str!("vectors/conformance/sdk_crypto_ecdsa.json"), |id, input, exp| {
            only_fields(
                id,
                exp,
                &[
                    "verify",
                    "der_length_bytes",
                    "der_hex_length_chars",
                    "roundtrip_r_s_equal",
                    "s_lte_half_n",
                    "all_s_lte_half_n",
                    "throws",
                    "error_pattern",
                ],
            );
            let key = private_key(id, str_at(id, input, "privkey_hex"));
            let public = key.public_key();

            // A point that is not a key: the crate cannot even hold it, parsing refuses it.
            if input.get("pubkey").is_some() {
                assert_eq!(str_at(id, input, "pubkey"), "infinity", "{id}");
                assert!(bool_at(id, exp, "throws"), "{id}");
                // SEC1 encodes the point at infinity as the single byte 0.
                assert!(PublicKey::from_slice(&[0]).is_err(), "{id}: the point at infinity parsed as a key");
                return;
            }

            // A signature given as (r, s), out of range or zero: it never verifies.
            if input.get("signature_r").is_some() {
                let mut rs = [0u8; 64];
                rs[..32].copy_from_slice(&be32(id, str_at(id, input, "signature_r")));
                rs[32..].copy_from_slice(&be32(id, str_at(id, input, "signature_s")));
                let digest = be32(id, str_at(id, input, "message_hex"));
                let verified = Signature::from_compact(&rs).is_some_and(|sig| public.verify_digest(&digest, &sig));
                assert_eq!(verified, bool_at(id, exp, "verify"), "{id}");
                return;
            }

            // Several messages, each signed with RFC 6979 nonces: every s is low.
            if let Some(messages) = input.get("messages") {
                let all_low = messages.as_array().unwrap().iter().all(|m| {
                    let sig = key.sign_digest(&be32(id, m.as_str().unwrap()));
                    sig.to_compact()[32..] <= half_n[..] && sig.is_low_s()
                });
                assert_eq!(all_low, bool_at(id, exp, "all_s_lte_half_n"), "{id}");
                return;
            }

            // One message signed with RFC 6979 nonces (the SDK's deterministic "drbg" k).
            assert_eq!(str_at(id, input, "k"), "drbg", "{id}: only deterministic nonces have a counterpart");
            let digest = be32(id, str_at(id, input, "message_hex"));
            let sig = key.sign_digest(&digest);
            let mut checked = 0;
            if exp.contains_key("verify") {
                let wrong = input.get("wrong_pubkey_scalar").map(|s| {
                    let scalar: u8 = s.as_str().unwrap().parse().unwrap_or_else(|e| panic!("{id}: {e}"));
                    let mut b = [0u8; 32];
                    b[31] = scalar;
                    PrivateKey::from_bytes(&b).unwrap().public_key()
                });
                let verifier = wrong.unwrap_or(public);
                assert_eq!(verifier.verify_digest(&digest, &sig), bool_at(id, exp, "verify"), "{id}");
                checked += 1;
            }
            if exp.contains_key("der_length_bytes") {
                assert_eq!(sig.to_der().len() as u64, u64_at(id, exp, "der_length_bytes"), "{id}");
                checked += 1;
            }
            if exp.contains_key("der_hex_length_chars") {
                assert_eq!(hex::encode(sig.to_der()).len() as u64, u64_at(id, exp, "der_hex_length_chars"), "{id}");
                checked += 1;
            }
            if exp.contains_key("roundtrip_r_s_equal") {
                let back = Signature::from_der(&sig.to_der()).unwrap_or_else(|| panic!("{id}: own DER does not parse"));
                assert_eq!(back.to_compact() == sig.to_compact(), bool_at(id, exp, "roundtrip_r_s_equal"), "{id}");
                checked += 1;
            }
            if exp.contains_key("s_lte_half_n") {
                let low = sig.to_compact()[32..] <= half_n[..] && sig.is_low_s();
                assert_eq!(low, bool_at(id, exp, "s_lte_half_n"), "{id}");
                checked += 1;
            }
            assert!(checked > 0 && !exp.contains_key("throws"), "{id}: nothing of this vector has a counterpart");
        });
    assert_eq!(n, 12);
}

// ------------------------------------------------------------------------- BRC-42 derivation

#[test]
fn sdk_keys_key_derivation() {
    let text = include_str!("vectors/conformance/sdk_keys_key-derivation.json");
    let n = run("sdk_keys_key-derivation.json", text, |id, input, exp| {
        only_fields(
            id,
            exp,
            &[
                "privkey_hex_roundtrip",
                "derived_private_key_hex",
                "derived_public_key_hex",
                "pubkey_der_length_bytes",
                "pubkey_der_hex_length_chars",
                "pubkey_der_prefix",
                "throws",
                "error_pattern",
            ],
        );
        let expected = Value::Object(exp.clone());
        if exp.contains_key("privkey_hex_roundtrip") {
            let key = private_key(id, str_at(id, input, "privkey_hex"));
            assert_eq!(key.to_hex(), str_at(id, &expected, "privkey_hex_roundtrip"), "{id}");
        } else if exp.contains_key("derived_private_key_hex") {
            let recipient = private_key(id, str_at(id, input, "recipient_private_key_hex"));
            let sender = public_key(id, str_at(id, input, "sender_public_key_hex"));
            let child = recipient.derive_child(&sender, str_at(id, input, "invoice_number")).unwrap();
            assert_eq!(child.to_hex(), str_at(id, &expected, "derived_private_key_hex"), "{id}");
        } else if exp.contains_key("derived_public_key_hex") {
            let sender = private_key(id, str_at(id, input, "sender_private_key_hex"));
            let recipient = public_key(id, str_at(id, input, "recipient_public_key_hex"));
            let child = recipient.derive_child(&sender, str_at(id, input, "invoice_number")).unwrap();
            assert_eq!(child.to_hex(), str_at(id, &expected, "derived_public_key_hex"), "{id}");
        } else if exp.contains_key("pubkey_der_length_bytes") {
            let der = private_key(id, str_at(id, input, "privkey_hex")).public_key().serialize();
            assert_eq!(der.len() as u64, u64_at(id, exp, "pubkey_der_length_bytes"), "{id}");
            assert_eq!(hex::encode(der).len() as u64, u64_at(id, exp, "pubkey_der_hex_length_chars"), "{id}");
            assert_eq!(str_at(id, &expected, "pubkey_der_prefix"), "02 or 03", "{id}");
            assert!(der[0] == 2 || der[0] == 3, "{id}");
        } else {
            // A point off the curve, (x, y) = (10, 13) here: refused as a key, so no
            // shared secret can be derived with it.
            assert_eq!(str_at(id, input, "operation"), "deriveSharedSecret", "{id}");
            assert!(bool_at(id, exp, "throws"), "{id}");
            let mut sec1 = [0u8; 65];
            sec1[0] = 4;
            sec1[1..33]
                .copy_from_slice(&be32(id, &format!("{:x}", u64_at(id, input.as_object().unwrap(), "pubkey_x"))));
            sec1[33..].copy_from_slice(&be32(id, &format!("{:x}", u64_at(id, input.as_object().unwrap(), "pubkey_y"))));
            assert!(PublicKey::from_slice(&sec1).is_err(), "{id}: a point off the curve parsed as a key");
        }
    });
    assert_eq!(n, 32);
}

// --------------------------------------------------------------------------------- BRC-100

/// A `ProtoWallet` over the vector's root key, and the protocol, key id and counterparty of
/// its `args`.
struct WalletCall<'a> {
    wallet: KeyDeriver,
    protocol: Protocol<'a>,
    key_id: &'a str,
    counterparty: Counterparty,
}

fn wallet_call<'a>(id: &str, input: &'a Value) -> WalletCall<'a> {
    let args = &input["args"];
    let protocol = args["protocolID"].as_array().unwrap_or_else(|| panic!("{id}: protocolID"));
    let level = protocol[0].as_u64().and_then(|l| u8::try_from(l).ok()).unwrap_or_else(|| panic!("{id}: level"));
    let counterparty = match str_at(id, args, "counterparty") {
        "self" => Counterparty::Myself,
        "anyone" => Counterparty::Anyone,
        other => Counterparty::Other(public_key(id, other)),
    };
    WalletCall {
        wallet: KeyDeriver::new(private_key(id, str_at(id, input, "root_key"))),
        protocol: Protocol::new(level, protocol[1].as_str().unwrap_or_else(|| panic!("{id}: protocol name"))),
        key_id: str_at(id, args, "keyID"),
        counterparty,
    }
}

/// The vector's outcome as `Ok(value)` or `Err(message)`, where `value` is `expected[key]`.
fn expected_outcome<'a>(id: &str, exp: &'a Map<String, Value>, key: &str) -> Result<&'a Value, &'a str> {
    if exp.contains_key("error") {
        assert!(bool_at(id, exp, "error"), "{id}");
        Err(exp.get("message").and_then(Value::as_str).unwrap_or_else(|| panic!("{id}: error without a message")))
    } else {
        Ok(exp.get(key).unwrap_or_else(|| panic!("{id}: no expected {key}")))
    }
}

#[test]
fn wallet_brc100_createhmac() {
    let text = include_str!("vectors/conformance/wallet_brc100_createhmac.json");
    let n = run("wallet_brc100_createhmac.json", text, |id, input, exp| {
        only_fields(id, exp, &["hmac", "error", "message"]);
        let c = wallet_call(id, input);
        let data = str_at(id, &input["args"], "data").as_bytes();
        let got = c.wallet.create_hmac(c.protocol, c.key_id, c.counterparty, data);
        match expected_outcome(id, exp, "hmac") {
            Ok(_) => assert_eq!(got.unwrap().to_vec(), bytes_at(id, &Value::Object(exp.clone()), "hmac"), "{id}"),
            Err(message) => assert_eq!(got.unwrap_err().to_string(), message, "{id}"),
        }
    });
    assert_eq!(n, 36);
}

#[test]
fn wallet_brc100_createsignature() {
    let text = include_str!("vectors/conformance/wallet_brc100_createsignature.json");
    let n = run("wallet_brc100_createsignature.json", text, |id, input, exp| {
        only_fields(id, exp, &["signature", "error", "message"]);
        let c = wallet_call(id, input);
        let data = str_at(id, &input["args"], "data").as_bytes();
        let got = c.wallet.create_signature(c.protocol, c.key_id, c.counterparty, data);
        match expected_outcome(id, exp, "signature") {
            Ok(_) => {
                let der = got.unwrap().to_der();
                assert_eq!(der, bytes_at(id, &Value::Object(exp.clone()), "signature"), "{id}");
            }
            Err(message) => assert_eq!(got.unwrap_err().to_string(), message, "{id}"),
        }
    });
    assert_eq!(n, 36);
}

/// `verifySignature`'s text for a signature that is not DER.
const NOT_DER: &str = "Signature is not valid";

#[test]
fn wallet_brc100_verifysignature() {
    let text = include_str!("vectors/conformance/wallet_brc100_verifysignature.json");
    let n = run("wallet_brc100_verifysignature.json", text, |id, input, exp| {
        only_fields(id, exp, &["valid", "error", "code", "message"]);
        let c = wallet_call(id, input);
        let args = &input["args"];
        let for_self = args.get("forSelf").map(|f| f.as_bool().unwrap_or_else(|| panic!("{id}: forSelf")));
        let for_self = for_self.unwrap_or(false);
        // The wallet validates the protocol before it reads the signature.
        let outcome: Result<bool, String> = match Signature::from_der(&bytes_at(id, args, "signature")) {
            Some(sig) if args.get("hashToDirectlyVerify").is_some() => {
                let digest: [u8; 32] = bytes_at(id, args, "hashToDirectlyVerify").try_into().unwrap();
                c.wallet
                    .verify_signature_digest(c.protocol, c.key_id, c.counterparty, for_self, &digest, &sig)
                    .map_err(|e| e.to_string())
            }
            Some(sig) => {
                let data = bytes_at(id, args, "data");
                c.wallet
                    .verify_signature(c.protocol, c.key_id, c.counterparty, for_self, &data, &sig)
                    .map_err(|e| e.to_string())
            }
            None => match c.wallet.derive_public(c.protocol, c.key_id, c.counterparty, for_self) {
                Ok(_) => Err(NOT_DER.into()),
                Err(e) => Err(e.to_string()),
            },
        };
        match (exp.get("valid"), exp.get("code")) {
            (Some(valid), None) => assert_eq!(outcome, Ok(valid.as_bool().unwrap()), "{id}"),
            // The wallet throws ERR_INVALID_SIGNATURE where the primitive answers false.
            (None, Some(code)) => {
                assert!(bool_at(id, exp, "error"), "{id}");
                assert_eq!(code, "ERR_INVALID_SIGNATURE", "{id}");
                assert_eq!(outcome, Ok(false), "{id}");
            }
            _ => assert_eq!(outcome, Err(expected_outcome(id, exp, "valid").unwrap_err().to_string()), "{id}"),
        }
    });
    assert_eq!(n, 81);
}
