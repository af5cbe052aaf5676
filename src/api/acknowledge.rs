//! `POST /acknowledgeMessage`: deletes the caller's messages with the given ids, in any box.

use serde_json::{json, Value};

use super::{Api, Call, Reply};

pub async fn handle(api: &Api, call: Call<'_>) -> Reply {
    let ids = match call.body.get("messageIds") {
        None | Some(Value::Null) => return required(),
        Some(Value::Array(a)) if a.is_empty() => return required(),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect::<Vec<_>>()
        }
        Some(_) => {
            return Reply::error(400, "ERR_INVALID_MESSAGE_ID", "Message IDs must be formatted as an array of strings!")
        }
    };
    if ids.len() > api.limits.max_acknowledge {
        return Reply::error(
            400,
            "ERR_INVALID_MESSAGE_ID",
            format!("At most {} message IDs can be acknowledged at once.", api.limits.max_acknowledge),
        );
    }
    match api.store.acknowledge(call.identity, &ids).await {
        Ok(0) => Reply::error(400, "ERR_INVALID_ACKNOWLEDGMENT", "Message not found!"),
        Ok(_) => Reply::json(200, &json!({"status": "success"})),
        Err(e) => {
            tracing::error!(error = %e, "acknowledgeMessage failed");
            Reply::error(500, "ERR_INTERNAL_ERROR", "An internal error has occurred while acknowledging the message")
        }
    }
}

fn required() -> Reply {
    Reply::error(400, "ERR_MESSAGE_ID_REQUIRED", "Please provide the ID of the message(s) to acknowledge!")
}
