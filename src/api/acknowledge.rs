//! `POST /acknowledgeMessage`: deletes the caller's messages with the given ids, in any box.

use serde_json::json;

use super::{Api, ApiError, Call, Reply};
use crate::domain::requests::AcknowledgeRequest;

pub async fn handle(api: &Api, call: Call<'_>) -> Result<Reply, ApiError> {
    let request = AcknowledgeRequest::from_json(&call.body, &api.limits)?;
    api.acknowledge(call.identity, &request).await?;
    Ok(Reply::json(200, &json!({"status": "success"})))
}
