//! BRC-103/104 mutual authentication, byte-exact with `@bsv/sdk` 2.x.
//!
//! - [`keys`]: BRC-42/43 derivation, symmetric keys, HMAC, ECDSA (libsecp256k1, folded verify).
//! - [`nonce`]: `createNonce`/`verifyNonce`, message nonces, the SDK's base64, the injected
//!   randomness ([`RandomSource`]).
//! - [`message`]: `AuthMessage`, one type per message type, and its JSON form.
//! - [`payload`]: the signed serialisation of HTTP requests and responses, `x-bsv-auth-*` headers.
//! - [`session`]: the server's session table (sharded, idle expiry, replay rejection) on an
//!   injected [`Clock`].
//! - [`server`]: the responder (handshake, request verification, response signing).
//! - [`client`]: the initiator (used by `perf/` and the tests).
//! - [`error`]: typed failures and their HTTP answers ([`AuthError::http_rejection`]).
//!
//! Nothing here does I/O: callers hand in bytes and get bytes and typed errors back.

pub mod client;
pub mod error;
pub mod keys;
pub mod message;
pub mod nonce;
pub mod payload;
pub mod server;
pub mod session;

pub use client::{ClientIdentity, ClientSession, PendingHandshake, SignedRequest};
pub use error::{AuthError, FailureReason, HttpExchange, HttpRejection};
pub use keys::{Counterparty, KeyDeriver, PrivateKey, Protocol, PublicKey, SharedSecret, Signature};
pub use message::{
    AuthMessage, CertificateRequest, CertificateResponse, General, InitialRequest, InitialResponse, MessageType,
    WireKey, AUTH_VERSION,
};
pub use nonce::{OsSeeded, RandomSource, SeededRandom};
pub use server::{
    AuthHeaders, HandshakeReply, IncomingRequest, ResponseAuthHeaders, ServerAuth, UnclaimedRequest, VerifiedRequest,
};
pub use session::{Clock, ManualClock, Session, SessionConfig, SessionManager, SystemClock};
