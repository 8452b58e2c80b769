"""The poll loop against the emulated API server, with readings handed in: order of its steps, not timing.

Each tick is driven with an explicit `now`, so a whole incident runs in well under a second; the
Prometheus source is a stand-in that records whether it was asked, because what is tested here is
when the runner reads, writes and reports, not how a query is made (tests/integration/test_prometheus_source.py).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stampede.actuators.journals import journal_name
from stampede.actuators.kube import JSON, Kube, KubeError, path
from stampede.actuators.policies import FINALIZER, Policies, policy_path
from stampede.actuators.targets import APPLIED_BY, Actuators
from stampede.handlers import metrics
from stampede.handlers.config import OperatorConfig
from stampede.handlers.runner import PolicyRunner, Shared
from stampede.sources.prometheus import Endpoint, Reading
from tests.harness.server import HarnessThread
from tests.support.kube import harness_with_namespace, make_kube

pytestmark = pytest.mark.timeout(60)

NS = "runner"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SPEC: JSON = {
    "pollInterval": "15s",
    "prometheus": {"url": "http://prometheus.invalid:9090"},
    "signals": [{"name": "load", "query": "load"}],
    "severities": [{"level": "P2", "any": ["load > 10"], "for": "30s"}],
    "recovery": {"all": ["load < 5"], "for": "30s"},
    "phases": [
        {
            "name": "first",
            "after": "0s",
            "actions": [{"name": "flag", "configMap": {"name": "cfg", "data": {"F": "on"}}}],
        }
    ],
    "rollback": {"stepDelay": "0s"},
}


class Source:
    """Hands out the load the test sets; counts how often it was asked."""

    def __init__(self) -> None:
        self.load = 1.0
        self.reads = 0

    async def read(
        self,
        endpoint: Endpoint,
        queries: Mapping[str, str],
        *,
        timeout: float,  # noqa: ASYNC109 (the signature of PrometheusSource.read)
        round_key: object,
    ) -> dict[str, Reading]:
        self.reads += 1
        return {name: Reading(self.load) for name in queries}

    def close(self) -> None:
        pass


class WatchedPolicies(Policies):
    """Records, at each status write and finalizer release, what the metrics said at that moment."""

    def __init__(self, kube: Kube, *, namespace: str, name: str) -> None:
        super().__init__(kube)
        self.labels = (namespace, name)
        self.seen: list[tuple[str, str, float]] = []

    def _active(self) -> float:
        return metrics.INCIDENT_ACTIVE.labels(*self.labels)._value.get()

    def write_status(self, namespace: str, name: str, *, old: JSON, new: JSON) -> JSON | None:
        self.seen.append(("status", str(new.get("state")), self._active()))
        return super().write_status(namespace, name, old=old, new=new)

    def set_finalizer(self, namespace: str, name: str, *, present: bool) -> None:
        if not present:
            self.seen.append(("release", "", self._active()))
        super().set_finalizer(namespace, name, present=present)


@pytest.fixture
def h(tmp_path: pathlib.Path) -> Iterator[HarnessThread]:
    with harness_with_namespace(tmp_path, NS, configmaps=["cfg"]) as harness:
        yield harness


def runner_for(
    h: HarnessThread, name: str, source: Source, *, spec: JSON | None = None
) -> tuple[PolicyRunner, WatchedPolicies]:
    kube = make_kube(h)
    h.apply(
        [
            {
                "apiVersion": "stampede.aurum.io/v1alpha1",
                "kind": "StampedePolicy",
                "metadata": {"name": name, "namespace": NS},
                "spec": spec or SPEC,
            }
        ]
    )
    policies = WatchedPolicies(kube, namespace=NS, name=name)
    emitted: list[tuple[str, str]] = []

    def emit(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        emitted.append((reason, message))

    shared = Shared(
        config=OperatorConfig(),
        actuators=Actuators(kube, max_replicas=10, journal_namespace=NS),
        policies=policies,
        source=source,  # type: ignore[arg-type]
        emit=emit,
    )
    return PolicyRunner(shared=shared, namespace=NS, name=name), policies


async def test_a_policy_being_deleted_is_not_polled_at_all(h: HarnessThread) -> None:
    source = Source()
    runner, policies = runner_for(h, "leaving", source)
    body = policies.read(NS, "leaving")
    body["metadata"]["deletionTimestamp"] = "2025-01-01T12:00:00Z"

    await runner.tick(body, now=T0)

    assert source.reads == 0, "Prometheus was queried for a policy being deleted"
    assert policies.seen == []


async def test_metrics_are_updated_before_the_status_is_written_and_the_finalizer_released(h: HarnessThread) -> None:
    source = Source()
    runner, policies = runner_for(h, "metered", source)
    source.load = 50.0
    t = T0
    states = []
    for _ in range(12):  # breach long enough to open, then calm long enough to recover and close
        if t >= T0 + timedelta(seconds=60):
            source.load = 1.0
        await runner.tick(policies.read(NS, "metered"), now=t)
        states.append(runner.current.state if runner.current else None)
        t += timedelta(seconds=15)

    assert "Incident" in states and states[-1] == "Idle", states
    assert FINALIZER not in (policies.read(NS, "metered")["metadata"].get("finalizers") or [])
    assert ("release", "", 0.0) in policies.seen
    for what, state, active in policies.seen:
        if what == "status":
            assert active == (0.0 if state == "Idle" else 1.0), policies.seen
        else:
            assert active == 0.0, "the finalizer went while the metrics still showed an incident"


# -- the journal: originals in status before the target write; a restart reads only journalled targets --


def _cm(kube: Kube) -> JSON:
    return kube.get(path("ConfigMap", NS, "cfg"))


async def _open_incident(runner: PolicyRunner, policies: WatchedPolicies, name: str, source: Source) -> datetime:
    source.load = 50.0
    t = T0
    while runner.current is None or runner.current.state != "Incident":
        await runner.tick(policies.read(NS, name), now=t)
        t += timedelta(seconds=15)
        assert t < T0 + timedelta(minutes=5), "no incident opened"
    return t


async def test_a_change_is_journalled_in_status_before_its_target_write_and_the_journal_cleared_after(
    h: HarnessThread,
) -> None:
    source = Source()
    runner, policies = runner_for(h, "journalled", source)
    mark = h.log.last_id

    await _open_incident(runner, policies, "journalled", source)

    writes = [r for r in h.log.entries(since=mark, verb="patch") if r.status is not None and r.status < 300]
    order = [(r.resource, r.subresource) for r in writes]
    first_target = order.index(("configmaps", None))
    assert ("stampedepolicies", "status") in order[:first_target], order
    status = policies.read(NS, "journalled")["status"]
    assert status.get("journal") in (None, []), "the tick's status write clears the journal"
    assert [c["action"] for c in status["applied"]] == ["flag"]
    assert status["applied"][0]["absent"] == ["F"], "an absent key is named, never a null inside an array"
    assert _cm(make_kube(h))["metadata"]["annotations"] == {APPLIED_BY: "journalled"}


def _restarted(h: HarnessThread, name: str, source: Source) -> tuple[PolicyRunner, WatchedPolicies]:
    """A new runner for an existing policy: what a restarted operator starts with."""
    kube = make_kube(h)
    policies = WatchedPolicies(kube, namespace=NS, name=name)
    shared = Shared(
        config=OperatorConfig(),
        actuators=Actuators(kube, max_replicas=10, journal_namespace=NS),
        policies=policies,
        source=source,  # type: ignore[arg-type]
        emit=lambda *_: None,
    )
    return PolicyRunner(shared=shared, namespace=NS, name=name), policies


def _journal_entry(name: str = "cfg") -> JSON:
    return {
        "action": "flag",
        "kind": "ConfigMap",
        "name": name,
        "incident": "20250101-115500",
        "appliedAt": "2025-01-01T11:55:00Z",
        "original": {},
        "absent": ["F"],
        "applied": {"F": "on"},
    }


async def test_a_restart_holds_a_journalled_change_that_landed_and_rolls_it_back_exactly(h: HarnessThread) -> None:
    kube = make_kube(h)
    source = Source()
    _, policies = runner_for(h, "crashed", source)
    # The operator died after the target write, before the status write that records it.
    policies.write_journal(NS, "crashed", [_journal_entry()])
    kube.merge(
        path("ConfigMap", NS, "cfg"), {"metadata": {"annotations": {APPLIED_BY: "crashed"}}, "data": {"F": "on"}}
    )
    runner, policies = _restarted(h, "crashed", source)

    await runner.tick(policies.read(NS, "crashed"), now=T0)

    assert runner.current is not None
    assert runner.current.state == "RollingBack", "held under a made-up, already recovered incident"
    t = T0
    while runner.current.state != "Idle":
        t += timedelta(seconds=15)
        await runner.tick(policies.read(NS, "crashed"), now=t)
        assert t < T0 + timedelta(minutes=5)
    assert _cm(kube).get("data") in (None, {}), "the key that did not exist is gone again"
    assert (_cm(kube)["metadata"].get("annotations") or {}) == {}


async def test_a_restart_drops_a_journalled_change_that_never_landed(h: HarnessThread) -> None:
    source = Source()
    _, policies = runner_for(h, "unlanded", source)
    policies.write_journal(NS, "unlanded", [_journal_entry()])  # died before the target write
    runner, policies = _restarted(h, "unlanded", source)
    mark = h.log.last_id

    await runner.tick(policies.read(NS, "unlanded"), now=T0)

    assert runner.current is not None
    assert (runner.current.state, runner.current.applied, runner.current.journal) == ("Idle", [], [])
    assert [r.verb for r in h.log.entries(since=mark, resource="configmaps")] == ["get"]
    assert policies.read(NS, "unlanded")["status"].get("journal") in (None, [])


async def test_a_restart_without_a_journal_reads_no_target(h: HarnessThread) -> None:
    source = Source()
    _, policies = runner_for(h, "calm", source)
    runner, policies = _restarted(h, "calm", source)
    mark = h.log.last_id

    await runner.tick(policies.read(NS, "calm"), now=T0)

    read_kinds = {r.resource for r in h.log.entries(since=mark, verb="get")}
    assert read_kinds <= {"stampedepolicies"}, read_kinds


async def test_a_status_entry_naming_another_namespace_never_reaches_it(h: HarnessThread) -> None:
    kube = make_kube(h)
    h.apply(
        [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kube-system"}},
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "coredns", "namespace": "kube-system"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                    "template": {
                        "metadata": {"labels": {"k8s-app": "kube-dns"}},
                        "spec": {"containers": [{"name": "coredns", "image": "coredns"}]},
                    },
                },
            },
        ]
    )
    source = Source()
    _, policies = runner_for(h, "hostile", source)
    planted = {
        "action": "flag",
        "kind": "Deployment",
        "name": "../../kube-system/deployments/coredns",
        "incident": "20250101-115500",
        "appliedAt": "2025-01-01T11:55:00Z",
        "original": {"replicas": "0"},
        "applied": {"replicas": "2"},
    }
    hostile = {"status": {"state": "RollingBack", "applied": [planted], "journal": [planted]}}
    # The CRD's status schema refuses the name (the same pattern as the spec's) ...
    with pytest.raises(KubeError, match="should match"):
        kube.merge(policy_path(NS, "hostile", "status"), hostile)
    # ... so it is planted as on a cluster whose CRD has no schema, while the operator is down, by
    # someone who may write stampedepolicies/status: the operator itself must refuse it too.
    h.store.strictness = dataclasses.replace(h.store.strictness, custom_resource_schemas=False)
    kube.merge(policy_path(NS, "hostile", "status"), hostile)
    runner, policies = _restarted(h, "hostile", source)
    mark = h.log.last_id

    t = T0
    for _ in range(4):
        await runner.tick(policies.read(NS, "hostile"), now=t)
        t += timedelta(seconds=15)
    await runner.roll_back_all(policies.read(NS, "hostile"), now=t)

    assert [r for r in h.log.entries(since=mark) if r.namespace == "kube-system"] == []
    assert kube.get(path("Deployment", "kube-system", "coredns"))["spec"]["replicas"] == 2


async def test_the_entry_of_a_failed_apply_stays_journalled_until_the_next_tick_has_looked(h: HarnessThread) -> None:
    source = Source()
    runner, policies = runner_for(h, "flaky", source)
    h.faults.add(methods=["PATCH"], resources=["configmaps"], namespace=NS, status=500, times=1)

    t = await _open_incident(runner, policies, "flaky", source)

    stored = policies.read(NS, "flaky")["status"]
    assert [e["action"] for e in stored.get("journal") or []] == ["flag"], "kept: the write may have landed"
    assert not stored.get("applied")
    await runner.tick(policies.read(NS, "flaky"), now=t)
    stored = policies.read(NS, "flaky")["status"]
    assert stored.get("journal") in (None, [])
    (change,) = stored["applied"]
    assert (change["original"], change["absent"]) == ({}, ["F"]), "the true originals, not the values set"


async def test_credentials_for_the_operators_default_http_prometheus_make_the_spec_invalid_and_nothing_is_read(
    h: HarnessThread,
) -> None:
    source = Source()
    runner, policies = runner_for(h, "cleartext", source)
    runner.shared.config = OperatorConfig(prometheus_url="http://prometheus.default:9090")
    body = policies.read(NS, "cleartext")
    body["spec"] = {**SPEC, "prometheus": {"bearerTokenSecretRef": {"name": "token", "key": "token"}}}

    await runner.tick(body, now=T0)

    ready = next(c for c in policies.read(NS, "cleartext")["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.prometheus.bearerTokenSecretRef: credentials are sent over https only" in ready["message"]
    assert "http://prometheus.default:9090" in ready["message"]
    assert source.reads == 0


async def test_an_apply_whose_restart_failed_is_held_next_tick_with_its_true_originals_and_restarted(
    h: HarnessThread,
) -> None:
    h.apply(
        [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "api", "namespace": NS},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "api"}},
                    "template": {
                        "metadata": {"labels": {"app": "api"}},
                        "spec": {"containers": [{"name": "api", "image": "api"}]},
                    },
                },
            }
        ]
    )
    action = {
        "name": "flag",
        "configMap": {"name": "cfg", "data": {"F": "on"}, "restart": [{"kind": "Deployment", "name": "api"}]},
    }
    spec = {**SPEC, "phases": [{"name": "first", "after": "0s", "actions": [action]}]}
    source = Source()
    runner, policies = runner_for(h, "restarting", source, spec=spec)
    kube = make_kube(h)
    h.faults.add(methods=["PATCH"], resources=["deployments"], namespace=NS, status=500, times=1)

    t = await _open_incident(runner, policies, "restarting", source)

    stored = policies.read(NS, "restarting")["status"]
    assert not stored.get("applied"), "an apply whose restart failed is not held"
    assert [e["action"] for e in stored.get("journal") or []] == ["flag"]
    assert _cm(kube)["data"] == {"F": "on"}, "the ConfigMap write itself landed"
    await runner.tick(policies.read(NS, "restarting"), now=t)
    stored = policies.read(NS, "restarting")["status"]
    assert stored.get("journal") in (None, [])
    (change,) = stored["applied"]
    assert (change["original"], change["absent"]) == ({}, ["F"]), "the true originals, not the values set"
    template = kube.get(path("Deployment", NS, "api"))["spec"]["template"]
    assert "kubectl.kubernetes.io/restartedAt" in (template["metadata"].get("annotations") or {})


async def test_a_journal_secret_without_a_status_entry_goes_with_the_policy(h: HarnessThread) -> None:
    source = Source()
    runner, policies = runner_for(h, "crashed", source)
    journals = runner.shared.actuators.journals
    # The operator stopped between keeping the originals and recording their digests in status.
    journals.write(namespace=NS, policy="crashed", action="flag", configmap="cfg", originals={"F": "off"})
    secret = path("Secret", NS, journal_name(namespace=NS, policy="crashed", action="flag"))
    assert runner.shared.actuators.kube.get(secret)["data"] == {"F": "b2Zm"}

    await runner.roll_back_all(policies.read(NS, "crashed"), now=T0)

    with pytest.raises(KubeError) as gone:
        runner.shared.actuators.kube.get(secret)
    assert gone.value.not_found


async def test_a_journal_secret_no_status_entry_refers_to_goes_when_the_incident_closes(h: HarnessThread) -> None:
    source = Source()
    runner, policies = runner_for(h, "swept", source)
    # Left by an operator that stopped between keeping the originals and recording their digests.
    runner.shared.actuators.journals.write(
        namespace=NS, policy="swept", action="flag", configmap="cfg", originals={"F": "stale"}
    )
    secret = path("Secret", NS, journal_name(namespace=NS, policy="swept", action="flag"))
    source.load = 50.0
    t = T0
    states = []
    for _ in range(12):  # breach long enough to open, then calm long enough to recover and close
        if t >= T0 + timedelta(seconds=60):
            source.load = 1.0
        await runner.tick(policies.read(NS, "swept"), now=t)
        states.append(runner.current.state if runner.current else None)
        if states[-1] == "Incident":
            assert runner.shared.actuators.kube.get(secret), "kept while the incident may still need it"
        t += timedelta(seconds=15)

    assert "Incident" in states and states[-1] == "Idle", states
    assert _cm(runner.shared.actuators.kube).get("data") in (None, {})
    with pytest.raises(KubeError) as gone:
        runner.shared.actuators.kube.get(secret)
    assert gone.value.not_found


class DyingPolicies(WatchedPolicies):
    """The operator is killed after its journal writes, before the tick's status write lands."""

    def write_status(self, namespace: str, name: str, *, old: JSON, new: JSON) -> JSON | None:
        raise KubeError(0, "killed before the status write")


