"""Prometheus killed and restarted mid-incident, with `onMetricsError: Hold`.

While Prometheus is down the incident is frozen (no phase advance even past the next phase's `after`),
reported once (MetricsAvailable=False, one MetricsUnavailable event), and nothing is rolled back on
missing data. Recovery is counted only from healthy readings after the restart, never from healthy
readings seen before the outage.
"""

from __future__ import annotations

import threading

from tests.e2e import policies
from tests.e2e.stack import Stack
from tests.faults.helpers import HEALTHY, UNHEALTHY, Case, assert_restored, condition, parse_time, phases, utc

RECOVERY_FOR = 5.0  # long enough to kill Prometheus after the operator has seen a healthy poll, before recovery
PHASE_TWO_AFTER = 6.0


def test_a_prometheus_outage_holds_the_incident_and_recovery_counts_only_fresh_readings(
    case: Case, stack: Stack
) -> None:
    prometheus = stack.prometheus
    assert prometheus is not None
    before = case.snapshot()
    case.create_ready(
        "outage",
        phases=phases(two_after=f"{PHASE_TWO_AFTER:g}s"),
        recovery_for=f"{RECOVERY_FOR:g}s",
        onMetricsError="Hold",
    )
    case.set(hit_rate=UNHEALTHY)
    opened = case.wait_status(
        "outage",
        "phase one applied",
        lambda s: (
            s.get("state") == "Incident"
            and {c["action"] for c in s.get("applied") or []} == {"api-config", "scale-api"}
        ),
    )
    started_at = parse_time(opened["incident"]["startedAt"]).timestamp()

    # The operator sees healthy readings (recovery window opens), then Prometheus dies before `for` elapses.
    case.set(hit_rate=HEALTHY, wait=False)
    case.wait_status(
        "outage",
        "recovery window opened",
        lambda s: (s.get("incident") or {}).get("recoveringSince"),
        timeout=30,
        interval=0.05,
    )
    try:
        prometheus.kill()
        held = case.wait_status(
            "outage",
            "MetricsAvailable=False",
            lambda s: condition(s, "MetricsAvailable").get("status") == "False",
            timeout=30,
        )
        assert held["state"] == "Incident", "missing data must never close or roll back an incident"
        # The engine's own time (each tick's scheduled time) of the first poll without data.
        unknown_since = parse_time(condition(held, "MetricsAvailable")["lastTransitionTime"]).timestamp()

        # Stay down until the operator itself has polled past phase two's `after` and past a whole
        # recovery window, checking the incident stays frozen at every look.
        frozen_until = max(started_at + PHASE_TWO_AFTER, unknown_since + RECOVERY_FOR) + 1

        def frozen_long_enough() -> bool:
            status = case.status("outage")
            assert status["state"] == "Incident", status
            assert status["phase"] == "immediate", f"phase advanced while Prometheus was down: {status['phase']}"
            assert condition(status, "MetricsAvailable").get("status") == "False"
            assert not (status.get("incident") or {}).get("recoveringSince"), "recovery counted on unknown data"
            assert (
                case.stack.configmap_data(case.ns, policies.API_CONFIG)["AURUM_API_CIRCUIT_BREAKER_ENABLED"] == "true"
            ), "rolled back on missing data"
            assert case.stack.replicas(case.ns, policies.API) == 6, "rolled back on missing data"
            return parse_time(status["lastPollTime"]).timestamp() >= frozen_until

        case.stack.wait_for("the operator polled past phase two and a recovery window", frozen_long_enough, timeout=60)
        signals = {s["name"]: s for s in case.status("outage")["signals"]}
        assert signals["hitRate"]["value"] == "unknown" and signals["hitRate"].get("error")
    finally:
        starter = threading.Thread(target=prometheus.start)
        starter.start()
        starter.join(60)
    assert prometheus.running, "Prometheus did not come back"

    seen: list[dict[str, object]] = []

    def closed_after_restart(status: dict[str, object]) -> bool:
        seen.append(status)
        return status.get("state") == "Idle" and bool(status.get("history"))

    closed = case.wait_status(
        "outage", "incident closed after the restart", closed_after_restart, timeout=90, interval=0.05
    )
    entry = closed["history"][0]
    # Engine times only: the first poll with data again, and the moment recovery completed.
    back_since = parse_time(condition(closed, "MetricsAvailable")["lastTransitionTime"]).timestamp()
    assert back_since > unknown_since
    recovered = parse_time(entry["recoveredAt"]).timestamp()
    assert recovered >= back_since + RECOVERY_FOR, (
        f"recovery took data from before the restart: recovered at {utc(recovered)}, data back at "
        f"{utc(back_since)}, recovery.for {RECOVERY_FOR}s"
    )
    phase_two = [s for s in seen if s.get("phase") == "stabilization"]
    assert phase_two, "phase two was never seen after the restart"
    entered = parse_time(phase_two[0]["incident"]["phaseStartedAt"]).timestamp()  # type: ignore[index]
    assert entered >= back_since, "phase two entered while Prometheus was down"
    assert entry["maxPhase"] == "stabilization"

    unavailable = case.events("outage", "MetricsUnavailable")
    restored = case.events("outage", "MetricsRestored")
    assert len(unavailable) == 1, unavailable
    assert len(restored) == 1, restored
    phase_two_events = [e for e in case.events("outage", "PhaseEntered") if "stabilization" in e.message]
    assert len(phase_two_events) == 1, phase_two_events
    assert len(case.events("outage", "IncidentOpened")) == 1

    after = case.snapshot()
    assert_restored(before, after)
    assert len(after["Jobs"]) == 1
