//! One policy component loaded outside the server, for the `sallyport plugin test` and
//! `plugin inspect` commands (and for anyone embedding the engine in a tool).
//!
//! It runs the component exactly as the gateway does — the same engine settings, linker, WASI
//! lock-down, fresh store per decision, deadline and memory cap, and the same fault
//! classification — but without a data directory, reload watcher, metrics or audit log. A
//! compile cache directory may be given ([`load_cached`]), so a large component is compiled
//! once rather than on every run. A component that decodes but cannot be linked still loads, so `inspect` can
//! show what it imports; deciding with it is then the same fault-deny the server gives.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::component::types::{ComponentExtern, ComponentItem};

use super::engine::{self, Limits, PluginMeta, PolicyEngine, Prepared};
use super::{Decision, Fault, Request};
use crate::config::{Hook, ServerConfig};

/// Why a component file could not be loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error(transparent)]
    Load(#[from] engine::LoadError),
}

/// Per-decision limits; the defaults are the server's (`plugin_deadline_ms`, `plugin_memory_mb`).
#[derive(Debug, Clone, Copy)]
pub struct StandaloneLimits {
    pub deadline: Duration,
    pub memory_mb: u64,
}

impl Default for StandaloneLimits {
    fn default() -> Self {
        let s = ServerConfig::default();
        Self {
            deadline: Duration::from_millis(s.plugin_deadline_ms),
            memory_mb: s.plugin_memory_mb,
        }
    }
}

/// One item a component imports or exports, with its kind (`instance`, `func`, `type`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub name: String,
    pub kind: &'static str,
}

/// A loaded component and what is known about it.
pub struct StandalonePlugin {
    /// File stem: the name the server would give it as a drop-in.
    pub name: String,
    /// Hex SHA-256 of the file, as in the server's log, metrics and audit rows.
    pub hash: String,
    pub size: usize,
    /// The hook its export declares, if it exports one of `authorize`, `sudo`, `check-source`
    /// (the first of them, if it exports several).
    pub hook: Option<Hook>,
    /// Every hook it exports (several for a component such as the built-in policy); one
    /// exported with the wrong type faults when called.
    pub hooks: Vec<Hook>,
    pub imports: Vec<Item>,
    pub exports: Vec<Item>,
    /// Linked and pre-instantiated, or why it cannot be (the server would refuse it).
    prepared: Result<Prepared, String>,
    pub limits: StandaloneLimits,
    engine: Arc<PolicyEngine>,
    component: Component,
}

impl std::fmt::Debug for StandalonePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandalonePlugin")
            .field("name", &self.name)
            .field("hook", &self.hook)
            .field("hash", &self.hash)
            .finish()
    }
}

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

/// The WIT world of a hook in `sallyport:policy@0.1.0`.
pub fn world_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Authorize => "authorize-policy",
        Hook::Sudo => "sudo-policy",
        Hook::Source => "source-policy",
    }
}

/// Loads and links the component at `path` (compiled in memory; nothing is cached).
pub fn load(path: &Path, limits: StandaloneLimits) -> Result<StandalonePlugin, StandaloneError> {
    load_cached(path, limits, None)
}

