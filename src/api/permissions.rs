//! `/permissions/*`: recipients' fee rules (set, get, list) and senders' quotes. The query
//! strings are read here (Express `qs` semantics); the rules and the fee gate are the domain's.

use serde_json::{json, Map, Value};

use super::{js, Api, ApiError, Call, QueryValue, Reply};
use crate::domain::requests::{parse_quote_recipients, parse_sender, PermissionRule};
use crate::domain::{fee_status, fees};
use crate::store::iso8601;

/// A query parameter that must be one string: `Ok(None)` when absent, `Err` when repeated.
fn single<'a>(call: &'a Call<'_>, name: &'static str) -> Result<Option<&'a str>, ApiError> {
    match call.query.get(name) {
        None => Ok(None),
        Some(QueryValue::One(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::ParameterRepeated(name)),
    }
}

pub async fn set(api: &Api, call: Call<'_>) -> Result<Reply, ApiError> {
    let rule = PermissionRule::from_json(&call.body, &api.limits)?;
    api.set_permission(call.identity, &rule).await?;
    let (who, verb_is, verb_require) = match &rule.sender {
        None => ("Box-wide default for all senders".to_string(), "is", "requires"),
        Some((written, _)) => (format!("Messages from {written}"), "are", "require"),
    };
    let message_box = &rule.message_box;
    let description = match rule.fee {
        -1 => format!("{who} to {message_box} {verb_is} now blocked."),
        0 => format!("{who} to {message_box} {verb_is} now always allowed."),
        n => format!("{who} to {message_box} now {verb_require} {n} satoshis."),
    };
    Ok(Reply::json(200, &json!({"status": "success", "description": description})))
}

pub async fn get(api: &Api, call: Call<'_>) -> Result<Reply, ApiError> {
    let message_box = single(&call, "messageBox")?.ok_or(ApiError::MessageBoxParameterRequired)?;
    let sender = match call.query.get("sender") {
        None => None,
        Some(QueryValue::One(s)) => Some((s.as_str(), parse_sender(s)?)),
        Some(_) => return Err(ApiError::InvalidSenderKey),
    };
    let found = api.permission(call.identity, sender.as_ref().map(|(_, k)| k), message_box).await?;
    let written = sender.map(|(s, _)| s);
    let mut out = Map::new();
    out.insert("status".into(), json!("success"));
    match found {
        Some(p) => {
            let description = match written {
                Some(s) => format!("Permission setting found for sender {s} to {message_box}."),
                None => format!("Box-wide permission setting found for {message_box}."),
            };
            out.insert("description".into(), json!(description));
            out.insert(
                "permission".into(),
                json!({
                    "sender": written,
                    "messageBox": message_box,
                    "recipientFee": p.recipient_fee,
                    "status": fee_status(p.recipient_fee),
                    "createdAt": p.created_at.map(iso8601),
                    "updatedAt": p.updated_at.map(iso8601),
                }),
            );
        }
        None => {
            let description = match written {
                Some(s) => format!("No permission setting found for sender {s} to {message_box}."),
                None => format!("No box-wide permission setting found for {message_box}."),
            };
            out.insert("description".into(), json!(description));
        }
    }
    Ok(Reply::json(200, &Value::Object(out)))
}

pub async fn quote(api: &Api, call: Call<'_>) -> Result<Reply, ApiError> {
    let (Some(recipient), Some(_)) = (call.query.get("recipient"), call.query.get("messageBox")) else {
        return Err(ApiError::QuoteParametersRequired);
    };
    let message_box = single(&call, "messageBox")?.ok_or(ApiError::QuoteParametersRequired)?;
    let written = recipient.to_vec().ok_or(ApiError::InvalidRecipientKeys(vec![0]))?;
    let recipients = parse_quote_recipients(&written)?;
    let quote = fees::quote(&api.store, call.identity, message_box, &recipients).await.map_err(|e| {
        tracing::error!(error = %e, "permissions/quote failed");
        ApiError::Internal
    })?;
    if recipients.len() == 1 {
        return Ok(Reply::json(
            200,
            &json!({
                "status": "success",
                "description": "Message delivery quote generated.",
                "quote": {"deliveryFee": quote.delivery, "recipientFee": quote.recipients[0]},
            }),
        ));
    }
    let mut quotes = Vec::with_capacity(recipients.len());
    let mut blocked = Vec::new();
    let mut recipient_total = 0i64;
    for (r, fee) in written.iter().zip(&quote.recipients) {
        quotes.push(json!({
            "recipient": r,
            "messageBox": message_box,
            "deliveryFee": quote.delivery,
            "recipientFee": fee,
            "status": fee_status(*fee),
        }));
        if *fee == fees::BLOCKED {
            blocked.push(r.clone());
        } else {
            recipient_total += fee;
        }
    }
    let delivery_total = quote.delivery * recipients.len() as i64;
    Ok(Reply::json(
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
    ))
}

pub async fn list(api: &Api, call: Call<'_>) -> Result<Reply, ApiError> {
    let text = |name: &str| call.query.get(name).map(|v| v.as_str().unwrap_or(""));
    let limit = match text("limit") {
        None => Some(100),
        Some(s) => js::parse_int(s),
    };
    let limit = limit.filter(|l| (1..=1000).contains(l)).ok_or(ApiError::InvalidPermissionsLimit)?;
    let offset = match text("offset") {
        None => Some(0),
        Some(s) => js::parse_int(s),
    };
    let offset = offset.filter(|o| *o >= 0).ok_or(ApiError::InvalidPermissionsOffset)?;
    // The original reads `messageBox`; message-box-client 2.1.1 sends `message_box`. Honour both.
    let message_box = match single(&call, "messageBox")? {
        Some(b) => Some(b),
        None => single(&call, "message_box")?,
    };
    let asc = text("createdAtOrder") == Some("asc");
    let (rows, total) = api
        .store
        .list_permissions(call.identity.as_str(), message_box, limit as u32, offset as u64, asc)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "permissions/list failed");
            ApiError::ListPermissionsFailed
        })?;
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
    Ok(Reply::json(200, &json!({"status": "success", "permissions": permissions, "totalCount": total})))
}
