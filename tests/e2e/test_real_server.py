"""What a real API server enforces, survived by the real `stampede run` on the strict harness (issue 9).

Each case is something the lenient harness let through and a real cluster refuses or does: a kubectl-applied
ConfigMap whose annotations already hold a copy of a large value, an event message over 1024 bytes, the
OwnerReferencesPermissionEnforcement admission plugin, and the controllers that write between the operator's
reads and writes. (The SIGKILL between a target write and its status write, under the journal, is
tests/faults/test_operator_kills.py.)
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from stampede.actuators.journals import COMPONENT_LABEL, JOURNAL_OF
from tests.e2e import policies
from tests.e2e.conftest import HEALTHY_HIT_RATE, Case, condition
from tests.e2e.stack import JOURNAL_NAMESPACE, Stack

pytestmark = pytest.mark.timeout(240)

UNHEALTHY = 0.2
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ANNOTATIONS_LIMIT = 256 * 1024
WORKER_HPA: dict[str, Any] = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "aurum-worker"},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "aurum-worker"},
        "minReplicas": 2,
        "maxReplicas": 10,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
            }
        ],
    },
}


def one_phase(*actions: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "immediate", "after": "0s", "actions": list(actions)}]


def incident_then_recovery(case: Case, name: str, *, applied: int) -> dict[str, Any]:
    """Open an incident, wait until `applied` changes are held, recover, wait until Idle; the held status."""
    case.set(hit_rate=UNHEALTHY)
    held = case.wait_status(
        name, f"{applied} changes applied", lambda s: len(s.get("applied") or []) == applied, timeout=90
    )
    case.set(hit_rate=HEALTHY_HIT_RATE)
    case.wait_status(
        name, "rolled back and idle", lambda s: s.get("state") == "Idle" and not s.get("applied"), timeout=90
    )
    return held


def annotations_size(obj: dict[str, Any]) -> int:
    annotations = obj["metadata"].get("annotations") or {}
    return sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())


def test_a_130_kib_key_of_a_kubectl_applied_configmap_is_mitigated_and_rolled_back_byte_exactly(
    case: Case, tmp_path: Path
) -> None:
    original, override = "o" * (130 * 1024), "n" * (130 * 1024)
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "banner-config", "namespace": case.ns},
        "data": {"BANNER": original, "OTHER": "kept"},
    }
    (tmp_path / "cm.json").write_text(json.dumps(manifest))
    case.kubectl("apply", "-f", str(tmp_path / "cm.json"))
    before = case.configmap("banner-config")
    assert len(before["metadata"]["annotations"][LAST_APPLIED]) > 130 * 1024, "kubectl keeps its copy"
    case.create_ready(
        "big",
        phases=one_phase({"name": "banner", "configMap": {"name": "banner-config", "data": {"BANNER": override}}}),
    )

    case.set(hit_rate=UNHEALTHY)
    case.wait_status(
        "big", "banner applied", lambda s: [c["action"] for c in s.get("applied") or []] == ["banner"], timeout=90
    )
    during = case.configmap("banner-config")
    assert during["data"]["BANNER"] == override
    assert annotations_size(during) < ANNOTATIONS_LIMIT, "no annotation grows with the overridden value"
    case.set(hit_rate=HEALTHY_HIT_RATE)
    case.wait_status("big", "rolled back", lambda s: s.get("state") == "Idle" and not s.get("applied"), timeout=90)

    after = case.configmap("banner-config")
    assert after["data"] == before["data"]
    assert after["metadata"].get("annotations") == before["metadata"].get("annotations")
    assert not case.events("big", "ActionFailed"), [e.message for e in case.events("big", "ActionFailed")]


def test_an_action_applied_event_over_1024_bytes_uncut_still_lands(case: Case) -> None:
    banner = "本日はメンテナンスのため一部機能を停止しています。" * 20  # ~1.4 KB of UTF-8 in the event
    case.create_ready(
        "banner",
        phases=one_phase({"name": "banner", "configMap": {"name": policies.API_CONFIG, "data": {"BANNER": banner}}}),
    )

    case.set(hit_rate=UNHEALTHY)
    case.stack.wait_for("ActionApplied posted", lambda: case.events("banner", "ActionApplied"), timeout=90)

    (event,) = case.events("banner", "ActionApplied")
    assert len(event.message.encode()) <= 1024
    assert event.message.startswith("Set BANNER=本日は")
    event.message.encode().decode("utf-8")  # cut on a character boundary
    case.set(hit_rate=HEALTHY_HIT_RATE)
    case.wait_status("banner", "rolled back", lambda s: s.get("state") == "Idle" and not s.get("applied"), timeout=90)


def test_a_job_is_created_where_owner_references_permission_enforcement_is_on(case: Case, stack: Stack) -> None:
    assert stack.harness.store.strictness.owner_references_permission_enforcement
    case.create_ready("warm", phases=one_phase({"name": "warm-cache", "job": {"fromCronJob": policies.CRONJOB}}))

    case.set(hit_rate=UNHEALTHY)
    stack.wait_for("one Job", lambda: len(case.jobs("warm")) == 1, timeout=90)

    (job,) = case.jobs("warm")
    (owner,) = job["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner.get("blockOwnerDeletion")) == ("CronJob", policies.CRONJOB, None)
    assert len(job["metadata"]["name"]) <= 63
    assert not case.events("warm", "ActionFailed"), [e.message for e in case.events("warm", "ActionFailed")]
    case.set(hit_rate=HEALTHY_HIT_RATE)
    case.wait_status("warm", "closed", lambda s: s.get("state") == "Idle" and s.get("history"), timeout=90)


@pytest.fixture
def hpa_case(stack: Stack, request: pytest.FixtureRequest) -> Any:
    created = Case(stack, request.node.name.removeprefix("test_"), extra=[WORKER_HPA])
    yield created
    created.cleanup()


def test_scaling_under_an_hpa_controller_and_during_rollout_churn_never_fails(hpa_case: Case, stack: Stack) -> None:
    strict = stack.harness.store.strictness
    assert strict.hpa_controller and strict.rollout_controller
    case = hpa_case
    before = case.snapshot()
    phases = one_phase(
        # The restart starts a rollout; the scale right after meets the rollout controller's status writes.
        {
            "name": "api-config",
            "configMap": {
                "name": policies.API_CONFIG,
                "data": {"AURUM_API_CIRCUIT_BREAKER_ENABLED": "true"},
                "restart": [{"kind": "Deployment", "name": policies.API}],
            },
        },
        {"name": "scale-api", "scale": {"kind": "Deployment", "name": policies.API, "replicas": 6}},
        {"name": "scale-worker", "scale": {"kind": "Deployment", "name": "aurum-worker", "replicas": 8}},
    )
    case.create_ready("churn", phases=phases)

    held = incident_then_recovery(case, "churn", applied=3)

    kinds = {c["action"]: c["kind"] for c in held["applied"]}
    assert kinds == {"api-config": "ConfigMap", "scale-api": "Deployment", "scale-worker": "HorizontalPodAutoscaler"}
    failed = case.events("churn", "ActionFailed")
    assert failed == [], [e.message for e in failed]
    assert condition(case.status("churn"), "Ready").get("status") == "True"
    after = case.snapshot()
    restored = [f"ConfigMap/{policies.API_CONFIG}", "HorizontalPodAutoscaler/aurum-worker"]
    assert {k: after[k] for k in restored} == {k: before[k] for k in restored}
    # The rollout controller never touches replicas; the worker's are the HPA controller's to keep.
    assert after[f"Deployment/{policies.API}"]["replicas"] == before[f"Deployment/{policies.API}"]["replicas"]


def journal_secrets(stack: Stack, policy: str) -> list[Any]:
    """The journal Secrets of one policy, in the operator's namespace (found by their annotation)."""
    items = stack.core.list_namespaced_secret(JOURNAL_NAMESPACE, label_selector=f"{COMPONENT_LABEL}=journal").items
    return [s for s in items if (s.metadata.annotations or {}).get(JOURNAL_OF) == policy]


