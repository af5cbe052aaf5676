//! The responder side of BRC-103/104: answers handshakes, verifies signed HTTP requests and
//! socket messages against the session they name, and signs responses. Pure computation:
//! no I/O, so the HTTP and socket layers of every core share one [`ServerAuth`]. Its clock
//! (through the [`SessionManager`]) and the randomness of its nonces are injected
//! ([`ServerAuth::from_parts`]); [`ServerAuth::new`] uses the system clock and the OS-seeded RNG.

use std::sync::Arc;

use super::error::AuthError;
use super::keys::{KeyDeriver, PrivateKey, PublicKey, Signature};
use super::message::{
    empty_certificate_set, requests_certificates, AuthMessage, CertificateRequest, CertificateResponse, General,
    InitialRequest, InitialResponse, AUTH_VERSION,
};
use super::nonce::{b64_decode_lenient, b64_decode_strict, b64_encode, create_nonce_from, OsSeeded, RandomSource};
use super::payload::{RequestPayload, ResponsePayload};
use super::session::{NonceRecord, Session, SessionConfig, SessionManager};
use crate::fleet::sessions::{unix_ms, SessionTokens};

/// The invoice prefix of every BRC-103 signature (`[2,"auth message signature"]`).
const AUTH_INVOICE_PREFIX: &str = "2-auth message signature-";
/// Longest nonce we take from a peer: the key id `"<a> <b>"` must stay within 800 characters.
const MAX_PEER_NONCE_LEN: usize = 700;

/// `2-auth message signature-<a> <b>` as bytes, without the general-purpose validation
/// (both parts are nonces we have already bounded).
pub(crate) fn auth_invoice(a: &str, b: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(AUTH_INVOICE_PREFIX.len() + a.len() + 1 + b.len());
    v.extend_from_slice(AUTH_INVOICE_PREFIX.as_bytes());
    v.extend_from_slice(a.as_bytes());
    v.push(b' ');
    v.extend_from_slice(b.as_bytes());
    v
}

fn check_peer_nonce(n: &str, what: &'static str) -> Result<(), AuthError> {
    if n.is_empty() || n.len() > MAX_PEER_NONCE_LEN || !n.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AuthError::InvalidNonce(what));
    }
    Ok(())
}

/// The `x-bsv-auth-*` headers of a request, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthHeaders<'a> {
    pub version: Option<&'a str>,
    pub identity_key: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub your_nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

impl<'a> AuthHeaders<'a> {
    /// Picks the six headers out of name/value pairs (names compared case-insensitively).
    pub fn from_pairs(headers: &'a [(String, String)]) -> AuthHeaders<'a> {
        use super::payload::*;
        let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.as_str());
        AuthHeaders {
            version: get(H_VERSION),
            identity_key: get(H_IDENTITY_KEY),
            nonce: get(H_NONCE),
            your_nonce: get(H_YOUR_NONCE),
            signature: get(H_SIGNATURE),
            request_id: get(H_REQUEST_ID),
        }
    }
}

/// A signed HTTP request as the server received it.
#[derive(Debug, Clone, Copy)]
pub struct IncomingRequest<'a> {
    pub auth: AuthHeaders<'a>,
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The signed headers ([`super::payload::select_request_headers`]).
    pub signed_headers: &'a [(String, String)],
    /// The raw body; empty means absent.
    pub body: &'a [u8],
}

/// A request whose signature checked out, before its request nonce was claimed (the claim is
/// node-local, [`ServerAuth::claim_locally`], or fleet-wide then local, see `http`). Only
/// [`ServerAuth::verify_signature`] makes one.
#[derive(Debug)]
pub struct UnclaimedRequest {
    session: Arc<Session>,
    request_id: [u8; 32],
    nonce: String,
}

impl UnclaimedRequest {
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// The request's `x-bsv-auth-nonce`.
    pub fn nonce(&self) -> &str {
        &self.nonce
    }
}

