"""`stampede simulate` against a real Prometheus holding a known, backfilled history.

A replay is only useful if it reproduces exactly what the operator would have done, so these tests pin
the whole timeline (every event reason at its step) of a history designed by hand: calm for 10 minutes,
a P1 breach for 4 minutes that turns P0 for 6 more, then calm again. A flapping history must open
nothing. The server is this module's own (started with the backfill, which promtool can only add before
start), so the session-wide fixture in conftest.py is left alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from stampede.cli import main
from tests.support.prometheus import PrometheusMissing, PrometheusServer, openmetrics_gauge

pytestmark = pytest.mark.prometheus

METRIC = "simulate_db_connections"
STEP = 15
# Aligned to the hour and 3 h in the past: promtool blocks must not overlap the live head block.
BASE = (int(time.time()) // 3600) * 3600 - 3 * 3600
WINDOW = 40 * 60  # the replay window; the history runs 20 minutes past it


def breach_value(offset: int) -> float:
    """Calm 100 connections, 160 (P1) from 10m, 200 (P0) from 14m, calm again from 20m."""
    if 600 <= offset < 840:
        return 160.0
    if 840 <= offset < 1200:
        return 200.0
    return 100.0


def flap_value(offset: int) -> float:
    """200 and 100 alternating every 30 s: never breaching for the 1m the policy asks."""
    return 200.0 if (offset // 30) % 2 == 0 else 100.0


def at(offset: int) -> str:
    return datetime.fromtimestamp(BASE + offset, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def incident_id(offset: int) -> str:
    return datetime.fromtimestamp(BASE + offset, UTC).strftime("%Y%m%d-%H%M%S")


@pytest.fixture(scope="module")
def prometheus() -> Iterator[PrometheusServer]:
    offsets = range(0, 3600 + 1, STEP)
    backfill = openmetrics_gauge(
        METRIC,
        {
            'case="breach"': [(BASE + t, breach_value(t)) for t in offsets],
            'case="flap"': [(BASE + t, flap_value(t)) for t in offsets],
        },
    )
    try:
        server = PrometheusServer(backfill_openmetrics=backfill)
    except PrometheusMissing as exc:
        pytest.fail(str(exc))  # never skip: a green build that tested nothing is worse than red
    try:
        yield server
    finally:
        server.close()


def policy(case: str, **spec_changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "pollInterval": "15s",
        "signals": [{"name": "db", "query": f'sum({METRIC}{{case="{case}"}})'}],
        "severities": [
            {"level": "P0", "any": ["db >= 190"], "for": "1m"},
            {"level": "P1", "any": ["db >= 150"], "for": "1m"},
        ],
        "recovery": {"all": ["db < 150"], "for": "2m"},
        "phases": [
            {
                "name": "breakers",
                "after": "0s",
                "actions": [
                    {
                        "name": "api-breaker",
                        "configMap": {
                            "name": "aurum-api-config",
                            "data": {"AURUM_API_CIRCUIT_BREAKER_ENABLED": "true"},
                        },
                    }
                ],
            },
            {
                "name": "capacity",
                "after": "5m",
                "actions": [
                    {"name": "scale-api", "scale": {"kind": "Deployment", "name": "aurum-api", "replicas": 10}},
                    {"name": "warm-cache", "job": {"fromCronJob": "cache-warming"}},
                ],
            },
        ],
        "escalation": {"after": "8m", "atSeverity": "P0"},
        "rollback": {"stepDelay": "30s"},
    }
    spec.update(spec_changes)
    return {
        "apiVersion": "stampede.aurum.io/v1alpha1",
        "kind": "StampedePolicy",
        "metadata": {"name": f"replay-{case}", "namespace": "aurum"},
        "spec": spec,
    }


def simulate(prometheus: PrometheusServer, tmp_path: Path, document: dict[str, Any], *args: str) -> tuple[int, str]:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(
        main, ["simulate", "-f", str(path), "--prometheus", prometheus.url, "--from", at(0), "--to", at(WINDOW), *args]
    )
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def simulate_json(prometheus: PrometheusServer, tmp_path: Path, document: dict[str, Any]) -> dict[str, Any]:
    code, output = simulate(prometheus, tmp_path, document, "--output", "json")
    assert code == 0, output
    parsed: dict[str, Any] = json.loads(output)
    return parsed


def test_a_breach_that_recovers_reproduces_the_known_timeline_exactly(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    out = simulate_json(prometheus, tmp_path, policy("breach"))
    kpis = {k["name"]: k for k in out["incidents"][0].pop("kpis")}

    # P1 (db >= 150) breaches from 10m and has held 1m at 11m; P0 from 14m fires at 15m and escalates by
    # severity; phase capacity at open + 5m; calm from 20m holds 2m at 22m; undos newest first, 30 s apart,
    # except that a Job (left to finish) costs no step; the incident closes right after the last undo, as the
    # operator (woken at once by the engine) closes it.
    assert out["incidents"] == [
        {
            "id": incident_id(660),
            "severity": "P0",
            "openedAt": at(660),
            "closedAt": at(1350),
            "maxPhase": "capacity",
            "escalated": True,
        }
    ]
    assert [(e["time"], e["reason"]) for e in out["events"]] == [
        (at(660), "IncidentOpened"),
        (at(660), "PhaseEntered"),
        (at(660), "ActionApplied"),
        (at(900), "SeverityRaised"),
        (at(900), "Escalated"),
        (at(960), "PhaseEntered"),
        (at(960), "ActionApplied"),
        (at(960), "ActionApplied"),
        (at(1320), "RecoveryStarted"),
        (at(1320), "JobLeftToFinish"),
        (at(1320), "ActionRolledBack"),
        (at(1350), "ActionRolledBack"),
        (at(1350), "IncidentClosed"),
    ]
    messages = [e["message"] for e in out["events"]]
    assert "AURUM_API_CIRCUIT_BREAKER_ENABLED=true in ConfigMap aurum-api-config" in messages[2]
    # The operator's own sentences; a replay reads no cluster, so it names no current values.
    assert messages[6] == "Raised replicas of Deployment aurum-api to 10 (action scale-api)."
    assert "CronJob cache-warming" in messages[7]
    assert "warm-cache" in messages[9]
    assert "scale-api" in messages[10]
    assert "api-breaker" in messages[11]
    # KPIs from the start of the P1 breach window (10m): opened after 1m, recovery confirmed 11m later.
    assert kpis["detection"] == {"name": "detection", "seconds": 60.0, "target": "2m", "met": True}
    assert kpis["mttr"]["seconds"] == 1320 - 600
    assert kpis["fullRecovery"]["seconds"] == 1350 - 600  # closed with the last undo (main timeline)
    summary = out["summary"]
    assert summary["incidents"] == 1
    assert summary["timeToMitigateSeconds"] == [0]
    assert summary["timeInIncidentSeconds"] == 1350 - 660
    assert summary["falseOpenings"] == 0


def test_a_flapping_signal_opens_no_incident(prometheus: PrometheusServer, tmp_path: Path) -> None:
    out = simulate_json(prometheus, tmp_path, policy("flap"))

    assert out["incidents"] == []
    assert out["events"] == []
    assert out["summary"]["steps"] == WINDOW // STEP + 1


def test_an_incident_shorter_than_the_threshold_counts_as_a_false_opening(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    code, output = simulate(
        prometheus, tmp_path, policy("breach"), "--output", "json", "--false-opening-threshold", "15m"
    )

    assert code == 0, output
    summary = json.loads(output)["summary"]
    assert summary["falseOpenings"] == 1
    assert summary["falseOpeningIds"] == [incident_id(660)]


def test_dry_run_plans_the_same_timeline_with_would_apply_events(prometheus: PrometheusServer, tmp_path: Path) -> None:
    out = simulate_json(prometheus, tmp_path, policy("breach", mode="DryRun"))

    reasons = [e["reason"] for e in out["events"]]
    # Three planned changes and two planned rollbacks; a Job is never undone, as the operator reports it.
    assert reasons.count("WouldApply") == 5
    assert "ActionApplied" not in reasons
    assert reasons.count("JobLeftToFinish") == 1
    assert "ActionRolledBack" not in reasons
    assert out["incidents"][0]["closedAt"] == at(1350)


def test_a_suspended_policy_reports_the_incident_but_changes_nothing(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    out = simulate_json(prometheus, tmp_path, policy("breach", suspend=True))

    reasons = [e["reason"] for e in out["events"]]
    assert "IncidentOpened" in reasons
    assert not {"ActionApplied", "ActionRolledBack", "WouldApply"} & set(reasons)


def test_steps_without_data_obey_on_metrics_error_hold(prometheus: PrometheusServer, tmp_path: Path) -> None:
    document = policy("breach")
    document["spec"]["signals"].append({"name": "missing", "query": "sum(no_such_metric_anywhere)"})
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    args = ["simulate", "-f", str(path), "--prometheus", prometheus.url, "--from", at(0), "--to", at(WINDOW)]
    result = CliRunner().invoke(main, [*args, "-o", "json"])
    # The replay ran, but its steps could not be evaluated: a distinct exit code, the reason once on stderr.
    assert result.exit_code == 3, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("  ")]
    assert errors
    assert len(errors) == len(set(errors))
    out = json.loads(result.stdout)

    # An always-unknown signal freezes every transition under Hold: nothing opens, the outage is reported once.
    assert out["incidents"] == []
    assert [e["reason"] for e in out["events"]] == ["MetricsUnavailable"]
    assert out["summary"]["unknownSteps"] == out["summary"]["steps"]


def test_the_table_output_shows_the_timeline_and_the_summary(prometheus: PrometheusServer, tmp_path: Path) -> None:
    code, output = simulate(prometheus, tmp_path, policy("breach"), "--step", "15s")

    assert code == 0, output
    for expected in (
        "IncidentOpened",
        "SeverityRaised",
        "PhaseEntered",
        "Escalated",
        "RecoveryStarted",
        "ActionRolledBack",
        "IncidentClosed",
        incident_id(660),
        "Incidents: 1",
        "Time to mitigate (open → first change): 0s",
        "Time in incident: 11m30s",
        "False openings (closed within 5m): 0",
    ):
        assert expected in output, f"{expected!r} missing from:\n{output}"
    assert f"{at(660)} │ IncidentOpened" in output


def test_an_invalid_policy_is_reported_like_lint_and_exits_1(prometheus: PrometheusServer, tmp_path: Path) -> None:
    document = policy("breach")
    document["spec"]["pollInterval"] = "10ms"
    code, output = simulate(prometheus, tmp_path, document)

    assert code == 1
    assert "spec.pollInterval" in output
    assert "must be at least 1s" in output


def test_relative_times_are_accepted_and_a_window_without_data_is_reported(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy("flap")))
    result = CliRunner().invoke(
        main,
        ["simulate", "-f", str(path), "--prometheus", prometheus.url, "--from", "-10m", "--to", "now", "-o", "json"],
    )

    # 10 minutes at the policy's 15s pollInterval; this server holds no recent data, which is said on stderr
    # and in the exit code, so a CI gate on the replay fails.
    assert result.exit_code == 3, result.output
    assert json.loads(result.stdout)["summary"]["steps"] == 41
    assert "every step had unknown signals" in result.stderr


def test_the_table_shows_how_many_kpis_each_incident_met(prometheus: PrometheusServer, tmp_path: Path) -> None:
    code, output = simulate(prometheus, tmp_path, policy("breach"))
    assert code == 0, output
    assert "KPIs met" in output
    row = next(line for line in output.splitlines() if line.startswith(f"│ {incident_id(660)}"))
    assert row.rstrip(" │").endswith("5/5")


def test_report_dir_writes_a_postmortem_draft_and_plot_per_incident(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    code, output = simulate(prometheus, tmp_path, policy("breach"), "--report-dir", str(reports))
    assert code == 0, output
    name = f"replay-breach-{incident_id(660)}"
    assert sorted(p.name for p in reports.iterdir()) == [f"{name}.md", f"{name}.png"]
    markdown = (reports / f"{name}.md").read_text()
    assert markdown.startswith(
        f"# Postmortem draft: cache stampede in aurum/replay-breach, incident {incident_id(660)}"
    )
    assert "| Severity | P0 (highest reached) |" in markdown
    assert "| detection | 1m | 2m | yes |" in markdown
    assert "| api-breaker | ConfigMap" in markdown
    with Image.open(reports / f"{name}.png") as image:
        assert image.format == "PNG"
        assert image.size == (1200, 260 + 140)  # one signal


def test_a_step_longer_than_the_step_delay_keeps_the_policys_own_durations(
    prometheus: PrometheusServer, tmp_path: Path
) -> None:
    code, output = simulate(prometheus, tmp_path, policy("breach"), "--output", "json", "--step", "1m")

    assert code == 0, output
    events = json.loads(output)["events"]
    # Sampled every minute, yet the undos stay 30s (the policy's stepDelay) apart, not a minute.
    undos = [e["time"] for e in events if e["reason"] == "ActionRolledBack"]
    assert undos == [at(1320), at(1350)]
    assert [e["time"] for e in events if e["reason"] == "JobLeftToFinish"] == [at(1320)]
    assert [e["time"] for e in events if e["reason"] == "IncidentClosed"] == [at(1350)]


def test_relative_times_accept_prometheus_days_and_weeks(prometheus: PrometheusServer, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy("flap")))
    result = CliRunner().invoke(
        main,
        ["simulate", "-f", str(path), "--prometheus", prometheus.url, "--from", "-1d", "--step", "1h", "-o", "json"],
    )

    assert "invalid duration" not in result.output
    assert json.loads(result.stdout)["summary"]["steps"] == 25
