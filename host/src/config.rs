//! The configuration file (`sallyport serve --config FILE`) and its embedded defaults.
//!
//! Every table rejects unknown keys, so a typo is an error naming the key and its line rather
//! than a silently ignored setting. Semantic checks (ranges, references between users, groups
//! and devices) run in [`Config::validate`] after parsing.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::Secret;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// Directory of the file this was loaded from; relative plugin paths resolve against it.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

/// `[server]`: listeners, data directory and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub api_listen: SocketAddr,
    pub ssh_listen: SocketAddr,
    pub public_host: String,
    /// `"45000-45999"` (or one port, `"45000"`): the pool for per-access listeners.
    pub transient_ports: PortRange,
    /// Address the per-access Winbox listeners bind to (`public_host` should resolve to it, or
    /// to a NAT in front of it). `0.0.0.0` for every interface.
    pub transient_listen_ip: IpAddr,
    pub plugins_dir: Option<PathBuf>,
    /// HTTPS on the API listener. Turning it off is meant for tests and benchmarks only.
    pub tls: bool,
    /// How long a login ticket (`POST /api/v1/Session`) stays valid, in seconds.
    pub ticket_ttl_secs: u64,
    /// The largest `duration` an open-session key may ask for, in seconds.
    pub max_otk_duration_secs: u64,
    /// How often the sweeper looks for due expiries, in milliseconds.
    pub sweep_interval_ms: u64,
    /// Load the built-in policy components (group globs, sudo, source CIDR) for their hooks.
    pub builtin_policies: bool,
    /// How the plugins of one hook combine.
    pub policy_combine: CombineRule,
    /// Default per-decision deadline of a plugin, in milliseconds.
    pub plugin_deadline_ms: u64,
    /// Default per-decision memory cap of a plugin, in MiB.
    pub plugin_memory_mb: u64,
    /// API: most connections one source address may hold open at once.
    pub api_max_connections_per_source: usize,
    /// SSH: seconds a client has to log in before it is disconnected.
    pub ssh_login_grace_secs: u64,
    /// SSH: most connections that may be unauthenticated at once (across all SSH listeners).
    pub ssh_max_unauthenticated: usize,
    /// SSH: most unauthenticated connections from one source address at once.
    pub ssh_max_unauthenticated_per_source: usize,
    /// SSH: failed logins from one source address before it is refused for a while.
    pub ssh_penalty_failures: u32,
    /// SSH: first refusal period of a penalised source, in seconds; doubles per repeat, capped
    /// at 10 minutes.
    pub ssh_penalty_secs: u64,
}

/// How the decisions of several plugins on one hook combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CombineRule {
    /// Any deny wins; at least one allow is needed; abstain is neutral (the default).
    DenyOverrides,
    /// Every plugin must allow; an abstain counts as a deny.
    Unanimous,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./sallyport-data"),
            api_listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            ssh_listen: SocketAddr::from(([127, 0, 0, 1], 2222)),
            public_host: "localhost".into(),
            transient_ports: PortRange(45000..=45999),
            transient_listen_ip: IpAddr::from([127, 0, 0, 1]),
            plugins_dir: None,
            tls: true,
            ticket_ttl_secs: 12 * 3600,
            max_otk_duration_secs: 24 * 3600,
            sweep_interval_ms: 500,
            builtin_policies: true,
            policy_combine: CombineRule::DenyOverrides,
            plugin_deadline_ms: 20,
            plugin_memory_mb: 16,
            api_max_connections_per_source: 64,
            ssh_login_grace_secs: 30,
            ssh_max_unauthenticated: 64,
            ssh_max_unauthenticated_per_source: 10,
            ssh_penalty_failures: 5,
            ssh_penalty_secs: 30,
        }
    }
}

/// A range of TCP ports, written `"FIRST-LAST"` or `"PORT"`. Checked while parsing, so a
/// bad value is reported with its line.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PortRange(RangeInclusive<u16>);

impl TryFrom<String> for PortRange {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?}: expected \"FIRST-LAST\" with 1 <= FIRST <= LAST <= 65535, or one port"
            )
        };
        let (a, b) = text.split_once('-').unwrap_or((&text, &text));
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if a == 0 || a > b {
            return Err(bad());
        }
        Ok(Self(a..=b))
    }
}

impl ServerConfig {
    /// The `transient_ports` range.
    pub fn port_range(&self) -> RangeInclusive<u16> {
        self.transient_ports.0.clone()
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.plugins_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("plugins"))
    }
}

