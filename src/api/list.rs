//! `POST /listMessages`: the caller's messages in one box, ordered by arrival
//! (`created_at`, then `messageId`) and paged with optional `limit`/`offset` body fields.

use serde_json::{json, Value};

use super::{js, Api, Call, Reply};
use crate::store::iso8601;

pub async fn handle(api: &Api, call: Call<'_>) -> Reply {
    let message_box = match call.body.get("messageBox") {
        None | Some(Value::Null) => return required(),
        Some(Value::String(s)) if s.is_empty() => return required(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Reply::error(400, "ERR_INVALID_MESSAGEBOX", "MessageBox name must be a string!"),
    };
    let max = api.limits.list_max;
    let limit = match call.body.get("limit") {
        None | Some(Value::Null) => api.limits.list_default,
        Some(v) => match v.as_u64() {
            Some(n) if js::is_integer(v) && (1..=max as u64).contains(&n) => n as u32,
            _ => {
                return Reply::error(400, "ERR_INVALID_LIMIT", format!("limit must be an integer between 1 and {max}."))
            }
        },
    };
    let offset = match call.body.get("offset") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(n) if js::is_integer(v) => n,
            _ => return Reply::error(400, "ERR_INVALID_OFFSET", "offset must be a non-negative integer."),
        },
    };
    match api.store.list_messages(call.identity, &message_box, limit, offset).await {
        Ok(rows) => {
            let messages: Vec<Value> = rows
                .into_iter()
                .map(|m| {
                    json!({
                        "messageId": m.message_id,
                        "body": m.body,
                        "sender": m.sender,
                        "createdAt": iso8601(m.created_at),
                        "updatedAt": iso8601(m.updated_at),
                    })
                })
                .collect();
            Reply::json(200, &json!({"status": "success", "messages": messages}))
        }
        Err(e) => {
            tracing::error!(error = %e, "listMessages failed");
            Reply::error(500, "ERR_INTERNAL_ERROR", "An internal error has occurred while listing messages.")
        }
    }
}

fn required() -> Reply {
    Reply::error(400, "ERR_MESSAGEBOX_REQUIRED", "Please provide the name of a valid MessageBox!")
}
