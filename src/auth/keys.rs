//! BRC-42/43 key derivation, symmetric keys, HMACs and ECDSA, byte-exact with `@bsv/sdk`.
//!
//! Curve work goes through libsecp256k1 (crate `secp256k1`) on a per-thread context that is
//! randomised once; scalar arithmetic mod n uses `k256`. The hot-path helpers at the bottom
//! ([`SharedSecret::sign`], [`SharedSecret::verify`]) fold the BRC-42 child key into the
//! ECDSA equations so that a request costs one HMAC, one verify and one sign.

use std::cell::RefCell;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use k256::elliptic_curve::ops::Reduce;
use k256::{FieldBytes, Scalar as KScalar};
use secp256k1::{ecdsa, All, Message, Secp256k1};
use sha2::{Digest, Sha256};

/// Errors of key handling, with the texts of the TypeScript SDK where one exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("Protocol security level must be 0, 1, or 2")]
    SecurityLevel,
    #[error("Key IDs must be 800 characters or less")]
    KeyIdTooLong,
    #[error("Key IDs must be 1 character or more")]
    KeyIdEmpty,
    #[error("Protocol names must be 400 characters or less")]
    ProtocolTooLong,
    #[error("Specific linkage revelation protocol names must be 430 characters or less")]
    LinkageProtocolTooLong,
    #[error("Protocol names must be 5 characters or more")]
    ProtocolTooShort,
    #[error("Protocol names cannot contain multiple consecutive spaces (\"  \")")]
    ProtocolDoubleSpace,
    #[error("Protocol names can only contain letters, numbers and spaces")]
    ProtocolCharset,
    #[error("No need to end your protocol name with \" protocol\"")]
    ProtocolSuffix,
    #[error("invalid private key")]
    InvalidPrivateKey,
    #[error("invalid public key")]
    InvalidPublicKey,
    #[error("derived key is invalid (negligible probability)")]
    Degenerate,
}

thread_local! {
    /// One libsecp256k1 context per thread, blinded once at creation. The crate's
    /// global-context API re-randomises after every secret operation, which doubles
    /// the cost of signing; a per-thread context does not.
    static CTX: RefCell<Secp256k1<All>> = RefCell::new({
        let mut ctx = Secp256k1::new();
        ctx.randomize(&mut rand::rng());
        ctx
    });
}

/// Runs `f` with this thread's secp256k1 context.
pub(crate) fn with_ctx<R>(f: impl FnOnce(&Secp256k1<All>) -> R) -> R {
    CTX.with(|c| f(&c.borrow()))
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn kscalar(bytes: &[u8; 32]) -> KScalar {
    <KScalar as Reduce<FieldBytes>>::reduce(&FieldBytes::from(*bytes))
}

fn kscalar_bytes(s: &KScalar) -> [u8; 32] {
    s.to_bytes().into()
}

/// A BRC-43 protocol id: security level and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protocol<'a> {
    pub level: u8,
    pub name: &'a str,
}

impl<'a> Protocol<'a> {
    pub const fn new(level: u8, name: &'a str) -> Self {
        Protocol { level, name }
    }
}

/// `[2, "auth message signature"]`: every BRC-103 signature.
pub const AUTH_PROTOCOL: Protocol<'static> = Protocol::new(2, "auth message signature");
/// `[2, "server hmac"]`: nonces.
pub const NONCE_PROTOCOL: Protocol<'static> = Protocol::new(2, "server hmac");