/// A request whose signature checked out: who sent it, on which session. Only
/// [`ServerAuth::verify_request`] and [`ServerAuth::claim_locally`] make one.
///
/// ```compile_fail,E0451
/// # use messagebox::auth::VerifiedRequest;
/// # let session: std::sync::Arc<messagebox::auth::session::Session> = unreachable!();
/// let forged = VerifiedRequest { session, request_id: [0; 32] };
/// ```
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    session: Arc<Session>,
    request_id: [u8; 32],
}

impl VerifiedRequest {
    /// The session the request was signed on (its `peer_hex` is the sender).
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    pub fn request_id(&self) -> &[u8; 32] {
        &self.request_id
    }
}

/// The `x-bsv-auth-*` headers of a signed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseAuthHeaders {
    pub version: &'static str,
    pub identity_key: String,
    pub nonce: String,
    pub your_nonce: String,
    pub signature: String,
    pub request_id: String,
}

impl ResponseAuthHeaders {
    pub fn pairs(&self) -> [(&'static str, &str); 6] {
        use super::payload::*;
        [
            (H_VERSION, self.version),
            (H_IDENTITY_KEY, &self.identity_key),
            (H_NONCE, &self.nonce),
            (H_YOUR_NONCE, &self.your_nonce),
            (H_SIGNATURE, &self.signature),
            (H_REQUEST_ID, &self.request_id),
        ]
    }
}

/// What to answer a POST to `/.well-known/auth`.
#[derive(Debug, Clone)]
pub enum HandshakeReply {
    /// A signed AuthMessage (initialResponse or certificateResponse) as the JSON body.
    Message(Box<AuthMessage>),
    /// The message needs no answer (a certificateResponse we never asked for); reply 200.
    Acknowledged,
}

/// The server's identity, its session table and the randomness of its nonces.
pub struct ServerAuth {
    wallet: KeyDeriver,
    identity_hex: String,
    sessions: SessionManager,
    random: Box<dyn RandomSource>,
    /// Fleet mode: session nonces are session tokens, and the session table is a cache of the
    /// sessions this node has seen (`crate::fleet::sessions`).
    tokens: Option<SessionTokens>,
}

impl std::fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAuth").field("identity", &self.identity_hex).field("sessions", &self.sessions).finish()
    }
}

impl ServerAuth {
    /// A server on the system clock and OS-seeded randomness.
    pub fn new(key: PrivateKey, config: SessionConfig) -> Self {
        Self::from_parts(key, SessionManager::new(config), OsSeeded)
    }

    /// A server with a given session table (and so clock) and randomness (tests).
    pub fn from_parts(key: PrivateKey, sessions: SessionManager, random: impl RandomSource + 'static) -> Self {
        let wallet = KeyDeriver::new(key);
        let identity_hex = wallet.identity_key().to_hex();
        ServerAuth { wallet, identity_hex, sessions, random: Box::new(random), tokens: None }
    }

    /// Fleet mode (`REDIS_URL`): handshakes mint session tokens that every node sharing
    /// `SERVER_PRIVATE_KEY` verifies, and a signed HTTP request naming a session this node
    /// has not seen rebuilds it from its token instead of failing.
    pub fn with_fleet_sessions(mut self) -> Self {
        self.tokens = Some(SessionTokens::from_server_key(self.wallet.root()));
        self
    }

    fn random<const N: usize>(&self) -> [u8; N] {
        let mut b = [0u8; N];
        self.random.fill(&mut b);
        b
    }

    /// A session nonce (`createNonce`).
    fn session_nonce(&self) -> String {
        create_nonce_from(&self.wallet, &self.random::<16>()).expect("a 16-byte key id is always a valid key id")
    }

    /// A per-message nonce: base64 of 32 random bytes.
    fn message_nonce(&self) -> String {
        b64_encode(&self.random::<32>())
    }

    pub fn identity_key(&self) -> &PublicKey {
        self.wallet.identity_key()
    }

    pub fn identity_hex(&self) -> &str {
        &self.identity_hex
    }

