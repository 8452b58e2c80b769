"""Policy templates: one runbook, many services.

A platform team writes the runbook once as a `StampedePolicyTemplate` (namespaced) or
`ClusterStampedePolicyTemplate` (cluster-scoped) and each service's `StampedePolicy` names it in
`spec.templateRef` with its own `spec.arguments`. Rendering is a pure function of the template and
the policy's spec, shared by the operator (on every poll, from its watched templates), `stampede
lint` (templates given in the same files) and the tests, so all three render exactly alike.

The rules, in order:
1. In every string of the template's `spec.policy` (map keys too), `$(name)` becomes the argument
   `name` or the parameter's default; `$$` is a literal `$`; any other `$` stays as written (PromQL
   has none, but a literal `$` in a message must not need escaping). One pass, left to right, so a
   value containing `$(x)` is never substituted again.
2. The policy's own top-level spec fields are laid over the rendered spec, whole: a policy that sets
   `phases` replaces the template's phases, it does not merge into them. A deep merge would make
   "which phases run" depend on list positions in two files; replacing whole fields keeps it obvious.
3. A missing argument without default, an argument the template does not declare, a reference to an
   undeclared parameter and a missing template are each an `InvalidSpec` naming it.

Why `spec.policy` is not validated against the policy schema on its own: before substitution it is not
a policy (`$(service)-config` is not a DNS name, `$(replicas)` is not a number). It is validated after
rendering, through the same models as any policy, which is where every problem can be named exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from .spec import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    PARAMETER_NAME,
    TEMPLATE_RENDERED,
    Model,
    ParameterName,
    PolicySpec,
    TemplateKind,
)

TEMPLATE_KIND = TemplateKind.NAMESPACED.value
TEMPLATE_PLURAL = "stampedepolicytemplates"
TEMPLATE_SINGULAR = "stampedepolicytemplate"
TEMPLATE_SHORT_NAME = "stpt"
CLUSTER_TEMPLATE_KIND = TemplateKind.CLUSTER.value
CLUSTER_TEMPLATE_PLURAL = "clusterstampedepolicytemplates"
CLUSTER_TEMPLATE_SINGULAR = "clusterstampedepolicytemplate"
CLUSTER_TEMPLATE_SHORT_NAME = "cstpt"

#: Top-level spec fields that say how to render, never rendered themselves.
_OWN_ONLY = ("templateRef", "arguments")
_TOKEN = re.compile(r"\$\$|\$\((?P<name>[^)]*)\)")
_NAME = re.compile(PARAMETER_NAME)


class TemplateProblem(ValueError):
    """The policy cannot be rendered; the message names the argument, parameter or template."""


class Parameter(Model):
    """A value each policy of the template supplies in `spec.arguments`."""

    name: ParameterName
    """Name used as `$(name)` in the template's strings."""
    description: Annotated[str, Field(max_length=1024)] | None = None
    """What the value means, for the people writing the service policies."""
    default: Annotated[str, Field(max_length=8192)] | None = None
    """Value used when a policy gives none; without a default the argument is required."""


PolicyBody = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "description": "A StampedePolicy spec in which any string may contain $(parameter); $$ is a "
            "literal $. Validated after substitution, as part of each policy that uses the template.",
        }
    ),
]


class PolicyTemplateSpec(Model):
    """A runbook shared by many policies: parameters and a policy spec to render."""

    parameters: Annotated[list[Parameter], Field(max_length=100)] = Field(default_factory=list)
    """Parameters the policies supply as spec.arguments."""
    policy: PolicyBody
    """The StampedePolicy spec to render; `$(name)` in any string is replaced by the argument."""

    @model_validator(mode="after")
    def _consistent(self) -> PolicyTemplateSpec:
        errors: list[str] = []
        seen: set[str] = set()
        for i, parameter in enumerate(self.parameters):
            if parameter.name in seen:
                errors.append(f"parameters[{i}].name: duplicate parameter name {parameter.name!r}")
            seen.add(parameter.name)
        for key in _OWN_ONLY:
            if key in self.policy:
                errors.append(f"policy.{key}: a template cannot itself use a template or take arguments")
        for path, name in references(self.policy, path="policy"):
            if name not in seen:
                errors.append(f"{path}: $({name}) names no declared parameter")
        if errors:
            raise ValueError("; ".join(errors))
        return self


class TemplateMeta(BaseModel):
    """The part of a template's metadata rendering needs."""

    model_config = ConfigDict(extra="allow")
    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)]
    namespace: Annotated[str, Field(pattern=DNS_LABEL)] | None = None
    generation: int | None = None


class TemplateDocument(BaseModel):
    """A whole template object as read from the API server or YAML."""

    model_config = ConfigDict(extra="ignore")
    apiVersion: str  # Kubernetes wire name, kept as is
    kind: TemplateKind
    metadata: TemplateMeta
    spec: PolicyTemplateSpec

    @property
    def label(self) -> str:
        """`ClusterStampedePolicyTemplate runbook`, as messages name it."""
        if self.kind == TemplateKind.NAMESPACED and self.metadata.namespace:
            return f"{self.kind.value} {self.metadata.namespace}/{self.metadata.name}"
        return f"{self.kind.value} {self.metadata.name}"


