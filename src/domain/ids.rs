//! The identifiers of the MessageBox domain, parsed once at the edge: [`IdentityKey`] (an
//! identity in its one canonical spelling), [`BoxName`] and [`MessageId`].

use std::borrow::Borrow;
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

/// Text that is not a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a public key")]
pub struct InvalidKey;

impl IdentityKey {
    /// Parses any spelling of a public key and canonicalises it.
    pub fn parse(text: &str) -> Result<IdentityKey, InvalidKey> {
        PublicKey::parse_lenient(text).map(|k| IdentityKey::from(&k)).map_err(|_| InvalidKey)
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
    fn names_and_ids() {
        assert_eq!(BoxName::new("inbox", 255).unwrap().as_str(), "inbox");
        assert_eq!(BoxName::new(" \t", 255), Err(TextError::Blank));
        assert_eq!(BoxName::new("ab", 1), Err(TextError::TooLong));
        assert_eq!(MessageId::new(" id ", 255).unwrap().as_str(), " id ", "stored untrimmed");
        assert_eq!(MessageId::new("é".repeat(3), 3).unwrap().as_str(), "ééé", "characters, not bytes");
    }
}
