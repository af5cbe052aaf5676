//! Storage quotas (`MESSAGE_BOX_MAX_SENDER_MESSAGES` / `_BYTES`, `MESSAGE_BOX_MAX_INBOX_MESSAGES`
//! / `_BYTES`, `../shared/spec/ts-next-ops.md` §1.2, §2.4): what one identity may keep stored,
//! as a sender (across all recipients) and as a recipient (across all boxes); bytes are the
//! stored body (the envelope).
//!
//! This module owns the quota rule (the sender first, then each recipient in order; messages
//! before bytes; `usage + new > limit` refuses) and the per-identity ledger it is checked
//! against. The newer upstream runs `COUNT(*)` and `SUM(OCTET_LENGTH(body))` over the
//! identity's rows inside every send's transaction, under row locks. That reads every stored
//! body of the sender and of each recipient on every send, and our group-commit writer has no
//! per-request transaction to lock in. Instead:
//!
//! * The database keeps what the ledger reads: a recipient's usage is one aggregate over its
//!   unexpired rows (the recipient index); a sender's is its row of
//!   `messagebox_sender_usage`, which every change this server makes to `messages` keeps exact
//!   in the same transaction (the group-commit writer adds what a batch inserted; each delete
//!   subtracts what it deleted). That row counts **expired rows until they are swept**, so
//!   before a read that would confirm a sender's refusal the ledger sweeps up to
//!   [`SWEEP_BEFORE_REFUSAL`] expired rows (any sender's, oldest index order) first. A larger
//!   backlog of expired rows drains by the retention sweeper and by each further confirmation
//!   (one per identity per [`RECHECK_AFTER`]); until then a sender's expired rows may still
//!   count against it.
//! * The ledger keeps, per identity, an **upper bound** of its stored usage (`base`) plus what
//!   sends in flight have reserved (`inflight`). Every row this process stores is added when
//!   its insert finishes (and kept added when the insert's fate is unknown); deletions
//!   (acknowledgements, expiry) are not subtracted, so `base` never undercounts.
//! * A send checks and reserves under the locks of every identity it touches, taken together
//!   in shard order: the check is atomic with the reservation, so concurrent sends in one
//!   process never overshoot a quota (bound: 0 rows, 0 bytes).
//! * The database is asked only when an identity is first seen and when the upper bound says
//!   "refuse": the exact figure, which has acknowledged (and, for a recipient, expired) rows
//!   gone, then decides. A refusal stands for [`RECHECK_AFTER`] before the database is asked
//!   again (an identity at its quota retrying does not cost one read per attempt); a delete
//!   that removes an identity's rows (an acknowledgement, a sweep) clears that for it.
//! * State is split into [`SHARDS`] shards by a hash of the identity, each behind its own
//!   mutex, so sends of unrelated identities on different cores rarely meet on a lock; a
//!   reservation remembers the slots it charged, so settling it hashes nothing; waiters for
//!   an identity's sends in flight are woken only when there are some. Memory is bounded by
//!   [`MAX_TRACKED_IDENTITIES`].
//!
//! The ledger is per process: replicas sharing one MySQL database each see the others' rows
//! only when they read the database (first sight, and at the quota), so N replicas may
//! together overshoot by what the other N−1 store between two such reads.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{Backend, InsertOutcome, StoreError, Timestamp};
use crate::limits::Limit;

/// How long a refusal confirmed by the database stands before the database is asked again
/// (unless a delete of the identity's rows comes in between). Bounds the reads an identity at
/// its quota costs to one per this interval; expiries free quota at most this much later.
pub const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// Identities the ledger remembers before it forgets idle ones (they are read from the
/// database again when next seen). Bounds its memory at ~350 bytes an entry.
pub const MAX_TRACKED_IDENTITIES: usize = 100_000;

/// Expired rows swept before a read that would confirm a sender's refusal (see the module
/// docs): one bounded delete along `messages_expiration_index`.
pub const SWEEP_BEFORE_REFUSAL: u64 = 1000;

/// Shards of the ledger's state (a power of two, at most 32: see [`Ledger::check`]).
pub const SHARDS: usize = 16;

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

