//! Storage quotas (`MESSAGE_BOX_MAX_SENDER_MESSAGES` / `_BYTES`, `MESSAGE_BOX_MAX_INBOX_MESSAGES`
//! / `_BYTES`, `../shared/spec/ts-next-ops.md` §1.2, §2.4): what one identity may keep stored,
//! counted over unexpired rows, as a sender (across all recipients) and as a recipient (across
//! all boxes); bytes are the stored body (the envelope).
//!
//! This module owns the quota rule (the sender first, then each recipient in order; messages
//! before bytes; `usage + new > limit` refuses) and the per-identity ledger it is checked
//! against. The newer upstream runs `COUNT(*)` and `SUM(OCTET_LENGTH(body))` over the
//! identity's rows inside every send's transaction, under row locks. That reads every stored
//! body of the sender and of each recipient on every send, and our group-commit writer has no
//! per-request transaction to lock in. Instead:
//!
//! * The ledger keeps, per identity, an **upper bound** of its stored usage (`base`) plus what
//!   sends in flight have reserved (`inflight`). Every row this process stores is added when
//!   its insert finishes (and kept added when the insert's fate is unknown); deletions
//!   (acknowledgements, expiry) are not subtracted, so `base` never undercounts.
//! * A send checks and reserves under one lock: the check is atomic with the reservation, so
//!   concurrent sends in one process never overshoot a quota (bound: 0 rows, 0 bytes).
//! * The database is asked (one aggregate over the identity's indexed rows) only when an
//!   identity is first seen and when the upper bound says "refuse": the exact figure, which
//!   has expired and acknowledged rows gone, then decides. A refusal stands for
//!   [`RECHECK_AFTER`] before the database is asked again (an identity at its quota retrying
//!   does not cost one aggregate per attempt); an acknowledgement clears that for the inbox.
//!
//! The ledger is per process: replicas sharing one MySQL database each see the others' rows
//! only when they read the database (first sight, and at the quota), so N replicas may
//! together overshoot by what the other N−1 store between two such reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Backend, InsertOutcome, StoreError, Timestamp};
use crate::limits::Limit;

/// How long a refusal confirmed by the database stands before the database is asked again
/// (unless the inbox's owner acknowledges in between). Bounds the aggregates an identity at
/// its quota costs to one per this interval; expiries free quota at most this much later.
pub const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// Identities the ledger remembers per scope before it forgets idle ones (they are read from
/// the database again when next seen). Bounds its memory at ~200 bytes an entry.
pub const MAX_TRACKED_IDENTITIES: usize = 100_000;

/// Longest a read of an identity's usage waits for its sends in flight to finish.
const DRAIN_WAIT: Duration = Duration::from_millis(250);

/// Passes of [`Ledger::reserve`] before it decides on what it has.
const LAST_PASS: u32 = 5;

/// The four quotas (`None`: disabled, `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaLimits {
    pub sender_messages: Limit,
    pub sender_bytes: Limit,
    pub inbox_messages: Limit,
    pub inbox_bytes: Limit,
}

impl QuotaLimits {
    pub fn from_resources(resources: &crate::limits::ResourceLimits) -> QuotaLimits {
        let m = &resources.messages;
        QuotaLimits {
            sender_messages: m.max_sender_messages,
            sender_bytes: m.max_sender_bytes,
            inbox_messages: m.max_inbox_messages,
            inbox_bytes: m.max_inbox_bytes,
        }
    }

    /// No quota at all.
    pub const NONE: QuotaLimits =
        QuotaLimits { sender_messages: None, sender_bytes: None, inbox_messages: None, inbox_bytes: None };

    fn of(&self, scope: Scope) -> (Limit, Limit) {
        match scope {
            Scope::Sender => (self.sender_messages, self.sender_bytes),
            Scope::Inbox => (self.inbox_messages, self.inbox_bytes),
        }
    }

    fn enabled(&self, scope: Scope) -> bool {
        let (m, b) = self.of(scope);
        m.is_some() || b.is_some()
    }
}

impl Default for QuotaLimits {
    /// The `standard` profile's quotas.
    fn default() -> Self {
        QuotaLimits::from_resources(&crate::limits::ResourceLimits::default())
    }
}

/// Whose usage: a sender's rows (`messages.sender`) or a recipient's (`messages.recipient`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Sender,
    Inbox,
}

/// Which measure of a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Messages,
    Bytes,
}

impl Resource {
    /// The `"resource"` field of the 429 body.
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Messages => "messages",
            Resource::Bytes => "bytes",
        }
    }
}

/// A send refused by a quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub scope: Scope,
    pub resource: Resource,
    pub limit: u64,
}

/// Unexpired rows and their stored body bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub messages: u64,
    pub bytes: u64,
}

impl Usage {
    fn add(&mut self, other: Usage) {
        self.messages = self.messages.saturating_add(other.messages);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }

    fn sub(&mut self, other: Usage) {
        self.messages = self.messages.saturating_sub(other.messages);
        self.bytes = self.bytes.saturating_sub(other.bytes);
    }

