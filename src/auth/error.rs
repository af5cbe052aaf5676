//! Typed failures of BRC-103 processing, and the one place they become HTTP answers. The
//! texts keep the words of the TS SDK (`nonce`, `signature`, `session`, `auth version`) so
//! logs and clients read the same.

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

/// Which HTTP exchange an [`AuthError`] ends: the answers differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpExchange {
    /// `POST /.well-known/auth`.
    Handshake,
    /// A signed business request.
    Request,
}

/// The status and error code of the JSON error answer (its description is the error's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRejection {
    pub status: u16,
    pub code: &'static str,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

impl AuthError {
    /// How the HTTP layer answers this failure. A request that does not verify is refused
    /// with 401 whatever the reason, as the original middleware does; a handshake tells an
    /// unauthentic message (401) from a malformed one (400) and a full session table (503).
    pub fn http_rejection(&self, exchange: HttpExchange) -> HttpRejection {
        const AUTH_FAILED: HttpRejection = HttpRejection { status: 401, code: "ERR_AUTH_FAILED", retry_after: None };
        match (exchange, self) {
            (HttpExchange::Request, _) => AUTH_FAILED,
            (HttpExchange::Handshake, AuthError::SessionsFull) => {
                HttpRejection { status: 503, code: "ERR_TOO_MANY_SESSIONS", retry_after: Some(5) }
            }
            (
                HttpExchange::Handshake,
                AuthError::SessionNotFound(_) | AuthError::InvalidSignature | AuthError::IdentityMismatch,
            ) => AUTH_FAILED,
            (HttpExchange::Handshake, _) => {
                HttpRejection { status: 400, code: "ERR_INVALID_AUTH_MESSAGE", retry_after: None }
            }
        }
    }
}

/// Why an authentication failed, as metrics count it: a fixed set of labels, coarser than
/// [`AuthError`] (whose texts carry nonces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// A business request without BRC-104 headers.
    MissingHeaders,
    /// An undecodable or incomplete message, header or key.
    Malformed,
    /// An unsupported auth version.
    Version,
    /// No session for the nonce (unknown or expired).
    UnknownSession,
    IdentityMismatch,
    BadSignature,
    Replay,
    /// The session table is full.
    SessionsFull,
}

impl FailureReason {
    pub const ALL: [FailureReason; 8] = [
        FailureReason::MissingHeaders,
        FailureReason::Malformed,
        FailureReason::Version,
        FailureReason::UnknownSession,
        FailureReason::IdentityMismatch,
        FailureReason::BadSignature,
        FailureReason::Replay,
        FailureReason::SessionsFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::MissingHeaders => "missing_headers",
            FailureReason::Malformed => "malformed",
            FailureReason::Version => "version",
            FailureReason::UnknownSession => "unknown_session",
            FailureReason::IdentityMismatch => "identity_mismatch",
            FailureReason::BadSignature => "bad_signature",
            FailureReason::Replay => "replay",
            FailureReason::SessionsFull => "sessions_full",
        }
    }
}

impl AuthError {
    /// The metrics label of this failure.
    pub fn reason(&self) -> FailureReason {
        match self {
            AuthError::VersionHeader(_) => FailureReason::Version,
            AuthError::SessionNotFound(_) => FailureReason::UnknownSession,
            AuthError::IdentityMismatch => FailureReason::IdentityMismatch,
            AuthError::InvalidSignature => FailureReason::BadSignature,
            AuthError::Replayed => FailureReason::Replay,
            AuthError::SessionsFull => FailureReason::SessionsFull,
            AuthError::Message(_)
            | AuthError::MissingInitialFields
            | AuthError::UnexpectedMessageType(_)
            | AuthError::Missing(_)
            | AuthError::InvalidIdentityKey
            | AuthError::InvalidNonce(_)
            | AuthError::InvalidRequestId
            | AuthError::Key(_)
            | AuthError::Mismatch(_) => FailureReason::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_rejections() {
        use HttpExchange::{Handshake, Request};
        let status = |e: AuthError, x| {
            let r = e.http_rejection(x);
            (r.status, r.code, r.retry_after)
        };
        assert_eq!(status(AuthError::SessionsFull, Handshake), (503, "ERR_TOO_MANY_SESSIONS", Some(5)));
        for e in [AuthError::SessionNotFound("n".into()), AuthError::InvalidSignature, AuthError::IdentityMismatch] {
            assert_eq!(status(e.clone(), Handshake), (401, "ERR_AUTH_FAILED", None));
            assert_eq!(status(e, Request), (401, "ERR_AUTH_FAILED", None));
        }
        let malformed = AuthError::Message(MessageError::Malformed("x".into()));
        for e in [AuthError::MissingInitialFields, AuthError::InvalidIdentityKey, AuthError::Replayed, malformed] {
            assert_eq!(status(e.clone(), Handshake), (400, "ERR_INVALID_AUTH_MESSAGE", None));
            assert_eq!(status(e, Request), (401, "ERR_AUTH_FAILED", None));
        }
        assert_eq!(status(AuthError::VersionHeader("0.2".into()), Request), (401, "ERR_AUTH_FAILED", None));
    }
}
