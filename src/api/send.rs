//! `POST /sendMessage`: the body → [`SendRequest`], [`MessageBox::send`](crate::domain::MessageBox::send),
//! and the original's success answer naming each recipient as the client wrote it.

use serde_json::{json, Value};

use super::{Api, ApiError, Call, Reply};
use crate::domain::send::SendRequest;

pub async fn handle(api: &Api, call: Call<'_>) -> Result<Reply, ApiError> {
    let request = SendRequest::from_json(&call.body, &api.limits)?;
    api.send(call.identity, &request, call.body.get("payment")).await?;
    let results: Vec<Value> = request
        .recipients
        .iter()
        .map(|r| json!({"recipient": r.written, "messageId": request.message_id(&r.key).as_str()}))
        .collect();
    Ok(Reply::json(
        200,
        &json!({
            "status": "success",
            "message": format!("Your message has been sent to {} recipient(s).", results.len()),
            "results": results,
        }),
    ))
}
