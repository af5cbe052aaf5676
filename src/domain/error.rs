//! Every error the MessageBox routes answer, and the one place that maps each to its HTTP
//! status, `code` and `description` — the original's strings, byte for byte
//! (`spec/ts-server.md` §3), and ours where the original had no check.

use std::borrow::Cow;

use serde_json::{json, Value};

use crate::store::quota::Scope;

/// An error answer of a MessageBox route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} {}: {}", self.status(), self.code(), self.description())]
pub enum ApiError {
    // --- sendMessage: validation, in the original's order -------------------------------
    MessageRequired,
    InvalidMessageBox,
    MessageBoxTooLong {
        max: usize,
    },
    InvalidMessageBody,
    RecipientRequired,
    MessageIdRequired,
    OneMessageIdForMany {
        recipients: usize,
    },
    MessageIdCountMismatch {
        recipients: usize,
        message_ids: usize,
    },
    InvalidMessageId,
    MessageIdTooLong {
        max: usize,
    },
    /// The recipient as the client wrote it (trimmed).
    InvalidRecipientKey(String),
    // --- sendMessage: the newer upstream's caps, checked after every check of the original
    // (a request the original refuses keeps its answer) ------------------------------------
    MessageBodyTooLarge {
        max: usize,
    },
    TooManyRecipients {
        max: usize,
    },
    // --- sendMessage: the permission and fee gate ----------------------------------------
    /// The blocked recipients as the client wrote them.
    DeliveryBlocked(Vec<String>),
    MissingPaymentTx,
    MissingDeliveryOutput,
    PaymentNotAccepted,
    /// A delivery payment refused by the local checks (`payments::check`): the SDK's,
    /// wallet-toolbox's or the newer upstream's text. The wallet was not asked.
    InvalidPayment(String),
    /// The delivery output carries less than the delivery fee (the original never compared).
    DeliveryUnderpaid,
    /// The paying transaction was already used for a send (`payment_replays`).
    PaymentReplayed,
    /// The replay table could not be written, so the payment cannot be taken safely.
    PaymentUnavailable,
    /// The payment interface's error text.
    InternalizeFailed(String),
    /// The wallet that takes the payment (the remote wallet storage) could not be reached:
    /// the newer upstream's 503 code, with a `Retry-After`.
    WalletUnavailable,
    InsufficientOutputs {
        expected: usize,
        received: usize,
    },
    InsufficientAdditionalOutputs {
        expected: usize,
        remaining: usize,
    },
    // --- listMessages ---------------------------------------------------------------------
    MessageBoxRequired,
    MessageBoxNotString,
    /// `max`: `None` when `MESSAGE_BOX_LIST_MAX_LIMIT` is disabled.
    InvalidListLimit {
        max: Option<u32>,
    },
    /// `max`: `None` when `MESSAGE_BOX_LIST_MAX_OFFSET` is disabled.
    InvalidListOffset {
        max: Option<u64>,
    },
    ListFailed,
    // --- acknowledgeMessage ---------------------------------------------------------------
    MessageIdsRequired,
    MessageIdsNotStrings,
    TooManyAcknowledgeIds {
        max: usize,
    },
    MessageNotFound,
    AcknowledgeFailed,
    // --- registerDevice, devices ----------------------------------------------------------
    InvalidFcmToken,
    FcmTokenTooLong {
        max: usize,
    },
    InvalidPlatform,
    RegisterDeviceFailed,
    ListDevicesFailed,
    // --- permissions ----------------------------------------------------------------------
    /// A query parameter given more than once.
    ParameterRepeated(&'static str),
    InvalidPermissionRequest,
    InvalidSenderKey,
    FeeNotInteger,
    FeeOutOfRange,
    PermissionBoxInvalid,
    PermissionBoxTooLong {
        max: usize,
    },
    SetPermissionFailed,
    MessageBoxParameterRequired,
    QuoteParametersRequired,
    QuoteRecipientRequired,
    /// Indexes of the recipients that are not keys.
    InvalidRecipientKeys(Vec<usize>),
    TooManyQuoteRecipients {
        max: usize,
    },
    InvalidPermissionsLimit,
    InvalidPermissionsOffset,
    ListPermissionsFailed,
    // --- any route ------------------------------------------------------------------------
    /// The body is JSON but not an object or array (`None`), or not JSON (the parser's text).
    InvalidJson(Option<String>),
    RouteNotFound {
        method: String,
        path: String,
    },
    /// A database or other server-side failure (already logged where it happened).
    Internal,
    // --- resource safety (track C) ---------------------------------------------------------
    /// The database did not answer within its timeouts (503 with `Retry-After`; 1.1.5 had
    /// no timeout and left the request hanging).
    DatabaseUnavailable,
    /// A messageId stored for another sender or recipient (D8; 1.1.5 answered 200 and
    /// dropped the message).
    DuplicateMessage,
    // --- resource safety (track C3): listMessages paging (1.1.5 ignored limit and offset) --
    /// `offset` and its alias `skip` both given, with different values.
    ListOffsetSkipMismatch,
    /// The first message of a page alone exceeds `MESSAGE_BOX_LIST_MAX_RESPONSE_BYTES`.
    MessageResponseTooLarge,
    // --- storage quotas (track C2; 1.1.5 had none) ----------------------------------------
    /// 429 `ERR_SENDER_QUOTA_EXCEEDED` / `ERR_INBOX_QUOTA_EXCEEDED` with `resource` and `limit`.
    QuotaExceeded(crate::store::quota::QuotaExceeded),
}

/// The bound a paging error names: the configured number, or the newer upstream's words for
/// a disabled (`-1`) bound.
fn js_max(max: Option<u64>) -> String {
    max.map_or_else(|| "the JavaScript safe-integer maximum".to_string(), |n| n.to_string())
}

/// `Retry-After` seconds of a [`ApiError::DatabaseUnavailable`] answer: about one
/// connect-and-query attempt, after which a client retrying finds the database back or
/// hears 503 again.
pub const DATABASE_RETRY_AFTER_SECS: u64 = 5;

/// `Retry-After` seconds of a [`ApiError::WalletUnavailable`] answer: the wallet storage
/// client retries its connection about this often early in an outage.
pub const WALLET_RETRY_AFTER_SECS: u64 = 5;

impl ApiError {
    pub fn status(&self) -> u16 {
        use ApiError::*;
        match self {
            DeliveryBlocked(_) => 403,
            MessageBodyTooLarge { .. } | MessageResponseTooLarge => 413,
            RouteNotFound { .. } => 404,
            DatabaseUnavailable | PaymentUnavailable | WalletUnavailable => 503,
            PaymentReplayed => 409,
            QuotaExceeded(_) => 429,
            InternalizeFailed(_)
            | ListFailed
            | AcknowledgeFailed
            | RegisterDeviceFailed
            | ListDevicesFailed
            | SetPermissionFailed
            | ListPermissionsFailed
            | Internal => 500,
            _ => 400,
        }
    }

    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            MessageRequired => "ERR_MESSAGE_REQUIRED",
            InvalidMessageBox | MessageBoxTooLong { .. } | MessageBoxNotString => "ERR_INVALID_MESSAGEBOX",
            InvalidMessageBody => "ERR_INVALID_MESSAGE_BODY",
            RecipientRequired => "ERR_RECIPIENT_REQUIRED",
            MessageIdRequired => "ERR_MESSAGEID_REQUIRED",
            OneMessageIdForMany { .. } | MessageIdCountMismatch { .. } => "ERR_MESSAGEID_COUNT_MISMATCH",
            MessageBodyTooLarge { .. } => "ERR_MESSAGE_BODY_TOO_LARGE",
            TooManyRecipients { .. } | TooManyQuoteRecipients { .. } => "ERR_TOO_MANY_RECIPIENTS",
            InvalidMessageId | MessageIdTooLong { .. } => "ERR_INVALID_MESSAGEID",
            InvalidRecipientKey(_) => "ERR_INVALID_RECIPIENT_KEY",
            DeliveryBlocked(_) => "ERR_DELIVERY_BLOCKED",
            MissingPaymentTx => "ERR_MISSING_PAYMENT_TX",
            MissingDeliveryOutput => "ERR_MISSING_DELIVERY_OUTPUT",
            PaymentNotAccepted | DeliveryUnderpaid => "ERR_INSUFFICIENT_PAYMENT",
            InvalidPayment(_) => "ERR_INVALID_PAYMENT",
            PaymentReplayed => "ERR_PAYMENT_REPLAYED",
            PaymentUnavailable => "ERR_PAYMENT_UNAVAILABLE",
            InternalizeFailed(_) => "ERR_INTERNALIZE_FAILED",
            WalletUnavailable => "ERR_PAYMENT_UNAVAILABLE",
            InsufficientOutputs { .. } | InsufficientAdditionalOutputs { .. } => "ERR_INSUFFICIENT_OUTPUTS",
            MessageBoxRequired => "ERR_MESSAGEBOX_REQUIRED",
            InvalidListLimit { .. } | InvalidPermissionsLimit => "ERR_INVALID_LIMIT",
            InvalidListOffset { .. } | ListOffsetSkipMismatch | InvalidPermissionsOffset => "ERR_INVALID_OFFSET",
            MessageResponseTooLarge => "ERR_MESSAGE_RESPONSE_TOO_LARGE",
            ListFailed | AcknowledgeFailed => "ERR_INTERNAL_ERROR",
            MessageIdsRequired => "ERR_MESSAGE_ID_REQUIRED",
            MessageIdsNotStrings | TooManyAcknowledgeIds { .. } => "ERR_INVALID_MESSAGE_ID",
            MessageNotFound => "ERR_INVALID_ACKNOWLEDGMENT",
            InvalidFcmToken | FcmTokenTooLong { .. } => "ERR_INVALID_FCM_TOKEN",
            InvalidPlatform => "ERR_INVALID_PLATFORM",
            RegisterDeviceFailed | ListDevicesFailed | SetPermissionFailed => "ERR_DATABASE_ERROR",
            ParameterRepeated(_) => "ERR_INVALID_PARAMETERS",
            InvalidPermissionRequest => "ERR_INVALID_REQUEST",
            InvalidSenderKey | InvalidRecipientKeys(_) => "ERR_INVALID_PUBLIC_KEY",
            FeeNotInteger | FeeOutOfRange => "ERR_INVALID_FEE_VALUE",
            PermissionBoxInvalid | PermissionBoxTooLong { .. } => "ERR_INVALID_MESSAGE_BOX",
            MessageBoxParameterRequired | QuoteParametersRequired | QuoteRecipientRequired => "ERR_MISSING_PARAMETERS",
            ListPermissionsFailed => "ERR_LIST_PERMISSIONS_FAILED",
            InvalidJson(_) => "ERR_INVALID_JSON",
            RouteNotFound { .. } => "ERR_NOT_FOUND",
            Internal => "ERR_INTERNAL",
            DatabaseUnavailable => "ERR_DATABASE_UNAVAILABLE",
            DuplicateMessage => "ERR_DUPLICATE_MESSAGE",
            QuotaExceeded(q) => match q.scope {
                Scope::Sender => "ERR_SENDER_QUOTA_EXCEEDED",
                Scope::Inbox => "ERR_INBOX_QUOTA_EXCEEDED",
            },
        }
    }

    pub fn description(&self) -> Cow<'static, str> {
        use ApiError::*;
        let text: &'static str = match self {
            MessageRequired => "Please provide a valid message to send!",
            InvalidMessageBox => "Invalid message box.",
            MessageBoxTooLong { max } => {
                return format!("Invalid message box: names are at most {max} characters.").into()
            }
            InvalidMessageBody => "Invalid message body.",
            RecipientRequired => "Missing recipient(s). Provide \"recipient\" or \"recipients\".",
            MessageIdRequired => "Missing messageId.",
            OneMessageIdForMany { recipients } => {
                return format!(
                    "Provided 1 messageId for {recipients} recipients. Provide one messageId per recipient (same order)."
                )
                .into()
            }
            MessageIdCountMismatch { recipients, message_ids } => {
                return format!("Recipients ({recipients}) and messageId count ({message_ids}) must match.").into()
            }
            InvalidMessageId => "Each messageId must be a non-empty string.",
            MessageIdTooLong { max } => {
                return format!("Each messageId must be a non-empty string of at most {max} characters.").into()
            }
            InvalidRecipientKey(key) => return format!("Invalid recipient key: {key}").into(),
            MessageBodyTooLarge { max } => return format!("Message bodies must not exceed {max} bytes.").into(),
            TooManyRecipients { max } => return format!("A message may include at most {max} recipients.").into(),
            TooManyQuoteRecipients { max } => return format!("A quote may include at most {max} recipients.").into(),
            DeliveryBlocked(keys) => return format!("Blocked recipients: {}", keys.join(", ")).into(),
            MissingPaymentTx => "Payment transaction data is required for payable delivery.",
            MissingDeliveryOutput => "Delivery fee required but no outputs were provided.",
            PaymentNotAccepted => "Payment was not accepted by the server.",
            InvalidPayment(text) => return text.clone().into(),
            DeliveryUnderpaid => crate::payments::check::UNDERPAID,
            PaymentReplayed => "This payment was already used.",
            PaymentUnavailable => "Unable to claim payment.",
            InternalizeFailed(e) => return format!("Failed to internalize payment: {e}").into(),
            WalletUnavailable => "The payment service is temporarily unavailable. Please retry later.",
            InsufficientOutputs { expected, received } => {
                return format!("Expected at least {expected} recipient output(s) but received {received}").into()
            }
            InsufficientAdditionalOutputs { expected, remaining } => {
                return format!("Expected at least {expected} additional recipient output(s) but only {remaining} remain")
                    .into()
            }
            MessageBoxRequired => "Please provide the name of a valid MessageBox!",
            MessageBoxNotString => "MessageBox name must be a string!",
            InvalidListLimit { max } => {
                return format!("limit must be an integer between 1 and {}.", js_max(max.map(u64::from))).into()
            }
            InvalidListOffset { max } => {
                return format!("offset must be an integer between 0 and {}.", js_max(*max)).into()
            }
            ListOffsetSkipMismatch => "offset and skip must match when both are provided.",
            MessageResponseTooLarge => "The oldest message exceeds the configured listing response budget.",
            ListFailed => "An internal error has occurred while listing messages.",
            MessageIdsRequired => "Please provide the ID of the message(s) to acknowledge!",
            MessageIdsNotStrings => "Message IDs must be formatted as an array of strings!",
            TooManyAcknowledgeIds { max } => {
                return format!(
                    "Message IDs must be a non-empty array of at most {max} of exact, control-free strings no longer than 256 bytes each."
                )
                .into()
            }
            MessageNotFound => "Message not found!",
            AcknowledgeFailed => "An internal error has occurred while acknowledging the message",
            InvalidFcmToken => "fcmToken is required and must be a non-empty string.",
            FcmTokenTooLong { max } => return format!("fcmToken must be at most {max} characters.").into(),
            InvalidPlatform => "platform must be one of: ios, android, web",
            RegisterDeviceFailed => "Failed to register device.",
            ListDevicesFailed => "Failed to retrieve devices.",
            ParameterRepeated(name) => return format!("{name} must be given once, as a string.").into(),
            InvalidPermissionRequest => {
                "messageBox (string) and recipientFee (number) are required. sender (string) is optional for box-wide settings."
            }
            InvalidSenderKey => "Invalid sender public key format.",
            FeeNotInteger => "recipientFee must be an integer (-1, 0, or positive number).",
            FeeOutOfRange => "recipientFee must be an integer between -2147483648 and 2147483647.",
            PermissionBoxInvalid => "messageBox must be a non-empty string.",
            PermissionBoxTooLong { max } => return format!("messageBox must be at most {max} characters.").into(),
            SetPermissionFailed => "Failed to update message permission.",
            MessageBoxParameterRequired => "messageBox parameter is required.",
            QuoteParametersRequired => "recipient and messageBox parameters are required.",
            QuoteRecipientRequired => "At least one recipient is required.",
            InvalidRecipientKeys(indexes) => {
                let list: Vec<String> = indexes.iter().map(usize::to_string).collect();
                return format!("Invalid recipient public key at index(es): {}.", list.join(", ")).into();
            }
            InvalidPermissionsLimit => "Limit must be a number between 1 and 1000",
            InvalidPermissionsOffset => "Offset must be a non-negative number",
            ListPermissionsFailed => "Failed to list permissions",
            InvalidJson(None) => "The request body must be a JSON object or array.",
            InvalidJson(Some(e)) => return format!("The request body is not valid JSON: {e}").into(),
            RouteNotFound { method, path } => return format!("Route not found: {method} {path}").into(),
            Internal => "An internal error has occurred.",
            DatabaseUnavailable => "The database is temporarily unavailable. Please retry later.",
            DuplicateMessage => "Duplicate message.",
            QuotaExceeded(q) => match q.scope {
                Scope::Sender => "The sender storage quota has been reached. Retry after messages expire.",
                Scope::Inbox => {
                    "The recipient inbox storage quota has been reached. Retry after messages are acknowledged or expire."
                }
            },
        };
        Cow::Borrowed(text)
    }

    /// Seconds for a `Retry-After` header, for the errors that have one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::DatabaseUnavailable => Some(DATABASE_RETRY_AFTER_SECS),
            ApiError::WalletUnavailable => Some(WALLET_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// A store failure as the route answers it: an unreachable database is 503 (logged once
    /// per outage by the store, so only at debug here); anything else is logged with `what`
    /// and answered as `otherwise`.
    pub fn from_store(e: &crate::store::StoreError, what: &str, otherwise: ApiError) -> ApiError {
        if e.class() == crate::store::ErrorClass::Unavailable {
            tracing::debug!(error = %e, "{what}: database unavailable");
            ApiError::DatabaseUnavailable
        } else {
            tracing::error!(error = %e, "{what} failed");
            otherwise
        }
    }

    /// The JSON body: `{"status":"error","code","description"}`, plus `blockedRecipients` for
    /// a blocked delivery.
    pub fn to_json(&self) -> Value {
        let mut body = json!({"status": "error", "code": self.code(), "description": self.description()});
        match self {
            ApiError::DeliveryBlocked(keys) => body["blockedRecipients"] = json!(keys),
            ApiError::QuotaExceeded(q) => {
                body["resource"] = json!(q.resource.as_str());
                body["limit"] = json!(q.limit);
            }
            _ => {}
        }
        body
    }
}

