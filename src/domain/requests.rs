//! The rules of the routes other than sending: listing, acknowledging, permission rules and
//! device registrations — each validated in the original's order into a typed request, and
//! carried out against the store.

use serde_json::Value;

use super::js;
use super::{ApiError, IdentityKey, Limits, MessageBox};
use crate::store::{Device, DeviceRegistration, Permission, StoredMessage};

/// A `/listMessages` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    /// As given (not trimmed; compared in SQL).
    pub message_box: String,
    pub limit: u32,
    pub offset: u64,
}

impl ListRequest {
    pub fn from_json(body: &Value, limits: &Limits) -> Result<ListRequest, ApiError> {
        let message_box = match body.get("messageBox") {
            None | Some(Value::Null) => return Err(ApiError::MessageBoxRequired),
            Some(Value::String(s)) if s.is_empty() => return Err(ApiError::MessageBoxRequired),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(ApiError::MessageBoxNotString),
        };
        let max = limits.list_max;
        let limit = match body.get("limit") {
            None | Some(Value::Null) => limits.list_default,
            Some(v) => match v.as_u64() {
                Some(n) if js::is_integer(v) && (1..=u64::from(max)).contains(&n) => n as u32,
                _ => return Err(ApiError::InvalidListLimit { max }),
            },
        };
        let offset = match body.get("offset") {
            None | Some(Value::Null) => 0,
            Some(v) => match v.as_u64() {
                Some(n) if js::is_integer(v) => n,
                _ => return Err(ApiError::InvalidListOffset),
            },
        };
        Ok(ListRequest { message_box, limit, offset })
    }
}

/// A `/acknowledgeMessage` request: ids of the caller's messages, in any box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcknowledgeRequest {
    pub message_ids: Vec<String>,
}

impl AcknowledgeRequest {
    pub fn from_json(body: &Value, limits: &Limits) -> Result<AcknowledgeRequest, ApiError> {
        let message_ids = match body.get("messageIds") {
            None | Some(Value::Null) => return Err(ApiError::MessageIdsRequired),
            Some(Value::Array(a)) if a.is_empty() => return Err(ApiError::MessageIdsRequired),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect::<Vec<_>>()
            }
            Some(_) => return Err(ApiError::MessageIdsNotStrings),
        };
        // After the original's checks: only a request it would have carried out is capped.
        if let Some(max) = limits.max_acknowledge.filter(|max| message_ids.len() > *max) {
            return Err(ApiError::TooManyAcknowledgeIds { max });
        }
        Ok(AcknowledgeRequest { message_ids })
    }
}

/// A `/permissions/set` request: the caller's fee for one sender (or box-wide) on one box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionRule {
    /// The sender as written (echoed in the answer) and canonical (stored); `None` box-wide.
    pub sender: Option<(String, IdentityKey)>,
    /// As given (not trimmed).
    pub message_box: String,
    /// -1 blocks, 0 allows, a positive number of satoshis is required.
    pub fee: i64,
}

impl PermissionRule {
    pub fn from_json(body: &Value, limits: &Limits) -> Result<PermissionRule, ApiError> {
        let message_box = body.get("messageBox").filter(|v| !v.is_null());
        let (Some(message_box), Some(fee @ Value::Number(_))) = (message_box, body.get("recipientFee")) else {
            return Err(ApiError::InvalidPermissionRequest);
        };
        let sender = match body.get("sender") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some((s.clone(), parse_sender(s)?)),
            Some(_) => return Err(ApiError::InvalidSenderKey),
        };
        if !js::is_integer(fee) {
            return Err(ApiError::FeeNotInteger);
        }
        let fee = fee.as_i64().and_then(|f| i32::try_from(f).ok()).ok_or(ApiError::FeeOutOfRange)?;
        let message_box = match message_box {
            Value::String(s) if !js::is_blank(s) => s.clone(),
            _ => return Err(ApiError::PermissionBoxInvalid),
        };
        if message_box.chars().count() > limits.max_box_name {
            return Err(ApiError::PermissionBoxTooLong { max: limits.max_box_name });
        }
        Ok(PermissionRule { sender, message_box, fee: i64::from(fee) })
    }
}

/// A sender key of the permission routes.
pub fn parse_sender(text: &str) -> Result<IdentityKey, ApiError> {
    IdentityKey::parse(text).map_err(|_| ApiError::InvalidSenderKey)
}

/// Recipients of one `/permissions/quote`: the newer upstream's fixed bound (not
/// `MESSAGE_BOX_MAX_RECIPIENTS`).
pub const MAX_QUOTE_RECIPIENTS: usize = 100;

/// The recipients of a quote: every one a key, else the indexes of those that are not; at
/// most [`MAX_QUOTE_RECIPIENTS`] (checked last: the original had no bound).
pub fn parse_quote_recipients(recipients: &[String]) -> Result<Vec<IdentityKey>, ApiError> {
    if recipients.is_empty() {
        return Err(ApiError::QuoteRecipientRequired);
    }
    let parsed: Vec<Result<IdentityKey, _>> = recipients.iter().map(|r| IdentityKey::parse(r)).collect();
    let invalid: Vec<usize> = parsed.iter().enumerate().filter(|(_, k)| k.is_err()).map(|(i, _)| i).collect();
    if !invalid.is_empty() {
        return Err(ApiError::InvalidRecipientKeys(invalid));
    }
    if recipients.len() > MAX_QUOTE_RECIPIENTS {
        return Err(ApiError::TooManyQuoteRecipients { max: MAX_QUOTE_RECIPIENTS });
    }
    Ok(parsed.into_iter().flatten().collect())
}

/// The `fcm_token` column is VARCHAR(500).
const MAX_FCM_TOKEN: usize = 500;

