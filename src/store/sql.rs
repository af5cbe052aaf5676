//! SQL text both backends run as is: MySQL and SQLite read these statements alike, and `?`
//! placeholders bind in order in both. What the dialects write differently (upserts,
//! `INSERT IGNORE` / `INSERT OR IGNORE`, locking reads, multi-row lookups) stays with its
//! backend; the default-fee insert differs only in `FROM DUAL` and is written once here.

/// The columns [`Permission`](super::Permission) is read from, in field order.
macro_rules! permission_columns {
    () => {
        "sender, message_box, recipient_fee, created_at, updated_at"
    };
}

/// The columns [`Device`](super::Device) is read from, in field order.
macro_rules! device_columns {
    () => {
        "id, device_id, platform, fcm_token, active, created_at, updated_at, last_used"
    };
}

/// Inserts `recipient`'s box-wide default rule unless a box-wide rule exists. Parameters:
/// recipient, message_box, fee, created_at, updated_at, recipient, message_box.
macro_rules! insert_default_fee {
    ($from:literal) => {
        concat!(
            "INSERT INTO message_permissions (recipient, sender, message_box, recipient_fee, created_at, updated_at) \
             SELECT ?, NULL, ?, ?, ?, ?",
            $from,
            " WHERE NOT EXISTS (SELECT 1 FROM message_permissions \
             WHERE recipient = ? AND message_box = ? AND sender IS NULL)"
        )
    };
}

/// The newest box-wide rule's id. Parameters: recipient, message_box.
macro_rules! newest_box_wide_id {
    () => {
        "SELECT id FROM message_permissions WHERE recipient = ? AND message_box = ? AND sender IS NULL \
         ORDER BY id DESC LIMIT 1"
    };
}

/// [`insert_default_fee!`] for MySQL, which wants a table after `SELECT … WHERE`.
pub(crate) const INSERT_DEFAULT_FEE_MYSQL: &str = insert_default_fee!(" FROM DUAL");
/// [`insert_default_fee!`] for SQLite, which has no `DUAL`.
pub(crate) const INSERT_DEFAULT_FEE_SQLITE: &str = insert_default_fee!("");

/// The fee rule that applies to a sender: the sender-specific rule, else the newest
/// box-wide rule. Parameters: recipient, message_box, sender.
pub(crate) const FEE_RULE: &str = "SELECT recipient_fee FROM message_permissions \
     WHERE recipient = ? AND message_box = ? AND (sender = ? OR sender IS NULL) \
     ORDER BY sender IS NULL, id DESC LIMIT 1";

/// A box's delivery fee. Parameters: message_box.
macro_rules! delivery_fee {
    () => {
        "SELECT delivery_fee FROM server_fees WHERE message_box = ? LIMIT 1"
    };
}

/// See [`delivery_fee!`].
pub(crate) const DELIVERY_FEE: &str = delivery_fee!();
/// The same as a locking read, before an upsert of the box's fee (MySQL; SQLite's writer
/// holds the database's write lock for the whole transaction anyway).
pub(crate) const DELIVERY_FEE_FOR_UPDATE: &str = concat!(delivery_fee!(), " FOR UPDATE");

/// Every `server_fees` row as [`ServerFee`](super::ServerFee) is read, ordered by box (the
/// collation's order; names are unique, so no tie-breaker is needed).
pub(crate) const SERVER_FEES: &str =
    "SELECT message_box, delivery_fee, created_at, updated_at FROM server_fees ORDER BY message_box";

/// A page of a box's unexpired messages. Parameters: recipient, box type, recipient, now,
/// limit, offset.
///
/// The box is a scalar subquery, not a join: (type, identityKey) is unique, so it is one row
/// or none either way, but only as a constant does MariaDB read the page in order from
/// `(recipient, messageBoxId, created_at)` (InnoDB appends the clustering `messageId`) and
/// stop after it. Joined, it sorted the whole box for every page: 1.5 ms against 0.07 ms
/// for a 10-message page of a 360-message box.
pub(crate) const LIST_MESSAGES: &str = "SELECT m.messageId, m.body, m.sender, m.created_at, m.updated_at \
     FROM messages m \
     WHERE m.messageBoxId = (SELECT b.messageBoxId FROM messageBox b WHERE b.identityKey = ? AND b.type = ?) \
     AND m.recipient = ? AND (m.expires_at IS NULL OR m.expires_at > ?) \
     ORDER BY m.created_at, m.messageId LIMIT ? OFFSET ?";

/// A recipient's unexpired rows and their body bytes, all boxes (the inbox storage quota; a
/// sender's usage is its row of `messagebox_sender_usage`, see `store::usage`). Parameters:
/// recipient, now. `OCTET_LENGTH` is MySQL's byte length and SQLite's (3.43+), which reads
/// the length from the record header without loading the body.
pub(crate) const INBOX_USAGE: &str = "SELECT COUNT(*), COALESCE(SUM(OCTET_LENGTH(body)), 0) FROM messages \
     WHERE recipient = ? AND (expires_at IS NULL OR expires_at > ?)";

