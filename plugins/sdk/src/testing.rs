//! Native test harness: on non-wasm targets, [`crate::config`] reads a per-thread map that
//! tests fill with [`set_config`], and [`crate::log`] lines are kept for [`take_logs`]. Each
//! test thread has its own state (`cargo test` runs each test on its own thread), so tests
//! don't see each other's configuration. On `wasm32` this module is empty.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use crate::Level;
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    thread_local! {
        static CONFIG: RefCell<BTreeMap<String, String>> = const { RefCell::new(BTreeMap::new()) };
        static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    /// Serves `value` for `config(key)` on this thread.
    pub fn set_config(key: &str, value: &str) {
        CONFIG.with(|c| c.borrow_mut().insert(key.to_string(), value.to_string()));
    }

    /// Makes `config(key)` absent again on this thread.
    pub fn remove_config(key: &str) {
        CONFIG.with(|c| c.borrow_mut().remove(key));
    }

    /// Empties this thread's configuration and log.
    pub fn reset() {
        CONFIG.with(|c| c.borrow_mut().clear());
        LOGS.with(|l| l.borrow_mut().clear());
    }

    /// Returns and clears the lines logged on this thread.
    pub fn take_logs() -> Vec<(Level, String)> {
        LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }

    pub(crate) fn lookup_config(key: &str) -> Option<String> {
        CONFIG.with(|c| c.borrow().get(key).cloned())
    }

    pub(crate) fn record_log(level: Level, message: &str) {
        LOGS.with(|l| l.borrow_mut().push((level, message.to_string())));
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::{lookup_config, record_log};
#[cfg(not(target_arch = "wasm32"))]
pub use native::{remove_config, reset, set_config, take_logs};

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use crate::{Level, config, log};

    #[test]
    fn config_and_log_are_served_in_process() {
        super::set_config("open", "08:00");
        assert_eq!(config("open").as_deref(), Some("08:00"));
        assert_eq!(config("close"), None);
        super::remove_config("open");
        assert_eq!(config("open"), None);
        log(Level::Warn, "careful");
        assert_eq!(super::take_logs(), [(Level::Warn, "careful".to_string())]);
        assert!(super::take_logs().is_empty());
    }

    #[test]
    fn config_json_reads_structures() {
        #[derive(miniserde::Deserialize, Debug, PartialEq)]
        struct Window {
            open: String,
            days: Vec<u8>,
        }
        super::set_config("w", r#"{"open":"08:00","days":[1,2],"extra":true}"#);
        let w: Option<Window> = crate::config_json("w").unwrap_or_default();
        assert_eq!(
            w,
            Some(Window {
                open: "08:00".into(),
                days: vec![1, 2]
            })
        );
        assert_eq!(crate::config_json::<Window>("missing"), Ok(None));
        super::set_config("bad", "[1,");
        let err = crate::config_json::<Window>("bad")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("config key `bad` does not have the expected JSON shape: [1,")
        );
    }
}