/// Largest per-call CPU deadline of a plugin. A decision runs on the thread serving its
/// request, so a plugin that loops until its deadline holds that thread for this long (and a
/// wall-clock ceiling of 20 times it). Rust policies need microseconds; a componentize-py one
/// needs 20–40 ms per decision (its README suggests 2000 ms of headroom): ten seconds bounds
/// a runaway plugin without refusing any real one.
pub const MAX_PLUGIN_DEADLINE_MS: u64 = 10_000;
/// Largest per-plugin memory cap.
pub const MAX_PLUGIN_MEMORY_MB: u64 = 4096;

/// Checks a plugin's `deadline_ms` and `memory_mb` (wherever they are set: `[server]`
/// defaults, `[[plugins]]`, a drop-in's sidecar); the error names the key.
pub fn check_plugin_limits(deadline_ms: Option<u64>, memory_mb: Option<u64>) -> Result<(), String> {
    if let Some(d) = deadline_ms.filter(|d| !(1..=MAX_PLUGIN_DEADLINE_MS).contains(d)) {
        return Err(format!(
            "deadline_ms = {d}: must be 1..={MAX_PLUGIN_DEADLINE_MS}"
        ));
    }
    if let Some(m) = memory_mb.filter(|m| !(1..=MAX_PLUGIN_MEMORY_MB).contains(m)) {
        return Err(format!(
            "memory_mb = {m}: must be 1..={MAX_PLUGIN_MEMORY_MB}"
        ));
    }
    Ok(())
}

/// A TOML error as "line L, column C: message", without the excerpt of the file that the
/// error's own `Display` shows: configuration files hold passwords and keys, and an excerpt
/// of a broken line would copy them into a log.
pub fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            // The key of that line (never its value) says which setting is meant; a line
            // that does not start with a bare key, or lies inside a multi-line string (an odd
            // number of triple quotes before it), names none.
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let earlier = text.get(..line_start).unwrap_or_default();
            let in_string = earlier.matches("\"\"\"").count() % 2 == 1
                || earlier.matches("\'\'\'").count() % 2 == 1;
            let key = text
                .lines()
                .nth(line - 1)
                .filter(|_| !in_string)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| {
                    !k.is_empty()
                        && k.len() <= 64
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                })
                .map_or(String::new(), |k| format!(" ({k})"));
            format!(
                "line {line}, column {column}{key}: {}",
                without_value(e.message())
            )
        }
        None => without_value(e.message()),
    }
}

/// serde quotes the value it could not use (``invalid type: integer `123456`, expected a
/// string``, `invalid type: string "…", expected u64`); that value may be a password or token
/// written in the wrong place or form, so only its kind is kept.
fn without_value(message: &str) -> String {
    let message = message.trim_end();
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((unexpected, expected)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once(", expected"))
        {
            let kind = unexpected.split_whitespace().next().unwrap_or("value");
            return format!("{prefix}{kind}, expected{expected}");
        }
    }
    message.to_string()
}

/// Access level a group grants on its devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessLevel {
    ReadOnly,
    Full,
}

impl AccessLevel {
    /// The level of a transient access's `full_access` flag.
    pub fn from_full_access(full_access: bool) -> Self {
        if full_access {
            AccessLevel::Full
        } else {
            AccessLevel::ReadOnly
        }
    }

    /// The name of the device credential for this level (`credentials.full`,
    /// `credentials.read_only`).
    pub fn credential_name(self) -> &'static str {
        match self {
            AccessLevel::Full => "full",
            AccessLevel::ReadOnly => "read_only",
        }
    }
}

/// `[[groups]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    #[serde(default)]
    pub sudo: bool,
    #[serde(default)]
    pub devices: Vec<String>,
    #[serde(default = "default_access")]
    pub access: AccessLevel,
}

fn default_access() -> AccessLevel {
    AccessLevel::ReadOnly
}

/// `[[users]]`: a password (hashed on load) or a `password_hash`, plus API keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub password: Option<Secret<String>>,
    pub password_hash: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// API keys for the `username` + `api_key` headers or `Authorization: Bearer`.
    #[serde(default)]
    pub api_keys: Vec<Secret<String>>,
}

/// `[[devices]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    pub id: uuid::Uuid,
    pub ssh: Option<String>,
    pub winbox: Option<String>,
    pub host_key: Option<String>,
    /// Device-side user provisioning driver for transient accesses (`none`, `routeros`).
    pub provision: Option<String>,
    /// `provision = "routeros"`: base URL of the device's REST API; default
    /// `https://<host of the winbox address>`.
    pub routeros_url: Option<String>,
    /// `provision = "routeros"` over HTTPS: SHA-256 of the device's certificate (DER), hex with
    /// or without colons. Required unless `routeros_insecure = true`.
    pub routeros_cert_sha256: Option<String>,
    /// `provision = "routeros"` over HTTPS: accept any certificate (labs only).
    #[serde(default)]
    pub routeros_insecure: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub credentials: DeviceCredentials,
}

