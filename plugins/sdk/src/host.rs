//! The plugin's view of the `host` interface: [`log`] and [`config`]. On `wasm32` they call
//! the component's imports; elsewhere they use the in-process state of [`crate::testing`].

use std::fmt;

/// Severity of a [`log`] line; the number is what crosses the WIT boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// 1: something is wrong with the plugin or its configuration.
    Error = 1,
    /// 2: surprising but handled.
    Warn = 2,
    /// 3: worth keeping in the host's log.
    Info = 3,
    /// 4: detail for whoever debugs the policy.
    Debug = 4,
    /// 5: even more detail.
    Trace = 5,
}

/// Writes a line to the host's log (tagged by the host with the plugin and request id).
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::authorize::sallyport::policy::host::log(level as u8, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::record_log(level, message);
}

/// Reads a key of the plugin's configuration. Strings come as they are; other values (numbers,
/// booleans, arrays, tables) as compact JSON, see [`config_json`].
pub fn config(key: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::authorize::sallyport::policy::host::config(key);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::lookup_config(key);
}

/// Reads a configuration key that holds JSON and deserializes it with `miniserde` (derive
/// `miniserde::Deserialize` on your type). `Ok(None)` if the key is absent.
pub fn config_json<T: miniserde::Deserialize>(key: &str) -> Result<Option<T>, ConfigError> {
    match config(key) {
        None => Ok(None),
        Some(text) => miniserde::json::from_str(&text)
            .map(Some)
            .map_err(|_| ConfigError {
                key: key.to_string(),
                value: text,
            }),
    }
}

/// A configuration value that did not have the expected shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The key that was read.
    pub key: String,
    /// The value the host returned for it.
    pub value: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 80;
        let mut shown: String = self.value.chars().take(SHOWN).collect();
        if self.value.chars().nth(SHOWN).is_some() {
            shown.push('…');
        }
        write!(
            f,
            "config key `{}` does not have the expected JSON shape: {shown}",
            self.key
        )
    }
}

impl std::error::Error for ConfigError {}
