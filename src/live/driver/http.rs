//! The HTTP and WebSocket glue of the live channel: a hyper request under `/socket.io/` →
//! [`engineio::route`] → the session API of the request's core ([`LiveCore`]); the RFC 6455
//! handshake; taking the upgraded TCP stream out of hyper for the session's task.

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::rc::Rc;
use std::time::Instant;
use tokio::net::TcpStream;

use super::core::{LiveCore, LocalCore};
use crate::live::engineio::{self, ErrorCode, HttpReply, RequestHead, Route, SessionRequest, Transport, WsId};

pub type Body = Full<Bytes>;

fn to_response(r: HttpReply) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() = http::StatusCode::from_u16(r.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}

fn upgrade_refused(code: ErrorCode) -> Response<Body> {
    let mut r = HttpReply::status_only(400);
    r.body = code.message().to_string();
    let mut resp = to_response(r);
    let h = resp.headers_mut();
    h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    resp
}

/// The answer to a request for a session no one here has (the client reconnects): `400`
/// "Session ID unknown" for a polling request, the refused upgrade for a WebSocket one. Also
/// what a forwarded request gets when its owner fails mid-way (`fleet::forward`).
pub(crate) fn unknown_session(upgrade: bool) -> Response<Body> {
    if upgrade {
        upgrade_refused(ErrorCode::UnknownSid)
    } else {
        to_response(ErrorCode::UnknownSid.http_reply())
    }
}

pub(crate) fn is_websocket_upgrade(req: &http::Request<Incoming>) -> bool {
    let h = req.headers();
    req.method() == http::Method::GET
        && h.get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The `101 Switching Protocols` answer, or `None` when the handshake headers are wrong.
fn switching_protocols(req: &http::Request<Incoming>) -> Option<Response<Body>> {
    let h = req.headers();
    let key = h.get("sec-websocket-key")?;
    if h.get("sec-websocket-version").and_then(|v| v.to_str().ok()) != Some("13") {
        return None;
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let rh = r.headers_mut();
    rh.insert(http::header::UPGRADE, HeaderValue::from_static("websocket"));
    rh.insert(http::header::CONNECTION, HeaderValue::from_static("Upgrade"));
    rh.insert("sec-websocket-accept", HeaderValue::from_str(&accept).ok()?);
    rh.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    Some(r)
}

/// After the 101 is written, takes the raw TCP stream out of hyper and gives it to the
/// session's core (possibly this one).
fn adopt_after_upgrade(core: Rc<LocalCore>, req: http::Request<Incoming>, sid: String, ws: WsId) {
    tokio::task::spawn_local(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade did not complete");
                return;
            }
        };
        let parts = match upgraded.downcast::<hyper_util::rt::TokioIo<crate::server::conn::Tracked<TcpStream>>>() {
            Ok(p) => p,
            Err(_) => {
                tracing::error!("upgraded connection is not a TCP stream");
                return;
            }
        };
        // The connection's slot in the HTTP connection caps ends here: the adopted socket is
        // counted by the live limits from now on.
        let (stream, _slot) = parts.io.into_inner().into_parts();
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot detach an upgraded stream");
                return;
            }
        };
        core.adopt(&sid, ws, stream, parts.read_buf).await;
    });
}

/// Answers a request under `/socket.io/` on the core of `live` (`503` without one).
pub async fn handle(live: Option<&LiveCore>, req: http::Request<Incoming>) -> Response<Body> {
    let Some(LiveCore(core)) = live else {
        return to_response(HttpReply::status_only(503));
    };
    let core = core.clone();
    let upgrade = is_websocket_upgrade(&req);
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().as_str().to_string();
    let route = engineio::route(&RequestHead { method: &method, query: &query, websocket_upgrade: upgrade });
    let now = Instant::now();
    match route {
        Err(rej) if rej.upgrade => upgrade_refused(rej.code),
        Err(rej) => to_response(rej.code.http_reply()),
        Ok(Route::Preflight) => {
            let acrh = req.headers().get("access-control-request-headers").and_then(|v| v.to_str().ok());
            to_response(HttpReply::preflight(acrh))
        }
        Ok(Route::Handshake(Transport::Polling)) => to_response(core.open_polling(now)),
        Ok(Route::Handshake(Transport::WebSocket)) => {
            let Some(resp) = switching_protocols(&req) else { return upgrade_refused(ErrorCode::BadRequest) };
            let Some((sid, ws)) = core.open_websocket(now) else { return to_response(super::core::at_capacity()) };
            adopt_after_upgrade(core, req, sid, ws);
            resp
        }
        Ok(Route::Session { sid, request }) => match request {
            SessionRequest::Poll => to_response(core.poll(&sid).await),
            SessionRequest::Post => {
                let content_length = req
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let content_type =
                    req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
                let max = core.hub.config.engine.max_payload;
                if content_length.is_some_and(|n: usize| n > max) {
                    return to_response(HttpReply::status_only(413));
                }
                let body = match Limited::new(req.into_body(), max + 1).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                        return to_response(HttpReply::status_only(413));
                    }
                    Err(_) => return to_response(HttpReply::status_only(400)),
                };
                to_response(core.post(&sid, content_length, content_type, body).await)
            }
            SessionRequest::Upgrade => {
                let Some(resp) = switching_protocols(&req) else { return upgrade_refused(ErrorCode::BadRequest) };
                match core.upgrade(&sid).await {
                    Some(Ok(ws)) => {
                        adopt_after_upgrade(core, req, sid, ws);
                        resp
                    }
                    Some(Err(_)) => upgrade_refused(ErrorCode::BadRequest),
                    None => upgrade_refused(ErrorCode::UnknownSid),
                }
            }
            SessionRequest::OtherMethod => to_response(HttpReply::status_only(500)),
            SessionRequest::Invalid(rej) if rej.upgrade => upgrade_refused(rej.code),
            SessionRequest::Invalid(rej) => to_response(rej.code.http_reply()),
        },
    }
}
