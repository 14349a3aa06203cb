"""Example authorize plugin in Python: on weekends only read-only access.

On Saturday and Sunday (in the fixed UTC offset of config key `utc-offset-minutes`, default 0)
the grant caps access at read-only, so a full-access request is denied; on weekdays it
allows without narrowing anything. Built with componentize-py (see build.sh beside this file).
"""

import datetime

import wit_world
from wit_world.imports import host, types


def local_weekday(now_unix_ms: int, offset_minutes: int) -> int:
    """Monday is 0, Sunday is 6."""
    seconds = now_unix_ms // 1000 + offset_minutes * 60
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).weekday()


class WitWorld(wit_world.WitWorld):
    def authorize(self, r: types.Request) -> types.Decision:
        raw = host.config("utc-offset-minutes") or "0"
        try:
            offset = int(raw)
        except ValueError:
            return types.Decision_Deny(f"weekend-read-only: utc-offset-minutes `{raw}` is not a number")
        if local_weekday(r.now_unix_ms, offset) < 5:
            return types.Decision_Allow(types.Grant(max_ttl_seconds=None, access=None, obligations=[]))
        if r.access == types.AccessLevel.FULL:
            return types.Decision_Deny("only read-only access on weekends")
        host.log(3, f"weekend read-only access for {r.subject.name} to {r.device.name}")
        return types.Decision_Allow(
            types.Grant(max_ttl_seconds=None, access=types.AccessLevel.READ_ONLY, obligations=[])
        )
