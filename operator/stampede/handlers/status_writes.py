"""Status writes, throttled: a patch only when something meaningful changed, or a refresh is due.

`lastPollTime` and the signals' values change at every poll; writing them every time would cost one
patch per policy per poll for nothing a reader needs. They are refreshed every `status_refresh_seconds`
instead, and with any meaningful change. Only what changed is patched.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..actuators.kube import KubeError
from ..api.status import PolicyStatus

log = logging.getLogger("stampede")
Patch = Callable[[dict[str, Any], dict[str, Any]], Awaitable[object]]
"""(old, new) → patches the difference onto the policy's status."""


@dataclass
class StatusWrites:
    """The last status written for one policy, and when."""

    refresh_seconds: float
    last_written: dict[str, Any] | None = None
    last_write_at: datetime | None = None

    async def write(self, status: PolicyStatus, patch: Patch, *, now: datetime, force: bool, who: str) -> None:
        new = status.wire()
        old = self.last_written or {}
        meaningful = _meaningful(new) != _meaningful(old)
        due = self.last_write_at is None or (now - self.last_write_at).total_seconds() >= self.refresh_seconds
        if not (meaningful or force or due):
            return
        try:
            await patch(old, new)
        except KubeError as error:
            log.warning("%s: status write failed: %s", who, error.message)
            self.last_written = None if error.not_found else self.last_written
            return
        self.last_written = new
        self.last_write_at = now


def _meaningful(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in ("lastPollTime", "signals")}


__all__ = ["StatusWrites"]
