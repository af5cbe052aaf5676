//! BRC-103 sessions valid on every node of a fleet, without a lookup: the server's session
//! nonce is a *session token* that carries and authenticates what a node needs to rebuild
//! the session (the client's session nonce, the creation time), and the fleet-wide rules
//! of a request's replay claim, its session's idle expiry and its retirement. Pure
//! computation; the one Redis round trip that applies the rules is in [`super::limits`].
//!
//! # The token
//!
//! The client treats our session nonce `Ns` as opaque: it only base64-decodes it (for the
//! handshake signature) and repeats it in key ids (`"<nonce> <Ns>"`, at most 800 characters)
//! and in `x-bsv-auth-your-nonce` (brc103.md §4.3). So in fleet mode `Ns` is
//!
//! ```text
//! version(1) kind(1) len(2) created_ms(6) random(2) ‖ client nonce (len bytes) ‖ mac(16..18)
//! ```
//!
//! in standard base64 (a whole number of 3-byte groups, so no `=`: the client concatenates
//! `Nc + Ns` before decoding). `kind` 0 stores a canonical base64 client nonce decoded (every
//! SDK client: 48 bytes, so the token is 104 characters), `kind` 1 stores it verbatim. The MAC
//! is HMAC-SHA256, under a key derived from `SERVER_PRIVATE_KEY` (which every node shares),
//! over everything before it and the peer's compressed identity key, truncated so the total
//! is a multiple of 3 bytes. The peer key is not in the token: every request names it
//! (`x-bsv-auth-identity-key`), and the MAC binds the token to it.
//!
//! # The fleet-wide state of a session (in Redis)
//!
//! A session that carried a request has one Redis set, `messagebox:sess:<id>`, holding a
//! 16-byte digest of each request nonce it accepted, expiring `idle_ttl` after the last one.
//! One atomic script per request ([`super::limits`]) then decides, for every node alike:
//! - the set exists: the session is alive (used within `idle_ttl`);
//! - it does not: this is the session's first request, allowed only within
//!   [`ClaimPolicy::first_use_window_ms`] of the token's creation (a never-used session lives
//!   `unused_ttl`, as on one node); otherwise the session has expired;
//! - the set already holds `max_requests_per_session` nonces: retired (the client
//!   handshakes again, as on one node);
//! - the nonce is in the set: a replay, on whichever node it was first accepted.
//!
//! Because the first-use window is never longer than the idle TTL, a set can only have
//! expired for a token that is past its first-use window: an expired session cannot be
//! revived, and its old requests cannot be replayed once its claims are gone.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::auth::keys::{ct_eq, hmac_sha256, sha256, PrivateKey, PublicKey};
use crate::auth::session::SessionConfig;

const VERSION: u8 = 1;
const HEADER: usize = 12;
const KIND_BASE64: u8 = 0;
const KIND_VERBATIM: u8 = 1;
const MIN_MAC: usize = 16;
/// Longest client nonce a token stores (bytes): keeps the token under 440 characters, far
/// within the key-id budget of the SDK (every SDK client sends 64 characters).
pub const MAX_CLIENT_NONCE_BYTES: usize = 300;
/// Domain separation of the token key from every other use of the server key.
const KEY_LABEL: &[u8] = b"messagebox fleet session token v1";

/// Why a token was refused (the request is then answered as for an unknown session).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a session token of this fleet")]
    Malformed,
    #[error("session token does not verify")]
    BadMac,
    #[error("client session nonce is too long for a session token")]
    ClientNonceTooLong,
}

/// What a verified token says about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFacts {
    /// The client's session nonce `Nc`, exactly as it sent it.
    pub client_nonce: String,
    /// When the handshake was answered (Unix ms, the minting node's clock).
    pub created_ms: u64,
}

/// The session's name in Redis and its creation time, read without checking the MAC (for a
/// session this node already verified and cached).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenView {
    pub id: [u8; 16],
    pub created_ms: u64,
}

/// Mints and opens session tokens with the fleet's shared key.
#[derive(Clone)]
pub struct SessionTokens {
    key: [u8; 32],
}

impl std::fmt::Debug for SessionTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionTokens")
    }
}