async def test_a_change_adopted_at_restart_stays_journalled_until_a_status_write_records_it(h: HarnessThread) -> None:
    """Killed twice: after a target write, then after the restart adopted it and journalled the next action."""
    kube = make_kube(h)
    h.apply([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg2", "namespace": NS}, "data": {}}])
    second = {
        "name": "second",
        "after": "1m",
        "actions": [{"name": "flag2", "configMap": {"name": "cfg2", "data": {"G": "on"}}}],
    }
    spec = {**SPEC, "phases": [*SPEC["phases"], second]}
    source = Source()
    runner, policies = runner_for(h, "twice", source, spec=spec)
    t = await _open_incident(runner, policies, "twice", source)
    # The first death: `flag` reached its target, the status write recording it did not.
    (record,) = policies.read(NS, "twice")["status"]["applied"]
    kube.merge(policy_path(NS, "twice", "status"), {"status": {"applied": None, "journal": [record]}})

    restarted, _ = _restarted(h, "twice", source)
    dying = DyingPolicies(kube, namespace=NS, name="twice")
    restarted.shared.policies = dying
    t += timedelta(minutes=1)  # the second phase is due: its action is journalled and written
    await restarted.tick(dying.read(NS, "twice"), now=t)
    assert _cm(kube)["data"] == {"F": "on"} and kube.get(path("ConfigMap", NS, "cfg2"))["data"] == {"G": "on"}

    # The second death, before the tick's status write. The stored status must still account for `flag`.
    stored = policies.read(NS, "twice")["status"]
    held = {c["action"] for c in [*(stored.get("applied") or []), *(stored.get("journal") or [])]}
    assert held == {"flag", "flag2"}, stored
    third, policies = _restarted(h, "twice", source)
    source.load = 1.0
    while third.current is None or third.current.state != "Idle":
        t += timedelta(seconds=15)
        await third.tick(policies.read(NS, "twice"), now=t)
        assert t < T0 + timedelta(minutes=15), third.current
    assert _cm(kube).get("data") in (None, {}), "flag rolled back to its true original (no key)"
    assert kube.get(path("ConfigMap", NS, "cfg2")).get("data") in (None, {})
