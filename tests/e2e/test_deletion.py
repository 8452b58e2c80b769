"""Deleting a policy: with changes applied it rolls back first; idle it goes at once, operator or not."""

from __future__ import annotations

from tests.e2e import policies
from tests.e2e.conftest import Case
from tests.e2e.stack import Stack

FINALIZER = "stampede.aurum.io/rollback"
TARGETS = {"configmaps", "deployments", "horizontalpodautoscalers"}


def test_deleting_a_policy_mid_incident_rolls_back_before_the_object_goes_away(case: Case, stack: Stack) -> None:
    before = case.snapshot()
    case.create_ready("doomed", phases=[policies.phase_one()])
    case.set(hit_rate=0.2)
    case.wait_status("doomed", "changes applied", lambda s: len(s.get("applied") or []) == 2)
    assert FINALIZER in case.policy("doomed")["metadata"]["finalizers"]
    assert case.snapshot() != before

    mark = stack.harness.log.last_id
    case.delete("doomed")
    stack.wait_for("policy gone", lambda: not case.exists("doomed"), timeout=30)

    assert case.snapshot() == before, "deletion did not roll back exactly"
    log = [
        r for r in stack.harness.log.entries(since=mark, namespace=case.ns) if r.status is not None and r.status < 300
    ]
    target_writes = [r.id for r in log if r.resource in TARGETS and r.verb in ("patch", "update")]
    # The finalizer goes with the last successful write to the policy itself: after it the object is gone,
    # so any later write would fail (and failed writes are left out above).
    policy_writes = [
        r.id
        for r in log
        if r.resource == "stampedepolicies"
        and r.name == "doomed"
        and r.subresource is None
        and r.verb in ("patch", "update")
    ]
    assert target_writes and policy_writes
    release = max(policy_writes)
    assert not [
        r for r in log if r.resource == "stampedepolicies" and r.name == "doomed" and r.id > release and r.verb != "get"
    ], "a write to the policy succeeded after the finalizer was released"
    assert max(target_writes) < release, "the finalizer was released before the rollback finished"
    rolled = case.events("doomed", "ActionRolledBack")
    assert {a for a in ("api-config", "scale-api") if any(a in e.message for e in rolled)} == {
        "api-config",
        "scale-api",
    }


def test_deleting_an_idle_policy_is_immediate(case: Case) -> None:
    case.create_ready("idle")
    assert not case.policy("idle")["metadata"].get("finalizers"), "an idle policy must carry no finalizer"
    case.delete("idle")
    assert not case.exists("idle")


def test_an_idle_policy_deletes_at_once_while_the_operator_is_down(case: Case, stack: Stack) -> None:
    case.create_ready("orphan")
    assert stack.operator is not None
    stack.operator.stop()
    try:
        assert not case.policy("orphan")["metadata"].get("finalizers")
        case.delete("orphan")
        assert not case.exists("orphan")
    finally:
        stack.operator.start()
