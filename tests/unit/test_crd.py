"""The generated CRD: committed copy is current, schema is structural and useful, examples fit it.

The API server refuses a CRD whose schema is not structural and `kubectl explain` is only as good as
its descriptions, so both are checked over every node of the schema here, not just spot-checked.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stampede.api.crd import render_crd, render_crd_yaml
from stampede.api.spec import PolicySpec
from stampede.api.status import PolicyStatus

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "crds" / "stampedepolicies.stampede.aurum.io.yaml"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
CORPUS = REPO / "tests" / "lint-corpus"
# Broken policies a plain OpenAPI schema can reject, without the models or CEL.
SCHEMA_CATCHES = ["bad-duration", "bad-operator", "empty-phases", "negative-replicas", "unknown-mode"]

Schema = dict[str, Any]


def _version() -> Schema:
    versions: list[Schema] = render_crd()["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


def _root() -> Schema:
    root: Schema = _version()["schema"]["openAPIV3Schema"]
    return root


def _nodes(node: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with a readable path (`.spec.phases[].actions[].scale.replicas`)."""
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from _nodes(prop, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}.*")


def _properties(node: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    for where, schema in _nodes(node, path):
        for name, prop in schema.get("properties", {}).items():
            yield f"{where}.{name}", prop


def _at(path: str) -> Schema:
    node = _root()
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def _as_json_schema(node: Any) -> Any:
    """OpenAPI structural schema → JSON Schema: drop Kubernetes extensions, `nullable` allows null."""
    if isinstance(node, list):
        return [_as_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: _as_json_schema(value)
        for key, value in node.items()
        if not key.startswith("x-kubernetes-") and key not in {"nullable", "properties"}
    }
    if "properties" in node:
        out["properties"] = {name: _as_json_schema(prop) for name, prop in node["properties"].items()}
    if node.get("nullable"):
        out["type"] = [node["type"], "null"]
    return out


def _validator() -> jsonschema.protocols.Validator:
    schema = _as_json_schema(_root())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _apply_defaults(schema: Schema, value: Any) -> Any:
    """What the API server does with `default`: fill absent fields, top-down, including inside defaults."""
    if isinstance(value, dict) and "properties" in schema:
        for name, prop in schema["properties"].items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = _apply_defaults(prop, value[name])
    if isinstance(value, list) and "items" in schema:
        return [_apply_defaults(schema["items"], item) for item in value]
    return value


def _minimal_spec() -> Schema:
    return {
        "signals": [{"name": "hitRate", "query": "vector(1)"}],
        "severities": [{"level": "P2", "any": ["hitRate < 0.5"]}],
        "recovery": {"all": ["hitRate > 0.9"]},
        "phases": [{"name": "first", "actions": [{"name": "warm", "job": {"fromCronJob": "warm"}}]}],
    }


def test_the_committed_crd_is_exactly_what_stampede_crd_prints() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render_crd_yaml(), "run `make crds` and commit the result"


def test_rendering_is_deterministic_and_free_of_yaml_anchors() -> None:
    first = render_crd_yaml()
    assert first == render_crd_yaml()
    assert "&id" not in first
    assert "*id" not in first
    assert yaml.safe_load(first) == render_crd()


def test_the_crd_identifies_the_resource_as_the_contract_says() -> None:
    crd = render_crd()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "stampedepolicies.stampede.aurum.io"
    assert crd["spec"]["group"] == "stampede.aurum.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": "StampedePolicy",
        "listKind": "StampedePolicyList",
        "plural": "stampedepolicies",
        "singular": "stampedepolicy",
        "shortNames": ["stp"],
        "categories": ["stampede"],
    }
    version = _version()
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_the_status_is_a_subresource() -> None:
    assert _version()["subresources"] == {"status": {}}


def test_printer_columns_show_mode_state_severity_phase_incident_and_age() -> None:
    columns = {
        column["name"]: (column["type"], column["jsonPath"]) for column in _version()["additionalPrinterColumns"]
    }
    assert list(columns) == ["Mode", "State", "Ready", "Reason", "Severity", "Phase", "Incident", "Age"]
    assert columns["Mode"] == ("string", ".status.mode")  # the mode in force, after defaults and templates
    assert columns["Ready"] == ("string", '.status.conditions[?(@.type=="Ready")].status')
    assert columns["Reason"] == ("string", '.status.conditions[?(@.type=="Ready")].reason')
    assert columns["State"] == ("string", ".status.state")
    assert columns["Severity"] == ("string", ".status.severity")
    assert columns["Phase"] == ("string", ".status.phase")
    assert columns["Incident"] == ("date", ".status.incident.startedAt")
    assert columns["Age"] == ("date", ".metadata.creationTimestamp")


