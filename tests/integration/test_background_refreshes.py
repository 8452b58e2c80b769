"""Refresh-only status writes run in the background: a slow one never holds a poll, never lands after a transition."""

from __future__ import annotations

import asyncio
import dataclasses
import pathlib
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from stampede.actuators.kube import JSON
from stampede.actuators.policies import policy_path
from stampede.handlers import metrics
from stampede.handlers.config import OperatorConfig
from stampede.handlers.runner import PolicyRunner
from stampede.handlers.status_writes import REFRESHED
from tests.harness.server import HarnessThread
from tests.integration.test_runner import NS, T0, Source, WatchedPolicies, runner_for
from tests.support.kube import harness_with_namespace

REFRESH = 15.0


class SlowRefreshes(WatchedPolicies):
    """Holds every refresh-only status write until `release` is set; notes what lands, in order, and overlaps."""

    def __init__(self, policies: WatchedPolicies) -> None:
        super().__init__(policies.kube, namespace=policies.labels[0], name=policies.labels[1])
        self.release = threading.Event()
        self.refresh_started = threading.Event()
        self.landed: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.guard = threading.Lock()

    def write_status(self, namespace: str, name: str, *, old: JSON, new: JSON) -> JSON | None:
        refresh_only = set(new) <= set(REFRESHED) and bool(new)
        if not refresh_only:
            result = super().write_status(namespace, name, old=old, new=new)
            self.landed.append("transition")
            return result
        with self.guard:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            self.refresh_started.set()
            assert self.release.wait(timeout=30), "the test never released the refresh"
            result = super().write_status(namespace, name, old=old, new=new)
            self.landed.append("refresh")
            return result
        finally:
            with self.guard:
                self.in_flight -= 1


@pytest.fixture
def h(tmp_path: pathlib.Path) -> Iterator[HarnessThread]:
    with harness_with_namespace(tmp_path, NS, configmaps=["cfg"]) as harness:
        yield harness


def slow_runner(h: HarnessThread, name: str, source: Source) -> tuple[PolicyRunner, SlowRefreshes]:
    runner, policies = runner_for(h, name, source)
    slow = SlowRefreshes(policies)
    shared = dataclasses.replace(runner.shared, policies=slow, config=OperatorConfig(status_refresh_seconds=REFRESH))
    return PolicyRunner(shared=shared, namespace=NS, name=name), slow


def coalesced() -> float:
    return float(metrics.STATUS_REFRESHES_COALESCED._value.get())


async def test_a_slow_refresh_write_does_not_hold_the_next_polls_read_and_decision(h: HarnessThread) -> None:
    source = Source()
    runner, slow = slow_runner(h, "slow-refresh", source)
    before = coalesced()
    try:
        await runner.tick(slow.read(NS, "slow-refresh"), now=T0)  # the first write: a transition, not held
        t = T0
        for poll in range(4):  # each poll's refresh is due; the first is held by the API server, the rest wait
            t += timedelta(seconds=REFRESH)
            source.load = 1.0 + poll
            reads = source.reads
            await asyncio.wait_for(runner.tick(slow.read(NS, "slow-refresh"), now=t), timeout=20)
            assert source.reads == reads + 1, "the poll did not read Prometheus"
            assert runner.current is not None and runner.current.last_poll_time == t, "the poll did not decide"
        assert await asyncio.to_thread(slow.refresh_started.wait, 20)
        assert slow.most_in_flight == 1
        assert coalesced() - before == 2  # the 2nd refresh waited; the 3rd and 4th each replaced the one waiting
    finally:
        slow.release.set()
    await runner.writes.flush()
    assert slow.most_in_flight == 1, "more than one refresh of one policy was in flight"
    assert slow.landed == ["transition", "refresh", "refresh"]  # the held one, then only the newest
    written = slow.kube.get(policy_path(NS, "slow-refresh"))["status"]
    assert runner.current is not None
    assert written["lastPollTime"] == runner.current.wire()["lastPollTime"]
    assert written["signals"] == runner.current.wire()["signals"]


async def test_a_transition_write_is_never_overtaken_by_an_older_refresh(h: HarnessThread) -> None:
    source = Source()
    runner, slow = slow_runner(h, "ordered", source)
    try:
        await runner.tick(slow.read(NS, "ordered"), now=T0)
        await runner.tick(slow.read(NS, "ordered"), now=T0 + timedelta(seconds=REFRESH))  # a refresh, held
        assert await asyncio.to_thread(slow.refresh_started.wait, 20)
        source.load = 50.0  # a breach: the next poll's status changes meaningfully (a transition)
        t = T0 + timedelta(seconds=2 * REFRESH)
        breach = asyncio.ensure_future(runner.tick(slow.read(NS, "ordered"), now=t))
        await asyncio.sleep(0.3)
        assert slow.landed == ["transition"], "the transition was written while an older refresh was in flight"
        slow.release.set()
        await asyncio.wait_for(breach, timeout=20)
    finally:
        slow.release.set()
    await runner.writes.flush()
    assert slow.landed == ["transition", "refresh", "transition"]
    written = slow.kube.get(policy_path(NS, "ordered"))["status"]
    assert runner.current is not None
    latest = runner.current.wire()
    assert {k: written.get(k) for k in latest} == latest, "the status written is not the latest state"
