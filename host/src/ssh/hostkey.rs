//! The gateway's own SSH host key: an Ed25519 key generated on first start and kept in the
//! data directory (OpenSSH format, mode 0600), so clients see the same key across restarts.

use std::io::{ErrorKind, Write};

use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};
use russh::keys::PrivateKey;
use russh::keys::ssh_key::LineEnding;
use russh::keys::ssh_key::private::Ed25519Keypair;

use super::SshError;
use crate::issuer::token;

/// File name of the host key inside the data directory.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// Reads the host key, generating and persisting it if it does not exist yet.
pub fn load_or_generate(data: &Dir) -> Result<PrivateKey, SshError> {
    let err = |e: &dyn std::fmt::Display| SshError::HostKey(e.to_string());
    match data.read_to_string(HOST_KEY_FILE) {
        Ok(text) => PrivateKey::from_openssh(text.as_bytes()).map_err(|e| err(&e)),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            token::fill(&mut seed);
            let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
            let pem = key.to_openssh(LineEnding::LF).map_err(|e| err(&e))?;
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true).mode(0o600);
            // create_new: if another process raced us, fail rather than overwrite its key.
            let mut f = data.open_with(HOST_KEY_FILE, &opts).map_err(|e| err(&e))?;
            f.write_all(pem.as_bytes()).map_err(|e| err(&e))?;
            f.sync_all().map_err(|e| err(&e))?;
            tracing::info!(
                fingerprint = %key.public_key().fingerprint(russh::keys::HashAlg::Sha256),
                "generated SSH host key"
            );
            Ok(key)
        }
        Err(e) => Err(err(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        let a = load_or_generate(&dir).unwrap();
        let b = load_or_generate(&dir).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let meta = std::fs::metadata(tmp.path().join(HOST_KEY_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
}
