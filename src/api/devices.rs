//! `POST /registerDevice` and `GET /devices`: FCM device registrations.

use serde_json::{json, Value};

use super::{Api, ApiError, Call, Reply};
use crate::domain::requests::device_registration;
use crate::store::iso8601;

pub async fn register(api: &Api, call: Call<'_>) -> Result<Reply, ApiError> {
    let registration = device_registration(call.identity, &call.body)?;
    let id = api.register_device(registration).await?;
    Ok(Reply::json(
        200,
        &json!({
            "status": "success",
            "message": "Device registered successfully for push notifications",
            "deviceId": id,
        }),
    ))
}

pub async fn list(api: &Api, call: Call<'_>) -> Result<Reply, ApiError> {
    let devices: Vec<Value> = api
        .devices(call.identity)
        .await?
        .into_iter()
        .map(|d| {
            json!({
                "id": d.id,
                "deviceId": d.device_id,
                "platform": d.platform,
                "fcmToken": mask(&d.fcm_token),
                "active": u8::from(d.active),
                "createdAt": d.created_at.map(iso8601),
                "updatedAt": d.updated_at.map(iso8601),
                "lastUsed": d.last_used.map(iso8601),
            })
        })
        .collect();
    Ok(Reply::json(200, &json!({"status": "success", "devices": devices})))
}

/// `"..."` + the last 10 characters (JS `slice(-10)` counts UTF-16 units; tokens are ASCII).
fn mask(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(10)..].iter().collect();
    format!("...{tail}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn masking() {
        assert_eq!(super::mask("abcdefghijklmnop"), "...ghijklmnop");
        assert_eq!(super::mask("short"), "...short");
    }
}
