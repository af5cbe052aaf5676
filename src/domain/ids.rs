//! The identifiers of the MessageBox domain, parsed once at the edge: [`IdentityKey`] (an
//! identity in its one canonical spelling), [`BoxName`] and [`MessageId`].

use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use crate::auth::PublicKey;

/// A secp256k1 public key naming an identity, held in its canonical wire form: compressed,
/// lower-case hex (66 characters).
///
/// Anything `PublicKey.fromString` of `@bsv/sdk` accepts parses (either case, compressed or
/// uncompressed, an odd length padded with a leading `0`), so a recipient typed as upper-case
/// or uncompressed hex names the same box, and reaches the same live connections, as its
/// canonical spelling. Comparisons and map keys are therefore plain string comparisons.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdentityKey(String);

/// How many canonical keys each thread remembers as valid (33 bytes each; the set is emptied
/// when full, so a stream of new keys costs what it did without it).
const KNOWN_KEYS_MAX: usize = 4096;

thread_local! {
    /// Compressed keys this thread found on the curve (see [`IdentityKey::parse`]).
    static KNOWN_KEYS: RefCell<HashSet<[u8; 33]>> = RefCell::new(HashSet::new());
}

/// The 33 bytes of `text` when it is a compressed key in canonical spelling (`02`/`03` and 64
/// lower-case hex digits); whether it is on the curve is not checked here.
fn canonical_bytes(text: &str) -> Option<[u8; 33]> {
    let t = text.as_bytes();
    if t.len() != 66 || t[0] != b'0' || !(t[1] == b'2' || t[1] == b'3') {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 33];
    for (o, pair) in out.iter_mut().zip(t.chunks_exact(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// Text that is not a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a public key")]
pub struct InvalidKey;

impl IdentityKey {
    /// Parses any spelling of a public key and canonicalises it.
    ///
    /// A key already in canonical form that this thread validated recently is not checked on
    /// the curve again: the check decompresses the point (a field square root, about as long
    /// as the rest of a send's parsing), and a recipient is usually named again and again.
    pub fn parse(text: &str) -> Result<IdentityKey, InvalidKey> {
        let Some(bytes) = canonical_bytes(text) else {
            return PublicKey::parse_lenient(text).map(|k| IdentityKey::from(&k)).map_err(|_| InvalidKey);
        };
        let known = KNOWN_KEYS.with(|known| known.borrow().contains(&bytes));
        if !known {
            PublicKey::from_slice(&bytes).map_err(|_| InvalidKey)?;
            KNOWN_KEYS.with(|known| {
                let mut known = known.borrow_mut();
                if known.len() >= KNOWN_KEYS_MAX {
                    known.clear();
                }
                known.insert(bytes);
            });
        }
        // A valid compressed point serialises to the bytes it was read from.
        Ok(IdentityKey(text.to_string()))
    }

    /// A key the BRC-103 layer already parsed and wrote canonically (`PublicKey::to_hex`):
    /// a connection's verified identity, or a room's key after [`split_room`]. Not for
    /// client input, which goes through [`IdentityKey::parse`].
    ///
    /// [`split_room`]: crate::live::events::split_room
    pub fn from_canonical(hex: impl Into<String>) -> IdentityKey {
        let hex = hex.into();
        debug_assert!(
            hex.len() == 66 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "not a canonical key: {hex}"
        );
        IdentityKey(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl From<&PublicKey> for IdentityKey {
    fn from(key: &PublicKey) -> IdentityKey {
        IdentityKey(key.to_hex())
    }
}

impl AsRef<str> for IdentityKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for IdentityKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({})", self.0)
    }
}

impl PartialEq<str> for IdentityKey {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

/// Declares a validated string newtype.
macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_id!(
    /// A message box name (`messageBox.type`): not blank and at most the configured number of
    /// characters (the column is VARCHAR(255)). Each route trims (or not) as the original did
    /// before building it.
    BoxName
);

text_id!(
    /// A `messageId`: not blank and at most the configured number of characters. Stored as the
    /// client sent it (the original validates the trimmed id but stores it untrimmed).
    MessageId
);

/// Why a box name or message id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextError {
    Blank,
    TooLong,
}

fn checked(text: String, max_chars: usize) -> Result<String, TextError> {
    if super::js::is_blank(&text) {
        Err(TextError::Blank)
    } else if text.chars().count() > max_chars {
        Err(TextError::TooLong)
    } else {
        Ok(text)
    }
}

impl BoxName {
    pub fn new(text: impl Into<String>, max_chars: usize) -> Result<BoxName, TextError> {
        checked(text.into(), max_chars).map(BoxName)
    }
}

impl MessageId {
    pub fn new(text: impl Into<String>, max_chars: usize) -> Result<MessageId, TextError> {
        checked(text.into(), max_chars).map(MessageId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PrivateKey;

    #[test]
    fn every_spelling_of_a_key_is_one_identity() {
        let key = PrivateKey::from_bytes(&[7; 32]).unwrap().public_key();
        let canonical = key.to_hex();
        let upper = canonical.to_uppercase();
        let uncompressed = {
            // 04 || X || Y, from the compressed form.
            let full = secp256k1::PublicKey::from_slice(&key.serialize()).unwrap().serialize_uncompressed();
            hex::encode(full)
        };
        for spelling in [canonical.as_str(), upper.as_str(), uncompressed.as_str(), &uncompressed.to_uppercase()] {
            assert_eq!(IdentityKey::parse(spelling).unwrap().as_str(), canonical, "{spelling}");
        }
        assert_eq!(IdentityKey::parse("02"), Err(InvalidKey));
        assert_eq!(IdentityKey::parse(&canonical[2..]), Err(InvalidKey));
        // An odd length gets a leading 0, as in the SDK.
        assert_eq!(IdentityKey::parse(&canonical[1..]).unwrap().as_str(), canonical);
        assert_eq!(IdentityKey::parse("zz"), Err(InvalidKey));
    }

    #[test]
    fn a_remembered_key_is_the_same_answer() {
        let key = PrivateKey::from_bytes(&[9; 32]).unwrap().public_key().to_hex();
        for _ in 0..3 {
            assert_eq!(IdentityKey::parse(&key).unwrap().as_str(), key);
        }
        // Canonical in form but not on the curve (x = 5 has no y on secp256k1): refused every
        // time, never remembered.
        let off_curve = format!("02{:064x}", 5);
        assert!(secp256k1::PublicKey::from_slice(&hex::decode(&off_curve).unwrap()).is_err());
        for _ in 0..3 {
            assert_eq!(IdentityKey::parse(&off_curve), Err(InvalidKey));
        }
        // x ≥ p is not a field element: refused.
        assert_eq!(IdentityKey::parse(&format!("03{}", "f".repeat(64))), Err(InvalidKey));
        // Upper case, 04…, bad digits: the full parse, same answers as before.
        assert_eq!(IdentityKey::parse(&key.to_uppercase()).unwrap().as_str(), key);
        assert_eq!(IdentityKey::parse(&format!("02{}g", &key[2..65])), Err(InvalidKey));
        // The set is bounded: a stream of new keys empties it, and every answer stays right.
        for i in 0..(KNOWN_KEYS_MAX + 10) as u32 {
            let mut secret = [1u8; 32];
            secret[..4].copy_from_slice(&i.to_be_bytes());
            let k = PrivateKey::from_bytes(&secret).unwrap().public_key().to_hex();
            assert_eq!(IdentityKey::parse(&k).unwrap().as_str(), k);
        }
        assert!(KNOWN_KEYS.with(|k| k.borrow().len()) <= KNOWN_KEYS_MAX);
        assert_eq!(IdentityKey::parse(&key).unwrap().as_str(), key);
    }

    #[test]
    fn names_and_ids() {
        assert_eq!(BoxName::new("inbox", 255).unwrap().as_str(), "inbox");
        assert_eq!(BoxName::new(" \t", 255), Err(TextError::Blank));
        assert_eq!(BoxName::new("ab", 1), Err(TextError::TooLong));
        assert_eq!(MessageId::new(" id ", 255).unwrap().as_str(), " id ", "stored untrimmed");
        assert_eq!(MessageId::new("é".repeat(3), 3).unwrap().as_str(), "ééé", "characters, not bytes");
    }
}
