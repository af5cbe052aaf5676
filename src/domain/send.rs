//! Sending: the validation of `/sendMessage` in the original's order, the permission and fee
//! gate with the delivery-fee payment, what is stored per recipient (HTTP bodies wrapped as
//! `{"message":…,"payment"?:…}`, WebSocket bodies raw) and the live delivery of what was
//! newly stored.

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use serde_json::Value;

use super::fees::{self, Quote};
use super::js::{self, truthy};
use super::{ApiError, BoxName, Delivery, IdentityKey, Limits, MessageBox, MessageId};
use crate::payments::Internalize;
use crate::store::quota::{Charge, QuotaExceeded, ReserveError};
use crate::store::{InsertOutcome, NewMessage, Store};

/// A recipient as the client wrote it (trimmed; echoed in answers) and as it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub written: String,
    pub key: IdentityKey,
}

/// A validated `/sendMessage` request, before the fee gate.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRequest {
    /// Trimmed box name.
    pub message_box: BoxName,
    /// The message body as received (a string or any JSON object/array).
    pub body: Value,
    /// Recipients in request order, duplicates included.
    pub recipients: Vec<Recipient>,
    /// messageId per recipient (a repeated recipient keeps the last id).
    message_ids: HashMap<IdentityKey, MessageId>,
}

impl SendRequest {
    /// Validates the `/sendMessage` body exactly as the original does, plus our limits.
    pub fn from_json(body: &Value, limits: &Limits) -> Result<SendRequest, ApiError> {
        let message = match body.get("message") {
            Some(m) if !m.is_null() => m,
            _ => return Err(ApiError::MessageRequired),
        };
        let message_box = match message.get("messageBox") {
            Some(Value::String(s)) if !js::is_blank(s) => BoxName::new(js::trim(s), limits.max_box_name)
                .map_err(|_| ApiError::MessageBoxTooLong { max: limits.max_box_name })?,
            _ => return Err(ApiError::InvalidMessageBox),
        };
        let msg_body = match message.get("body") {
            Some(Value::String(s)) if !js::is_blank(s) => Value::String(s.clone()),
            Some(v) if js::is_object_like(v) => v.clone(),
            _ => return Err(ApiError::InvalidMessageBody),
        };
        let raw_recipients = match message.get("recipients").filter(|v| !v.is_null()) {
            Some(v) => v,
            None => message.get("recipient").filter(|v| !v.is_null()).ok_or(ApiError::RecipientRequired)?,
        };
        let recipients = as_list(raw_recipients);
        let ids = as_list(message.get("messageId").filter(|v| !v.is_null()).ok_or(ApiError::MessageIdRequired)?);
        let (r, m) = (recipients.len(), ids.len());
        if r > 1 && m == 1 {
            return Err(ApiError::OneMessageIdForMany { recipients: r });
        }
        if m != r {
            return Err(ApiError::MessageIdCountMismatch { recipients: r, message_ids: m });
        }
        let mut message_id_strings = Vec::with_capacity(m);
        for id in &ids {
            match id {
                Value::String(s) if !js::is_blank(s) => message_id_strings.push(s),
                _ => return Err(ApiError::InvalidMessageId),
            }
        }
        let mut checked_ids = Vec::with_capacity(m);
        for id in message_id_strings {
            let id = MessageId::new(id.clone(), limits.max_message_id)
                .map_err(|_| ApiError::MessageIdTooLong { max: limits.max_message_id })?;
            checked_ids.push(id);
        }
        let mut parsed = Vec::with_capacity(r);
        let mut message_ids = HashMap::with_capacity(r);
        for (raw, id) in recipients.iter().zip(checked_ids) {
            let written = js::trim(&js::string(raw)).to_string();
            let Ok(key) = IdentityKey::parse(&written) else {
                return Err(ApiError::InvalidRecipientKey(written));
            };
            message_ids.insert(key.clone(), id);
            parsed.push(Recipient { written, key });
        }
        // The newer upstream's caps come after every check of the original, so a request it
        // refused keeps its answer; between them, its order (the body before the recipients).
        limits.check_message_body(body_bytes(&msg_body))?;
        if let Some(max) = limits.max_recipients.filter(|max| r > *max) {
            return Err(ApiError::TooManyRecipients { max });
        }
        Ok(SendRequest { message_box, body: msg_body, recipients: parsed, message_ids })
    }