/// The BRC-43 invoice number `"<level>-<name>-<keyID>"`, validated as `KeyDeriver` does.
pub fn invoice_number(protocol: Protocol<'_>, key_id: &str) -> Result<String, KeyError> {
    if protocol.level > 2 {
        return Err(KeyError::SecurityLevel);
    }
    let name = protocol.name.to_lowercase();
    let name = name.trim();
    // JS string lengths count UTF-16 code units.
    let key_len = key_id.encode_utf16().count();
    if key_len > 800 {
        return Err(KeyError::KeyIdTooLong);
    }
    if key_len < 1 {
        return Err(KeyError::KeyIdEmpty);
    }
    let name_len = name.encode_utf16().count();
    if name_len > 400 {
        if name.starts_with("specific linkage revelation ") {
            if name_len > 430 {
                return Err(KeyError::LinkageProtocolTooLong);
            }
        } else {
            return Err(KeyError::ProtocolTooLong);
        }
    }
    if name_len < 5 {
        return Err(KeyError::ProtocolTooShort);
    }
    if name.contains("  ") {
        return Err(KeyError::ProtocolDoubleSpace);
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b' ') {
        return Err(KeyError::ProtocolCharset);
    }
    if name.ends_with(" protocol") {
        return Err(KeyError::ProtocolSuffix);
    }
    Ok(format!("{}-{}-{}", protocol.level, name, key_id))
}

/// A secp256k1 private key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PrivateKey {
    sk: secp256k1::SecretKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

impl PrivateKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        secp256k1::SecretKey::from_byte_array(*bytes)
            .map(|sk| PrivateKey { sk })
            .map_err(|_| KeyError::InvalidPrivateKey)
    }

    /// Parses 64 hex digits (either case). Shorter input is left-padded as `PrivateKey.fromHex` does.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyError::InvalidPrivateKey);
        }
        let padded = format!("{s:0>64}");
        let mut b = [0u8; 32];
        hex::decode_to_slice(padded, &mut b).map_err(|_| KeyError::InvalidPrivateKey)?;
        Self::from_bytes(&b)
    }

    pub fn random() -> Self {
        PrivateKey { sk: secp256k1::SecretKey::new(&mut rand::rng()) }
    }

    /// The scalar `1`, whose public key is the generator: counterparty `anyone`.
    pub fn one() -> Self {
        let mut b = [0u8; 32];
        b[31] = 1;
        Self::from_bytes(&b).expect("1 is a valid key")
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.sk.secret_bytes()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey { pk: with_ctx(|ctx| secp256k1::PublicKey::from_secret_key(ctx, &self.sk)) }
    }

    fn kscalar(&self) -> KScalar {
        kscalar(&self.to_bytes())
    }

    /// ECDH: `self · other`, compressed.
    pub fn shared_secret(&self, other: &PublicKey) -> SharedSecret {
        let tweak = secp256k1::Scalar::from(self.sk);
        let point =
            with_ctx(|ctx| other.pk.mul_tweak(ctx, &tweak)).expect("a valid key times a non-zero scalar is valid");
        SharedSecret(point.serialize())
    }

    /// The BRC-42 child private key `(self + HMAC(self·counterparty, invoice)) mod n`.
    pub fn derive_child(&self, counterparty: &PublicKey, invoice: &str) -> Result<PrivateKey, KeyError> {
        self.shared_secret(counterparty).child_private(self, invoice.as_bytes())
    }

    /// ECDSA over `SHA-256(data)` with RFC 6979 nonces and low-S.
    pub fn sign(&self, data: &[u8]) -> Signature {
        self.sign_digest(&sha256(data))
    }

    pub fn sign_digest(&self, digest: &[u8; 32]) -> Signature {
        let msg = Message::from_digest(*digest);
        Signature(with_ctx(|ctx| ctx.sign_ecdsa(msg, &self.sk)))
    }
}

