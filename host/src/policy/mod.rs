//! The one place where access decisions are made.
//!
//! Callers build a [`Request`] (shaped exactly like the `request` record of the WIT package
//! `sallyport:policy@0.1.0`) and ask one of three hooks: [`Policy::authorize`] (may this subject
//! reach this device, at what level), [`Policy::sudo`] (may the requester act for the subject)
//! and [`Policy::source`] (may this source address connect). Every answer comes from sandboxed
//! WebAssembly components (`engine`), the built-in rules included (`plugins/default-*`); the
//! plugins of a hook combine by the configured [`CombineRule`], a plugin fault is a deny naming
//! the plugin, and every decision is counted per plugin and written to the audit log.

mod bindings;
mod cache;
mod engine;
mod loader;
/// The built-in rules in native Rust: the benchmark's floor and the reference the built-in
/// components are tested against. `Policy` never consults it.
pub mod native;
mod session;
/// One component loaded outside the server (`sallyport plugin test` / `inspect`).
pub mod standalone;
mod ticker;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use parking_lot::RwLock;

pub use cache::content_hash;
pub use engine::Fault;
pub use loader::Plugin;

use crate::config::{CombineRule, Config, Hook};
use crate::metrics::{DecisionLabel, Metrics, PluginLabel};
use crate::store::AuditEvent;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use crate::config::AccessLevel;

/// Which protocol a request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Ssh,
    Winbox,
    WebConsole,
}

/// What the requester is trying to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    IssueSession,
    IssueTransient,
    Connect,
}

/// A user as policies see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub groups: Vec<String>,
    pub sudo: bool,
}

/// A device as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRef {
    pub name: String,
    pub id: String,
    pub tags: Vec<String>,
}

/// One decision request; mirrors the WIT `request` record field for field.
#[derive(Debug, Clone)]
pub struct Request {
    pub action: Action,
    pub requester: Principal,
    pub subject: Principal,
    pub device: DeviceRef,
    pub protocol: Protocol,
    pub access: AccessLevel,
    pub ttl_seconds: u32,
    pub source: Option<String>,
    pub allow_only_cidr: Option<String>,
    pub allow_rfc1918: bool,
    pub now_unix_ms: u64,
    pub request_id: String,
}

/// What an allow may carry: limits the caller must apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub max_ttl_seconds: Option<u32>,
    pub access: Option<AccessLevel>,
    pub obligations: Vec<String>,
}

/// One policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Grant),
    Deny(String),
    Abstain,
}

/// The combined outcome of a hook: what the caller acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Grant),
    Deny { policy: String, reason: String },
}

impl Verdict {
    /// Folds the decisions of every policy on a hook: any deny wins, abstain is neutral, at
    /// least one allow is needed, and grants combine by the strictest limit.
    pub fn combine<'a>(
        hook: &str,
        decisions: impl IntoIterator<Item = (&'a str, Decision)>,
    ) -> Verdict {
        Self::combine_with(CombineRule::DenyOverrides, hook, decisions)
    }

    /// [`Verdict::combine`] under an explicit rule ([`CombineRule::Unanimous`] turns an
    /// abstain into a deny).
    pub fn combine_with<'a>(
        rule: CombineRule,
        hook: &str,
        decisions: impl IntoIterator<Item = (&'a str, Decision)>,
    ) -> Verdict {
        let mut grant: Option<Grant> = None;
        for (policy, d) in decisions {
            match d {
                Decision::Deny(reason) => {
                    return Verdict::Deny {
                        policy: policy.to_string(),
                        reason,
                    };
                }
                Decision::Abstain if rule == CombineRule::Unanimous => {
                    return Verdict::Deny {
                        policy: policy.to_string(),
                        reason: "abstained, and the unanimous rule needs every plugin to allow"
                            .into(),
                    };
                }
                Decision::Abstain => {}
                Decision::Allow(g) => {
                    grant = Some(match grant {
                        None => g,
                        Some(acc) => strictest(acc, g),
                    })
                }
            }
        }
        match grant {
            Some(g) => Verdict::Allow(g),
            None => Verdict::Deny {
                policy: hook.to_string(),
                reason: format!("no {hook} policy allowed the request"),
            },
        }
    }
}

