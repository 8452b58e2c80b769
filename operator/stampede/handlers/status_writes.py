"""Status writes, throttled: a patch only when something meaningful changed, or a refresh is due.

`lastPollTime` and the signals' values change at every poll; writing them every time would cost one
patch per policy per poll for nothing a reader needs. They are refreshed every `status_refresh_seconds`
instead, and with any meaningful change. Only what changed is patched.

Two things keep thousands of policies from writing all at once:
- after a restart, the refresh clock resumes from the `lastPollTime` the status already holds (the
  time of the last write), so a restart does not rewrite every unchanged status;
- policies that start together (all of them, when the operator starts) would otherwise refresh in the
  same poll round forever after; each policy's first refresh comes a stable, per-policy number of
  poll intervals early (`refresh_offset`), which spreads the refreshes evenly over the rounds of one
  refresh period. Only that first refresh comes early; every later one is a whole period apart.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..actuators.kube import KubeError
from ..api.status import PolicyStatus

log = logging.getLogger("stampede")
Patch = Callable[[dict[str, Any], dict[str, Any]], Awaitable[object]]
"""(old, new) → patches the difference onto the policy's status."""


def refresh_offset(who: str, *, interval: float, refresh: float) -> float:
    """How much earlier than a whole period this policy's first refresh comes: whole poll intervals, stable.

    With 15 s polls and a 60 s refresh, policies fall into 4 slots (0, 15, 30, 45 s early), one per round.
    """
    if interval <= 0:
        return 0.0
    slots = max(1, int(refresh // interval))
    return (zlib.crc32(who.encode()) % slots) * interval


@dataclass
class StatusWrites:
    """The last status written for one policy, and when."""

    refresh_seconds: float
    last_written: dict[str, Any] | None = None
    last_write_at: datetime | None = None
    first_refresh_early: float = 0.0
    """Seconds by which the first refresh after this process's first write comes early (`refresh_offset`)."""

    def resume(self, written: Mapping[str, Any], *, last_poll_time: datetime | None) -> None:
        """The status found when this process started serving the policy: what was written, and when."""
        self.last_written = dict(written)
        self.last_write_at = last_poll_time

    async def write(self, status: PolicyStatus, patch: Patch, *, now: datetime, force: bool, who: str) -> None:
        new = status.wire()
        old = self.last_written or {}
        meaningful = _meaningful(new) != _meaningful(old)
        due = self.last_write_at is None or (now - self.last_write_at).total_seconds() >= self.refresh_seconds
        if not (meaningful or force or due):
            return
        first = self.last_write_at is None
        try:
            await patch(old, new)
        except KubeError as error:
            log.warning("%s: status write failed: %s", who, error.message)
            self.last_written = None if error.not_found else self.last_written
            return
        self.last_written = new
        self.last_write_at = now - timedelta(seconds=self.first_refresh_early) if first else now


def _meaningful(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in ("lastPollTime", "signals")}


__all__ = ["StatusWrites", "refresh_offset"]
