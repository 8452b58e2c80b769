"""When a policy polls next: on the aligned tick of its interval, or earlier when the engine asks.

Policies with equal intervals poll together (sharing queries). A tick is decided at its scheduled time,
not at the moment the loop woke, so `for` windows and status refreshes count whole intervals whatever
the scheduling delay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..api.spec import PolicySpec
from ..engine import Decision

MIN_DELAY = 0.2
EARLY = timedelta(milliseconds=100)
MAX_LATE = timedelta(seconds=5)


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
        self.late = min(MAX_LATE, spec.poll_interval / 2)
        return max(MIN_DELAY, (self.scheduled - datetime.now(UTC)).total_seconds())


def next_tick(spec: PolicySpec, decision: Decision, *, now: datetime) -> datetime:
    """The next aligned tick of the interval, or earlier when the engine asked to wake for a phase, a
    rollback step or escalation."""
    interval = spec.poll_interval.total_seconds()
    stamp = now.timestamp()
    aligned = datetime.fromtimestamp((math.floor(stamp / interval) + 1) * interval, UTC)
    if decision.wake_at is not None and decision.wake_at < aligned:
        return decision.wake_at
    return aligned


__all__ = ["Schedule", "next_tick"]
