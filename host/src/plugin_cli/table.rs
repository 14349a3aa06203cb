//! Reading one table of a fixture field by field, so that every error names the field it is
//! about (`request.ttl-seconds: expected …, found string "abc"`) in the words a fixture author
//! writes, never a Rust type name.
//!
//! Keys are accepted as in the WIT (`ttl-seconds`) or as in TOML configs (`ttl_seconds`); both
//! spellings of one key in one table are an error rather than one silently winning.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a fixture file is not a fixture. The file name is not part of it: the caller prints it.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("a fixture is a table (TOML) or an object (JSON)")]
    NotTable,
    #[error("{field}: {problem}")]
    Field { field: String, problem: String },
}

/// The remaining keys of one table (normalised to the WIT spelling) and where it is.
pub struct Table {
    at: String,
    keys: BTreeMap<String, Value>,
}

/// How a value looks to the person who wrote it.
pub fn found(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a table".into(),
    }
}

impl Table {
    /// The table `value` found at `at` (`""` for the top level); `example` is what to write
    /// instead when it is not a table.
    pub fn new(at: &str, value: Value, example: &str) -> Result<Self, FixtureError> {
        let Value::Object(map) = value else {
            return Err(if at.is_empty() {
                FixtureError::NotTable
            } else {
                FixtureError::Field {
                    field: at.into(),
                    problem: format!(
                        "expected a table such as {example}, found {}",
                        found(&value)
                    ),
                }
            });
        };
        let mut keys = BTreeMap::new();
        let mut spelled: BTreeMap<String, String> = BTreeMap::new();
        for (key, v) in map {
            let norm = key.replace('_', "-");
            if let Some(first) = spelled.get(&norm) {
                return Err(FixtureError::Field {
                    field: join(at, &norm),
                    problem: format!("given twice, as {first:?} and {key:?}: keep one"),
                });
            }
            spelled.insert(norm.clone(), key);
            keys.insert(norm, v);
        }
        Ok(Self {
            at: at.into(),
            keys,
        })
    }

    /// The path of `key` in this table, for messages.
    pub fn field(&self, key: &str) -> String {
        join(&self.at, key)
    }

    /// An error about `key`.
    pub fn error(&self, key: &str, problem: impl Into<String>) -> FixtureError {
        FixtureError::Field {
            field: self.field(key),
            problem: problem.into(),
        }
    }

    /// Removes and returns `key`'s raw value.
    pub fn take_value(&mut self, key: &str) -> Option<Value> {
        self.keys.remove(key)
    }

    /// Removes `key` and reads it as `T`; `what` says what it should be (`"true or false"`).
    pub fn take<T: DeserializeOwned>(
        &mut self,
        key: &str,
        what: &str,
    ) -> Result<Option<T>, FixtureError> {
        let Some(v) = self.keys.remove(key) else {
            return Ok(None);
        };
        // Deserialize from a reference so the value is still there for the message.
        T::deserialize(&v)
            .map(Some)
            .map_err(|_| self.error(key, format!("expected {what}, found {}", found(&v))))
    }

    /// Removes `key`, which must be a table; `example` is shown when it is something else.
    pub fn take_table(&mut self, key: &str, example: &str) -> Result<Option<Table>, FixtureError> {
        match self.keys.remove(key) {
            None => Ok(None),
            Some(v) => Table::new(&self.field(key), v, example).map(Some),
        }
    }

    /// Fails on a key nobody took (a typo, or a field that does not exist).
    pub fn finish(self, expected: &[&str]) -> Result<(), FixtureError> {
        match self.keys.keys().next() {
            None => Ok(()),
            Some(key) => Err(self.error(
                key,
                format!("unknown field; expected one of {}", expected.join(", ")),
            )),
        }
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.into()
    } else {
        format!("{at}.{key}")
    }
}
