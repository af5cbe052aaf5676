//! The per-core driver of the live channel: it wires [`ConnectionCore`](super::ConnectionCore)s
//! to hyper requests, WebSocket streams, timers, the store and the other cores. It only pumps:
//! every protocol rule and timing lives in the sans-I/O core.
//!
//! - [`registry`]: which cores hold connections of which identity (sharded, pure).
//! - [`hub`]: [`LiveHub`], shared by every core, and [`Fanout`], the delivery seam.
//! - [`core`]: [`LiveCore`], one core's sessions, mailbox and session API, created by the
//!   server's core setup and passed to the HTTP layer.
//! - `task`: the task of one session.
//! - [`http`]: hyper request → Engine.IO route → session API; upgrade and stream adoption.
//!
//! Each Engine.IO session lives in one local task on the core its sid names. Requests for it
//! that land on another core (the Node client opens a TCP connection per poll) are forwarded
//! to the owner through that core's mailbox and answered through a oneshot; a WebSocket
//! upgraded on another core has its TCP stream moved to the owner.
//!
//! # The delivery seam
//!
//! Every delivery — HTTP `/sendMessage` through [`LiveDelivery::deliver`](crate::domain::LiveDelivery)
//! and WebSocket `sendMessage` through [`Command::Deliver`](super::Command::Deliver) — leaves
//! through [`Fanout::publish`]: the registry names the cores holding the recipient, and their
//! mailboxes hand the delivery to the connections bound to it. Cost is proportional to the
//! recipient's connections, never to all connections. In a fleet (`REDIS_URL`) the broker
//! link ([`hub::RemoteNodes`], `fleet::broker`) plugs in here: each delivery is also
//! published to the nodes that hold the recipient, and theirs come in through
//! [`Fanout::publish_local`].
//!
//! # Bounds
//!
//! Every queue is bounded: a connection whose input queue overflows is dropped as too slow,
//! a WebSocket write that cannot complete in time drops the connection, deliveries to a core
//! whose mailbox is full are dropped with a warning (the message is stored anyway). Shutdown
//! waits for the connection tasks to finish (signalled, not polled), up to its timeout.

pub mod core;
pub mod http;
pub mod hub;
pub mod registry;
mod task;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use self::core::LiveCore;
pub use self::http::handle;
pub use self::hub::{Fanout, LiveHub};
pub use self::registry::Registry;

/// Inputs queued per connection before it counts as too slow and is dropped.
const CONNECTION_QUEUE: usize = 256;
/// Messages queued per core mailbox.
const CORE_QUEUE: usize = 65_536;
/// A WebSocket write (one flush) that takes longer drops the connection.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
