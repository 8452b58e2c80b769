"""Three services run from one ClusterStampedePolicyTemplate, and one edit of the template reaches all three.

The real `stampede run -A` serves the template kinds through kopf indices; each service lives in its own
namespace (its own copy of the demo cluster and exporter label) and its policy is three lines: a
templateRef and its arguments.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import policies
from tests.e2e.conftest import Case, condition
from tests.e2e.stack import GROUP, VERSION, Stack

TEMPLATES = "clusterstampedepolicytemplates"
_names = itertools.count(1)


def _runbook(name: str) -> dict[str, Any]:
    """The e2e policy with the exporter label and the scale target's replicas as parameters."""
    spec = policies.policy("x", "x", "$(case)")["spec"]
    spec["phases"][0]["actions"][1]["scale"]["replicas"] = "$(replicas)"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterStampedePolicyTemplate",
        "metadata": {"name": name},
        "spec": {
            "parameters": [
                {"name": "case", "description": "exporter label of the service"},
                {"name": "replicas", "default": "6"},
            ],
            "policy": spec,
        },
    }


@pytest.fixture
def services(stack: Stack) -> Iterator[list[Case]]:
    cases = [Case(stack, f"templated-{service}") for service in ("checkout", "search", "pricing")]
    yield cases
    for case in cases:
        case.cleanup()


def test_three_services_run_from_one_cluster_template_and_a_template_edit_reaches_all_three(
    stack: Stack, services: list[Case]
) -> None:
    name = f"e2e-runbook-{next(_names)}"
    template = _runbook(name)
    stack.custom.create_cluster_custom_object(GROUP, VERSION, TEMPLATES, template)
    try:
        for case, replicas in zip(services, ("6", "7", "8"), strict=True):
            case.stack.apply_policy(
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "StampedePolicy",
                    "metadata": {"name": "svc", "namespace": case.ns},
                    "spec": {
                        "templateRef": {"kind": "ClusterStampedePolicyTemplate", "name": name},
                        "arguments": {"case": case.label, "replicas": replicas},
                    },
                }
            )
            case.policies.append("svc")
        first = stack.custom.get_cluster_custom_object(GROUP, VERSION, TEMPLATES, name)["metadata"]["generation"]
        for case in services:
            status = case.wait_status(
                "svc",
                "rendered from the template and polling",
                lambda s: condition(s, "MetricsAvailable").get("status") == "True" and s.get("templateGeneration"),
            )
            assert status["templateGeneration"] == first
            assert condition(status, "Ready")["status"] == "True", status
            assert status.get("state") in (None, "Idle"), "a healthy hit rate opens nothing under the first version"

        # The edit: the runbook now treats the services' 0.95 hit rate as a stampede.
        edited = copy.deepcopy(template["spec"])
        edited["policy"]["severities"][1]["any"] = ["hitRate < 0.99"]
        edited["policy"]["recovery"]["all"] = ["hitRate > 0.999"]
        stack.custom.patch_cluster_custom_object(GROUP, VERSION, TEMPLATES, name, {"spec": edited})
        second = stack.custom.get_cluster_custom_object(GROUP, VERSION, TEMPLATES, name)["metadata"]["generation"]
        assert second != first

        for case, replicas in zip(services, (6, 7, 8), strict=True):
            status = case.wait_status(
                "svc",
                "the edited template in force: an incident with the service's own arguments",
                lambda s: s.get("templateGeneration") == second and len(s.get("applied") or []) >= 2,
            )
            assert status["state"] == "Incident"
            assert case.stack.replicas(case.ns, policies.API) == replicas
    finally:
        stack.custom.delete_cluster_custom_object(GROUP, VERSION, TEMPLATES, name)


def test_a_policy_naming_a_missing_template_or_argument_is_invalid_and_names_it(case: Case) -> None:
    name = f"e2e-runbook-{next(_names)}"
    missing = {"kind": "ClusterStampedePolicyTemplate", "name": name}
    case.stack.apply_policy(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "StampedePolicy",
            "metadata": {"name": "svc", "namespace": case.ns},
            "spec": {"templateRef": missing, "arguments": {"cse": case.label}},
        }
    )
    case.policies.append("svc")
    status = case.wait_status("svc", "InvalidSpec", lambda s: condition(s, "Ready").get("reason") == "InvalidSpec")
    assert f"ClusterStampedePolicyTemplate {name} not found" in condition(status, "Ready")["message"]
    (event,) = case.events("svc", "InvalidSpec")
    assert f"ClusterStampedePolicyTemplate {name} not found" in event.message

    case.stack.custom.create_cluster_custom_object(GROUP, VERSION, TEMPLATES, _runbook(name))
    try:
        status = case.wait_status(
            "svc", "InvalidSpec naming the argument", lambda s: "'cse'" in condition(s, "Ready").get("message", "")
        )
        message = condition(status, "Ready")["message"]
        assert "unknown argument 'cse'" in message and "missing argument 'case'" in message, message
    finally:
        case.stack.custom.delete_cluster_custom_object(GROUP, VERSION, TEMPLATES, name)


def test_a_namespaced_template_serves_its_namespace_and_the_policys_own_mode_wins(case: Case) -> None:
    template = _runbook("team-runbook")
    template["kind"] = "StampedePolicyTemplate"
    template["metadata"]["namespace"] = case.ns
    case.stack.custom.create_namespaced_custom_object(GROUP, VERSION, case.ns, "stampedepolicytemplates", template)
    case.stack.apply_policy(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "StampedePolicy",
            "metadata": {"name": "svc", "namespace": case.ns},
            "spec": {
                "templateRef": {"kind": "StampedePolicyTemplate", "name": "team-runbook"},
                "arguments": {"case": case.label},
                "mode": "DryRun",
            },
        }
    )
    case.policies.append("svc")
    case.wait_status("svc", "rendered and polling", lambda s: condition(s, "MetricsAvailable").get("status") == "True")
    before = case.snapshot()
    case.set(hit_rate=0.2)
    status = case.wait_status("svc", "planned changes in DryRun", lambda s: len(s.get("planned") or []) >= 2)
    assert status["state"] == "Incident"
    assert not status.get("applied"), "the policy's own mode: DryRun is laid over the template's Enforce"
    assert case.snapshot() == before
