//! Live delivery across the nodes of a fleet: the rules, without I/O.
//!
//! A node SUBSCRIBEs to one Redis channel per identity it holds a live connection of (on its
//! first connection, UNSUBSCRIBE on its last), and every delivery made on a node is
//! PUBLISHed to its recipient's channel. So a delivery costs one PUBLISH, and Redis sends it
//! only to the nodes holding the recipient: the cost does not grow with the nodes that hold
//! none. A node ignores its own publications (they carry its node id): it delivered them
//! locally already, directly.
//!
//! This module owns
//! - the channel names ([`Channels`]): `messagebox:live:<db>:<identity>` — Redis pub/sub
//!   ignores the database number, so it is in the name and fleets on different databases of
//!   one Redis stay apart;
//! - the wire form of a delivery on a channel ([`encode`], [`decode`]);
//! - which identities the node is subscribed to ([`Interest`]): reconciled from the identity
//!   registry, never from a queue of events that could be dropped, and subscribed again
//!   wholesale after a reconnect;
//! - the broker's health across its two connections and the one log line per outage
//!   ([`Health`]).
//!
//! The driver (`fleet::broker`) owns the connections and the thread.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use crate::domain::Delivery;

use super::KEY_PREFIX;

/// Names the live channels of one fleet.
#[derive(Debug, Clone)]
pub struct Channels {
    /// `messagebox:live:<db>:`
    prefix: String,
}

impl Channels {
    /// The channels of a fleet on Redis database `db`.
    pub fn new(db: i64) -> Channels {
        Channels { prefix: format!("{KEY_PREFIX}live:{db}:") }
    }

    /// The channel of `identity`'s deliveries.
    pub fn of(&self, identity: &str) -> String {
        let mut c = String::with_capacity(self.prefix.len() + identity.len());
        c.push_str(&self.prefix);
        c.push_str(identity);
        c
    }

    /// The identity whose channel `channel` is (`None`: not one of ours).
    pub fn identity<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(self.prefix.as_str()).filter(|i| !i.is_empty())
    }
}

/// The version tag that opens every publication, so a future format can be told apart.
const WIRE_TAG: &str = "mb1";

/// A delivery as published: `mb1`, the publishing node's id, the event, the room id and the
/// event's data, separated by `\n` (the data, JSON text, is last and may hold anything). The
/// recipient is the channel's identity.
pub fn encode(node_id: &str, d: &Delivery) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(WIRE_TAG.len() + node_id.len() + d.event.len() + d.room_id.len() + d.data.len() + 4);
    for part in [WIRE_TAG, node_id, &d.event, &d.room_id] {
        out.extend_from_slice(part.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(d.data.as_bytes());
    out
}

/// A publication received on `recipient`'s channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The node that published it.
    pub node_id: String,
    pub delivery: Delivery,
}

/// Why a publication was not understood (logged and dropped; another version of the server
/// may share the broker during an upgrade).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    NotUtf8,
    /// Not `mb1` followed by four fields.
    Malformed,
    /// The room id is not `<recipient>` or `<recipient>-…`: a delivery names its recipient's
    /// own room, so this one is not for the channel it came on.
    ForeignRoom,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::NotUtf8 => "not UTF-8",
            WireError::Malformed => "not a delivery in the mb1 format",
            WireError::ForeignRoom => "the room does not belong to the channel's identity",
        })
    }
}

/// Reads a publication that came on `recipient`'s channel.
pub fn decode(recipient: &str, payload: &[u8]) -> Result<Inbound, WireError> {
    let text = std::str::from_utf8(payload).map_err(|_| WireError::NotUtf8)?;
    let mut parts = text.splitn(5, '\n');
    let (Some(WIRE_TAG), Some(node_id), Some(event), Some(room_id), Some(data)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(WireError::Malformed);
    };
    if node_id.is_empty() || event.is_empty() {
        return Err(WireError::Malformed);
    }
    let own = room_id.strip_prefix(recipient).is_some_and(|rest| rest.is_empty() || rest.starts_with('-'));
    if !own {
        return Err(WireError::ForeignRoom);
    }
    Ok(Inbound {
        node_id: node_id.to_string(),
        delivery: Delivery {
            recipient: recipient.to_string(),
            room_id: room_id.to_string(),
            event: event.to_string(),
            data: data.to_string(),
        },
    })
}

