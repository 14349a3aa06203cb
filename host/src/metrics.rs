//! Prometheus metrics served on `/metrics`: tokens issued, redeemed, denied and expired, and
//! API request latency per route.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `open_session`, `transient`, `ticket`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedLabel {
    pub kind: String,
    /// The hook (or check) that denied: `authorize`, `sudo`, `source`, `redeem`, `login`.
    pub hook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabel {
    pub hook: String,
    pub plugin: String,
    /// `allow`, `deny`, `abstain`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub hook: String,
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabel {
    pub plugin: String,
    /// `trap`, `deadline`, `memory`, `instantiate`.
    pub fault: String,
}

fn decision_histogram() -> Histogram {
    Histogram::new([
        0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.001, 0.005, 0.025,
    ])
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    ])
}

/// Every metric the gateway exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub issued: Family<KindLabel, Counter>,
    pub redeemed: Family<KindLabel, Counter>,
    pub denied: Family<DeniedLabel, Counter>,
    pub expired: Family<KindLabel, Counter>,
    pub request_seconds: Family<RouteLabel, Histogram, fn() -> Histogram>,
    pub decisions: Family<DecisionLabel, Counter>,
    pub decision_seconds: Family<PluginLabel, Histogram, fn() -> Histogram>,
    pub plugin_faults: Family<FaultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sallyport");
        let issued = Family::<KindLabel, Counter>::default();
        let redeemed = Family::<KindLabel, Counter>::default();
        let denied = Family::<DeniedLabel, Counter>::default();
        let expired = Family::<KindLabel, Counter>::default();
        let request_seconds =
            Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram as fn() -> Histogram,
            );
        registry.register("issued", "Credentials issued", issued.clone());
        registry.register("redeemed", "One-time keys redeemed", redeemed.clone());
        registry.register(
            "denied",
            "Requests denied by policy or validation",
            denied.clone(),
        );
        registry.register(
            "expired",
            "Credentials expired by the sweeper",
            expired.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "API request latency",
            request_seconds.clone(),
        );
        let decisions = Family::<DecisionLabel, Counter>::default();
        let decision_seconds =
            Family::<PluginLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                decision_histogram as fn() -> Histogram,
            );
        let plugin_faults = Family::<FaultLabel, Counter>::default();
        registry.register(
            "policy_decisions",
            "Policy decisions per plugin and outcome",
            decisions.clone(),
        );
        registry.register(
            "policy_decision_duration_seconds",
            "Time per plugin decision",
            decision_seconds.clone(),
        );
        registry.register(
            "policy_plugin_faults",
            "Plugin faults (each one a deny)",
            plugin_faults.clone(),
        );
        Self {
            registry,
            issued,
            redeemed,
            denied,
            expired,
            request_seconds,
            decisions,
            decision_seconds,
            plugin_faults,
        }
    }
}

impl Metrics {
    pub fn kind(kind: &str) -> KindLabel {
        KindLabel { kind: kind.into() }
    }

    pub fn deny(&self, kind: &str, hook: &str) {
        self.denied
            .get_or_create(&DeniedLabel {
                kind: kind.into(),
                hook: hook.into(),
            })
            .inc();
    }

    pub fn plugin_fault(&self, plugin: &str, fault: &str) {
        self.plugin_faults
            .get_or_create(&FaultLabel {
                plugin: plugin.into(),
                fault: fault.into(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