    /// The messageId stored for `recipient`.
    pub fn message_id(&self, recipient: &IdentityKey) -> &MessageId {
        &self.message_ids[recipient]
    }
}

/// UTF-8 bytes of a message body: a string's own, an object's JSON text (what is stored),
/// counted without writing it out.
fn body_bytes(body: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    match body {
        Value::String(s) => s.len(),
        other => {
            let mut count = Count(0);
            serde_json::to_writer(&mut count, other).expect("JSON values serialise");
            count.0
        }
    }
}

/// The stored body of an HTTP send, `{"message":…,"payment"?:…}`, serialised straight from
/// the request's body (no copy of it as a JSON value).
fn envelope(message: &Value, payment: Option<Value>) -> String {
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        message: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        payment: Option<Value>,
    }
    serde_json::to_string(&Envelope { message, payment }).expect("JSON values serialise")
}

fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    }
}

impl MessageBox {
    /// Sends a validated request from `sender`: the fee gate (blocked → 403; fees → the
    /// payment must carry the transaction and outputs; the delivery fee is internalized),
    /// one stored row per recipient in one group-committed batch, push for `notifications`,
    /// and the live delivery of each newly stored message.
    pub async fn send(
        &self,
        sender: &IdentityKey,
        request: &SendRequest,
        payment: Option<&Value>,
    ) -> Result<(), ApiError> {
        let keys = request.recipients.iter().map(|r| &r.key);
        let quote = fees::quote(&self.store, sender, request.message_box.as_str(), keys)
            .await
            .map_err(|e| ApiError::from_store(&e, "sendMessage: fee lookup", ApiError::Internal))?;
        let blocked: Vec<String> = quote.blocked().map(|i| request.recipients[i].written.clone()).collect();
        if !blocked.is_empty() {
            return Err(ApiError::DeliveryBlocked(blocked));
        }
        let (outputs_for, claim) = if quote.requires_payment() {
            self.take_payment(sender, request, &quote, payment).await?
        } else {
            (HashMap::new(), None)
        };

        // One stored body shared by every recipient without payment outputs of its own (D1):
        // a 1 MiB body to 100 recipients is one 1 MiB envelope, not 100.
        let shared: Arc<str> = envelope(&request.body, None).into();
        let messages: Vec<NewMessage> = request
            .recipients
            .iter()
            .map(|r| {
                let body = match (outputs_for.get(&r.key), payment) {
                    (Some(outs), Some(Value::Object(p))) => {
                        let mut p = p.clone();
                        p.insert("outputs".into(), Value::Array(outs.clone()));
                        envelope(&request.body, Some(Value::Object(p))).into()
                    }
                    _ => shared.clone(),
                };
                NewMessage {
                    message_id: request.message_id(&r.key).as_str().to_string(),
                    recipient: r.key.as_str().to_string(),
                    box_type: request.message_box.as_str().to_string(),
                    sender: sender.as_str().to_string(),
                    body,
                }
            })
            .collect();
        drop(shared);
        let stored = store_owned(&self.store, messages).await;
        if let (Err(Refused::Duplicate | Refused::Quota(_)), Some(txid)) = (&stored, &claim) {
            // Refused before anything was written: the payment bought nothing, so it may be
            // offered again. After a database error the rows may be stored: the claim stays.
            self.release_claim(txid).await;
        }
        let outcomes = stored.map_err(|refused| match refused {
            Refused::Duplicate => ApiError::DuplicateMessage,
            Refused::Quota(q) => ApiError::QuotaExceeded(q),
            Refused::Store(e) => ApiError::from_store(&e, "sendMessage: storing", ApiError::Internal),
        })?;

        // Built once, and only if someone listens.
        let mut live_body: Option<String> = None;
        let room_suffix = format!("-{}", request.message_box);
        let mut delivered = HashSet::new();
        for (r, outcome) in request.recipients.iter().zip(&outcomes) {
            let id = request.message_id(&r.key).as_str();
            if request.message_box.as_str() == "notifications" {
                self.push.notify(r.key.as_str(), id);
            }
            // A delivery is built only for a recipient someone listens for.
            if *outcome == InsertOutcome::Inserted && self.live.is_listening(r.key.as_str()) && delivered.insert(&r.key)
            {
                let body = live_body.get_or_insert_with(|| match &request.body {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                self.live.deliver(Delivery::message(&r.key, &room_suffix, sender.as_str(), id, body));
            }
        }
        Ok(())
    }

    /// Checks the payment of a payable send and takes the delivery fee; returns the
    /// recipient-side outputs per fee-charging recipient (stored with their messages) and the
    /// txid claimed in `payment_replays`, if any.
    ///
    /// Every local check comes first, so a refused payment never reaches the wallet: the
    /// output mapping, then the delivery payment ([`PaymentChecker`]). Then the paying
    /// transaction is claimed (once per txid, across every process sharing the database),
    /// and only then is the wallet asked; if it does not take the payment the claim is
    /// released. A claim that already exists is a replay, unless the request is a retry of a
    /// send that was stored (every messageId stored for this sender and recipient): that
    /// retry is answered as the original answers it (stored once, success) without asking
    /// the wallet again.
    ///
    /// [`PaymentChecker`]: crate::payments::check::PaymentChecker
    async fn take_payment(
        &self,
        sender: &IdentityKey,
        request: &SendRequest,
        quote: &Quote,
        payment: Option<&Value>,
    ) -> Result<(HashMap<IdentityKey, Vec<Value>>, Option<String>), ApiError> {
        let (payment, outputs) = match (payment, payment.and_then(|p| p.get("outputs"))) {
            (Some(p), Some(Value::Array(o))) if truthy(p.get("tx")) => (p, o),
            _ => return Err(ApiError::MissingPaymentTx),
        };
        if quote.delivery > 0 && outputs.is_empty() {
            return Err(ApiError::MissingDeliveryOutput);
        }
        let recipient_side = &outputs[usize::from(quote.delivery > 0)..];
        let fee_recipients: Vec<&IdentityKey> =
            request.recipients.iter().zip(&quote.recipients).filter(|(_, f)| **f > 0).map(|(r, _)| &r.key).collect();
        let outputs_for = map_outputs(recipient_side, &fee_recipients)?;
        if quote.delivery <= 0 {
            return Ok((outputs_for, None));
        }
        // The delivery fee once per request, as the original charges it and its clients pay.
        let required = u64::try_from(quote.delivery).unwrap_or(0);
        let checked = self.payment_checks.check_delivery(sender, payment, required).inspect_err(|e| {
            tracing::debug!(refusal = %e, "sendMessage: delivery payment refused before the wallet");
        })?;
        match self.store.claim_payment(&checked.txid).await {
            Ok(true) => {}
            Ok(false) if self.is_stored_retry(sender, request).await => return Ok((outputs_for, None)),
            Ok(false) => return Err(ApiError::PaymentReplayed),
            Err(e) => {
                tracing::error!(error = %e, txid = %checked.txid, "sendMessage: the payment could not be claimed");
                return Err(ApiError::PaymentUnavailable);
            }
        }
        let description = crate::payments::check::description(payment);
        let args = Internalize { tx: payment["tx"].clone(), outputs: vec![outputs[0].clone()], description };
        let refused = match self.payments.internalize(args).await {
            Ok(true) => return Ok((outputs_for, Some(checked.txid))),
            Ok(false) => ApiError::PaymentNotAccepted,
            Err(e) if e.unavailable() => {
                tracing::warn!(error = %e, "sendMessage: the wallet that takes payments is unavailable");
                ApiError::WalletUnavailable
            }
            Err(e) => {
                tracing::warn!(error = %e, "sendMessage: delivery payment not internalized");
                ApiError::InternalizeFailed(e.to_string())
            }
        };
        self.release_claim(&checked.txid).await;
        Err(refused)
    }

    /// Whether every message of `request` is already stored for this sender and recipient:
    /// the request repeats a send that succeeded.
    async fn is_stored_retry(&self, sender: &IdentityKey, request: &SendRequest) -> bool {
        let ids: Vec<String> =
            request.recipients.iter().map(|r| request.message_id(&r.key).as_str().to_string()).collect();
        let Ok(owners) = self.store.message_owners(&ids).await else { return false };
        request.recipients.iter().all(|r| {
            let id = id_key(request.message_id(&r.key).as_str());
            owners
                .iter()
                .any(|o| id_key(&o.message_id) == id && o.sender == sender.as_str() && o.recipient == r.key.as_str())
        })
    }

    /// Deletes a claim whose send bought nothing. A failure is logged: the payment then stays
    /// used, which costs its payer a retry with a new payment but never the operator a message.
    async fn release_claim(&self, txid: &str) {
        if let Err(e) = self.store.release_payment(txid).await {
            tracing::warn!(error = %e, txid, "sendMessage: a payment claim could not be released");
        }
    }
}

/// Assigns recipient-side outputs to the recipients that charge a fee: outputs tagged
/// with `customInstructions.recipientIdentityKey` go to that recipient (any spelling of its
/// key); the others are assigned in order, as the original does.
fn map_outputs(
    outputs: &[Value],
    fee_recipients: &[&IdentityKey],
) -> Result<HashMap<IdentityKey, Vec<Value>>, ApiError> {
    let mut tagged: HashMap<String, Vec<Value>> = HashMap::new();
    let mut used_indexes: HashSet<String> = HashSet::new();
    for out in outputs {
        let raw = [
            out.get("insertionRemittance").and_then(|r| r.get("customInstructions")),
            out.get("paymentRemittance").and_then(|r| r.get("customInstructions")),
            out.get("customInstructions"),
        ]
        .into_iter()
        .flatten()
        .find(|v| !v.is_null());
        if !truthy(raw) {
            continue;
        }
        let instr = match raw.expect("truthy") {
            Value::String(s) => match serde_json::from_str::<Value>(s) {
                Ok(v) => v,
                Err(_) => continue,
            },
            other => other.clone(),
        };
        if let Some(Value::String(key)) = instr.get("recipientIdentityKey") {
            if !js::is_blank(key) {
                let key = IdentityKey::parse(key).map_or_else(|_| key.clone(), IdentityKey::into_string);
                tagged.entry(key).or_default().push(out.clone());
                if let Some(idx @ Value::Number(_)) = out.get("outputIndex") {
                    used_indexes.insert(idx.to_string());
                }
            }
        }
    }
    let mut map: HashMap<IdentityKey, Vec<Value>> = HashMap::new();
    if tagged.is_empty() {
        if outputs.len() < fee_recipients.len() {
            return Err(ApiError::InsufficientOutputs { expected: fee_recipients.len(), received: outputs.len() });
        }
        for (r, out) in fee_recipients.iter().zip(outputs) {
            map.entry((*r).clone()).or_default().push(out.clone());
        }
        return Ok(map);
    }
    for r in fee_recipients {
        if let Some(t) = tagged.get(r.as_str()) {
            map.insert((*r).clone(), t.clone());
        }
    }
    let unmapped: Vec<&&IdentityKey> = fee_recipients.iter().filter(|r| !map.contains_key(**r)).collect();
    if !unmapped.is_empty() {
        let remaining: Vec<&Value> = outputs
            .iter()
            .filter(|o| match o.get("outputIndex") {
                Some(idx @ Value::Number(_)) => !used_indexes.contains(&idx.to_string()),
                _ => true,
            })
            .collect();
        if remaining.len() < unmapped.len() {
            return Err(ApiError::InsufficientAdditionalOutputs {
                expected: unmapped.len(),
                remaining: remaining.len(),
            });
        }
        for (r, out) in unmapped.iter().zip(remaining) {
            map.entry((**r).clone()).or_default().push(out.clone());
        }
    }
    Ok(map)
}

/// A message sent over the live channel, already validated by the event layer. Owned: its
/// parts move into the stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMessage {
    pub sender: IdentityKey,
    pub recipient: IdentityKey,
    pub message_box: String,
    pub message_id: String,
    /// Stored raw (not wrapped), as the original stored WebSocket bodies.
    pub body: String,
}

/// What became of a live message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveOutcome {
    /// Stored: acknowledge and deliver.
    Stored,
    /// The messageId was already stored (and delivered then): acknowledge, do not deliver again.
    Duplicate,
    /// The recipient blocks this sender.
    Blocked,
    /// The box asks for a fee, which the live channel cannot carry (the client falls back to HTTP).
    PaymentRequired,
    /// The body exceeds `MESSAGE_BOX_MAX_MESSAGE_BODY_BYTES` (this many bytes), as HTTP refuses it.
    BodyTooLarge { max: usize },
    /// A storage quota refuses it, as HTTP would (429).
    QuotaExceeded(QuotaExceeded),
    /// The store failed.
    Failed,
}