fn strictest(a: Grant, b: Grant) -> Grant {
    let min = |x: Option<u32>, y: Option<u32>| match (x, y) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    let mut obligations = a.obligations;
    for o in b.obligations {
        if !obligations.contains(&o) {
            obligations.push(o);
        }
    }
    Grant {
        max_ttl_seconds: min(a.max_ttl_seconds, b.max_ttl_seconds),
        access: match (a.access, b.access) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        },
        obligations,
    }
}

/// Why the policy could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy plugin {0}")]
    Plugin(String),
    #[error("cannot open {0}: {1}")]
    Io(String, std::io::Error),
    #[error("policy configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Engine(#[from] engine::LoadError),
}

/// State shared with the reload watcher.
pub struct Shared {
    engine: Arc<engine::PolicyEngine>,
    plugins: RwLock<Arc<Vec<Arc<Plugin>>>>,
    rule: CombineRule,
    metrics: Arc<Metrics>,
    audit: OnceLock<tokio::sync::mpsc::UnboundedSender<Vec<AuditEvent>>>,
}

impl Shared {
    fn plugins(&self) -> Arc<Vec<Arc<Plugin>>> {
        self.plugins.read().clone()
    }

    fn replace(&self, next: Vec<Arc<Plugin>>) {
        *self.plugins.write() = Arc::new(next);
    }
}

/// The policy decision point.
#[derive(Clone)]
pub struct Policy {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("plugins", &self.shared.plugins())
            .finish()
    }
}

impl Policy {
    /// Loads every plugin of the configuration (built-in, `[[plugins]]`, drop-ins) and starts
    /// watching their files. A plugin that cannot load is an error naming it.
    pub fn load(
        config: &Config,
        data: &cap_std::fs::Dir,
        metrics: Arc<Metrics>,
    ) -> Result<Self, PolicyError> {
        let max_mb = config
            .plugins
            .iter()
            .filter_map(|p| p.memory_mb)
            .chain([config.server.plugin_memory_mb, 16])
            .max()
            .unwrap_or(16);
        let max_memory = (max_mb as usize) << 20;
        let engine = Arc::new(engine::PolicyEngine::new(max_memory)?);
        let mut loader = loader::Loader::new(config, data, engine.clone(), max_memory)?;
        let plugins = loader.initial()?;
        for p in &plugins {
            tracing::info!(plugin = %p.name, hook = ?p.hook, hash = %p.hash, "policy plugin loaded");
        }
        let shared = Arc::new(Shared {
            engine,
            plugins: RwLock::new(Arc::new(plugins)),
            rule: config.server.policy_combine,
            metrics,
            audit: OnceLock::new(),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("sallyport-plugin-watch".into())
            .spawn(move || loader.watch(weak))
            .map_err(|e| PolicyError::Config(format!("cannot start the plugin watcher: {e}")))?;
        Ok(Self { shared })
    }

    /// Sends decision audit rows that no caller took ([`Decisions::take_audit`]) to `tx`, one
    /// message per request (the server writes them in batches).
    pub fn set_audit_sink(&self, tx: tokio::sync::mpsc::UnboundedSender<Vec<AuditEvent>>) {
        let _ = self.shared.audit.set(tx);
    }

    /// The plugins currently serving, in evaluation order.
    pub fn plugins(&self) -> Arc<Vec<Arc<Plugin>>> {
        self.shared.plugins()
    }

    /// The decisions of one request: every hook asked through the result runs against the
    /// same plugin versions, in one store that is dropped with it.
    pub fn decisions<'p>(&'p self, r: &'p Request) -> Decisions<'p> {
        Decisions {
            shared: &self.shared,
            plugins: self.shared.plugins(),
            session: session::Session::new(&self.shared.engine, r),
            request: r,
            audit: Vec::new(),
        }
    }

    /// May `subject` reach `device` with `access`? (A request of one decision.)
    pub fn authorize(&self, r: &Request) -> Verdict {
        self.decisions(r).authorize()
    }

    /// May `requester` act for `subject`? (A request of one decision.)
    pub fn sudo(&self, r: &Request) -> Verdict {
        self.decisions(r).sudo()
    }

    /// May `source` connect? (A request of one decision.)
    pub fn source(&self, r: &Request) -> Verdict {
        self.decisions(r).source()
    }
}

/// The metric handles of one plugin. Looking them up by label on every decision (as
/// `Metrics::decision` does) built five strings and hashed them under the family's lock; a
/// handle shares its value with the family, so `/metrics` shows the same series. A counter is
/// looked up on the first decision with its outcome, so no series appears before it counts.
pub(crate) struct PluginMetrics {
    hook: &'static str,
    plugin: String,
    /// allow, deny, abstain.
    outcomes: [OnceLock<Counter>; 3],
    seconds: Histogram,
}

impl PluginMetrics {
    fn new(metrics: &Metrics, hook: &'static str, plugin: &str) -> Self {
        Self {
            hook,
            plugin: plugin.to_string(),
            outcomes: Default::default(),
            seconds: metrics
                .decision_seconds
                .get_or_create(&PluginLabel {
                    hook: hook.into(),
                    plugin: plugin.into(),
                })
                .clone(),
        }
    }

    /// Counts one decision: `outcome` is its name and its index in `outcomes`.
    fn record(
        &self,
        metrics: &Metrics,
        (index, outcome): (usize, &str),
        took: std::time::Duration,
    ) {
        let Some(slot) = self.outcomes.get(index) else {
            return;
        };
        slot.get_or_init(|| {
            metrics
                .decisions
                .get_or_create(&DecisionLabel {
                    hook: self.hook.into(),
                    plugin: self.plugin.clone(),
                    outcome: outcome.into(),
                })
                .clone()
        })
        .inc();
        self.seconds.observe(took.as_secs_f64());
    }
}

/// The decisions of one request ([`Policy::decisions`]). Its audit rows are handed to the
/// caller ([`Decisions::take_audit`], to be written with the change they led to) or, if not
/// taken, sent to the audit sink when it is dropped.
pub struct Decisions<'p> {
    shared: &'p Shared,
    plugins: Arc<Vec<Arc<Plugin>>>,
    session: session::Session,
    request: &'p Request,
    audit: Vec<AuditEvent>,
}

impl std::fmt::Debug for Decisions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decisions")
            .field("request_id", &self.request.request_id)
            .finish_non_exhaustive()
    }
}

