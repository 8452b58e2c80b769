"""The API server failing or stalling on a share of target writes during a whole incident.

500s, 409 conflicts and 2 s delays hit PATCHes of ConfigMaps, Deployments (incl. the scale subresource) and
HPAs, and POSTs of Jobs. Every change is still applied (or reported with ActionFailed) and never applied
twice (counted in the API server's request log), one Job per incident, and rollback is exact.
"""

from __future__ import annotations

from collections import Counter

from stampede.engine.digests import digest
from tests.e2e import policies
from tests.e2e.stack import Stack
from tests.faults.helpers import HEALTHY, UNHEALTHY, Case, assert_restored, parse_time, phases
from tests.harness.server import FaultRule

SEED = 424242


def _ok(status: int | None) -> bool:
    return status is not None and 200 <= status < 300


def test_500s_409s_and_slow_writes_never_lose_or_double_a_change_and_rollback_stays_exact(
    case: Case, stack: Stack
) -> None:
    faults = stack.harness.faults
    faults._random.seed(SEED)  # reproducible fault draws (the harness exposes no seed setter on a running server)
    before = case.snapshot()
    case.create_ready("flaky", phases=phases(two_after="3s"))
    mark = stack.harness.log.last_id
    writes = {"methods": ["PATCH"], "resources": ["configmaps", "deployments"], "namespace": case.ns}
    jobs_post = {"methods": ["POST"], "resources": ["jobs"], "namespace": case.ns}
    # Guaranteed hits first (each kind of fault on each kind of write), then a random share of everything.
    sure = [
        faults.add(methods=["PATCH"], resources=["configmaps"], namespace=case.ns, status=409, times=1),
        faults.add(
            methods=["PATCH"], resources=["deployments"], subresources=["scale"], namespace=case.ns, status=500, times=1
        ),
        faults.add(**jobs_post, status=500, times=1),
        faults.add(**jobs_post, status=None, delay=2.0, times=1),
    ]

    def add_random() -> list[FaultRule]:
        return [
            faults.add(**writes, status=500, probability=0.3),
            faults.add(**writes, status=409, probability=0.3),
            faults.add(**writes, status=None, delay=2.0, probability=0.4),
            faults.add(**jobs_post, status=500, probability=0.3),
        ]

    random_rules = add_random()
    rules = [*sure, *random_rules]
    try:
        case.set(hit_rate=UNHEALTHY)
        applied = case.wait_status(
            "flaky", "every action applied despite the faults", lambda s: len(s.get("applied") or []) == 4, timeout=120
        )
        incident_id = applied["incident"]["id"]
        during = case.snapshot()
        assert during["ConfigMap/aurum-api-config"]["data"]["AURUM_API_CIRCUIT_BREAKER_ENABLED"] == "true"
        assert during["ConfigMap/aurum-api-config"]["data"][policies.NEW_KEY] == "added"
        assert during["ConfigMap/cache-config"]["data"]["CACHE_REFRESH_STRATEGY"] == "lazy"
        assert during[f"Deployment/{policies.API}"]["replicas"] == 6
        originals = {c["action"]: c["original"] for c in applied["applied"]}
        assert originals["api-config"] == {"AURUM_API_CIRCUIT_BREAKER_ENABLED": digest("false")}
        absent = {c["action"]: c.get("absent") for c in applied["applied"]}
        assert absent["api-config"] == [policies.NEW_KEY], "an absent key is named, never a null inside an array"
        assert originals["scale-api"] == {"replicas": "3"}
        assert originals["cache-lazy"] == {"CACHE_REFRESH_STRATEGY": digest("eager")}

        # The same guaranteed faults again, now hitting the rollback's writes.
        sure += [
            faults.add(methods=["PATCH"], resources=["configmaps"], namespace=case.ns, status=500, times=1),
            faults.add(
                methods=["PATCH"],
                resources=["deployments"],
                subresources=["scale"],
                namespace=case.ns,
                status=409,
                times=1,
            ),
            faults.add(methods=["PATCH"], resources=["configmaps"], namespace=case.ns, status=None, delay=2.0, times=1),
        ]
        for rule in random_rules:  # the harness tries rules in order: the guaranteed ones go first
            faults.remove(rule.id)
        random_rules = add_random()
        rules += [*sure[-3:], *random_rules]
        case.set(hit_rate=HEALTHY)
        closed = case.wait_status(
            "flaky",
            "incident closed despite the faults",
            lambda s: s.get("state") == "Idle" and s.get("history"),
            timeout=120,
        )
    finally:
        for rule in rules:
            faults.remove(rule.id)
    assert closed["history"][0]["id"] == incident_id
    assert not closed.get("applied")

    log = stack.harness.log.entries(since=mark, namespace=case.ns)
    fired = Counter(r.fault for r in log if r.fault is not None)
    assert all(rule.hits == 1 for rule in sure), f"a guaranteed fault did not fire: {fired}"
    assert sum(fired.values()) >= 10, f"too few faults fired for the test to prove much: {fired}"

    # Never applied twice: exactly one successful write to apply and one to undo, per target (the JSON patch
    # handing the restored fields' ownership back after the undo writes no value: actuators/handback.py).
    values = [
        r for r in log if r.method == "PATCH" and _ok(r.status) and r.content_type != "application/json-patch+json"
    ]
    successful = Counter((r.resource, r.name, r.subresource) for r in values)
    assert successful[("configmaps", policies.API_CONFIG, None)] == 2, successful
    assert successful[("configmaps", policies.CACHE_CONFIG, None)] == 2, successful
    assert successful[("deployments", policies.API, "scale")] == 2, successful
    created = [r for r in log if r.method == "POST" and r.resource == "jobs" and _ok(r.status)]
    assert len(created) == 1, created
    jobs = case.jobs_labelled(f"stampede.aurum.io/incident={incident_id}")
    assert len(jobs) == 1

    # Every failed write was reported.
    failed_writes = [r for r in log if r.fault is not None and not _ok(r.status)]
    assert failed_writes and case.events("flaky", "ActionFailed")

    after = case.snapshot()
    assert_restored(before, after)
    assert after["Jobs"] == [jobs[0].metadata.name]


def test_a_failed_rollout_restart_is_retried_or_reported_as_action_failed(case: Case, stack: Stack) -> None:
    case.create_ready("restart", phases=[policies.phase_one()])
    # Phase one writes the ConfigMap, then restarts aurum-api (its first PATCH of the Deployment itself).
    rule = stack.harness.faults.add(
        methods=["PATCH"],
        resources=["deployments"],
        subresources=[""],
        namespace=case.ns,
        name=policies.API,
        status=500,
        times=1,
    )
    try:
        case.set(hit_rate=UNHEALTHY)
        status = case.wait_status(
            "restart", "phase one applied", lambda s: len(s.get("applied") or []) == 2, timeout=60
        )
    finally:
        stack.harness.faults.remove(rule.id)
    assert rule.hits == 1
    applied_at = min(parse_time(c["appliedAt"]) for c in status["applied"])

    def restarted() -> bool:
        template = stack.apps.read_namespaced_deployment(policies.API, case.ns).spec.template
        stamp = (template.metadata.annotations or {}).get("kubectl.kubernetes.io/restartedAt")
        return stamp is not None and parse_time(stamp) >= applied_at

    def reported() -> bool:
        return any("restart" in e.message.lower() for e in case.events("restart", "ActionFailed"))

    stack.wait_for(
        "the restart retried or an ActionFailed event about it", lambda: restarted() or reported(), timeout=8
    )
