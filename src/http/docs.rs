//! The public API description: `GET /openapi.json` (OpenAPI 3.0, generated from the route
//! table so it cannot drift) and a self-contained HTML page at `/docs/` that renders it.

use serde_json::{json, Map, Value};

use crate::api::{Route, ROUTES};

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["status", "code", "description"],
        "properties": {
            "status": {"type": "string", "enum": ["error"]},
            "code": {"type": "string"},
            "description": {"type": "string"}
        }
    })
}

fn timestamps() -> Value {
    json!({"type": "string", "format": "date-time", "nullable": true})
}

/// Summary, request (body schema or query parameters) and success schema of a route.
fn describe(route: Route) -> (&'static str, Option<Value>, Vec<Value>, Value) {
    let string = json!({"type": "string"});
    let key = json!({"type": "string", "description": "compressed secp256k1 public key, hex"});
    let q = |name: &str, required: bool, schema: Value, d: &str| json!({"name": name, "in": "query", "required": required, "schema": schema, "description": d});
    match route {
        Route::SendMessage => (
            "Send a message to one or more recipients (a messageId per recipient)",
            Some(json!({
                "type": "object",
                "required": ["message"],
                "properties": {
                    "message": {
                        "type": "object",
                        "required": ["messageBox", "body", "messageId"],
                        "properties": {
                            "recipient": {"oneOf": [key.clone(), {"type": "array", "items": key.clone()}]},
                            "recipients": {"type": "array", "items": key.clone()},
                            "messageBox": string.clone(),
                            "messageId": {"oneOf": [string.clone(), {"type": "array", "items": string.clone()}]},
                            "body": {"oneOf": [string.clone(), {"type": "object"}, {"type": "array"}]}
                        }
                    },
                    "payment": {"type": "object", "description": "required when a delivery or recipient fee applies: {tx (AtomicBEEF as a byte array), outputs, description?}; with a delivery fee, outputs[0] is the BRC-29 'wallet payment' to the server, checked before the server's wallet takes it (400 ERR_INVALID_PAYMENT / ERR_INSUFFICIENT_PAYMENT) and accepted once (409 ERR_PAYMENT_REPLAYED)"}
                }
            })),
            vec![],
            json!({"type": "object", "properties": {
                "status": {"type": "string"}, "message": string.clone(),
                "results": {"type": "array", "items": {"type": "object", "properties": {"recipient": key.clone(), "messageId": string.clone()}}}
            }}),
        ),
        Route::ListMessages => (
            "List the caller's messages in a box, oldest first",
            Some(json!({
                "type": "object",
                "required": ["messageBox"],
                "properties": {
                    "messageBox": string.clone(),
                    "limit": {"type": "integer", "minimum": 1, "description": "page size (server default and maximum are configurable)"},
                    "offset": {"type": "integer", "minimum": 0}
                }
            })),
            vec![],
            json!({"type": "object", "properties": {
                "status": string.clone(),
                "messages": {"type": "array", "items": {"type": "object", "properties": {
                    "messageId": string.clone(), "body": string.clone(), "sender": key.clone(),
                    "createdAt": timestamps(), "updatedAt": timestamps()
                }}}
            }}),
        ),
        Route::AcknowledgeMessage => (
            "Delete the caller's messages by id",
            Some(
                json!({"type": "object", "required": ["messageIds"], "properties": {"messageIds": {"type": "array", "items": string.clone()}}}),
            ),
            vec![],
            json!({"type": "object", "properties": {"status": string.clone()}}),
        ),
        Route::RegisterDevice => (
            "Register an FCM token for push notifications",
            Some(json!({"type": "object", "required": ["fcmToken"], "properties": {
                "fcmToken": string.clone(), "deviceId": string.clone(),
                "platform": {"type": "string", "enum": ["ios", "android", "web"]}
            }})),
            vec![],
            json!({"type": "object", "properties": {"status": string.clone(), "message": string.clone(), "deviceId": {"type": "integer"}}}),
        ),
        Route::ListDevices => (
            "List the caller's registered devices (tokens masked)",
            None,
            vec![],
            json!({"type": "object", "properties": {"status": string.clone(), "devices": {"type": "array", "items": {"type": "object"}}}}),
        ),
        Route::SetPermission => (
            "Set the fee a sender (or every sender) pays to reach one of the caller's boxes (-1 blocks)",
            Some(json!({"type": "object", "required": ["messageBox", "recipientFee"], "properties": {
                "sender": key.clone(), "messageBox": string.clone(), "recipientFee": {"type": "integer"}
            }})),
            vec![],
            json!({"type": "object", "properties": {"status": string.clone(), "description": string.clone()}}),
        ),
        Route::GetPermission => (
            "Read one of the caller's permission rules",
            None,
            vec![
                q("messageBox", true, string.clone(), "box name"),
                q("sender", false, key.clone(), "omit for the box-wide rule"),
            ],
            json!({"type": "object", "properties": {"status": string.clone(), "description": string.clone(), "permission": {"type": "object"}}}),
        ),
        Route::GetQuote => (
            "Quote the delivery and recipient fees for sending to one or more recipients",
            None,
            vec![
                q("recipient", true, json!({"type": "array", "items": key.clone()}), "repeat for several recipients"),
                q("messageBox", true, string.clone(), "box name"),
            ],
            json!({"type": "object", "properties": {"status": string.clone(), "quote": {"type": "object"}, "quotesByRecipient": {"type": "array"}, "totals": {"type": "object"}}}),
        ),
        Route::ListPermissions => (
            "List the caller's permission rules",
            None,
            vec![
                q("messageBox", false, string.clone(), "only this box (message_box is accepted too)"),
                q("limit", false, json!({"type": "integer", "minimum": 1, "maximum": 1000}), "default 100"),
                q("offset", false, json!({"type": "integer", "minimum": 0}), "default 0"),
                q("createdAtOrder", false, json!({"type": "string", "enum": ["asc", "desc"]}), "default desc"),
            ],
            json!({"type": "object", "properties": {"status": string.clone(), "permissions": {"type": "array"}, "totalCount": {"type": "integer"}}}),
        ),
    }
}

