//! The per-sender usage table, `messagebox_sender_usage` (sender, messages, bytes): what the
//! sender storage quota reads ([`super::quota`]) instead of aggregating over `messages`, which
//! would need a per-row `(sender, expires_at)` index written on every insert.
//!
//! This module owns its rules: a row counts every stored message of the sender, expired or
//! not, until it is deleted; bytes are the stored body's UTF-8 bytes (what the quota counts);
//! each backend changes it **in the same transaction** as the change to `messages` — a batch
//! adds what it really inserted (not duplicates), a delete subtracts what it deleted (clamped
//! at 0: rows stored before the table existed by other programs are not known). Rows written
//! or deleted by other programs on the same database (the TypeScript server) are not
//! counted, so the table is exact only for what this server does; `messagebox migrate`'s
//! step fills it once from `messages` (README "Storage quotas" says how to rebuild it).
//!
//! Changes are grouped per sender (ASCII case folded, as the collations compare identity
//! keys), in sorted order, so concurrent transactions lock the usage rows in one order.

use std::cmp::Ordering;

use super::{InsertOutcome, NewMessage};

/// Most senders in one statement; more are split over several.
pub(crate) const MAX_SENDERS: usize = 128;

/// What one transaction adds to (or subtracts from) one sender's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delta<'a> {
    pub sender: &'a str,
    pub messages: i64,
    pub bytes: i64,
}

/// The SQL dialect a statement is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Mysql,
    Sqlite,
}

fn fold(a: &str, b: &str) -> Ordering {
    a.bytes().map(|c| c.to_ascii_lowercase()).cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// `(sender, bytes)` per row, grouped per sender in sorted order.
fn group<'a>(mut rows: Vec<(&'a str, u64)>) -> Vec<Delta<'a>> {
    rows.sort_by(|a, b| fold(a.0, b.0));
    let mut out: Vec<Delta<'a>> = Vec::new();
    for (sender, bytes) in rows {
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        match out.last_mut() {
            Some(d) if fold(d.sender, sender) == Ordering::Equal => {
                d.messages += 1;
                d.bytes = d.bytes.saturating_add(bytes);
            }
            _ => out.push(Delta { sender, messages: 1, bytes }),
        }
    }
    out
}

/// What a batch adds: its rows that were inserted (`outcomes` in row order).
pub(crate) fn inserted<'a>(rows: &[&'a NewMessage], outcomes: &[InsertOutcome]) -> Vec<Delta<'a>> {
    let stored = rows.iter().zip(outcomes).filter(|(_, o)| **o == InsertOutcome::Inserted);
    group(stored.map(|(r, _)| (r.sender.as_str(), r.body.len() as u64)).collect())
}

/// What a delete subtracts: the deleted rows' senders and body bytes.
pub(crate) fn deleted(rows: &[(String, u64)]) -> Vec<Delta<'_>> {
    group(rows.iter().map(|(s, b)| (s.as_str(), *b)).collect())
}

/// What several deletes of one transaction subtract together.
pub(crate) fn deleted_all<'a>(sets: impl IntoIterator<Item = &'a Vec<(String, u64)>>) -> Vec<Delta<'a>> {
    group(sets.into_iter().flatten().map(|(s, b)| (s.as_str(), *b)).collect())
}

/// The statement shape for `n` senders: the next power of two (padding entries change
/// nothing), so each connection caches a few shapes.
fn shape(n: usize) -> usize {
    n.next_power_of_two().min(MAX_SENDERS.max(n))
}

/// Adds `deltas` (at most [`MAX_SENDERS`]) to their rows, creating missing ones: the SQL and
/// its parameters (sender, messages, bytes per row; padding repeats the last sender with 0).
pub(crate) fn add<'a>(dialect: Dialect, deltas: &[Delta<'a>]) -> (String, Vec<Param<'a>>) {
    let size = shape(deltas.len());
    let rows = vec!["(?,?,?)"; size].join(",");
    let sql = match dialect {
        Dialect::Mysql => format!(
            "INSERT INTO messagebox_sender_usage (sender, messages, bytes) VALUES {rows} \
             ON DUPLICATE KEY UPDATE messages = messages + VALUES(messages), bytes = bytes + VALUES(bytes)"
        ),
        Dialect::Sqlite => format!(
            "INSERT INTO messagebox_sender_usage (sender, messages, bytes) VALUES {rows} \
             ON CONFLICT (sender) DO UPDATE SET messages = messages + excluded.messages, \
             bytes = bytes + excluded.bytes"
        ),
    };
    let mut params = Vec::with_capacity(size * 3);
    for d in deltas {
        params.extend([Param::Text(d.sender), Param::Int(d.messages), Param::Int(d.bytes)]);
    }
    let last = deltas.last().map_or("", |d| d.sender);
    for _ in deltas.len()..size {
        params.extend([Param::Text(last), Param::Int(0), Param::Int(0)]);
    }
    (sql, params)
}

