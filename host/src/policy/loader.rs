//! Where plugins come from and how they are kept current.
//!
//! Three sources, in this order on each hook: the built-in component (embedded in the binary
//! from `plugins/dist/default-policy.wasm`, serving all three hooks, unless
//! `builtin_policies = false`), the `[[plugins]]` entries (paths
//! relative to the configuration file), and the drop-in directory (`plugins_dir`: every
//! `NAME.wasm`, with an optional `NAME.toml` beside it; its hook is the world it exports, and
//! a component exporting several hooks, like the built-in one, serves each of them).
//! Each configured file is read through a `cap-std` handle on its directory, and the drop-in
//! directory through one handle, all opened at start.
//!
//! A watcher polls every 20 ms (a few `stat`s and one directory read; with compilation, the poll
//! is most of the reload latency, which issue 4 bounds at 100 ms). A changed file is recompiled
//! and swapped in for new decisions (decisions in flight finish on the version they started
//! with); a broken new version keeps the old one and logs why; a removed drop-in is unloaded
//! (and logged). A drop-in's sidecar is part of its version: a new drop-in whose sidecar is
//! broken (bad TOML, unknown key, limits out of range, over [`MAX_SIDECAR`]) cannot run, so
//! its hooks deny, as for a broken component; a broken sidecar beside a loaded drop-in keeps
//! the loaded version.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use cap_std::fs::Dir;
use serde::Deserialize;

use super::cache::ComponentCache;
use super::engine::{Limits, LoadError, PluginMeta, PolicyEngine, Prepared};
use super::{PolicyError, Shared};
use crate::config::{Config, Hook};

/// The built-in policies, committed as a built component so no wasm toolchain is needed: one
/// component (`plugins/default-policy`) exporting all three hooks, so one instance answers
/// every hook of a request.
const BUILTIN: &[u8] = include_bytes!("../../../plugins/dist/default-policy.wasm");
const BUILTIN_HOOKS: [(&str, Hook); 3] = [
    ("builtin-authorize", Hook::Authorize),
    ("builtin-sudo", Hook::Sudo),
    ("builtin-source", Hook::Source),
];

const POLL: Duration = Duration::from_millis(20);
/// Largest sidecar read: a plugin's settings are a few lines.
const MAX_SIDECAR: u64 = 64 << 10;
/// A new drop-in that fails to load is given this long after its last change before its
/// hooks deny: until then it is taken for a copy in progress.
const SETTLE: Duration = Duration::from_millis(500);

/// A loaded plugin, ready to decide.
pub struct Plugin {
    pub name: String,
    pub hook: Hook,
    /// Hex SHA-256 of the component.
    pub hash: String,
    pub meta: Arc<PluginMeta>,
    pub limits: Limits,
    /// The runnable component, or why this plugin cannot run (every decision then denies).
    pub prepared: Result<Prepared, String>,
    /// Its decision counters and latency histogram, looked up on its first decision.
    pub(super) metrics: std::sync::OnceLock<super::PluginMetrics>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("hook", &self.hook)
            .field("hash", &self.hash)
            .finish()
    }
}

#[derive(Clone)]
enum Origin {
    Builtin(&'static [u8]),
    /// A `[[plugins]]` file: its directory, its name within it, and its path as configured.
    Configured(Arc<Dir>, String, String),
    /// `plugins_dir/NAME.wasm`.
    DropIn(String),
}

impl Origin {
    /// Where the plugin comes from, for messages.
    fn describe(&self) -> String {
        match self {
            Origin::Builtin(_) => "the built-in policy".into(),
            Origin::Configured(_, _, path) => format!("[[plugins]] {path}"),
            Origin::DropIn(f) => format!("drop-in {f}"),
        }
    }
}

/// Everything needed to (re)load one plugin.
#[derive(Clone)]
struct Spec {
    name: String,
    hook: Option<Hook>,
    origin: Origin,
    config: Arc<HashMap<String, String>>,
    limits: Limits,
    /// Why this plugin cannot run whatever its component holds (a broken sidecar).
    fault: Option<String>,
}

/// `NAME.toml` beside a drop-in component.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sidecar {
    deadline_ms: Option<u64>,
    memory_mb: Option<u64>,
    #[serde(default)]
    config: toml::Table,
}

