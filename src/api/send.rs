//! `POST /sendMessage`: validation in the original's order, the permission and fee gate
//! (blocked → 403, payment required → the original's 400 codes, the delivery fee
//! internalized through the payment interface), storage of one row per recipient in one
//! group-committed batch, push for `notifications`, and live delivery.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::{default_recipient_fee, internal, js, Api, Call, Reply};
use crate::auth::PublicKey;
use crate::payments::Internalize;
use crate::store::{InsertOutcome, NewMessage};

/// A validated send, before the fee gate.
#[derive(Debug, Clone, PartialEq)]
pub struct Send {
    /// Trimmed box name.
    pub box_type: String,
    /// The message body as received (a string or any JSON object/array).
    pub body: Value,
    /// Trimmed recipients in request order, duplicates included.
    pub recipients: Vec<String>,
    /// messageId per recipient (a duplicate recipient keeps the last id), stored untrimmed.
    pub message_ids: HashMap<String, String>,
}

/// Validates the request body exactly as the original does, plus our limits.
pub fn validate(api: &Api, body: &Value) -> Result<Send, Reply> {
    let bad = |code: &str, d: String| Err(Reply::error(400, code, d));
    let message = match body.get("message") {
        Some(m) if !m.is_null() => m,
        _ => return bad("ERR_MESSAGE_REQUIRED", "Please provide a valid message to send!".into()),
    };
    let box_type = match message.get("messageBox") {
        Some(Value::String(s)) if !js::is_blank(s) => js::trim(s).to_string(),
        _ => return bad("ERR_INVALID_MESSAGEBOX", "Invalid message box.".into()),
    };
    if box_type.chars().count() > api.limits.max_box_name {
        return bad(
            "ERR_INVALID_MESSAGEBOX",
            format!("Invalid message box: names are at most {} characters.", api.limits.max_box_name),
        );
    }
    let msg_body = match message.get("body") {
        Some(Value::String(s)) if !js::is_blank(s) => Value::String(s.clone()),
        Some(v) if js::is_object_like(v) => v.clone(),
        _ => return bad("ERR_INVALID_MESSAGE_BODY", "Invalid message body.".into()),
    };
    let raw_recipients = match message.get("recipients").filter(|v| !v.is_null()) {
        Some(v) => v,
        None => match message.get("recipient").filter(|v| !v.is_null()) {
            Some(v) => v,
            None => {
                return bad(
                    "ERR_RECIPIENT_REQUIRED",
                    "Missing recipient(s). Provide \"recipient\" or \"recipients\".".into(),
                )
            }
        },
    };
    let recipients: Vec<&Value> = as_list(raw_recipients);
    let ids: Vec<&Value> = match message.get("messageId").filter(|v| !v.is_null()) {
        Some(v) => as_list(v),
        None => return bad("ERR_MESSAGEID_REQUIRED", "Missing messageId.".into()),
    };
    let (r, m) = (recipients.len(), ids.len());
    if r > 1 && m == 1 {
        return bad(
            "ERR_MESSAGEID_COUNT_MISMATCH",
            format!("Provided 1 messageId for {r} recipients. Provide one messageId per recipient (same order)."),
        );
    }
    if m != r {
        return bad("ERR_MESSAGEID_COUNT_MISMATCH", format!("Recipients ({r}) and messageId count ({m}) must match."));
    }
    if r > api.limits.max_recipients {
        return bad(
            "ERR_TOO_MANY_RECIPIENTS",
            format!("Too many recipients: {r}. At most {} recipients per request.", api.limits.max_recipients),
        );
    }
    let mut message_id_strings = Vec::with_capacity(m);
    for id in &ids {
        match id {
            Value::String(s) if !js::is_blank(s) => message_id_strings.push(s.clone()),
            _ => return bad("ERR_INVALID_MESSAGEID", "Each messageId must be a non-empty string.".into()),
        }
    }
    if message_id_strings.iter().any(|s| s.chars().count() > api.limits.max_message_id) {
        return bad(
            "ERR_INVALID_MESSAGEID",
            format!("Each messageId must be a non-empty string of at most {} characters.", api.limits.max_message_id),
        );
    }
    let mut trimmed = Vec::with_capacity(r);
    let mut message_ids = HashMap::with_capacity(r);
    for (raw, id) in recipients.iter().zip(message_id_strings) {
        let t = js::trim(&js::string(raw)).to_string();
        if PublicKey::parse_lenient(&t).is_err() {
            return bad("ERR_INVALID_RECIPIENT_KEY", format!("Invalid recipient key: {t}"));
        }
        message_ids.insert(t.clone(), id);
        trimmed.push(t);
    }
    Ok(Send { box_type, body: msg_body, recipients: trimmed, message_ids })
}

fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    }
}

/// JavaScript truthiness of a JSON value.
fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    }
}

pub async fn handle(api: &Api, call: Call<'_>) -> Reply {
    let send = match validate(api, &call.body) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let sender = call.identity;
    let (delivery, fees) = tokio::join!(
        api.store.delivery_fee(&send.box_type),
        api.store.recipient_fees(sender, &send.box_type, &send.recipients, default_recipient_fee(&send.box_type)),
    );
    let (delivery, fees) = match (delivery, fees) {
        (Ok(d), Ok(f)) if f.len() == send.recipients.len() => (d.unwrap_or(0), f),
        (d, f) => {
            tracing::error!(delivery = ?d.err(), fees = ?f.err(), "sendMessage: fee lookup failed");
            return internal();
        }
    };

    let blocked: Vec<&String> = send.recipients.iter().zip(&fees).filter(|(_, f)| **f == -1).map(|(r, _)| r).collect();
    if !blocked.is_empty() {
        let list = blocked.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        return Reply::json(
            403,
            &json!({
                "status": "error",
                "code": "ERR_DELIVERY_BLOCKED",
                "description": format!("Blocked recipients: {list}"),
                "blockedRecipients": blocked,
            }),
        );
    }

    let payment = call.body.get("payment");
    let mut outputs_for: HashMap<String, Vec<Value>> = HashMap::new();
    if delivery > 0 || fees.iter().any(|f| *f > 0) {
        let outputs = match (truthy(payment.and_then(|p| p.get("tx"))), payment.and_then(|p| p.get("outputs"))) {
            (true, Some(Value::Array(o))) => o,
            _ => {
                return Reply::error(
                    400,
                    "ERR_MISSING_PAYMENT_TX",
                    "Payment transaction data is required for payable delivery.",
                )
            }
        };
        let payment = payment.expect("checked above");
        if delivery > 0 {
            let Some(first) = outputs.first() else {
                return Reply::error(
                    400,
                    "ERR_MISSING_DELIVERY_OUTPUT",
                    "Delivery fee required but no outputs were provided.",
                );
            };
            let description = match payment.get("description") {
                None | Some(Value::Null) => "MessageBox delivery payment (batch)".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => js::string(other),
            };
            let args = Internalize { tx: payment["tx"].clone(), outputs: vec![first.clone()], description };
            match api.payments.internalize(args).await {
                Ok(true) => {}
                Ok(false) => {
                    return Reply::error(400, "ERR_INSUFFICIENT_PAYMENT", "Payment was not accepted by the server.")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sendMessage: delivery payment not internalized");
                    return Reply::error(500, "ERR_INTERNALIZE_FAILED", format!("Failed to internalize payment: {e}"));
                }
            }
        }
        let recipient_side = &outputs[if delivery > 0 { 1 } else { 0 }..];
        let fee_recipients: Vec<&String> =
            send.recipients.iter().zip(&fees).filter(|(_, f)| **f > 0).map(|(r, _)| r).collect();
        match map_outputs(recipient_side, &fee_recipients) {
            Ok(map) => outputs_for = map,
            Err(reply) => return reply,
        }
    }

    let messages: Vec<NewMessage> = send
        .recipients
        .iter()
        .map(|r| {
            let mut envelope = Map::new();
            envelope.insert("message".into(), send.body.clone());
            if let (Some(outs), Some(Value::Object(p))) = (outputs_for.get(r), payment) {
                let mut p = p.clone();
                p.insert("outputs".into(), Value::Array(outs.clone()));
                envelope.insert("payment".into(), Value::Object(p));
            }
            NewMessage {
                message_id: send.message_ids[r].clone(),
                recipient: r.clone(),
                box_type: send.box_type.clone(),
                sender: sender.to_string(),
                body: Value::Object(envelope).to_string(),
            }
        })
        .collect();
    let outcomes = match api.store.insert_messages(messages).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "sendMessage: storing failed");
            return internal();
        }
    };

    let live_body = match &send.body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut delivered = HashSet::new();
    for (r, outcome) in send.recipients.iter().zip(&outcomes) {
        let id = &send.message_ids[r];
        if send.box_type == "notifications" {
            api.push.notify(r, id);
        }
        if *outcome == InsertOutcome::Inserted && delivered.insert(r) {
            api.live.deliver(r, &format!("{r}-{}", send.box_type), sender, id, &live_body);
        }
    }
    let results: Vec<Value> =
        send.recipients.iter().map(|r| json!({"recipient": r, "messageId": send.message_ids[r]})).collect();
    Reply::json(
        200,
        &json!({
            "status": "success",
            "message": format!("Your message has been sent to {} recipient(s).", results.len()),
            "results": results,
        }),
    )
}