/// The gate of HTTP `/sendMessage` for one live message (the body cap `max_body_bytes`, then
/// permissions and fees), then the raw store.
pub async fn store_live(store: &Store, max_body_bytes: Option<usize>, message: LiveMessage) -> LiveOutcome {
    if let Err(ApiError::MessageBodyTooLarge { max }) = super::check_message_body(max_body_bytes, message.body.len()) {
        return LiveOutcome::BodyTooLarge { max };
    }
    let quote = match fees::quote(store, &message.sender, &message.message_box, [&message.recipient]).await {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(error = %e, "live sendMessage: fee lookup failed");
            return LiveOutcome::Failed;
        }
    };
    if quote.blocked().next().is_some() {
        return LiveOutcome::Blocked;
    }
    if quote.requires_payment() {
        return LiveOutcome::PaymentRequired;
    }
    let row = NewMessage {
        message_id: message.message_id,
        recipient: message.recipient.into_string(),
        box_type: message.message_box,
        sender: message.sender.into_string(),
        body: message.body.into(),
    };
    match store_owned(store, vec![row]).await {
        Ok(o) if o.first() == Some(&InsertOutcome::Duplicate) => LiveOutcome::Duplicate,
        Ok(_) => LiveOutcome::Stored,
        // The live channel has no error body: the sender hears that storing failed.
        Err(Refused::Duplicate) => {
            tracing::debug!("live sendMessage: the messageId belongs to another sender or recipient");
            LiveOutcome::Failed
        }
        Err(Refused::Quota(q)) => LiveOutcome::QuotaExceeded(q),
        Err(Refused::Store(e)) => {
            tracing::error!(error = %e, "live sendMessage: storing failed");
            LiveOutcome::Failed
        }
    }
}

