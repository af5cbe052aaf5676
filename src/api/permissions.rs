//! `/permissions/*`: recipients' fee rules (set, get, list) and senders' quotes.

use serde_json::{json, Map, Value};

use super::{default_recipient_fee, fee_status, internal, js, Api, Call, QueryValue, Reply};
use crate::auth::PublicKey;
use crate::store::iso8601;

fn is_key(v: &Value) -> bool {
    matches!(v, Value::String(s) if PublicKey::parse_lenient(s).is_ok())
}

/// A query parameter that must be one string: `Ok(None)` when absent, `Err` when repeated.
fn single<'a>(call: &'a Call<'_>, name: &str) -> Result<Option<&'a str>, Reply> {
    match call.query.get(name) {
        None => Ok(None),
        Some(QueryValue::One(s)) => Ok(Some(s)),
        Some(_) => Err(Reply::error(400, "ERR_INVALID_PARAMETERS", format!("{name} must be given once, as a string."))),
    }
}

pub async fn set(api: &Api, call: Call<'_>) -> Reply {
    let body = &call.body;
    let message_box = body.get("messageBox").filter(|v| !v.is_null());
    let fee = body.get("recipientFee");
    let (Some(message_box), Some(fee @ Value::Number(_))) = (message_box, fee) else {
        return Reply::error(
            400,
            "ERR_INVALID_REQUEST",
            "messageBox (string) and recipientFee (number) are required. sender (string) is optional for box-wide settings.",
        );
    };
    let sender = match body.get("sender") {
        None | Some(Value::Null) => None,
        Some(s) if is_key(s) => s.as_str(),
        Some(_) => return Reply::error(400, "ERR_INVALID_PUBLIC_KEY", "Invalid sender public key format."),
    };
    if !js::is_integer(fee) {
        return Reply::error(
            400,
            "ERR_INVALID_FEE_VALUE",
            "recipientFee must be an integer (-1, 0, or positive number).",
        );
    }
    let fee = match fee.as_i64().and_then(|f| i32::try_from(f).ok()) {
        Some(f) => f as i64,
        None => {
            return Reply::error(
                400,
                "ERR_INVALID_FEE_VALUE",
                "recipientFee must be an integer between -2147483648 and 2147483647.",
            )
        }
    };
    let message_box = match message_box {
        Value::String(s) if !js::is_blank(s) => s.as_str(),
        _ => return Reply::error(400, "ERR_INVALID_MESSAGE_BOX", "messageBox must be a non-empty string."),
    };
    if message_box.chars().count() > api.limits.max_box_name {
        return Reply::error(
            400,
            "ERR_INVALID_MESSAGE_BOX",
            format!("messageBox must be at most {} characters.", api.limits.max_box_name),
        );
    }
    if let Err(e) = api.store.set_permission(call.identity, sender, message_box, fee).await {
        tracing::error!(error = %e, "permissions/set failed");
        return Reply::error(500, "ERR_DATABASE_ERROR", "Failed to update message permission.");
    }
    let (who, verb_is, verb_require) = match sender {
        None => ("Box-wide default for all senders".to_string(), "is", "requires"),
        Some(s) => (format!("Messages from {s}"), "are", "require"),
    };
    let description = match fee {
        -1 => format!("{who} to {message_box} {verb_is} now blocked."),
        0 => format!("{who} to {message_box} {verb_is} now always allowed."),
        n => format!("{who} to {message_box} now {verb_require} {n} satoshis."),
    };
    Reply::json(200, &json!({"status": "success", "description": description}))
}

pub async fn get(api: &Api, call: Call<'_>) -> Reply {
    let message_box = match single(&call, "messageBox") {
        Ok(Some(b)) => b,
        Ok(None) => return Reply::error(400, "ERR_MISSING_PARAMETERS", "messageBox parameter is required."),
        Err(r) => return r,
    };
    let sender = match call.query.get("sender") {
        None => None,
        Some(QueryValue::One(s)) if PublicKey::parse_lenient(s).is_ok() => Some(s.as_str()),
        Some(_) => return Reply::error(400, "ERR_INVALID_PUBLIC_KEY", "Invalid sender public key format."),
    };
    let found = match api.store.get_permission(call.identity, sender, message_box).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "permissions/get failed");
            return internal();
        }
    };
    let mut out = Map::new();
    out.insert("status".into(), json!("success"));
    match found {
        Some(p) => {
            let description = match sender {
                Some(s) => format!("Permission setting found for sender {s} to {message_box}."),
                None => format!("Box-wide permission setting found for {message_box}."),
            };
            out.insert("description".into(), json!(description));
            out.insert(
                "permission".into(),
                json!({
                    "sender": sender,
                    "messageBox": message_box,
                    "recipientFee": p.recipient_fee,
                    "status": fee_status(p.recipient_fee),
                    "createdAt": p.created_at.map(iso8601),
                    "updatedAt": p.updated_at.map(iso8601),
                }),
            );
        }
        None => {
            let description = match sender {
                Some(s) => format!("No permission setting found for sender {s} to {message_box}."),
                None => format!("No box-wide permission setting found for {message_box}."),
            };
            out.insert("description".into(), json!(description));
        }
    }
    Reply::json(200, &Value::Object(out))
}

