//! Users, groups and devices, built once from the configuration.
//!
//! Passwords are kept only as argon2id hashes (plain `password` values are hashed on load, then
//! dropped); API keys only as SHA-256 hashes. A user configured with neither `password` nor
//! `password_hash` gets a generated password on first start, printed once and persisted as a
//! hash in the data directory (`users/<name>.hash`), which is how the embedded `admin` works.

use std::collections::HashMap;
use std::io::{Read, Write};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt};

use crate::config::{AccessLevel, Config, Credential, GroupConfig};
use crate::issuer::token;
use crate::policy::{DeviceRef, Principal};
use crate::secret::Secret;
use crate::store::TokenHash;

/// Why the directory could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("user {user:?}: {message}")]
    Password { user: String, message: String },
    #[error("cannot read or write generated password for {user:?} in the data directory: {source}")]
    Io {
        user: String,
        source: std::io::Error,
    },
}

/// A gateway user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    password_hash: String,
    pub groups: Vec<String>,
}

/// A managed device.
#[derive(Debug, Clone)]
pub struct Device {
    pub name: String,
    pub id: uuid::Uuid,
    pub ssh: Option<String>,
    pub winbox: Option<String>,
    pub host_key: Option<String>,
    pub provision: Option<String>,
    pub tags: Vec<String>,
    pub full: Option<Credential>,
    pub read_only: Option<Credential>,
}

impl Device {
    /// The device as a policy request sees it.
    pub fn policy_ref(&self) -> DeviceRef {
        DeviceRef {
            name: self.name.clone(),
            id: self.id.to_string(),
            tags: self.tags.clone(),
        }
    }

    /// The stored credential for an access level.
    pub fn credential(&self, level: AccessLevel) -> Option<&Credential> {
        match level {
            AccessLevel::Full => self.full.as_ref(),
            AccessLevel::ReadOnly => self.read_only.as_ref(),
        }
    }
}

/// Users, groups and devices.
#[derive(Debug)]
pub struct Directory {
    users: HashMap<String, User>,
    groups: Vec<GroupConfig>,
    devices: Vec<Device>,
    api_keys: HashMap<TokenHash, String>,
    /// Verified against when a user does not exist, so unknown and known users take equally long.
    dummy_hash: String,
}

/// A password the directory generated on first start; the caller prints it once.
#[derive(Debug)]
pub struct GeneratedPassword {
    pub user: String,
    pub password: Secret<String>,
}

/// Hashes a password with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let mut salt = [0u8; 16];
    token::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

impl Directory {
    /// Builds the directory; `data` is the data directory, used only for generated passwords.
    pub fn build(
        config: &Config,
        data: &Dir,
    ) -> Result<(Self, Vec<GeneratedPassword>), DirectoryError> {
        let mut generated = Vec::new();
        let mut users = HashMap::new();
        let mut api_keys = HashMap::new();
        for u in &config.users {
            let err = |message: String| DirectoryError::Password {
                user: u.name.clone(),
                message,
            };
            let password_hash = match (&u.password, &u.password_hash) {
                (Some(p), _) => hash_password(p.expose()).map_err(|e| err(e.to_string()))?,
                (None, Some(h)) => {
                    PasswordHash::new(h)
                        .map_err(|e| err(format!("password_hash is not a PHC string: {e}")))?;
                    h.clone()
                }
                (None, None) => {
                    let (hash, fresh) = stored_or_generated(data, &u.name)?;
                    if let Some(password) = fresh {
                        generated.push(GeneratedPassword {
                            user: u.name.clone(),
                            password,
                        });
                    }
                    hash
                }
            };
            for k in &u.api_keys {
                api_keys.insert(token::hash(k.expose()), u.name.clone());
            }
            users.insert(
                u.name.clone(),
                User {
                    name: u.name.clone(),
                    password_hash,
                    groups: u.groups.clone(),
                },
            );
        }
        let devices = config
            .devices
            .iter()
            .map(|d| Device {
                name: d.name.clone(),
                id: d.id,
                ssh: d.ssh.clone(),
                winbox: d.winbox.clone(),
                host_key: d.host_key.clone(),
                provision: d.provision.clone(),
                tags: d.tags.clone(),
                full: d.credentials.full.clone(),
                read_only: d.credentials.read_only.clone(),
            })
            .collect();
        let dummy_hash =
            hash_password("sallyport-timing-equaliser").map_err(|e| DirectoryError::Password {
                user: String::new(),
                message: e.to_string(),
            })?;
        Ok((
            Self {
                users,
                groups: config.groups.clone(),
                devices,
                api_keys,
                dummy_hash,
            },
            generated,
        ))
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn device(&self, name: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.name == name)
    }

