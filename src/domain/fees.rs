//! The permission and fee gate: what a sender owes (or whether it is refused) to reach each
//! recipient's box. One lookup, [`quote`], serves HTTP `/sendMessage`, `/permissions/quote`
//! and the WebSocket `sendMessage`.

use super::IdentityKey;
use crate::store::{DatabaseError, Store, StoreError};

/// A recipient fee that refuses the sender.
pub const BLOCKED: i64 = -1;

/// The recipient fee a box gets when none is set (the original's "smart default"): the
/// `notifications` box charges 10 satoshis, every other box is free.
pub fn default_recipient_fee(message_box: &str) -> i64 {
    if message_box == "notifications" {
        10
    } else {
        0
    }
}

/// Fee → the status word of quotes and permissions.
pub fn fee_status(fee: i64) -> &'static str {
    match fee {
        BLOCKED => "blocked",
        0 => "always_allow",
        _ => "payment_required",
    }
}

/// The fees of one send: the server's delivery fee for the box, and each recipient's fee for
/// this sender in recipient order ([`BLOCKED`] refuses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    pub delivery: i64,
    pub recipients: Vec<i64>,
}

impl Quote {
    /// Indexes of the recipients that block the sender.
    pub fn blocked(&self) -> impl Iterator<Item = usize> + '_ {
        self.recipients.iter().enumerate().filter(|(_, f)| **f == BLOCKED).map(|(i, _)| i)
    }

    /// Whether anything must be paid (the delivery fee or any recipient's fee).
    pub fn requires_payment(&self) -> bool {
        self.delivery > 0 || self.recipients.iter().any(|f| *f > 0)
    }
}

/// The fees `sender` owes to deliver to `recipients`' box `message_box`. A recipient without a
/// rule for the box gets a box-wide rule with [`default_recipient_fee`] (the store writes it).
pub async fn quote<'k>(
    store: &Store,
    sender: &IdentityKey,
    message_box: &str,
    recipients: impl IntoIterator<Item = &'k IdentityKey>,
) -> Result<Quote, StoreError> {
    let keys: Vec<String> = recipients.into_iter().map(|k| k.as_str().to_owned()).collect();
    let default = default_recipient_fee(message_box);
    let (delivery, fees) = tokio::join!(
        store.delivery_fee(message_box),
        store.recipient_fees(sender.as_str(), message_box, &keys, default),
    );
    let fees = fees?;
    if fees.len() != keys.len() {
        return Err(StoreError::Database(DatabaseError {
            code: None,
            message: format!("fee lookup answered {} fees for {} recipients", fees.len(), keys.len()),
        }));
    }
    Ok(Quote { delivery: delivery?.unwrap_or(0), recipients: fees })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_words() {
        assert_eq!(default_recipient_fee("notifications"), 10);
        assert_eq!(default_recipient_fee("inbox"), 0);
        assert_eq!(fee_status(-1), "blocked");
        assert_eq!(fee_status(0), "always_allow");
        assert_eq!(fee_status(5), "payment_required");
        let q = Quote { delivery: 0, recipients: vec![0, -1, 3, -1] };
        assert_eq!(q.blocked().collect::<Vec<_>>(), vec![1, 3]);
        assert!(q.requires_payment());
        assert!(!Quote { delivery: 0, recipients: vec![0, -1] }.requires_payment());
        assert!(Quote { delivery: 1, recipients: vec![] }.requires_payment());
    }
}