/// The OpenAPI document for a server mounted under `prefix`.
pub fn openapi(prefix: &str) -> Value {
    let mut paths = Map::new();
    for (method, path, route) in ROUTES {
        let (summary, body, params, ok) = describe(route);
        let mut op = json!({
            "summary": summary,
            "security": [{"BRC104": []}],
            "parameters": params,
            "responses": {
                "200": {"description": "success (signed)", "content": {"application/json": {"schema": ok}}},
                "400": {"description": "invalid request (signed)", "content": {"application/json": {"schema": error_schema()}}},
                "401": {"description": "mutual authentication failed (unsigned)", "content": {"application/json": {"schema": error_schema()}}},
                "403": {"description": "delivery blocked by a recipient (signed)", "content": {"application/json": {"schema": error_schema()}}},
                "500": {"description": "internal error (signed)", "content": {"application/json": {"schema": error_schema()}}}
            }
        });
        if let Some(schema) = body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        let entry = paths.entry(format!("{prefix}{path}")).or_insert_with(|| json!({}));
        entry[method.to_ascii_lowercase()] = op;
    }
    paths.insert(
        "/.well-known/auth".into(),
        json!({"post": {
            "summary": "BRC-103 handshake (initialRequest → initialResponse)",
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "initialResponse AuthMessage"}, "400": {"description": "malformed AuthMessage"}}
        }}),
    );
    json!({
        "openapi": "3.0.0",
        "info": {
            "title": "MessageBox Server API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Identity-addressed store-and-forward messaging. Every business route requires BRC-103/104 mutual authentication (x-bsv-auth-* headers) and returns a signed response."
        },
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {"BRC104": {"type": "apiKey", "in": "header", "name": "x-bsv-auth-signature", "description": "BRC-104: x-bsv-auth-version, -identity-key, -nonce, -your-nonce, -signature, -request-id"}}},
        "paths": paths,
        "tags": []
    })
}

/// A page that renders `/openapi.json` without any external asset.
pub const HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MessageBox Server API</title>
<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{margin-top:2rem}code{background:#f3f3f3;padding:0 .3rem}.op{border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}
.m{font-weight:bold;text-transform:uppercase;margin-right:.5rem}pre{background:#f7f7f7;padding:.5rem;overflow:auto}</style></head>
<body><h1>MessageBox Server API</h1><p id="d"></p><div id="ops">Loading <code>/openapi.json</code>…</div>
<script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
  document.getElementById('d').textContent=doc.info.description;
  const ops=document.getElementById('ops'); ops.textContent='';
  for(const [path,methods] of Object.entries(doc.paths)){
    for(const [m,op] of Object.entries(methods)){
      const div=document.createElement('div'); div.className='op';
      const h=document.createElement('h3'); h.innerHTML='<span class="m"></span><code></code>';
      h.querySelector('.m').textContent=m; h.querySelector('code').textContent=path; div.appendChild(h);
      const p=document.createElement('p'); p.textContent=op.summary; div.appendChild(p);
      const pre=document.createElement('pre');
      pre.textContent=JSON.stringify({parameters:op.parameters,requestBody:op.requestBody,responses:op.responses},null,2);
      div.appendChild(pre); ops.appendChild(div);
    }
  }
});
</script></body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_method() {
        let doc = openapi("/api");
        for (method, path, _) in ROUTES {
            let op = &doc["paths"][format!("/api{path}")][method.to_ascii_lowercase()];
            assert!(op.is_object(), "{method} {path} missing");
            assert!(op["summary"].is_string());
            if method == "POST" {
                assert!(op["requestBody"].is_object(), "{path} has a body");
            }
        }
        assert_eq!(doc["paths"].as_object().unwrap().len(), ROUTES.len() + 1);
        assert!(doc["paths"]["/.well-known/auth"]["post"].is_object());
        assert_eq!(doc["openapi"], "3.0.0");
    }
}