    pub fn wallet(&self) -> &KeyDeriver {
        &self.wallet
    }

    pub fn sessions(&self) -> &SessionManager {
        &self.sessions
    }

    /// Dispatches a message POSTed to `/.well-known/auth` (or a socket's non-general message).
    pub fn handle_handshake_message(&self, msg: &AuthMessage) -> Result<HandshakeReply, AuthError> {
        match msg {
            AuthMessage::InitialRequest(_) => Ok(HandshakeReply::Message(Box::new(self.initial_response(msg)?.0))),
            AuthMessage::CertificateRequest(m) => Ok(HandshakeReply::Message(Box::new(self.certificate_response(m)?))),
            AuthMessage::CertificateResponse(m) => {
                self.verify_certificate_response(m)?;
                Ok(HandshakeReply::Acknowledged)
            }
            other => Err(AuthError::UnexpectedMessageType(other.message_type())),
        }
    }

    /// `initialRequest` → `initialResponse`: mints our session nonce, stores the session and
    /// signs `dec(Nc) ‖ dec(Ns)` with key id `"Nc Ns"` towards the client's key.
    /// In fleet mode the nonce is a session token (`crate::fleet::sessions`).
    pub fn initial_response(&self, msg: &AuthMessage) -> Result<(AuthMessage, Arc<Session>), AuthError> {
        let server_nonce = match (&self.tokens, msg) {
            (Some(tokens), AuthMessage::InitialRequest(r)) => {
                // The checks of `answer_initial_request`, in its order.
                let client_nonce = match &r.initial_nonce {
                    Some(n) if !n.is_empty() => n,
                    _ => return Err(AuthError::MissingInitialFields),
                };
                check_peer_nonce(client_nonce, "initialNonce")?;
                b64_decode_lenient(client_nonce).map_err(|_| AuthError::InvalidNonce("initialNonce"))?;
                let client = r.identity_key.key().ok_or(AuthError::InvalidIdentityKey)?;
                tokens
                    .mint(client, client_nonce, unix_ms(), self.random::<2>())
                    .map_err(|_| AuthError::InvalidNonce("initialNonce"))?
            }
            _ => self.session_nonce(),
        };
        self.initial_response_with_nonce(msg, server_nonce)
    }

    /// [`Self::initial_response`] with a given session nonce (reproducing recorded vectors).
    pub fn initial_response_with_nonce(
        &self,
        msg: &AuthMessage,
        server_nonce: String,
    ) -> Result<(AuthMessage, Arc<Session>), AuthError> {
        let AuthMessage::InitialRequest(request) = msg else {
            return Err(AuthError::UnexpectedMessageType(msg.message_type()));
        };
        self.answer_initial_request(request, server_nonce)
    }

    fn answer_initial_request(
        &self,
        msg: &InitialRequest,
        server_nonce: String,
    ) -> Result<(AuthMessage, Arc<Session>), AuthError> {
        let client_nonce = match &msg.initial_nonce {
            Some(n) if !n.is_empty() => n,
            _ => return Err(AuthError::MissingInitialFields),
        };
        check_peer_nonce(client_nonce, "initialNonce")?;
        let client_nonce_bytes =
            b64_decode_lenient(client_nonce).map_err(|_| AuthError::InvalidNonce("initialNonce"))?;
        let client = *msg.identity_key.key().ok_or(AuthError::InvalidIdentityKey)?;

        let secret = self.wallet.root().shared_secret(&client);
        let mut data = client_nonce_bytes;
        data.extend_from_slice(&b64_decode_strict(&server_nonce).expect("our nonces are canonical base64"));
        let signature = secret.sign(self.wallet.root(), &auth_invoice(client_nonce, &server_nonce), &data)?;

        let session = Session::new(server_nonce.clone(), client_nonce.clone(), client, secret);
        let session = match self.sessions.insert(session) {
            Ok(s) => s,
            // A token needs no table: the session works uncached (the next request rebuilds it).
            Err(_) if self.tokens.is_some() => {
                Arc::new(Session::new(server_nonce.clone(), client_nonce.clone(), client, secret))
            }
            Err(full) => return Err(full.into()),
        };
        let certificates = requests_certificates(msg.requested_certificates.as_ref()).then(Vec::new);
        let response = InitialResponse {
            identity_key: (*self.identity_key()).into(),
            initial_nonce: Some(server_nonce),
            your_nonce: Some(client_nonce.clone()),
            certificates,
            requested_certificates: Some(empty_certificate_set()),
            signature: Some(signature.to_der()),
        };
        Ok((response.into(), session))
    }

