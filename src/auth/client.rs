//! The initiator side of BRC-103/104, as `@bsv/sdk`'s `Peer` + `AuthFetch` do it: the
//! handshake, signing requests and socket messages, verifying responses. Used by the load
//! generator and the tests; pure computation, no I/O.
//!
//! The handshake is typed: [`ClientIdentity::start_handshake`] gives a [`PendingHandshake`]
//! that only [`PendingHandshake::finish`] turns into a usable [`ClientSession`].

use super::error::AuthError;
use super::keys::{KeyDeriver, PrivateKey, PublicKey, SharedSecret, Signature};
use super::message::{empty_certificate_set, AuthMessage, General, InitialRequest, InitialResponse, AUTH_VERSION};
use super::nonce::{b64_decode_lenient, b64_encode, create_nonce, random_bytes, random_nonce, verify_nonce};
use super::payload::{
    self, client_request_headers, select_response_headers, split_target, RequestPayload, ResponsePayload,
};
use super::server::auth_invoice;

/// A client's identity key.
#[derive(Debug, Clone)]
pub struct ClientIdentity {
    wallet: KeyDeriver,
    identity_hex: String,
}

impl ClientIdentity {
    pub fn new(key: PrivateKey) -> Self {
        let wallet = KeyDeriver::new(key);
        let identity_hex = wallet.identity_key().to_hex();
        ClientIdentity { wallet, identity_hex }
    }

    pub fn random() -> Self {
        Self::new(PrivateKey::random())
    }

    pub fn identity_hex(&self) -> &str {
        &self.identity_hex
    }

    pub fn wallet(&self) -> &KeyDeriver {
        &self.wallet
    }

    /// Builds the `initialRequest` (requesting no certificates, as AuthFetch does by default).
    pub fn start_handshake(&self) -> (AuthMessage, PendingHandshake) {
        self.start_handshake_with_nonce(create_nonce(&self.wallet, &mut rand::rng()))
    }

    /// [`Self::start_handshake`] with a given session nonce (reproducing recorded vectors).
    pub fn start_handshake_with_nonce(&self, nonce: String) -> (AuthMessage, PendingHandshake) {
        let msg = InitialRequest {
            identity_key: (*self.wallet.identity_key()).into(),
            initial_nonce: Some(nonce.clone()),
            requested_certificates: Some(empty_certificate_set()),
        };
        (msg.into(), PendingHandshake { client_nonce: nonce })
    }
}

/// A handshake awaiting its `initialResponse`; [`Self::finish`] consumes it.
#[derive(Debug)]
pub struct PendingHandshake {
    client_nonce: String,
}

impl PendingHandshake {
    pub fn client_nonce(&self) -> &str {
        &self.client_nonce
    }

    /// Checks the `initialResponse` as `Peer.processInitialResponse` does: our nonce came
    /// back and verifies, and the signature over `dec(Nc ‖ Ns)` is the responder's.
    pub fn finish(self, me: &ClientIdentity, response: &AuthMessage) -> Result<ClientSession, AuthError> {
        let AuthMessage::InitialResponse(response) = response else {
            return Err(AuthError::UnexpectedMessageType(response.message_type()));
        };
        if response.your_nonce.as_deref() != Some(self.client_nonce.as_str()) {
            return Err(AuthError::Mismatch("yourNonce"));
        }
        verify_nonce(&me.wallet, &self.client_nonce).map_err(|_| AuthError::InvalidNonce("yourNonce"))?;
        let server_nonce = response.initial_nonce.clone().ok_or(AuthError::Missing("initialNonce"))?;
        let server = *response.identity_key.key().ok_or(AuthError::InvalidIdentityKey)?;
        let secret = me.wallet.root().shared_secret(&server);
        let data = b64_decode_lenient(&format!("{}{}", self.client_nonce, server_nonce))
            .map_err(|_| AuthError::InvalidNonce("initialNonce"))?;
        let sig = response.signature.as_deref().and_then(Signature::from_der).ok_or(AuthError::InvalidSignature)?;
        if !secret.verify(&server, &auth_invoice(&self.client_nonce, &server_nonce), &data, &sig) {
            return Err(AuthError::InvalidSignature);
        }
        Ok(ClientSession { client_nonce: self.client_nonce, server_nonce, server_hex: server.to_hex(), server, secret })
    }
}