/// Why [`store_owned`] stored nothing (or, after a race, not all).
enum Refused {
    /// A messageId belongs to another sender or recipient (D8).
    Duplicate,
    /// A storage quota (checked after the id rule, before anything is written).
    Quota(QuotaExceeded),
    Store(crate::store::StoreError),
}

/// How the databases' unique key on `messageId` compares ids: MySQL's default collations and
/// SQLite's `NOCASE` ignore case, MySQL's PAD SPACE trailing spaces.
fn id_key(id: &str) -> String {
    id.trim_end_matches(' ').to_lowercase()
}

/// Stores `rows` under the messageId rule of both send paths (D8): an id belongs to the
/// sender and recipient that stored it first. The same sender re-sending the same id to
/// the same recipient is an idempotent retry (a `Duplicate` outcome, answered as success);
/// an id already stored — expired or not, in any spelling the unique key equates — for
/// another sender or recipient, or one request giving one id to two recipients, is refused
/// before anything is written. A race with another sender between the check and the insert
/// is caught after it (the insert reports the row duplicate and the owner is read again); the
/// request is then refused although rows it wrote for other recipients stay.
///
/// Between the id rule and the insert, the storage quotas ([`crate::store::quota`]) reserve
/// what the send newly stores (not its idempotent re-sends) or refuse it whole (429).
async fn store_owned(store: &Store, rows: Vec<NewMessage>) -> Result<Vec<InsertOutcome>, Refused> {
    let rows = match store_one(store, rows).await {
        Ok(outcomes) => return Ok(outcomes),
        Err(Fallback::Refused(r)) => return Err(r),
        Err(Fallback::Checked(rows)) => rows,
    };
    let mut owners_wanted: Vec<(String, String, String)> = Vec::with_capacity(rows.len());
    let mut by_key: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    for r in &rows {
        let wanted = (r.message_id.clone(), r.sender.clone(), r.recipient.clone());
        match by_key.get(&id_key(&r.message_id)) {
            Some(&i) if owners_wanted[i] != wanted => return Err(Refused::Duplicate),
            Some(_) => {}
            None => {
                by_key.insert(id_key(&r.message_id), owners_wanted.len());
                owners_wanted.push(wanted);
            }
        }
    }
    let ids: Vec<String> = owners_wanted.iter().map(|(id, _, _)| id.clone()).collect();
    let ours = |o: &crate::store::MessageOwner| {
        owners_wanted
            .iter()
            .any(|(id, sender, recipient)| *id == o.message_id && *sender == o.sender && *recipient == o.recipient)
    };
    let before = store.message_owners(&ids).await.map_err(Refused::Store)?;
    if !before.iter().all(ours) {
        return Err(Refused::Duplicate);
    }
    // The quotas count what this send would newly store: a row whose id we already own is an
    // idempotent re-send (it stores nothing, so a quota the original fit in cannot refuse
    // it), and an id repeated in the request is one row.
    let stored_ids: HashSet<String> = before.iter().map(|o| id_key(&o.message_id)).collect();
    let mut counted: HashSet<String> = HashSet::with_capacity(rows.len());
    let mut charged_rows = Vec::with_capacity(rows.len());
    let mut charges = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let key = id_key(&r.message_id);
        if !stored_ids.contains(&key) && counted.insert(key) {
            charged_rows.push(i);
            charges.push(Charge { sender: &r.sender, recipient: &r.recipient, bytes: r.body.len() as u64 });
        }
    }
    let reservation =
        store.quotas().reserve(store.as_ref(), &charges, crate::store::now()).await.map_err(|e| match e {
            ReserveError::Exceeded(q) => Refused::Quota(q),
            ReserveError::Store(e) => Refused::Store(e),
        })?;
    drop(charges);
    // Dropped unfinished on an error: the rows count as stored (they may be).
    let outcomes = store.insert_messages(rows).await.map_err(Refused::Store)?;
    reservation.stored(|i| outcomes[charged_rows[i]]);
    // A duplicate the check did not see: someone stored the id in between.
    if outcomes.iter().filter(|o| **o == InsertOutcome::Duplicate).count() > before.len() {
        let after = store.message_owners(&ids).await.map_err(Refused::Store)?;
        if !after.iter().all(ours) {
            return Err(Refused::Duplicate);
        }
    }
    Ok(outcomes)
}