def references(value: Any, *, path: str) -> list[tuple[str, str]]:
    """(path, parameter name) of every `$(name)` in the strings of `value`; invalid names raise."""
    found: list[tuple[str, str]] = []
    if isinstance(value, str):
        for match in _TOKEN.finditer(value):
            name = match.group("name")
            if name is None:
                continue
            if not _NAME.match(name):
                raise ValueError(f"{path}: $({name}) is not a valid parameter reference (letters, digits, _ . -)")
            found.append((path, name))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            found += references(str(key), path=path)
            found += references(item, path=f"{path}.{key}" if _plain(str(key)) else f'{path}["{key}"]')
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += references(item, path=f"{path}[{i}]")
    return found


def substitute(value: Any, arguments: Mapping[str, str]) -> Any:
    """`value` with `$(name)` replaced in every string (map keys too) and `$$` turned into `$`.

    Every referenced name must be in `arguments` (the caller checked); the input is never changed.
    """
    if isinstance(value, str):
        return _TOKEN.sub(lambda match: "$" if match.group("name") is None else arguments[match.group("name")], value)
    if isinstance(value, Mapping):
        return {substitute(str(key), arguments): substitute(item, arguments) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, arguments) for item in value]
    return value


def render(policy_spec: Mapping[str, Any], template: TemplateDocument | None) -> dict[str, Any]:
    """The spec a policy means: its template rendered with its arguments, its own fields laid over.

    A spec without `templateRef` is returned as is (a copy). `template` is the object `templateRef`
    names, or None when no such template exists. Raises TemplateProblem naming every problem.
    """
    own = dict(policy_spec)
    ref = own.get("templateRef")
    if ref is None:
        if own.get("arguments"):
            raise TemplateProblem("spec.arguments: given without spec.templateRef (no template to fill in)")
        return own
    if not isinstance(ref, Mapping):
        raise TemplateProblem("spec.templateRef: must be an object {kind, name}")
    wanted = f"{ref.get('kind')} {ref.get('name')}"
    if template is None:
        raise TemplateProblem(f"spec.templateRef: {wanted} not found")
    arguments = own.get("arguments") or {}
    if not isinstance(arguments, Mapping):
        raise TemplateProblem("spec.arguments: must be a map of parameter name to string value")
    declared = {parameter.name: parameter for parameter in template.spec.parameters}
    errors = [
        f"spec.arguments.{name}: unknown argument {name!r} ({template.label} declares "
        f"{', '.join(sorted(declared)) or 'no parameters'})"
        for name in arguments
        if name not in declared
    ]
    values: dict[str, str] = {}
    for name, parameter in declared.items():
        if name in arguments:
            value = arguments[name]
            if not isinstance(value, str):
                errors.append(f"spec.arguments.{name}: must be a string (quote it), got {value!r}")
                continue
            values[name] = value
        elif parameter.default is not None:
            values[name] = parameter.default
        else:
            errors.append(f"spec.arguments.{name}: missing argument {name!r} ({template.label} gives no default)")
    if errors:
        raise TemplateProblem("; ".join(errors))
    rendered: dict[str, Any] = substitute(template.spec.policy, values)
    rendered.update(own)
    return rendered


def rendered_context(policy_spec: Mapping[str, Any]) -> dict[str, bool]:
    """The validation context of a policy's spec: typed text is accepted only where a template rendered it."""
    return {TEMPLATE_RENDERED: policy_spec.get("templateRef") is not None}


def render_spec(
    policy_spec: Mapping[str, Any], template: TemplateDocument | None, *, generation: int | None = None
) -> PolicySpec:
    """`render`, then validation through the policy models; `generation` is recorded on the result.

    Raises TemplateProblem or pydantic's ValidationError (whose paths are the policy's `spec.…`).
    """
    spec = PolicySpec.model_validate(render(policy_spec, template), context=rendered_context(policy_spec))
    if template is not None and policy_spec.get("templateRef") is not None:
        spec._template_generation = generation if generation is not None else template.metadata.generation
    return spec


def templatable_spec_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The policy CRD's `spec` schema adjusted for templated policies.

    - The runbook fields are not `required`: a templated policy takes them from its template. A CEL
      rule asks for them when there is no `templateRef`, so a plain policy still fails at apply time.
    - Top-level fields carry no `default`: the API server would otherwise write `pollInterval: 15s`
      into every policy, and being the policy's own field, it would override the template's value.
      The models apply the same defaults after rendering, so nothing changes for plain policies.
    """
    out = dict(schema)
    out.pop("required", None)
    out["properties"] = {
        name: {k: v for k, v in prop.items() if k != "default"} for name, prop in schema["properties"].items()
    }
    out["x-kubernetes-validations"] = [
        *schema.get("x-kubernetes-validations", []),
        {
            "rule": "has(self.templateRef) || (has(self.signals) && has(self.severities) && has(self.recovery) "
            "&& has(self.phases))",
            "message": "set templateRef, or all of signals, severities, recovery and phases",
        },
        {
            "rule": "!has(self.arguments) || size(self.arguments) == 0 || has(self.templateRef)",
            "message": "arguments need a templateRef",
        },
    ]
    return out


def _plain(key: str) -> bool:
    return re.match(r"^[A-Za-z_]\w*$", key) is not None


__all__ = [
    "CLUSTER_TEMPLATE_KIND",
    "CLUSTER_TEMPLATE_PLURAL",
    "TEMPLATE_KIND",
    "TEMPLATE_PLURAL",
    "Parameter",
    "PolicyTemplateSpec",
    "TemplateDocument",
    "TemplateProblem",
    "references",
    "render",
    "render_spec",
    "substitute",
    "templatable_spec_schema",
]
