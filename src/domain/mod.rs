//! The MessageBox rules, in one place and free of any transport: what a valid send, list,
//! acknowledgement, permission rule and device registration is; the permission and fee gate
//! ([`fees::quote`], used by HTTP `/sendMessage`, `/permissions/quote` and the WebSocket
//! `sendMessage`); what is stored for a message and the live [`Delivery`] it produces.
//!
//! The HTTP routes (`api/`) and the live channel (`live/`) are adapters: they decode their
//! transport's input into the types here, call the domain, and encode the result. Errors are
//! [`ApiError`]s, mapped to status, `code` and `description` in one place.
//!
//! What leaves the domain goes through three ports, each a trait so tests and deployments can
//! replace it: the [`Store`](crate::store::Store), [`LiveDelivery`] (the live channel, which
//! fans a delivery out to the recipient's connections) and [`Notifier`] (push).

use std::sync::Arc;

use serde_json::json;

use crate::payments::PaymentAcceptor;
use crate::store::Store;

pub mod error;
pub mod fees;
pub mod ids;
pub mod js;
pub mod requests;
pub mod send;

pub use error::ApiError;
pub use fees::{default_recipient_fee, fee_status, Quote};
pub use ids::{BoxName, IdentityKey, InvalidKey, MessageId};

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

/// A stored message's live copy: the event `sendMessage-<roomId>` with
/// `{"sender","messageId","body"}`, for every live connection whose verified identity is
/// `recipient`. The server builds it with [`Delivery::message`] only, so HTTP and WebSocket
/// sends deliver the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Canonical identity key of the recipient.
    pub recipient: String,
    /// `<recipient>-<box>` (or the bare key, for a WebSocket room without a box), with the
    /// key spelt canonically: the recipient's client listens on its own canonical key.
    pub room_id: String,
    /// `sendMessage-<roomId>`.
    pub event: String,
    /// `{"sender":…,"messageId":…,"body":…}` as JSON text.
    pub data: String,
}

impl Delivery {
    /// `room_suffix` is what follows the key in the room id: `-<box>`, or empty.
    pub fn message(recipient: &IdentityKey, room_suffix: &str, sender: &str, message_id: &str, body: &str) -> Delivery {
        let room_id = format!("{recipient}{room_suffix}");
        Delivery {
            recipient: recipient.as_str().to_string(),
            event: format!("sendMessage-{room_id}"),
            room_id,
            data: json!({ "sender": sender, "messageId": message_id, "body": body }).to_string(),
        }
    }
}

/// Where stored messages are also delivered live (the socket layer).
pub trait LiveDelivery: Send + Sync + 'static {
    /// Whether a delivery to `recipient` may reach anyone (when false, none is built).
    fn is_listening(&self, recipient: &str) -> bool;

    fn deliver(&self, delivery: Delivery);
}

/// No live channel (websockets disabled).
#[derive(Debug, Default)]
pub struct NoLive;

impl LiveDelivery for NoLive {
    fn is_listening(&self, _: &str) -> bool {
        false
    }

    fn deliver(&self, _: Delivery) {}
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

/// The MessageBox service: its ports and limits, shared by every core.
#[derive(Clone)]
pub struct MessageBox {
    pub store: Store,
    pub payments: Arc<dyn PaymentAcceptor>,
    pub push: Arc<dyn Notifier>,
    pub live: Arc<dyn LiveDelivery>,
    pub limits: Limits,
}