impl From<crate::payments::check::Refusal> for ApiError {
    fn from(refusal: crate::payments::check::Refusal) -> ApiError {
        use crate::payments::check::Refusal;
        match refusal {
            Refusal::Invalid(text) => ApiError::InvalidPayment(text),
            Refusal::Insufficient { .. } => ApiError::DeliveryUnderpaid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_keep_the_originals_shape() {
        let e = ApiError::DeliveryBlocked(vec!["02aa".into(), "03bb".into()]);
        assert_eq!(e.status(), 403);
        assert_eq!(
            serde_json::to_string(&e.to_json()).unwrap(),
            r#"{"status":"error","code":"ERR_DELIVERY_BLOCKED","description":"Blocked recipients: 02aa, 03bb","blockedRecipients":["02aa","03bb"]}"#
        );
        let e = ApiError::InvalidRecipientKeys(vec![0, 2]);
        assert_eq!(e.description(), "Invalid recipient public key at index(es): 0, 2.");
        assert_eq!(ApiError::Internal.status(), 500);
        assert_eq!(ApiError::MessageNotFound.to_string(), "400 ERR_INVALID_ACKNOWLEDGMENT: Message not found!");
    }

    #[test]
    fn quota_bodies_as_the_newer_server_answers() {
        use crate::store::quota::{QuotaExceeded, Resource};
        let e = ApiError::QuotaExceeded(QuotaExceeded { scope: Scope::Sender, resource: Resource::Bytes, limit: 7 });
        assert_eq!(e.status(), 429);
        assert_eq!(e.retry_after(), None);
        assert_eq!(
            serde_json::to_string(&e.to_json()).unwrap(),
            r#"{"status":"error","code":"ERR_SENDER_QUOTA_EXCEEDED","description":"The sender storage quota has been reached. Retry after messages expire.","resource":"bytes","limit":7}"#
        );
        let e = ApiError::QuotaExceeded(QuotaExceeded { scope: Scope::Inbox, resource: Resource::Messages, limit: 3 });
        assert_eq!(
            serde_json::to_string(&e.to_json()).unwrap(),
            r#"{"status":"error","code":"ERR_INBOX_QUOTA_EXCEEDED","description":"The recipient inbox storage quota has been reached. Retry after messages are acknowledged or expire.","resource":"messages","limit":3}"#
        );
    }

    /// A wallet storage that cannot be reached: 503 with the newer upstream's code and a
    /// `Retry-After`, so a client may try again.
    #[test]
    fn wallet_unavailable() {
        let e = ApiError::WalletUnavailable;
        assert_eq!((e.status(), e.retry_after()), (503, Some(WALLET_RETRY_AFTER_SECS)));
        assert_eq!(
            serde_json::to_string(&e.to_json()).unwrap(),
            r#"{"status":"error","code":"ERR_PAYMENT_UNAVAILABLE","description":"The payment service is temporarily unavailable. Please retry later."}"#
        );
    }
}