def test_printer_columns_point_at_fields_that_exist_in_the_schema() -> None:
    for column in _version()["additionalPrinterColumns"]:
        path = column["jsonPath"].lstrip(".").replace('[?(@.type=="Ready")]', ".[]")
        if path.startswith("metadata."):
            continue
        assert _at(path)["type"] == "string", column


def test_the_schema_has_no_references_combinators_or_titles() -> None:
    forbidden = {
        "$ref",
        "$defs",
        "definitions",
        "anyOf",
        "allOf",
        "oneOf",
        "not",
        "title",
        "patternProperties",
        "x-kubernetes-preserve-unknown-fields",
    }
    for path, node in _nodes(_root()):
        assert not forbidden & set(node), f"{path or '<root>'} has {sorted(forbidden & set(node))}"


def test_every_schema_node_has_a_structural_type() -> None:
    for path, node in _nodes(_root()):
        assert node.get("type") in {"object", "string", "integer", "boolean", "array", "number"} or node.get(
            "x-kubernetes-int-or-string"
        ), path or "<root>"


def test_no_default_is_null_and_no_object_mixes_properties_with_additional_properties() -> None:
    for path, node in _nodes(_root()):
        assert node.get("default", "absent") is not None, path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("additionalProperties", {}) is not False, path


def test_the_root_metadata_schema_is_exactly_an_object_as_the_api_server_demands() -> None:
    # apiextensions' validateStructuralMetadataInvariants refuses anything else there, a description too.
    assert _root()["properties"]["metadata"] == {"type": "object"}


def test_every_property_has_a_description_for_kubectl_explain() -> None:
    properties = [(path, prop) for path, prop in _properties(_root()) if path != ".metadata"]
    assert len(properties) > 80
    for path, prop in properties:
        assert prop.get("description", "").strip(), f"{path} has no description"
        assert "\n" not in prop["description"], f"{path}: docstring line breaks leaked into the description"


def test_field_descriptions_come_from_the_model_docstrings() -> None:
    assert _at("spec.mode")["description"].startswith("Enforce applies changes")
    assert _at("spec.phases.[].actions.[].scale.replicas")["description"].startswith("Minimum replicas")
    # A field's own docstring wins over the class docstring of the model it holds.
    assert _at("spec.recovery")["description"] == "Conditions that end an incident."
    assert _at("spec.phases.[]")["description"] == "A time-boxed mitigation phase; phases are cumulative."


def test_enums_come_from_the_models_str_enums() -> None:
    assert _at("spec.mode")["enum"] == ["Enforce", "DryRun"]
    assert _at("spec.onMetricsError")["enum"] == ["Hold", "Continue"]
    assert _at("spec.severities.[].level")["enum"] == ["P0", "P1", "P2"]
    assert _at("spec.phases.[].actions.[].scale.kind")["enum"] == ["Deployment", "StatefulSet"]
    assert _at("spec.phases.[].actions.[].configMap.restart.[].kind")["enum"] == [
        "Deployment",
        "StatefulSet",
        "DaemonSet",
    ]
    assert _at("status.state")["enum"] == ["Idle", "Incident", "RollingBack"]


def test_durations_conditions_and_names_carry_patterns() -> None:
    for path in [
        "spec.pollInterval",
        "spec.prometheus.timeout",
        "spec.severities.[].for",
        "spec.recovery.for",
        "spec.phases.[].after",
        "spec.escalation.after",
        "spec.rollback.stepDelay",
    ]:
        assert _at(path)["pattern"].startswith("^(0|"), path
    assert "<=|>=" in _at("spec.recovery.all.[]")["pattern"]
    assert "<=|>=" in _at("spec.severities.[].any.[]")["pattern"]
    assert _at("spec.phases.[].name")["maxLength"] == 63
    assert _at("spec.phases.[].actions.[].configMap.name")["pattern"].startswith("^[a-z0-9]")


def test_numeric_and_size_limits_come_from_the_models() -> None:
    replicas = _at("spec.phases.[].actions.[].scale.replicas")
    assert (replicas["type"], replicas["minimum"]) == ("integer", 1)
    assert _at("spec.phases")["minItems"] == 1
    assert _at("spec.phases")["maxItems"] == 20
    assert _at("spec.severities")["maxItems"] == 3
    assert _at("spec.signals.[].query")["maxLength"] == 8192
    assert _at("spec.phases.[].actions")["maxItems"] == 50
    assert _at("spec.phases.[].actions.[].configMap.restart")["maxItems"] == 10
    assert _at("spec.phases.[].actions.[].configMap.data")["maxProperties"] == 64


