//! Sealing of transient-access passwords at rest.
//!
//! The Altostrat API returns the password again on `GET`, so it must be recoverable; it is kept
//! encrypted (ChaCha20-Poly1305, random nonce) under a 256-bit key that lives in the data
//! directory (`secret.key`, mode 0600, created on first start). Its SHA-256 hash is kept beside
//! it for login checks, which never decrypt.

use std::io::{Read, Write};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::secret::Secret;

const KEY_FILE: &str = "secret.key";
const NONCE_LEN: usize = 12;

/// Why sealing or unsealing failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read or create {KEY_FILE} in the data directory: {0}")]
    Key(std::io::Error),
    #[error("{KEY_FILE} is not 32 bytes long")]
    KeyLength,
    #[error("sealed value is corrupt or was sealed with another key")]
    Corrupt,
}

/// Encrypts and decrypts small secrets with the data directory's key.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<redacted>)")
    }
}

impl Sealer {
    /// Loads the key from `dir`, creating it on first start.
    pub fn open(dir: &Dir) -> Result<Self, SealError> {
        let mut key = Vec::new();
        match dir.open(KEY_FILE) {
            Ok(mut f) => {
                f.read_to_end(&mut key).map_err(SealError::Key)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                key = vec![0u8; 32];
                super::token::fill(&mut key);
                let mut opts = OpenOptions::new();
                opts.write(true).create_new(true).mode(0o600);
                let mut f = dir.open_with(KEY_FILE, &opts).map_err(SealError::Key)?;
                f.write_all(&key).map_err(SealError::Key)?;
                f.sync_all().map_err(SealError::Key)?;
            }
            Err(e) => return Err(SealError::Key(e)),
        }
        if key.len() != 32 {
            return Err(SealError::KeyLength);
        }
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// `nonce || ciphertext+tag`.
    pub fn seal(&self, plain: &Secret<String>) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        super::token::fill(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.expose().as_bytes())
            .map_err(|_| SealError::Corrupt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(out)
    }

    pub fn open_sealed(&self, sealed: &[u8]) -> Result<Secret<String>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Corrupt);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| SealError::Corrupt)?;
        String::from_utf8(plain)
            .map(Secret::new)
            .map_err(|_| SealError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_key_persists() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        let a = Sealer::open(&dir).unwrap();
        let sealed = a.seal(&Secret::new("P@ss".to_string())).unwrap();
        assert!(!sealed.windows(4).any(|w| w == b"P@ss"));
        let b = Sealer::open(&dir).unwrap();
        assert_eq!(b.open_sealed(&sealed).unwrap().expose(), "P@ss");
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(b.open_sealed(&tampered).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tmp.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