/// Plugin config values as the `host.config` import returns them: strings verbatim, anything
/// else as compact JSON.
fn flatten(table: &toml::Table) -> HashMap<String, String> {
    table
        .iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                other => serde_json::to_string(other).unwrap_or_default(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// Loads plugins and watches their files.
pub struct Loader {
    engine: Arc<PolicyEngine>,
    cache: ComponentCache,
    specs: Vec<Spec>,
    drop_in: Option<Dir>,
    defaults: Limits,
    max_memory: usize,
    /// Last seen fingerprint per file, so an unchanged (or known-broken) file is not reloaded.
    seen: HashMap<String, Fingerprint>,
    /// The built-in component, prepared once for its three entries (same instance per request).
    builtin: std::sync::OnceLock<(String, Prepared)>,
}

type Fingerprint = Vec<(u64, Option<SystemTime>)>;

fn fingerprint(dir: &Dir, files: &[&str]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            dir.metadata(f).map_or((u64::MAX, None), |m| {
                (m.len(), m.modified().ok().map(|t| t.into_std()))
            })
        })
        .collect()
}

fn read(dir: &Dir, file: &str) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    dir.open(file)?.read_to_end(&mut buf)?;
    Ok(buf)
}

/// Why a drop-in could not be read, in the admin's terms: the directory is read through a
/// capability handle, so a symlink to a file outside it is refused (with cap-std's "a path led
/// outside of the filesystem"), while one to a file inside it works.
fn drop_in_read_error(dir: &Dir, file: &str, e: &std::io::Error) -> String {
    let symlink = dir
        .symlink_metadata(file)
        .is_ok_and(|m| m.file_type().is_symlink());
    if symlink
        && e.kind() == std::io::ErrorKind::PermissionDenied
        && e.to_string().contains("outside")
    {
        format!(
            "{file}: a symbolic link to a file outside the plugins directory, which the gateway \
             does not follow; copy the component into the directory instead"
        )
    } else {
        format!("{file}: {e}")
    }
}

fn mb(n: u64) -> usize {
    (n as usize).saturating_mul(1 << 20)
}

