"""Status writes at scale: a restart rewrites no unchanged status, and refreshes spread over the poll rounds."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from stampede.api.status import PolicyStatus, State
from stampede.handlers import metrics
from stampede.handlers.status_writes import StatusWrites, refresh_offset

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Recorder:
    def __init__(self) -> None:
        self.writes: list[dict[str, Any]] = []

    async def __call__(self, old: dict[str, Any], new: dict[str, Any]) -> object:
        self.writes.append(new)
        return None


def idle(at: datetime, value: str = "0.9") -> PolicyStatus:
    return PolicyStatus.model_validate(
        {"state": State.IDLE.value, "lastPollTime": at.isoformat(), "signals": [{"name": "hitRate", "value": value}]}
    )


def poll(writes: StatusWrites, recorder: Recorder, at: datetime) -> None:
    async def write_and_settle() -> None:
        await writes.write(idle(at, value=str(at.second)), recorder, now=at, force=False, who="ns/p")
        await writes.flush()  # a refresh runs in the background

    asyncio.run(write_and_settle())


def test_the_first_refresh_comes_early_by_the_offset_and_later_ones_a_whole_period_apart() -> None:
    writes, recorder = StatusWrites(refresh_seconds=60, first_refresh_early=30), Recorder()
    times = [T0 + timedelta(seconds=15 * k) for k in range(14)]
    for at in times:
        poll(writes, recorder, at)
    written = [w["lastPollTime"] for w in recorder.writes]
    expected = [T0, T0 + timedelta(seconds=30), T0 + timedelta(seconds=90), T0 + timedelta(seconds=150)]
    assert written == [idle(t).wire()["lastPollTime"] for t in expected]


def test_a_restart_resumes_the_refresh_clock_from_the_last_write_and_rewrites_no_unchanged_status() -> None:
    last = T0 - timedelta(seconds=20)
    writes, recorder = StatusWrites(refresh_seconds=60, first_refresh_early=45), Recorder()
    writes.resume(idle(last).wire(), last_poll_time=last)
    poll(writes, recorder, T0)  # unchanged apart from the signal's value: not written
    poll(writes, recorder, T0 + timedelta(seconds=30))
    assert recorder.writes == []
    poll(writes, recorder, T0 + timedelta(seconds=45))  # 65 s after the last write: the refresh, not early
    assert len(recorder.writes) == 1


def test_a_restart_writes_a_changed_status_at_once() -> None:
    writes, recorder = StatusWrites(refresh_seconds=60), Recorder()
    writes.resume(idle(T0).wire(), last_poll_time=T0)
    incident = PolicyStatus.model_validate({"state": State.ROLLING_BACK.value, "lastPollTime": T0.isoformat()})
    asyncio.run(writes.write(incident, recorder, now=T0 + timedelta(seconds=1), force=False, who="ns/p"))
    assert len(recorder.writes) == 1


def test_refresh_offsets_are_whole_poll_intervals_spread_evenly_over_one_refresh_period() -> None:
    offsets = Counter(refresh_offset(f"bench-{i % 50}/p-{i}", interval=15, refresh=60) for i in range(4000))
    assert set(offsets) == {0.0, 15.0, 30.0, 45.0}
    assert min(offsets.values()) > 800  # 1000 each on average; crc32 spreads names evenly
    assert refresh_offset("ns/p", interval=15, refresh=60) == refresh_offset("ns/p", interval=15, refresh=60)
    assert refresh_offset("ns/p", interval=120, refresh=60) == 0.0


def test_a_refresh_patches_only_the_refreshed_fields_so_a_journal_recorded_meanwhile_is_never_undone() -> None:
    class Patches(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.patches: list[tuple[dict[str, Any], dict[str, Any]]] = []

        async def __call__(self, old: dict[str, Any], new: dict[str, Any]) -> object:
            self.patches.append((old, new))
            return await super().__call__(old, new)

    writes, recorder = StatusWrites(refresh_seconds=60), Patches()
    writes.resume(idle(T0).wire(), last_poll_time=T0)
    journal = [{"action": "flag", "kind": "ConfigMap", "name": "cfg"}]

    async def refresh_after_a_journal() -> None:
        later = T0 + timedelta(seconds=60)
        await writes.write(idle(later, value="0.5"), recorder, now=later, force=False, who="ns/p")
        writes.journalled(journal)  # execute's worker thread, while the refresh is in flight
        await writes.flush()

    asyncio.run(refresh_after_a_journal())
    [(old, new)] = recorder.patches
    assert set(old) <= {"lastPollTime", "signals"} and set(new) == {"lastPollTime", "signals"}
    assert writes.last_written is not None and writes.last_written["journal"] == journal
    assert writes.last_written["signals"] == [{"name": "hitRate", "value": "0.5"}]


def test_a_transition_withdraws_a_refresh_still_waiting_for_a_thread_and_does_not_wait_behind_it() -> None:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    busy = threading.Event()
    pool.submit(busy.wait, 30)  # the refresh threads are all taken (other policies' refreshes)
    refreshed: list[dict[str, Any]] = []
    writes, recorder = StatusWrites(refresh_seconds=60), Recorder()
    writes.resume(idle(T0).wire(), last_poll_time=T0)
    before = metrics.STATUS_REFRESHES_COALESCED._value.get()
    incident = PolicyStatus.model_validate(
        {"state": State.ROLLING_BACK.value, "lastPollTime": (T0 + timedelta(seconds=75)).isoformat()}
    )

    async def refresh_then_transition() -> None:
        later = T0 + timedelta(seconds=60)
        await writes.write(
            idle(later, value="0.5"),
            recorder,
            now=later,
            force=False,
            who="ns/p",
            refresh_patch=lambda old, new: refreshed.append(new),
            refresh_pool=pool,
        )
        await asyncio.sleep(0.05)  # the refresh is now waiting for the pool's one thread
        then = T0 + timedelta(seconds=75)
        await asyncio.wait_for(writes.write(incident, recorder, now=then, force=False, who="ns/p"), timeout=10)
        assert recorder.writes == [incident.wire()], "the transition waited for the queued refresh"
        busy.set()
        await writes.flush()

    try:
        asyncio.run(refresh_then_transition())
    finally:
        busy.set()
        pool.shutdown(wait=True)
    assert refreshed == [], "a withdrawn refresh was sent (and would have landed after the transition)"
    assert metrics.STATUS_REFRESHES_COALESCED._value.get() - before == 1
    assert writes.last_written == incident.wire()