impl Scope {
    fn index(self) -> usize {
        match self {
            Scope::Sender => 0,
            Scope::Inbox => 1,
        }
    }
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
/// they store nothing). Borrowed from the row: the reservation keeps none of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge<'a> {
    pub sender: &'a str,
    pub recipient: &'a str,
    /// The stored body's UTF-8 bytes.
    pub bytes: u64,
}

/// What one identity has stored in one scope, as far as this process knows.
#[derive(Debug, Default)]
struct Side {
    /// An upper bound of its stored usage; `None` until read from the database.
    base: Option<Usage>,
    /// Reserved by sends whose insert has not finished.
    inflight: Usage,
    /// Everything ever added to `base` by finished inserts (monotonic): a read of the database
    /// adds what finished while it ran (see [`Ledger::load`]).
    added: Usage,
    /// When the database was last read: a refusal within [`RECHECK_AFTER`] of it is final.
    /// `None`: ask it before refusing.
    read_at: Option<Instant>,
    /// Reads of this side waiting for `inflight` to drain: only then does settling wake anyone.
    waiting: u32,
}

impl Side {
    fn idle(&self) -> bool {
        self.inflight == Usage::default() && self.waiting == 0
    }
}

/// One identity (its key is in the shard's index): its usage as a sender and as a recipient.
#[derive(Debug, Default)]
struct Entry {
    sides: [Side; 2],
}

/// Where an entry lives: its shard and its slot there. An entry stays in its slot while any
/// of its sides is not idle, so a reservation or a waiting read can hold this instead of
/// the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    shard: u32,
    index: u32,
}

/// A part of the ledger's identities, behind one mutex.
#[derive(Debug, Default)]
struct Shard {
    index: HashMap<Box<str>, u32>,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
}

impl Shard {
    fn find(&self, key: &str) -> Option<&Entry> {
        let i = *self.index.get(key)?;
        self.entries[i as usize].as_ref()
    }

    /// The entry's slot, created empty; idle entries are forgotten first when the shard is
    /// full, except those `keep` names (the caller's other identities, whose slots it holds
    /// or whose figures it has just checked).
    fn slot(&mut self, key: &str, keep: impl Fn(&str) -> bool) -> u32 {
        if let Some(&i) = self.index.get(key) {
            return i;
        }
        if self.index.len() >= MAX_TRACKED_IDENTITIES / SHARDS {
            let (entries, free) = (&mut self.entries, &mut self.free);
            self.index.retain(|k, i| {
                let slot = &mut entries[*i as usize];
                if !keep(k) && slot.as_ref().is_some_and(|e| e.sides.iter().all(Side::idle)) {
                    *slot = None;
                    free.push(*i);
                    false
                } else {
                    true
                }
            });
        }
        let entry = Some(Entry::default());
        let i = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = entry;
                i
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        self.index.insert(key.into(), i);
        i
    }

    /// The side at a slot this caller keeps occupied (see [`Slot`]).
    fn side(&mut self, index: u32, scope: Scope) -> &mut Side {
        let entry = self.entries[index as usize].as_mut().expect("an occupied slot stays");
        &mut entry.sides[scope.index()]
    }
}

/// A shard on its own cache line(s): the two cores lock different shards without sharing one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// The per-process quota ledger of one store (see the module docs).
#[derive(Debug)]
pub struct Ledger {
    limits: QuotaLimits,
    hasher: RandomState,
    shards: Box<[Padded]>,
    /// Woken when an identity's last send in flight finishes while a read waits for it (see
    /// [`Ledger::load`]).
    drained: tokio::sync::Notify,
}

/// What one send adds to one identity's side.
struct Demand<'a> {
    scope: Scope,
    key: &'a str,
    shard: usize,
    new: Usage,
    /// Filled in by [`Ledger::check`] once the shard is locked.
    slot: u32,
}

/// An identity to read from the database; `confirm`: the read would confirm a refusal.
struct Load {
    scope: Scope,
    key: String,
    confirm: bool,
}

/// What a check found.
enum Check {
    /// Reserved: per charge, the slots of its sides.
    Fits(Vec<Settle>),
    /// Identities to read from the database first.
    Load(Vec<Load>),
    Refused(QuotaExceeded),
}

