"""The StampedePolicy CustomResourceDefinition, generated from the pydantic models.

The models in `spec.py` and `status.py` are the only schema source: this module turns their JSON
schema into the structural OpenAPI v3 schema an apiextensions.k8s.io/v1 CRD requires, so
`kubectl apply`, `kubectl explain`, `stampede lint` and the operator can never disagree about a field.

Why not `kube-custom-resource` (azimuth-cloud), which does pydantic → CRD: it only produces a
structural schema when the models inherit from its own `BaseModel` and spell optional fields with
its `Optional`/`Nullable` annotations. Our models are plain pydantic (the api layer may import
pydantic only) and use `X | None`, which it leaves as a non-structural `anyOf` with `null`. Its
`$ref` resolution also lets a nested model's class docstring overwrite the field's own description,
and it can only keep all defaults or none (including `default: null`). The converter below is small,
handles exactly the shapes our models use and fails loudly on any other, so a new field that cannot
be expressed structurally is caught when the CRD is generated rather than by the API server.

What the conversion does, and why:
- `$ref`s are inlined and `title`s dropped (structural schemas forbid references; titles are noise).
- `X | None` becomes plain `X`: optional means "not in `required`". Map values that may be null
  (`dict[str, str | None]`, used to record keys that did not exist before a change) keep `nullable`.
- Map key patterns (`patternProperties`) become `additionalProperties`: structural schemas cannot
  constrain map keys, and a CEL rule over every key of every map would exceed the API server's cost
  budget for unbounded maps; the models still check keys (`stampede lint`, the operator).
- Defaults are written in their wire form (`30s`, not the ISO `PT30S` pydantic would emit), so the
  API server fills in what the operator would assume anyway and `kubectl get -o yaml` shows it.
  Objects whose fields all have defaults default to `{}`, which validates by construction. The status
  carries no defaults: only the operator writes it, and it writes what it means.
- A few list and object rules that are cheap for the API server are added: list-map keys (unique
  names, and the merge keys server-side apply and Argo CD use) and a CEL rule for "exactly one of
  configMap, scale, job".
"""

from __future__ import annotations

import copy
from typing import Any

import pydantic_core
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from . import CATEGORY, GROUP, KIND, PLURAL, SHORT_NAME, SINGULAR, VERSION
from .incident import (
    INCIDENT_KIND,
    INCIDENT_PLURAL,
    INCIDENT_SHORT_NAME,
    INCIDENT_SINGULAR,
    IncidentRecordStatus,
    IncidentSpec,
)
from .spec import Action, EscalationLevel, NotificationTarget, Phase, PolicySpec
from .status import PolicyStatus
from .templates import templatable_spec_schema

Schema = dict[str, Any]

CRD_NAME = f"{PLURAL}.{GROUP}"
INCIDENT_CRD_NAME = f"{INCIDENT_PLURAL}.{GROUP}"