/// A secp256k1 public key (never the point at infinity).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey {
    pk: secp256k1::PublicKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl PublicKey {
    /// Strict wire form: 66 lowercase or uppercase hex digits of a compressed point.
    pub fn from_compressed_hex(s: &str) -> Result<Self, KeyError> {
        if s.len() != 66 {
            return Err(KeyError::InvalidPublicKey);
        }
        let mut b = [0u8; 33];
        hex::decode_to_slice(s, &mut b).map_err(|_| KeyError::InvalidPublicKey)?;
        Self::from_slice(&b)
    }

    /// Lenient form accepted by `PublicKey.fromString` in `@bsv/sdk`: hex of any case,
    /// an odd length gets a leading `0`; 33-byte compressed (02/03) or 65-byte
    /// uncompressed (04) / hybrid (06/07) encodings of a point on the curve.
    pub fn parse_lenient(s: &str) -> Result<Self, KeyError> {
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(KeyError::InvalidPublicKey);
        }
        let padded;
        let s = if s.len() % 2 == 1 {
            padded = format!("0{s}");
            padded.as_str()
        } else {
            s
        };
        if s.len() != 66 && s.len() != 130 {
            return Err(KeyError::InvalidPublicKey);
        }
        let bytes = hex::decode(s).map_err(|_| KeyError::InvalidPublicKey)?;
        Self::from_slice(&bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        secp256k1::PublicKey::from_slice(bytes).map(|pk| PublicKey { pk }).map_err(|_| KeyError::InvalidPublicKey)
    }

    /// The public key of the scalar 1 (the generator): counterparty `anyone`.
    pub fn anyone() -> Self {
        PrivateKey::one().public_key()
    }

    pub fn serialize(&self) -> [u8; 33] {
        self.pk.serialize()
    }

    /// Compressed lowercase hex, the identity-key form on the wire.
    pub fn to_hex(&self) -> String {
        hex::encode(self.serialize())
    }

    /// `self + h·G` for a 32-byte big-endian `h` (reduced mod n, as `h·G` is).
    fn add_generator_multiple(&self, h: &[u8; 32]) -> Result<PublicKey, KeyError> {
        let h = secp256k1::Scalar::from_be_bytes(kscalar_bytes(&kscalar(h))).map_err(|_| KeyError::Degenerate)?;
        with_ctx(|ctx| self.pk.add_exp_tweak(ctx, &h)).map(|pk| PublicKey { pk }).map_err(|_| KeyError::Degenerate)
    }

    /// The BRC-42 child public key of `self` as computed by a party holding `other`:
    /// `self + HMAC(other·self, invoice)·G`.
    pub fn derive_child(&self, other: &PrivateKey, invoice: &str) -> Result<PublicKey, KeyError> {
        other.shared_secret(self).child_public(self, invoice.as_bytes())
    }

    /// Plain ECDSA verification over `SHA-256(data)`; high-S signatures are accepted.
    pub fn verify(&self, data: &[u8], sig: &Signature) -> bool {
        self.verify_digest(&sha256(data), sig)
    }

    pub fn verify_digest(&self, digest: &[u8; 32], sig: &Signature) -> bool {
        let mut s = sig.0;
        s.normalize_s();
        let msg = Message::from_digest(*digest);
        with_ctx(|ctx| ctx.verify_ecdsa(msg, &s, &self.pk)).is_ok()
    }
}

/// An ECDSA signature (r, s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature(ecdsa::Signature);

impl Signature {
    /// Parses strict DER, as `Signature.fromDER` does. High-S is kept (normalised at verify).
    pub fn from_der(der: &[u8]) -> Option<Signature> {
        ecdsa::Signature::from_der(der).ok().map(Signature)
    }

    pub fn from_compact(rs: &[u8; 64]) -> Option<Signature> {
        ecdsa::Signature::from_compact(rs).ok().map(Signature)
    }

    pub fn to_der(&self) -> Vec<u8> {
        self.0.serialize_der().to_vec()
    }

    pub fn to_compact(&self) -> [u8; 64] {
        self.0.serialize_compact()
    }

    /// True when `s ≤ n/2`.
    pub fn is_low_s(&self) -> bool {
        let mut n = self.0;
        n.normalize_s();
        n == self.0
    }
}

/// The compressed ECDH point between two identities: the HMAC key of every BRC-42
/// derivation between them. Constant per session, so the session caches it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SharedSecret(pub [u8; 33]);

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedSecret(..)")
    }
}