    /// The session a non-initial message names in `yourNonce`, bound to its sender.
    fn session_of(&self, your_nonce: Option<&str>, identity: &str) -> Result<Arc<Session>, AuthError> {
        let nonce = your_nonce.ok_or(AuthError::Missing("yourNonce"))?;
        let session = self.sessions.get(nonce).ok_or_else(|| AuthError::SessionNotFound(nonce.to_string()))?;
        if !session.is_identity(identity) {
            return Err(AuthError::IdentityMismatch);
        }
        Ok(session)
    }

    fn verify_signed(
        &self,
        session: &Session,
        nonce: Option<&str>,
        data: &[u8],
        sig: Option<&[u8]>,
    ) -> Result<(), AuthError> {
        let nonce = nonce.ok_or(AuthError::Missing("nonce"))?;
        check_peer_nonce(nonce, "nonce")?;
        let sig = sig.and_then(Signature::from_der).ok_or(AuthError::InvalidSignature)?;
        if !session.secret.verify(&session.peer, &auth_invoice(nonce, &session.server_nonce), data, &sig) {
            return Err(AuthError::InvalidSignature);
        }
        Ok(())
    }

    /// Signs `data` towards the session's peer with a fresh message nonce; returns (nonce, DER).
    fn sign_for(&self, session: &Session, data: &[u8]) -> Result<(String, Vec<u8>), AuthError> {
        let nonce = self.message_nonce();
        let sig = session.secret.sign(self.wallet.root(), &auth_invoice(&nonce, &session.client_nonce), data)?;
        Ok((nonce, sig.to_der()))
    }

    /// A `certificateRequest`: verified, answered with a signed `certificateResponse`
    /// carrying no certificates (this server holds none).
    pub fn certificate_response(&self, msg: &CertificateRequest) -> Result<AuthMessage, AuthError> {
        let session = self.session_of(msg.your_nonce.as_deref(), &msg.identity_key)?;
        // An absent set is signed as `null`, as `JSON.stringify(undefined ?? null)`.
        let signed = serde_json::to_vec(&msg.requested_certificates).expect("JSON value serialises");
        self.verify_signed(&session, msg.nonce.as_deref(), &signed, msg.signature.as_deref())?;
        self.sessions.touch(&session);
        let (nonce, signature) = self.sign_for(&session, b"[]")?;
        Ok(CertificateResponse {
            identity_key: self.identity_hex.clone(),
            nonce: Some(nonce),
            initial_nonce: Some(session.server_nonce.clone()),
            your_nonce: Some(session.client_nonce.clone()),
            certificates: Some(Vec::new()),
            signature: Some(signature),
        }
        .into())
    }

    fn verify_certificate_response(&self, msg: &CertificateResponse) -> Result<(), AuthError> {
        let session = self.session_of(msg.your_nonce.as_deref(), &msg.identity_key)?;
        let certs = serde_json::to_vec(&msg.certificates).expect("JSON value serialises");
        self.verify_signed(&session, msg.nonce.as_deref(), &certs, msg.signature.as_deref())?;
        self.sessions.touch(&session);
        Ok(())
    }