impl Decisions<'_> {
    /// May `subject` reach `device` with `access`?
    pub fn authorize(&mut self) -> Verdict {
        self.decide(Hook::Authorize)
    }

    /// May `requester` act for `subject`?
    pub fn sudo(&mut self) -> Verdict {
        self.decide(Hook::Sudo)
    }

    /// May `source` connect?
    pub fn source(&mut self) -> Verdict {
        self.decide(Hook::Source)
    }

    /// The audit rows of the decisions made so far; the caller writes them.
    pub fn take_audit(&mut self) -> Vec<AuditEvent> {
        std::mem::take(&mut self.audit)
    }

    fn decide(&mut self, hook: Hook) -> Verdict {
        let hook_name = engine::export_name(hook);
        let plugins = self.plugins.clone();
        let mut decisions = Vec::new();
        for p in plugins.iter().filter(|p| p.hook == hook) {
            let started = Instant::now();
            let outcome = match &p.prepared {
                Ok(prepared) => self.session.decide(prepared, &p.meta, p.limits, hook),
                Err(cause) => Err(Fault::Unloadable(cause.clone())),
            };
            let d = match outcome {
                Ok(d) => d,
                Err(fault) => {
                    tracing::warn!(plugin = %p.name, hash = %p.hash, fault = %fault, "policy plugin fault; denying");
                    self.shared.metrics.plugin_fault(&p.name, fault.kind());
                    Decision::Deny(format!("policy plugin {} {fault}", p.name))
                }
            };
            self.record(hook_name, p, &d, started.elapsed());
            let stop = matches!(d, Decision::Deny(_));
            decisions.push((p.name.as_str(), d));
            if stop {
                break;
            }
        }
        Verdict::combine_with(self.shared.rule, hook_name, decisions)
    }

    fn record(&mut self, hook: &'static str, p: &Plugin, d: &Decision, took: std::time::Duration) {
        let (index, outcome, reason) = match d {
            Decision::Allow(_) => (0, "allow", None),
            Decision::Deny(m) => (1, "deny", Some(m.as_str())),
            Decision::Abstain => (2, "abstain", None),
        };
        let metrics = &self.shared.metrics;
        p.metrics
            .get_or_init(|| PluginMetrics::new(metrics, hook, &p.name))
            .record(metrics, (index, outcome), took);
        if self.shared.audit.get().is_none() {
            return;
        }
        let r = self.request;
        self.audit.push(AuditEvent {
            at: r.now_unix_ms as i64,
            event: format!("policy.{hook}"),
            actor: Some(r.requester.name.clone()),
            subject: Some(r.subject.name.clone()),
            device: Some(r.device.name.clone()),
            object: Some(r.request_id.clone()),
            outcome: outcome.into(),
            reason: Some(format!(
                "plugin={} hash={} duration_us={}{}",
                p.name,
                &p.hash[..16.min(p.hash.len())],
                took.as_micros(),
                reason.map(|m| format!(": {m}")).unwrap_or_default()
            )),
            source: r.source.clone(),
        });
    }
}