/// Assigns recipient-side outputs to the recipients that charge a fee: outputs tagged
/// with `customInstructions.recipientIdentityKey` go to that recipient; the others are
/// assigned in order, as the original does.
fn map_outputs(outputs: &[Value], fee_recipients: &[&String]) -> Result<HashMap<String, Vec<Value>>, Reply> {
    let mut tagged: HashMap<String, Vec<Value>> = HashMap::new();
    let mut used_indexes: HashSet<String> = HashSet::new();
    for out in outputs {
        let raw = [
            out.get("insertionRemittance").and_then(|r| r.get("customInstructions")),
            out.get("paymentRemittance").and_then(|r| r.get("customInstructions")),
            out.get("customInstructions"),
        ]
        .into_iter()
        .flatten()
        .find(|v| !v.is_null());
        if !truthy(raw) {
            continue;
        }
        let instr = match raw.expect("truthy") {
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(v) => v,
                Err(_) => continue,
            },
            other => other.clone(),
        };
        if let Some(Value::String(key)) = instr.get("recipientIdentityKey") {
            if !js::is_blank(key) {
                tagged.entry(key.clone()).or_default().push(out.clone());
                if let Some(idx @ Value::Number(_)) = out.get("outputIndex") {
                    used_indexes.insert(idx.to_string());
                }
            }
        }
    }
    let mut map: HashMap<String, Vec<Value>> = HashMap::new();
    if tagged.is_empty() {
        if outputs.len() < fee_recipients.len() {
            return Err(Reply::error(
                400,
                "ERR_INSUFFICIENT_OUTPUTS",
                format!(
                    "Expected at least {} recipient output(s) but received {}",
                    fee_recipients.len(),
                    outputs.len()
                ),
            ));
        }
        for (r, out) in fee_recipients.iter().zip(outputs) {
            map.entry((*r).clone()).or_default().push(out.clone());
        }
        return Ok(map);
    }
    for r in fee_recipients {
        if let Some(t) = tagged.get(*r) {
            map.insert((*r).clone(), t.clone());
        }
    }
    let unmapped: Vec<&&String> = fee_recipients.iter().filter(|r| !map.contains_key(**r)).collect();
    if !unmapped.is_empty() {
        let remaining: Vec<&Value> = outputs
            .iter()
            .filter(|o| match o.get("outputIndex") {
                Some(idx @ Value::Number(_)) => !used_indexes.contains(&idx.to_string()),
                _ => true,
            })
            .collect();
        if remaining.len() < unmapped.len() {
            return Err(Reply::error(
                400,
                "ERR_INSUFFICIENT_OUTPUTS",
                format!(
                    "Expected at least {} additional recipient output(s) but only {} remain",
                    unmapped.len(),
                    remaining.len()
                ),
            ));
        }
        for (r, out) in unmapped.iter().zip(remaining) {
            map.entry((**r).clone()).or_default().push(out.clone());
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> String {
        crate::auth::PrivateKey::from_bytes(&[n; 32]).unwrap().public_key().to_hex()
    }

    #[test]
    fn outputs_tagged_and_positional() {
        let (a, b) = (key(1), key(2));
        let outs = vec![
            json!({"outputIndex": 1, "paymentRemittance": {"customInstructions": format!("{{\"recipientIdentityKey\":\"{a}\"}}")}}),
            json!({"outputIndex": 2}),
        ];
        // Recipients [B, A]: A gets its tagged output 1, B the remaining output 2.
        let m = map_outputs(&outs, &[&b, &a]).unwrap();
        assert_eq!(m[&a], vec![outs[0].clone()]);
        assert_eq!(m[&b], vec![outs[1].clone()]);
        let m = map_outputs(&outs[1..], &[&b]).unwrap();
        assert_eq!(m[&b], vec![outs[1].clone()]);
        let err = map_outputs(&outs[1..], &[&a, &b]).unwrap_err();
        assert_eq!(err.value()["code"], "ERR_INSUFFICIENT_OUTPUTS");
        assert_eq!(err.value()["description"], "Expected at least 2 recipient output(s) but received 1");
        let err = map_outputs(&outs[..1], &[&a, &b]).unwrap_err();
        assert_eq!(err.value()["description"], "Expected at least 1 additional recipient output(s) but only 0 remain");
    }

    #[test]
    fn truthiness() {
        assert!(!truthy(None));
        assert!(!truthy(Some(&json!(0))));
        assert!(!truthy(Some(&json!(""))));
        assert!(truthy(Some(&json!([]))));
        assert!(truthy(Some(&json!("x"))));
    }
}
