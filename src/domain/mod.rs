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

use crate::payments::check::PaymentChecker;
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

/// Bounds on what one request may ask for, fed from the resource limits
/// ([`Limits::from_resources`]); `None` is a limit the operator disabled (`-1`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Recipients in one `/sendMessage` (`MESSAGE_BOX_MAX_RECIPIENTS`).
    pub max_recipients: Option<usize>,
    /// UTF-8 bytes of a message body (`MESSAGE_BOX_MAX_MESSAGE_BODY_BYTES`), HTTP and live; an
    /// object body counts as its JSON text.
    pub max_message_body_bytes: Option<usize>,
    /// Characters of a messageBox name (the column is VARCHAR(255)).
    pub max_box_name: usize,
    /// Characters of a messageId (VARCHAR(255)).
    pub max_message_id: usize,
    /// Ids in one `/acknowledgeMessage` (`MESSAGE_BOX_MAX_ACKNOWLEDGMENT_IDS`).
    pub max_acknowledge: Option<usize>,
    /// `/listMessages` page size when the request names none.
    pub list_default: u32,
    /// The largest `/listMessages` page a request may ask for (`u32::MAX` when disabled).
    pub list_max: u32,
    /// Whether `MESSAGE_BOX_LIST_MAX_LIMIT` is `-1` (the error text then names no number).
    pub list_max_disabled: bool,
    /// The largest `/listMessages` offset (`MESSAGE_BOX_LIST_MAX_OFFSET`).
    pub list_max_offset: Option<u64>,
    /// The byte budget of one `/listMessages` page (`MESSAGE_BOX_LIST_MAX_RESPONSE_BYTES`).
    pub list_max_response_bytes: Option<u64>,
    /// The newer upstream's `listQueryBatchSize`: how many of the largest bodies fit the page's
    /// budget (its rows per listing query; here the unit of [`Limits::list_read_ahead`]).
    pub list_batch: u32,
}

/// A MySQL listing query asks for at most this many `list_batch`es of rows.
const LIST_READ_AHEAD_BATCHES: u32 = 4;

impl Limits {
    /// The request bounds of `resources` (a disabled list limit is the largest page there is).
    pub fn from_resources(resources: &crate::limits::ResourceLimits) -> Limits {
        let size = |l: crate::limits::Limit| l.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let page = |l: crate::limits::Limit| l.map_or(u32::MAX, |n| u32::try_from(n).unwrap_or(u32::MAX));
        let m = &resources.messages;
        Limits {
            max_recipients: size(m.max_recipients),
            max_message_body_bytes: size(m.max_message_body_bytes),
            max_box_name: 255,
            max_message_id: 255,
            max_acknowledge: size(m.max_acknowledgment_ids),
            list_default: page(m.list_default_limit),
            list_max: page(m.list_max_limit),
            list_max_disabled: m.list_max_limit.is_none(),
            list_max_offset: m.list_max_offset,
            list_max_response_bytes: m.list_max_response_bytes,
            list_batch: list_batch(m.list_max_response_bytes, m.max_message_body_bytes),
        }
    }

    /// Rows one listing query may ask for when the page has a byte budget. A store that must
    /// read a query's result to its end (MySQL) reads at most this many rows past the page's
    /// cut, so at most four budgets of the largest bodies are read and dropped for a page
    /// whose own answer is about one budget; a page of small messages (standard: up to 31) is
    /// one query. SQLite reads lazily and stops at the cut.
    pub fn list_read_ahead(&self) -> u32 {
        self.list_batch.saturating_mul(LIST_READ_AHEAD_BATCHES)
    }

    /// The body cap of a send: 413 `ERR_MESSAGE_BODY_TOO_LARGE`.
    pub fn check_message_body(&self, bytes: usize) -> Result<(), ApiError> {
        check_message_body(self.max_message_body_bytes, bytes)
    }
}

/// `listQueryBatchSize`: `max(1, min(100, floor(budget / largest body)))`, or 1 when either
/// is disabled — a batch of the largest bodies fits the page's budget (standard: 8).
pub fn list_batch(budget: crate::limits::Limit, max_body: crate::limits::Limit) -> u32 {
    match (budget, max_body) {
        (Some(budget), Some(body)) if body > 0 => (budget / body).clamp(1, 100) as u32,
        _ => 1,
    }
}

/// The body cap of a send, HTTP and live alike (`None`: no cap).
pub fn check_message_body(max: Option<usize>, bytes: usize) -> Result<(), ApiError> {
    match max {
        Some(max) if bytes > max => Err(ApiError::MessageBodyTooLarge { max }),
        _ => Ok(()),
    }
}

impl Default for Limits {
    /// The `standard` profile's bounds.
    fn default() -> Self {
        Limits::from_resources(&crate::limits::ResourceLimits::default())
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
            data: serde_json::to_string(&DeliveryData { sender, message_id, body }).expect("strings always serialise"),
        }
    }
}

/// A delivery's `data`, written field by field (no `Value` tree: this is built once per
/// message delivered).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryData<'a> {
    sender: &'a str,
    message_id: &'a str,
    body: &'a str,
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
    /// The checks a delivery payment passes before `payments` is asked (the server's key).
    pub payment_checks: PaymentChecker,
    pub push: Arc<dyn Notifier>,
    pub live: Arc<dyn LiveDelivery>,
    pub limits: Limits,
}
