//! Reproduces every vector recorded with the real `@bsv/sdk` 2.1.0 and
//! `@bsv/auth-express-middleware` (tests/vectors/vectors.json, middleware_check.json,
//! behaviour.json): keys, HMACs, nonces, payload bytes, signatures and the handshake.

use messagebox::auth::keys::{
    invoice_number, sha256, Counterparty, KeyDeriver, PrivateKey, Protocol, PublicKey, Signature, AUTH_PROTOCOL,
    NONCE_PROTOCOL,
};
use messagebox::auth::nonce::{b64_decode_lenient, create_nonce_from, verify_nonce, NonceError};
use messagebox::auth::payload::{
    select_request_headers, split_target, write_varint, RequestPayload, ResponsePayload, ABSENT,
};
use messagebox::auth::{
    AuthHeaders, AuthMessage, ClientIdentity, ClientSession, IncomingRequest, MessageType, ServerAuth, SessionConfig,
};
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/vectors.json")).unwrap()
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    let mut cur = v;
    for p in path.split('.') {
        cur = match p.parse::<usize>() {
            Ok(i) => &cur[i],
            Err(_) => &cur[p],
        };
    }
    cur.as_str().unwrap_or_else(|| panic!("{path} is not a string"))
}

fn key(hex: &str) -> PrivateKey {
    PrivateKey::from_hex(hex).unwrap()
}

fn pubkey(hex: &str) -> PublicKey {
    PublicKey::from_compressed_hex(hex).unwrap()
}

struct Parties {
    server_key: PrivateKey,
    client_key: PrivateKey,
}

fn parties(v: &Value) -> Parties {
    let p = Parties { server_key: key(s(v, "keys.serverPriv")), client_key: key(s(v, "keys.clientPriv")) };
    assert_eq!(p.server_key.public_key().to_hex(), s(v, "keys.serverPub"));
    assert_eq!(p.client_key.public_key().to_hex(), s(v, "keys.clientPub"));
    p
}

#[test]
fn brc42_spec_and_auth_signing_chain() {
    let v = vectors();
    for c in v["brc42"]["specPrivate"].as_array().unwrap() {
        let child = key(s(c, "recipientPrivateKey"))
            .derive_child(&pubkey(s(c, "senderPublicKey")), s(c, "invoiceNumber"))
            .unwrap();
        assert_eq!(child.to_hex(), s(c, "expected"));
    }
    for c in v["brc42"]["specPublic"].as_array().unwrap() {
        let child = pubkey(s(c, "recipientPublicKey"))
            .derive_child(&key(s(c, "senderPrivateKey")), s(c, "invoiceNumber"))
            .unwrap();
        assert_eq!(child.to_hex(), s(c, "expected"));
    }
    let p = parties(&v);
    let a = &v["brc42"]["authSigningKey"];
    let invoice = invoice_number(AUTH_PROTOCOL, s(a, "keyID")).unwrap();
    assert_eq!(invoice, s(a, "invoiceNumber"));
    assert_eq!(hex::encode(invoice.as_bytes()), s(a, "invoiceNumberUtf8Hex"));
    let secret = p.client_key.shared_secret(&p.server_key.public_key());
    assert_eq!(hex::encode(secret.0), s(a, "sharedSecretCompressed"));
    assert_eq!(secret, p.server_key.shared_secret(&p.client_key.public_key()));
    assert_eq!(hex::encode(secret.offset(invoice.as_bytes())), s(a, "hmacSha256Scalar"));
    let child = p.client_key.derive_child(&p.server_key.public_key(), &invoice).unwrap();
    assert_eq!(child.to_hex(), s(a, "childPrivateKey"));
    assert_eq!(child.public_key().to_hex(), s(a, "childPublicKey"));
    let by_server = p.client_key.public_key().derive_child(&p.server_key, &invoice).unwrap();
    assert_eq!(by_server.to_hex(), s(a, "childPublicKeyDerivedByServer"));
}