/// Unix time in ms (the tokens' clock).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl SessionTokens {
    /// The key every node derives alike from `SERVER_PRIVATE_KEY`.
    pub fn from_server_key(key: &PrivateKey) -> SessionTokens {
        SessionTokens { key: hmac_sha256(&key.to_bytes(), KEY_LABEL) }
    }

    fn mac(&self, body: &[u8], peer: &PublicKey) -> [u8; 32] {
        let mut data = Vec::with_capacity(body.len() + 33);
        data.extend_from_slice(body);
        data.extend_from_slice(&peer.serialize());
        hmac_sha256(&self.key, &data)
    }

    /// A token for a session with `peer` whose client nonce is `client_nonce`, created at
    /// `created_ms`; `random` makes two handshakes of one client in one millisecond distinct.
    pub fn mint(
        &self,
        peer: &PublicKey,
        client_nonce: &str,
        created_ms: u64,
        random: [u8; 2],
    ) -> Result<String, TokenError> {
        let decoded = b64().decode(client_nonce).ok().filter(|d| b64().encode(d) == client_nonce);
        let (kind, nonce) = match &decoded {
            Some(d) => (KIND_BASE64, d.as_slice()),
            None => (KIND_VERBATIM, client_nonce.as_bytes()),
        };
        if nonce.len() > MAX_CLIENT_NONCE_BYTES {
            return Err(TokenError::ClientNonceTooLong);
        }
        let mut body = Vec::with_capacity(HEADER + nonce.len() + MIN_MAC + 2);
        body.push(VERSION);
        body.push(kind);
        body.extend_from_slice(&(nonce.len() as u16).to_be_bytes());
        body.extend_from_slice(&created_ms.to_be_bytes()[2..]);
        body.extend_from_slice(&random);
        body.extend_from_slice(nonce);
        let mac_len = MIN_MAC + (3 - (body.len() + MIN_MAC) % 3) % 3;
        let mac = self.mac(&body, peer);
        body.extend_from_slice(&mac[..mac_len]);
        Ok(b64().encode(&body))
    }

    /// Checks a token against the identity the request claims; the facts to rebuild the
    /// session from.
    pub fn open(&self, token: &str, peer: &PublicKey) -> Result<TokenFacts, TokenError> {
        let bytes = decode(token)?;
        let (body, mac) = bytes.split_at(bytes.len() - mac_len(&bytes)?);
        if !ct_eq(mac, &self.mac(body, peer)[..mac.len()]) {
            return Err(TokenError::BadMac);
        }
        let nonce = &body[HEADER..];
        let client_nonce = match body[1] {
            KIND_BASE64 => b64().encode(nonce),
            _ => String::from_utf8(nonce.to_vec()).map_err(|_| TokenError::Malformed)?,
        };
        Ok(TokenFacts { client_nonce, created_ms: created(&bytes) })
    }
}

fn decode(token: &str) -> Result<Vec<u8>, TokenError> {
    let bytes = b64().decode(token).map_err(|_| TokenError::Malformed)?;
    if bytes.len() < HEADER + MIN_MAC || bytes[0] != VERSION || bytes[1] > KIND_VERBATIM {
        return Err(TokenError::Malformed);
    }
    Ok(bytes)
}

/// The MAC's length in a decoded token (16 to 18 bytes).
fn mac_len(bytes: &[u8]) -> Result<usize, TokenError> {
    let nonce_len = u16::from_be_bytes([bytes[2], bytes[3]]) as usize;
    let mac = bytes.len().checked_sub(HEADER + nonce_len).ok_or(TokenError::Malformed)?;
    if !(MIN_MAC..MIN_MAC + 3).contains(&mac) {
        return Err(TokenError::Malformed);
    }
    Ok(mac)
}

fn created(bytes: &[u8]) -> u64 {
    let mut c = [0u8; 8];
    c[2..].copy_from_slice(&bytes[4..10]);
    u64::from_be_bytes(c)
}

/// The Redis id and creation time of a well-formed token (its MAC is not checked).
pub fn view(token: &str) -> Option<TokenView> {
    let bytes = decode(token).ok()?;
    let mac = mac_len(&bytes).ok()?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&bytes[bytes.len() - mac..][..16]);
    Some(TokenView { id, created_ms: created(&bytes) })
}

/// The member a request nonce is claimed as: the first 16 bytes of its SHA-256 (a fixed,
/// small size whatever the peer sent).
pub fn nonce_member(nonce: &str) -> [u8; 16] {
    let d = sha256(nonce.as_bytes());
    let mut m = [0u8; 16];
    m.copy_from_slice(&d[..16]);
    m
}

/// The session rules every node applies alike (from the node's `SessionConfig`, which every
/// node of a fleet must share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimPolicy {
    pub idle_ttl_ms: u64,
    /// A session's first request must come this soon after its handshake: `unused_ttl`,
    /// and never more than `idle_ttl` (see the module doc).
    pub first_use_window_ms: u64,
    pub max_requests: u64,
}

impl ClaimPolicy {
    pub fn new(c: &SessionConfig) -> ClaimPolicy {
        let idle = c.idle_ttl.as_millis().max(1) as u64;
        ClaimPolicy {
            idle_ttl_ms: idle,
            first_use_window_ms: (c.unused_ttl.as_millis() as u64).min(idle),
            max_requests: c.max_requests_per_session.max(1) as u64,
        }
    }

    /// Whether a session created at `created_ms` may still carry its first request.
    pub fn first_use_allowed(&self, created_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(created_ms) <= self.first_use_window_ms
    }
}

/// What the fleet says about one request nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Claimed; the session has now accepted `n` requests.
    Fresh { n: u64 },
    /// Retired after its last allowed request was accepted (fleet-wide count).
    Retired,
    /// Expired (idle, or never used within its first-use window).
    Expired,
    /// Already accepted, on this node or another.
    Replayed,
}