def test_scalar_defaults_are_written_in_wire_form() -> None:
    assert "default" not in _at("spec.prometheus.timeout")
    assert _at("spec.escalation.after")["default"] == "30m"
    assert _at("spec.rollback.stepDelay")["default"] == "30s"
    assert _at("spec.phases.[].actions.[].minSeverity")["default"] == "P2"


def test_top_level_spec_fields_carry_no_default_so_a_templated_policy_keeps_its_templates_values() -> None:
    # The policy's own top-level fields are laid over its template's: a `pollInterval: 15s` written by the
    # API server's defaulting would silently replace the template's pollInterval.
    for name, prop in _at("spec")["properties"].items():
        assert "default" not in prop, name
    assert _apply_defaults(_at("spec"), {"templateRef": {"kind": "StampedePolicyTemplate", "name": "t"}}) == {
        "templateRef": {"kind": "StampedePolicyTemplate", "name": "t"}
    }


def test_the_api_servers_defaulting_yields_exactly_the_models_defaults() -> None:
    spec = {**_minimal_spec(), "prometheus": {}}
    defaulted = _apply_defaults(_at("spec"), copy.deepcopy(spec))
    assert defaulted["prometheus"] == {"insecureSkipVerify": False}
    assert PolicySpec.model_validate(defaulted) == PolicySpec.model_validate(spec)


def test_optional_fields_are_plain_types_left_out_of_required() -> None:
    url = _at("spec.prometheus.url")
    assert url["type"] == "string"
    assert "nullable" not in url
    assert "default" not in url
    assert "url" not in _at("spec.prometheus").get("required", [])
    assert _at("spec.notifications")["type"] == "object"
    assert "default" not in _at("spec.notifications"), "an optional section must stay absent, not become {}"
    assert _root()["required"] == ["spec"]
    # A templated policy takes the runbook fields from its template; a CEL rule asks for them otherwise.
    assert "required" not in _at("spec")
    rules = [rule["rule"] for rule in _at("spec")["x-kubernetes-validations"]]
    assert any("has(self.templateRef) ||" in rule and "has(self.phases)" in rule for rule in rules)


def test_maps_are_additional_properties_and_no_status_value_relies_on_a_null_inside_an_array() -> None:
    values = _at("spec.phases.[].actions.[].configMap.data")["additionalProperties"]
    assert values == {"type": "string", "maxLength": 1048576}
    for listed in ("applied", "planned", "journal"):
        assert _at(f"status.{listed}.[].applied")["additionalProperties"] == {"type": "string"}
        # A real merge patch drops null members of objects inside arrays: absent keys are named instead.
        assert _at(f"status.{listed}.[].original")["additionalProperties"] == {"type": "string"}
        assert _at(f"status.{listed}.[].absent")["items"] == {"type": "string"}


def test_status_names_of_targets_carry_the_specs_patterns_and_enums() -> None:
    action = _at("spec.phases.[].actions.[].name")
    for listed in ("applied", "planned", "journal"):
        entry = f"status.{listed}.[]"
        assert _at(f"{entry}.action")["pattern"] == action["pattern"]
        assert _at(f"{entry}.name")["pattern"] == _at("spec.phases.[].actions.[].configMap.name")["pattern"]
        assert set(_at(f"{entry}.kind")["enum"]) == {
            "ConfigMap",
            "Deployment",
            "StatefulSet",
            "HorizontalPodAutoscaler",
            "Job",
        }
        # An HPA too: a rollout wait names the HPA a scale change was recorded on (restart lists come from the spec).
        restartable = ["Deployment", "StatefulSet", "DaemonSet", "HorizontalPodAutoscaler"]
        assert _at(f"{entry}.restart.[].kind")["enum"] == restartable
        assert "pattern" in _at(f"{entry}.restart.[].name")


def test_the_status_is_fully_typed_and_carries_no_defaults() -> None:
    status = _at("status")
    assert status["type"] == "object"
    assert len(status["properties"]) >= 10
    for path, node in _nodes(status, "status"):
        assert "default" not in node, path
    assert _at("status.incident.startedAt")["format"] == "date-time"
    assert _at("status.conditions")["x-kubernetes-list-map-keys"] == ["type"]


def test_names_that_must_be_unique_are_list_map_keys() -> None:
    for path, key in [
        ("spec.signals", "name"),
        ("spec.severities", "level"),
        ("spec.phases", "name"),
        ("spec.phases.[].actions", "name"),
    ]:
        node = _at(path)
        assert node["x-kubernetes-list-type"] == "map", path
        assert node["x-kubernetes-list-map-keys"] == [key], path
        assert key in node["items"]["required"], f"{path}: a list-map key must be required"