#[test]
fn symmetric_keys_and_the_minimal_length_hmac_key() {
    let v = vectors();
    let server = KeyDeriver::new(parties(&v).server_key);
    for c in v["symmetricKeys"]["cases"].as_array().unwrap() {
        let first = hex::decode(s(c, "firstHalfHex")).unwrap();
        let key_id = String::from_utf8_lossy(&first).into_owned();
        assert_eq!(hex::encode(key_id.as_bytes()), s(c, "keyIDUtf8Hex"));
        let key = server.derive_symmetric_key(NONCE_PROTOCOL, &key_id, Counterparty::Myself).unwrap();
        assert_eq!(hex::encode(key), s(c, "aesKey32"));
        let minimal = s(c, "hmacKeyAsUsedByTS");
        assert_eq!(minimal.len() / 2, c["hmacKeyLen"].as_u64().unwrap() as usize);
        assert!(hex::encode(key).ends_with(minimal));
        let mac = server.create_hmac(NONCE_PROTOCOL, &key_id, Counterparty::Myself, &first).unwrap();
        assert_eq!(hex::encode(mac), s(c, "hmacTS"));
        let padded = messagebox::auth::keys::hmac_sha256(&key, &first);
        assert_eq!(hex::encode(padded), s(c, "hmacWithPadded32ByteKey"));
        assert!(server.verify_hmac(NONCE_PROTOCOL, &key_id, Counterparty::Myself, &first, &mac).unwrap());
    }
    // The 31-byte case really is one: the padded key gives another HMAC.
    let short = &v["symmetricKeys"]["cases"][1];
    assert_ne!(s(short, "hmacTS"), s(short, "hmacWithPadded32ByteKey"));
}

#[test]
fn nonces() {
    let v = vectors();
    let p = parties(&v);
    let server = KeyDeriver::new(p.server_key);
    let client = KeyDeriver::new(p.client_key);
    for c in v["nonces"]["cases"].as_array().unwrap() {
        assert_eq!(s(c, "wallet"), "server");
        let first: [u8; 16] = hex::decode(s(c, "firstHalfHex")).unwrap().try_into().unwrap();
        let key_id = String::from_utf8_lossy(&first);
        assert_eq!(key_id, s(c, "keyIDString"));
        let invoice = invoice_number(NONCE_PROTOCOL, &key_id).unwrap();
        assert_eq!(hex::encode(invoice.as_bytes()), s(c, "invoiceNumberUtf8Hex"));
        let nonce = create_nonce_from(&server, &first).unwrap();
        assert_eq!(nonce, s(c, "nonce"));
        assert_eq!(b64_decode_lenient(&nonce).unwrap().len(), c["nonceLenBytes"].as_u64().unwrap() as usize);
        assert!(c["verifyNonce"].as_bool().unwrap());
        verify_nonce(&server, &nonce).unwrap();
        assert_eq!(verify_nonce(&client, &nonce), Err(NonceError::InvalidHmac));
    }
    let r = &v["nonces"]["randomCreateNonce"];
    assert_eq!(s(r, "wallet"), "client");
    verify_nonce(&client, s(r, "nonce")).unwrap();
    assert_eq!(s(r, "verifyNonceOtherWallet"), "throws: HMAC is not valid");
    assert_eq!(verify_nonce(&server, s(r, "nonce")).unwrap_err().to_string(), "HMAC is not valid");
    let mut tampered = b64_decode_lenient(s(r, "nonce")).unwrap();
    tampered[40] ^= 0x01;
    let tampered = messagebox::auth::nonce::b64_encode(&tampered);
    assert_eq!(verify_nonce(&client, &tampered).unwrap_err().to_string(), "HMAC is not valid");
}

