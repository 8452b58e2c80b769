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

A refresh-only write (nothing but `lastPollTime` and `signals` differ from what was written) runs in the
background, so a poll never waits on it: with an API server slower than the policies' refreshes, polls
(and detection with them) would otherwise stall behind writes no decision depends on. At most one refresh
per policy is in flight; a refresh due while one is still in flight waits in a single slot, and a newer one
replaces it (counted in `stampede_status_refreshes_coalesced_total`), so a slow server costs stale
`lastPollTime`s, never an unbounded queue. A refresh patches only the refreshed fields, whatever else was
written meanwhile (the journal `_intend` writes from a worker thread), so it can never undo a journal entry.

Every other write (incident, journal, applied changes, conditions) is a transition: awaited, in order. Any
refresh not yet sent is dropped (the transition carries newer values of the same fields): the waiting one,
and the one in flight too while it still waits for a thread (claimed under a lock, so it is either withdrawn
or being sent, never both). A refresh already being sent is awaited first. A stale refresh can therefore
never land after a transition, the status-first journal's order of writes is the order of the ticks, and a
breaching policy's transition never waits behind thousands of other policies' queued refreshes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..actuators.kube import KubeError
from ..api.status import PolicyStatus
from . import metrics

log = logging.getLogger("stampede")
Patch = Callable[[dict[str, Any], dict[str, Any]], Awaitable[object]]
"""(old, new) → patches the difference onto the policy's status."""
SyncPatch = Callable[[dict[str, Any], dict[str, Any]], object]
"""The same, blocking (run in a worker thread)."""
REFRESHED = ("lastPollTime", "signals")
"""The fields a refresh-only write carries; anything else differing makes a write a transition."""


