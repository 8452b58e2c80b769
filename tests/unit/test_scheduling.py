"""When a policy's next tick is, and which time a tick that woke late is decided at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from stampede.api.status import PolicyStatus
from stampede.engine.decide import Decision
from stampede.handlers.scheduling import Schedule, next_tick

from .policies import tiny_spec

ROUND = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)  # an aligned tick of every interval that divides a minute
IDLE = Decision(status=PolicyStatus())


def _scheduled_at(moment: datetime, *, wake_at: datetime | None = None) -> tuple[Schedule, datetime]:
    schedule = Schedule()
    decision = Decision(status=PolicyStatus(), wake_at=wake_at)
    schedule.plan(tiny_spec(pollInterval="15s"), decision, now=moment)
    assert schedule.scheduled is not None
    return schedule, schedule.scheduled


def test_the_next_tick_is_the_next_aligned_one_unless_the_engine_asks_for_earlier() -> None:
    spec = tiny_spec(pollInterval="15s")
    assert next_tick(spec, IDLE, now=ROUND) == ROUND + timedelta(seconds=15)
    assert next_tick(spec, IDLE, now=ROUND + timedelta(seconds=14.9)) == ROUND + timedelta(seconds=15)
    early = Decision(status=PolicyStatus(), wake_at=ROUND + timedelta(seconds=4))
    assert next_tick(spec, early, now=ROUND) == ROUND + timedelta(seconds=4)


def test_a_tick_that_wakes_seconds_late_in_its_round_is_decided_at_its_scheduled_time() -> None:
    schedule, scheduled = _scheduled_at(ROUND)
    for late in (0.0, 4.0, 6.0, 14.8):  # 6 s and more: thousands of policies waking on one tick
        assert schedule.tick_time(scheduled + timedelta(seconds=late)) == scheduled, late


def test_a_tick_that_wakes_after_its_next_aligned_tick_is_decided_at_its_actual_time() -> None:
    schedule, scheduled = _scheduled_at(ROUND)
    actual = scheduled + timedelta(seconds=15.5)
    assert schedule.tick_time(actual) == actual
    early = scheduled - timedelta(seconds=1)
    assert schedule.tick_time(early) == early, "woken well before its time: not this tick"


def test_an_early_wake_up_the_engine_asked_for_counts_only_until_the_round_ends() -> None:
    schedule, scheduled = _scheduled_at(ROUND, wake_at=ROUND + timedelta(seconds=10))
    assert scheduled == ROUND + timedelta(seconds=10)
    assert schedule.tick_time(ROUND + timedelta(seconds=14.8)) == scheduled
    past = ROUND + timedelta(seconds=15.2)
    assert schedule.tick_time(past) == past, "the next round's readings are not this tick's"