/// The server and client state of the recorded handshake (Nc = PI2DP3…, Ns = NCkkEV…).
fn handshake(v: &Value) -> (ServerAuth, ClientIdentity, ClientSession) {
    let p = parties(v);
    let h = &v["handshake"];
    let server = ServerAuth::new(p.server_key, SessionConfig::default());
    let client = ClientIdentity::new(p.client_key);
    let (request, pending) = client.start_handshake_with_nonce(s(h, "clientSessionNonce").to_string());
    assert_eq!(request.to_json(), s(h, "initialRequestBody"));
    let parsed = AuthMessage::from_json(s(h, "initialRequestBody").as_bytes()).unwrap();
    let (response, _session) =
        server.initial_response_with_nonce(&parsed, s(h, "serverSessionNonce").to_string()).unwrap();
    assert_eq!(response.to_json(), s(h, "initialResponse.body"), "initialResponse body byte-exact");
    let recorded = AuthMessage::from_json(s(h, "initialResponse.body").as_bytes()).unwrap();
    let session = pending.finish(&client, &recorded).unwrap();
    (server, client, session)
}

#[test]
fn handshake_bytes_and_signature() {
    let v = vectors();
    let h = &v["handshake"]["initialResponse"];
    let p = parties(&v);
    let nc = s(&v, "handshake.clientSessionNonce");
    let ns = s(&v, "handshake.serverSessionNonce");
    let mut data = b64_decode_lenient(nc).unwrap();
    data.extend(b64_decode_lenient(ns).unwrap());
    assert_eq!(hex::encode(&data), s(h, "signedDataHex"));
    assert_eq!(format!("{nc} {ns}"), s(h, "keyID"));
    assert_eq!(invoice_number(AUTH_PROTOCOL, s(h, "keyID")).unwrap(), s(h, "invoiceNumber"));
    let server = KeyDeriver::new(p.server_key);
    let sig = server
        .create_signature(AUTH_PROTOCOL, s(h, "keyID"), Counterparty::Other(p.client_key.public_key()), &data)
        .unwrap();
    assert_eq!(hex::encode(sig.to_der()), s(h, "signatureDerHex"));
    let (_, _, session) = handshake(&v);
    assert_eq!(session.server_nonce, ns);
    assert_eq!(session.server_hex, s(&v, "keys.serverPub"));
}

fn header<'a>(headers: &'a Value, name: &str) -> Option<&'a str> {
    headers.as_object().unwrap().iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.as_str())
}

fn auth_headers(h: &Value) -> AuthHeaders<'_> {
    AuthHeaders {
        version: header(h, "x-bsv-auth-version"),
        identity_key: header(h, "x-bsv-auth-identity-key"),
        nonce: header(h, "x-bsv-auth-nonce"),
        your_nonce: header(h, "x-bsv-auth-your-nonce"),
        signature: header(h, "x-bsv-auth-signature"),
        request_id: header(h, "x-bsv-auth-request-id"),
    }
}

/// Path and query of an absolute URL as WHATWG `URL` gives them.
fn target(url: &str) -> &str {
    let after_scheme = &url[url.find("://").unwrap() + 3..];
    &after_scheme[after_scheme.find('/').unwrap()..]
}

