//! `cargo xtask bench policy`: the cost of the access decisions of one whole request, three
//! ways in one run — sallyport's WebAssembly components (a fresh store per plugin call, as in
//! production), the same rules in `cedar-policy`, and the same rules in native Rust (the floor).
//!
//! The request is a connection made on someone else's behalf, so it passes every hook: `sudo`
//! (built-in), `authorize` (built-in group globs plus the business-hours example), and `source`
//! (built-in CIDR / RFC 1918 check) — four component calls. Before timing, the three
//! implementations are checked to agree on allow and deny variants of the request.
//!
//! Each is timed twice: back to back (a request starts when the last ended) and paced (a
//! request every 100 µs, open loop: a gateway below saturation, whose caches other work
//! disturbs between requests). CPU per request is printed too: the deciding thread's and the
//! whole process's (which would show work moved to other threads).
//!
//! Then hot reload: how long from writing a plugin file into the drop-in directory until the
//! first decision served by it (issue 4: within 100 ms).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cedar_policy::{
    Authorizer, Context as CedarContext, Decision as CedarDecision, Entities, EntityUid, PolicySet,
    Request as CedarRequest,
};
use hdrhistogram::Histogram;
use sallyport::config::{AccessLevel, Config, GroupConfig};
use sallyport::policy::{
    Action, Decision, DeviceRef, Policy, Principal, Protocol, Request, Verdict, native,
};

/// The paced run's interval between request starts: 10 000 requests/s offered by one thread.
const GAP_US: u64 = 100;

const OPEN_MIN: u32 = 0;
const CLOSE_MIN: u32 = 24 * 60 - 1;

fn groups() -> Vec<GroupConfig> {
    vec![
        GroupConfig {
            name: "admins".into(),
            sudo: true,
            devices: vec!["*".into()],
            access: AccessLevel::Full,
        },
        GroupConfig {
            name: "ops".into(),
            sudo: false,
            devices: vec!["edge-*".into(), "lab-?".into()],
            access: AccessLevel::ReadOnly,
        },
    ]
}

fn request(subject_groups: &[&str], device: &str, source: &str, requester_sudo: bool) -> Request {
    Request {
        action: Action::Connect,
        requester: Principal {
            name: "admin".into(),
            groups: vec!["admins".into()],
            sudo: requester_sudo,
        },
        subject: Principal {
            name: "alice".into(),
            groups: subject_groups.iter().map(|g| g.to_string()).collect(),
            sudo: false,
        },
        device: DeviceRef {
            name: device.into(),
            id: "d290f1ee-6c54-4b01-90e6-d701748f0851".into(),
            tags: vec![],
        },
        protocol: Protocol::Ssh,
        access: AccessLevel::ReadOnly,
        ttl_seconds: 600,
        source: Some(source.into()),
        allow_only_cidr: Some("203.0.113.0/24".into()),
        allow_rfc1918: false,
        now_unix_ms: 1_764_000_000_000,
        request_id: "bench".into(),
    }
}

/// The request and variants that each fail one hook.
fn cases() -> Vec<(Request, bool)> {
    vec![
        (request(&["ops"], "edge-1", "203.0.113.7", true), true),
        (request(&["ops"], "core-1", "203.0.113.7", true), false),
        (request(&["ops"], "edge-1", "198.51.100.7", true), false),
        (request(&["ops"], "edge-1", "203.0.113.7", false), false),
    ]
}

// ---- the three implementations -------------------------------------------------------------

fn wasm_decide(p: &Policy, r: &Request) -> bool {
    // One request: every hook through one `Decisions` (one store, dropped at the end), as the
    // gateway does for each issuance or connection.
    let mut d = p.decisions(r);
    matches!(d.sudo(), Verdict::Allow(_))
        && matches!(d.authorize(), Verdict::Allow(_))
        && matches!(d.source(), Verdict::Allow(_))
}

fn native_decide(groups: &[GroupConfig], r: &Request) -> bool {
    let minute = ((r.now_unix_ms / 60_000) % 1440) as u32;
    let hours = (OPEN_MIN..=CLOSE_MIN).contains(&minute);
    matches!(native::sudo(r), Decision::Allow(_))
        && matches!(native::authorize(groups, r), Decision::Allow(_))
        && hours
        && matches!(native::source(r), Decision::Allow(_))
}

struct Cedar {
    policies: PolicySet,
    entities: Entities,
    authorizer: Authorizer,
}