    /// Every configured device, in configuration order.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    pub fn device_by_id(&self, id: uuid::Uuid) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }

    pub fn groups(&self) -> &[GroupConfig] {
        &self.groups
    }

    /// Checks a password; slow by design (argon2), so call it off the async executor.
    pub fn verify_password(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(u) => verify(&u.password_hash, password),
            None => {
                verify(&self.dummy_hash, password);
                false
            }
        }
    }

    /// The user owning an API key; with `user` given, only if the key is theirs.
    pub fn user_for_api_key(&self, key: &str, user: Option<&str>) -> Option<&User> {
        let hash = token::hash(key);
        let (stored_hash, owner) = self.api_keys.get_key_value(&hash)?;
        if !token::hashes_equal(stored_hash, &hash) || user.is_some_and(|u| u != owner) {
            return None;
        }
        self.users.get(owner)
    }

    /// The user as a policy request sees them: groups, and whether any group grants sudo.
    pub fn principal(&self, user: &User) -> Principal {
        let sudo = self
            .groups
            .iter()
            .any(|g| g.sudo && user.groups.contains(&g.name));
        Principal {
            name: user.name.clone(),
            groups: user.groups.clone(),
            sudo,
        }
    }
}

fn stored_or_generated(
    data: &Dir,
    user: &str,
) -> Result<(String, Option<Secret<String>>), DirectoryError> {
    let io = |source| DirectoryError::Io {
        user: user.to_string(),
        source,
    };
    let file = format!("users/{user}.hash");
    match data.open(&file) {
        Ok(mut f) => {
            let mut hash = String::new();
            f.read_to_string(&mut hash).map_err(io)?;
            Ok((hash.trim().to_string(), None))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let password = token::new_password(20);
            let hash = hash_password(password.expose()).map_err(|e| DirectoryError::Password {
                user: user.into(),
                message: e.to_string(),
            })?;
            data.create_dir_all("users").map_err(io)?;
            let mut opts = OpenOptions::new();
            opts.write(true).create_new(true).mode(0o600);
            let mut f = data.open_with(&file, &opts).map_err(io)?;
            f.write_all(hash.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok((hash, Some(password)))
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> (tempfile::TempDir, Dir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::open_ambient_dir(tmp.path(), cap_std::ambient_authority()).unwrap();
        (tmp, dir)
    }

    #[test]
    fn generated_admin_password_is_printed_once_and_persists() {
        let (_tmp, dir) = data();
        let config = Config::embedded_default();
        let (d1, gen1) = Directory::build(&config, &dir).unwrap();
        assert_eq!(gen1.len(), 1);
        let pw = gen1[0].password.expose().clone();
        assert!(d1.verify_password("admin", &pw));
        let (d2, gen2) = Directory::build(&config, &dir).unwrap();
        assert!(gen2.is_empty());
        assert!(d2.verify_password("admin", &pw));
        assert!(!d2.verify_password("admin", "wrong"));
        assert!(!d2.verify_password("nobody", &pw));
    }

    #[test]
    fn api_keys_bind_to_their_user() {
        let (_tmp, dir) = data();
        let config = Config::parse(
            "[[groups]]\nname=\"g\"\nsudo=true\n[[users]]\nname=\"bot\"\npassword=\"x\"\ngroups=[\"g\"]\napi_keys=[\"k1\"]\n[[users]]\nname=\"eve\"\npassword=\"y\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let (d, _) = Directory::build(&config, &dir).unwrap();
        assert_eq!(
            d.user_for_api_key("k1", None).map(|u| u.name.as_str()),
            Some("bot")
        );
        assert_eq!(
            d.user_for_api_key("k1", Some("bot"))
                .map(|u| u.name.as_str()),
            Some("bot")
        );
        assert!(d.user_for_api_key("k1", Some("eve")).is_none());
        assert!(d.user_for_api_key("k2", None).is_none());
        let bot = d.user("bot").unwrap();
        assert!(d.principal(bot).sudo);
        assert!(!d.principal(d.user("eve").unwrap()).sudo);
    }
}