/// The identities this node is subscribed to, kept equal to the ones it holds a connection
/// of. Changes are reconciled against the registry ("held now?"), so a burst of binds and
/// unbinds of one identity costs at most one command, and nothing depends on each event
/// arriving.
#[derive(Debug, Default)]
pub struct Interest {
    subscribed: HashSet<String>,
}

/// What to send to bring the subscriptions in line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.unsubscribe.is_empty()
    }
}

impl Interest {
    /// The identities in `changed` whose connections changed, checked against `held` (does
    /// this node hold a connection of it now?): which to SUBSCRIBE to and UNSUBSCRIBE from.
    /// The set counts them as done at once; if the commands fail, the connection is lost and
    /// [`Interest::all`] subscribes to everything again on the next one.
    pub fn reconcile(&mut self, changed: impl IntoIterator<Item = String>, held: impl Fn(&str) -> bool) -> Changes {
        let mut out = Changes::default();
        for id in changed {
            match (held(&id), self.subscribed.contains(&id)) {
                (true, false) => {
                    self.subscribed.insert(id.clone());
                    out.subscribe.push(id);
                }
                (false, true) => {
                    self.subscribed.remove(&id);
                    out.unsubscribe.push(id);
                }
                _ => {}
            }
        }
        out
    }

    /// Every identity subscribed to (what a fresh connection subscribes to).
    pub fn all(&self) -> Vec<String> {
        self.subscribed.iter().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.subscribed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subscribed.is_empty()
    }
}

/// The two connections a node keeps to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// PUBLISH (pipelined batches).
    Publish,
    /// SUBSCRIBE and the messages (pinged, so a broker that stops answering is noticed).
    Subscribe,
}

/// A change of the broker's state worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The first failure after a good spell (or at start).
    Down { link: Link, reason: String },
    /// Both connections work again.
    Up { outage: Duration },
}

/// The broker is up when both connections work. One line when an outage starts and one when
/// it ends, however many messages and reconnection attempts happen in between.
#[derive(Debug)]
pub struct Health {
    publish_ok: bool,
    subscribe_ok: bool,
    /// Since when it is down (`None`: up). Starts down: nothing is connected yet.
    down_since: Option<Instant>,
    /// Whether this outage was logged (the start-up connection is not an outage unless it
    /// fails).
    reported: bool,
}

impl Health {
    pub fn new(now: Instant) -> Health {
        Health { publish_ok: false, subscribe_ok: false, down_since: Some(now), reported: false }
    }

    pub fn is_up(&self) -> bool {
        self.down_since.is_none()
    }

    /// `link` connected or answered.
    pub fn ok(&mut self, link: Link, now: Instant) -> Option<Transition> {
        match link {
            Link::Publish => self.publish_ok = true,
            Link::Subscribe => self.subscribe_ok = true,
        }
        let since = self.down_since?;
        if !(self.publish_ok && self.subscribe_ok) {
            return None;
        }
        self.down_since = None;
        let reported = std::mem::replace(&mut self.reported, false);
        reported.then(|| Transition::Up { outage: now.saturating_duration_since(since) })
    }