fn cedar_policies(groups: &[GroupConfig]) -> String {
    let mut text = String::new();
    for g in groups {
        for glob in &g.devices {
            let level = match g.access {
                AccessLevel::Full => String::new(),
                AccessLevel::ReadOnly => " && context.access == \"read-only\"".into(),
            };
            text += &format!(
                "permit(principal in Group::\"{}\", action == Action::\"authorize\", resource) when {{ resource.name like \"{glob}\"{level} }};\n",
                g.name
            );
        }
    }
    text += &format!(
        "forbid(principal, action == Action::\"authorize\", resource) unless {{ context.minute >= {OPEN_MIN} && context.minute <= {CLOSE_MIN} }};\n"
    );
    text += "permit(principal, action == Action::\"sudo\", resource) when { principal.sudo || !context.on_behalf };\n";
    text += "permit(principal, action == Action::\"source\", resource);\n";
    text += "forbid(principal, action == Action::\"source\", resource) when { context has cidr && !ip(context.source).isInRange(ip(context.cidr)) };\n";
    text += "forbid(principal, action == Action::\"source\", resource) when { !context.allow_rfc1918 && (ip(context.source).isInRange(ip(\"10.0.0.0/8\")) || ip(context.source).isInRange(ip(\"172.16.0.0/12\")) || ip(context.source).isInRange(ip(\"192.168.0.0/16\"))) };\n";
    text
}

impl Cedar {
    fn new(groups: &[GroupConfig]) -> anyhow::Result<Self> {
        let policies =
            PolicySet::from_str(&cedar_policies(groups)).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut ents = vec![
            serde_json::json!({"uid": {"type": "Device", "id": "edge-1"}, "attrs": {"name": "edge-1"}, "parents": []}),
            serde_json::json!({"uid": {"type": "Device", "id": "core-1"}, "attrs": {"name": "core-1"}, "parents": []}),
        ];
        for g in groups {
            ents.push(serde_json::json!({"uid": {"type": "Group", "id": g.name}, "attrs": {}, "parents": []}));
        }
        let entities = Entities::from_json_value(serde_json::Value::Array(ents), None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            policies,
            entities,
            authorizer: Authorizer::new(),
        })
    }

    fn ask(
        &self,
        principal: &EntityUid,
        principal_entity: &Entities,
        action: &str,
        resource: &EntityUid,
        ctx: serde_json::Value,
    ) -> bool {
        let Ok(action) = EntityUid::from_str(&format!("Action::\"{action}\"")) else {
            return false;
        };
        let Ok(context) = CedarContext::from_json_value(ctx, None) else {
            return false;
        };
        let Ok(req) = CedarRequest::new(principal.clone(), action, resource.clone(), context, None)
        else {
            return false;
        };
        self.authorizer
            .is_authorized(&req, &self.policies, principal_entity)
            .decision()
            == CedarDecision::Allow
    }

    fn decide(&self, r: &Request) -> bool {
        // Per-request state only: the principals of this request join the static entities.
        let user = |p: &Principal| {
            serde_json::json!({"uid": {"type": "User", "id": p.name}, "attrs": {"sudo": p.sudo},
                "parents": p.groups.iter().map(|g| serde_json::json!({"type": "Group", "id": g})).collect::<Vec<_>>()})
        };
        let Ok(entities) = self.entities.clone().add_entities_from_json_value(
            serde_json::Value::Array(vec![user(&r.requester), user(&r.subject)]),
            None,
        ) else {
            return false;
        };
        let (Ok(requester), Ok(subject), Ok(device)) = (
            EntityUid::from_str(&format!("User::\"{}\"", r.requester.name)),
            EntityUid::from_str(&format!("User::\"{}\"", r.subject.name)),
            EntityUid::from_str(&format!("Device::\"{}\"", r.device.name)),
        ) else {
            return false;
        };
        let access = match r.access {
            AccessLevel::Full => "full",
            AccessLevel::ReadOnly => "read-only",
        };
        let minute = (r.now_unix_ms / 60_000) % 1440;
        let mut source_ctx =
            serde_json::json!({"source": r.source, "allow_rfc1918": r.allow_rfc1918});
        if let Some(c) = &r.allow_only_cidr {
            source_ctx["cidr"] = serde_json::json!(c);
        }
        self.ask(
            &requester,
            &entities,
            "sudo",
            &device,
            serde_json::json!({"on_behalf": r.requester.name != r.subject.name}),
        ) && self.ask(
            &subject,
            &entities,
            "authorize",
            &device,
            serde_json::json!({"access": access, "minute": minute}),
        ) && self.ask(&subject, &entities, "source", &device, source_ctx)
    }
}