pub async fn quote(api: &Api, call: Call<'_>) -> Reply {
    let missing = || Reply::error(400, "ERR_MISSING_PARAMETERS", "recipient and messageBox parameters are required.");
    let (Some(recipient), Some(_)) = (call.query.get("recipient"), call.query.get("messageBox")) else {
        return missing();
    };
    let message_box = match single(&call, "messageBox") {
        Ok(Some(b)) => b,
        Ok(None) => return missing(),
        Err(r) => return r,
    };
    let Some(recipients) = recipient.to_vec() else {
        return Reply::error(400, "ERR_INVALID_PUBLIC_KEY", "Invalid recipient public key at index(es): 0.");
    };
    if recipients.is_empty() {
        return Reply::error(400, "ERR_MISSING_PARAMETERS", "At least one recipient is required.");
    }
    if recipients.len() > api.limits.max_recipients {
        return Reply::error(
            400,
            "ERR_TOO_MANY_RECIPIENTS",
            format!(
                "Too many recipients: {}. At most {} recipients per request.",
                recipients.len(),
                api.limits.max_recipients
            ),
        );
    }
    let invalid: Vec<String> = recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| PublicKey::parse_lenient(r).is_err())
        .map(|(i, _)| i.to_string())
        .collect();
    if !invalid.is_empty() {
        return Reply::error(
            400,
            "ERR_INVALID_PUBLIC_KEY",
            format!("Invalid recipient public key at index(es): {}.", invalid.join(", ")),
        );
    }
    let (delivery, fees) = tokio::join!(
        api.store.delivery_fee(message_box),
        api.store.recipient_fees(call.identity, message_box, &recipients, default_recipient_fee(message_box)),
    );
    let (delivery, fees) = match (delivery, fees) {
        (Ok(d), Ok(f)) if f.len() == recipients.len() => (d.unwrap_or(0), f),
        (d, f) => {
            tracing::error!(delivery = ?d.err(), fees = ?f.err(), "permissions/quote failed");
            return internal();
        }
    };
    if recipients.len() == 1 {
        return Reply::json(
            200,
            &json!({
                "status": "success",
                "description": "Message delivery quote generated.",
                "quote": {"deliveryFee": delivery, "recipientFee": fees[0]},
            }),
        );
    }
    let mut quotes = Vec::with_capacity(recipients.len());
    let mut blocked = Vec::new();
    let mut recipient_total = 0i64;
    for (r, fee) in recipients.iter().zip(&fees) {
        quotes.push(json!({
            "recipient": r,
            "messageBox": message_box,
            "deliveryFee": delivery,
            "recipientFee": fee,
            "status": fee_status(*fee),
        }));
        if *fee == -1 {
            blocked.push(r.clone());
        } else {
            recipient_total += fee;
        }
    }
    let delivery_total = delivery * recipients.len() as i64;
    Reply::json(
        200,
        &json!({
            "status": "success",
            "description": format!("Message delivery quotes generated for {} recipients.", recipients.len()),
            "quotesByRecipient": quotes,
            "totals": {
                "deliveryFees": delivery_total,
                "recipientFees": recipient_total,
                "totalForPayableRecipients": delivery_total + recipient_total,
            },
            "blockedRecipients": blocked,
        }),
    )
}

pub async fn list(api: &Api, call: Call<'_>) -> Reply {
    let text = |name: &str| call.query.get(name).map(|v| v.as_str().unwrap_or(""));
    let limit = match text("limit") {
        None => Some(100),
        Some(s) => js::parse_int(s),
    };
    let Some(limit) = limit.filter(|l| (1..=1000).contains(l)) else {
        return Reply::error(400, "ERR_INVALID_LIMIT", "Limit must be a number between 1 and 1000");
    };
    let offset = match text("offset") {
        None => Some(0),
        Some(s) => js::parse_int(s),
    };
    let Some(offset) = offset.filter(|o| *o >= 0) else {
        return Reply::error(400, "ERR_INVALID_OFFSET", "Offset must be a non-negative number");
    };
    // The original reads `messageBox`; message-box-client 2.1.1 sends `message_box`. Honour both.
    let message_box = match single(&call, "messageBox") {
        Ok(Some(b)) => Some(b),
        Ok(None) => match single(&call, "message_box") {
            Ok(b) => b,
            Err(r) => return r,
        },
        Err(r) => return r,
    };
    let asc = text("createdAtOrder") == Some("asc");
    match api.store.list_permissions(call.identity, message_box, limit as u32, offset as u64, asc).await {
        Ok((rows, total)) => {
            let permissions: Vec<Value> = rows
                .into_iter()
                .map(|p| {
                    json!({
                        "sender": p.sender,
                        "messageBox": p.message_box,
                        "recipientFee": p.recipient_fee,
                        "createdAt": p.created_at.map(iso8601),
                        "updatedAt": p.updated_at.map(iso8601),
                    })
                })
                .collect();
            Reply::json(200, &json!({"status": "success", "permissions": permissions, "totalCount": total}))
        }
        Err(e) => {
            tracing::error!(error = %e, "permissions/list failed");
            Reply::error(500, "ERR_LIST_PERMISSIONS_FAILED", "Failed to list permissions")
        }
    }
}