    /// The checks of [`ServerAuth::verify_request`] that need only the headers (version,
    /// identity key, the session `x-bsv-auth-your-nonce` names and its peer), in the same order
    /// and with the same errors: the HTTP edge runs them before it reads a body, so a request
    /// naming no live session costs no body.
    pub fn session_for_headers(&self, a: &AuthHeaders<'_>) -> Result<Arc<Session>, AuthError> {
        match a.version {
            Some(AUTH_VERSION) => {}
            Some(v) => return Err(AuthError::VersionHeader(v.to_string())),
            None => return Err(AuthError::VersionHeader("undefined".into())),
        }
        let identity = a.identity_key.ok_or(AuthError::Missing("x-bsv-auth-identity-key"))?;
        match self.session_of(a.your_nonce, identity) {
            Err(AuthError::SessionNotFound(nonce)) if self.tokens.is_some() => self.rebuild(nonce, identity),
            other => other,
        }
    }

    /// Fleet mode: the session a token names, rebuilt (one ECDH) and cached; a token that does
    /// not verify for `identity` is an unknown session, as on one node. Whether the session is
    /// still alive fleet-wide is decided with its first request's claim.
    fn rebuild(&self, token: String, identity: &str) -> Result<Arc<Session>, AuthError> {
        let tokens = self.tokens.as_ref().expect("fleet mode");
        let Some((peer, facts)) = PublicKey::from_compressed_hex(identity)
            .ok()
            .and_then(|peer| tokens.open(&token, &peer).ok().map(|facts| (peer, facts)))
        else {
            return Err(AuthError::SessionNotFound(token));
        };
        let secret = self.wallet.root().shared_secret(&peer);
        let session = || Session::new(token.clone(), facts.client_nonce.clone(), peer, secret);
        Ok(self.sessions.insert(session()).unwrap_or_else(|_| Arc::new(session())))
    }

    /// Verifies a BRC-104 request over its raw bytes. An empty body is tried as absent and,
    /// for a JSON POST/PUT/PATCH/DELETE, also as `{}` (go-sdk clients sign `{}` but send none).
    pub fn verify_request(&self, req: &IncomingRequest<'_>) -> Result<VerifiedRequest, AuthError> {
        self.claim_locally(self.verify_signature(req)?)
    }

    /// [`Self::verify_request`] up to, not including, the claim of the request nonce.
    pub fn verify_signature(&self, req: &IncomingRequest<'_>) -> Result<UnclaimedRequest, AuthError> {
        let a = &req.auth;
        let session = self.session_for_headers(a)?;
        let request_id: [u8; 32] = a
            .request_id
            .and_then(b64_decode_lenient_opt)
            .and_then(|b| b.try_into().ok())
            .ok_or(AuthError::InvalidRequestId)?;
        let nonce = a.nonce.ok_or(AuthError::Missing("x-bsv-auth-nonce"))?;
        check_peer_nonce(nonce, "x-bsv-auth-nonce")?;
        let sig = a
            .signature
            .and_then(|h| hex::decode(h).ok())
            .and_then(|d| Signature::from_der(&d))
            .ok_or(AuthError::InvalidSignature)?;

        let invoice = auth_invoice(nonce, &session.server_nonce);
        let mut payload = RequestPayload {
            request_id: &request_id,
            method: req.method,
            path: req.path,
            query: req.query,
            headers: req.signed_headers,
            body: (!req.body.is_empty()).then_some(req.body),
        };
        let mut ok = verify_digest(&session, &invoice, &payload.digest(), &sig);
        if !ok && req.body.is_empty() && self.json_body_method(req) {
            payload.body = Some(b"{}");
            ok = verify_digest(&session, &invoice, &payload.digest(), &sig);
        }
        if !ok {
            return Err(AuthError::InvalidSignature);
        }
        Ok(UnclaimedRequest { session, request_id, nonce: nonce.to_string() })
    }

