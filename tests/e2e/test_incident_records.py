"""StampedeIncident records written by the real operator: one per incident, kept current, pruned by historyLimit.

Two incidents run in one module fixture against the emulated API server and real Prometheus; the tests
then read the records as a user would (the API and `kubectl get stpi`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from stampede.cli import main
from tests.e2e.conftest import Case
from tests.e2e.stack import GROUP, VERSION, Stack
from tests.e2e.test_metrics_and_notifications import scrape, value

POLICY = "recorded"
PLURAL = "stampedeincidents"


@dataclass
class Seen:
    case: Case
    uid: str = ""
    open_record: dict[str, Any] = field(default_factory=dict)
    first_closed: dict[str, Any] = field(default_factory=dict)
    final_status: dict[str, Any] = field(default_factory=dict)
    records_at_end: list[dict[str, Any]] = field(default_factory=list)
    kubectl_get: str = ""


def records(case: Case) -> list[dict[str, Any]]:
    found = case.stack.custom.list_namespaced_custom_object(GROUP, VERSION, case.ns, PLURAL)
    return list(found.get("items") or [])


def record(case: Case, name: str) -> dict[str, Any]:
    found: dict[str, Any] = case.stack.custom.get_namespaced_custom_object(GROUP, VERSION, case.ns, PLURAL, name)
    return found


def one_incident(case: Case, seen: Seen | None = None) -> str:
    """Breach until an incident opens, recover until it closes; returns the incident id."""
    case.set(hit_rate=0.2)
    opened = case.wait_status(POLICY, "incident opened", lambda s: s.get("incident"), timeout=30)
    incident = opened["incident"]["id"]
    name = f"{POLICY}-{incident}"
    if seen is not None:
        case.stack.wait_for(
            "record current with phase one applied",
            lambda: any(
                c["outcome"] == "Applied"
                for c in (records_by_name(case).get(name, {}).get("status") or {}).get("changes", [])
            ),
            timeout=30,
        )
        seen.open_record = record(case, name)
    case.set(hit_rate=0.95)
    case.wait_status(
        POLICY,
        "incident closed",
        lambda s: s.get("state") == "Idle" and any(h["id"] == incident for h in s.get("history") or []),
        timeout=60,
    )
    return incident


def records_by_name(case: Case) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in records(case)}


@pytest.fixture(scope="module")
def seen(stack: Stack) -> Iterator[Seen]:
    case = Case(stack, "records")
    out = Seen(case=case)
    try:
        body = case.create_ready(POLICY, historyLimit=1)
        out.uid = case.policy(POLICY)["metadata"]["uid"]
        assert body["spec"]["historyLimit"] == 1
        first = one_incident(case, out)
        name = f"{POLICY}-{first}"
        case.stack.wait_for(
            "first record closed", lambda: (record(case, name).get("status") or {}).get("state") == "Closed"
        )
        out.first_closed = record(case, name)
        second = one_incident(case)
        second_name = f"{POLICY}-{second}"
        case.stack.wait_for(
            "second record closed and the first pruned",
            lambda: (
                set(records_by_name(case)) == {second_name}
                and (records_by_name(case)[second_name].get("status") or {}).get("state") == "Closed"
            ),
            timeout=30,
        )
        out.records_at_end = records(case)
        out.final_status = case.status(POLICY)
        out.kubectl_get = case.kubectl("get", "stpi", "-n", case.ns)
        yield out
    finally:
        case.cleanup()


def test_a_record_is_created_when_the_incident_opens_and_kept_current(seen: Seen) -> None:
    status = seen.open_record["status"]
    assert status["state"] == "Open"
    assert status["policy"] == POLICY
    assert status["severity"] == "P1"
    assert [e["reason"] for e in status["timeline"]][:1] == ["IncidentOpened"]
    assert status["phases"][0]["name"] == "immediate"
    assert status["firstBreachAt"] <= status["startedAt"]


def test_a_record_is_named_labelled_and_owned_by_its_policy_without_blocking_its_deletion(seen: Seen) -> None:
    meta = seen.open_record["metadata"]
    assert meta["name"].startswith(f"{POLICY}-")
    assert meta["labels"]["stampede.aurum.io/policy"] == POLICY
    (owner,) = meta["ownerReferences"]
    assert owner["kind"] == "StampedePolicy"
    assert owner["name"] == POLICY
    assert owner["uid"] == seen.uid
    assert "blockOwnerDeletion" not in owner
    assert seen.open_record["spec"] == {"policy": POLICY, "incident": meta["name"].removeprefix(f"{POLICY}-")}


def test_a_closed_record_holds_the_whole_incident_and_its_kpis(seen: Seen) -> None:
    status = seen.first_closed["status"]
    assert status["state"] == "Closed"
    assert status["startedAt"] <= status["recoveredAt"] <= status["closedAt"]
    reasons = [e["reason"] for e in status["timeline"]]
    assert reasons[0] == "IncidentOpened"
    assert reasons[-1] == "IncidentClosed"
    assert "RecoveryStarted" in reasons
    assert "ActionApplied" in reasons and "ActionRolledBack" in reasons
    outcomes = {c["action"]: c["outcome"] for c in status["changes"]}
    assert outcomes["api-config"] == "RolledBack"
    api = next(c for c in status["changes"] if c["action"] == "api-config")
    assert "→" in api["message"] and api["rolledBackAt"] >= api["appliedAt"]
    assert {p["signal"] for p in status["peaks"]} == {"hitRate", "db"}
    assert next(p for p in status["peaks"] if p["signal"] == "hitRate")["value"] == pytest.approx(0.2)
    kpis = {k["name"]: k for k in status["kpis"]}
    assert list(kpis) == ["detection", "mitigation", "stabilization", "mttr", "fullRecovery"]
    assert all(k["seconds"] >= 0 and k["met"] is True for k in kpis.values()), kpis
    assert kpis["detection"]["seconds"] <= kpis["mttr"]["seconds"] <= kpis["fullRecovery"]["seconds"]
    assert status["mttr"]


def test_history_entries_carry_the_kpis_and_closed_records_beyond_history_limit_are_deleted(seen: Seen) -> None:
    assert len(seen.records_at_end) == 1
    (last,) = seen.records_at_end
    entry = next(h for h in seen.final_status["history"] if h["id"] == last["spec"]["incident"])
    assert [k["name"] for k in entry["kpis"]] == [k["name"] for k in last["status"]["kpis"]]


def test_kubectl_get_stpi_shows_the_incident_log(seen: Seen) -> None:
    header, *rows = seen.kubectl_get.splitlines()
    assert header.split() == ["NAME", "POLICY", "STATE", "SEVERITY", "PHASE", "ESCALATED", "MTTR", "AGE"]
    assert len(rows) == 1
    assert rows[0].split()[1:4] == [POLICY, "Closed", "P1"]


def test_a_dry_run_incident_gets_a_record_marked_dry_run(stack: Stack) -> None:
    case = Case(stack, "records-dry-run")
    try:
        case.create_ready(POLICY, mode="DryRun")
        case.set(hit_rate=0.2)
        opened = case.wait_status(POLICY, "incident opened", lambda s: s.get("incident"), timeout=30)
        name = f"{POLICY}-{opened['incident']['id']}"
        found = case.stack.wait_for(
            "a planned change in the record",
            lambda: any(
                c["outcome"] == "Planned"
                for c in (records_by_name(case).get(name, {}).get("status") or {}).get("changes", [])
            ),
            timeout=30,
        )
        assert found
        assert record(case, name)["status"]["dryRun"] is True
        case.set(hit_rate=0.95)
    finally:
        case.cleanup()


def test_stampede_report_writes_the_postmortem_draft_and_plot_from_the_cluster(
    seen: Seen, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = seen.case.stack
    assert stack.prometheus is not None
    monkeypatch.setenv("KUBECONFIG", str(stack.harness.kubeconfig))
    (last,) = seen.records_at_end
    incident = last["spec"]["incident"]
    result = CliRunner().invoke(
        main,
        ["report", "-n", seen.case.ns, POLICY, "--prometheus", stack.prometheus.url, "--output-dir", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    markdown = tmp_path / f"{POLICY}-{incident}.md"
    png = tmp_path / f"{POLICY}-{incident}.png"
    assert result.stdout.split() == [str(markdown), str(png)]
    text = markdown.read_text()
    assert f"incident {incident}" in text.splitlines()[0]
    assert "| api-config | ConfigMap" in text and "RolledBack" in text
    assert "| detection |" in text
    # Prometheus kept the breach: the hit rate's history is in the report, so near misses could be computed.
    assert "could not be read" not in text
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size[0] == 1200


def test_stampede_report_names_a_missing_incident(seen: Seen, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(seen.case.stack.harness.kubeconfig))
    result = CliRunner().invoke(main, ["report", "-n", seen.case.ns, POLICY, "--incident", "19990101-000000"])
    assert result.exit_code == 1
    assert "no StampedeIncident for incident '19990101-000000'" in result.output


def test_kpis_are_exported_as_metrics_once_per_incident(seen: Seen, metrics_port: int) -> None:
    samples = scrape(metrics_port)
    labels = {"namespace": seen.case.ns, "policy": POLICY}
    for kpi in ("detection", "mitigation", "stabilization", "mttr", "fullRecovery"):
        assert value(samples, "stampede_incident_kpi_seconds_count", **labels, kpi=kpi) == 2, kpi
    assert value(samples, "stampede_incident_kpi_target_seconds", **labels, kpi="mttr") == 900
    assert value(samples, "stampede_incident_kpi_missed_total", **labels, kpi="mttr") is None
