//! Secret generation and comparison: every token, ticket and password the gateway hands out
//! comes from a per-thread ChaCha20 CSPRNG seeded from the operating system, is stored only as
//! its SHA-256 hash, and is compared in constant time.
//!
//! A plain hash (not a slow KDF) is right here because the inputs are ≥128-bit random values:
//! there is nothing to brute-force. Lookups by hash in the store reveal nothing useful through
//! timing, since an attacker cannot steer the hash of a guess; the final equality check is still
//! constant-time so no code path compares secrets byte by byte.

use std::cell::RefCell;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;
use crate::store::TokenHash;

thread_local! {
    static RNG: RefCell<ChaCha20Rng> = RefCell::new(seed());
}

fn seed() -> ChaCha20Rng {
    match ChaCha20Rng::try_from_os_rng() {
        Ok(rng) => rng,
        Err(e) => {
            // No weak fallback: a gateway that cannot get OS randomness must not issue secrets.
            tracing::error!(error = %e, "operating system random source failed; aborting");
            std::process::abort()
        }
    }
}

/// Fills `buf` from the CSPRNG.
pub fn fill(buf: &mut [u8]) {
    RNG.with(|r| r.borrow_mut().fill_bytes(buf));
}

/// A uniformly random index below `n` (`n > 0`), by rejection sampling.
pub fn random_index(n: usize) -> usize {
    let n = n.max(1) as u64;
    let zone = u64::MAX - (u64::MAX % n);
    RNG.with(|r| {
        let mut r = r.borrow_mut();
        loop {
            let v = r.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    })
}

/// A 128-bit one-time key: 32 lower-case hex characters, and its hash.
pub fn new_otk() -> (Secret<String>, TokenHash) {
    let mut raw = [0u8; 16];
    fill(&mut raw);
    let token = hex::encode(raw);
    let hash = hash(&token);
    (Secret::new(token), hash)
}

/// A 256-bit login ticket (64 hex characters) and its hash.
pub fn new_ticket() -> (Secret<String>, TokenHash) {
    let mut raw = [0u8; 32];
    fill(&mut raw);
    let token = hex::encode(raw);
    let hash = hash(&token);
    (Secret::new(token), hash)
}

const ALNUM: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random_from(alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| alphabet[random_index(alphabet.len())] as char)
        .collect()
}

/// A password of `len` unambiguous letters and digits (57 symbols: 24 chars ≈ 140 bits).
/// Only URL- and shell-safe characters, so it can sit in a `winbox://` link unescaped.
pub fn new_password(len: usize) -> Secret<String> {
    Secret::new(random_from(ALNUM, len))
}

/// `transient-` followed by 12 lower-case letters and digits.
pub fn new_transient_username() -> String {
    format!("transient-{}", random_from(LOWER, 12))
}

/// SHA-256 of a token.
pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two hashes.
pub fn hashes_equal(a: &TokenHash, b: &TokenHash) -> bool {
    a.ct_eq(b).into()
}

/// Whether `s` has the shape of a one-time key (32 lower-case hex characters).
pub fn looks_like_otk(s: &str) -> bool {
    s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otk_shape_and_uniqueness() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let (t, h) = new_otk();
            assert!(looks_like_otk(t.expose()), "{}", t.expose());
            assert_eq!(hash(t.expose()), h);
            assert!(seen.insert(t.expose().clone()));
        }
    }

    #[test]
    fn otk_shape_check_rejects_others() {
        for bad in [
            "",
            "ABCDEF0123456789abcdef0123456789",
            "g0000000000000000000000000000000",
            "00",
        ] {
            assert!(!looks_like_otk(bad), "{bad}");
        }
    }

    #[test]
    fn random_index_covers_range() {
        let mut hit = [false; 7];
        for _ in 0..1000 {
            hit[random_index(7)] = true;
        }
        assert!(hit.iter().all(|h| *h));
    }

    #[test]
    fn password_and_username_shapes() {
        let p = new_password(24);
        assert_eq!(p.expose().len(), 24);
        assert!(p.expose().bytes().all(|b| b.is_ascii_alphanumeric()));
        let u = new_transient_username();
        assert!(u.starts_with("transient-") && u.len() == 22, "{u}");
    }

    #[test]
    fn constant_time_equality() {
        let a = hash("a");
        assert!(hashes_equal(&a, &hash("a")));
        assert!(!hashes_equal(&a, &hash("b")));
    }
}
