"""Held targets are watched, not polled: a revert wakes the policy and is re-applied from the watch event.

Against the emulated API server (real watches with field selectors, resourceVersions, merge patches).
The ticks are driven with explicit times; what is waited for is the watch event, never a clock.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from stampede.actuators.kube import Kube, KubeError, path
from stampede.actuators.targets import Actuators
from stampede.actuators.watching import TargetKey, TargetWatches
from stampede.api.status import State
from stampede.engine.drift import MAX_DRIFT_REVERTS
from stampede.handlers.config import OperatorConfig
from stampede.handlers.runner import PolicyRunner, Shared
from tests.harness.server import HarnessThread
from tests.integration.test_runner import SPEC, Source, WatchedPolicies
from tests.support.kube import harness_with_namespace, make_kube

pytestmark = pytest.mark.timeout(60)

NS = "watched"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def h(tmp_path: pathlib.Path) -> Iterator[HarnessThread]:
    with harness_with_namespace(tmp_path, NS, configmaps=["cfg"]) as harness:
        yield harness


@pytest.fixture
def watches(h: HarnessThread) -> Iterator[TargetWatches]:
    cache = TargetWatches(make_kube(h))
    yield cache
    cache.close()


def revert(kube: Kube) -> None:
    """What Argo CD self-heal does: put the declared value back."""
    kube.merge(path("ConfigMap", NS, "cfg"), {"data": {"F": "off"}})


async def until(what: str, predicate: Callable[[], object], *, within: float = 10.0) -> None:
    """Wait for a condition set by a watch thread (polled: the thread has no event loop to signal)."""
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {within:g}s") from None


async def test_a_tracked_object_is_listed_once_then_kept_current_by_its_watch(
    h: HarnessThread, watches: TargetWatches
) -> None:
    key = TargetKey("ConfigMap", NS, "cfg")
    changed: list[int] = []
    mark = h.log.last_id
    with pytest.raises(KubeError):
        watches.read("ConfigMap", NS, "cfg")  # not watched: never a GET behind the caller's back

    watches.track("p", {key}, lambda: changed.append(1))
    await until("first sync", lambda: changed)
    assert watches.read("ConfigMap", NS, "cfg").get("data") in ({}, None)

    revert(make_kube(h))
    await until(
        "the revert is seen", lambda: (watches.read("ConfigMap", NS, "cfg").get("data") or {}).get("F") == "off"
    )
    for _ in range(50):
        watches.read("ConfigMap", NS, "cfg")
    reads = [r for r in h.log.entries(since=mark, resource="configmaps") if r.verb in ("get", "list")]
    assert len(reads) == 1, [(r.verb, r.name) for r in reads]
    assert watches.stats()["watches"] == 1

    watches.release("p")
    assert watches.stats() == {"watches": 0, "owners": 0, "cached_objects": 0, "cached_bytes": 0}
    with pytest.raises(KubeError):
        watches.read("ConfigMap", NS, "cfg")


async def test_a_deleted_target_reads_as_not_found(h: HarnessThread, watches: TargetWatches) -> None:
    watches.track("p", {TargetKey("ConfigMap", NS, "cfg")}, lambda: None)
    await until("first sync", lambda: watches.stats()["cached_objects"] == 1)
    make_kube(h).request("DELETE", path("ConfigMap", NS, "cfg"))
    await until("deletion seen", lambda: watches.stats()["cached_objects"] == 0)
    with pytest.raises(KubeError) as error:
        watches.read("ConfigMap", NS, "cfg")
    assert error.value.not_found


async def test_a_revert_during_an_incident_is_reapplied_from_the_watch_event_and_ticks_make_no_gets(
    h: HarnessThread, watches: TargetWatches
) -> None:
    kube = make_kube(h)
    source = Source()
    h.apply(
        [
            {
                "apiVersion": "stampede.aurum.io/v1alpha1",
                "kind": "StampedePolicy",
                "metadata": {"name": "p", "namespace": NS},
                "spec": SPEC,
            }
        ]
    )
    policies = WatchedPolicies(kube, namespace=NS, name="p")
    shared = Shared(
        config=OperatorConfig(),
        actuators=Actuators(kube, max_replicas=10, journal_namespace=NS, reader=watches),
        policies=policies,
        source=source,  # type: ignore[arg-type]
        emit=lambda *_: None,
        watches=watches,
    )
    runner = PolicyRunner(shared=shared, namespace=NS, name="p")
    source.load = 50.0
    t = T0
    while not (runner.current and runner.current.applied):
        await runner.tick(policies.read(NS, "p"), now=t)
        t += timedelta(seconds=15)
        assert t < T0 + timedelta(minutes=5), "the incident never opened"
    assert runner.watched == {TargetKey("ConfigMap", NS, "cfg")}
    await until("the watch synced", lambda: watches.stats()["cached_objects"] == 1)

    mark = h.log.last_id
    for _ in range(3):  # incident ticks: the drift check reads the cache
        await runner.tick(policies.read(NS, "p"), now=t)
        t += timedelta(seconds=15)
    gets = h.log.entries(since=mark, resource="configmaps", verb="get")
    assert gets == [], "a tick read the target for drift"

    for reverts in range(1, MAX_DRIFT_REVERTS):
        runner.drifted.clear()
        revert(kube)
        await until(f"revert {reverts} wakes the policy", runner.drifted.is_set)
        # The wake may come from the revert's event before the cache holds it; the loop runs again on the next.
        while runner.current is not None and runner.current.applied[0].reverts < reverts:
            await until("an event", runner.drifted.is_set)
            await runner.correct_drift(now=t)
        assert kube.get(path("ConfigMap", NS, "cfg"))["data"]["F"] == "on"
        assert runner.current is not None and runner.current.last_poll_time != t, "a drift correction is no poll"
    written = policies.read(NS, "p")["status"]
    assert written["applied"][0]["reverts"] == MAX_DRIFT_REVERTS - 1, "the re-apply was not written at once"

    runner.drifted.clear()
    revert(kube)
    while runner.watched:  # the last revert is given up on: the watch stops
        await until("an event", runner.drifted.is_set)
        await runner.correct_drift(now=t)
    assert runner.current is not None and runner.current.state == State.INCIDENT
    assert watches.stats()["watches"] == 0
    assert kube.get(path("ConfigMap", NS, "cfg"))["data"]["F"] == "off"


async def test_a_policy_that_holds_nothing_starts_without_reading_its_targets(h: HarnessThread) -> None:
    kube = make_kube(h)
    h.apply(
        [
            {
                "apiVersion": "stampede.aurum.io/v1alpha1",
                "kind": "StampedePolicy",
                "metadata": {"name": "fresh", "namespace": NS},
                "spec": SPEC,
            }
        ]
    )
    policies = WatchedPolicies(kube, namespace=NS, name="fresh")
    shared = Shared(
        config=OperatorConfig(),
        actuators=Actuators(kube, max_replicas=10, journal_namespace=NS),
        policies=policies,
        source=Source(),  # type: ignore[arg-type]
        emit=lambda *_: None,
    )
    mark = h.log.last_id
    await PolicyRunner(shared=shared, namespace=NS, name="fresh").tick(policies.read(NS, "fresh"), now=T0)
    assert not h.log.entries(since=mark, resource="configmaps"), "adoption read a target of a policy holding none"

    # Even with the rollback finalizer, a restart reads only the targets its status.journal names (writes that
    # were under way when the operator stopped; tests/integration/test_runner.py): here none.
    policies.set_finalizer(NS, "fresh", present=True)
    mark = h.log.last_id
    await PolicyRunner(shared=shared, namespace=NS, name="fresh").tick(policies.read(NS, "fresh"), now=T0)
    assert not h.log.entries(since=mark, resource="configmaps", verb="get")