/// One reserved charge: the slots it holds `inflight` in (per scope; `None` when that scope
/// has no quota) and its bytes.
#[derive(Debug)]
struct Settle {
    slots: [Option<Slot>; 2],
    bytes: u64,
}

impl Ledger {
    pub fn new(limits: QuotaLimits) -> std::sync::Arc<Ledger> {
        std::sync::Arc::new(Ledger {
            limits,
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Padded::default()).collect(),
            drained: tokio::sync::Notify::new(),
        })
    }

    pub fn limits(&self) -> QuotaLimits {
        self.limits
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) & (SHARDS - 1)
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        self.shards[shard].0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks `charges` against every quota and reserves them: the sender's quota first, then
    /// each recipient's in the order of first appearance. Reads the database (`store`, at
    /// `now`) for identities not known yet and before refusing on an upper bound.
    pub async fn reserve(
        &self,
        store: &dyn Backend,
        charges: &[Charge<'_>],
        now: Timestamp,
    ) -> Result<Reservation<'_>, ReserveError> {
        let mut reservation = Reservation { ledger: self, settles: Vec::new() };
        if charges.is_empty() || !(self.limits.enabled(Scope::Sender) || self.limits.enabled(Scope::Inbox)) {
            return Ok(reservation);
        }
        // Each pass either reserves, refuses, or reads what it lacked; a read makes the next
        // pass decide on the database's figures, so two reads suffice unless sends finished
        // during a read or an entry was forgotten (the last pass decides on what it has).
        let mut pass = 0;
        loop {
            match self.check(charges, pass == LAST_PASS) {
                Check::Fits(settles) => {
                    reservation.settles = settles;
                    return Ok(reservation);
                }
                Check::Refused(e) => return Err(ReserveError::Exceeded(e)),
                Check::Load(wanted) => {
                    for load in wanted {
                        self.load(store, &load, now).await?;
                    }
                }
            }
            pass += 1;
        }
    }

    /// Per identity and scope (in check order) what the charges add, and per charge the
    /// indexes of its sender's and recipient's demand.
    fn demand<'a>(&self, charges: &[Charge<'a>]) -> (Vec<Demand<'a>>, Vec<[Option<usize>; 2]>) {
        let mut out: Vec<Demand<'a>> = Vec::with_capacity(2 * charges.len());
        let mut of_charge = vec![[None; 2]; charges.len()];
        for scope in [Scope::Sender, Scope::Inbox] {
            if !self.limits.enabled(scope) {
                continue;
            }
            for (c, charge) in charges.iter().enumerate() {
                let key = match scope {
                    Scope::Sender => charge.sender,
                    Scope::Inbox => charge.recipient,
                };
                let one = Usage { messages: 1, bytes: charge.bytes };
                let i = match out.iter().position(|d| d.scope == scope && d.key == key) {
                    Some(i) => {
                        out[i].new.add(one);
                        i
                    }
                    None => {
                        let shard = self.shard_of(key);
                        out.push(Demand { scope, key, shard, new: one, slot: 0 });
                        out.len() - 1
                    }
                };
                of_charge[c][scope.index()] = Some(i);
            }
        }
        (out, of_charge)
    }

    /// One pass of [`Self::reserve`] with the shards of every identity involved locked, in
    /// ascending order (so two passes never wait on each other crosswise). `last`: decide on
    /// what is known (unknown identities count as empty).
    fn check(&self, charges: &[Charge<'_>], last: bool) -> Check {
        let (mut demand, of_charge) = self.demand(charges);
        let wanted: u32 = demand.iter().fold(0, |bits, d| bits | (1 << d.shard));
        let mut guards: [Option<MutexGuard<'_, Shard>>; SHARDS] = [const { None }; SHARDS];
        for (shard, guard) in guards.iter_mut().enumerate() {
            if wanted & (1 << shard) != 0 {
                *guard = Some(self.lock(shard));
            }
        }
        let missing: Vec<Load> = demand
            .iter()
            .filter(|d| {
                let guard = guards[d.shard].as_ref().expect("locked above");
                guard.find(d.key).is_none_or(|e| e.sides[d.scope.index()].base.is_none())
            })
            .map(|d| Load { scope: d.scope, key: d.key.to_string(), confirm: false })
            .collect();
        if !missing.is_empty() && !last {
            return Check::Load(missing);
        }
        // Every slot first: creating one may forget idle entries, never one of this send's.
        for i in 0..demand.len() {
            let (key, shard) = (demand[i].key, demand[i].shard);
            let slot = guards[shard].as_mut().expect("locked above").slot(key, |k| demand.iter().any(|d| d.key == k));
            demand[i].slot = slot;
        }
        for d in &demand {
            let (max_messages, max_bytes) = self.limits.of(d.scope);
            let guard = guards[d.shard].as_mut().expect("locked above");
            let side = guard.side(d.slot, d.scope);
            let total = side.base.unwrap_or_default().plus(side.inflight).plus(d.new);
            let over = [(Resource::Messages, max_messages, total.messages), (Resource::Bytes, max_bytes, total.bytes)]
                .into_iter()
                .find_map(|(resource, limit, used)| limit.filter(|l| used > *l).map(|limit| (resource, limit)));
            if let Some((resource, limit)) = over {
                let confirmed = side.read_at.is_some_and(|t| t.elapsed() < RECHECK_AFTER);
                if confirmed || last {
                    return Check::Refused(QuotaExceeded { scope: d.scope, resource, limit });
                }
                // An upper bound says no: the database decides (and starts the recheck interval).
                return Check::Load(vec![Load { scope: d.scope, key: d.key.to_string(), confirm: true }]);
            }
        }
        for d in &demand {
            guards[d.shard].as_mut().expect("locked above").side(d.slot, d.scope).inflight.add(d.new);
        }
        let settles = charges
            .iter()
            .zip(of_charge)
            .map(|(c, sides)| Settle {
                slots: sides.map(|i| i.map(|i| Slot { shard: demand[i].shard as u32, index: demand[i].slot })),
                bytes: c.bytes,
            })
            .collect();
        Check::Fits(settles)
    }

    /// Reads an identity's usage from the database, once no send of it is in flight: a row
    /// in flight may or may not be in what the read sees, and counting it twice could refuse
    /// a send that fits. (Its other sends meanwhile find the quota full and wait here too, so
    /// the in-flight ones drain.) Rows whose insert finished while the read ran anyway are
    /// added to it, keeping the figure an upper bound; such a read confirms no refusal. A
    /// read that would confirm a sender's refusal sweeps expired rows first (module docs).
    async fn load(&self, store: &dyn Backend, load: &Load, now: Timestamp) -> Result<(), StoreError> {
        let scope = load.scope;
        if load.confirm && scope == Scope::Sender {
            // The read decides either way: a failed sweep leaves expired rows counted.
            if let Err(e) = store.delete_expired(now, Some(SWEEP_BEFORE_REFUSAL)).await {
                tracing::debug!(error = %e, "quota: sweeping expired rows before a refusal failed");
            }
        }
        let waiter = Waiter::new(self, scope, &load.key);
        let waiting = async {
            loop {
                let drained = self.drained.notified();
                tokio::pin!(drained);
                drained.as_mut().enable();
                if waiter.with(|side| side.inflight == Usage::default()) {
                    return;
                }
                drained.await;
            }
        };
        // Sends that still fit keep going meanwhile (a smaller body under a byte quota), so
        // the wait is bounded; a read with sends in flight confirms nothing (see below).
        let _ = tokio::time::timeout(DRAIN_WAIT, waiting).await;
        let (mark, idle_before) = waiter.with(|side| (side.added, side.inflight == Usage::default()));
        let read = store.quota_usage(scope, &load.key, now).await?;
        waiter.with(|side| {
            let since = side.added.minus(mark);
            side.base = Some(read.plus(since));
            // Exact only if no send of the identity was in flight at any point of the read;
            // otherwise an upper bound that a refusal must not rely on.
            let exact = idle_before && since == Usage::default() && side.inflight == Usage::default();
            side.read_at = exact.then(Instant::now);
        });
        Ok(())
    }

    /// After a delete of stored rows: the inbox of `recipient` (if given) and each of
    /// `senders` hold less now, so a refusal must be confirmed by the database again.
    pub fn deleted<'a>(&self, recipient: Option<&str>, senders: impl IntoIterator<Item = &'a str>) {
        let sides =
            recipient.map(|r| (Scope::Inbox, r)).into_iter().chain(senders.into_iter().map(|s| (Scope::Sender, s)));
        for (scope, key) in sides {
            if !self.limits.enabled(scope) {
                continue;
            }
            let shard = self.shard_of(key);
            let mut guard = self.lock(shard);
            if let Some(&i) = guard.index.get(key) {
                guard.side(i, scope).read_at = None;
            }
        }
    }

    /// Ends a reservation: every charge leaves `inflight`; those whose row may be stored
    /// (`stored(i)`) join `base`.
    fn finish(&self, settles: &[Settle], stored: impl Fn(usize) -> bool) {
        let mut wake = false;
        let mut held: Option<(u32, MutexGuard<'_, Shard>)> = None;
        for (i, settle) in settles.iter().enumerate() {
            let one = Usage { messages: 1, bytes: settle.bytes };
            let stored = stored(i);
            for (scope, slot) in [Scope::Sender, Scope::Inbox].into_iter().zip(settle.slots) {
                let Some(slot) = slot else { continue };
                // One lock at a time (settling needs no atomicity across identities); the
                // guard is kept while consecutive slots share a shard.
                // Released before the next is taken: holding two out of shard order could
                // deadlock with a check.
                if held.as_ref().is_none_or(|(s, _)| *s != slot.shard) {
                    drop(held.take());
                    held = Some((slot.shard, self.lock(slot.shard as usize)));
                }
                let (_, guard) = held.as_mut().expect("just locked");
                let side = guard.side(slot.index, scope);
                side.inflight.sub(one);
                wake |= side.waiting > 0 && side.inflight == Usage::default();
                if stored {
                    side.added.add(one);
                    if let Some(b) = side.base.as_mut() {
                        b.add(one);
                    }
                }
            }
        }
        drop(held);
        if wake {
            self.drained.notify_waiters();
        }
    }
}

/// A read waiting on an identity's side: counted in `waiting` (so settling wakes it) and
/// keeping the entry's slot occupied until dropped, also when its future is dropped.
struct Waiter<'l> {
    ledger: &'l Ledger,
    scope: Scope,
    slot: Slot,
}

