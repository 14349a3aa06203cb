//! Policy components written in component-model WAT by the test suite itself: well-behaved
//! ones with a fixed answer, and hostile ones (trap, endless loop, memory hog, garbage result,
//! an import the host lacks, no policy export) to prove every fault is a deny.
//!
//! The canonical ABI passes the `request` record (more than 16 flat values) by pointer and
//! returns the `decision` variant by pointer, so every core function here is `(i32) -> i32`.

#![allow(dead_code)]

/// The WIT types of `sallyport:policy@0.1.0`, spelled out in component WAT.
const TYPES: &str = r#"
  (type $protocol' (enum "ssh" "winbox" "web-console"))
  (export $protocol "protocol" (type $protocol'))
  (type $access' (enum "full" "read-only"))
  (export $access "access-level" (type $access'))
  (type $action' (enum "issue-session" "issue-transient" "connect"))
  (export $action "action" (type $action'))
  (type $principal' (record (field "name" string) (field "groups" (list string)) (field "sudo" bool)))
  (export $principal "principal" (type $principal'))
  (type $device' (record (field "name" string) (field "id" string) (field "tags" (list string))))
  (export $device "device" (type $device'))
  (type $request' (record
    (field "action" $action) (field "requester" $principal) (field "subject" $principal)
    (field "device" $device) (field "protocol" $protocol) (field "access" $access)
    (field "ttl-seconds" u32) (field "source" (option string)) (field "allow-only-cidr" (option string))
    (field "allow-rfc1918" bool) (field "now-unix-ms" u64) (field "request-id" string)))
  (export $request "request" (type $request'))
  (type $grant' (record (field "max-ttl-seconds" (option u32)) (field "access" (option $access))
    (field "obligations" (list string))))
  (export $grant "grant" (type $grant'))
  (type $decision' (variant (case "allow" $grant) (case "deny" string) (case "abstain")))
  (export $decision "decision" (type $decision'))
"#;

/// A component exporting `export` (`authorize`, `sudo` or `check-source`) whose core function
/// body is `body` (it gets the request pointer as local 0 and must return a result pointer),
/// with `data` placed at offset 2048 and `extra` added to the component (e.g. imports).
pub fn component(export: &str, body: &str, data: &[u8], extra: &str) -> Vec<u8> {
    with_tail(export, body, data, extra, "")
}

/// [`component`], with `tail` added at its end (further exports of the core instance `$i`).
fn with_tail(export: &str, body: &str, data: &[u8], extra: &str, tail: &str) -> Vec<u8> {
    let data: String = data.iter().map(|b| format!("\\{b:02x}")).collect();
    let text = format!(
        r#"(component
  {extra}
  (core module $m
    (memory (export "mem") 1)
    (global $bump (mut i32) (i32.const 4096))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (i32.and (i32.add (global.get $bump) (i32.const 7)) (i32.const -8)))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (local.get $p))
    (func (export "decide") (param i32) (result i32) {body})
    (func (export "takes-string") (param i32 i32) (result i32) (i32.const 2048))
    (data (i32.const 2048) "{data}"))
  (core instance $i (instantiate $m))
  {TYPES}
  (func $f (param "r" $request) (result $decision)
    (canon lift (core func $i "decide") (memory (core memory $i "mem")) (realloc (core func $i "realloc"))))
  (export "{export}" (func $f))
  {tail})"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test component: {e}\n{text}"))
}

/// `allow` with `max-ttl-seconds = Some(ttl)`.
pub fn allow_with_ttl(export: &str, ttl: u32) -> Vec<u8> {
    let mut d = vec![0u8; 24];
    d[4] = 1; // option<u32>: some
    d[8..12].copy_from_slice(&ttl.to_le_bytes());
    component(export, "(i32.const 2048)", &d, "")
}

/// `allow` with `max-ttl-seconds = Some(ttl)`, after counting to `iterations` (a decision that
/// takes a while, for in-flight tests; give it a generous deadline).
pub fn slow_allow_with_ttl(export: &str, ttl: u32, iterations: u32) -> Vec<u8> {
    let mut d = vec![0u8; 24];
    d[4] = 1; // option<u32>: some
    d[8..12].copy_from_slice(&ttl.to_le_bytes());
    let body = format!(
        "(local $i i32)
         (block $done (loop $again
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $done (i32.ge_u (local.get $i) (i32.const {iterations})))
           (br $again)))
         (i32.const 2048)"
    );
    component(export, &body, &d, "")
}

/// `allow` with a grant: `max-ttl-seconds = ttl` and `obligations`.
pub fn allow_with(export: &str, ttl: Option<u32>, obligations: &[&str]) -> Vec<u8> {
    const BASE: u32 = 2048;
    let mut d = vec![0u8; 24];
    if let Some(ttl) = ttl {
        d[4] = 1;
        d[8..12].copy_from_slice(&ttl.to_le_bytes());
    }
    // list<string>: (ptr, len) pairs right after the decision, then the bytes.
    let list = BASE + 24;
    d[16..20].copy_from_slice(&list.to_le_bytes());
    d[20..24].copy_from_slice(&(obligations.len() as u32).to_le_bytes());
    let mut text = BASE + 24 + 8 * obligations.len() as u32;
    let mut bytes = Vec::new();
    for o in obligations {
        d.extend_from_slice(&text.to_le_bytes());
        d.extend_from_slice(&(o.len() as u32).to_le_bytes());
        bytes.extend_from_slice(o.as_bytes());
        text += o.len() as u32;
    }
    d.extend_from_slice(&bytes);
    component(export, "(i32.const 2048)", &d, "")
}

/// `allow` with a grant capped to `access = read-only`.
pub fn allow_read_only(export: &str) -> Vec<u8> {
    let mut d = vec![0u8; 24];
    d[12] = 1; // option<access-level>: some
    d[13] = 1; // read-only
    component(export, "(i32.const 2048)", &d, "")
}

/// `deny(reason)`.
pub fn deny(export: &str, reason: &str) -> Vec<u8> {
    let mut d = vec![0u8; 16];
    d[0] = 1;
    d[4..8].copy_from_slice(&(2048u32 + 16).to_le_bytes());
    d[8..12].copy_from_slice(&(reason.len() as u32).to_le_bytes());
    d.extend_from_slice(reason.as_bytes());
    component(export, "(i32.const 2048)", &d, "")
}

/// `abstain`.
pub fn abstain(export: &str) -> Vec<u8> {
    component(export, "(i32.const 2048)", &[2, 0, 0, 0], "")
}

/// `abstain` on `export`, and a second export `mistyped` that takes a string instead of the
/// request (built against some other interface).
pub fn abstain_and_mistyped(export: &str, mistyped: &str) -> Vec<u8> {
    let tail = format!(
        r#"(func $g (param "r" string) (result $decision)
    (canon lift (core func $i "takes-string") (memory (core memory $i "mem")) (realloc (core func $i "realloc"))))
  (export "{mistyped}" (func $g))"#
    );
    with_tail(export, "(i32.const 2048)", &[2, 0, 0, 0], "", &tail)
}

/// Traps at once (what a guest panic compiles to).
pub fn trap(export: &str) -> Vec<u8> {
    component(export, "unreachable", &[], "")
}

/// Never returns.
pub fn endless(export: &str) -> Vec<u8> {
    component(export, "(loop (br 0)) (i32.const 0)", &[], "")
}

/// Grows memory until refused, then would trap.
pub fn memory_hog(export: &str) -> Vec<u8> {
    component(
        export,
        "(loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable",
        &[],
        "",
    )
}

/// Returns a decision with an invalid variant discriminant.
pub fn garbage(export: &str) -> Vec<u8> {
    component(export, "(i32.const 2048)", &[9, 0, 0, 0], "")
}

/// Imports an interface the host does not provide.
pub fn evil_import(export: &str) -> Vec<u8> {
    component(
        export,
        "(i32.const 2048)",
        &[2, 0, 0, 0],
        r#"(import "evil:net/socket" (instance (export "connect" (func))))"#,
    )
}

/// A component with no policy export at all.
pub fn no_world() -> Vec<u8> {
    component("frobnicate", "(i32.const 2048)", &[2, 0, 0, 0], "")
}
