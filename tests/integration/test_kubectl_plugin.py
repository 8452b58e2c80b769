"""`kubectl-stampede` run as a user runs it: the installed console script, a kubeconfig, the API server.

The API server is the emulated one (tests/harness) with the repo's CRDs; policies, their status and
their events are written through the official client as the operator would have written them. The
plugin runs in its own process with stdout a pipe (not a terminal), so its output must carry no colour,
and with COLUMNS set the way a narrow terminal sets it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
import pytest
import yaml
from PIL import Image

from stampede.actuators.records import Records
from stampede.api.incident import (
    ChangeOutcome,
    ChangeRecord,
    IncidentRecordStatus,
    PhaseRecord,
    RecordState,
    TimelineEntry,
)
from stampede.api.spec import Severity
from stampede.api.status import KPI, AppliedChange
from stampede.engine.records import describe_change
from tests.harness.server import HarnessThread
from tests.support.kube import REPO, make_kube

GROUP, VERSION, PLURAL = "stampede.aurum.io", "v1alpha1", "stampedepolicies"
NOW = datetime.now(UTC).replace(microsecond=0)
STARTED = NOW - timedelta(minutes=7)
ANSI = re.compile(r"\x1b\[")


def _t(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _policy(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    body = {
        "templateRef": {"kind": "ClusterStampedePolicyTemplate", "name": "cache-stampede-runbook"},
        "arguments": {"service": name},
        **spec,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "StampedePolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def _condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": _t(STARTED)}


IN_INCIDENT = {
    "state": "Incident",
    "severity": "P1",
    "phase": "immediate-mitigation",
    "templateGeneration": 2,
    "signals": [{"name": "hitRate", "value": "0.42"}, {"name": "dbConnections", "value": "120"}],
    "incident": {
        "id": "20261203-081203",
        "startedAt": _t(STARTED),
        "severity": "P1",
        "phase": "immediate-mitigation",
        "maxPhase": "immediate-mitigation",
        "phaseStartedAt": _t(STARTED),
        "nextPhaseAt": _t(STARTED + timedelta(minutes=5)),
    },
    "applied": [
        {
            "action": "circuit-breaker-and-coalescing",
            "kind": "ConfigMap",
            "name": "checkout-config",
            "incident": "20261203-081203",
            "appliedAt": _t(STARTED + timedelta(seconds=1)),
            "original": {"CIRCUIT_BREAKER_ENABLED": "false", "REQUEST_COALESCING_ENABLED": None},
            "applied": {"CIRCUIT_BREAKER_ENABLED": "true", "REQUEST_COALESCING_ENABLED": "true"},
        },
        {
            "action": "scale-service",
            "kind": "Deployment",
            "name": "checkout",
            "incident": "20261203-081203",
            "appliedAt": _t(STARTED + timedelta(seconds=2)),
            "original": {"replicas": "3"},
            "applied": {"replicas": "12"},
        },
    ],
    "history": [
        {
            "id": "20261202-101500",
            "severity": "P2",
            "startedAt": _t(NOW - timedelta(days=1)),
            "closedAt": _t(NOW - timedelta(days=1) + timedelta(minutes=20)),
            "durationSeconds": 1200,
            "maxPhase": "cache-stabilization",
            "escalated": False,
        }
    ],
    "conditions": [
        _condition("Ready", "True", "Valid"),
        _condition("MetricsAvailable", "True", "AllKnown"),
        _condition("IncidentActive", "True", "IncidentOpened", "P1 incident open"),
    ],
}
IDLE = {"state": "Idle", "conditions": [_condition("Ready", "True", "Valid")], "templateGeneration": 2}
EVENTS = [
    (0, "IncidentOpened", "Opened P1 incident 20261203-081203 for checkout: missRate > 0.8 held for 1m."),
    (
        1,
        "ActionApplied",
        "Applied circuit-breaker-and-coalescing to ConfigMap checkout-config: CIRCUIT_BREAKER_ENABLED false → true.",
    ),
    (2, "ActionApplied", "Applied scale-service to Deployment checkout: replicas 3 → 12."),
    (-3600, "IncidentClosed", "An older incident's event, outside this incident's window."),
]


def _records() -> list[tuple[str, IncidentRecordStatus]]:
    """The records the operator keeps for `checkout`: its open incident and the one closed yesterday."""
    applied = [AppliedChange.model_validate(change) for change in IN_INCIDENT["applied"]]
    opened = IncidentRecordStatus(
        policy="checkout",
        severity=Severity.P1,
        phase="immediate-mitigation",
        started_at=STARTED,
        first_breach_at=STARTED - timedelta(minutes=1),
        phases=[PhaseRecord(name="immediate-mitigation", entered_at=STARTED)],
        changes=[
            ChangeRecord(
                action=c.action,
                kind=c.kind,
                name=c.name,
                applied_at=c.applied_at,
                outcome=ChangeOutcome.APPLIED,
                message=describe_change(c),
            )
            for c in applied
        ],
        timeline=[
            TimelineEntry(time=STARTED + timedelta(seconds=offset), reason=reason, message=message)
            for offset, reason, message in EVENTS
            if offset >= 0
        ],
        kpis=[
            KPI(name="detection", seconds=60, target="2m", met=True),
            KPI(name="mitigation", seconds=62, target="5m", met=True),
            KPI(name="stabilization", target="15m"),
            KPI(name="mttr", target="15m"),
            KPI(name="fullRecovery", target="30m"),
        ],
    )
    yesterday = NOW - timedelta(days=1)
    closed = IncidentRecordStatus(
        policy="checkout",
        state=RecordState.CLOSED,
        severity=Severity.P2,
        phase="cache-stabilization",
        started_at=yesterday,
        first_breach_at=yesterday - timedelta(minutes=1),
        recovered_at=yesterday + timedelta(minutes=15),
        closed_at=yesterday + timedelta(minutes=20),
        kpis=[KPI(name="detection", seconds=60, target="2m", met=True)],
    )
    return [("20261203-081203", opened), ("20261202-101500", closed)]


def _seed(harness: HarnessThread, *, records: bool) -> None:
    """Policies with the status, events and (with `records`) StampedeIncident records the operator writes."""
    harness.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("shop", "pricing")])
    harness.apply(
        [
            d
            for d in yaml.safe_load_all((REPO / "examples" / "many-services.yaml").read_text())
            if "Template" in d["kind"]
        ]
    )
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(harness.kubeconfig), client_configuration=config)
    api = kubernetes.client.ApiClient(config)
    custom = kubernetes.client.CustomObjectsApi(api)
    for namespace, name, status in (
        ("shop", "checkout", IN_INCIDENT),
        ("shop", "search", IDLE),
        ("pricing", "pricing-recommendations-api", IDLE),
    ):
        created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _policy(namespace, name))
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": status})
        if records and name == "checkout":
            # Written by the operator's own record writer, as the operator writes them.
            writer, uid = Records(make_kube(harness)), created["metadata"]["uid"]
            for incident, record in _records():
                writer.create(namespace, policy=name, policy_uid=uid, incident=incident, status=record)
    core = kubernetes.client.CoreV1Api(api)
    for i, (offset, reason, message) in enumerate(EVENTS):
        when = _t(STARTED + timedelta(seconds=offset))
        core.create_namespaced_event(
            "shop",
            {
                "metadata": {"name": f"checkout.{i}", "namespace": "shop"},
                "involvedObject": {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "StampedePolicy",
                    "name": "checkout",
                    "namespace": "shop",
                },
                "reason": reason,
                "message": message,
                "type": "Normal",
                "firstTimestamp": when,
                "lastTimestamp": when,
                "source": {"component": "stampede-operator"},
            },
        )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessThread]:
    tmp = tmp_path_factory.mktemp("plugin")
    with HarnessThread(crds=[REPO / "crds"], kubeconfig=tmp / "kubeconfig") as harness:
        _seed(harness, records=True)
        yield harness


@pytest.fixture(scope="module")
def cluster_without_records(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessThread]:
    """A cluster whose operator predates StampedeIncident: the kind is not served (404)."""
    tmp = tmp_path_factory.mktemp("plugin-old")
    crds = [p for p in (REPO / "crds").glob("*.yaml") if not p.name.startswith("stampedeincidents.")]
    with HarnessThread(crds=crds, kubeconfig=tmp / "kubeconfig") as harness:
        _seed(harness, records=False)
        yield harness


def plugin(
    cluster: HarnessThread, *args: str, columns: int = 200, kubeconfig: bool = True
) -> subprocess.CompletedProcess[str]:
    binary = pathlib.Path(sys.executable).with_name("kubectl-stampede")
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "NO_COLOR", "FORCE_COLOR")}
    env["COLUMNS"] = str(columns)
    if kubeconfig:
        env["KUBECONFIG"] = str(cluster.kubeconfig)
    return subprocess.run([str(binary), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def ok(cluster: HarnessThread, *args: str, columns: int = 200) -> str:
    done = plugin(cluster, *args, columns=columns)
    assert done.returncode == 0, done.stderr
    assert not ANSI.search(done.stdout), "no colour or control codes when stdout is not a terminal"
    return done.stdout


def test_get_lists_the_policies_of_the_namespace_with_state_severity_phase_and_last_incident(
    cluster: HarnessThread,
) -> None:
    lines = ok(cluster, "get", "-n", "shop").splitlines()
    assert lines[0].split() == ["NAME", "STATE", "SEVERITY", "PHASE", "LAST", "INCIDENT", "KPIS", "MET", "AGE"]
    checkout = next(line for line in lines if line.startswith("checkout"))
    assert checkout.split()[:4] == ["checkout", "Incident", "P1", "immediate-mitigation"]
    assert re.search(r"\b\d+m \(open\)", checkout), "the incident opened minutes ago and is still open"
    search = next(line for line in lines if line.startswith("search"))
    assert search.split()[:4] == ["search", "Idle", "-", "-"]
    assert not any("pricing" in line for line in lines)


def test_get_uses_the_contexts_namespace_when_none_is_given(cluster: HarnessThread) -> None:
    done = plugin(cluster, "get")  # the harness's context names namespace `default`: nothing there
    assert done.returncode == 0
    assert done.stdout == ""
    assert "No resources found in default namespace." in done.stderr


def test_get_all_namespaces_adds_the_namespace_column_and_wide_adds_the_template(cluster: HarnessThread) -> None:
    lines = ok(cluster, "get", "-A", "-o", "wide").splitlines()
    assert lines[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert lines[0].split()[-3:] == ["MODE", "READY", "TEMPLATE"]
    assert {line.split()[0] for line in lines[1:]} == {"shop", "pricing"}
    assert all(line.split()[-1] == "cstpt/cache-stampede-runbook@2" for line in lines[1:])


def test_get_wide_shows_every_column_even_on_a_narrow_terminal_and_no_line_ends_in_spaces(
    cluster: HarnessThread,
) -> None:
    text = ok(cluster, "get", "-A", "-o", "wide", columns=60)
    assert text.splitlines()[0].split()[-1] == "TEMPLATE"
    assert "cstpt/cache-stampede-runbook@2" in text
    assert all(line == line.rstrip() for line in text.splitlines())


@pytest.mark.parametrize("output", ["json", "yaml"])
def test_get_prints_the_objects_as_a_list_in_json_or_yaml(cluster: HarnessThread, output: str) -> None:
    text = ok(cluster, "get", "-A", "-o", output)
    document = json.loads(text) if output == "json" else yaml.safe_load(text)
    assert document["kind"] == "List"
    assert sorted(item["metadata"]["name"] for item in document["items"]) == [
        "checkout",
        "pricing-recommendations-api",
        "search",
    ]


def test_on_a_narrow_terminal_get_drops_the_least_useful_columns_and_never_wraps_a_name(cluster: HarnessThread) -> None:
    text = ok(cluster, "get", "-A", columns=60)
    lines = text.splitlines()
    assert all(len(line) <= 60 for line in lines), text
    assert lines[0].split()[:3] == ["NAMESPACE", "NAME", "STATE"]
    assert "AGE" not in lines[0] and "KPIS" not in lines[0]
    assert any("pricing-recommendations-api" in line for line in lines), "names stay whole"
    assert len(lines) == 4, "one line per policy"


def test_describe_tells_the_open_incident_as_a_timeline_with_its_changes(cluster: HarnessThread) -> None:
    text = ok(cluster, "describe", "checkout", "-n", "shop")
    lines = text.splitlines()
    assert re.fullmatch(r"Incident 20261203-081203: P1, open, \d+m\d+s so far", lines[0]), lines[0]
    assert re.search(r"Template:\s+cstpt/cache-stampede-runbook@2", text)
    assert "hitRate=0.42" in text
    assert "IncidentActive=True" in text
    timeline = text[text.index("Timeline:") : text.index("Changes:")]
    reasons = [r for r in ("IncidentOpened", "ActionApplied") if r in timeline]
    assert reasons == ["IncidentOpened", "ActionApplied"]
    assert timeline.index("IncidentOpened") < timeline.index("scale-service")
    assert "+0s" in timeline and "+2s" in timeline
    assert "older incident" not in timeline, "events outside the incident are left out"
    changes = text[text.index("Changes:") : text.index("KPIs:")]
    assert "ConfigMap/checkout-config" in changes and "CIRCUIT_BREAKER_ENABLED: false → true" in changes
    assert "REQUEST_COALESCING_ENABLED: (absent) → true" in changes, "the record's words for a key that did not exist"
    assert "Deployment/checkout" in changes and "replicas: 3 → 12" in changes
    kpis = {line.split()[0]: line.split()[1:] for line in text[text.index("KPIs:") :].splitlines()[2:] if line.strip()}
    assert kpis["detection"] == ["1m0s", "2m", "yes"]
    assert kpis["stabilization"] == ["<none>", "15m", "-"], "a KPI still open is neither met nor missed"


def test_without_the_records_kind_describe_tells_the_incident_from_status_and_events(
    cluster_without_records: HarnessThread,
) -> None:
    text = ok(cluster_without_records, "describe", "checkout", "-n", "shop")
    assert text.splitlines()[0].startswith("Incident 20261203-081203: P1, open")
    timeline = text[text.index("Timeline:") : text.index("Changes:")]
    assert "IncidentOpened" in timeline and "older incident" not in timeline
    changes = text[text.index("Changes:") :]
    assert "REQUEST_COALESCING_ENABLED: ∅ → true" in changes, "a key that did not exist shows as ∅"
    assert "KPIs:" not in text


def test_describe_on_a_narrow_terminal_stays_within_its_width(cluster: HarnessThread) -> None:
    text = ok(cluster, "describe", "checkout", "-n", "shop", columns=60)
    assert all(len(line) <= 60 for line in text.splitlines()), text
    assert "IncidentOpened" in text and "Deployment/checkout" in text


def test_describe_of_a_policy_without_incidents_says_so(cluster: HarnessThread) -> None:
    text = ok(cluster, "describe", "search", "-n", "shop")
    assert text.startswith("No incident yet")


def test_incidents_lists_the_open_and_past_incidents_newest_first(cluster: HarnessThread) -> None:
    lines = ok(cluster, "incidents", "checkout", "-n", "shop").splitlines()
    assert lines[0].split()[:3] == ["POLICY", "INCIDENT", "STATE"]
    assert lines[1].split()[:4] == ["checkout", "20261203-081203", "Open", "P1"]
    assert lines[2].split()[:4] == ["checkout", "20261202-101500", "Closed", "P2"]
    assert "20m0s" in lines[2]
    assert lines[0].split()[-2:] == ["KPIS", "MET"]
    assert lines[1].split()[-1] == "2/5" and lines[2].split()[-1] == "1/1"


def test_incidents_lists_the_records_across_namespaces_as_json(cluster: HarnessThread) -> None:
    document = json.loads(ok(cluster, "incidents", "-A", "-o", "json"))
    assert sorted(item["metadata"]["name"] for item in document["items"]) == [
        "checkout-20261202-101500",
        "checkout-20261203-081203",
    ]
    assert {item["kind"] for item in document["items"]} == {"StampedeIncident"}


def test_without_the_records_kind_incidents_come_from_the_policys_status(
    cluster_without_records: HarnessThread,
) -> None:
    lines = ok(cluster_without_records, "incidents", "checkout", "-n", "shop").splitlines()
    assert lines[0].split()[:3] == ["POLICY", "INCIDENT", "STATE"]
    assert lines[1].split()[:4] == ["checkout", "20261203-081203", "Open", "P1"]
    assert lines[2].split()[:4] == ["checkout", "20261202-101500", "Closed", "P2"]


def test_a_missing_policy_is_an_error_from_the_server_with_exit_code_1(cluster: HarnessThread) -> None:
    for args in (
        ("describe", "nope", "-n", "shop"),
        ("suspend", "nope", "-n", "shop"),
        ("incidents", "nope", "-n", "shop"),
    ):
        done = plugin(cluster, *args)
        assert done.returncode == 1, args
        assert (
            done.stderr.strip() == 'Error from server (NotFound): stampedepolicies.stampede.aurum.io "nope" not found'
        )
        assert done.stdout == ""


def test_an_unknown_context_or_a_missing_kubeconfig_is_an_error(cluster: HarnessThread) -> None:
    done = plugin(cluster, "get", "--context", "no-such-context")
    assert done.returncode == 1 and "no-such-context" in done.stderr
    done = plugin(cluster, "get", "--kubeconfig", "/nonexistent/kubeconfig", kubeconfig=False)
    assert done.returncode == 1 and done.stderr.startswith("error:")
    done = plugin(
        cluster, "get", "--context", "harness", "--kubeconfig", str(cluster.kubeconfig), "-n", "shop", kubeconfig=False
    )
    assert done.returncode == 0 and "checkout" in done.stdout


def test_suspend_hold_and_rollback_now_patch_the_policy_and_resume_and_release_undo_them(
    cluster: HarnessThread,
) -> None:
    def read() -> dict[str, Any]:
        return json.loads(ok(cluster, "get", "-n", "pricing", "-o", "json"))["items"][0]

    name = "pricing-recommendations-api"
    assert ok(cluster, "suspend", name, "-n", "pricing").strip() == f"stampedepolicy.{GROUP}/{name} suspended"
    assert read()["spec"]["suspend"] is True
    assert "Idle,Suspended" in ok(cluster, "get", "-n", "pricing")
    ok(cluster, "hold", name, "-n", "pricing")
    assert read()["metadata"]["annotations"]["stampede.aurum.io/hold"] == "true"
    ok(cluster, "rollback-now", name, "-n", "pricing")
    assert read()["metadata"]["annotations"]["stampede.aurum.io/rollback-now"] == "true"
    ok(cluster, "release", name, "-n", "pricing")
    assert "stampede.aurum.io/hold" not in (read()["metadata"].get("annotations") or {})
    ok(cluster, "resume", name, "-n", "pricing")
    assert read()["spec"]["suspend"] is False
    assert read()["spec"]["templateRef"]["name"] == "cache-stampede-runbook", "the rest of the spec is untouched"


def test_report_writes_the_same_postmortem_draft_and_plot_as_stampede_report(
    cluster: HarnessThread, tmp_path: pathlib.Path
) -> None:
    nowhere = f"http://127.0.0.1:{_closed_port()}"  # no history: the draft says so, and is written all the same
    plugin_dir, cli_dir = tmp_path / "plugin", tmp_path / "cli"
    done = plugin(cluster, "report", "checkout", "-n", "shop", "--prometheus", nowhere, "--output-dir", str(plugin_dir))
    assert done.returncode == 0, done.stderr
    name = "checkout-20261203-081203"
    assert done.stdout.splitlines() == [str(plugin_dir / f"{name}.md"), str(plugin_dir / f"{name}.png")]
    markdown = (plugin_dir / f"{name}.md").read_text()
    assert markdown.startswith("# Postmortem draft: cache stampede in shop/checkout, incident 20261203-081203")
    assert "| detection | 1m | 2m | yes |" in markdown
    assert "CIRCUIT_BREAKER_ENABLED: false → true" in markdown
    with Image.open(plugin_dir / f"{name}.png") as image:
        assert image.format == "PNG" and image.size[0] > 0
    # The same command as `stampede report`: the same files from the same record.
    stampede = pathlib.Path(sys.executable).with_name("stampede")
    argv = [str(stampede), "report", "checkout", "-n", "shop", "--prometheus", nowhere, "--output-dir", str(cli_dir)]
    argv += ["--kubeconfig", str(cluster.kubeconfig)]
    direct = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert direct.returncode == 0, direct.stderr
    assert (cli_dir / f"{name}.md").read_text() == markdown


def test_report_uses_the_contexts_namespace_and_fails_like_kubectl_for_a_missing_policy(
    cluster: HarnessThread, tmp_path: pathlib.Path
) -> None:
    done = plugin(cluster, "report", "checkout", "--output-dir", str(tmp_path))  # context namespace: default
    assert done.returncode == 1
    assert "default/checkout" in done.stderr
    assert not list(tmp_path.iterdir())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