/// `credentials.full` / `credentials.read_only`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceCredentials {
    pub full: Option<Credential>,
    pub read_only: Option<Credential>,
}

/// One login on a device: a user with a password or a key file inside the data directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub user: String,
    pub password: Option<Secret<String>>,
    pub key_file: Option<PathBuf>,
}

/// Which decision point a plugin serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Authorize,
    Sudo,
    Source,
}

impl Hook {
    pub const ALL: [Hook; 3] = [Hook::Authorize, Hook::Sudo, Hook::Source];

    /// The name configuration files and the CLI use (`hook = "sudo"`, `--hook sudo`).
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Authorize => "authorize",
            Hook::Sudo => "sudo",
            Hook::Source => "source",
        }
    }
}

impl std::str::FromStr for Hook {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Hook::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| format!("{s:?}: expected authorize, sudo or source"))
    }
}

/// `[[plugins]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    pub hook: Hook,
    pub path: PathBuf,
    #[serde(default)]
    pub config: toml::Table,
    pub deadline_ms: Option<u64>,
    pub memory_mb: Option<u64>,
}

impl Config {
    /// The embedded defaults used when no file is given: one `admins` group reaching every
    /// device with sudo, one `admin` user whose password is generated on first start.
    pub fn embedded_default() -> Self {
        Self {
            server: ServerConfig::default(),
            groups: vec![GroupConfig {
                name: "admins".into(),
                sudo: true,
                devices: vec!["*".into()],
                access: AccessLevel::Full,
            }],
            users: vec![UserConfig {
                name: "admin".into(),
                password: None,
                password_hash: None,
                groups: vec!["admins".into()],
                api_keys: vec![],
            }],
            devices: vec![],
            plugins: vec![],
            base_dir: None,
        }
    }

