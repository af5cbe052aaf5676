//! Nonces of BRC-103: `createNonce`/`verifyNonce` exactly as `@bsv/sdk` 2.x does them, the
//! plain random per-message nonces, and base64 as the SDK reads and writes it.
//!
//! Randomness is always handed in (`&mut impl RngCore`, or a shared [`RandomSource`]), so
//! tests can be deterministic; production uses the OS-seeded thread generator ([`OsSeeded`]).

use std::fmt;
use std::sync::Mutex;

use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use super::keys::{Counterparty, KeyDeriver, KeyError, NONCE_PROTOCOL};

/// Standard base64 with padding, as `Utils.toBase64`.
pub fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    #[error("Invalid base64 padding")]
    Padding,
    #[error("Invalid base64 character at index {0}")]
    Character(usize),
}

/// Base64 decoding as `Utils.toArray(s, 'base64')`: whitespace is removed, the URL-safe
/// alphabet is accepted, padding is optional and trailing bits are ignored.
pub fn b64_decode_lenient(s: &str) -> Result<Vec<u8>, Base64Error> {
    let cleaned: Vec<u8> = s
        .trim()
        .bytes()
        .filter(|b| !matches!(b, b'\r' | b'\n' | b'\t' | 0x0c | 0x0b | b' '))
        .map(|b| match b {
            b'-' => b'+',
            b'_' => b'/',
            other => other,
        })
        .collect();
    let body = match cleaned.iter().position(|&b| b == b'=') {
        Some(i) => {
            let pad = &cleaned[i..];
            if pad.len() > 2 || pad.iter().any(|&b| b != b'=') {
                return Err(Base64Error::Padding);
            }
            &cleaned[..i]
        }
        None => &cleaned[..],
    };
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut buf, mut bits) = (0u32, 0u32);
    for (i, &c) in body.iter().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(Base64Error::Character(i)),
        };
        buf = (buf << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// Strict standard base64 (padding required when needed), for values we parse from peers
/// where a canonical form is expected (request ids, session nonces).
pub fn b64_decode_strict(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Randomness shared by every thread that signs (hence `&self`): the server's nonces.
pub trait RandomSource: Send + Sync + fmt::Debug {
    fn fill(&self, dest: &mut [u8]);
}

/// Production randomness: the thread-local generator, seeded from the OS (`rand::rng()`).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsSeeded;

impl RandomSource for OsSeeded {
    fn fill(&self, dest: &mut [u8]) {
        rand::rng().fill_bytes(dest);
    }
}

/// Deterministic randomness for tests: one seeded generator behind a lock.
#[derive(Debug)]
pub struct SeededRandom(Mutex<StdRng>);

impl SeededRandom {
    pub fn new(seed: u64) -> Self {
        SeededRandom(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

impl RandomSource for SeededRandom {
    fn fill(&self, dest: &mut [u8]) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).fill_bytes(dest);
    }
}

pub fn random_bytes<const N: usize>(rng: &mut impl RngCore) -> [u8; N] {
    let mut b = [0u8; N];
    rng.fill_bytes(&mut b);
    b
}

/// A per-message nonce: base64 of 32 random bytes (44 characters).
pub fn random_nonce(rng: &mut impl RngCore) -> String {
    b64_encode(&random_bytes::<32>(rng))
}

/// `createNonce(wallet, 'self')`: 16 random bytes followed by their HMAC under
/// `[2,"server hmac"]` with the bytes (read as lossy UTF-8) as key id; base64, 64 chars.
pub fn create_nonce(wallet: &KeyDeriver, rng: &mut impl RngCore) -> String {
    create_nonce_from(wallet, &random_bytes::<16>(rng)).expect("a 16-byte key id is always a valid key id")
}

/// `createNonce` with a given first half (test vectors).
pub fn create_nonce_from(wallet: &KeyDeriver, first_half: &[u8; 16]) -> Result<String, KeyError> {
    let key_id = String::from_utf8_lossy(first_half);
    let mac = wallet.create_hmac(NONCE_PROTOCOL, &key_id, Counterparty::Myself, first_half)?;
    let mut all = [0u8; 48];
    all[..16].copy_from_slice(first_half);
    all[16..].copy_from_slice(&mac);
    Ok(b64_encode(&all))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    #[error("{0}")]
    Base64(#[from] Base64Error),
    #[error("nonce is too short")]
    TooShort,
    #[error("HMAC is not valid")]
    InvalidHmac,
}

/// `verifyNonce(nonce, wallet, 'self')`: the first 16 bytes are the data, the rest the HMAC.
pub fn verify_nonce(wallet: &KeyDeriver, nonce: &str) -> Result<(), NonceError> {
    let bytes = b64_decode_lenient(nonce)?;
    if bytes.len() < 16 {
        // The SDK would derive with an empty or short key id and fail the comparison.
        return Err(NonceError::TooShort);
    }
    let (data, mac) = bytes.split_at(16);
    let key_id = String::from_utf8_lossy(data);
    match wallet.verify_hmac(NONCE_PROTOCOL, &key_id, Counterparty::Myself, data, mac) {
        Ok(true) => Ok(()),
        _ => Err(NonceError::InvalidHmac),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::PrivateKey;

    #[test]
    fn lenient_base64_matches_sdk_rules() {
        assert_eq!(b64_decode_lenient("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(b64_decode_lenient("aGVsbG8").unwrap(), b"hello");
        assert_eq!(b64_decode_lenient(" aGVs\nbG8= ").unwrap(), b"hello");
        assert_eq!(b64_decode_lenient("-_8=").unwrap(), b64_decode_lenient("+/8=").unwrap());
        assert_eq!(b64_decode_lenient("aGVsbG8==="), Err(Base64Error::Padding));
        assert_eq!(b64_decode_lenient("aG=VsbG8="), Err(Base64Error::Padding));
        assert_eq!(b64_decode_lenient("aGV*"), Err(Base64Error::Character(3)));
        assert_eq!(b64_decode_lenient("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn nonce_round_trip_and_tamper() {
        let w = KeyDeriver::new(PrivateKey::random());
        let n = create_nonce(&w, &mut rand::rng());
        assert_eq!(n.len(), 64);
        assert!(!n.contains('='));
        verify_nonce(&w, &n).unwrap();
        let other = KeyDeriver::new(PrivateKey::random());
        assert_eq!(verify_nonce(&other, &n), Err(NonceError::InvalidHmac));
        let mut bytes = b64_decode_lenient(&n).unwrap();
        bytes[20] ^= 1;
        assert_eq!(verify_nonce(&w, &b64_encode(&bytes)), Err(NonceError::InvalidHmac));
        assert_eq!(verify_nonce(&w, "AAAA"), Err(NonceError::TooShort));
        assert!(matches!(verify_nonce(&w, "!!!"), Err(NonceError::Base64(_))));
    }

    #[test]
    fn injected_randomness_makes_nonces_deterministic() {
        let w = KeyDeriver::new(PrivateKey::from_bytes(&[5; 32]).unwrap());
        let mut a = StdRng::seed_from_u64(9);
        let mut b = StdRng::seed_from_u64(9);
        let (na, nb) = (create_nonce(&w, &mut a), create_nonce(&w, &mut b));
        assert_eq!(na, nb);
        verify_nonce(&w, &na).unwrap();
        assert_eq!(random_nonce(&mut a), random_nonce(&mut b));
        assert_ne!(create_nonce(&w, &mut a), na, "the generator moves on");
        let (sa, sb) = (SeededRandom::new(3), SeededRandom::new(3));
        let (mut x, mut y) = ([0u8; 16], [0u8; 16]);
        sa.fill(&mut x);
        sb.fill(&mut y);
        assert_eq!(x, y);
    }
}