impl Loader {
    /// Resolves every plugin source in the configuration and opens the directories involved.
    pub fn new(
        config: &Config,
        data: &Dir,
        engine: Arc<PolicyEngine>,
        max_memory: usize,
    ) -> Result<Self, PolicyError> {
        let defaults = Limits {
            deadline: Duration::from_millis(config.server.plugin_deadline_ms),
            memory_bytes: mb(config.server.plugin_memory_mb),
        };
        let mut specs = Vec::new();
        if config.server.builtin_policies {
            let groups =
                serde_json::to_string(&config.groups.iter().map(group_json).collect::<Vec<_>>())
                    .map_err(|e| PolicyError::Config(e.to_string()))?;
            // One configuration for the three entries: they share one instance per request.
            let mut cfg = HashMap::new();
            cfg.insert("groups".to_string(), groups);
            let cfg = Arc::new(cfg);
            for (name, hook) in BUILTIN_HOOKS {
                specs.push(Spec {
                    name: name.into(),
                    hook: Some(hook),
                    origin: Origin::Builtin(BUILTIN),
                    config: cfg.clone(),
                    limits: defaults,
                    fault: None,
                });
            }
        }
        for p in &config.plugins {
            let path = match (&config.base_dir, p.path.is_absolute()) {
                (Some(base), false) => base.join(&p.path),
                _ => p.path.clone(),
            };
            let (parent, file) = match (path.parent(), path.file_name().and_then(|f| f.to_str())) {
                (Some(parent), Some(file)) => (
                    if parent.as_os_str().is_empty() {
                        std::path::Path::new(".")
                    } else {
                        parent
                    },
                    file,
                ),
                _ => {
                    return Err(PolicyError::Config(format!(
                        "plugin path {} names no file",
                        path.display()
                    )));
                }
            };
            let dir = Dir::open_ambient_dir(parent, cap_std::ambient_authority())
                .map_err(|e| PolicyError::Io(path.display().to_string(), e))?;
            specs.push(Spec {
                name: file.trim_end_matches(".wasm").to_string(),
                hook: Some(p.hook),
                origin: Origin::Configured(
                    Arc::new(dir),
                    file.to_string(),
                    path.display().to_string(),
                ),
                config: Arc::new(flatten(&p.config)),
                limits: Limits {
                    deadline: p
                        .deadline_ms
                        .map_or(defaults.deadline, Duration::from_millis),
                    memory_bytes: p.memory_mb.map_or(defaults.memory_bytes, mb),
                },
                fault: None,
            });
        }
        // Names key the reload bookkeeping, the metrics and the audit rows: two plugins with
        // one name would be indistinguishable there (and each would be carried over for the
        // other on every reload pass).
        let mut names = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            if let Some(first) = names.insert(spec.name.as_str(), i) {
                return Err(PolicyError::Config(format!(
                    "two plugins are named {:?} ({} and {}): a plugin's name is its file name \
                     without `.wasm`, and must be unique; rename one of the files",
                    spec.name,
                    specs[first].origin.describe(),
                    spec.origin.describe()
                )));
            }
        }
        let dir = config.server.plugins_dir();
        std::fs::create_dir_all(&dir).map_err(|e| PolicyError::Io(dir.display().to_string(), e))?;
        let drop_in = Dir::open_ambient_dir(&dir, cap_std::ambient_authority())
            .map_err(|e| PolicyError::Io(dir.display().to_string(), e))?;
        let cache =
            ComponentCache::new(data).map_err(|e| PolicyError::Io("plugin-cache".into(), e))?;
        Ok(Self {
            engine,
            cache,
            specs,
            drop_in: Some(drop_in),
            defaults,
            max_memory,
            seen: HashMap::new(),
            builtin: std::sync::OnceLock::new(),
        })
    }

    /// The spec of `plugins_dir/file`; a sidecar that cannot be used is kept as its fault.
    fn drop_in_spec(&self, file: &str) -> Spec {
        let stem = file.trim_end_matches(".wasm");
        let (sidecar, fault) = match self.sidecar(stem) {
            Ok(s) => (s, None),
            Err(e) => (Sidecar::default(), Some(e)),
        };
        Spec {
            name: stem.to_string(),
            hook: None,
            origin: Origin::DropIn(file.to_string()),
            config: Arc::new(flatten(&sidecar.config)),
            limits: Limits {
                deadline: sidecar
                    .deadline_ms
                    .map_or(self.defaults.deadline, Duration::from_millis),
                memory_bytes: sidecar.memory_mb.map_or(self.defaults.memory_bytes, mb),
            },
            fault,
        }
    }

    /// `plugins_dir/STEM.toml`, if there is one. Errors never quote the file: a sidecar may
    /// hold secrets for its plugin.
    fn sidecar(&self, stem: &str) -> Result<Sidecar, String> {
        let dir = self.drop_in.as_ref().ok_or("no drop-in directory")?;
        let name = format!("{stem}.toml");
        let file = match dir.open(&name) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Sidecar::default()),
            Err(e) => return Err(format!("{name}: {e}")),
        };
        let mut bytes = Vec::new();
        file.take(MAX_SIDECAR + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{name}: {e}"))?;
        if bytes.len() as u64 > MAX_SIDECAR {
            return Err(format!(
                "{name}: larger than {} KiB; a sidecar holds a plugin's settings",
                MAX_SIDECAR >> 10
            ));
        }
        let text = String::from_utf8(bytes).map_err(|_| format!("{name}: not UTF-8 text"))?;
        let sidecar: Sidecar = toml::from_str(&text)
            .map_err(|e| format!("{name}: {}", crate::config::toml_error(&text, &e)))?;
        crate::config::check_plugin_limits(sidecar.deadline_ms, sidecar.memory_mb)
            .map_err(|e| format!("{name}: {e}"))?;
        Ok(sidecar)
    }

    /// A plugin that cannot run, standing on `hook` so that hook fails closed.
    fn broken(spec: &Spec, hook: Hook, cause: &str) -> Plugin {
        Plugin {
            name: spec.name.clone(),
            hook,
            hash: String::new(),
            meta: Arc::new(PluginMeta {
                name: spec.name.clone(),
                config: spec.config.clone(),
            }),
            limits: spec.limits,
            prepared: Err(cause.to_string()),
            metrics: Default::default(),
        }
    }

    /// Loads a spec; on failure also says which hooks it was meant for (empty if unknown).
    fn load_or_hooks(&self, spec: &Spec) -> Result<Vec<Plugin>, (Vec<Hook>, String)> {
        self.load(spec).map_err(|e| {
            let hooks = match spec.hook {
                Some(h) => vec![h],
                None => (|| {
                    let Origin::DropIn(f) = &spec.origin else {
                        return None;
                    };
                    let bytes = read(self.drop_in.as_ref()?, f).ok()?;
                    let (c, _) = self
                        .cache
                        .load(self.engine.engine(), &spec.name, &bytes)
                        .ok()?;
                    Some(self.engine.hooks_of(&c))
                })()
                .unwrap_or_default(),
            };
            (hooks, e)
        })
    }

    /// Loads a spec: one plugin per hook it serves (a drop-in exporting several hooks serves
    /// each of them from one instance per request, as the built-in component does).
    fn load(&self, spec: &Spec) -> Result<Vec<Plugin>, String> {
        if let Some(fault) = &spec.fault {
            return Err(fault.clone());
        }
        let bytes = match &spec.origin {
            Origin::Builtin(b) => b.to_vec(),
            Origin::Configured(dir, file, _) => {
                read(dir, file).map_err(|e| format!("{file}: {e}"))?
            }
            Origin::DropIn(file) => {
                let dir = self.drop_in.as_ref().ok_or("no drop-in directory")?;
                read(dir, file).map_err(|e| drop_in_read_error(dir, file, &e))?
            }
        };
        if spec.limits.memory_bytes > self.max_memory {
            return Err(format!(
                "{}: memory cap {} MiB is above the engine's {} MiB (set it in the configuration before start)",
                spec.name,
                spec.limits.memory_bytes >> 20,
                self.max_memory >> 20
            ));
        }
        let engine = &self.engine;
        let plugin = |hook: Hook, hash: &str, meta: &Arc<PluginMeta>, prepared: &Prepared| Plugin {
            name: spec.name.clone(),
            hook,
            hash: hash.to_string(),
            meta: meta.clone(),
            limits: spec.limits,
            prepared: Ok(prepared.clone()),
            metrics: Default::default(),
        };
        // One meta (the config's identity) for every hook, so a request shares one instance.
        let meta = Arc::new(PluginMeta {
            name: spec.name.clone(),
            config: spec.config.clone(),
        });
        if let (Origin::Builtin(_), Some(hook), Some((hash, prepared))) =
            (&spec.origin, spec.hook, self.builtin.get())
        {
            return Ok(vec![plugin(hook, hash, &meta, prepared)]);
        }
        let (component, hash) = self
            .cache
            .load(engine.engine(), &spec.name, &bytes)
            .map_err(|e: LoadError| e.to_string())?;
        let hook = match spec.hook {
            Some(h) => h,
            None => engine
                .world_of(&spec.name, &component)
                .map_err(|e| e.to_string())?,
        };
        let prepared = engine
            .prepare(&spec.name, hook, &component)
            .map_err(|e| e.to_string())?;
        if let Origin::Builtin(_) = spec.origin {
            let _ = self.builtin.set((hash.clone(), prepared.clone()));
        }
        let hooks: Vec<Hook> = match spec.hook {
            Some(h) => vec![h],
            None => engine.hooks_of(&component),
        };
        Ok(hooks
            .into_iter()
            .map(|h| {
                if prepared.serves(h) {
                    return plugin(h, &hash, &meta, &prepared);
                }
                // Another hook it exports, with the wrong type: that hook fails closed rather
                // than run without the rules its author meant for it.
                let cause = engine.unserved_cause(&spec.name, h, &component);
                tracing::error!(plugin = %spec.name, hook = ?h, error = %cause, "policy plugin cannot serve one of its hooks; that hook denies");
                Plugin {
                    hash: hash.clone(),
                    ..Self::broken(spec, h, &cause)
                }
            })
            .collect())
    }

    fn key(spec: &Spec) -> String {
        match &spec.origin {
            Origin::Builtin(_) => format!("builtin:{}", spec.name),
            Origin::Configured(_, f, _) => format!("configured:{}:{f}", spec.name),
            Origin::DropIn(f) => format!("drop-in:{f}"),
        }
    }

    fn fingerprint_of(&self, spec: &Spec) -> Fingerprint {
        match &spec.origin {
            Origin::Builtin(_) => Vec::new(),
            Origin::Configured(dir, f, _) => fingerprint(dir, &[f]),
            Origin::DropIn(f) => match &self.drop_in {
                Some(dir) => {
                    fingerprint(dir, &[f, &format!("{}.toml", f.trim_end_matches(".wasm"))])
                }
                None => Vec::new(),
            },
        }
    }

    /// The name a drop-in file would have, if a configured or built-in plugin has it already.
    fn taken(&self, file: &str) -> Option<&Spec> {
        let stem = file.trim_end_matches(".wasm");
        self.specs.iter().find(|s| s.name == stem)
    }

    /// Whether `spec` is a drop-in whose file changed less than [`SETTLE`] ago.
    fn being_written(&self, spec: &Spec, fp: &Fingerprint) -> bool {
        let Origin::DropIn(_) = spec.origin else {
            return false;
        };
        // The component or its sidecar: either may be the file still being copied.
        fp.iter()
            .filter_map(|(_, modified)| *modified)
            .filter_map(|m| m.elapsed().ok())
            .any(|age| age < SETTLE)
    }

    fn drop_in_files(&self) -> Vec<String> {
        let Some(dir) = &self.drop_in else {
            return Vec::new();
        };
        let mut files: Vec<String> = dir
            .entries()
            .map(|it| {
                it.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".wasm") && !n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Loads everything at start; any failure is an error naming the file.
    pub fn initial(&mut self) -> Result<Vec<Arc<Plugin>>, PolicyError> {
        let mut specs = self.specs.clone();
        for f in self.drop_in_files() {
            if let Some(other) = self.taken(&f) {
                return Err(PolicyError::Plugin(format!(
                    "{f} in the plugins directory has the name of {}; rename the file",
                    other.origin.describe()
                )));
            }
            specs.push(self.drop_in_spec(&f));
        }
        let mut out = Vec::new();
        for spec in specs {
            self.seen
                .insert(Self::key(&spec), self.fingerprint_of(&spec));
            let loaded = self
                .load(&spec)
                .map_err(|e| PolicyError::Plugin(format!("{}: {e}", spec.origin.describe())))?;
            out.extend(loaded.into_iter().map(Arc::new));
        }
        Ok(out)
    }

    /// One watcher pass: returns the new plugin list if anything changed.
    fn refresh(&mut self, current: &[Arc<Plugin>]) -> Option<Vec<Arc<Plugin>>> {
        let mut specs = self.specs.clone();
        let files = self.drop_in_files();
        let mut changed = false;
        for f in &files {
            if let Some(other) = self.taken(f) {
                // Said once per file, not on every pass; the file is never loaded.
                let key = format!("drop-in:{f}:name-taken");
                let other = other.origin.describe();
                self.seen.entry(key).or_insert_with(|| {
                    tracing::error!(plugin = %f, %other, "a drop-in has the name of another plugin and is ignored; rename the file");
                    Vec::new()
                });
                continue;
            }
            specs.push(self.drop_in_spec(f));
        }
        let mut next = Vec::new();
        for spec in &specs {
            let key = Self::key(spec);
            let fp = self.fingerprint_of(spec);
            let olds: Vec<&Arc<Plugin>> = current
                .iter()
                .filter(|p| p.name == spec.name && p.hook == spec.hook.unwrap_or(p.hook))
                .collect();
            if self.seen.get(&key) == Some(&fp) {
                next.extend(olds.into_iter().cloned());
                continue;
            }
            let key_of_spec = key.clone();
            self.seen.insert(key, fp.clone());
            let runnable_old: Vec<&Arc<Plugin>> = olds
                .iter()
                .copied()
                .filter(|p| p.prepared.is_ok())
                .collect();
            match self.load_or_hooks(spec) {
                Ok(loaded) => {
                    for p in loaded {
                        tracing::info!(plugin = %p.name, hash = %p.hash, hook = ?p.hook, "policy plugin loaded");
                        next.push(Arc::new(p));
                    }
                    changed = true;
                }
                Err((_, e)) if !runnable_old.is_empty() => {
                    tracing::error!(plugin = %spec.name, error = %e, "policy plugin failed to load; keeping the previous version");
                    next.extend(runnable_old.into_iter().cloned());
                }
                // Only for a plugin with no version at all: a broken one that denies now
                // keeps denying (below) however often its file is touched.
                Err(_) if olds.is_empty() && self.being_written(spec, &fp) => {
                    // Most likely a copy still in progress: look again on the next pass rather
                    // than make every hook deny for a file that is not complete yet.
                    tracing::debug!(plugin = %spec.name, "new drop-in does not load yet; waiting for it to settle");
                    self.seen.remove(&key_of_spec);
                }
                Err((hooks, e)) => {
                    // A new plugin that cannot run: its hooks (every hook, if its world is
                    // unknown) deny until it is fixed or removed. Failing open is not an option.
                    tracing::error!(plugin = %spec.name, error = %e, "policy plugin cannot run; its hook denies until it is fixed or removed");
                    let hooks = if hooks.is_empty() {
                        Hook::ALL.to_vec()
                    } else {
                        hooks
                    };
                    next.extend(
                        hooks
                            .into_iter()
                            .map(|h| Arc::new(Self::broken(spec, h, &e))),
                    );
                    changed = true;
                }
            }
        }
        // Removed drop-ins disappear from `specs`, so they are simply not carried over.
        for gone in current
            .iter()
            .filter(|p| !specs.iter().any(|s| s.name == p.name))
        {
            tracing::info!(plugin = %gone.name, hook = ?gone.hook, "policy plugin unloaded: its file was removed");
        }
        if next.len() != current.len() {
            changed = true;
            let live: Vec<String> = specs.iter().map(Self::key).collect();
            self.seen
                .retain(|k, _| live.iter().any(|l| k.starts_with(l.as_str())));
        }
        changed.then_some(next)
    }

    /// Polls for changes until the policy is dropped.
    pub fn watch(mut self, shared: Weak<Shared>) {
        loop {
            std::thread::sleep(POLL);
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let current = shared.plugins();
            if let Some(next) = self.refresh(&current) {
                shared.replace(next);
            }
        }
    }
}

fn group_json(g: &crate::config::GroupConfig) -> serde_json::Value {
    serde_json::json!({
        "name": g.name,
        "sudo": g.sudo,
        "devices": g.devices,
        "access": match g.access { crate::config::AccessLevel::Full => "full", crate::config::AccessLevel::ReadOnly => "read-only" },
    })
}