    fn plus(mut self, other: Usage) -> Usage {
        self.add(other);
        self
    }

    fn minus(mut self, other: Usage) -> Usage {
        self.sub(other);
        self
    }
}

/// One new row a send wants to store (rows known to be idempotent re-sends are left out:
/// they store nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub sender: String,
    pub recipient: String,
    /// The stored body's UTF-8 bytes.
    pub bytes: u64,
}

/// What one identity has stored, as far as this process knows.
#[derive(Debug, Default)]
struct Entry {
    /// An upper bound of its stored unexpired usage; `None` until read from the database.
    base: Option<Usage>,
    /// Reserved by sends whose insert has not finished.
    inflight: Usage,
    /// Everything ever added to `base` by finished inserts (monotonic): a read of the database
    /// adds what finished while it ran (see [`Ledger::load`]).
    added: Usage,
    /// When the database was last read: a refusal within [`RECHECK_AFTER`] of it is final.
    /// `None`: ask it before refusing.
    read_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    sender: HashMap<String, Entry>,
    inbox: HashMap<String, Entry>,
}

impl State {
    fn map(&mut self, scope: Scope) -> &mut HashMap<String, Entry> {
        match scope {
            Scope::Sender => &mut self.sender,
            Scope::Inbox => &mut self.inbox,
        }
    }

    /// The identity's entry, created empty; an idle entry is forgotten first when the map is full.
    fn entry(&mut self, scope: Scope, key: &str) -> &mut Entry {
        let map = self.map(scope);
        // Looked up before inserting: the key is copied only for a new entry (this runs on
        // every send).
        if !map.contains_key(key) {
            if map.len() >= MAX_TRACKED_IDENTITIES {
                map.retain(|_, e| e.inflight != Usage::default());
            }
            map.insert(key.to_string(), Entry::default());
        }
        map.get_mut(key).expect("present")
    }
}

/// The per-process quota ledger of one store (see the module docs).
#[derive(Debug)]
pub struct Ledger {
    limits: QuotaLimits,
    state: Mutex<State>,
    /// Woken when an identity's last send in flight finishes (see [`Ledger::load`]).
    drained: tokio::sync::Notify,
}

/// What a check found.
enum Check {
    /// Reserved.
    Fits,
    /// Identities to read from the database first.
    Load(Vec<(Scope, String)>),
    Refused(QuotaExceeded),
}

impl Ledger {
    pub fn new(limits: QuotaLimits) -> Arc<Ledger> {
        Arc::new(Ledger { limits, state: Mutex::new(State::default()), drained: tokio::sync::Notify::new() })
    }

    pub fn limits(&self) -> QuotaLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `charges` against every quota and reserves them: the sender's quota first, then
    /// each recipient's in the order of first appearance. Reads the database (`store`, at
    /// `now`) for identities not known yet and before refusing on an upper bound.
    pub async fn reserve(
        self: &Arc<Self>,
        store: &dyn Backend,
        charges: Vec<Charge>,
        now: Timestamp,
    ) -> Result<Reservation, ReserveError> {
        let mut reservation = Reservation { ledger: self.clone(), charges, done: true };
        if reservation.charges.is_empty() {
            return Ok(reservation);
        }
        // Each pass either reserves, refuses, or reads what it lacked; a read makes the next
        // pass decide on the database's figures, so two reads suffice unless sends finished
        // during a read or an entry was forgotten (the last pass decides on what it has).
        let mut pass = 0;
        loop {
            match self.check(&reservation.charges, pass == LAST_PASS) {
                Check::Fits => {
                    reservation.done = false;
                    return Ok(reservation);
                }
                Check::Refused(e) => return Err(ReserveError::Exceeded(e)),
                Check::Load(wanted) => {
                    for (scope, key) in wanted {
                        self.load(store, scope, &key, now).await?;
                    }
                }
            }
            pass += 1;
        }
    }