def refresh_offset(who: str, *, interval: float, refresh: float) -> float:
    """How much earlier than a whole period this policy's first refresh comes: whole poll intervals, stable.

    With 15 s polls and a 60 s refresh, policies fall into 4 slots (0, 15, 30, 45 s early), one per round.
    """
    if interval <= 0:
        return 0.0
    slots = max(1, int(refresh // interval))
    return (zlib.crc32(who.encode()) % slots) * interval


@dataclass
class _Refresh:
    fields: dict[str, Any]
    patch: Patch
    who: str
    stamp: datetime
    previous: datetime | None
    """The refresh clock before this refresh was sent: restored when it fails, so the next poll retries."""
    blocking: SyncPatch | None = None
    """Sends it from a thread of `pool`, which lets a transition withdraw it while it waits for a thread."""
    pool: concurrent.futures.Executor | None = None
    sending: bool = False
    """Claimed for sending (under `StatusWrites.lock`): from then on a transition waits for it to land."""
    withdrawn: bool = False


@dataclass(slots=True)
class StatusWrites:
    """The last status written for one policy, and when; the refresh in flight and the one waiting behind it."""

    refresh_seconds: float
    last_written: dict[str, Any] | None = None
    last_write_at: datetime | None = None
    first_refresh_early: float = 0.0
    """Seconds by which the first refresh after this process's first write comes early (`refresh_offset`)."""
    refreshing: asyncio.Task[None] | None = field(default=None, repr=False)
    in_flight: _Refresh | None = field(default=None, repr=False)
    queued: _Refresh | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    """Guards `last_written` (the journal is recorded in it from execute's worker thread) and the claims."""

    def resume(self, written: Mapping[str, Any], *, last_poll_time: datetime | None) -> None:
        """The status found when this process started serving the policy: what was written, and when."""
        with self.lock:
            self.last_written = dict(written)
        self.last_write_at = last_poll_time

    def journalled(self, wire: list[dict[str, Any]]) -> None:
        """The journal was written directly (before a target write): the next transition diffs against it."""
        with self.lock:
            self.last_written = {**(self.last_written or {}), "journal": wire}

    async def write(
        self,
        status: PolicyStatus,
        patch: Patch,
        *,
        now: datetime,
        force: bool,
        who: str,
        refresh_patch: SyncPatch | None = None,
        refresh_pool: concurrent.futures.Executor | None = None,
    ) -> None:
        """Write what is due: a transition awaited in order, or a refresh in the background.

        `refresh_patch` (blocking, run on `refresh_pool`) sends refreshes from their own threads; a refresh still
        waiting for a thread when a transition comes is withdrawn, so the transition never waits behind a queue
        of other policies' refreshes. Without it, refreshes go through `patch`.
        """
        new = status.wire()
        with self.lock:
            old = self.last_written or {}
        meaningful = _meaningful(new) != _meaningful(old)
        due = self.last_write_at is None or (now - self.last_write_at).total_seconds() >= self.refresh_seconds
        if not (meaningful or force or due):
            return
        first = self.last_write_at is None
        stamp = now - timedelta(seconds=self.first_refresh_early) if first else now
        if meaningful or force or not old:
            await self._transition(new, patch, stamp=stamp, who=who)
            return
        refresh = _Refresh(
            fields={k: new[k] for k in REFRESHED if k in new},
            patch=patch,
            who=who,
            stamp=stamp,
            previous=self.last_write_at,
            blocking=refresh_patch,
            pool=refresh_pool,
        )
        # Counted as written when sent: a refresh slower than the period is not sent again at every poll.
        self.last_write_at = stamp
        if self.refreshing is not None:
            if self.queued is not None:
                metrics.count_coalesced_refresh()
            self.queued = refresh
            return
        self.in_flight = refresh  # before the task first runs, so a transition in between still finds it
        self.refreshing = asyncio.ensure_future(self._refreshes(refresh))

    async def flush(self) -> None:
        """Wait until no refresh is in flight or queued (tests; a caller about to depend on the written status)."""
        while self.refreshing is not None:
            await asyncio.shield(self.refreshing)

    async def _transition(self, new: dict[str, Any], patch: Patch, *, stamp: datetime, who: str) -> None:
        # Every refresh not yet sent is dropped: this write carries newer values of the same fields.
        if self.queued is not None:
            self.queued = None
            metrics.count_coalesced_refresh()
        current = self.in_flight
        if current is not None:
            with self.lock:
                withdraw = not current.sending and not current.withdrawn
                current.withdrawn = current.withdrawn or not current.sending
            if withdraw:
                metrics.count_coalesced_refresh()
            elif current.sending:
                await self.flush()  # a refresh being sent must land before this write, never after it
        with self.lock:
            old = self.last_written or {}
        try:
            await patch(old, new)
        except KubeError as error:
            log.warning("%s: status write failed: %s", who, error.message)
            if error.not_found:
                with self.lock:
                    self.last_written = None
            return
        with self.lock:
            self.last_written = new
        self.last_write_at = stamp

    async def _refreshes(self, refresh: _Refresh) -> None:
        item: _Refresh | None = refresh
        try:
            while item is not None:
                self.in_flight = item
                await self._send(item)
                item, self.queued = self.queued, None
        finally:
            self.refreshing = self.in_flight = None

    def _claim(self, refresh: _Refresh) -> dict[str, Any] | None:
        """What the refresh patches from, once it is claimed for sending; None when it was withdrawn."""
        with self.lock:
            if refresh.withdrawn:
                return None
            refresh.sending = True
            written = self.last_written or {}
            return {k: written[k] for k in REFRESHED if k in written}

    async def _send(self, refresh: _Refresh) -> None:
        try:
            if refresh.blocking is None:
                old = self._claim(refresh)
                if old is None:
                    return
                await refresh.patch(old, refresh.fields)
            else:
                blocking = refresh.blocking

                def send() -> bool:
                    claimed = self._claim(refresh)
                    if claimed is None:
                        return False
                    blocking(claimed, refresh.fields)
                    return True

                if not await asyncio.get_running_loop().run_in_executor(refresh.pool, send):
                    return
        except KubeError as error:
            log.warning("%s: status refresh failed: %s", refresh.who, error.message)
            if error.not_found:
                with self.lock:
                    self.last_written = None
            if self.last_write_at == refresh.stamp:
                self.last_write_at = refresh.previous
            return
        except Exception:  # a background task: nobody awaits it to hear about it
            log.exception("%s: status refresh failed", refresh.who)
            if self.last_write_at == refresh.stamp:
                self.last_write_at = refresh.previous
            return
        with self.lock:
            if self.last_written is not None:
                rest = {k: v for k, v in self.last_written.items() if k not in REFRESHED}
                self.last_written = {**rest, **refresh.fields}


def _meaningful(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in REFRESHED}


__all__ = ["REFRESHED", "StatusWrites", "refresh_offset"]
