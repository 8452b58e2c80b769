"""The storm breaker with the real operator: three policies fire, STAMPEDE_MAX_CONCURRENT_INCIDENTS=2.

This module has its own stack: the setting applies to every policy the operator serves, and the session's
operator serves every other e2e test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import STATUS_REFRESH_SECONDS, Case, condition
from tests.e2e.stack import Stack

LIMIT = 2
BREACH = 0.2
HEALTHY = 0.95


@pytest.fixture(scope="module")
def storm_stack() -> Iterator[Stack]:
    env = {
        "STAMPEDE_MAX_CONCURRENT_INCIDENTS": str(LIMIT),
        "STAMPEDE_STATUS_REFRESH_SECONDS": str(STATUS_REFRESH_SECONDS),
        "STAMPEDE_ALLOWED_PROMETHEUS_URLS": "*",
    }
    with Stack(operator_env=env, operator_args=["--standalone", "-A"]) as stack:
        yield stack


def applied(case: Case, name: str) -> set[str]:
    return {c["action"] for c in case.status(name).get("applied") or []}


def test_a_third_policy_is_held_until_one_of_two_open_incidents_closes_even_across_a_restart(
    storm_stack: Stack,
) -> None:
    cases = [Case(storm_stack, f"storm-{i}", prefix="storm") for i in range(3)]
    try:
        for c in cases:
            c.create_ready("svc")
        for c in cases[:LIMIT]:
            c.set(hit_rate=BREACH)
            c.wait_status("svc", "acting", lambda s: len(s.get("applied") or []) >= 2)
        third = cases[LIMIT]
        third.set(hit_rate=BREACH)
        status = third.wait_status(
            "svc", "held by the storm breaker", lambda s: condition(s, "Held").get("reason") == "StormBreaker"
        )
        assert status["incident"] and not status.get("applied")
        assert third.events("svc", "IncidentOpened") and third.events("svc", "StormHold")
        assert [e.type for e in third.events("svc", "SystemWideStampede")] == ["Warning"]

        # The count is derived from the policies' status: a restarted operator keeps the third held.
        operator = storm_stack.operator
        assert operator is not None
        operator.stop()
        operator.start()
        polled = third.status("svc").get("lastPollTime")
        third.wait_status("svc", "polled after the restart", lambda s: s.get("lastPollTime") != polled, timeout=60)
        assert condition(third.status("svc"), "Held").get("reason") == "StormBreaker"
        assert not applied(third, "svc")

        cases[0].set(hit_rate=HEALTHY)  # one of the two closes: the count falls below the limit
        cases[0].wait_status("svc", "closed", lambda s: s.get("state") == "Idle", timeout=60)
        third.wait_status("svc", "acting", lambda s: len(s.get("applied") or []) >= 2, timeout=60)
        assert condition(third.status("svc"), "Held").get("status") == "False"
        assert third.events("svc", "Released")
        assert sum(len(c.events("svc", "SystemWideStampede")) for c in cases) == 1
    finally:
        for c in cases:
            c.set(hit_rate=HEALTHY, wait=False)
            c.cleanup()