impl<'l> Waiter<'l> {
    fn new(ledger: &'l Ledger, scope: Scope, key: &str) -> Waiter<'l> {
        let shard = ledger.shard_of(key);
        let mut guard = ledger.lock(shard);
        let index = guard.slot(key, |_| false);
        guard.side(index, scope).waiting += 1;
        Waiter { ledger, scope, slot: Slot { shard: shard as u32, index } }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Side) -> T) -> T {
        let mut guard = self.ledger.lock(self.slot.shard as usize);
        f(guard.side(self.slot.index, self.scope))
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.with(|side| side.waiting -= 1);
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
pub struct Reservation<'l> {
    ledger: &'l Ledger,
    /// Empty once finished (or when nothing was reserved).
    settles: Vec<Settle>,
}

impl Reservation<'_> {
    /// `outcome(i)`: the insert outcome of charge `i`'s row; a duplicate stored nothing.
    pub fn stored(mut self, outcome: impl Fn(usize) -> InsertOutcome) {
        let settles = std::mem::take(&mut self.settles);
        self.ledger.finish(&settles, |i| outcome(i) != InsertOutcome::Duplicate);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settles.is_empty() {
            self.ledger.finish(&self.settles, |_| true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two identities whose entries live in different shards.
    fn keys_in_two_shards(ledger: &Ledger) -> (String, String) {
        let a = "02aa".to_string();
        let b = (0..).map(|i| format!("02bb{i}")).find(|k| ledger.shard_of(k) != ledger.shard_of(&a)).unwrap();
        (a, b)
    }

    /// Sets what a database read would have set: `base` and a fresh `read_at`.
    fn read(ledger: &Ledger, scope: Scope, key: &str, usage: Usage) {
        let mut shard = ledger.lock(ledger.shard_of(key));
        let i = shard.slot(key, |_| false);
        let side = shard.side(i, scope);
        side.base = Some(usage);
        side.read_at = Some(Instant::now());
    }

    fn side<T>(ledger: &Ledger, scope: Scope, key: &str, f: impl FnOnce(&Side) -> T) -> T {
        let shard = ledger.lock(ledger.shard_of(key));
        f(&shard.find(key).unwrap().sides[scope.index()])
    }

    #[test]
    fn check_reserves_across_shards_and_finish_settles() {
        let limits = QuotaLimits { sender_messages: Some(4), inbox_bytes: Some(100), ..QuotaLimits::NONE };
        let ledger = Ledger::new(limits);
        let (a, b) = keys_in_two_shards(&ledger);
        let charge = Charge { sender: &a, recipient: &b, bytes: 40 };
        assert!(
            matches!(ledger.check(&[charge], false), Check::Load(l) if l.len() == 2 && l.iter().all(|l| !l.confirm))
        );
        read(&ledger, Scope::Sender, &a, Usage { messages: 1, bytes: 0 });
        read(&ledger, Scope::Inbox, &b, Usage::default());
        let Check::Fits(first) = ledger.check(&[charge], false) else { panic!("fits") };
        let Check::Fits(second) = ledger.check(&[charge], false) else { panic!("fits") };
        assert_eq!(side(&ledger, Scope::Sender, &a, |s| s.inflight), Usage { messages: 2, bytes: 80 });
        // 3 × 40 bytes > 100 in b's inbox: refused, confirmed by the fresh read; nothing reserved.
        let refused = QuotaExceeded { scope: Scope::Inbox, resource: Resource::Bytes, limit: 100 };
        assert!(matches!(ledger.check(&[charge], false), Check::Refused(q) if q == refused));
        assert_eq!(side(&ledger, Scope::Sender, &a, |s| s.inflight.messages), 2);
        ledger.finish(&first, |_| true);
        ledger.finish(&second, |_| false);
        assert_eq!(
            side(&ledger, Scope::Sender, &a, |s| (s.base, s.inflight)),
            (Some(Usage { messages: 2, bytes: 40 }), Usage::default())
        );
        assert_eq!(side(&ledger, Scope::Inbox, &b, |s| s.base), Some(Usage { messages: 1, bytes: 40 }));
        // Three more exceed the sender quota (4) on the upper bound: a refusal the database
        // must confirm once `deleted` named the sender.
        let three = [charge, Charge { bytes: 1, ..charge }, Charge { bytes: 1, ..charge }];
        ledger.deleted(None, [a.as_str()]);
        assert!(
            matches!(ledger.check(&three, false), Check::Load(l) if l.len() == 1 && l[0].confirm && l[0].scope == Scope::Sender)
        );
    }

    #[test]
    fn a_full_shard_forgets_idle_entries_and_keeps_busy_slots() {
        let mut shard = Shard::default();
        let none = |_: &str| false;
        let busy = shard.slot("busy", none);
        shard.side(busy, Scope::Inbox).inflight.add(Usage { messages: 1, bytes: 1 });
        let waited = shard.slot("waited", none);
        shard.side(waited, Scope::Sender).waiting = 1;
        for i in 0..MAX_TRACKED_IDENTITIES / SHARDS - 2 {
            shard.slot(&format!("idle-{i}"), none);
        }
        assert_eq!(shard.index.len(), MAX_TRACKED_IDENTITIES / SHARDS);
        let kept = shard.slot("idle-7", none);
        let new = shard.slot("new", |k| k == "idle-7");
        assert_eq!(shard.index.len(), 4, "idle entries went, but for the one the caller keeps");
        assert_eq!(shard.slot("idle-7", none), kept);
        assert_eq!(
            (shard.slot("busy", none), shard.slot("waited", none)),
            (busy, waited),
            "busy slots stay where they were"
        );
        assert_eq!(shard.find("busy").unwrap().sides[Scope::Inbox.index()].inflight.messages, 1);
        assert!(shard.find("idle-0").is_none());
        assert_ne!(new, busy);
        assert_eq!(shard.entries.iter().filter(|e| e.is_some()).count(), 4);
    }
}
