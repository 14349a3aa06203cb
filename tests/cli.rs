//! The command line: `serve` with no configuration (embedded defaults, a generated admin
//! password printed once), `check-config` on good and bad files, `hash-password`, and the
//! plugin tools (`plugin inspect`, `plugin test` with fixtures, `plugin new`).

// Test code: a failed step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn sallyport(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_the_example_and_names_bad_keys() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/sallyport.toml");
    let out = sallyport(&["check-config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 groups, 2 users, 2 devices"));

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\napi_listen = \"127.0.0.1:1\"\n\n[[groups]]\nname = \"x\"\nsudoo = true\n",
    )
    .unwrap();
    let out = sallyport(&["check-config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sudoo") && err.contains("line 6"), "{err}");

    std::fs::write(&bad, "[[users]]\nname = \"a\"\ngroups = [\"missing\"]\n").unwrap();
    let err = String::from_utf8_lossy(&sallyport(&["check-config", bad.to_str().unwrap()]).stderr)
        .to_string();
    assert!(err.contains("unknown group \"missing\""), "{err}");
    let err = String::from_utf8_lossy(&sallyport(&["check-config", "/nonexistent.toml"]).stderr)
        .to_string();
    assert!(err.contains("cannot read /nonexistent.toml"), "{err}");
}

#[test]
fn hash_password_prints_an_argon2id_hash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sallyport"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!hash.contains("s3cret"));
}