impl SharedSecret {
    /// `HMAC-SHA256(key = this point, message = invoice)`: the BRC-42 offset `h`.
    pub fn offset(&self, invoice: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.0, invoice)
    }

    /// `(own + h) mod n`.
    pub fn child_private(&self, own: &PrivateKey, invoice: &[u8]) -> Result<PrivateKey, KeyError> {
        let child = own.kscalar() + kscalar(&self.offset(invoice));
        PrivateKey::from_bytes(&kscalar_bytes(&child)).map_err(|_| KeyError::Degenerate)
    }

    /// `owner + h·G`.
    pub fn child_public(&self, owner: &PublicKey, invoice: &[u8]) -> Result<PublicKey, KeyError> {
        owner.add_generator_multiple(&self.offset(invoice))
    }

    /// Signs `SHA-256(data)` with the own child key for `invoice`.
    pub fn sign(&self, own: &PrivateKey, invoice: &[u8], data: &[u8]) -> Result<Signature, KeyError> {
        self.sign_digest(own, invoice, &sha256(data))
    }

    pub fn sign_digest(&self, own: &PrivateKey, invoice: &[u8], digest: &[u8; 32]) -> Result<Signature, KeyError> {
        Ok(self.child_private(own, invoice)?.sign_digest(digest))
    }

    /// Verifies a signature over `SHA-256(data)` made with the peer's child key for `invoice`.
    pub fn verify(&self, peer: &PublicKey, invoice: &[u8], data: &[u8], sig: &Signature) -> bool {
        self.verify_digest(peer, invoice, &sha256(data), sig)
    }

    /// The same without materialising the child key: `(r, s)` is valid for digest `z` under
    /// `P + h·G` exactly when it is valid for `z + r·h (mod n)` under `P`.
    pub fn verify_digest(&self, peer: &PublicKey, invoice: &[u8], digest: &[u8; 32], sig: &Signature) -> bool {
        let h = kscalar(&self.offset(invoice));
        let compact = sig.0.serialize_compact();
        let r = kscalar(compact[..32].try_into().expect("32 bytes"));
        let z = kscalar(digest) + r * h;
        peer.verify_digest(&kscalar_bytes(&z), sig)
    }
}

/// The counterparty of a derivation, as in BRC-100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counterparty {
    /// Derivations with one's own identity key.
    Myself,
    /// The publicly known key `1·G`.
    Anyone,
    Other(PublicKey),
}

/// The key-derivation half of a BRC-100 `ProtoWallet` over one root key.
#[derive(Clone)]
pub struct KeyDeriver {
    root: PrivateKey,
    identity: PublicKey,
    /// `root · identity`: the HMAC key of every derivation with counterparty `self`.
    self_secret: SharedSecret,
}

impl fmt::Debug for KeyDeriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyDeriver({})", self.identity)
    }
}

impl KeyDeriver {
    pub fn new(root: PrivateKey) -> Self {
        let identity = root.public_key();
        let self_secret = root.shared_secret(&identity);
        KeyDeriver { root, identity, self_secret }
    }

    pub fn root(&self) -> &PrivateKey {
        &self.root
    }

    pub fn identity_key(&self) -> &PublicKey {
        &self.identity
    }

    fn resolve(&self, cp: Counterparty) -> PublicKey {
        match cp {
            Counterparty::Myself => self.identity,
            Counterparty::Anyone => PublicKey::anyone(),
            Counterparty::Other(k) => k,
        }
    }

    fn secret_with(&self, cp: Counterparty) -> SharedSecret {
        match cp {
            Counterparty::Myself => self.self_secret,
            _ => self.root.shared_secret(&self.resolve(cp)),
        }
    }

    pub fn derive_private(
        &self,
        protocol: Protocol<'_>,
        key_id: &str,
        cp: Counterparty,
    ) -> Result<PrivateKey, KeyError> {
        let invoice = invoice_number(protocol, key_id)?;
        self.secret_with(cp).child_private(&self.root, invoice.as_bytes())
    }