#: Per model (by class name, which is how pydantic names its `$defs`), per property: extra keys.
_PROPERTY_EXTRAS: dict[tuple[str, str], Schema] = {
    (PolicySpec.__name__, "signals"): {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    (PolicySpec.__name__, "severities"): {
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["level"],
    },
    (PolicySpec.__name__, "phases"): {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    (Phase.__name__, "actions"): {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    ("Escalation", "levels"): {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    ("Notifications", "targets"): {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    (PolicyStatus.__name__, "conditions"): {
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    },
}

#: Per model: CEL rules. Only constant-cost rules, so the API server's cost estimate never rejects the CRD.
_MODEL_VALIDATIONS: dict[str, list[Schema]] = {
    Action.__name__: [
        {
            "rule": "(has(self.configMap) ? 1 : 0) + (has(self.scale) ? 1 : 0) + (has(self.job) ? 1 : 0) == 1",
            "message": "an action must set exactly one of configMap, scale, job",
        }
    ],
    NotificationTarget.__name__: [
        {
            "rule": "(has(self.webhook) ? 1 : 0) + (has(self.pagerduty) ? 1 : 0) == 1",
            "message": "a notification target must set exactly one of webhook, pagerduty",
        }
    ],
    EscalationLevel.__name__: [
        {
            "rule": "has(self.after) || has(self.atSeverity)",
            "message": "an escalation level must set after, atSeverity or both",
        }
    ],
}

_PRINTER_COLUMNS: list[Schema] = [
    {"name": "Mode", "type": "string", "jsonPath": ".status.mode", "description": "Enforce or DryRun (in force)."},
    {"name": "State", "type": "string", "jsonPath": ".status.state", "description": "Idle, Incident or RollingBack."},
    # Ready and its reason side by side: a JSONPath cannot choose between them, and without them an
    # invalid policy reads as a healthy `Idle` in `kubectl get stp`.
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        "description": "Whether the spec is valid and the policy is acting (the Ready condition).",
    },
    {
        "name": "Reason",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        "description": "Why the policy is or is not Ready, e.g. InvalidSpec or ActionFailed.",
    },
    {
        "name": "Severity",
        "type": "string",
        "jsonPath": ".status.severity",
        "description": "Severity of the incident in progress.",
    },
    {
        "name": "Phase",
        "type": "string",
        "jsonPath": ".status.phase",
        "description": "Latest phase of the incident in progress.",
    },
    {
        "name": "Incident",
        "type": "date",
        "jsonPath": ".status.incident.startedAt",
        "description": "When the incident in progress started.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_INCIDENT_PRINTER_COLUMNS: list[Schema] = [
    {"name": "Policy", "type": "string", "jsonPath": ".spec.policy", "description": "The StampedePolicy."},
    {"name": "State", "type": "string", "jsonPath": ".status.state", "description": "Open, RollingBack or Closed."},
    {"name": "Severity", "type": "string", "jsonPath": ".status.severity", "description": "Highest severity reached."},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Furthest phase entered."},
    {
        "name": "Escalated",
        "type": "string",
        "jsonPath": ".status.escalationLevel",
        "description": "Highest escalation level reached.",
    },
    {
        "name": "MTTR",
        "type": "string",
        "jsonPath": ".status.mttr",
        "description": "First breach to recovery confirmed.",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_STRUCTURAL_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
#: Keys that carry over unchanged from pydantic's JSON schema into the structural schema.
_KEPT_KEYS = {
    "type",
    "description",
    "enum",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "uniqueItems",
    "multipleOf",
    "default",
    # Templates' spec.policy: not a policy until rendered (api/templates.py), so kept whole.
    "x-kubernetes-preserve-unknown-fields",
}


class _WireDefaults(GenerateJsonSchema):
    """JSON schema generation that writes defaults as the models serialize them.

    In validation mode pydantic encodes a `timedelta` default as ISO 8601 (`PT30S`), ignoring the
    field's own serializer; the CRD must carry the Go form (`30s`) that the pattern accepts.
    """

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if "default" in json_schema and json_schema["default"] is not None:
            try:
                serializer = pydantic_core.SchemaSerializer(schema["schema"])
            except pydantic_core.SchemaError:
                # References to other definitions (enums, models) cannot be built alone; their default
                # is already in wire form.
                return json_schema
            json_schema["default"] = serializer.to_python(self.get_default_value(schema), mode="json")
        return json_schema


def _description(text: str) -> str:
    """One paragraph per blank-line-separated block: docstrings wrap lines that `kubectl explain` rewraps."""
    paragraphs = [" ".join(block.split()) for block in text.strip().split("\n\n")]
    return "\n\n".join(paragraph for paragraph in paragraphs if paragraph)


class _Converter:
    """Turns one pydantic JSON schema (with `$defs`) into a structural schema."""

    def __init__(self, schema: Schema, *, keep_defaults: bool) -> None:
        self._defs: dict[str, Schema] = schema.get("$defs", {})
        self._keep_defaults = keep_defaults
        self.root = self._node(schema, where="", model=_model_name(schema), nullable_ok=False)

    def _node(self, node: Schema, *, where: str, model: str | None, nullable_ok: bool) -> Schema:
        node = dict(node)
        node.pop("$defs", None)
        nullable = False
        if "$ref" in node:
            name = node.pop("$ref").removeprefix("#/$defs/")
            # The field's own keys (description, default) win over the referenced class's.
            # Copied, so no two places of the output share an object (YAML would emit anchors).
            node = {**copy.deepcopy(self._defs[name]), **node}
            model = name
        if "allOf" in node:
            parts = node.pop("allOf")
            if len(parts) != 1:
                raise TypeError(f"{where or '<root>'}: allOf with several schemas is not structural")
            return self._node({**parts[0], **node}, where=where, model=model, nullable_ok=nullable_ok)
        if "anyOf" in node:
            choices = node.pop("anyOf")
            others = [choice for choice in choices if choice.get("type") != "null"]
            if len(others) != 1:
                raise TypeError(f"{where or '<root>'}: unions other than `X | None` are not structural")
            nullable = len(others) != len(choices)
            if node.get("default", 0) is None:
                del node["default"]
            return self._finish(
                self._node({**others[0], **node}, where=where, model=model, nullable_ok=nullable_ok),
                nullable=nullable and nullable_ok,
            )
        return self._finish(self._convert(node, where=where, model=model), nullable=False)

    def _finish(self, node: Schema, *, nullable: bool) -> Schema:
        if nullable:
            node["nullable"] = True
        return node

    def _convert(self, node: Schema, *, where: str, model: str | None) -> Schema:
        if "const" in node:
            node["enum"] = [node.pop("const")]
        out: Schema = {key: value for key, value in node.items() if key in _KEPT_KEYS}
        if "description" in out:
            out["description"] = _description(out["description"])
        if out.get("default", 0) is None or not self._keep_defaults:
            out.pop("default", None)
        unknown = (
            set(node)
            - _KEPT_KEYS
            - {"title", "properties", "required", "items", "additionalProperties", "patternProperties"}
        )
        if unknown:
            raise TypeError(f"{where or '<root>'}: cannot express {sorted(unknown)} in a structural schema")
        kind = out.get("type")
        if kind not in _STRUCTURAL_TYPES:
            raise TypeError(f"{where or '<root>'}: every node needs one of the types {sorted(_STRUCTURAL_TYPES)}")
        if kind == "object":
            self._object(node, out, where=where, model=model)
        elif kind == "array":
            out["items"] = self._node(node["items"], where=f"{where}[]", model=None, nullable_ok=False)
        return out

    def _object(self, node: Schema, out: Schema, *, where: str, model: str | None) -> None:
        properties: dict[str, Schema] = node.get("properties", {})
        required: list[str] = node.get("required", [])
        if properties:
            out["properties"] = {}
            for name, prop in properties.items():
                converted = self._node(prop, where=f"{where}.{name}", model=None, nullable_ok=False)
                converted.update(_PROPERTY_EXTRAS.get((model or "", name), {}))
                if (
                    self._keep_defaults
                    and name not in required
                    and "default" not in converted
                    and _defaults_from_nothing(converted)
                    and not _is_optional(prop)
                ):
                    converted["default"] = {}
                out["properties"][name] = converted
            if required:
                out["required"] = list(required)
        values = node.get("additionalProperties")
        patterns: dict[str, Schema] = node.get("patternProperties", {})
        if len(patterns) > 1:
            raise TypeError(f"{where}: several key patterns cannot be expressed structurally")
        if patterns:
            values = next(iter(patterns.values()))
        if isinstance(values, dict):
            out["additionalProperties"] = self._node(values, where=f"{where}.*", model=None, nullable_ok=True)
        if model in _MODEL_VALIDATIONS:
            out["x-kubernetes-validations"] = copy.deepcopy(_MODEL_VALIDATIONS[model])


def _model_name(schema: Schema) -> str | None:
    title = schema.get("title")
    return title if isinstance(title, str) else None


def _is_optional(prop: Schema) -> bool:
    return any(choice.get("type") == "null" for choice in prop.get("anyOf", []))


def _defaults_from_nothing(node: Schema) -> bool:
    """True for an object every field of which is optional or defaulted, so `{}` is a valid default."""
    return node.get("type") == "object" and "properties" in node and not node.get("required")


def _schema_of(model: type[BaseModel], *, keep_defaults: bool) -> Schema:
    schema = model.model_json_schema(by_alias=True, schema_generator=_WireDefaults)
    return _Converter(schema, keep_defaults=keep_defaults).root


def object_schema(*, description: str, spec: Schema, status: Schema | None = None, spec_required: bool) -> Schema:
    """The structural `openAPIV3Schema` of a whole object of one of our kinds: the envelope every CRD shares."""
    properties: Schema = {
        "apiVersion": {
            "type": "string",
            "description": "APIVersion defines the versioned schema of this representation of an object.",
        },
        "kind": {
            "type": "string",
            "description": "Kind is a string value representing the REST resource this object represents.",
        },
        # Exactly `{type: object}`: apiextensions' validateStructuralMetadataInvariants refuses anything
        # else at the root `metadata` (a description too), and the CRD would not install.
        "metadata": {"type": "object"},
        "spec": spec,
    }
    if status is not None:
        properties["status"] = status
    schema: Schema = {"type": "object", "description": description, "properties": properties}
    if spec_required:
        schema["required"] = ["spec"]
    return schema


def open_api_schema() -> Schema:
    """The structural `openAPIV3Schema` of a whole StampedePolicy object."""
    return object_schema(
        description="StampedePolicy detects a cache stampede from Prometheus signals and runs a phased "
        "mitigation runbook against workloads in its own namespace, rolling it back after recovery.",
        spec=templatable_spec_schema(_schema_of(PolicySpec, keep_defaults=True)),
        status=_schema_of(PolicyStatus, keep_defaults=False),
        spec_required=True,
    )


def incident_open_api_schema() -> Schema:
    """The structural `openAPIV3Schema` of a whole StampedeIncident object."""
    return object_schema(
        description="StampedeIncident records one incident of a StampedePolicy: its timeline, changes, "
        "phases, escalations, peaks, KPIs and notifications. Written by the operator; `kubectl get stpi -A` "
        "is the cluster's incident log.",
        spec=_schema_of(IncidentSpec, keep_defaults=False),
        status=_schema_of(IncidentRecordStatus, keep_defaults=False),
        spec_required=False,
    )


def crd_envelope(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_name: str,
    columns: list[Schema],
    schema: Schema,
    cluster: bool = False,
) -> Schema:
    """A CustomResourceDefinition of ours around an object schema; kinds with a `status` get the subresource."""
    version: Schema = {"name": VERSION, "served": True, "storage": True}
    if "status" in schema.get("properties", {}):
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = copy.deepcopy(columns)
    version["schema"] = {"openAPIV3Schema": schema}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": [short_name],
                "categories": [CATEGORY],
            },
            "scope": "Cluster" if cluster else "Namespaced",
            "versions": [version],
        },
    }


def render_crd(kind: str = KIND) -> Schema:
    """A CustomResourceDefinition as a plain dict (what `stampede crd PLURAL` prints as YAML)."""
    if kind == INCIDENT_KIND:
        return crd_envelope(
            kind=INCIDENT_KIND,
            plural=INCIDENT_PLURAL,
            singular=INCIDENT_SINGULAR,
            short_name=INCIDENT_SHORT_NAME,
            columns=_INCIDENT_PRINTER_COLUMNS,
            schema=incident_open_api_schema(),
        )
    if kind != KIND:
        raise ValueError(f"no CRD for kind {kind!r}")
    return crd_envelope(
        kind=KIND,
        plural=PLURAL,
        singular=SINGULAR,
        short_name=SHORT_NAME,
        columns=_PRINTER_COLUMNS,
        schema=open_api_schema(),
    )


def render_crd_yaml(crd: Schema | None = None) -> str:
    """A CRD (default: StampedePolicy's) as deterministic YAML: sorted keys, so `make verify-crds` diffs only
    real changes."""
    # yaml is imported here, not at module level: the api layer's own dependency is pydantic only.
    import yaml

    header = "# Generated by `stampede crd` from the pydantic models in stampede/api; do not edit.\n"
    return header + yaml.safe_dump(crd or render_crd(), sort_keys=True, default_flow_style=False, width=100)