/// An authenticated session with one server.
#[derive(Debug, Clone)]
pub struct ClientSession {
    pub client_nonce: String,
    pub server_nonce: String,
    pub server: PublicKey,
    pub server_hex: String,
    secret: SharedSecret,
}

/// A request ready to send: the caller puts `headers` on the wire along with the body.
#[derive(Debug, Clone)]
pub struct SignedRequest {
    pub request_id: [u8; 32],
    /// The signed user headers followed by the six `x-bsv-auth-*` headers.
    pub headers: Vec<(String, String)>,
    /// The body exactly as signed (`None` when absent).
    pub body: Option<Vec<u8>>,
}

impl ClientSession {
    /// Signs an HTTP request as AuthFetch does. `target` is path plus optional query;
    /// `headers` may only be `content-type`, `authorization` and `x-bsv-*`. A POST/PUT/
    /// PATCH/DELETE without a body gets `{}` under a JSON content type.
    pub fn sign_request(
        &self,
        me: &ClientIdentity,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<SignedRequest, AuthError> {
        let signed = client_request_headers(headers.iter().copied())
            .map_err(|_| AuthError::Missing("supported headers only"))?;
        let (path, query) = split_target(target);
        let mut body = body.map(<[u8]>::to_vec);
        if body.is_none() && matches!(method.to_ascii_uppercase().as_str(), "POST" | "PUT" | "PATCH" | "DELETE") {
            let json = signed.iter().any(|(k, v)| k == "content-type" && v.contains("application/json"));
            body = json.then(|| b"{}".to_vec());
        }
        let body = body.filter(|b| !b.is_empty());
        let rng = &mut rand::rng();
        let request_id = random_bytes::<32>(rng);
        let digest =
            RequestPayload { request_id: &request_id, method, path, query, headers: &signed, body: body.as_deref() }
                .digest();
        let nonce = random_nonce(rng);
        let sig = self.secret.sign_digest(me.wallet.root(), &auth_invoice(&nonce, &self.server_nonce), &digest)?;
        let mut out = signed;
        out.extend([
            (payload::H_VERSION.to_string(), AUTH_VERSION.to_string()),
            (payload::H_IDENTITY_KEY.to_string(), me.identity_hex.clone()),
            (payload::H_NONCE.to_string(), nonce),
            (payload::H_YOUR_NONCE.to_string(), self.server_nonce.clone()),
            (payload::H_SIGNATURE.to_string(), hex::encode(sig.to_der())),
            (payload::H_REQUEST_ID.to_string(), b64_encode(&request_id)),
        ]);
        Ok(SignedRequest { request_id, headers: out, body })
    }

    /// Verifies a signed response to `request_id` as `SimplifiedFetchTransport` does.
    /// `headers` are all response headers (names in any case).
    pub fn verify_response(
        &self,
        request_id: &[u8; 32],
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), AuthError> {
        let get = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim());
        match get(payload::H_VERSION) {
            Some(AUTH_VERSION) => {}
            v => return Err(AuthError::VersionHeader(v.unwrap_or("undefined").to_string())),
        }
        if get(payload::H_YOUR_NONCE) != Some(self.client_nonce.as_str()) {
            return Err(AuthError::Mismatch("x-bsv-auth-your-nonce"));
        }
        if !get(payload::H_IDENTITY_KEY).is_some_and(|k| k.eq_ignore_ascii_case(&self.server_hex)) {
            return Err(AuthError::Mismatch("x-bsv-auth-identity-key"));
        }
        let rid =
            get(payload::H_REQUEST_ID).and_then(|r| b64_decode_lenient(r).ok()).ok_or(AuthError::InvalidRequestId)?;
        if rid.as_slice() != request_id {
            return Err(AuthError::Mismatch("x-bsv-auth-request-id"));
        }
        let nonce = get(payload::H_NONCE).ok_or(AuthError::Missing("x-bsv-auth-nonce"))?;
        let sig = get(payload::H_SIGNATURE)
            .and_then(|h| hex::decode(h).ok())
            .and_then(|d| Signature::from_der(&d))
            .ok_or(AuthError::InvalidSignature)?;
        let signed = select_response_headers(headers.iter().copied());
        let digest = ResponsePayload { request_id, status, headers: &signed, body }.digest();
        if !self.secret.verify_digest(&self.server, &auth_invoice(nonce, &self.client_nonce), &digest, &sig) {
            return Err(AuthError::InvalidSignature);
        }
        Ok(())
    }

