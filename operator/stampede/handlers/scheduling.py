"""When a policy polls next: on the aligned tick of its interval, or earlier when the engine asks.

Policies with equal intervals poll together (sharing queries). A tick is decided at its scheduled time,
not at the moment the loop woke, so `for` windows and status refreshes count whole intervals whatever
the scheduling delay.

"Whatever the delay" up to a whole interval: with thousands of policies waking on the same aligned
tick, the last of them run seconds after it. Their readings are the round's, fetched once for all
(sources/prometheus.py pools them by round), i.e. taken near the scheduled time, so that time is the
truthful stamp. Stamped with the wake-up time instead, a breach first seen by a late tick started its
`for` window late by the delay, and detection slipped a whole round (36 % of the breached policies at
3,000 policies, docs/performance.md). Only a tick that wakes after its next aligned tick is decided at
its actual time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..api.spec import PolicySpec
from ..engine import Decision

MIN_DELAY = 0.2
EARLY = timedelta(milliseconds=100)


@dataclass(slots=True)
class Schedule:
    """The tick time one policy's loop last slept towards, and how late a wake-up may still count as it."""

    scheduled: datetime | None = None
    late: timedelta = timedelta(0)

    def tick_time(self, actual: datetime) -> datetime:
        """The scheduled time of this tick when it woke on time (scheduling delay only), else the actual time."""
        scheduled = self.scheduled
        if scheduled is not None and scheduled - EARLY <= actual <= scheduled + self.late:
            return scheduled
        return actual

    def plan(self, spec: PolicySpec, decision: Decision, *, now: datetime) -> float:
        """Schedule the next tick; returns the seconds to sleep until then."""
        self.scheduled = next_tick(spec, decision, now=now)
        # Still in the round it was scheduled in: before the aligned tick that follows it.
        gap = _aligned_after(self.scheduled, spec.poll_interval.total_seconds()) - self.scheduled
        if gap <= EARLY:  # scheduled on an aligned tick that float rounding put a hair before itself
            gap = spec.poll_interval
        self.late = gap - EARLY
        return max(MIN_DELAY, (self.scheduled - datetime.now(UTC)).total_seconds())


def next_tick(spec: PolicySpec, decision: Decision, *, now: datetime) -> datetime:
    """The next aligned tick of the interval, or earlier when the engine asked to wake for a phase, a
    rollback step or escalation."""
    aligned = _aligned_after(now, spec.poll_interval.total_seconds())
    if decision.wake_at is not None and decision.wake_at < aligned:
        return decision.wake_at
    return aligned


def _aligned_after(moment: datetime, interval: float) -> datetime:
    """The first aligned tick of the interval after `moment` (ticks at whole multiples of it since the epoch)."""
    return datetime.fromtimestamp((math.floor(moment.timestamp() / interval) + 1) * interval, UTC)


__all__ = ["Schedule", "next_tick"]
