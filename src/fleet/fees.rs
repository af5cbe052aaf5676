//! The fee cache across a fleet: when a node changes a recipient's permission rules, every
//! node forgets the fees it cached for that recipient (`store::fee_cache`).
//!
//! The node that wrote the rule PUBLISHes a notice on the fleet's fee channel
//! ([`channel`], `messagebox:fees:<db>`) through its broker link and answers the request only
//! once Redis took it (or, when it could not, after the cache's max age). Every node's broker
//! link SUBSCRIBEs to the channel before anything else and tells the cache whether it hears
//! it: a node that does not serves no cached permission, and one that starts hearing again
//! forgets what it cached meanwhile. This module owns the channel name and the wire form;
//! `fleet::broker` owns the connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::Weak;

use super::broker::Broker;
use super::KEY_PREFIX;
use crate::store::fee_cache::FleetNotices;

/// The fee channel of a fleet on Redis database `db` (pub/sub ignores the database number, so
/// it is in the name, as for the live channels).
pub fn channel(db: i64) -> String {
    format!("{KEY_PREFIX}fees:{db}")
}

/// The version tag and kind that open a permission-change notice.
const PERMISSION_TAG: &str = "mb1 permission\n";

/// A notice that `recipient`'s rules changed.
pub fn encode_permission_change(recipient: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(PERMISSION_TAG.len() + recipient.len());
    out.extend_from_slice(PERMISSION_TAG.as_bytes());
    out.extend_from_slice(recipient.as_bytes());
    out
}

/// The recipient a notice names; `None` for anything else (another version's notice during
/// an upgrade, a stray publisher), which is ignored.
pub fn decode_permission_change(payload: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(payload).ok()?;
    text.strip_prefix(PERMISSION_TAG).filter(|r| !r.is_empty() && !r.contains('\n'))
}

/// The cache's [`FleetNotices`], published through the node's broker link (held weakly: the
/// link holds the cache).
pub struct BrokerNotices(pub Weak<Broker>);

impl FleetNotices for BrokerNotices {
    fn permission_changed<'a>(&'a self, recipient: &'a str) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            match self.0.upgrade() {
                Some(broker) => broker.publish_fee_notice(encode_permission_change(recipient)).await,
                None => false,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip() {
        let r = "02c0a8a3b0fcb1c0a3d2b6c7f4b1f7e2d8c9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4";
        assert_eq!(decode_permission_change(&encode_permission_change(r)), Some(r));
        assert_eq!(channel(3), "messagebox:fees:3");
        for bad in [&b"mb1 permission\n"[..], b"mb2 permission\n02ab", b"02ab", b"mb1 permission\n02\nab", b"\xff"] {
            assert_eq!(decode_permission_change(bad), None, "{bad:?}");
        }
    }
}