    /// A signed `general` message (socket traffic) carrying `payload`.
    pub fn sign_general(&self, me: &ClientIdentity, payload: Vec<u8>) -> Result<AuthMessage, AuthError> {
        let nonce = random_nonce(&mut rand::rng());
        let sig = self.secret.sign(me.wallet.root(), &auth_invoice(&nonce, &self.server_nonce), &payload)?;
        Ok(General {
            identity_key: me.identity_hex.clone(),
            nonce: Some(nonce),
            your_nonce: Some(self.server_nonce.clone()),
            payload: Some(payload),
            signature: Some(sig.to_der()),
        }
        .into())
    }

    /// Verifies a `general` message from the server; returns its payload.
    pub fn verify_general(&self, msg: &AuthMessage) -> Result<Vec<u8>, AuthError> {
        let AuthMessage::General(msg) = msg else {
            return Err(AuthError::UnexpectedMessageType(msg.message_type()));
        };
        if msg.your_nonce.as_deref() != Some(self.client_nonce.as_str()) {
            return Err(AuthError::SessionNotFound(msg.your_nonce.clone().unwrap_or_default()));
        }
        let nonce = msg.nonce.as_deref().ok_or(AuthError::Missing("nonce"))?;
        let payload = msg.payload.clone().unwrap_or_default();
        let sig = msg.signature.as_deref().and_then(Signature::from_der).ok_or(AuthError::InvalidSignature)?;
        if !self.secret.verify(&self.server, &auth_invoice(nonce, &self.client_nonce), &payload, &sig) {
            return Err(AuthError::InvalidSignature);
        }
        Ok(payload)
    }
}

impl ClientIdentity {
    /// Answers a handshake the server started (its `initialRequest`), as the SDK Peer's
    /// `processInitialRequest` does: a fresh nonce `Nc`, a signature over `dec(Ns) ‖ dec(Nc)`
    /// with key id `"Ns Nc"` towards the server. Returns the `initialResponse` and the session.
    pub fn answer_server_handshake(&self, request: &AuthMessage) -> Result<(AuthMessage, ClientSession), AuthError> {
        let AuthMessage::InitialRequest(request) = request else {
            return Err(AuthError::UnexpectedMessageType(request.message_type()));
        };
        let server_nonce = match &request.initial_nonce {
            Some(n) if !n.is_empty() => n.clone(),
            _ => return Err(AuthError::MissingInitialFields),
        };
        let server = *request.identity_key.key().ok_or(AuthError::InvalidIdentityKey)?;
        let client_nonce = create_nonce(&self.wallet, &mut rand::rng());
        let mut data = b64_decode_lenient(&server_nonce).map_err(|_| AuthError::InvalidNonce("initialNonce"))?;
        data.extend(b64_decode_lenient(&client_nonce).expect("our nonces are canonical base64"));
        let secret = self.wallet.root().shared_secret(&server);
        let sig = secret.sign(self.wallet.root(), &auth_invoice(&server_nonce, &client_nonce), &data)?;
        let response = InitialResponse {
            identity_key: (*self.wallet.identity_key()).into(),
            initial_nonce: Some(client_nonce.clone()),
            your_nonce: Some(server_nonce.clone()),
            certificates: None,
            requested_certificates: Some(empty_certificate_set()),
            signature: Some(sig.to_der()),
        };
        let session = ClientSession { client_nonce, server_nonce, server_hex: server.to_hex(), server, secret };
        Ok((response.into(), session))
    }
}
