"""Prometheus killed and restarted mid-incident, with `onMetricsError: Hold`.

While Prometheus is down the incident is frozen (no phase advance even past the next phase's `after`),
reported once (MetricsAvailable=False, one MetricsUnavailable event), and nothing is rolled back on
missing data. Recovery is counted only from healthy readings after the restart, never from healthy
readings seen before the outage.
"""

from __future__ import annotations

import threading
import time
import urllib.request

from tests.e2e import policies
from tests.e2e.stack import Stack
from tests.faults.helpers import HEALTHY, UNHEALTHY, Case, assert_restored, condition, parse_time, phases, utc

RECOVERY_FOR = 5.0  # long enough to kill Prometheus after the operator has seen a healthy poll, before recovery
PHASE_TWO_AFTER = 6.0


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


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
    killed_at = time.time()
    try:
        prometheus.kill()
        held = case.wait_status(
            "outage",
            "MetricsAvailable=False",
            lambda s: condition(s, "MetricsAvailable").get("status") == "False",
            timeout=30,
        )
        assert held["state"] == "Incident", "missing data must never close or roll back an incident"

        # Stay down well past phase two's `after`, checking the incident stays frozen at every look.
        while time.time() < max(started_at + PHASE_TWO_AFTER + 3, killed_at + RECOVERY_FOR + 2):
            status = case.status("outage")
            assert status["state"] == "Incident", status
            assert status["phase"] == "immediate", f"phase advanced while Prometheus was down: {status['phase']}"
            assert condition(status, "MetricsAvailable").get("status") == "False"
            assert not (status.get("incident") or {}).get("recoveringSince"), "recovery counted on unknown data"
            assert (
                case.stack.configmap_data(case.ns, policies.API_CONFIG)["AURUM_API_CIRCUIT_BREAKER_ENABLED"] == "true"
            ), "rolled back on missing data"
            assert case.stack.replicas(case.ns, policies.API) == 6, "rolled back on missing data"
            time.sleep(0.5)
        signals = {s["name"]: s for s in case.status("outage")["signals"]}
        assert signals["hitRate"]["value"] == "unknown" and signals["hitRate"].get("error")
    finally:
        restart_begin = time.time()
        starter = threading.Thread(target=prometheus.start)
        starter.start()
        ready_at = None
        while starter.is_alive() and ready_at is None:
            if _ready(prometheus.url):
                ready_at = time.time()
            time.sleep(0.05)
        starter.join(60)
    assert prometheus.running, "Prometheus did not come back"
    ready_at = ready_at or restart_begin

    closed = case.wait_status(
        "outage",
        "incident closed after the restart",
        lambda s: s.get("state") == "Idle" and s.get("history"),
        timeout=90,
    )
    entry = closed["history"][0]
    recovered = parse_time(entry["recoveredAt"]).timestamp()
    slack = 0.3  # ready_at is polled every 50 ms; the operator may see readiness a moment before we do
    assert recovered >= ready_at + RECOVERY_FOR - slack, (
        f"recovery took data from before the restart: recovered at {utc(recovered)}, Prometheus ready at "
        f"{utc(ready_at)}, recovery.for {RECOVERY_FOR}s"
    )
    (recovery,) = case.events("outage", "RecoveryStarted")
    assert recovery.time.timestamp() >= ready_at + RECOVERY_FOR - slack
    assert entry["maxPhase"] == "stabilization"

    unavailable = case.events("outage", "MetricsUnavailable")
    restored = case.events("outage", "MetricsRestored")
    assert len(unavailable) == 1, unavailable
    assert len(restored) == 1, restored
    assert killed_at <= unavailable[0].time.timestamp()
    assert restored[0].time.timestamp() >= restart_begin
    phase_two = [e for e in case.events("outage", "PhaseEntered") if "stabilization" in e.message]
    assert len(phase_two) == 1 and phase_two[0].time.timestamp() >= restart_begin, (
        f"phase two entered while Prometheus was down: {phase_two}"
    )
    assert len(case.events("outage", "IncidentOpened")) == 1

    after = case.snapshot()
    assert_restored(before, after)
    assert len(after["Jobs"]) == 1