def test_an_action_must_pick_exactly_one_change_by_cel_rule() -> None:
    rules = _at("spec.phases.[].actions.[]")["x-kubernetes-validations"]
    assert len(rules) == 1
    assert all(f"has(self.{name})" in rules[0]["rule"] for name in ("configMap", "scale", "job"))
    assert rules[0]["message"]


def test_the_crd_is_a_valid_apiextensions_v1_object() -> None:
    assert kubernetes_validate.validate(render_crd(), "1.31", strict=True) == "1.31"


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ((), "served", "yes"),
        (("schema", "openAPIV3Schema", "properties", "spec"), "$defs", {}),
    ],
)
def test_kubernetes_validate_would_notice_a_broken_crd(where: tuple[str, ...], key: str, value: Any) -> None:
    broken = render_crd()
    node = broken["spec"]["versions"][0]
    for part in where:
        node = node[part]
    node[key] = value
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.31", strict=True)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_the_example_policies_validate_against_the_crd_schema(example: Path) -> None:
    validator = _validator()
    policies = [
        doc
        for doc in yaml.safe_load_all(example.read_text(encoding="utf-8"))
        if doc and doc.get("kind") == "StampedePolicy"
    ]
    for policy in policies:
        errors = [error.message for error in validator.iter_errors(policy)]
        assert not errors, errors


def test_a_status_written_by_the_operator_validates_against_the_crd_schema() -> None:
    status = {
        "observedGeneration": 3,
        "state": "Incident",
        "severity": "P1",
        "phase": "first",
        "signals": [{"name": "hitRate", "value": "unknown", "error": "timeout"}],
        "incident": {"id": "1", "startedAt": "2024-05-01T12:00:00Z", "severity": "P1", "escalated": False},
        "applied": [
            {
                "action": "api",
                "kind": "ConfigMap",
                "name": "aurum-api-config",
                "appliedAt": "2024-05-01T12:00:00Z",
                "original": {"B": "x"},
                "absent": ["A"],
                "applied": {"A": "1", "B": "y"},
            }
        ],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-01T12:00:00Z"}],
    }
    # An older status (a null for an absent key) still reads, and is written back without the null.
    older = {**status, "applied": [{**status["applied"][0], "original": {"A": None, "B": "x"}, "absent": []}]}
    (rewritten,) = PolicyStatus.model_validate(older).wire()["applied"]
    assert (rewritten["original"], rewritten["absent"]) == ({"B": "x"}, ["A"])
    policy = {
        "apiVersion": "stampede.aurum.io/v1alpha1",
        "kind": "StampedePolicy",
        "metadata": {"name": "p"},
        "spec": _minimal_spec(),
        "status": status,
    }
    assert [error.message for error in _validator().iter_errors(policy)] == []


@pytest.mark.parametrize("name", SCHEMA_CATCHES)
def test_the_crd_schema_alone_rejects_broken_policies_it_can_express(name: str) -> None:
    policy = yaml.safe_load((CORPUS / f"{name}.yaml").read_text(encoding="utf-8"))
    assert list(_validator().iter_errors(policy)), f"{name}.yaml passed the CRD schema"


def test_the_ready_column_shows_an_invalid_policy_as_not_ready_with_its_reason(tmp_path: Path) -> None:
    """Evaluated by kubectl's own JSONPath engine, the one that renders printer columns."""
    columns = {column["name"]: column["jsonPath"] for column in _version()["additionalPrinterColumns"]}
    policy = {
        "apiVersion": "stampede.aurum.io/v1alpha1",
        "kind": "StampedePolicy",
        "metadata": {"name": "broken"},
        "status": {
            "state": "Idle",
            "conditions": [
                {"type": "MetricsAvailable", "status": "True", "reason": "AllSignalsKnown"},
                {"type": "Ready", "status": "False", "reason": "InvalidSpec"},
            ],
        },
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    template = " ".join(f"{{{columns[name]}}}" for name in ("Ready", "Reason", "State"))
    kubectl = str(Path(sys.executable).parent / "kubectl")
    result = subprocess.run(
        [kubectl, "annotate", "--local", "-f", str(path), "x=y", "-o", f"jsonpath={template}"],
        capture_output=True,
        text=True,
        check=False,
        env={"KUBECONFIG": str(tmp_path / "none"), "PATH": ""},
    )
    assert result.stdout.split() == ["False", "InvalidSpec", "Idle"], result.stderr