/// Why [`store_one`] left a send to the checked path of [`store_owned`].
enum Fallback {
    Refused(Refused),
    /// Not a single row, or a full quota that an idempotent re-send may still pass: the rows,
    /// untouched.
    Checked(Vec<NewMessage>),
}

/// The common send, one row, under the same rules as [`store_owned`] at one store round trip
/// fewer: the row is charged and inserted at once, and its owner is read only when the insert
/// finds the id taken (an idempotent re-send, or D8's refusal — with one row nothing else was
/// written). A quota that refuses goes to the checked path, which knows a re-send from a new
/// row before charging.
async fn store_one(store: &Store, rows: Vec<NewMessage>) -> Result<Vec<InsertOutcome>, Fallback> {
    let [row] = &rows[..] else { return Err(Fallback::Checked(rows)) };
    let charge = Charge { sender: &row.sender, recipient: &row.recipient, bytes: row.body.len() as u64 };
    let reservation = match store.quotas().reserve(store.as_ref(), &[charge], crate::store::now()).await {
        Ok(r) => r,
        Err(ReserveError::Exceeded(_)) => return Err(Fallback::Checked(rows)),
        Err(ReserveError::Store(e)) => return Err(Fallback::Refused(Refused::Store(e))),
    };
    let (id, sender, recipient) = (row.message_id.clone(), row.sender.clone(), row.recipient.clone());
    // Dropped unfinished on an error: the row counts as stored (it may be).
    let outcomes = store.insert_messages(rows).await.map_err(|e| Fallback::Refused(Refused::Store(e)))?;
    reservation.stored(|i| outcomes[i]);
    if outcomes.first() == Some(&InsertOutcome::Duplicate) {
        let owners = store.message_owners(std::slice::from_ref(&id)).await;
        let owners = owners.map_err(|e| Fallback::Refused(Refused::Store(e)))?;
        if !owners.iter().all(|o| o.message_id == id && o.sender == sender && o.recipient == recipient) {
            return Err(Fallback::Refused(Refused::Duplicate));
        }
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(n: u8) -> IdentityKey {
        IdentityKey::from(&crate::auth::PrivateKey::from_bytes(&[n; 32]).unwrap().public_key())
    }

    #[test]
    fn outputs_tagged_and_positional() {
        let (a, b) = (key(1), key(2));
        // Tagged with A's key in upper case: still A's.
        let tag = a.as_str().to_uppercase();
        let outs = vec![
            json!({"outputIndex": 1, "paymentRemittance": {"customInstructions": format!("{{\"recipientIdentityKey\":\"{tag}\"}}")}}),
            json!({"outputIndex": 2}),
        ];
        // Recipients [B, A]: A gets its tagged output 1, B the remaining output 2.
        let m = map_outputs(&outs, &[&b, &a]).unwrap();
        assert_eq!(m[&a], vec![outs[0].clone()]);
        assert_eq!(m[&b], vec![outs[1].clone()]);
        let m = map_outputs(&outs[1..], &[&b]).unwrap();
        assert_eq!(m[&b], vec![outs[1].clone()]);
        let err = map_outputs(&outs[1..], &[&a, &b]).unwrap_err();
        assert_eq!(err.code(), "ERR_INSUFFICIENT_OUTPUTS");
        assert_eq!(err.description(), "Expected at least 2 recipient output(s) but received 1");
        let err = map_outputs(&outs[..1], &[&a, &b]).unwrap_err();
        assert_eq!(err.description(), "Expected at least 1 additional recipient output(s) but only 0 remain");
    }

    #[test]
    fn envelopes_as_the_original_stores_them() {
        assert_eq!(envelope(&json!("hi"), None), r#"{"message":"hi"}"#);
        assert_eq!(
            envelope(&json!({"b": 1, "a": [2]}), Some(json!({"tx": [1], "outputs": []}))),
            r#"{"message":{"b":1,"a":[2]},"payment":{"tx":[1],"outputs":[]}}"#
        );
    }

    #[test]
    fn truthiness() {
        assert!(!truthy(None));
        assert!(!truthy(Some(&json!(0))));
        assert!(!truthy(Some(&json!(""))));
        assert!(truthy(Some(&json!([]))));
        assert!(truthy(Some(&json!("x"))));
    }

    #[test]
    fn recipients_are_canonical_and_echoed_as_written() {
        let a = key(3);
        let upper = a.as_str().to_uppercase();
        let body = json!({"message": {"messageBox": " inbox ", "body": "hi", "recipients": [format!(" {upper} "), a.as_str()], "messageId": ["x", "y"]}});
        let req = SendRequest::from_json(&body, &Limits::default()).unwrap();
        assert_eq!(req.message_box.as_str(), "inbox");
        assert_eq!(req.recipients[0].written, upper);
        assert_eq!(req.recipients[0].key, a);
        assert_eq!(req.recipients[1].key, a);
        // One box, so the last id wins for both, as it did when the spellings were equal.
        assert_eq!(req.message_id(&a).as_str(), "y");
    }
}