    /// The counterparty's child key (`for_self` false) or one's own (`for_self` true).
    pub fn derive_public(
        &self,
        protocol: Protocol<'_>,
        key_id: &str,
        cp: Counterparty,
        for_self: bool,
    ) -> Result<PublicKey, KeyError> {
        let invoice = invoice_number(protocol, key_id)?;
        let secret = self.secret_with(cp);
        let owner = if for_self { self.identity } else { self.resolve(cp) };
        secret.child_public(&owner, invoice.as_bytes())
    }

    /// The X coordinate of `ownChildPriv · counterpartyChildPub`, left-padded to 32 bytes.
    pub fn derive_symmetric_key(
        &self,
        protocol: Protocol<'_>,
        key_id: &str,
        cp: Counterparty,
    ) -> Result<[u8; 32], KeyError> {
        let invoice = invoice_number(protocol, key_id)?;
        let secret = self.secret_with(cp);
        let child_priv = secret.child_private(&self.root, invoice.as_bytes())?;
        let point = if cp == Counterparty::Myself {
            // Both child keys are (a+h): the point is (a+h)²·G, one fixed-base multiplication.
            let s = child_priv.kscalar();
            PrivateKey::from_bytes(&kscalar_bytes(&s.square()))
                .map_err(|_| KeyError::Degenerate)?
                .public_key()
                .serialize()
        } else {
            let child_pub = secret.child_public(&self.resolve(cp), invoice.as_bytes())?;
            child_priv.shared_secret(&child_pub).0
        };
        Ok(point[1..].try_into().expect("32 bytes"))
    }

    /// `createHmac`: the key is the symmetric key's minimal big-endian form (`BigNumber.toArray()`),
    /// so leading zero bytes are dropped, as the TS SDK does.
    pub fn create_hmac(
        &self,
        protocol: Protocol<'_>,
        key_id: &str,
        cp: Counterparty,
        data: &[u8],
    ) -> Result<[u8; 32], KeyError> {
        let key = self.derive_symmetric_key(protocol, key_id, cp)?;
        Ok(hmac_sha256(strip_leading_zeros(&key), data))
    }

    pub fn verify_hmac(
        &self,
        protocol: Protocol<'_>,
        key_id: &str,
        cp: Counterparty,
        data: &[u8],
        mac: &[u8],
    ) -> Result<bool, KeyError> {
        Ok(ct_eq(&self.create_hmac(protocol, key_id, cp, data)?, mac))
    }

    /// `createSignature` over `SHA-256(data)`.
    pub fn create_signature(
        &self,
        protocol: Protocol<'_>,
        key_id: &str,
        cp: Counterparty,
        data: &[u8],
    ) -> Result<Signature, KeyError> {
        self.create_signature_digest(protocol, key_id, cp, &sha256(data))
    }

    pub fn create_signature_digest(
        &self,
        protocol: Protocol<'_>,
        key_id: &str,
        cp: Counterparty,
        digest: &[u8; 32],
    ) -> Result<Signature, KeyError> {
        Ok(self.derive_private(protocol, key_id, cp)?.sign_digest(digest))
    }

    pub fn verify_signature(
        &self,
        protocol: Protocol<'_>,
        key_id: &str,
        cp: Counterparty,
        for_self: bool,
        data: &[u8],
        sig: &Signature,
    ) -> Result<bool, KeyError> {
        self.verify_signature_digest(protocol, key_id, cp, for_self, &sha256(data), sig)
    }

    pub fn verify_signature_digest(
        &self,
        protocol: Protocol<'_>,
        key_id: &str,
        cp: Counterparty,
        for_self: bool,
        digest: &[u8; 32],
        sig: &Signature,
    ) -> Result<bool, KeyError> {
        Ok(self.derive_public(protocol, key_id, cp, for_self)?.verify_digest(digest, sig))
    }
}

