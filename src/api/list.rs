//! `POST /listMessages`: the caller's messages in one box, ordered by arrival
//! (`created_at`, then `messageId`) and paged with optional `limit`/`offset` body fields.

use serde_json::{json, Value};

use super::{Api, ApiError, Call, Reply};
use crate::domain::requests::ListRequest;
use crate::store::iso8601;

pub async fn handle(api: &Api, call: Call<'_>) -> Result<Reply, ApiError> {
    let request = ListRequest::from_json(&call.body, &api.limits)?;
    let messages: Vec<Value> = api
        .list(call.identity, &request)
        .await?
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
    Ok(Reply::json(200, &json!({"status": "success", "messages": messages})))
}
