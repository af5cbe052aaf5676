//! The rules of the routes other than sending: listing, acknowledging, permission rules and
//! device registrations — each validated in the original's order into a typed request, and
//! carried out against the store.

use serde_json::Value;

use super::js;
use super::{ApiError, IdentityKey, Limits, MessageBox};
use crate::store::{iso8601, ByteBound, Device, DeviceRegistration, Permission, StoredMessage};

/// A `/listMessages` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    /// As given (not trimmed; compared in SQL).
    pub message_box: String,
    pub limit: u32,
    pub offset: u64,
    /// `limit`, `offset` or `skip` was given: the answer carries the paging fields.
    pub paged: bool,
}

/// `Number.MAX_SAFE_INTEGER`: the largest limit or offset when its bound is disabled.
const JS_MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

impl ListRequest {
    /// Validates in the newer upstream's order. 1.1.5 read only `messageBox`, so its two
    /// errors come first and keep their texts; the paging checks are the newer server's.
    pub fn from_json(body: &Value, limits: &Limits) -> Result<ListRequest, ApiError> {
        let message_box = match body.get("messageBox") {
            None | Some(Value::Null) => return Err(ApiError::MessageBoxRequired),
            Some(Value::String(s)) if s.is_empty() => return Err(ApiError::MessageBoxRequired),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(ApiError::MessageBoxNotString),
        };
        let given = |name: &str| body.get(name).filter(|v| !v.is_null());
        let (limit, offset, skip) = (given("limit"), given("offset"), given("skip"));
        let paged = limit.is_some() || offset.is_some() || skip.is_some();
        if let (Some(o), Some(s)) = (offset, skip) {
            if !js_strict_equal(o, s) {
                return Err(ApiError::ListOffsetSkipMismatch);
            }
        }
        let max_limit = (!limits.list_max_disabled).then_some(limits.list_max);
        let limit = match limit {
            None => limits.list_default,
            Some(v) => match safe_integer(v) {
                Some(n) if n >= 1 && n <= max_limit.map_or(JS_MAX_SAFE_INTEGER, u64::from) => {
                    u32::try_from(n).unwrap_or(u32::MAX)
                }
                _ => return Err(ApiError::InvalidListLimit { max: max_limit }),
            },
        };
        let max_offset = limits.list_max_offset;
        let offset = match offset.or(skip) {
            None => 0,
            Some(v) => match safe_integer(v) {
                Some(n) if n <= max_offset.unwrap_or(JS_MAX_SAFE_INTEGER) => n,
                _ => return Err(ApiError::InvalidListOffset { max: max_offset }),
            },
        };
        Ok(ListRequest { message_box, limit, offset, paged })
    }
}

/// `Number.isSafeInteger(v) && v >= 0`: a JSON number (never a string) that is a whole,
/// non-negative safe integer.
fn safe_integer(v: &Value) -> Option<u64> {
    if !js::is_integer(v) {
        return None;
    }
    let n = v
        .as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0 && *f <= JS_MAX_SAFE_INTEGER as f64).map(|f| f as u64))?;
    (n <= JS_MAX_SAFE_INTEGER).then_some(n)
}

/// `a !== b` negated for two JSON values as JavaScript holds them: numbers by value (`1` and
/// `1.0` are one number), objects and arrays never (each is its own reference).
fn js_strict_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Object(_) | Value::Array(_), _) => false,
        _ => a == b,
    }
}

/// What the listing budget counts for the answer around the items (the newer upstream's
/// figure): `{"status":"success","messages":[…],"limit":…,"offset":…,"nextOffset":…,"hasMore":…}`.
const LIST_ENVELOPE_BYTES: u64 = 256;

/// A batch of at least this many stored bytes reserves the rest of the page's budget.
const LIST_RESERVE_FROM: u64 = 256 * 1024;

/// How a listing page ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPage {
    /// Messages on the page.
    pub count: u64,
    /// More messages follow: the limit or the byte budget cut the page.
    pub has_more: bool,
}