#[tokio::test]
async fn serve_without_config_uses_embedded_defaults() {
    // The defaults listen on 127.0.0.1:8443 and :2222; skip rather than fail if either is taken.
    if std::net::TcpListener::bind("127.0.0.1:8443").is_err()
        || std::net::TcpListener::bind("127.0.0.1:2222").is_err()
    {
        eprintln!("port 8443 or 2222 busy; skipping");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("defaults.toml");
    let gw = Gateway::start_args(&["serve"], &marker, Some(tmp.path()));
    assert_eq!(gw.base, "https://127.0.0.1:8443");
    let line = gw
        .stdout_lines
        .iter()
        .find(|l| l.contains("generated password for user \"admin\""))
        .unwrap();
    let password = line
        .split(": ")
        .nth(2)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    let data = tmp.path().join("sallyport-data");
    assert!(data.join("sallyport.db").exists() && data.join("tls/cert.pem").exists());
    let c = client();
    let ticket = login(&c, &gw, "admin", &password).await;
    assert!(!ticket.is_empty());
    assert!(
        !gw.log().contains(&password),
        "the password is printed on stdout only, never logged"
    );
    gw.stop();

    let gw = Gateway::start_args(&["serve"], &marker, Some(tmp.path()));
    assert!(
        !gw.stdout_lines
            .iter()
            .any(|l| l.contains("generated password")),
        "printed only once"
    );
    // A fresh client: the old one pools a connection to the previous process on this port.
    login(&client(), &gw, "admin", &password).await;
    gw.stop();
}

// ---- sallyport plugin new | test | inspect ----

#[path = "common/hostile.rs"]
mod hostile;

fn repo(path: &str) -> String {
    format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plugin_inspect_shows_world_version_imports_exports_and_hash() {
    use sha2::Digest;
    let file = repo("plugins/dist/default-sudo.wasm");
    let out = sallyport(&["plugin", "inspect", &file]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    let hash = hex::encode(sha2::Sha256::digest(std::fs::read(&file).unwrap()));
    for needle in [
        format!("sha256:    {hash}"),
        "world:     sallyport:policy/sudo-policy".into(),
        "package:   sallyport:policy@0.1.0".into(),
        "  sallyport:policy/types@0.1.0 (instance)".into(),
        "exports:\n  sudo (func)".into(),
        "loads:     yes".into(),
    ] {
        assert!(stdout.contains(&needle), "missing {needle:?} in\n{stdout}");
    }

    // A component the gateway would refuse is still described, with the reason, and the exit
    // status says so (for scripts).
    let tmp = tempfile::tempdir().unwrap();
    let evil = tmp.path().join("evil.wasm");
    std::fs::write(&evil, hostile::evil_import("authorize")).unwrap();
    let out = sallyport(&["plugin", "inspect", evil.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains(&format!("the gateway would refuse {}", evil.display())),
        "{stderr}"
    );
    assert!(stdout.contains("  evil:net/socket (instance)"), "{stdout}");
    assert!(
        stdout.contains("loads:     no:") && stdout.contains("evil:net/socket"),
        "{stdout}"
    );
    assert!(
        stdout.contains("world:     sallyport:policy/authorize-policy"),
        "{stdout}"
    );

    let out = sallyport(&["plugin", "inspect", "/nonexistent.wasm"]);
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("cannot read /nonexistent.wasm"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn plugin_test_runs_fixtures_and_fails_on_a_mismatch() {
    let wasm = repo("plugins/dist/default-sudo.wasm");
    let fixtures = repo("tests/fixtures/default-sudo");
    let out = sallyport(&["plugin", "test", &wasm, &fixtures]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("PASS  ").count(), 3, "{stdout}");
    assert!(
        stdout.contains("PASS  bob may not issue for alice: deny: bob may not issue for alice: issuing for another user needs a group with sudo"),
        "{stdout}"
    );

    // A wrong expectation fails the run and says what differs; a fixture without one prints.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("wrong.json"),
        r#"{"request": {"requester": {"name": "bob"}, "subject": {"name": "alice"}}, "expect": {"decision": "allow"}}"#,
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("plain.toml"),
        "[request]\nuser = { name = \"carol\" }\n",
    )
    .unwrap();
    let out = sallyport(&["plugin", "test", &wasm, tmp.path().to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("FAIL  wrong: deny: bob may not issue for alice")
            && stdout.contains("expected allow"),
        "{stdout}"
    );
    assert!(stdout.contains("      plain: allow"), "{stdout}");
    assert!(stderr.contains("1 of 2 fixtures failed"), "{stderr}");

    // Configuration reaches the plugin, and a fault is the server's deny naming the plugin.
    let auth = tmp.path().join("auth");
    std::fs::create_dir_all(&auth).unwrap();
    std::fs::write(
        auth.join("groups.toml"),
        "[config]\ngroups = '[{\"name\":\"ops\",\"sudo\":false,\"devices\":[\"edge-*\"],\"access\":\"read-only\"}]'\n\
         [request]\nuser = { name = \"alice\", groups = [\"ops\"] }\ndevice = { name = \"edge-1\" }\naccess = \"read-only\"\n\
         [expect]\ndecision = \"allow\"\naccess = \"read-only\"\n",
    )
    .unwrap();
    let out = sallyport(&[
        "plugin",
        "test",
        &repo("plugins/dist/default-authorize.wasm"),
        auth.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out)
            .0
            .contains("PASS  groups: allow (access read-only)"),
        "{:?}",
        text(&out)
    );
}

#[test]
fn plugin_test_fails_on_faults_whatever_the_fixture_expects() {
    let tmp = tempfile::tempdir().unwrap();
    let trap = tmp.path().join("trap.wasm");
    std::fs::write(&trap, hostile::trap("sudo")).unwrap();
    // The gateway's answer to a fault is a deny, but a fixture expecting a deny must not pass
    // on a broken plugin, and one without [expect] must not go unnoticed either.
    std::fs::write(
        tmp.path().join("expects-deny.toml"),
        "[expect]\ndecision = \"deny\"\nreason-contains = \"policy plugin trap trapped\"\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join("plain.toml"), "").unwrap();
    let out = sallyport(&[
        "plugin",
        "test",
        trap.to_str().unwrap(),
        tmp.path().to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "FAULT (the gateway would deny) expects-deny: deny: policy plugin trap trapped"
        ) && stdout
            .contains("FAULT (the gateway would deny) plain: deny: policy plugin trap trapped")
            && stdout.contains("[fault: trap]")
            && !stdout.contains("PASS"),
        "{stdout}"
    );
    assert!(stderr.contains("2 of 2 fixtures failed"), "{stderr}");

    // A component the gateway would refuse runs no fixture and exits non-zero.
    let evil = tmp.path().join("evil.wasm");
    std::fs::write(&evil, hostile::evil_import("sudo")).unwrap();
    let out = sallyport(&[
        "plugin",
        "test",
        evil.to_str().unwrap(),
        tmp.path().to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains(&format!("the gateway would refuse {}", evil.display()))
            && stderr.contains("evil:net/socket"),
        "{stderr}"
    );
}

#[test]
fn plugin_test_reports_bad_fixtures_one_by_one_and_checks_its_limits() {
    let wasm = repo("plugins/dist/default-sudo.wasm");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a-maybe.toml"), "[expect]\ndecision = \"maybe\"\n").unwrap();
    std::fs::write(
        dir.join("b-ttl.json"),
        r#"{"request": {"ttl-seconds": "abc"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("c-twice.toml"),
        "[request]\nttl-seconds = 5\nttl_seconds = 6\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("d-principal.toml"),
        "[request]\nrequester = \"bob\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("e-good.toml"),
        "[request]\nuser = { name = \"carol\" }\n[expect]\ndecision = \"allow\"\n",
    )
    .unwrap();
    let out = sallyport(&["plugin", "test", &wasm, dir.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    let d = dir.display();
    for line in [
        format!(
            "ERROR {d}/a-maybe.toml: expect.decision: \"maybe\": expected one of allow, deny, abstain\n"
        ),
        format!(
            "ERROR {d}/b-ttl.json: request.ttl-seconds: expected a whole number from 0 to 4294967295, found string \"abc\"\n"
        ),
        format!(
            "ERROR {d}/c-twice.toml: request.ttl-seconds: given twice, as \"ttl-seconds\" and \"ttl_seconds\": keep one\n"
        ),
        format!(
            "ERROR {d}/d-principal.toml: request.requester: expected a table such as {{ name = \"alice\", groups = [\"ops\"], sudo = false }}, found string \"bob\"\n"
        ),
        "PASS  e-good: allow".to_string(),
    ] {
        assert!(stdout.contains(&line), "missing {line:?} in\n{stdout}");
    }
    assert!(stderr.contains("4 of 5 fixtures failed"), "{stderr}");

    let good = dir.join("e-good.toml");
    for (flag, value, ok) in [
        ("--deadline-ms", "0", false),
        ("--deadline-ms", "10001", false),
        ("--deadline-ms", "10000", true),
        ("--memory-mb", "0", false),
        ("--memory-mb", "4097", false),
        ("--memory-mb", "64", true),
    ] {
        let out = sallyport(&["plugin", "test", &wasm, good.to_str().unwrap(), flag, value]);
        assert_eq!(out.status.success(), ok, "{flag} {value}: {:?}", text(&out));
        if !ok {
            assert!(text(&out).1.contains("is not in"), "{:?}", text(&out));
        }
    }
}

#[test]
fn plugin_new_writes_a_crate_that_tests_natively() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("frozen");
    let out = sallyport(&[
        "plugin",
        "new",
        "frozen-devices",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let cargo_toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    let sdk = std::path::Path::new(&repo("plugins/sdk"))
        .canonicalize()
        .unwrap();
    assert!(
        cargo_toml.contains(&format!(
            "sallyport-plugin = {{ path = {:?} }}",
            sdk.display().to_string()
        )),
        "{cargo_toml}"
    );
    let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    assert!(lib.contains("export_authorize!(FrozenDevices)"), "{lib}");
    // Refuses to overwrite, and rejects names cargo would not take.
    assert!(
        !sallyport(&[
            "plugin",
            "new",
            "frozen-devices",
            "--dir",
            dir.to_str().unwrap()
        ])
        .status
        .success()
    );
    let out = sallyport(&[
        "plugin",
        "new",
        "Bad Name",
        "--dir",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(!out.status.success() && text(&out).1.contains("is not a plugin name"));
    let out = sallyport(&["plugin", "new", "x", "--hook", "root"]);
    assert!(!out.status.success() && text(&out).1.contains("expected authorize, sudo or source"));
    // Names cargo takes but whose crate would not build or test: a keyword (`self` also makes
    // the type `Self`), the SDK's own name (a Cargo.lock collision), a standard crate.
    for (name, why) in [
        ("self", "`self` is a Rust keyword"),
        (
            "sallyport-plugin",
            "it is the name of a crate every plugin uses",
        ),
        ("std", "it is the name of a crate every plugin uses"),
    ] {
        let d = tmp.path().join(name);
        let out = sallyport(&["plugin", "new", name, "--dir", d.to_str().unwrap()]);
        let err = text(&out).1;
        assert!(!out.status.success() && err.contains(why), "{name}: {err}");
        assert!(!d.exists(), "{name}: nothing is written");
    }
    // Request fixtures come with the crate, so the README's `plugin test … fixtures/` works.
    assert!(dir.join("fixtures/deny-frozen-full.toml").is_file());

    for (hook, export) in [
        ("sudo", "export_sudo!(MySudo)"),
        ("source", "export_check_source!(MySource)"),
    ] {
        let d = tmp.path().join(hook);
        assert!(
            sallyport(&[
                "plugin",
                "new",
                &format!("my-{hook}"),
                "--hook",
                hook,
                "--dir",
                d.to_str().unwrap()
            ])
            .status
            .success()
        );
        let lib = std::fs::read_to_string(d.join("src/lib.rs")).unwrap();
        assert!(lib.contains(export), "{lib}");
    }

    // The generated crate's own tests pass with plain `cargo test` (offline: the SDK's
    // dependencies are in the local registry cache once the plugins workspace was built; the
    // guest target dir already holds them compiled natively).
    let out = Command::new(env!("CARGO"))
        .args(["test", "--offline", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", repo("target/wasm-guests"))
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "cargo test in the generated crate failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("2 passed"), "{stdout}");
}

#[test]
fn plugin_build_makes_a_component_that_the_engine_runs() {
    let tmp = tempfile::tempdir().unwrap();
    // The crate of every hook's template, built, passes the fixtures `plugin new` wrote beside
    // it: the README's `plugin new` → `plugin build` → `plugin test … fixtures/` works as is.
    for (name, hook, world, cases) in [
        ("frozen-devices", "authorize", "authorize-policy", 3),
        ("desk-helpers", "sudo", "sudo-policy", 3),
        ("deny-list", "source", "source-policy", 2),
    ] {
        let dir = tmp.path().join(name);
        let out = sallyport(&[
            "plugin",
            "new",
            name,
            "--hook",
            hook,
            "--dir",
            dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{:?}", text(&out));
        // A target dir that outlives the test: the first build compiles the guest std
        // (minutes), later ones only the crate.
        let target = repo("target/wasm-guests-cli-test");
        let out = Command::new(env!("CARGO_BIN_EXE_sallyport"))
            .args([
                "plugin",
                "build",
                dir.to_str().unwrap(),
                "--target-dir",
                &target,
            ])
            .output()
            .unwrap();
        let (stdout, stderr) = text(&out);
        if stderr.contains("no toolchain can build wasm32 guests") {
            let msg = "no wasm toolchain: install one with `plugins/build.sh --install`";
            assert!(
                std::env::var_os("CI").is_none(),
                "{msg} (CI is set: .ci/before-tests installs it)"
            );
            eprintln!("\n!!!!!!!! SKIPPED plugin build: {msg} !!!!!!!!\n");
            return;
        }
        assert!(out.status.success(), "{stdout}\n{stderr}");
        let wasm = format!("{target}/components/{name}.wasm");
        assert!(
            stdout.contains(&format!("{wasm}: "))
                && stdout.contains(&format!("world sallyport:policy/{world}")),
            "{stdout}"
        );

        let fixtures = dir.join("fixtures");
        let out = sallyport(&["plugin", "test", &wasm, fixtures.to_str().unwrap()]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{name}: {stdout}\n{stderr}");
        assert_eq!(stdout.matches("PASS  ").count(), cases, "{name}: {stdout}");
    }
}

#[test]
fn serve_warns_when_transient_ports_lie_in_the_ephemeral_range() {
    const WARNING: &str = "can be taken by outgoing connections";
    // The expectation depends on this machine's settings: only assert the warning where the
    // kernel really can hand out 40000 as a source port.
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let reserved = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap();
    let bounds: Vec<u32> = range
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    if !(bounds[0]..=bounds[1]).contains(&40000) || !reserved.trim().is_empty() {
        eprintln!(
            "40000 is not an unreserved ephemeral port here ({range:?}, {reserved:?}); skipping"
        );
        return;
    }
    let (_tmp, cfg) = setup("40000-40009");
    let gw = Gateway::start(&cfg);
    assert!(gw.log_shows(WARNING, std::time::Duration::from_secs(5)));
    assert!(
        gw.plain_log()
            .contains("net.ipv4.ip_local_reserved_ports=40000-40009")
    );
    drop(gw);

    let (_tmp, cfg) = setup("26400-26409");
    let gw = Gateway::start(&cfg);
    // The gateway is up (it printed its ports); a warning would have come before that.
    assert!(!gw.plain_log().contains(WARNING), "{}", gw.plain_log());
}

#[test]
fn a_component_serving_several_hooks_is_inspected_and_tested_per_hook_from_a_compile_cache() {
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_sallyport"))
            .args(args)
            .env("XDG_CACHE_HOME", cache.path())
            .output()
            .unwrap()
    };
    let all = repo("plugins/dist/default-policy.wasm");
    let out = run(&["plugin", "inspect", &all]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("hooks:     authorize, sudo, source"),
        "{stdout}"
    );
    // Compiled once, into the user's cache, then taken from there.
    let cached = || {
        std::fs::read_dir(cache.path().join("sallyport/plugin-cache"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(cached(), 1);
    assert!(stderr.contains("compiling policy plugin"), "{stderr}");
    let fixtures = repo("tests/fixtures/default-sudo");
    let out = run(&["plugin", "test", "--hook", "sudo", &all, &fixtures]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("testing its sudo hook"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(!stderr.contains("compiling policy plugin"), "{stderr}");
    assert_eq!(cached(), 1);
    // A hook the component does not serve is refused before any fixture runs.
    let one = repo("plugins/dist/default-sudo.wasm");
    let out = run(&["plugin", "test", "--hook", "source", &one, &fixtures]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stderr.contains("does not serve the source hook"),
        "{stderr}"
    );
    // A cache others may write to is not trusted: entries in it would be run as compiled code.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        cache.path().join("sallyport"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let before = cached();
    let out = run(&[
        "plugin",
        "inspect",
        &repo("plugins/dist/default-source.wasm"),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("not private to this user"), "{stderr}");
    assert_eq!(cached(), before, "nothing written to an untrusted cache");
}
