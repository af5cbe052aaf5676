//! The nine MessageBox routes as HTTP adapters over the [domain](crate::domain), one file per
//! group: each decodes its query or JSON body into the domain's request types, calls the
//! domain, and encodes the answer with the original's JSON key order (`spec/ts-server.md`
//! §3). Handlers take the verified caller identity and return a status and JSON body; the
//! HTTP layer signs and sends it. Errors are [`ApiError`]s, encoded by one `From` impl.

use serde_json::Value;

pub(crate) use crate::domain::js;
use crate::domain::IdentityKey;
pub use crate::domain::{ApiError, Limits, LiveDelivery, NoLive, NoPush, Notifier};

pub mod acknowledge;
pub mod devices;
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
    /// Seconds for a `Retry-After` header (503 while the database is unavailable).
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn json(status: u16, value: &Value) -> Reply {
        Reply { status, body: serde_json::to_vec(value).expect("JSON values serialise"), retry_after: None }
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

/// Everything the routes need; shared by every core.
pub type Api = crate::domain::MessageBox;

/// One authenticated call.
#[derive(Debug)]
pub struct Call<'a> {
    /// The identity bound to the verified BRC-103 session.
    pub identity: &'a IdentityKey,
    pub query: Query,
    /// The parsed JSON body (`{}` when there is none or it is not JSON).
    pub body: Value,
}

/// Runs one business route.
pub async fn handle(api: &Api, route: Route, call: Call<'_>) -> Reply {
    let result = match route {
        Route::SendMessage => send::handle(api, call).await,
        Route::ListMessages => list::handle(api, call).await,
        Route::AcknowledgeMessage => acknowledge::handle(api, call).await,
        Route::RegisterDevice => devices::register(api, call).await,
        Route::ListDevices => devices::list(api, call).await,
        Route::SetPermission => permissions::set(api, call).await,
        Route::GetPermission => permissions::get(api, call).await,
        Route::GetQuote => permissions::quote(api, call).await,
        Route::ListPermissions => permissions::list(api, call).await,
    };
    result.unwrap_or_else(Reply::from)
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Reply {
        Reply { retry_after: e.retry_after(), ..Reply::json(e.status(), &e.to_json()) }
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