/// A listed message as the answer has it: `{"messageId","body","sender","createdAt","updatedAt"}`
/// (1.1.5's keys and order). The domain writes it because the page's byte budget counts it.
#[derive(serde::Serialize)]
struct ListItem<'a> {
    #[serde(rename = "messageId")]
    message_id: &'a str,
    body: &'a str,
    sender: &'a str,
    #[serde(rename = "createdAt")]
    created_at: String,
    #[serde(rename = "updatedAt")]
    updated_at: String,
}

fn write_item(out: &mut Vec<u8>, m: &StoredMessage) {
    let item = ListItem {
        message_id: &m.message_id,
        body: &m.body,
        sender: &m.sender,
        created_at: iso8601(m.created_at),
        updated_at: iso8601(m.updated_at),
    };
    serde_json::to_writer(out, &item).expect("strings serialise");
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
    /// A page of `recipient`'s unexpired messages in one box, in arrival order (`created_at`,
    /// then `messageId`), each item's JSON appended to `out`, comma-separated.
    ///
    /// The page stops at `request.limit` messages or at the byte budget
    /// (`MESSAGE_BOX_LIST_MAX_RESPONSE_BYTES`), whichever comes first: the budget starts at
    /// 256 (the answer's envelope) and each item adds its JSON length + 1 (its comma). The rows
    /// are read in one store call bounded by what is left of the budget in stored bytes (an
    /// item's JSON is longer than its strings, so the row at which the store stops is past the
    /// budget here too): the server holds at most the page and a budget of stored bodies,
    /// however full the box. A first message that alone exceeds the budget is 413
    /// `ERR_MESSAGE_RESPONSE_TOO_LARGE` (the client could never read past it).
    pub async fn list_into(
        &self,
        recipient: &IdentityKey,
        request: &ListRequest,
        out: &mut Vec<u8>,
    ) -> Result<ListPage, ApiError> {
        let budget = self.limits.list_max_response_bytes;
        let (start, mut count, mut used) = (out.len(), 0u32, LIST_ENVELOPE_BYTES);
        let bound = budget.map(|budget| ByteBound {
            max_bytes: budget.saturating_sub(used),
            read_ahead: self.limits.list_read_ahead(),
        });
        // One row past the limit tells whether there is more.
        let want = request.limit.saturating_add(1);
        let rows = self
            .store
            .list_page(recipient.as_str(), &request.message_box, want, request.offset, bound)
            .await
            .map_err(|e| ApiError::from_store(&e, "listMessages", ApiError::ListFailed))?;
        let fetched = rows.len();
        // A page of large messages is given its whole budget at once: growing by doubling
        // would copy it and briefly hold it twice (untouched capacity is not resident).
        let raw: u64 = rows.iter().map(StoredMessage::raw_len).sum();
        if let Some(budget) = budget.filter(|_| raw >= LIST_RESERVE_FROM && out.capacity() - out.len() < raw as usize) {
            out.reserve_exact((budget.saturating_sub(used) + LIST_ENVELOPE_BYTES) as usize);
        }
        for row in rows {
            if count == request.limit {
                return Ok(ListPage { count: count.into(), has_more: true });
            }
            let before = out.len();
            if count > 0 {
                out.push(b',');
            }
            write_item(out, &row);
            drop(row);
            let item = (out.len() - before - usize::from(count > 0)) as u64;
            if budget.is_some_and(|budget| used + item + 1 > budget) {
                if count == 0 {
                    out.truncate(start);
                    return Err(ApiError::MessageResponseTooLarge);
                }
                out.truncate(before);
                return Ok(ListPage { count: count.into(), has_more: true });
            }
            used += item + 1;
            count += 1;
        }
        // Fewer rows than asked: the box ended (a byte-bounded store stops only past the budget).
        debug_assert!(fetched < want as usize || want == u32::MAX);
        Ok(ListPage { count: count.into(), has_more: false })
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
        let list = |body: Value| ListRequest::from_json(&body, &l);
        assert_eq!(list(json!({})), Err(ApiError::MessageBoxRequired));
        assert_eq!(list(json!({"messageBox": 1})), Err(ApiError::MessageBoxNotString));
        // 1.1.5's errors come before the paging checks.
        assert_eq!(list(json!({"messageBox": 1, "limit": 0})), Err(ApiError::MessageBoxNotString));
        let r = list(json!({"messageBox": "inbox"})).unwrap();
        assert_eq!((r.limit, r.offset, r.paged), (l.list_default, 0, false));
        let r = list(json!({"messageBox": "inbox", "limit": null, "offset": null})).unwrap();
        assert!(!r.paged, "null is not given");
        let r = list(json!({"messageBox": "inbox", "skip": 7})).unwrap();
        assert_eq!((r.limit, r.offset, r.paged), (l.list_default, 7, true));
        let r = list(json!({"messageBox": "inbox", "offset": 3, "skip": 3.0, "limit": 2.0})).unwrap();
        assert_eq!((r.limit, r.offset, r.paged), (2, 3, true));
        let max_limit = Some(l.list_max);
        for bad in [json!(0), json!(1001), json!(1.5), json!("5"), json!(-1), json!(true)] {
            assert_eq!(
                list(json!({"messageBox": "inbox", "limit": bad})),
                Err(ApiError::InvalidListLimit { max: max_limit }),
                "{bad}"
            );
        }
        let max_offset = Some(100_000);
        for bad in [json!(-1), json!(100_001), json!(0.5), json!("0"), json!([])] {
            assert_eq!(
                list(json!({"messageBox": "inbox", "offset": bad})),
                Err(ApiError::InvalidListOffset { max: max_offset }),
                "{bad}"
            );
        }
        assert_eq!(list(json!({"messageBox": "inbox", "offset": 100_000})).unwrap().offset, 100_000);
        assert_eq!(list(json!({"messageBox": "inbox", "offset": 1, "skip": 2})), Err(ApiError::ListOffsetSkipMismatch));
        assert_eq!(
            list(json!({"messageBox": "inbox", "offset": {}, "skip": {}})),
            Err(ApiError::ListOffsetSkipMismatch)
        );
        // The mismatch is checked before the limit.
        assert_eq!(
            list(json!({"messageBox": "inbox", "offset": 1, "skip": 2, "limit": 0})),
            Err(ApiError::ListOffsetSkipMismatch)
        );
        assert_eq!(
            ApiError::InvalidListLimit { max: None }.description(),
            "limit must be an integer between 1 and the JavaScript safe-integer maximum."
        );
        assert_eq!(
            ApiError::InvalidListOffset { max: Some(5) }.description(),
            "offset must be an integer between 0 and 5."
        );
        assert_eq!(
            (ApiError::MessageResponseTooLarge.status(), ApiError::MessageResponseTooLarge.code()),
            (413, "ERR_MESSAGE_RESPONSE_TOO_LARGE")
        );

        // -1 lifts the bounds (up to the JavaScript safe-integer maximum).
        let mut resources = crate::limits::ResourceLimits::default();
        resources.messages.list_max_limit = None;
        resources.messages.list_max_offset = None;
        let open = Limits::from_resources(&resources);
        let r = ListRequest::from_json(
            &json!({"messageBox": "b", "limit": 9_007_199_254_740_991u64, "offset": 9_007_199_254_740_991u64}),
            &open,
        )
        .unwrap();
        assert_eq!((r.limit, r.offset), (u32::MAX, 9_007_199_254_740_991));
        assert_eq!(
            ListRequest::from_json(&json!({"messageBox": "b", "limit": 9_007_199_254_740_992u64}), &open),
            Err(ApiError::InvalidListLimit { max: None })
        );
    }

    #[test]
    fn list_batch_size() {
        use crate::domain::list_batch;
        assert_eq!(list_batch(Some(8 << 20), Some(1 << 20)), 8, "standard");
        assert_eq!(list_batch(Some(4 << 20), Some(256 << 10)), 16, "small");
        assert_eq!(list_batch(Some(1 << 20), Some(4 << 20)), 1);
        assert_eq!(list_batch(Some(1 << 30), Some(1)), 100);
        assert_eq!((list_batch(None, Some(1)), list_batch(Some(1), None)), (1, 1));
        assert_eq!(Limits::default().list_batch, 8);
        assert_eq!(Limits::default().list_read_ahead(), 32, "a MySQL query of a page asks for at most 32 rows");
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
