//! Typed failures of BRC-103 processing. The texts keep the words of the TS SDK
//! (`nonce`, `signature`, `session`, `auth version`) so logs and clients read the same.

use super::keys::KeyError;
use super::message::{MessageError, MessageType};
use super::session::SessionsFull;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("Invalid or unsupported message auth version! Received: {0}, expected: 0.1")]
    VersionHeader(String),
    #[error("Missing required fields in initialRequest message.")]
    MissingInitialFields,
    #[error("unexpected message type {}", .0.as_str())]
    UnexpectedMessageType(MessageType),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("invalid identity key")]
    InvalidIdentityKey,
    #[error("invalid nonce: {0}")]
    InvalidNonce(&'static str),
    #[error("Session not found for nonce: {0}")]
    SessionNotFound(String),
    #[error("identity key does not match the session's authenticated identity")]
    IdentityMismatch,
    #[error("invalid request id")]
    InvalidRequestId,
    #[error("Signature is not valid")]
    InvalidSignature,
    #[error("request nonce was already used in this session (replay)")]
    Replayed,
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("too many open sessions; try again later")]
    SessionsFull,
    /// Client side: the peer answered for another request or session.
    #[error("response does not belong to this request or session: {0}")]
    Mismatch(&'static str),
}

impl From<SessionsFull> for AuthError {
    fn from(_: SessionsFull) -> Self {
        AuthError::SessionsFull
    }
}