def test_a_900_kib_original_is_never_shown_to_the_policy_and_is_rolled_back_byte_exactly(
    case: Case, stack: Stack, tmp_path: Path
) -> None:
    # Near the ConfigMap's 1 MiB: applied server-side (a client-side apply would copy it into an annotation,
    # over the 256 KiB a real server allows). The marker stands for a value the policy's author may not read.
    marker = "ORIGINAL-VALUE-THE-AUTHOR-CANNOT-READ"
    original = marker + "o" * (900 * 1024)
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "banner-config", "namespace": case.ns},
        "data": {"BANNER": original, "OTHER": "kept"},
    }
    (tmp_path / "cm.json").write_text(json.dumps(manifest))
    case.kubectl("apply", "--server-side", "-f", str(tmp_path / "cm.json"))
    before = case.configmap("banner-config")
    case.create_ready(
        "huge",
        phases=one_phase({"name": "banner", "configMap": {"name": "banner-config", "data": {"BANNER": "be patient"}}}),
    )

    case.set(hit_rate=UNHEALTHY)
    held = case.wait_status(
        "huge", "banner applied", lambda s: [c["action"] for c in s.get("applied") or []] == ["banner"], timeout=90
    )
    assert held["applied"][0]["original"] == {"BANNER": "sha256:" + hashlib.sha256(original.encode()).hexdigest()}
    assert marker not in json.dumps(held), "status shows a digest, never the original"
    (secret,) = journal_secrets(stack, f"{case.ns}/huge")
    assert base64.b64decode(secret.data["BANNER"]).decode() == original, "the journal Secret holds it, whole"
    assert case.configmap("banner-config")["data"]["BANNER"] == "be patient"

    case.set(hit_rate=HEALTHY_HIT_RATE)
    idle = case.wait_status(
        "huge", "rolled back", lambda s: s.get("state") == "Idle" and not s.get("applied"), timeout=90
    )

    assert case.configmap("banner-config")["data"] == before["data"]
    assert journal_secrets(stack, f"{case.ns}/huge") == [], "rolled back: its journal Secret is gone"
    assert marker not in json.dumps(idle)
    events = stack.core.list_namespaced_event(case.ns).items
    assert any(e.reason == "ActionRolledBack" for e in events)
    assert not [e.message for e in events if marker in (e.message or "")], "no event names the original"
    assert not case.events("huge", "ActionFailed"), [e.message for e in case.events("huge", "ActionFailed")]
