"""Native test of app.py against componentize-py's generated bindings (run by build.sh).

The `host` imports are replaced by a dict and a list, as the Rust SDK's test harness does.
"""

import sys

from wit_world.imports import host, types

config, logs = {}, []
host.config = config.get
host.log = lambda level, message: logs.append((level, message))

import app  # noqa: E402  (after the host stubs are in place)

MONDAY, DAY = 1_795_392_000_000, 86_400_000  # 2026-11-23T00:00Z, a Monday


def decide(now_ms, access=types.AccessLevel.FULL):
    user = types.Principal(name="alice", groups=[], sudo=False)
    r = types.Request(
        action=types.Action.CONNECT, requester=user, subject=user,
        device=types.Device(name="sw1", id="", tags=[]), protocol=types.Protocol.SSH,
        access=access, ttl_seconds=10, source=None, allow_only_cidr=None, allow_rfc1918=True,
        now_unix_ms=now_ms, request_id="t",
    )
    return app.WitWorld().authorize(r)


def allowed(access=None):
    return types.Decision_Allow(types.Grant(max_ttl_seconds=None, access=access, obligations=[]))


cases = [
    ("weekday allows", lambda: decide(MONDAY), allowed()),
    ("saturday denies full", lambda: decide(MONDAY + 5 * DAY), types.Decision_Deny("only read-only access on weekends")),
    ("saturday grants read-only", lambda: decide(MONDAY + 5 * DAY, types.AccessLevel.READ_ONLY), allowed(types.AccessLevel.READ_ONLY)),
    ("offset -60 makes monday 00:00Z a sunday", lambda: (config.update({"utc-offset-minutes": "-60"}), decide(MONDAY))[1],
     types.Decision_Deny("only read-only access on weekends")),
    ("bad offset denies", lambda: (config.update({"utc-offset-minutes": "x"}), decide(MONDAY))[1],
     types.Decision_Deny("weekend-read-only: utc-offset-minutes `x` is not a number")),
]
failed = 0
for name, run, want in cases:
    got = run()
    if got != want:
        failed += 1
        print(f"FAIL {name}: got {got!r}, want {want!r}")
if logs != [(3, "weekend read-only access for alice to sw1")]:
    failed += 1
    print(f"FAIL logs: {logs!r}")
print(f"{len(cases) + 1 - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
