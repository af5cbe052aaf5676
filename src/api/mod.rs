//! The nine MessageBox routes, one file per group, with the original's validation order,
//! status codes, error `code`s, `description` strings and JSON key order
//! (`spec/ts-server.md` §3). Handlers take the verified caller identity and the parsed
//! request and return a status and JSON body; the HTTP layer signs and sends it.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::payments::PaymentAcceptor;
use crate::store::Store;

pub mod acknowledge;
pub mod devices;
pub mod js;
pub mod list;
pub mod permissions;
pub mod query;
pub mod send;

pub use query::{Query, QueryValue};

/// A route's answer: status and compact JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply { status, body: serde_json::to_vec(value).expect("JSON values serialise") }
    }

    /// `{"status":"error","code":…,"description":…}`.
    pub fn error(status: u16, code: &str, description: impl Into<String>) -> Reply {
        Reply::json(status, &json!({"status": "error", "code": code, "description": description.into()}))
    }

    /// The body as JSON (tests and logs).
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The business routes (paths relative to `ROUTING_PREFIX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    SendMessage,
    ListMessages,
    AcknowledgeMessage,
    RegisterDevice,
    ListDevices,
    SetPermission,
    GetPermission,
    GetQuote,
    ListPermissions,
}

/// Method, path and route, in the original's registration order.
pub const ROUTES: [(&str, &str, Route); 9] = [
    ("POST", "/sendMessage", Route::SendMessage),
    ("POST", "/listMessages", Route::ListMessages),
    ("POST", "/acknowledgeMessage", Route::AcknowledgeMessage),
    ("POST", "/registerDevice", Route::RegisterDevice),
    ("GET", "/devices", Route::ListDevices),
    ("POST", "/permissions/set", Route::SetPermission),
    ("GET", "/permissions/get", Route::GetPermission),
    ("GET", "/permissions/quote", Route::GetQuote),
    ("GET", "/permissions/list", Route::ListPermissions),
];

impl Route {
    /// Express matching: case-insensitive, an optional trailing slash, `prefix` prepended verbatim.
    pub fn find(method: &str, path: &str, prefix: &str) -> Option<Route> {
        let path = if path.len() > 1 { path.strip_suffix('/').unwrap_or(path) } else { path };
        let rest = strip_prefix_ignore_case(path, prefix)?;
        ROUTES.iter().find(|(m, p, _)| *m == method && rest.eq_ignore_ascii_case(p)).map(|(_, _, r)| *r)
    }
}

fn strip_prefix_ignore_case<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let head = path.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &path[prefix.len()..])
}

/// Where messages sent over HTTP are also delivered live (the socket layer).
pub trait LiveDelivery: Send + Sync + 'static {
    /// Delivers `sendMessage-<room_id>` with `{sender, messageId, body}` to the recipient's connections.
    fn deliver(&self, recipient: &str, room_id: &str, sender: &str, message_id: &str, body: &str);
}

/// No live channel (websockets disabled).
#[derive(Debug, Default)]
pub struct NoLive;

impl LiveDelivery for NoLive {
    fn deliver(&self, _: &str, _: &str, _: &str, _: &str, _: &str) {}
}

/// Push notifications for the `notifications` box; never delays the response.
pub trait Notifier: Send + Sync + 'static {
    fn notify(&self, recipient: &str, message_id: &str);
}

/// Push disabled (`ENABLE_FIREBASE` is not `true`).
#[derive(Debug, Default)]
pub struct NoPush;

impl Notifier for NoPush {
    fn notify(&self, _: &str, _: &str) {}
}

/// Bounds on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Recipients in one `/sendMessage`.
    pub max_recipients: usize,
    /// Characters of a messageBox name (the column is VARCHAR(255)).
    pub max_box_name: usize,
    /// Characters of a messageId (VARCHAR(255)).
    pub max_message_id: usize,
    /// Ids in one `/acknowledgeMessage`.
    pub max_acknowledge: usize,
    /// `/listMessages` page size when the request names none.
    pub list_default: u32,
    /// The largest `/listMessages` page a request may ask for.
    pub list_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recipients: 1000,
            max_box_name: 255,
            max_message_id: 255,
            max_acknowledge: 10_000,
            list_default: 1000,
            list_max: 10_000,
        }
    }
}

/// Everything the routes need; shared by every core.
#[derive(Clone)]
pub struct Api {
    pub store: Store,
    pub payments: Arc<dyn PaymentAcceptor>,
    pub push: Arc<dyn Notifier>,
    pub live: Arc<dyn LiveDelivery>,
    pub limits: Limits,
}

/// One authenticated call.
#[derive(Debug)]
pub struct Call<'a> {
    /// The identity bound to the verified BRC-103 session.
    pub identity: &'a str,
    pub query: Query,
    /// The parsed JSON body (`{}` when there is none or it is not JSON).
    pub body: Value,
}

impl Api {
    pub async fn handle(&self, route: Route, call: Call<'_>) -> Reply {
        match route {
            Route::SendMessage => send::handle(self, call).await,
            Route::ListMessages => list::handle(self, call).await,
            Route::AcknowledgeMessage => acknowledge::handle(self, call).await,
            Route::RegisterDevice => devices::register(self, call).await,
            Route::ListDevices => devices::list(self, call).await,
            Route::SetPermission => permissions::set(self, call).await,
            Route::GetPermission => permissions::get(self, call).await,
            Route::GetQuote => permissions::quote(self, call).await,
            Route::ListPermissions => permissions::list(self, call).await,
        }
    }
}

/// `{"status":"error","code":"ERR_INTERNAL","description":"An internal error has occurred."}`
pub(crate) fn internal() -> Reply {
    Reply::error(500, "ERR_INTERNAL", "An internal error has occurred.")
}

/// Fee → the status word of quotes and permissions.
pub(crate) fn fee_status(fee: i64) -> &'static str {
    match fee {
        -1 => "blocked",
        0 => "always_allow",
        _ => "payment_required",
    }
}

/// The recipient fee a box gets when none is set (the original's "smart default").
pub(crate) fn default_recipient_fee(message_box: &str) -> i64 {
    if message_box == "notifications" {
        10
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn express_style_matching() {
        assert_eq!(Route::find("POST", "/sendMessage", ""), Some(Route::SendMessage));
        assert_eq!(Route::find("POST", "/SENDMESSAGE/", ""), Some(Route::SendMessage));
        assert_eq!(Route::find("GET", "/sendMessage", ""), None);
        assert_eq!(Route::find("GET", "/api/permissions/get", "/api"), Some(Route::GetPermission));
        assert_eq!(Route::find("GET", "/permissions/get", "/api"), None);
        assert_eq!(Route::find("GET", "/devices", ""), Some(Route::ListDevices));
        assert_eq!(Route::find("GET", "/", ""), None);
        assert_eq!(Route::find("GET", "", "/api"), None);
    }
}
