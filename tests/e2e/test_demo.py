"""`make demo` is the README's first command and a check in its own right: run it as a user would.

The demo exits non-zero when the incident does not open, roll back or restore its targets, so this test
runs `python -m demo` as a subprocess (its own Stack, its own processes) and checks the exit code and the
lines a reader relies on. It takes about two minutes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.stack import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.timeout(300)]


def test_make_demo_runs_a_whole_incident_and_restores_every_target() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demo"], cwd=REPO, capture_output=True, text=True, timeout=240, check=False
    )
    output = result.stdout + result.stderr

    assert result.returncode == 0, output[-6000:]
    lines = output.splitlines()
    assert "API server is EMULATED" in lines[0]
    for expected in (
        "event IncidentOpened: Incident",
        "event PhaseEntered:",
        "immediate-mitigation",
        "cache-stabilization",
        "load-distribution",
        "event SeverityRaised:",
        "event Escalated:",
        "event RecoveryStarted:",
        "event ActionRolledBack:",
        "event IncidentClosed:",
        "=== kubectl get stp -n aurum-demo",
        "=== kubectl describe stp aurum-cache-demo -n aurum-demo",
        "ConfigMap aurum-api-config: equal",
        "ConfigMap aurum-worker-config: equal",
        "ConfigMap cache-config: equal",
        "Deployment aurum-api replicas: before 3, after 3 (equal)",
        "Deployment postgres replicas: before 1, after 1 (equal)",
        "every target restored exactly",
        "=== kubectl get stpi -n aurum-demo (the incident log)",
        "report: ",
    ):
        assert expected in output, f"{expected!r} missing from the demo output:\n{output[-6000:]}"
    assert any(line.split()[1:4] == ["Incident", "P0", "load-distribution"] for line in lines if len(line.split()) >= 4)
    assert any(line.split()[1:2] == ["RollingBack"] for line in lines if len(line.split()) >= 2)
    assert "aurum-cache-demo   Enforce   Idle" in output
    assert "DEMO FAILED" not in output
    record_row = next(line for line in lines if line.startswith("aurum-cache-demo-"))
    assert record_row.split()[1:4] == ["aurum-cache-demo", "Closed", "P0"]
    reports = [line.split()[1] for line in lines if line.startswith("report: ")]
    assert [Path(p).suffix for p in reports] == [".md", ".png"]
    assert all(Path(p).stat().st_size > 0 for p in reports)
