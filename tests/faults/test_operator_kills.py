"""The operator SIGKILLed at random moments of incidents (while applying, while rolling back), restarted at once.

Twenty kills over four incidents of one policy, drawn from a seeded random so a failure reproduces. Each kill
is either at a random delay after the previous start, or right after the next target write the request log
shows (the worst moment: target written, status not yet). Every incident must end with every target byte for
byte as before it (ConfigMap data + annotations, Deployment replicas, HPA minReplicas) and exactly one warming
Job labelled with its incident id.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from tests.e2e import policies
from tests.e2e.stack import Stack
from tests.faults.helpers import (
    HEALTHY,
    UNHEALTHY,
    WORKER_HPA,
    Case,
    assert_phase_one_applied,
    assert_restored,
    condition,
    parse_time,
    phases,
)

SEED = 20240611
KILLS_TOTAL = 20
INCIDENTS = 4
MAX_INCIDENTS = 7  # kills that found no open incident carry over; this bounds the carrying
TARGET_WRITES = ("configmaps", "deployments", "horizontalpodautoscalers")


class Killer:
    """SIGKILL + immediate restart, at moments drawn from a seeded random."""

    def __init__(self, stack: Stack, case: Case, rng: random.Random) -> None:
        self.stack, self.case, self.rng = stack, case, rng
        self.kills: list[tuple[str, str]] = []  # (policy state at the kill, how the moment was chosen)

    def _after_next_write(self, alive: Callable[[], bool], timeout: float) -> bool:
        log = self.stack.harness.log
        mark = log.last_id
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            if any(
                r.verb == "patch" and r.resource in TARGET_WRITES and r.status is not None and r.status < 300
                for r in log.entries(since=mark, namespace=self.case.ns)
            ):
                time.sleep(self.rng.uniform(0.0, 0.05))
                return True
            time.sleep(0.005)
        return False

    def kill_once(self, alive: Callable[[], bool]) -> bool:
        """One kill at a random moment while `alive()`; False if the window closed first."""
        assert self.stack.operator is not None
        if self.rng.random() < 0.5:
            how = "after-write"
            if not self._after_next_write(alive, timeout=self.rng.uniform(2.0, 4.0)):
                return False
        else:
            how = "timer"
            deadline = time.monotonic() + self.rng.uniform(0.3, 2.0)
            while time.monotonic() < deadline:
                if not alive():
                    return False
                time.sleep(0.02)
        if not alive():
            return False
        state = self.case.status("victim").get("state", "?")
        self.stack.operator.kill()
        self.stack.operator.start()
        self.kills.append((state, how))
        return True


def test_twenty_sigkills_across_incidents_leave_every_target_exactly_as_before(stack: Stack) -> None:
    rng = random.Random(SEED)
    case = Case(stack, "sigkills", extra=[WORKER_HPA])
    killer = Killer(stack, case, rng)
    case.create_ready("victim", phases=phases(two_after="2s", worker=True))
    incidents: list[str] = []

    def state() -> str:
        return str(case.status("victim").get("state"))

    while len(killer.kills) < KILLS_TOTAL:
        assert len(incidents) < MAX_INCIDENTS, f"only {len(killer.kills)} kills landed in {len(incidents)} incidents"
        remaining = KILLS_TOTAL - len(killer.kills)
        incidents_left = max(1, INCIDENTS - len(incidents))
        quota = min(remaining, -(-remaining // incidents_left))
        during_apply = rng.randint(1, max(1, quota - 1)) if quota > 1 else quota
        before = case.snapshot()
        history = len(case.status("victim").get("history") or [])

        case.set(hit_rate=UNHEALTHY, wait=False)
        case.wait_status("victim", "incident opened", lambda s: s.get("state") == "Incident", timeout=60)
        for _ in range(during_apply):
            killer.kill_once(lambda: True)  # unhealthy signals keep the incident open: always inside it
        case.wait_status(
            "victim",
            "every action applied",
            lambda s: (
                s.get("phase") == "stabilization"
                and len(s.get("applied") or []) == 5
                and condition(s, "Ready").get("status") == "True"
            ),
            timeout=90,
        )
        incident_id = case.status("victim")["incident"]["id"]
        during = case.snapshot()
        assert_phase_one_applied(before, during)
        assert during[f"ConfigMap/{policies.CACHE_CONFIG}"]["data"]["CACHE_REFRESH_STRATEGY"] == "lazy"

        case.set(hit_rate=HEALTHY, wait=False)
        case.wait_status("victim", "recovery started", lambda s: s.get("state") in ("RollingBack", "Idle"), timeout=90)
        for _ in range(quota - during_apply):
            if not killer.kill_once(lambda: state() == "RollingBack"):
                break
        final = case.wait_status(
            "victim",
            "incident closed",
            lambda s, n=history + 1: s.get("state") == "Idle" and len(s.get("history") or []) == n,
            timeout=90,
        )
        assert final["history"][0]["id"] == incident_id, "a kill split the incident into two"
        incidents.append(incident_id)

        after = case.snapshot()
        assert_restored(before, after)
        jobs = case.jobs_labelled(f"stampede.aurum.io/incident={incident_id}")
        assert len(jobs) == 1, f"incident {incident_id}: {[j.metadata.name for j in jobs]}"
        assert len(after["Jobs"]) == len(incidents), after["Jobs"]
        assert not final.get("applied"), final.get("applied")

    assert len(killer.kills) == KILLS_TOTAL
    states = [s for s, _ in killer.kills]
    assert "Incident" in states and "RollingBack" in states, killer.kills
    assert stack.operator is not None and stack.operator.process is not None
    assert stack.operator.process.poll() is None


def test_changes_applied_just_before_a_crash_are_rolled_back_even_if_the_signals_recover_meanwhile(
    case: Case, stack: Stack
) -> None:
    assert stack.operator is not None
    before = case.snapshot()
    case.create_ready("orphan", phases=[policies.phase_one()])
    # The scale write is held back long enough to make the opening tick's status write fail after it:
    # the journal (both changes, written before their targets) lands, the record of how they went never does.
    stack.harness.faults.add(
        methods=["PATCH"], resources=["deployments"], subresources=["scale"], namespace=case.ns, status=None, delay=2.0
    )
    mark = stack.harness.log.last_id
    lost = None
    try:
        case.set(hit_rate=UNHEALTHY, wait=False)
        case.wait_status(
            "orphan",
            "both changes journalled",
            lambda s: [e["action"] for e in s.get("journal") or []] == ["api-config", "scale-api"],
            timeout=60,
        )
        lost = stack.harness.faults.add(
            resources=["stampedepolicies"],
            subresources=["status"],
            namespace=case.ns,
            verbs=["patch", "update"],
            status=500,
        )
        stack.wait_for(
            "scale written",
            lambda: stack.harness.log.entries(since=mark, namespace=case.ns, subresource="scale", status=200),
            timeout=30,
            interval=0.01,
        )
        assert {
            r.resource
            for r in stack.harness.log.entries(since=mark, namespace=case.ns, verb="patch")
            if r.status is not None and r.status < 300
        } >= {"configmaps", "deployments"}
        stack.operator.kill()
    finally:
        stack.harness.faults.clear()
    assert lost is not None
    assert [e["action"] for e in case.status("orphan").get("journal") or []] == ["api-config", "scale-api"]
    assert case.status("orphan").get("state") == "Idle"  # what the restarted operator will read
    assert_phase_one_applied(before, case.snapshot())  # the changes did land before the kill
    case.set(hit_rate=HEALTHY)
    restarted = time.time()
    stack.operator.start()

    def restored() -> bool:
        snapshot = case.snapshot()
        return all(snapshot[key] == value for key, value in before.items() if key != "Jobs")

    # Wait on the outcome, not on a clock: the restarted operator must find the orphaned changes on
    # the targets and undo them, ending Idle with nothing held.
    stack.wait_for("the orphaned changes rolled back", restored, timeout=60, interval=0.2)
    closed = case.wait_status(
        "orphan",
        "the journalled changes held, rolled back and the made-up incident closed",
        lambda s: (
            s.get("lastPollTime")
            and parse_time(s["lastPollTime"]).timestamp() > restarted
            and s.get("history")
            and not s.get("applied")
            and not s.get("journal")
        ),
        timeout=60,
    )
    assert closed["state"] == "Idle"
    assert_restored(before, case.snapshot())
