//! Reproducible inputs: identities and bodies derived from `--seed`, and the run tag that keeps
//! message ids and box names of different runs apart (the server ignores a repeated
//! messageId, which would corrupt list and ack counts).

use messagebox::auth::keys::sha256;
use messagebox::auth::{ClientIdentity, PrivateKey};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Identity `i` of seed `seed`: the key is `SHA-256("mbload identity" ‖ seed ‖ i ‖ n)` for the
/// first `n` that gives a valid scalar.
pub fn identity(seed: u64, i: usize) -> ClientIdentity {
    for n in 0u32.. {
        let mut data = b"mbload identity".to_vec();
        data.extend(seed.to_le_bytes());
        data.extend((i as u64).to_le_bytes());
        data.extend(n.to_le_bytes());
        if let Ok(k) = PrivateKey::from_bytes(&sha256(&data)) {
            return ClientIdentity::new(k);
        }
    }
    unreachable!("a valid scalar turns up within a few tries")
}

/// The RNG of worker `worker` (bodies, recipients, operation choices).
pub fn rng(seed: u64, worker: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A body of `len` characters that needs no JSON escaping (base64's alphabet, like the
/// `encryptedMessage` a real client sends).
pub fn body(rng: &mut StdRng, len: usize) -> String {
    (0..len).map(|_| ALPHABET[rng.random_range(0..64)] as char).collect()
}

/// Eight hex digits unique to this run (time and process id; deliberately not the seed).
pub fn run_tag() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let h = sha256(format!("{nanos}/{}", std::process::id()).as_bytes());
    hex::encode(&h[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_inputs_repeat() {
        assert_eq!(identity(7, 3).identity_hex(), identity(7, 3).identity_hex());
        assert_ne!(identity(7, 3).identity_hex(), identity(8, 3).identity_hex());
        assert_ne!(identity(7, 3).identity_hex(), identity(7, 4).identity_hex());
        let a = body(&mut rng(1, 0), 200);
        assert_eq!(a, body(&mut rng(1, 0), 200));
        assert_ne!(a, body(&mut rng(1, 1), 200));
        assert_eq!(a.len(), 200);
        assert!(a.bytes().all(|b| ALPHABET.contains(&b)));
        assert_eq!(run_tag().len(), 8);
    }
}