#[test]
fn general_requests_payloads_signatures_and_server_verification() {
    let v = vectors();
    let p = parties(&v);
    let (server, _, _) = handshake(&v);
    let client_wallet = KeyDeriver::new(p.client_key);
    let server_wallet = KeyDeriver::new(p.server_key);
    for r in v["generalRequests"].as_array().unwrap() {
        let input = &r["input"];
        let name = s(r, "name");
        let (path, query) = split_target(target(s(input, "url")));
        let method = s(input, "method");
        let user_headers: Vec<(&str, &[u8])> = input["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap().as_bytes()))
            .collect();
        let signed = select_request_headers(user_headers);
        // AuthFetch substitutes "{}" for a JSON POST without a body; that is what goes on the wire.
        let body: Vec<u8> = match input.get("body").and_then(Value::as_str) {
            Some(b) => b.as_bytes().to_vec(),
            None if method == "POST" && signed.iter().any(|(k, v)| k == "content-type" && v == "application/json") => {
                b"{}".to_vec()
            }
            None => Vec::new(),
        };
        let request_id: [u8; 32] = b64_decode_lenient(s(r, "requestIdBase64")).unwrap().try_into().unwrap();
        let payload = RequestPayload {
            request_id: &request_id,
            method,
            path,
            query,
            headers: &signed,
            body: (!body.is_empty()).then_some(&body[..]),
        };
        assert_eq!(hex::encode(payload.to_vec()), s(r, "payloadHex"), "{name}: payload bytes");
        assert_eq!(hex::encode(sha256(&payload.to_vec())), s(r, "payloadSha256"), "{name}");
        assert_eq!(hex::encode(payload.digest()), s(r, "payloadSha256"), "{name}: streamed digest");

        let key_id = s(r, "keyID");
        let client_child = server_wallet
            .derive_public(AUTH_PROTOCOL, key_id, Counterparty::Other(p.client_key.public_key()), false)
            .unwrap();
        assert_eq!(client_child.to_hex(), s(r, "clientSigningPublicKey"), "{name}");
        let sig = client_wallet
            .create_signature(AUTH_PROTOCOL, key_id, Counterparty::Other(p.server_key.public_key()), &payload.to_vec())
            .unwrap();
        assert_eq!(hex::encode(sig.to_der()), s(r, "signatureDerHex"), "{name}: RFC 6979 signature");
        assert!(r["serverVerifies"].as_bool().unwrap());

        let headers = &r["httpHeaders"];
        assert_eq!(header(headers, "x-bsv-auth-signature"), Some(s(r, "signatureDerHex")));
        let req =
            IncomingRequest { auth: auth_headers(headers), method, path, query, signed_headers: &signed, body: &body };
        let verified = server.verify_request(&req).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(*verified.request_id(), request_id);
        assert_eq!(verified.session().peer_hex, s(&v, "keys.clientPub"));
    }
}

#[test]
fn general_response_payload_signature_and_client_verification() {
    let v = vectors();
    let p = parties(&v);
    let (_, _, session) = handshake(&v);
    let r = &v["generalResponse"];
    let headers: Vec<(String, String)> = r["signedHeaders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_str().unwrap().to_string(), h[1].as_str().unwrap().to_string()))
        .collect();
    let request_id: [u8; 32] =
        b64_decode_lenient(header(&r["httpHeaders"], "x-bsv-auth-request-id").unwrap()).unwrap().try_into().unwrap();
    let status = r["status"].as_u64().unwrap() as u16;
    let payload =
        ResponsePayload { request_id: &request_id, status, headers: &headers, body: s(r, "bodyUtf8").as_bytes() };
    assert_eq!(hex::encode(payload.to_vec()), s(r, "payloadHex"));
    let server_wallet = KeyDeriver::new(p.server_key);
    let sig = server_wallet
        .create_signature(
            AUTH_PROTOCOL,
            s(r, "keyID"),
            Counterparty::Other(p.client_key.public_key()),
            &payload.to_vec(),
        )
        .unwrap();
    assert_eq!(hex::encode(sig.to_der()), s(r, "signatureDerHex"));
    assert!(r["clientVerifies"].as_bool().unwrap());
    let wire: Vec<(&str, &str)> =
        r["httpHeaders"].as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect();
    session.verify_response(&request_id, status, &wire, s(r, "bodyUtf8").as_bytes()).unwrap();
    // Any other body or status fails.
    assert!(session.verify_response(&request_id, 201, &wire, s(r, "bodyUtf8").as_bytes()).is_err());
    assert!(session.verify_response(&request_id, status, &wire, b"{}").is_err());
    // The empty-body rule: an empty body is signed as varint(0), never as the -1 marker.
    let empty = ResponsePayload { request_id: &request_id, status, headers: &[], body: b"" }.to_vec();
    assert_eq!(*empty.last().unwrap(), 0);
    assert!(s(r, "emptyBodyNote").contains("0x00"));
}

#[test]
fn varints() {
    let v = vectors();
    for (n, want) in v["varints"].as_object().unwrap() {
        let n: i64 = n.parse().unwrap();
        let got = if n < 0 {
            ABSENT.to_vec()
        } else {
            let mut out = Vec::new();
            write_varint(&mut out, n as u64);
            out
        };
        assert_eq!(hex::encode(got), want.as_str().unwrap(), "varint {n}");
    }
}

#[test]
fn brc2_messagebox_encryption_key_and_ciphertext() {
    use aes_gcm::aead::{Aead, KeyInit};
    use aes_gcm::aes::Aes256;
    use aes_gcm::AesGcm;
    type Gcm32 = AesGcm<Aes256, aes_gcm::aead::consts::U32>;

    let v = vectors();
    let p = parties(&v);
    let m = &v["brc2"]["messagebox"];
    let mb = Protocol::new(1, "messagebox");
    assert_eq!(invoice_number(mb, "1").unwrap(), s(m, "invoiceNumber"));
    let client = KeyDeriver::new(p.client_key);
    let server = KeyDeriver::new(p.server_key);
    let key = client.derive_symmetric_key(mb, "1", Counterparty::Other(p.server_key.public_key())).unwrap();
    assert_eq!(hex::encode(key), s(m, "aesKey"));
    assert_eq!(server.derive_symmetric_key(mb, "1", Counterparty::Other(p.client_key.public_key())).unwrap(), key);
    let blob = hex::decode(s(m, "ciphertextBlobHex")).unwrap();
    let (iv, ct) = blob.split_at(32);
    assert_eq!(hex::encode(iv), s(m, "ivHex"));
    let cipher = Gcm32::new_from_slice(&key).unwrap();
    let plain = cipher.decrypt(iv.try_into().unwrap(), ct).unwrap();
    assert_eq!(String::from_utf8(plain).unwrap(), s(m, "plaintext"));
    assert_eq!(s(m, "sdkDecrypts"), s(m, "plaintext"));
    assert_eq!(s(m, "recipientWalletDecrypts"), s(m, "plaintext"));
    let body: Value = serde_json::from_str(s(m, "bodyJson")).unwrap();
    assert_eq!(b64_decode_lenient(body["encryptedMessage"].as_str().unwrap()).unwrap(), blob);
    assert_eq!(s(&v["brc2"], "specDecrypt"), "BRC-2 Encryption Compliance Validated!");
}

#[test]
fn middleware_signed_responses_verify_for_our_client() {
    let v = vectors();
    let (_, _, session) = handshake(&v);
    let m: Value = serde_json::from_str(include_str!("vectors/middleware_check.json")).unwrap();
    let results = m["results"].as_array().unwrap();
    assert_eq!(results.len(), v["generalRequests"].as_array().unwrap().len());
    for (r, req) in results.iter().zip(v["generalRequests"].as_array().unwrap()) {
        let name = s(r, "name");
        assert!(r["responseSignatureVerifiesForClient"].as_bool().unwrap());
        let status = r["status"].as_u64().unwrap() as u16;
        let h = &r["responseAuthHeaders"];
        let wire: Vec<(&str, &str)> =
            h.as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect();
        let request_id: [u8; 32] = b64_decode_lenient(s(req, "requestIdBase64")).unwrap().try_into().unwrap();
        assert_eq!(header(h, "x-bsv-auth-request-id"), Some(s(req, "requestIdBase64")));
        let signed: Vec<(String, String)> = wire
            .iter()
            .filter(|(k, _)| k.starts_with("x-bsv-") && !k.starts_with("x-bsv-auth"))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let payload = ResponsePayload {
            request_id: &request_id,
            status,
            headers: &signed,
            body: s(r, "responseBody").as_bytes(),
        };
        assert_eq!(hex::encode(payload.to_vec()), s(r, "responsePayloadHex"), "{name}");
        session
            .verify_response(&request_id, status, &wire, s(r, "responseBody").as_bytes())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The live AuthFetch ↔ middleware transcript (client key 0x22…, server key 0x11…):
/// our server accepts the client's requests, our client accepts the server's responses
/// and refuses the one signed over an empty body as `-1`, as the TS client does.
#[test]
fn live_transcript_replays() {
    let b: Value = serde_json::from_str(include_str!("vectors/behaviour.json")).unwrap();
    let client_key = key(&"2".repeat(64));
    let server_key = key(&"1".repeat(64));
    let t = b["transcript"].as_array().unwrap();
    let hs = &t[0];
    let init = AuthMessage::from_json(s(hs, "requestBody").as_bytes()).unwrap();
    let AuthMessage::InitialRequest(init_fields) = &init else { panic!("{init:?}") };
    assert_eq!(init_fields.identity_key.to_string(), client_key.public_key().to_hex());
    let resp = AuthMessage::from_json(s(hs, "responseBody").as_bytes()).unwrap();
    let AuthMessage::InitialResponse(resp_fields) = &resp else { panic!("{resp:?}") };
    assert_eq!(resp_fields.identity_key.to_string(), server_key.public_key().to_hex());
    assert_eq!(header(&hs["responseHeaders"], "x-bsv-auth-message-type"), Some("initialResponse"));

    // Client side: finishing the recorded handshake.
    let client = ClientIdentity::new(client_key);
    let (_, pending) = client.start_handshake_with_nonce(init_fields.initial_nonce.clone().unwrap());
    let session = pending.finish(&client, &resp).unwrap();

    // Server side: the same session, then every recorded request verifies.
    let server = ServerAuth::new(server_key, SessionConfig::default());
    let (ours, _) = server.initial_response_with_nonce(&init, resp_fields.initial_nonce.clone().unwrap()).unwrap();
    assert_eq!(ours.to_json(), s(hs, "responseBody"), "our initialResponse equals the middleware's byte for byte");

    for x in &t[1..] {
        let url = s(x, "url");
        let (path, query) = split_target(url);
        let rh = &x["requestHeaders"];
        let user: Vec<(&str, &[u8])> =
            rh.as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap().as_bytes())).collect();
        let signed = select_request_headers(user);
        let body = x["requestBody"].as_str().unwrap_or("").as_bytes();
        let req = IncomingRequest {
            auth: auth_headers(rh),
            method: s(x, "method"),
            path,
            query,
            signed_headers: &signed,
            body,
        };
        let verified = server.verify_request(&req).unwrap_or_else(|e| panic!("{url}: {e}"));

        let wire: Vec<(&str, &str)> =
            x["responseHeaders"].as_object().unwrap().iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap())).collect();
        let status = x["status"].as_u64().unwrap() as u16;
        let body = x["responseBody"].as_str().unwrap_or("");
        let result = session.verify_response(verified.request_id(), status, &wire, body.as_bytes());
        if url == "/empty" {
            assert!(body.is_empty());
            assert_eq!(result.unwrap_err().to_string(), "Signature is not valid");
        } else {
            result.unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }
}

/// Every recorded AuthMessage (vectors.json, behaviour.json) reads into its type and writes
/// back byte for byte. (middleware_check.json holds no AuthMessage, only signed responses.)
#[test]
fn recorded_auth_messages_round_trip_byte_exact() {
    let v = vectors();
    let b: Value = serde_json::from_str(include_str!("vectors/behaviour.json")).unwrap();
    let hs = &b["transcript"][0];
    let recorded = [
        (s(&v, "handshake.initialRequestBody"), MessageType::InitialRequest),
        (s(&v, "handshake.initialResponse.body"), MessageType::InitialResponse),
        (s(hs, "requestBody"), MessageType::InitialRequest),
        (s(hs, "responseBody"), MessageType::InitialResponse),
    ];
    for (json, t) in recorded {
        let m = AuthMessage::from_json(json.as_bytes()).unwrap();
        assert_eq!(m.message_type(), t);
        assert_eq!(m.to_json(), json, "{t:?}");
        assert_eq!(AuthMessage::from_json(m.to_json().as_bytes()).unwrap(), m);
    }
}

#[test]
fn signature_der_round_trip() {
    let v = vectors();
    let der = hex::decode(s(&v, "handshake.initialResponse.signatureDerHex")).unwrap();
    assert_eq!(Signature::from_der(&der).unwrap().to_der(), der);
    assert!(Signature::from_der(&der[..der.len() - 1]).is_none());
}