    /// `link` failed (could not connect, or lost its connection or an answer).
    pub fn failed(&mut self, link: Link, reason: impl fmt::Display, now: Instant) -> Option<Transition> {
        match link {
            Link::Publish => self.publish_ok = false,
            Link::Subscribe => self.subscribe_ok = false,
        }
        if self.down_since.is_none() {
            self.down_since = Some(now);
        }
        if self.reported {
            return None;
        }
        self.reported = true;
        Some(Transition::Down { link, reason: reason.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IdentityKey;

    const KEY: &str = "02c0a8a3b0fcb1c0a3d2b6c7f4b1f7e2d8c9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4";

    #[test]
    fn channels_name_the_database_and_the_identity() {
        let c = Channels::new(3);
        assert_eq!(c.of(KEY), format!("messagebox:live:3:{KEY}"));
        assert_eq!(c.identity(&c.of(KEY)), Some(KEY));
        assert_eq!(c.identity(&Channels::new(0).of(KEY)), None, "another database's channel");
        assert_eq!(c.identity("messagebox:live:3:"), None);
        assert_eq!(c.identity("other"), None);
    }

    #[test]
    fn deliveries_round_trip() {
        let recipient = IdentityKey::from_canonical(KEY);
        for (suffix, body) in [("-inbox", "hello"), ("", "two\nlines\n"), ("-a-b", "{\"x\":\"\\n\"}"), ("-x", "")] {
            let d = Delivery::message(&recipient, suffix, "03ab", "m1", body);
            let wire = encode("a1b2c3d4e5f6", &d);
            let got = decode(KEY, &wire).unwrap();
            assert_eq!(got, Inbound { node_id: "a1b2c3d4e5f6".into(), delivery: d });
        }
    }

    #[test]
    fn strange_publications_are_refused() {
        let recipient = IdentityKey::from_canonical(KEY);
        let d = Delivery::message(&recipient, "-inbox", "03ab", "m1", "b");
        let wire = encode("n1", &d);
        let other = "03c0a8a3b0fcb1c0a3d2b6c7f4b1f7e2d8c9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4";
        assert_eq!(decode(other, &wire), Err(WireError::ForeignRoom), "a room of another identity");
        let prefix_only = format!("{}x", &KEY[..65]);
        assert_eq!(decode(&prefix_only, &wire), Err(WireError::ForeignRoom));
        assert_eq!(decode(KEY, b"mb2\nn1\ne\nr\nd"), Err(WireError::Malformed));
        assert_eq!(decode(KEY, b"mb1\nn1\ne"), Err(WireError::Malformed));
        assert_eq!(decode(KEY, format!("mb1\n\nev\n{KEY}\nd").as_bytes()), Err(WireError::Malformed));
        assert_eq!(decode(KEY, b"mb1\nn1\n\xff\nr\nd"), Err(WireError::NotUtf8));
    }

    #[test]
    fn interest_follows_what_is_held() {
        let mut i = Interest::default();
        let held: HashSet<&str> = ["a", "b"].into();
        let changes = i.reconcile(["a".into(), "b".into(), "c".into()], |id| held.contains(id));
        assert_eq!(changes.subscribe, vec!["a", "b"]);
        assert!(changes.unsubscribe.is_empty());
        // A bind and an unbind of `a` in a burst: held again by the time it is looked at.
        assert!(i.reconcile(["a".into(), "a".into()], |id| held.contains(id)).is_empty());
        let held: HashSet<&str> = ["b"].into();
        let changes = i.reconcile(["a".into(), "b".into()], |id| held.contains(id));
        assert_eq!(changes, Changes { subscribe: vec![], unsubscribe: vec!["a".into()] });
        assert_eq!(i.all(), vec!["b"]);
        assert_eq!(i.len(), 1);
    }

    #[test]
    fn one_line_per_outage() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = Health::new(t0);
        assert!(!h.is_up(), "down until connected");
        // A normal start: no line.
        assert_eq!(h.ok(Link::Publish, t0), None);
        assert!(!h.is_up(), "both links are needed");
        assert_eq!(h.ok(Link::Subscribe, t0), None);
        assert!(h.is_up());
        // An outage: one line when it starts, none for the retries, one when it ends.
        assert_eq!(
            h.failed(Link::Subscribe, "connection reset", t0 + s),
            Some(Transition::Down { link: Link::Subscribe, reason: "connection reset".into() })
        );
        assert!(!h.is_up());
        for _ in 0..10 {
            assert_eq!(h.failed(Link::Subscribe, "refused", t0 + 2 * s), None);
            assert_eq!(h.failed(Link::Publish, "refused", t0 + 2 * s), None);
        }
        assert_eq!(h.ok(Link::Subscribe, t0 + 3 * s), None, "the publish link is still down");
        assert_eq!(h.ok(Link::Publish, t0 + 4 * s), Some(Transition::Up { outage: 3 * s }));
        assert!(h.is_up());
        assert_eq!(h.ok(Link::Publish, t0 + 5 * s), None);
        // A broker unreachable at start is an outage too.
        let mut h = Health::new(t0);
        assert!(matches!(h.failed(Link::Publish, "refused", t0), Some(Transition::Down { .. })));
        assert_eq!(h.ok(Link::Publish, t0 + s), None);
        assert_eq!(h.ok(Link::Subscribe, t0 + 2 * s), Some(Transition::Up { outage: 2 * s }));
    }
}