/// Parameters: identity_key, limit.
const ALL_DEVICES: &str = concat!(
    "SELECT ",
    device_columns!(),
    " FROM device_registrations WHERE identity_key = ? ORDER BY updated_at DESC, id DESC LIMIT ?"
);
/// Parameters: identity_key, limit.
const ACTIVE_DEVICES: &str = concat!(
    "SELECT ",
    device_columns!(),
    " FROM device_registrations WHERE identity_key = ? AND active = 1 ORDER BY updated_at DESC, id DESC LIMIT ?"
);

/// An identity's devices (see [`ALL_DEVICES`]), or only its active ones.
pub(crate) fn devices(only_active: bool) -> &'static str {
    if only_active {
        ACTIVE_DEVICES
    } else {
        ALL_DEVICES
    }
}

/// Parameters: last_used, updated_at, fcm_token.
pub(crate) const DEVICE_USED: &str =
    "UPDATE device_registrations SET last_used = ?, updated_at = ? WHERE fcm_token = ?";
/// Parameters: updated_at, fcm_token.
pub(crate) const DEVICE_DEACTIVATED: &str =
    "UPDATE device_registrations SET active = 0, updated_at = ? WHERE fcm_token = ?";

/// Parameters: recipient, message_box, sender.
pub(crate) const SENDER_PERMISSION: &str = concat!(
    "SELECT ",
    permission_columns!(),
    " FROM message_permissions WHERE recipient = ? AND message_box = ? AND sender = ? ORDER BY id DESC LIMIT 1"
);
/// Parameters: recipient, message_box.
pub(crate) const BOX_WIDE_PERMISSION: &str = concat!(
    "SELECT ",
    permission_columns!(),
    " FROM message_permissions WHERE recipient = ? AND message_box = ? AND sender IS NULL ORDER BY id DESC LIMIT 1"
);

/// See [`newest_box_wide_id!`].
pub(crate) const NEWEST_BOX_WIDE_ID: &str = newest_box_wide_id!();
/// The same as a locking read (MySQL; SQLite's writer is alone anyway).
pub(crate) const NEWEST_BOX_WIDE_ID_FOR_UPDATE: &str = concat!(newest_box_wide_id!(), " FOR UPDATE");
/// Parameters: recipient_fee, updated_at, id.
pub(crate) const UPDATE_PERMISSION_FEE: &str =
    "UPDATE message_permissions SET recipient_fee = ?, updated_at = ? WHERE id = ?";
/// Parameters: recipient, message_box, recipient_fee, created_at, updated_at.
pub(crate) const INSERT_BOX_WIDE: &str = "INSERT INTO message_permissions \
     (recipient, sender, message_box, recipient_fee, created_at, updated_at) VALUES (?, NULL, ?, ?, ?, ?)";

/// Counts `recipient`'s rules matching `filter` (a `WHERE` condition).
pub(crate) fn count_permissions(filter: &str) -> String {
    format!("SELECT COUNT(*) FROM message_permissions WHERE {filter}")
}

/// A page of rules matching `filter` (a `WHERE` condition), by box, box-wide rules first,
/// then by creation; the last two parameters are limit and offset.
pub(crate) fn list_permissions(filter: &str, created_asc: bool) -> String {
    let dir = if created_asc { "ASC" } else { "DESC" };
    format!(
        concat!(
            "SELECT ",
            permission_columns!(),
            " FROM message_permissions WHERE {filter} \
             ORDER BY message_box ASC, (sender IS NOT NULL) ASC, created_at {dir}, id {dir} LIMIT ? OFFSET ?"
        ),
        filter = filter,
        dir = dir
    )
}

/// Deletes `recipient`'s messages among `ids` ids. Parameters: recipient, then the ids.
pub(crate) fn delete_messages(ids: usize) -> String {
    format!("DELETE FROM messages WHERE recipient = ? AND messageId IN ({})", placeholders(ids))
}

/// The owners of stored ids among `ids` ids. Parameters: the ids.
pub(crate) fn message_owners(ids: usize) -> String {
    format!("SELECT messageId, sender, recipient FROM messages WHERE messageId IN ({})", placeholders(ids))
}

/// `?,?,…`, `n` of them.
pub(crate) fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 2);
    for i in 0..n {
        s.push_str(if i == 0 { "?" } else { ",?" });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_variants_differ_only_where_they_must() {
        assert_eq!(INSERT_DEFAULT_FEE_MYSQL.replace(" FROM DUAL", ""), INSERT_DEFAULT_FEE_SQLITE);
        assert_eq!(INSERT_DEFAULT_FEE_SQLITE.matches('?').count(), 7);
        assert_eq!(NEWEST_BOX_WIDE_ID_FOR_UPDATE.strip_suffix(" FOR UPDATE"), Some(NEWEST_BOX_WIDE_ID));
        assert_eq!(DELIVERY_FEE_FOR_UPDATE.strip_suffix(" FOR UPDATE"), Some(DELIVERY_FEE));
        assert_eq!(placeholders(3), "?,?,?");
        assert_eq!(delete_messages(2), "DELETE FROM messages WHERE recipient = ? AND messageId IN (?,?)");
        assert!(list_permissions("recipient = ?", false).ends_with("created_at DESC, id DESC LIMIT ? OFFSET ?"));
    }
}
