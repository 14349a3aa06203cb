"""TEST COMPONENT (not an example): probes the WASI sandbox the gateway gives componentize-py
plugins, and reports what it found as the reason of a deny, for tests/examples.rs to check:
no environment, no files or directories, no network, and a clock fixed at the request's
`now-unix-ms` (wall and monotonic).
"""

import os
import time

import wit_world
from wit_world.imports import types


def attempt(action) -> str:
    try:
        action()
        return "allowed"
    except Exception:  # any refusal will do: the point is that nothing gets through
        return "refused"


def connect():
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.connect(("127.0.0.1", 22))


class WitWorld(wit_world.WitWorld):
    def authorize(self, r: types.Request) -> types.Decision:
        # Probed here, not at module level: componentize-py runs module code at build time.
        wall_ms = int(round(time.time() * 1000))
        first = time.monotonic_ns()
        second = time.monotonic_ns()
        found = [
            f"env={len(os.environ)}",
            f"file={attempt(lambda: open('/etc/passwd').read(1))}",
            f"dir={attempt(lambda: os.listdir('/'))}",
            f"write={attempt(lambda: open('/tmp/sp-probe', 'w').write('x'))}",
            f"net={attempt(connect)}",
            f"wall-is-request-time={abs(wall_ms - r.now_unix_ms) <= 1}",
            f"monotonic-fixed={first == second}",
        ]
        return types.Decision_Deny("wasi-probe: " + " ".join(found))