/// [`load`], with compiled components cached under `cache/plugin-cache` (as the gateway
/// caches them in its data directory: by content hash and engine compatibility). `cache`
/// must be a directory only this user can write, since a cached entry is trusted as
/// wasmtime's own output.
pub fn load_cached(
    path: &Path,
    limits: StandaloneLimits,
    cache: Option<&cap_std::fs::Dir>,
) -> Result<StandalonePlugin, StandaloneError> {
    let bytes =
        std::fs::read(path).map_err(|e| StandaloneError::Read(path.display().to_string(), e))?;
    let name = path.file_stem().map_or_else(
        || "plugin".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    load_from(&name, &bytes, limits, cache)
}

/// [`load`] for bytes already in memory; `name` is used in messages.
pub fn load_bytes(
    name: &str,
    bytes: &[u8],
    limits: StandaloneLimits,
) -> Result<StandalonePlugin, StandaloneError> {
    load_from(name, bytes, limits, None)
}

fn load_from(
    name: &str,
    bytes: &[u8],
    limits: StandaloneLimits,
    cache: Option<&cap_std::fs::Dir>,
) -> Result<StandalonePlugin, StandaloneError> {
    let engine = Arc::new(PolicyEngine::new(mb(limits.memory_mb))?);
    let cache = cache.and_then(|dir| match super::cache::ComponentCache::new(dir) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "cannot use the compile cache; compiling in memory");
            None
        }
    });
    let component = match cache {
        Some(cache) => cache.load(engine.engine(), name, bytes)?.0,
        None => Component::new(engine.engine(), bytes)
            .map_err(|e| engine::LoadError::Compile(name.to_string(), format!("{e:#}")))?,
    };
    let ty = component.component_type();
    let items = |it: &mut dyn Iterator<Item = (&str, ComponentExtern<'_>)>| -> Vec<Item> {
        it.map(|(n, i)| Item {
            name: n.to_string(),
            kind: kind(&i.ty),
        })
        .collect()
    };
    let imports = items(&mut ty.imports(engine.engine()));
    let exports = items(&mut ty.exports(engine.engine()));
    let hook = engine.world_of(name, &component).ok();
    let prepared = match hook {
        Some(h) => engine
            .prepare(name, h, &component)
            .map_err(|e| e.to_string()),
        None => Err(engine::LoadError::NoWorld(name.to_string()).to_string()),
    };
    // Every hook it exports; one exported with the wrong type is a fault when called, as
    // in the gateway, where that hook denies.
    let hooks = match &prepared {
        Ok(_) => engine.hooks_of(&component),
        Err(_) => hook.into_iter().collect(),
    };
    Ok(StandalonePlugin {
        name: name.to_string(),
        hash: super::content_hash(bytes),
        size: bytes.len(),
        hook,
        hooks,
        imports,
        exports,
        prepared,
        limits,
        engine,
        component,
    })
}

fn mb(n: u64) -> usize {
    (n as usize).saturating_mul(1 << 20)
}

impl StandalonePlugin {
    /// Why the server would refuse this component (wrong world, an import it lacks), if it would.
    pub fn load_error(&self) -> Option<&str> {
        self.prepared.as_ref().err().map(String::as_str)
    }

    /// The versions of `sallyport:policy` its imports name (`0.1.0`), sorted and unique.
    pub fn policy_versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .imports
            .iter()
            .chain(&self.exports)
            .filter(|i| i.name.starts_with("sallyport:policy/"))
            .filter_map(|i| i.name.split_once('@').map(|(_, ver)| ver.to_string()))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Imports beyond `sallyport:policy`: WASI (given locked down) or anything else.
    pub fn foreign_imports(&self) -> impl Iterator<Item = &Item> {
        self.imports
            .iter()
            .filter(|i| !i.name.starts_with("sallyport:policy/"))
    }

    /// One decision for its hook, with `config` as its `host.config` table. A fault is returned
    /// as such; the server would turn it into a deny naming the plugin ([`Self::as_server`]).
    pub fn decide(&self, r: &Request, config: HashMap<String, String>) -> Result<Decision, Fault> {
        let hook = self
            .hook
            .ok_or_else(|| Fault::Unloadable("no policy export".into()))?;
        self.decide_on(hook, r, config)
    }

    /// [`Self::decide`] on a given hook (one of [`Self::hooks`]).
    pub fn decide_on(
        &self,
        hook: Hook,
        r: &Request,
        config: HashMap<String, String>,
    ) -> Result<Decision, Fault> {
        if !self.hooks.contains(&hook) {
            return Err(Fault::Unloadable(format!(
                "it does not serve the {} hook",
                super::engine::export_name(hook)
            )));
        }
        if let Ok(p) = &self.prepared
            && !p.serves(hook)
        {
            return Err(Fault::Unloadable(self.engine.unserved_cause(
                &self.name,
                hook,
                &self.component,
            )));
        }
        let prepared = self
            .prepared
            .as_ref()
            .map_err(|e| Fault::Unloadable(e.clone()))?;
        let meta = Arc::new(PluginMeta {
            name: self.name.clone(),
            config: Arc::new(config),
        });
        let limits = Limits {
            deadline: self.limits.deadline,
            memory_bytes: mb(self.limits.memory_mb),
        };
        self.engine.decide(prepared, &meta, limits, hook, r)
    }

    /// What the server makes of an outcome: a fault is a deny naming the plugin.
    pub fn as_server(&self, outcome: Result<Decision, Fault>) -> Decision {
        outcome
            .unwrap_or_else(|fault| Decision::Deny(format!("policy plugin {} {fault}", self.name)))
    }
}
