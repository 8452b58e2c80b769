"""Argo CD integration: the StampedePolicy health check (run in Lua 5.1 via lupa, as Argo CD's
gopher-lua runs it), the argocd-cm patch generated from it, and the Application examples."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import lupa.lua51 as lupa  # a test dependency: a missing lupa must fail, not skip
import yaml

from stampede.actuators.kube import FIELD_MANAGER
from stampede.api.status import PolicyStatus

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "deploy" / "argocd"
HEALTH_KEY = "resource.customizations.health.stampede.aurum.io_StampedePolicy"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("argocd_generate", ARGOCD / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_argocd_cm_patch_embeds_health_lua_verbatim() -> None:
    lua = (ARGOCD / "health.lua").read_text()
    patch_text = (ARGOCD / "argocd-cm-patch.yaml").read_text()
    assert patch_text == _generator().render(lua), "run: python deploy/argocd/generate.py"
    patch = yaml.safe_load(patch_text)
    assert patch["apiVersion"] == "v1"
    assert patch["kind"] == "ConfigMap"
    assert patch["metadata"] == {**patch["metadata"], "name": "argocd-cm", "namespace": "argocd"}
    assert patch["data"] == {HEALTH_KEY: lua}


# -- the health check -------------------------------------------------------------------------


def _to_lua(runtime: Any, value: Any) -> Any:
    """JSON -> Lua the way Argo CD hands `obj` to the script: objects and arrays become tables."""
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def health(obj: dict[str, Any]) -> dict[str, str]:
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    assert runtime.eval("_VERSION") == "Lua 5.1"
    runtime.globals().obj = _to_lua(runtime, obj)
    hs = runtime.execute((ARGOCD / "health.lua").read_text())
    result = dict(hs.items())
    assert set(result) == {"status", "message"}
    assert result["status"] in {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
    return result


T = "2025-01-01T10:00:00Z"


def _condition(type_: str, status: str, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": T,
        "observedGeneration": 3,
    }


def policy(status: dict[str, Any] | None, *, generation: int = 3, **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "stampede.aurum.io/v1alpha1",
        "kind": "StampedePolicy",
        "metadata": {"name": "aurum-cache", "namespace": "aurum-dev", "generation": generation},
        "spec": {"mode": "Enforce", **spec},
    }
    if status is not None:
        # Through the operator's own model: the samples have the exact shape the operator writes.
        obj["status"] = PolicyStatus.model_validate(status).wire()
    return obj


READY = _condition("Ready", "True", "Valid", "The spec is valid.")
IDLE: dict[str, Any] = {
    "observedGeneration": 3,
    "state": "Idle",
    "conditions": [READY, _condition("IncidentActive", "False", "Idle")],
}
INCIDENT: dict[str, Any] = {
    "observedGeneration": 3,
    "state": "Incident",
    "severity": "P1",
    "phase": "cache-stabilization",
    "incident": {
        "id": "20250101-1000",
        "startedAt": T,
        "severity": "P1",
        "phase": "cache-stabilization",
        "phaseStartedAt": T,
    },
    "conditions": [READY, _condition("IncidentActive", "True", "Incident")],
}


def test_idle_and_valid_is_healthy() -> None:
    assert health(policy(IDLE)) == {"status": "Healthy", "message": "Idle: watching"}


def test_incident_is_degraded_with_severity_and_phase() -> None:
    result = health(policy(INCIDENT))
    assert result["status"] == "Degraded"
    assert "severity P1" in result["message"]
    assert "phase cache-stabilization" in result["message"]
    assert "20250101-1000" in result["message"]


def test_escalated_incident_with_conflict_says_so() -> None:
    status = {
        **INCIDENT,
        "incident": {**INCIDENT["incident"], "escalated": True, "escalatedAt": T},
        "conditions": [
            READY,
            _condition("Conflict", "True", "Conflict", "ConfigMap cache-config is reverted by someone else (3 times)."),
        ],
    }
    result = health(policy(status))
    assert result["status"] == "Degraded"
    assert "escalated" in result["message"]
    assert "reverted by someone else" in result["message"]


def test_dry_run_incident_is_degraded_and_says_dry_run() -> None:
    result = health(policy(INCIDENT, mode="DryRun"))
    assert result["status"] == "Degraded"
    assert "DryRun" in result["message"]


def test_rolling_back_is_progressing() -> None:
    status = {**INCIDENT, "state": "RollingBack", "incident": {**INCIDENT["incident"], "recoveringSince": T}}
    result = health(policy(status))
    assert result["status"] == "Progressing"
    assert result["message"].startswith("Rolling back incident 20250101-1000")


def test_suspended() -> None:
    status = {**IDLE, "conditions": [READY, _condition("Suspended", "True", "Suspended")]}
    assert health(policy(status, suspend=True))["status"] == "Suspended"
    assert health(policy(INCIDENT, suspend=True))["status"] == "Suspended"


def test_invalid_spec_is_degraded_with_the_condition_message() -> None:
    message = "severities[0].any[0]: condition 'hitRat < 0.5' names undeclared signal 'hitRat'"
    status = {
        "observedGeneration": 3,
        "state": "Idle",
        "conditions": [_condition("Ready", "False", "InvalidSpec", message)],
    }
    assert health(policy(status)) == {"status": "Degraded", "message": message}


def test_no_status_is_progressing() -> None:
    assert health(policy(None))["status"] == "Progressing"


def test_generation_not_yet_observed_is_progressing() -> None:
    result = health(policy(IDLE, generation=4))
    assert result["status"] == "Progressing"
    assert "generation 4" in result["message"]
    assert health(policy({"state": "Idle"}))["status"] == "Progressing"


# -- Applications -----------------------------------------------------------------------------


def _load(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((ARGOCD / name).read_text())
    assert obj["apiVersion"] == "argoproj.io/v1alpha1"
    assert obj["kind"] == "Application"
    assert obj["metadata"]["namespace"] == "argocd"
    spec = obj["spec"]
    assert spec["project"]
    assert spec["destination"]["server"]
    assert spec["destination"]["namespace"]
    assert {"repoURL", "targetRevision", "path"} <= set(spec["source"])
    return obj


def test_operator_application_points_at_the_cluster_overlay() -> None:
    app = _load("application.yaml")
    assert (ROOT / app["spec"]["source"]["path"] / "kustomization.yaml").is_file()
    assert app["spec"]["destination"]["namespace"] == "stampede-system"


def test_workloads_application_keeps_self_heal_off_the_mitigations() -> None:
    app = _load("example-workloads-application.yaml")
    spec = app["spec"]
    assert spec["syncPolicy"]["automated"]["selfHeal"] is True
    assert "RespectIgnoreDifferences=true" in spec["syncPolicy"]["syncOptions"]
    ignored = {(d["group"], d["kind"]): d for d in spec["ignoreDifferences"]}
    for key in [
        ("", "ConfigMap"),
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("autoscaling", "HorizontalPodAutoscaler"),
    ]:
        assert ignored[key]["managedFieldsManagers"] == [FIELD_MANAGER]
