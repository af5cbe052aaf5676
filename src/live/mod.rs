//! The live channel: Socket.IO ("authsocket") as `@bsv/authsocket-client` 2.0.2 and
//! `@bsv/message-box-client` 2.1.1 speak it — Engine.IO 4, Socket.IO 5, BRC-103 inside the
//! `authMessage` event, and the MessageBox events (spec `authsocket.md`).
//!
//! Everything here is a sans-I/O protocol core in the manner of `quinn-proto`: it takes bytes
//! and time and returns bytes, events and commands, never touches a socket, a runtime or the
//! clock, and is unit-tested that way. A thin per-core driver wires it to sockets.
//!
//! # What each part owns
//!
//! - [`engineio`]: packets and polling payloads, the open packet, request routing with the
//!   engine.io error replies, session ids that name their core, and [`EngineSession`] (polling
//!   GET/POST rules, the WebSocket upgrade with its `noop` nudges, heartbeat, close, the
//!   session-owned write buffer and its cap).
//! - [`socketio`]: the Socket.IO packet codec (namespace `/`, events, acks ignored, binary
//!   refused) and the packets the server writes.
//! - [`authsocket`]: BRC-103 for one connection ([`AuthTunnel`]): client- and server-initiated
//!   handshakes, verified `general` messages against the process-wide session table, the
//!   `{"eventName","data"}` envelope, the connection's identity.
//! - [`events`]: the MessageBox events for one connection ([`MessageBoxEvents`]).
//! - [`connection`]: [`ConnectionCore`], all of the above for one Engine.IO session.
//!
//! # Driver contract
//!
//! One [`ConnectionCore`] per Engine.IO session, living on the core whose index its sid
//! carries. For every request under `/socket.io/`:
//!
//! 1. [`engineio::route`] on the request head.
//!    - `Err(rejected)`: write [`ErrorCode::http_reply`](engineio::ErrorCode::http_reply), or
//!      for an upgrade [`ErrorCode::upgrade_reply`](engineio::ErrorCode::upgrade_reply) on the
//!      raw socket, then close it.
//!    - [`Route::Preflight`]: answer [`HttpReply::preflight`].
//!    - [`Route::Handshake`]: [`ConnectionCore::accept_polling`] (write the returned reply) or,
//!      after completing the WebSocket handshake, [`ConnectionCore::accept_websocket`] (then
//!      [`ConnectionCore::ws_adopted`] once the stream is held). Keep the core under
//!      [`ConnectionCore::sid`].
//!    - [`Route::Session`]: if [`engineio::sid_core`] names another core, hand the stream (and
//!      the bytes already read) to that core. There, an unknown sid gets
//!      [`ErrorCode::UnknownSid`](engineio::ErrorCode::UnknownSid); otherwise dispatch on
//!      [`SessionRequest`]: `Poll` → [`ConnectionCore::handle_poll`] (answer now, or hold the
//!      request until a [`Transmit::PollResponse`]); `Post` → [`ConnectionCore::begin_post`]
//!      then, with the body, [`ConnectionCore::finish_post`]; `Upgrade` →
//!      [`ConnectionCore::begin_upgrade`] (on `Ok` complete the handshake with no extensions,
//!      then [`ConnectionCore::ws_adopted`] once the stream is held; on `Err` close it); `OtherMethod` → `500`; `Invalid(r)` → as for a rejected route.
//! 2. WebSocket messages: [`ConnectionCore::ws_text`] / [`ConnectionCore::ws_binary`] with the
//!    [`WsId`] of that socket (reassemble fragments, answer pings, send only text frames); a
//!    message the codec refuses as over `max_payload` (+ a little):
//!    [`ConnectionCore::ws_too_big`]; its close or failure (the stream dropped):
//!    [`ConnectionCore::ws_closed`]. Frames the core addressed to a WebSocket before
//!    [`ConnectionCore::ws_adopted`] are kept by the core until then. A held GET whose client went away:
//!    [`ConnectionCore::poll_aborted`]; a POST body that never completed:
//!    [`ConnectionCore::post_aborted`].
//! 3. After every input, and whenever a WebSocket can take more bytes, pull
//!    [`ConnectionCore::poll_transmit`] until `None`: a [`Transmit::PollResponse`] answers the
//!    held GET, [`Transmit::WsText`] / [`Transmit::WsClose`] go to that WebSocket. Every
//!    [`HttpReply`] has its headers except `Content-Length`.
//! 4. After every input, run [`ConnectionCore::poll_command`] until `None`:
//!    [`Command::Bind`] / [`Command::Unbind`] maintain the identity registry;
//!    [`Command::Store`] goes to the store and its outcome comes back through
//!    [`ConnectionCore::store_outcome`] (the core issues the next one only then, so stores run
//!    one at a time, in order); [`Command::Deliver`] goes to every connection bound to the
//!    recipient, on every core ([`ConnectionCore::deliver`]), through the one delivery seam
//!    ([`driver::Fanout`]);
//!    [`Command::Closed`] means drain the transmits and drop the core.
//! 5. Timers: sleep until [`ConnectionCore::next_timeout`], then
//!    [`ConnectionCore::handle_timeout`] (re-read the deadline after every input).
//! 6. Shutdown: [`ConnectionCore::close`] on every core, keep pumping until `Closed`.
//!
//! What stays with the driver: TCP, HTTP/1.1 parsing and writing, the RFC 6455 handshake and
//! frame codec, moving sessions' requests to their core, the identity registry and cross-core
//! fan-out, the store (through the domain's permission/fee gate,
//! [`store_live`](crate::domain::send::store_live)), seeding the id generators
//! ([`ConnectionShared`]) and logging [`CloseCause`]s.

pub mod authsocket;
pub mod connection;
pub mod driver;
pub mod engineio;
pub mod events;
pub mod socketio;
#[cfg(test)]
mod testutil;

use std::time::Duration;

pub use authsocket::{AppEvent, AuthTunnel, Inbound, TunnelError};
pub use connection::{CloseCause, Command, ConnectionCore, ConnectionShared};
pub use engineio::{
    route, sid_core, CloseReason, EngineConfig, EngineEvent, EngineSession, HttpReply, PollStart, Rejected,
    RequestHead, Route, SessionRequest, Transmit, Transport, UpgradeRefused, WsId,
};
pub use events::{Delivery, EventLimits, MessageBoxEvents, StoreOutcome, StoreRequest, StoreToken};

/// Settings of the live channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveConfig {
    /// Engine.IO timing, payload and buffer limits.
    pub engine: EngineConfig,
    /// A connection that CONNECTs but completes no BRC-103 handshake within this time is sent a
    /// server-initiated one (real clients handshake within milliseconds; old reconnected
    /// sockets never do).
    pub server_handshake_grace: Duration,
    /// Per-connection MessageBox limits.
    pub events: EventLimits,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            engine: EngineConfig::default(),
            server_handshake_grace: Duration::from_secs(3),
            events: EventLimits::default(),
        }
    }
}
