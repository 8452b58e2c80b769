"""An idle policy costs (almost) nothing: no target writes, and status writes throttled by the refresh period.

Measured on the harness request log (the operator's only API server). With pollInterval 1s and
STAMPEDE_STATUS_REFRESH_SECONDS=5, an idle policy whose signal values change at every poll makes
0 requests to targets and at most one status patch per 5 s; the test prints requests per poll.
"""

from __future__ import annotations

import time

from tests.e2e.conftest import STATUS_REFRESH_SECONDS, Case
from tests.e2e.stack import Stack

WINDOW_SECONDS = 10.0
TARGET_RESOURCES = {"configmaps", "deployments", "jobs", "horizontalpodautoscalers"}
WRITES = {"create", "patch", "update", "delete", "deletecollection"}


def test_an_idle_policy_writes_no_targets_and_refreshes_its_status_sparingly(case: Case, stack: Stack) -> None:
    case.create_ready("quiet")
    # Let the first full status (conditions, signals) land before measuring.
    case.wait_status("quiet", "first status written", lambda s: s.get("state") == "Idle" and s.get("conditions"))
    assert stack.exporter is not None
    first = stack.harness.log.last_id
    started = time.monotonic()
    step = 0
    while time.monotonic() - started < WINDOW_SECONDS:
        # The signal changes at every poll, so only the refresh period limits status writes.
        stack.exporter.set("e2e_hit_rate", 0.95 + step * 0.001, case=case.label)
        step += 1
        time.sleep(0.5)  # drives the exporter; not an assertion
    elapsed = time.monotonic() - started
    window = [r for r in stack.harness.log.entries(since=first, namespace=case.ns) if r.verb != "watch"]

    target_writes = [r for r in window if r.resource in TARGET_RESOURCES and r.verb in WRITES]
    status_writes = [
        r
        for r in window
        if r.resource == "stampedepolicies" and r.subresource == "status" and r.verb in ("patch", "update")
    ]
    polls = elapsed / 1.0
    print(
        f"\nsteady state: {len(window) / polls:.2f} API requests per poll over {elapsed:.1f}s "
        f"({len(status_writes)} status writes): {[(r.verb, r.resource, r.subresource) for r in window]}"
    )
    assert not target_writes, target_writes
    assert len(status_writes) <= elapsed // STATUS_REFRESH_SECONDS + 1, status_writes
    assert len(status_writes) >= 1, "signal values changed but the status was never refreshed"
    assert not [r for r in window if r.resource == "events"], "an idle policy posted events"
    assert len(window) <= len(status_writes) + 2, "an idle poll should not need the API server"