// ---- the run ---------------------------------------------------------------------------------

/// Times `n` requests (after `n / 10` untimed ones). With a `gap`, request `i` starts at
/// `i * gap` from the first (open loop; a late request starts at once and is timed from its
/// own start), which leaves the gateway's background threads time between requests as real
/// traffic below saturation does; without, each starts when the last ended.
fn measure(
    n: usize,
    gap: Option<Duration>,
    mut f: impl FnMut() -> bool,
) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3)?;
    for _ in 0..n / 10 {
        f(); // warm-up
    }
    let first = Instant::now();
    for i in 0..n {
        if let Some(gap) = gap {
            let at = first + gap * i as u32;
            while Instant::now() < at {
                std::hint::spin_loop();
            }
        }
        let t = Instant::now();
        if !f() {
            bail!("the benchmark request was denied");
        }
        h.record(t.elapsed().as_nanos() as u64)?;
    }
    Ok(h)
}

/// CPU time used so far, in nanoseconds: by this thread, and by the whole process (the first
/// field of each thread's `schedstat`; 0 if unreadable).
fn cpu_ns() -> (u64, u64) {
    let read = |path: &std::path::Path| -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let thread = read(std::path::Path::new("/proc/thread-self/schedstat"));
    let process = std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .flatten()
                .map(|t| read(&t.path().join("schedstat")))
                .sum()
        })
        .unwrap_or(0);
    (thread, process)
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub fn run(iterations: usize) -> anyhow::Result<()> {
    let components = crate::proc::root().join("target/wasm-guests/components/business-hours.wasm");
    if !components.exists() {
        bail!(
            "{} is missing: run plugins/build.sh first",
            components.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let mut config = Config::embedded_default();
    config.groups = groups();
    config.users.clear();
    config.server.data_dir = tmp.path().join("data");
    config.server.plugins_dir = Some(tmp.path().join("plugins"));
    let plugin: sallyport::config::PluginConfig = toml_plugin(&components)?;
    config.plugins = vec![plugin];
    std::fs::create_dir_all(&config.server.data_dir)?;
    let data =
        cap_std::fs::Dir::open_ambient_dir(&config.server.data_dir, cap_std::ambient_authority())?;
    let policy = Policy::load(
        &config,
        &data,
        Arc::new(sallyport::metrics::Metrics::default()),
    )
    .context("loading plugins")?;
    let cedar = Cedar::new(&config.groups)?;
    let groups = config.groups.clone();

    for (r, expected) in cases() {
        let got = (
            wasm_decide(&policy, &r),
            cedar.decide(&r),
            native_decide(&groups, &r),
        );
        if got != (expected, expected, expected) {
            bail!(
                "implementations disagree on {:?}/{:?}/{:?}: {got:?}, expected {expected}",
                r.subject.groups,
                r.device.name,
                r.source
            );
        }
    }
    println!(
        "bench policy: {iterations} requests per implementation, 4 hook calls each (sudo, authorize x2, source); outcomes agree on 4 cases"
    );
    let (r, _) = cases().remove(0);
    let gap = Duration::from_micros(GAP_US);
    let line = |name: &str, h: &Histogram<u64>| {
        println!(
            "{name:<28} p50 {:>9.2} us  p99 {:>9.2} us  p99.9 {:>9.2} us",
            us(h, 0.5),
            us(h, 0.99),
            us(h, 0.999)
        )
    };
    let before = cpu_ns();
    let wasm = measure(iterations, None, || wasm_decide(&policy, &r))?;
    let after = cpu_ns();
    let per = |a: u64, b: u64| (b - a) as f64 / (iterations + iterations / 10) as f64 / 1000.0;
    let (thread_cpu, process_cpu) = (per(before.0, after.0), per(before.1, after.1));
    let wasm_paced = measure(iterations, Some(gap), || wasm_decide(&policy, &r))?;
    let cedar_h = measure(iterations, None, || cedar.decide(&r))?;
    let cedar_paced = measure(iterations, Some(gap), || cedar.decide(&r))?;
    let native_h = measure(iterations, None, || native_decide(&groups, &r))?;
    println!("back to back (each request starts when the last ended):");
    line("  wasm components", &wasm);
    line("  cedar-policy", &cedar_h);
    line("  native Rust", &native_h);
    println!(
        "  wasm CPU per request: {thread_cpu:.2} us on the deciding thread, {process_cpu:.2} us in the process"
    );
    println!("paced (a request every {GAP_US} us, open loop):");
    line("  wasm components", &wasm_paced);
    line("  cedar-policy", &cedar_paced);
    println!(
        "ratios: back to back wasm/cedar p50 {:.2}x p99 {:.2}x, wasm/native p50 {:.0}x; paced wasm/cedar p50 {:.2}x p99 {:.2}x",
        us(&wasm, 0.5) / us(&cedar_h, 0.5),
        us(&wasm, 0.99) / us(&cedar_h, 0.99),
        us(&wasm, 0.5) / us(&native_h, 0.5),
        us(&wasm_paced, 0.5) / us(&cedar_paced, 0.5),
        us(&wasm_paced, 0.99) / us(&cedar_paced, 0.99),
    );
    let met = |w: &Histogram<u64>, c: &Histogram<u64>| {
        if us(w, 0.5) <= 10.0 && us(w, 0.99) <= 50.0 && us(w, 0.5) <= us(c, 0.5) {
            "met"
        } else {
            "NOT met"
        }
    };
    println!(
        "target (p50 <= 10 us, p99 <= 50 us, no slower than cedar): back to back {}, paced {}",
        met(&wasm, &cedar_h),
        met(&wasm_paced, &cedar_paced)
    );
    let plugins_dir = config.server.plugins_dir();
    reload(&policy, &plugins_dir, &r)
}

/// Hot reload: the time from starting to write a plugin file into the drop-in directory to the
/// first decision served by that version (seen in the decision's audit row, which names the
/// plugin's content hash). Each new version differs by a custom section, so it is new content
/// the gateway must compile; then earlier versions are written again (compiled-plugin cache).
fn reload(policy: &Policy, dir: &std::path::Path, r: &Request) -> anyhow::Result<()> {
    const VERSIONS: usize = 8;
    let base =
        std::fs::read(crate::proc::root().join("target/wasm-guests/components/max-ttl.wasm"))
            .context("max-ttl.wasm (plugins/build.sh builds it)")?;
    std::fs::write(dir.join("site.toml"), "[config]\nmax_ttl_seconds = 900\n")?;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    policy.set_audit_sink(tx);
    let version = |i: usize| {
        let mut b = base.clone();
        let name = format!("bench-reload-{i}");
        // A custom section (id 0): size, name length, name, no payload.
        b.extend_from_slice(&[0, (name.len() + 1) as u8, name.len() as u8]);
        b.extend_from_slice(name.as_bytes());
        b
    };
    let timed = |bytes: &[u8]| -> anyhow::Result<f64> {
        let hash = sallyport::policy::content_hash(bytes);
        let tag = format!("plugin=site hash={}", &hash[..16]);
        let started = Instant::now();
        let tmp = dir.join(".site.wasm.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, dir.join("site.wasm"))?;
        loop {
            let mut d = policy.decisions(r);
            d.authorize();
            if d.take_audit()
                .iter()
                .any(|e| e.reason.as_deref().is_some_and(|m| m.starts_with(&tag)))
            {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                return Ok(ms);
            }
            if started.elapsed() > std::time::Duration::from_secs(10) {
                bail!(
                    "version {} of site.wasm was not served within 10 s",
                    &hash[..16]
                );
            }
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
    };
    // Between writes, a pause that is not a multiple of the watcher's poll period, so the
    // writes land at different points of its cycle.
    let pause = |i: usize| std::thread::sleep(std::time::Duration::from_millis(100 + 7 * i as u64));
    let mut fresh = Vec::new();
    for i in 0..VERSIONS {
        fresh.push(timed(&version(i))?);
        pause(i);
    }
    let mut cached = Vec::new();
    for i in 0..VERSIONS {
        cached.push(timed(&version(i))?);
        pause(i);
    }
    let show = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        format!(
            "median {:.1} ms, max {:.1} ms",
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    let worst = fresh.iter().chain(&cached).fold(0.0f64, |a, b| a.max(*b));
    println!(
        "reload (write plugin file -> first decision by it, {VERSIONS} versions each): new content {}; known content (cache) {}",
        show(&mut fresh),
        show(&mut cached)
    );
    println!(
        "target (new version serves within 100 ms): {}",
        if worst <= 100.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

fn toml_plugin(path: &std::path::Path) -> anyhow::Result<sallyport::config::PluginConfig> {
    let text = format!(
        "hook = \"authorize\"\npath = \"{}\"\nconfig = {{ open = \"00:00\", close = \"23:59\", timezone = \"UTC\" }}\n",
        path.display()
    );
    Ok(toml::from_str(&text)?)
}
