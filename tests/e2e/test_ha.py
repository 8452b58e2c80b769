"""Two replicas as the Deployment runs them: one acts, a crash of the active one hands over the open incident.

The replicas are `stampede run` with the rendered Deployment's args and environment (tests/e2e/deployed.py),
so kopf peering is on, as in a cluster. The only setting changed is the documented peering lifetime
(STAMPEDE_PEERING_LIFETIME), short here so that a takeover after SIGKILL takes seconds.

This module has its own stack: the session's standalone operator would act on every namespace.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e import policies
from tests.e2e.conftest import Case
from tests.e2e.deployed import Replica, peering_crds, replica
from tests.e2e.stack import Stack

LIFETIME = 5
POLL = 1.0
PEERINGS = ("kopf.dev", "v1", "clusterkopfpeerings")
ACTIONS = ("api-config", "scale-api", "cache-lazy", "warm-cache")


@pytest.fixture(scope="module")
def ha_stack() -> Iterator[Stack]:
    with Stack(start_operator=False) as stack:
        stack.harness.apply(peering_crds())
        yield stack


class Pair:
    """Two replicas of the Deployment; everything they do is stopped and forgotten after the test."""

    def __init__(self, stack: Stack, name: str) -> None:
        assert stack.prometheus is not None
        self.stack = stack
        env = {"STAMPEDE_PROMETHEUS_URL": stack.prometheus.url, "STAMPEDE_PEERING_LIFETIME": str(LIFETIME)}
        self.replicas = [
            replica(overlay="cluster", kubeconfig=stack.harness.kubeconfig, log_dir=stack.dir / name / r, env=env)
            for r in ("a", "b")
        ]
        stack.operator = self.replicas[0].operator  # wait_for prints this log tail on a timeout

    def start_together(self) -> None:
        for r in self.replicas:
            r.operator.start()

    def elected(self) -> tuple[Replica, Replica]:
        """Wait until one replica is active and the other stands by, both ready; (active, standby)."""

        def check() -> tuple[Replica, Replica] | None:
            states = [r.peering_state() for r in self.replicas]
            if sorted(map(str, states)) == ["active", "standby"] and all(r.ready() for r in self.replicas):
                a, b = self.replicas
                return (a, b) if states[0] == "active" else (b, a)
            return None

        found: tuple[Replica, Replica] = self.stack.wait_for("one active, one standby", check, timeout=60)
        return found

    def stop(self) -> None:
        for r in self.replicas:
            r.operator.stop()

    def logs(self) -> str:
        return "\n".join(r.operator.logs() for r in self.replicas)


@pytest.fixture
def pair(ha_stack: Stack, request: pytest.FixtureRequest) -> Iterator[Pair]:
    # A fresh start each time: no peering object (the replicas must create it), no heartbeats left over.
    items = ha_stack.custom.list_cluster_custom_object(*PEERINGS)["items"]
    for item in items:
        ha_stack.custom.delete_cluster_custom_object(*PEERINGS, item["metadata"]["name"])
    running = Pair(ha_stack, request.node.name)
    yield running
    running.stop()


def actions_applied(r: Replica) -> float:
    total = 0.0
    for line in r.metrics().splitlines():
        if line.startswith("stampede_actions_total{") and 'result="applied"' in line:
            total += float(line.rpartition(" ")[2])
    return total


def test_two_replicas_started_together_create_the_peering_object_elect_one_and_it_alone_acts(
    ha_stack: Stack, pair: Pair
) -> None:
    pair.start_together()
    active, standby = pair.elected()

    # Both heartbeat into the object they created. Waited for, not read once: under load a heartbeat can come
    # later than the peer's lifetime, and kopf then drops that peer's entry until its next heartbeat.
    def heartbeats() -> bool:
        peering = ha_stack.custom.get_cluster_custom_object(*PEERINGS, "stampede-operator")
        return len(peering.get("status") or {}) == 2

    ha_stack.wait_for("both replicas' heartbeats in the peering object", heartbeats, timeout=60)

    case = Case(ha_stack, "ha-one-acts", prefix="ha")
    before = case.snapshot()
    case.create_ready("one-acts")
    mark = ha_stack.harness.log.last_id
    case.set(hit_rate=0.2)
    case.wait_status("one-acts", "every action applied", lambda s: len(s.get("applied") or []) == len(ACTIONS))

    # Killing the standby mid-incident changes nothing: the active replica carries on alone.
    standby.operator.kill()
    assert active.peering_state() == "active"
    case.set(hit_rate=0.95)
    final = case.wait_status("one-acts", "incident closed", lambda s: s.get("state") == "Idle" and s.get("history"))

    assert len(final["history"]) == 1
    for action in ACTIONS:
        applied = [e for e in case.events("one-acts", "ActionApplied") if action in e.message]
        assert len(applied) == 1, f"{action} applied {len(applied)} times"
    assert len(case.jobs("one-acts")) == 1
    creates = ha_stack.harness.log.entries(since=mark, namespace=case.ns, verb="create", resource="jobs")
    assert len(creates) == 1, "the standby never tried to create the Job"
    assert actions_applied(active) == len(ACTIONS)
    after = case.snapshot()
    after.pop("Jobs")
    before.pop("Jobs")
    assert after == before, "rollback restored everything exactly"
    assert "Traceback" not in pair.logs()


def test_sigkill_of_the_active_replica_hands_the_open_incident_to_the_standby_within_a_lifetime(
    ha_stack: Stack, pair: Pair
) -> None:
    pair.start_together()
    active, standby = pair.elected()
    case = Case(ha_stack, "ha-takeover", prefix="ha")
    before = case.snapshot()
    case.create_ready("takeover", phases=[policies.phase_one(), policies.phase_two(after="4s")])
    case.set(hit_rate=0.2)
    opened = case.wait_status("takeover", "phase one applied", lambda s: len(s.get("applied") or []) == 2)
    incident_id = opened["incident"]["id"]
    assert actions_applied(standby) == 0

    active.operator.kill()
    killed_at = time.monotonic()
    mark = ha_stack.harness.log.last_id
    # Everything written from now on is the standby's: the active one is dead.
    ha_stack.wait_for(
        "the standby's first write to the policy",
        lambda: ha_stack.harness.log.entries(since=mark, namespace=case.ns, verb="patch", resource="stampedepolicies"),
        timeout=LIFETIME + POLL + 10,
        interval=0.05,
    )
    takeover = time.monotonic() - killed_at
    print(f"takeover after SIGKILL: {takeover:.1f}s (peering lifetime {LIFETIME}s, poll {POLL}s)")
    # The peering watch notices within a quarter lifetime, so the gauge and readiness catch up.
    ha_stack.wait_for("the survivor reports active", lambda: standby.peering_state() == "active", timeout=LIFETIME)

    status = case.wait_status(
        "takeover", "phase two applied by the survivor", lambda s: len(s.get("applied") or []) == 4
    )
    assert status["incident"]["id"] == incident_id
    assert len(case.jobs("takeover")) == 1
    case.set(hit_rate=0.95)
    final = case.wait_status("takeover", "incident closed", lambda s: s.get("state") == "Idle" and s.get("history"))
    assert [h["id"] for h in final["history"]] == [incident_id]
    assert len(case.events("takeover", "IncidentOpened")) == 1
    after = case.snapshot()
    assert len(after.pop("Jobs")) == 1
    before.pop("Jobs")
    assert after == before, "rollback restored everything exactly"


def test_replicas_with_the_same_priority_say_they_are_stuck_in_log_metrics_and_readiness(
    ha_stack: Stack, pair: Pair
) -> None:
    for r in pair.replicas:
        r.operator.env["STAMPEDE_PEERING_PRIORITY"] = "7"  # kopf pauses every instance of a tied priority
    pair.start_together()
    a, b = pair.replicas
    ha_stack.wait_for(
        "both stuck and not ready",
        lambda: all(r.peering_state() == "stuck" and r.probe(r.readiness_url) == 503 for r in (a, b)),
        timeout=LIFETIME + 30,
    )
    assert all(r.probe(r.liveness_url) == 200 for r in (a, b)), "stuck is not dead: no restart loop"
    ha_stack.wait_for("the WARNING", lambda: "WARNING stampede.peering: Paused for" in a.operator.logs())
    assert "same priority 7" in a.operator.logs()
    ha_stack.wait_for(
        "the gauge past a lifetime",
        lambda: (a.sample("stampede_peering_paused_seconds", state="stuck") or 0) > LIFETIME,
        timeout=10,
    )