/// `BigNumber.toArray()` of a 32-byte big-endian value: no leading zero bytes.
fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoice_rules() {
        assert_eq!(
            invoice_number(Protocol::new(2, "Auth Message Signature "), "a b").unwrap(),
            "2-auth message signature-a b"
        );
        assert_eq!(invoice_number(Protocol::new(3, "valid name"), "1"), Err(KeyError::SecurityLevel));
        assert_eq!(invoice_number(Protocol::new(1, "app"), "1"), Err(KeyError::ProtocolTooShort));
        assert_eq!(invoice_number(Protocol::new(1, "app-msgs"), "1"), Err(KeyError::ProtocolCharset));
        assert_eq!(invoice_number(Protocol::new(1, "two  spaces"), "1"), Err(KeyError::ProtocolDoubleSpace));
        assert_eq!(invoice_number(Protocol::new(1, "my protocol"), "1"), Err(KeyError::ProtocolSuffix));
        assert_eq!(invoice_number(Protocol::new(1, "valid"), ""), Err(KeyError::KeyIdEmpty));
        assert_eq!(invoice_number(Protocol::new(1, "valid"), &"x".repeat(801)), Err(KeyError::KeyIdTooLong));
        assert!(invoice_number(Protocol::new(1, "valid"), &"x".repeat(800)).is_ok());
        // U+FFFD counts as one UTF-16 unit although it is three UTF-8 bytes.
        assert!(invoice_number(Protocol::new(1, "valid"), &"\u{fffd}".repeat(800)).is_ok());
        assert_eq!(invoice_number(Protocol::new(1, &"a".repeat(401)), "1"), Err(KeyError::ProtocolTooLong));
        let linkage = format!("specific linkage revelation {}", "a".repeat(380));
        assert!(invoice_number(Protocol::new(1, &linkage), "1").is_ok());
    }

    #[test]
    fn folded_verify_matches_materialised_child_key() {
        let a = PrivateKey::random();
        let b = PrivateKey::random();
        for i in 0..20 {
            let invoice = format!("2-auth message signature-{i} x");
            let data = format!("payload {i}");
            let sig = a.derive_child(&b.public_key(), &invoice).unwrap().sign(data.as_bytes());
            let child_pub = a.public_key().derive_child(&b, &invoice).unwrap();
            assert!(child_pub.verify(data.as_bytes(), &sig));
            let secret = b.shared_secret(&a.public_key());
            assert!(secret.verify(&a.public_key(), invoice.as_bytes(), data.as_bytes(), &sig));
            assert!(!secret.verify(&a.public_key(), invoice.as_bytes(), b"other", &sig));
            assert!(!secret.verify(&a.public_key(), b"2-auth message signature-other", data.as_bytes(), &sig));
        }
    }

    #[test]
    fn high_s_is_accepted_and_low_s_is_produced() {
        let k = PrivateKey::random();
        let sig = k.sign(b"data");
        assert!(sig.is_low_s());
        // s' = n - s
        let compact = sig.to_compact();
        let s = kscalar(compact[32..].try_into().unwrap());
        let mut high = compact;
        high[32..].copy_from_slice(&kscalar_bytes(&(-s)));
        let high = Signature::from_compact(&high).unwrap();
        assert!(!high.is_low_s());
        assert!(k.public_key().verify(b"data", &high));
    }

    #[test]
    fn lenient_public_key_forms() {
        let k = PrivateKey::random().public_key();
        let hex = k.to_hex();
        assert_eq!(PublicKey::parse_lenient(&hex.to_uppercase()).unwrap(), k);
        assert!(PublicKey::parse_lenient("123").is_err());
        assert!(PublicKey::parse_lenient("").is_err());
        assert!(PublicKey::parse_lenient("zz").is_err());
        let mut bad = hex.clone();
        bad.replace_range(0..2, "05");
        assert!(PublicKey::parse_lenient(&bad).is_err());
        assert!(PublicKey::from_compressed_hex(&hex).is_ok());
        assert!(PublicKey::from_compressed_hex(&hex[..64]).is_err());
    }
}
