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
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
import pytest
import yaml

from tests.harness.server import HarnessThread
from tests.support.kube import REPO

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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HarnessThread]:
    tmp = tmp_path_factory.mktemp("plugin")
    with HarnessThread(crds=[REPO / "crds"], kubeconfig=tmp / "kubeconfig") as harness:
        harness.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in ("shop", "pricing")])
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(harness.kubeconfig), client_configuration=config)
        api = kubernetes.client.ApiClient(config)
        custom = kubernetes.client.CustomObjectsApi(api)
        for namespace, name, status in (
            ("shop", "checkout", IN_INCIDENT),
            ("shop", "search", IDLE),
            ("pricing", "pricing-recommendations-api", IDLE),
        ):
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _policy(namespace, name))
            custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": status})
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
    changes = text[text.index("Changes:") :]
    assert "ConfigMap/checkout-config" in changes and "CIRCUIT_BREAKER_ENABLED: false → true" in changes
    assert "REQUEST_COALESCING_ENABLED: ∅ → true" in changes, "a key that did not exist shows as ∅"
    assert "Deployment/checkout" in changes and "replicas: 3 → 12" in changes


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