    /// Per identity (in check order) what the charges add.
    fn demand<'a>(&self, charges: &'a [Charge]) -> Vec<(Scope, &'a str, Usage)> {
        let mut out: Vec<(Scope, &'a str, Usage)> = Vec::new();
        let mut add = |scope: Scope, key: &'a str, bytes: u64| {
            if !self.limits.enabled(scope) {
                return;
            }
            let one = Usage { messages: 1, bytes };
            match out.iter_mut().find(|(s, k, _)| *s == scope && *k == key) {
                Some((_, _, u)) => u.add(one),
                None => out.push((scope, key, one)),
            }
        };
        for c in charges {
            add(Scope::Sender, &c.sender, c.bytes);
        }
        for c in charges {
            add(Scope::Inbox, &c.recipient, c.bytes);
        }
        out
    }

    /// One pass of [`Self::reserve`] under the lock. `last`: decide on what is known
    /// (unknown identities count as empty).
    fn check(&self, charges: &[Charge], last: bool) -> Check {
        let demand = self.demand(charges);
        let mut state = self.lock();
        let missing: Vec<(Scope, String)> = demand
            .iter()
            .filter(|(scope, key, _)| state.map(*scope).get(*key).is_none_or(|e| e.base.is_none()))
            .map(|(scope, key, _)| (*scope, key.to_string()))
            .collect();
        if !missing.is_empty() && !last {
            return Check::Load(missing);
        }
        for (scope, key, new) in &demand {
            let (max_messages, max_bytes) = self.limits.of(*scope);
            let entry = state.entry(*scope, key);
            let total = entry.base.unwrap_or_default().plus(entry.inflight).plus(*new);
            let over = [(Resource::Messages, max_messages, total.messages), (Resource::Bytes, max_bytes, total.bytes)]
                .into_iter()
                .find_map(|(resource, limit, used)| limit.filter(|l| used > *l).map(|limit| (resource, limit)));
            if let Some((resource, limit)) = over {
                let confirmed = entry.read_at.is_some_and(|t| t.elapsed() < RECHECK_AFTER);
                if confirmed || last {
                    return Check::Refused(QuotaExceeded { scope: *scope, resource, limit });
                }
                // An upper bound says no: the database decides (and starts the recheck interval).
                return Check::Load(vec![(*scope, key.to_string())]);
            }
        }
        for (scope, key, new) in demand {
            state.entry(scope, key).inflight.add(new);
        }
        Check::Fits
    }

    /// Reads an identity's usage from the database, once no send of it is in flight: a row
    /// in flight may or may not be in what the read sees, and counting it twice could refuse
    /// a send that fits. (Its other sends meanwhile find the quota full and wait here too, so
    /// the in-flight ones drain.) Rows whose insert finished while the read ran anyway are
    /// added to it, keeping the figure an upper bound; such a read confirms no refusal.
    async fn load(&self, store: &dyn Backend, scope: Scope, key: &str, now: Timestamp) -> Result<(), StoreError> {
        let waiting = async {
            loop {
                let drained = self.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if self.lock().entry(scope, key).inflight == Usage::default() {
                    return;
                }
                drained.await;
            }
        };
        // Sends that still fit keep going meanwhile (a smaller body under a byte quota), so
        // the wait is bounded; a read with sends in flight confirms nothing (see below).
        let _ = tokio::time::timeout(DRAIN_WAIT, waiting).await;
        let (mark, idle_before) = {
            let mut state = self.lock();
            let e = state.entry(scope, key);
            (e.added, e.inflight == Usage::default())
        };
        let read = store.quota_usage(scope, key, now).await?;
        let mut state = self.lock();
        let entry = state.entry(scope, key);
        let since = entry.added.minus(mark);
        entry.base = Some(read.plus(since));
        // Exact only if no send of the identity was in flight at any point of the read;
        // otherwise an upper bound that a refusal must not rely on.
        let exact = idle_before && since == Usage::default() && entry.inflight == Usage::default();
        entry.read_at = exact.then(Instant::now);
        Ok(())
    }

    /// After an acknowledgement by `recipient`: its inbox shrank, so a refusal must be
    /// confirmed by the database again.
    pub fn acknowledged(&self, recipient: &str) {
        if let Some(e) = self.lock().inbox.get_mut(recipient) {
            e.read_at = None;
        }
    }

    /// Ends a reservation: every charge leaves `inflight`; those whose row may be stored
    /// (`stored(i)`) join `base`.
    fn finish(&self, charges: &[Charge], stored: impl Fn(usize) -> bool) {
        let mut drained = false;
        let mut state = self.lock();
        for (i, c) in charges.iter().enumerate() {
            let one = Usage { messages: 1, bytes: c.bytes };
            for (scope, key) in [(Scope::Sender, &c.sender), (Scope::Inbox, &c.recipient)] {
                if !self.limits.enabled(scope) {
                    continue;
                }
                let Some(e) = state.map(scope).get_mut(key.as_str()) else { continue };
                e.inflight.sub(one);
                drained |= e.inflight == Usage::default();
                if stored(i) {
                    e.added.add(one);
                    if let Some(b) = e.base.as_mut() {
                        b.add(one);
                    }
                }
            }
        }
        drop(state);
        if drained {
            self.drained.notify_waiters();
        }
    }
}

/// Why [`Ledger::reserve`] reserved nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum ReserveError {
    Exceeded(QuotaExceeded),
    /// Reading an identity's usage failed.
    Store(StoreError),
}

impl From<StoreError> for ReserveError {
    fn from(e: StoreError) -> Self {
        ReserveError::Store(e)
    }
}

/// Charges reserved in a [`Ledger`]. Finish it with the insert's outcomes
/// ([`Reservation::stored`]); dropped unfinished (an insert that failed or whose caller went
/// away, which may still have stored the rows), every charge counts as stored.
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<Ledger>,
    charges: Vec<Charge>,
    done: bool,
}

impl Reservation {
    /// `outcome(i)`: the insert outcome of charge `i`'s row; a duplicate stored nothing.
    pub fn stored(mut self, outcome: impl Fn(usize) -> InsertOutcome) {
        self.done = true;
        self.ledger.finish(&self.charges, |i| outcome(i) != InsertOutcome::Duplicate);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.done {
            self.ledger.finish(&self.charges, |_| true);
        }
    }
}