/// Validates a `/registerDevice` body for `identity`.
pub fn device_registration(identity: &IdentityKey, body: &Value) -> Result<DeviceRegistration, ApiError> {
    let token = match body.get("fcmToken") {
        Some(Value::String(s)) if !js::is_blank(s) => js::trim(s).to_string(),
        _ => return Err(ApiError::InvalidFcmToken),
    };
    if token.chars().count() > MAX_FCM_TOKEN {
        return Err(ApiError::FcmTokenTooLong { max: MAX_FCM_TOKEN });
    }
    let platform = match body.get("platform") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if matches!(p.as_str(), "ios" | "android" | "web") => Some(p.clone()),
        Some(_) => return Err(ApiError::InvalidPlatform),
    };
    // The original calls deviceId.trim() inside its database try block: a non-string
    // deviceId is answered as a database error.
    let device_id = match body.get("deviceId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(js::trim(s).to_string()),
        Some(_) => return Err(ApiError::RegisterDeviceFailed),
    };
    Ok(DeviceRegistration { identity_key: identity.as_str().to_string(), fcm_token: token, device_id, platform })
}

impl MessageBox {
    /// A page of `recipient`'s messages in one box, in arrival order.
    pub async fn list(&self, recipient: &IdentityKey, request: &ListRequest) -> Result<Vec<StoredMessage>, ApiError> {
        self.store
            .list_messages(recipient.as_str(), &request.message_box, request.limit, request.offset)
            .await
            .map_err(|e| ApiError::from_store(&e, "listMessages", ApiError::ListFailed))
    }

    /// Deletes `recipient`'s messages with these ids; none found is an error.
    pub async fn acknowledge(&self, recipient: &IdentityKey, request: &AcknowledgeRequest) -> Result<(), ApiError> {
        match self.store.acknowledge(recipient.as_str(), &request.message_ids).await {
            Ok(0) => Err(ApiError::MessageNotFound),
            Ok(_) => Ok(()),
            Err(e) => Err(ApiError::from_store(&e, "acknowledgeMessage", ApiError::AcknowledgeFailed)),
        }
    }

    /// Sets (upserts) one of `recipient`'s fee rules.
    pub async fn set_permission(&self, recipient: &IdentityKey, rule: &PermissionRule) -> Result<(), ApiError> {
        let sender = rule.sender.as_ref().map(|(_, k)| k.as_str());
        self.store.set_permission(recipient.as_str(), sender, &rule.message_box, rule.fee).await.map_err(|e| {
            tracing::error!(error = %e, "permissions/set failed");
            ApiError::SetPermissionFailed
        })
    }

    /// `recipient`'s exact rule for `sender` (box-wide when `None`), no fallback.
    pub async fn permission(
        &self,
        recipient: &IdentityKey,
        sender: Option<&IdentityKey>,
        message_box: &str,
    ) -> Result<Option<Permission>, ApiError> {
        self.store.get_permission(recipient.as_str(), sender.map(IdentityKey::as_str), message_box).await.map_err(|e| {
            tracing::error!(error = %e, "permissions/get failed");
            ApiError::Internal
        })
    }

    /// Registers (upserts) a device; the MySQL-style insert id.
    pub async fn register_device(&self, registration: DeviceRegistration) -> Result<u64, ApiError> {
        self.store.register_device(registration).await.map_err(|e| {
            tracing::error!(error = %e, "registerDevice failed");
            ApiError::RegisterDeviceFailed
        })
    }

    pub async fn devices(&self, identity: &IdentityKey) -> Result<Vec<Device>, ApiError> {
        self.store.list_devices(identity.as_str()).await.map_err(|e| {
            tracing::error!(error = %e, "listDevices failed");
            ApiError::ListDevicesFailed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn list_paging_rules() {
        let l = Limits::default();
        assert_eq!(ListRequest::from_json(&json!({}), &l), Err(ApiError::MessageBoxRequired));
        assert_eq!(ListRequest::from_json(&json!({"messageBox": 1}), &l), Err(ApiError::MessageBoxNotString));
        let r = ListRequest::from_json(&json!({"messageBox": "inbox"}), &l).unwrap();
        assert_eq!((r.limit, r.offset), (l.list_default, 0));
        assert_eq!(
            ListRequest::from_json(&json!({"messageBox": "inbox", "limit": 0}), &l),
            Err(ApiError::InvalidListLimit { max: l.list_max })
        );
        assert_eq!(
            ListRequest::from_json(&json!({"messageBox": "inbox", "offset": -1}), &l),
            Err(ApiError::InvalidListOffset)
        );
    }

    #[test]
    fn permission_rules() {
        let l = Limits::default();
        let key = IdentityKey::from(&crate::auth::PrivateKey::from_bytes(&[9; 32]).unwrap().public_key());
        let upper = key.as_str().to_uppercase();
        let r =
            PermissionRule::from_json(&json!({"messageBox": "inbox", "recipientFee": 5, "sender": upper}), &l).unwrap();
        assert_eq!(r.sender, Some((upper, key)));
        assert_eq!(
            PermissionRule::from_json(&json!({"messageBox": "inbox", "recipientFee": 1.5}), &l),
            Err(ApiError::FeeNotInteger)
        );
        assert_eq!(
            PermissionRule::from_json(&json!({"messageBox": "inbox", "recipientFee": 4_294_967_296u64}), &l),
            Err(ApiError::FeeOutOfRange)
        );
        assert_eq!(
            parse_quote_recipients(&["zz".into(), key_hex(), "02".into()]),
            Err(ApiError::InvalidRecipientKeys(vec![0, 2]))
        );
    }

    fn key_hex() -> String {
        crate::auth::PrivateKey::from_bytes(&[9; 32]).unwrap().public_key().to_hex()
    }
}
