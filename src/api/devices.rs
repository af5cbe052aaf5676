//! `POST /registerDevice` and `GET /devices`: FCM device registrations.

use serde_json::{json, Value};

use super::{js, Api, Call, Reply};
use crate::store::{iso8601, DeviceRegistration};

/// The `fcm_token` column is VARCHAR(500).
const MAX_TOKEN: usize = 500;

pub async fn register(api: &Api, call: Call<'_>) -> Reply {
    let body = &call.body;
    let token = match body.get("fcmToken") {
        Some(Value::String(s)) if !js::is_blank(s) => js::trim(s).to_string(),
        _ => return Reply::error(400, "ERR_INVALID_FCM_TOKEN", "fcmToken is required and must be a non-empty string."),
    };
    if token.chars().count() > MAX_TOKEN {
        return Reply::error(400, "ERR_INVALID_FCM_TOKEN", format!("fcmToken must be at most {MAX_TOKEN} characters."));
    }
    let platform = match body.get("platform") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if matches!(p.as_str(), "ios" | "android" | "web") => Some(p.clone()),
        Some(_) => return Reply::error(400, "ERR_INVALID_PLATFORM", "platform must be one of: ios, android, web"),
    };
    // The original calls deviceId.trim() inside its database try block: a non-string
    // deviceId is answered as a database error.
    let device_id = match body.get("deviceId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(js::trim(s).to_string()),
        Some(_) => return db_error("Failed to register device."),
    };
    let reg = DeviceRegistration { identity_key: call.identity.to_string(), fcm_token: token, device_id, platform };
    match api.store.register_device(reg).await {
        Ok(id) => Reply::json(
            200,
            &json!({
                "status": "success",
                "message": "Device registered successfully for push notifications",
                "deviceId": id,
            }),
        ),
        Err(e) => {
            tracing::error!(error = %e, "registerDevice failed");
            db_error("Failed to register device.")
        }
    }
}

pub async fn list(api: &Api, call: Call<'_>) -> Reply {
    match api.store.list_devices(call.identity).await {
        Ok(devices) => {
            let devices: Vec<Value> = devices
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
            Reply::json(200, &json!({"status": "success", "devices": devices}))
        }
        Err(e) => {
            tracing::error!(error = %e, "listDevices failed");
            db_error("Failed to retrieve devices.")
        }
    }
}

/// `"..."` + the last 10 characters (JS `slice(-10)` counts UTF-16 units; tokens are ASCII).
fn mask(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(10)..].iter().collect();
    format!("...{tail}")
}

fn db_error(description: &str) -> Reply {
    Reply::error(500, "ERR_DATABASE_ERROR", description)
}

#[cfg(test)]
mod tests {
    #[test]
    fn masking() {
        assert_eq!(super::mask("abcdefghijklmnop"), "...ghijklmnop");
        assert_eq!(super::mask("short"), "...short");
    }
}