    /// Claims the request nonce in the session's node-local memory (replays refused; the
    /// session retires after its last allowed request). In fleet mode this also runs after
    /// the fleet-wide claim, so the node that accepted a request refuses its replay even
    /// while Redis is unavailable.
    pub fn claim_locally(&self, req: UnclaimedRequest) -> Result<VerifiedRequest, AuthError> {
        match self.sessions.record_request(&req.session, &req.nonce) {
            NonceRecord::Replayed => Err(AuthError::Replayed),
            NonceRecord::Fresh | NonceRecord::FreshAndRetired => {
                Ok(VerifiedRequest { session: req.session, request_id: req.request_id })
            }
        }
    }

    fn json_body_method(&self, req: &IncomingRequest<'_>) -> bool {
        matches!(req.method, "POST" | "PUT" | "PATCH" | "DELETE")
            && req.signed_headers.iter().any(|(k, v)| k == "content-type" && v.contains("application/json"))
    }

    /// Signs a response on the session the request came in on.
    pub fn sign_response(
        &self,
        session: &Session,
        request_id: &[u8; 32],
        status: u16,
        signed_headers: &[(String, String)],
        body: &[u8],
    ) -> Result<ResponseAuthHeaders, AuthError> {
        let payload = ResponsePayload { request_id, status, headers: signed_headers, body };
        let nonce = self.message_nonce();
        let invoice = auth_invoice(&nonce, &session.client_nonce);
        let signature = session.secret.sign_digest(self.wallet.root(), &invoice, &payload.digest())?;
        Ok(ResponseAuthHeaders {
            version: AUTH_VERSION,
            identity_key: self.identity_hex.clone(),
            nonce,
            your_nonce: session.client_nonce.clone(),
            signature: hex::encode(signature.to_der()),
            request_id: b64_encode(request_id),
        })
    }

    /// Verifies a socket `general` message; returns its session and payload (moved out of
    /// the message, which is consumed).
    pub fn verify_general(&self, msg: General) -> Result<(Arc<Session>, Vec<u8>), AuthError> {
        let session = self.session_of(msg.your_nonce.as_deref(), &msg.identity_key)?;
        let payload = msg.payload.unwrap_or_default();
        self.verify_signed(&session, msg.nonce.as_deref(), &payload, msg.signature.as_deref())?;
        let nonce = msg.nonce.as_deref().unwrap_or_default();
        match self.sessions.record_request(&session, nonce) {
            NonceRecord::Replayed => Err(AuthError::Replayed),
            _ => Ok((session, payload)),
        }
    }

    /// A signed `general` message carrying `payload` to the session's peer.
    pub fn sign_general(&self, session: &Session, payload: Vec<u8>) -> Result<AuthMessage, AuthError> {
        let (nonce, signature) = self.sign_for(session, &payload)?;
        Ok(General {
            identity_key: self.identity_hex.clone(),
            nonce: Some(nonce),
            your_nonce: Some(session.client_nonce.clone()),
            payload: Some(payload),
            signature: Some(signature),
        }
        .into())
    }
}

fn b64_decode_lenient_opt(s: &str) -> Option<Vec<u8>> {
    b64_decode_lenient(s).ok()
}

fn verify_digest(session: &Session, invoice: &[u8], digest: &[u8; 32], sig: &Signature) -> bool {
    session.secret.verify_digest(&session.peer, invoice, digest, sig)
}

// ---------------------------------------------------------------------------------------------
// Server-initiated handshakes (spec authsocket.md §4.7). The original server's per-socket Peer
// starts a handshake towards any socket without a session when it has something to send; the
// live channel uses these primitives to learn the identity of silent reconnected sockets.

/// A handshake this server started, waiting for the client's `initialResponse`. Not `Clone`:
/// [`ServerAuth::finish_server_handshake`] consumes it, so each is answered at most once.
///
/// ```compile_fail,E0382
/// # use messagebox::auth::{AuthMessage, ClientIdentity, PrivateKey, ServerAuth, SessionConfig};
/// # let server = ServerAuth::new(PrivateKey::random(), SessionConfig::default());
/// let (request, pending) = server.start_server_handshake();
/// let (response, _) = ClientIdentity::random().answer_server_handshake(&request).unwrap();
/// let AuthMessage::InitialResponse(response) = response else { unreachable!() };
/// let _ = server.finish_server_handshake(pending, &response);
/// let _ = server.finish_server_handshake(pending, &response); // used up
/// ```
#[derive(Debug, PartialEq, Eq)]
pub struct ServerHandshake {
    server_nonce: String,
}