impl Drop for Decisions<'_> {
    fn drop(&mut self) {
        if !self.audit.is_empty()
            && let Some(tx) = self.shared.audit.get()
        {
            let _ = tx.send(std::mem::take(&mut self.audit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combination_rules() {
        let allow = |ttl, access| {
            Decision::Allow(Grant {
                max_ttl_seconds: ttl,
                access,
                obligations: vec![],
            })
        };
        assert_eq!(
            Verdict::combine("h", [("a", Decision::Abstain)]),
            Verdict::Deny {
                policy: "h".into(),
                reason: "no h policy allowed the request".into()
            }
        );
        assert_eq!(
            Verdict::combine(
                "h",
                [("a", allow(None, None)), ("b", Decision::Deny("no".into()))]
            ),
            Verdict::Deny {
                policy: "b".into(),
                reason: "no".into()
            }
        );
        assert_eq!(
            Verdict::combine(
                "h",
                [
                    ("a", allow(Some(60), Some(AccessLevel::Full))),
                    ("b", Decision::Abstain),
                    ("c", allow(Some(30), Some(AccessLevel::ReadOnly)))
                ]
            ),
            Verdict::Allow(Grant {
                max_ttl_seconds: Some(30),
                access: Some(AccessLevel::ReadOnly),
                obligations: vec![]
            })
        );
    }

    #[test]
    fn unanimous_needs_every_plugin_to_allow() {
        let allow = |o: &str| {
            Decision::Allow(Grant {
                max_ttl_seconds: None,
                access: None,
                obligations: vec![o.to_string()],
            })
        };
        let rule = CombineRule::Unanimous;
        assert_eq!(
            Verdict::combine_with(rule, "h", [("a", allow("x")), ("b", Decision::Abstain)]),
            Verdict::Deny {
                policy: "b".into(),
                reason: "abstained, and the unanimous rule needs every plugin to allow".into()
            }
        );
        // Obligations of all the allows are kept, each once.
        assert_eq!(
            Verdict::combine_with(
                rule,
                "h",
                [("a", allow("x")), ("b", allow("y")), ("c", allow("x"))]
            ),
            Verdict::Allow(Grant {
                max_ttl_seconds: None,
                access: None,
                obligations: vec!["x".into(), "y".into()]
            })
        );
        // No plugin at all is still no allow.
        assert!(matches!(
            Verdict::combine_with(rule, "h", []),
            Verdict::Deny { .. }
        ));
        // The default rule lets the same abstain pass.
        assert!(matches!(
            Verdict::combine_with(
                CombineRule::DenyOverrides,
                "h",
                [("a", allow("x")), ("b", Decision::Abstain)]
            ),
            Verdict::Allow(_)
        ));
    }
}