/// Subtracts `deltas` (at most [`MAX_SENDERS`]) from their rows, never below 0, in one
/// statement (a `CASE` per column, so each row is matched in the column's own collation):
/// the SQL and its parameters. Padding entries name the empty sender with 0.
pub(crate) fn subtract<'a>(dialect: Dialect, deltas: &[Delta<'a>]) -> (String, Vec<Param<'a>>) {
    let size = shape(deltas.len());
    let greatest = match dialect {
        Dialect::Mysql => "GREATEST",
        Dialect::Sqlite => "MAX",
    };
    let cases = "WHEN sender = ? THEN ? ".repeat(size);
    let sql = format!(
        "UPDATE messagebox_sender_usage SET \
         messages = {greatest}(messages - CASE {cases}ELSE 0 END, 0), \
         bytes = {greatest}(bytes - CASE {cases}ELSE 0 END, 0) \
         WHERE sender IN ({})",
        vec!["?"; size].join(",")
    );
    let padded = || deltas.iter().map(|d| (d.sender, d.messages, d.bytes)).chain(std::iter::repeat(("", 0, 0)));
    let mut params = Vec::with_capacity(size * 5);
    params.extend(padded().take(size).flat_map(|(s, m, _)| [Param::Text(s), Param::Int(m)]));
    params.extend(padded().take(size).flat_map(|(s, _, b)| [Param::Text(s), Param::Int(b)]));
    params.extend(padded().take(size).map(|(s, _, _)| Param::Text(s)));
    (sql, params)
}

/// A sender's row. Parameters: sender.
pub(crate) const READ: &str = "SELECT messages, bytes FROM messagebox_sender_usage WHERE sender = ?";

/// A statement parameter, converted by each backend to its driver's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::message;

    #[test]
    fn grouped_per_sender_case_folded_and_sorted() {
        let mut rows: Vec<NewMessage> = ["a-1", "a-2", "a-3", "a-4"].iter().map(|id| message(id)).collect();
        rows[0].sender = "02BB".into();
        rows[1].sender = "02aa".into();
        rows[2].sender = "02bb".into();
        rows[3].sender = "02aa".into();
        rows[3].body = "é".into();
        let refs: Vec<&NewMessage> = rows.iter().collect();
        use InsertOutcome::*;
        let got = inserted(&refs, &[Inserted, Inserted, Inserted, Duplicate]);
        assert_eq!(
            got,
            [Delta { sender: "02aa", messages: 1, bytes: 1 }, Delta { sender: "02BB", messages: 2, bytes: 2 }],
            "the duplicate adds nothing; 02BB and 02bb are one sender"
        );
        let gone = vec![("02cc".to_string(), 10), ("02CC".to_string(), 5)];
        assert_eq!(deleted(&gone), [Delta { sender: "02cc", messages: 2, bytes: 15 }]);
    }

    #[test]
    fn statements_pad_to_a_few_shapes() {
        let d = [Delta { sender: "s1", messages: 2, bytes: 30 }, Delta { sender: "s2", messages: 1, bytes: 4 }];
        let more = [d[0].clone(), d[1].clone(), Delta { sender: "s3", messages: 1, bytes: 1 }];
        let (sql, params) = add(Dialect::Sqlite, &more);
        assert_eq!(sql.matches("(?,?,?)").count(), 4);
        assert_eq!(params.len(), 12);
        assert_eq!(params[9..], [Param::Text("s3"), Param::Int(0), Param::Int(0)]);
        assert!(add(Dialect::Mysql, &d).0.ends_with("bytes = bytes + VALUES(bytes)"));
        let (sql, params) = subtract(Dialect::Mysql, &more);
        assert_eq!(sql.matches('?').count(), params.len());
        assert_eq!(params.len(), 20);
        assert!(sql.starts_with("UPDATE messagebox_sender_usage SET messages = GREATEST(messages - CASE WHEN"));
        assert_eq!(params[6..8], [Param::Text(""), Param::Int(0)], "padding names no sender");
        assert_eq!(params[8..10], [Param::Text("s1"), Param::Int(30)]);
        assert!(subtract(Dialect::Sqlite, &d).0.contains("MAX(bytes - CASE"));
    }
}