impl ClaimOutcome {
    /// The script's code: a count above 0, else -1 expired, -2 retired, -3 replayed.
    pub fn from_code(code: i64) -> Option<ClaimOutcome> {
        match code {
            n if n > 0 => Some(ClaimOutcome::Fresh { n: n as u64 }),
            -1 => Some(ClaimOutcome::Expired),
            -2 => Some(ClaimOutcome::Retired),
            -3 => Some(ClaimOutcome::Replayed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tokens() -> SessionTokens {
        SessionTokens::from_server_key(&PrivateKey::from_bytes(&[7; 32]).unwrap())
    }

    #[test]
    fn a_token_opens_on_any_node_with_the_same_key() {
        let peer = PrivateKey::random().public_key();
        let nc = crate::auth::nonce::b64_encode(&[9u8; 48]);
        let t = tokens().mint(&peer, &nc, 1_700_000_000_123, [1, 2]).unwrap();
        assert_eq!(t.len(), 104, "a 48-byte client nonce makes a 104-character token");
        assert!(!t.contains('='));
        let other_node = tokens();
        let facts = other_node.open(&t, &peer).unwrap();
        assert_eq!(facts, TokenFacts { client_nonce: nc.clone(), created_ms: 1_700_000_000_123 });
        let v = view(&t).unwrap();
        assert_eq!(v.created_ms, 1_700_000_000_123);
        // The handshake signature covers dec(Nc ‖ Ns): the concatenation must decode.
        assert!(crate::auth::nonce::b64_decode_strict(&format!("{nc}{t}")).is_some());
        // Distinct random bytes, distinct sessions.
        let t2 = tokens().mint(&peer, &nc, 1_700_000_000_123, [1, 3]).unwrap();
        assert_ne!(view(&t2).unwrap().id, v.id);
    }

    #[test]
    fn a_token_is_bound_to_its_peer_and_key() {
        let peer = PrivateKey::random().public_key();
        let t = tokens().mint(&peer, "bm9uY2U=", 5, [0, 0]).unwrap();
        assert_eq!(tokens().open(&t, &PrivateKey::random().public_key()), Err(TokenError::BadMac));
        let other_fleet = SessionTokens::from_server_key(&PrivateKey::from_bytes(&[8; 32]).unwrap());
        assert_eq!(other_fleet.open(&t, &peer), Err(TokenError::BadMac));
        let mut bytes = b64().decode(&t).unwrap();
        for i in [0, 4, 12, bytes.len() - 1] {
            bytes[i] ^= 1;
            assert!(tokens().open(&b64().encode(&bytes), &peer).is_err(), "byte {i}");
            bytes[i] ^= 1;
        }
        assert_eq!(tokens().open("AAAA", &peer), Err(TokenError::Malformed));
        assert_eq!(tokens().open("not base64!", &peer), Err(TokenError::Malformed));
        // A createNonce nonce of a single node is not a token.
        let w = crate::auth::KeyDeriver::new(PrivateKey::random());
        let n = crate::auth::nonce::create_nonce(&w, &mut rand::rng());
        assert!(tokens().open(&n, &peer).is_err());
    }

    #[test]
    fn any_client_nonce_round_trips() {
        let peer = PrivateKey::random().public_key();
        for nc in ["x", "not base64 at all", "aGVsbG8", "aGVsbG8=", &"A".repeat(400)] {
            let t = tokens().mint(&peer, nc, 1, [0, 0]).unwrap();
            assert_eq!(b64().decode(&t).unwrap().len() % 3, 0);
            assert_eq!(tokens().open(&t, &peer).unwrap().client_nonce, nc, "{nc}");
        }
        assert_eq!(tokens().mint(&peer, &"é".repeat(151), 1, [0, 0]), Err(TokenError::ClientNonceTooLong));
    }

    #[test]
    fn claim_policy_from_the_session_config() {
        let c = SessionConfig {
            idle_ttl: Duration::from_secs(60),
            unused_ttl: Duration::from_secs(120),
            max_requests_per_session: 3,
            ..SessionConfig::default()
        };
        let p = ClaimPolicy::new(&c);
        assert_eq!(p.first_use_window_ms, 60_000, "never longer than the idle TTL");
        assert!(p.first_use_allowed(1000, 61_000));
        assert!(!p.first_use_allowed(1000, 61_001));
        assert!(p.first_use_allowed(5000, 1000), "a clock slightly behind the minting node's");
        assert_eq!(ClaimOutcome::from_code(3), Some(ClaimOutcome::Fresh { n: 3 }));
        assert_eq!(ClaimOutcome::from_code(-3), Some(ClaimOutcome::Replayed));
        assert_eq!(ClaimOutcome::from_code(0), None);
        assert_ne!(nonce_member("a"), nonce_member("b"));
    }
}