    /// Parses TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: toml_error(text, &e),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        config.base_dir = path.parent().map(Path::to_path_buf);
        Ok(config)
    }

    /// Checks what the types cannot: references, ranges, duplicates.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.server.ticket_ttl_secs == 0 || self.server.max_otk_duration_secs == 0 {
            return invalid(
                "server.ticket_ttl_secs and server.max_otk_duration_secs must be > 0".into(),
            );
        }
        if let Err(e) = check_plugin_limits(
            Some(self.server.plugin_deadline_ms),
            Some(self.server.plugin_memory_mb),
        ) {
            return invalid(format!("server.plugin_{e}"));
        }
        for p in &self.plugins {
            if let Err(e) = check_plugin_limits(p.deadline_ms, p.memory_mb) {
                return invalid(format!("[[plugins]] {}: {e}", p.path.display()));
            }
        }
        if self.server.sweep_interval_ms == 0 {
            return invalid("server.sweep_interval_ms must be > 0".into());
        }
        if self.server.api_max_connections_per_source == 0 {
            return invalid("server.api_max_connections_per_source must be > 0".into());
        }
        if self.server.ssh_login_grace_secs == 0
            || self.server.ssh_max_unauthenticated == 0
            || self.server.ssh_max_unauthenticated_per_source == 0
            || self.server.ssh_penalty_failures == 0
        {
            return invalid(
                "server.ssh_login_grace_secs, ssh_max_unauthenticated, ssh_max_unauthenticated_per_source and ssh_penalty_failures must be > 0"
                    .into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for g in &self.groups {
            if !seen.insert(("group", g.name.as_str())) {
                return invalid(format!("group {:?} is defined twice", g.name));
            }
        }
        for u in &self.users {
            if !seen.insert(("user", u.name.as_str())) {
                return invalid(format!("user {:?} is defined twice", u.name));
            }
            if u.name.is_empty() || u.name.contains([':', '#', '@']) {
                return invalid(format!(
                    "user {:?}: names must be non-empty and must not contain ':', '#' or '@'",
                    u.name
                ));
            }
            if u.password.is_some() && u.password_hash.is_some() {
                return invalid(format!(
                    "user {:?}: set password or password_hash, not both",
                    u.name
                ));
            }
            for g in &u.groups {
                if !self.groups.iter().any(|x| &x.name == g) {
                    return invalid(format!("user {:?} names unknown group {g:?}", u.name));
                }
            }
        }
        for d in &self.devices {
            if !seen.insert(("device", d.name.as_str())) {
                return invalid(format!("device {:?} is defined twice", d.name));
            }
            if d.name.is_empty() || d.name.contains([':', '#', '@', '/']) {
                return invalid(format!(
                    "device {:?}: names must be non-empty and must not contain ':', '#', '@' or '/'",
                    d.name
                ));
            }
            if self.devices.iter().filter(|x| x.id == d.id).count() > 1 {
                return invalid(format!(
                    "device id {} is used by more than one device",
                    d.id
                ));
            }
            crate::provision::validate_device(d).map_err(ConfigError::Invalid)?;
            for c in [&d.credentials.full, &d.credentials.read_only]
                .into_iter()
                .flatten()
            {
                if c.password.is_some() == c.key_file.is_some() {
                    return invalid(format!(
                        "device {:?}: credential for {:?} needs exactly one of password or key_file",
                        d.name, c.user
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = parse("[server]\napi_listen = \"127.0.0.1:1\"\nbogus_key = 1\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bogus_key"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
[server]
data_dir = "/tmp/x"
transient_ports = "46000-46010"
[[groups]]
name = "admins"
sudo = true
devices = ["*"]
access = "full"
[[users]]
name = "admin"
password = "pw"
groups = ["admins"]
[[devices]]
name = "device1"
id = "d290f1ee-6c54-4b01-90e6-d701748f0851"
ssh = "127.0.0.1:22"
credentials.full = { user = "root", password = "x" }
credentials.read_only = { user = "viewer", key_file = "keys/viewer" }
"#,
        )
        .unwrap();
        assert_eq!(c.server.port_range(), 46000..=46010);
        assert_eq!(c.groups[0].access, AccessLevel::Full);
        assert!(format!("{c:?}").contains("<redacted>"));
        assert!(!format!("{c:?}").contains("\"pw\""));
    }

    #[test]
    fn a_bad_port_range_is_named_with_its_line_and_one_port_is_a_range() {
        for bad in ["5-1", "abc", "0-10", "1-70000", ""] {
            let text = format!("[server]\ntls = false\ntransient_ports = \"{bad}\"\n");
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.contains("transient_ports"), "{bad}: {msg}");
            assert!(msg.contains("line 3"), "{bad}: {msg}");
        }
        let c = parse("[server]\ntransient_ports = \"24800\"\n").unwrap();
        assert_eq!(c.server.port_range(), 24800..=24800);
        let c = parse("[server]\ntransient_ports = \" 100 - 200 \"\n").unwrap();
        assert_eq!(c.server.port_range(), 100..=200);
    }

    #[test]
    fn parse_errors_name_the_line_and_never_quote_the_file() {
        let text = "[[users]]\nname = \"a\"\npassword = \"hunter2-secret\nx = 1\n";
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.contains("line 3"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        // A password of the wrong type: serde would quote it.
        let msg = parse("[[users]]\nname = \"a\"\npassword = 123456\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("line 3") && msg.contains("(password)"),
            "{msg}"
        );
        assert!(msg.contains("invalid type: integer, expected"), "{msg}");
        assert!(!msg.contains("123456"), "{msg}");
        let msg = parse("[server]\nplugin_deadline_ms = \"SECRET-TYPE-LEAK\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("invalid type: string, expected"), "{msg}");
        assert!(!msg.contains("SECRET"), "{msg}");
        // Inside a multi-line string no line is taken for a key (a bad escape there).
        let text = "[[users]]\nname = \"a\"\npassword = \"\"\"\nc2VjcmV0=\\q\n\"\"\"\n";
        let msg = parse(text).unwrap_err().to_string();
        assert!(msg.contains("line 4"), "{msg}");
        assert!(!msg.contains("c2VjcmV0"), "{msg}");
    }

    #[test]
    fn plugin_limits_are_bounded() {
        for (text, needle) in [
            (
                "[server]\nplugin_deadline_ms = 0",
                "server.plugin_deadline_ms = 0",
            ),
            (
                "[server]\nplugin_deadline_ms = 10001",
                "deadline_ms = 10001",
            ),
            ("[server]\nplugin_memory_mb = 5000", "memory_mb = 5000"),
            (
                "[[plugins]]\nhook = \"authorize\"\npath = \"x.wasm\"\ndeadline_ms = 18446744073709551615",
                "deadline_ms = 18446744073709551615: must be 1..=10000",
            ),
        ] {
            let msg = parse(text).unwrap_err().to_string();
            assert!(msg.contains(needle), "{text}: {msg}");
        }
        assert!(parse("[server]\nplugin_deadline_ms = 10000").is_ok());
    }

    #[test]
    fn semantic_errors() {
        for (text, needle) in [
            (
                "[[users]]\nname = \"a\"\ngroups = [\"nope\"]",
                "unknown group",
            ),
            ("[[users]]\nname = \"a:b\"", "must not contain"),
            ("[[devices]]\nname = \"d\"\nid = \"not-a-uuid\"", "UUID"),
        ] {
            let msg = parse(text).unwrap_err().to_string();
            assert!(msg.contains(needle), "{text}: {msg}");
        }
    }
}