impl ServerHandshake {
    /// Our session nonce `Ns`; the client echoes it in `yourNonce`.
    pub fn server_nonce(&self) -> &str {
        &self.server_nonce
    }
}

impl ServerAuth {
    /// The server's `initialRequest`, carrying a fresh `createNonce` session nonce `Ns`.
    pub fn start_server_handshake(&self) -> (AuthMessage, ServerHandshake) {
        let server_nonce = self.session_nonce();
        let msg = InitialRequest {
            identity_key: (*self.identity_key()).into(),
            initial_nonce: Some(server_nonce.clone()),
            requested_certificates: Some(empty_certificate_set()),
        };
        (msg.into(), ServerHandshake { server_nonce })
    }

    /// Checks the client's `initialResponse` to [`Self::start_server_handshake`] as the SDK
    /// Peer's `processInitialResponse` does (our nonce echoed; a signature over
    /// `dec(Ns) ‖ dec(Nc)`, key id `"Ns Nc"`, by `msg.identityKey`) and stores the session keyed
    /// by `Ns` with client nonce `Nc`. The handshake is used up whatever the outcome.
    pub fn finish_server_handshake(
        &self,
        pending: ServerHandshake,
        msg: &InitialResponse,
    ) -> Result<Arc<Session>, AuthError> {
        if msg.your_nonce.as_deref() != Some(pending.server_nonce.as_str()) {
            return Err(AuthError::Mismatch("yourNonce"));
        }
        let client_nonce = msg.initial_nonce.as_deref().ok_or(AuthError::Missing("initialNonce"))?;
        check_peer_nonce(client_nonce, "initialNonce")?;
        let client = *msg.identity_key.key().ok_or(AuthError::InvalidIdentityKey)?;
        let mut data = b64_decode_strict(&pending.server_nonce).expect("our nonces are canonical base64");
        data.extend(b64_decode_lenient(client_nonce).map_err(|_| AuthError::InvalidNonce("initialNonce"))?);
        let sig = msg.signature.as_deref().and_then(Signature::from_der).ok_or(AuthError::InvalidSignature)?;
        let secret = self.wallet.root().shared_secret(&client);
        if !secret.verify(&client, &auth_invoice(&pending.server_nonce, client_nonce), &data, &sig) {
            return Err(AuthError::InvalidSignature);
        }
        let session = Session::new(pending.server_nonce, client_nonce.to_string(), client, secret);
        Ok(self.sessions.insert(session)?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::auth::client::ClientIdentity;
    use crate::auth::nonce::SeededRandom;
    use crate::auth::session::ManualClock;

    fn seeded_server(seed: u64) -> ServerAuth {
        let key = PrivateKey::from_bytes(&[7; 32]).unwrap();
        ServerAuth::from_parts(key, SessionManager::new(SessionConfig::default()), SeededRandom::new(seed))
    }

    #[test]
    fn injected_randomness_makes_the_server_deterministic() {
        let (a, b) = (seeded_server(1), seeded_server(1));
        let client = ClientIdentity::random();
        let (init, pending) = client.start_handshake();
        let (ra, sa) = a.initial_response(&init).unwrap();
        let (rb, sb) = b.initial_response(&init).unwrap();
        assert_eq!(ra.to_json(), rb.to_json());
        assert_eq!(sa.server_nonce, sb.server_nonce);
        pending.finish(&client, &ra).unwrap();
        let rid = [1u8; 32];
        assert_eq!(
            a.sign_response(&sa, &rid, 200, &[], b"{}").unwrap(),
            b.sign_response(&sb, &rid, 200, &[], b"{}").unwrap()
        );
        assert_eq!(a.start_server_handshake().1, b.start_server_handshake().1);
        assert_ne!(seeded_server(2).start_server_handshake().1, seeded_server(1).start_server_handshake().1);
    }

    #[test]
    fn sessions_expire_on_the_injected_clock() {
        let clock = Arc::new(ManualClock::new());
        let config = SessionConfig { idle_ttl: Duration::from_secs(60), ..SessionConfig::default() };
        let server =
            ServerAuth::from_parts(PrivateKey::random(), SessionManager::with_clock(config, clock.clone()), OsSeeded);
        let client = ClientIdentity::random();
        let (init, pending) = client.start_handshake();
        let (resp, _) = server.initial_response(&init).unwrap();
        let session = pending.finish(&client, &resp).unwrap();
        let general = |payload: &[u8]| match session.sign_general(&client, payload.to_vec()).unwrap() {
            AuthMessage::General(g) => g,
            other => panic!("{other:?}"),
        };
        assert_eq!(server.verify_general(general(b"1")).unwrap().1, b"1");
        clock.advance(Duration::from_secs(60));
        assert_eq!(server.verify_general(general(b"2")).unwrap().1, b"2");
        clock.advance(Duration::from_secs(61));
        assert!(matches!(server.verify_general(general(b"3")), Err(AuthError::SessionNotFound(_))));
    }

    /// Fleet mode: two nodes sharing the server key; a session made on one is rebuilt from its
    /// token on the other, bound to its identity.
    #[test]
    fn fleet_sessions_are_rebuilt_on_another_node() {
        use crate::auth::payload::select_request_headers;
        let key = PrivateKey::random();
        let node = || ServerAuth::new(key, SessionConfig::default()).with_fleet_sessions();
        let (a, b) = (node(), node());
        let client = ClientIdentity::random();
        let (init, pending) = client.start_handshake();
        let (resp, _) = a.initial_response(&init).unwrap();
        let session = pending.finish(&client, &resp).unwrap();
        assert_eq!(session.server_nonce.len(), 104, "a session token");
        assert!(b.sessions().get(&session.server_nonce).is_none());
        let verify = |server: &ServerAuth, identity: Option<&str>| {
            let signed = session.sign_request(&client, "GET", "/x?y=1", &[], None).unwrap();
            let mut headers = signed.headers.clone();
            if let Some(i) = identity {
                headers.iter_mut().find(|(k, _)| k == "x-bsv-auth-identity-key").unwrap().1 = i.to_string();
            }
            let sh = select_request_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
            let auth = AuthHeaders::from_pairs(&headers);
            let req = IncomingRequest {
                auth,
                method: "GET",
                path: "/x",
                query: Some("?y=1"),
                signed_headers: &sh,
                body: &[],
            };
            server.verify_request(&req).map(|v| v.session().peer_hex.clone())
        };
        assert_eq!(verify(&b, None).unwrap(), client.identity_hex());
        assert!(b.sessions().get(&session.server_nonce).is_some(), "cached on node b");
        let other = ClientIdentity::random();
        assert!(matches!(verify(&node(), Some(other.identity_hex())), Err(AuthError::SessionNotFound(_))));
        // A single node does not accept the other node's session.
        let single = ServerAuth::new(key, SessionConfig::default());
        assert!(matches!(verify(&single, None), Err(AuthError::SessionNotFound(_))));
    }

    #[test]
    fn a_server_handshake_is_finished_at_most_once() {
        let server = seeded_server(3);
        let client = ClientIdentity::random();
        let (request, pending) = server.start_server_handshake();
        let (response, _) = client.answer_server_handshake(&request).unwrap();
        let AuthMessage::InitialResponse(response) = response else { panic!("{response:?}") };
        let session = server.finish_server_handshake(pending, &response).unwrap();
        assert_eq!(session.peer_hex, client.identity_hex());
        // `pending` has moved: a second `finish_server_handshake(pending, …)` does not compile.
    }
}
