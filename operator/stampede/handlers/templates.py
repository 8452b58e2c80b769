"""Templates in the operator: watched once, rendered for each policy at its poll.

Both template kinds are kopf indices: kopf lists and watches them (one watch per kind, never a GET per
policy), keeps the parsed templates in memory and, on start, holds every policy's daemon back until the
initial listing is in, so no policy reports "template not found" merely because it started first. Each
poll renders the policy from the index as it is at that moment, so a template edit reaches every policy
using it at its next poll.

Rendering 500 policies on every poll would be wasted work while nothing changes: the validated spec is
kept per policy and reused while the policy's spec and the template's resourceVersion are the ones it
was rendered from (see bench/templates.py for the numbers).

The parts of a kept spec equal to another policy's (the same signal, severities, recovery, rollback, often
all but the actions) are one shared object (`share_parts`): thousands of policies from one template or one
generator differ in a few names, and the validated models are frozen (docs/performance.md, memory per policy).

Cluster-scoped templates are watched only when the operator watches every namespace (`-A`): with
`-n NS` the operator holds a Role in its namespaces only, and a cluster-wide watch would be refused.
A policy naming a ClusterStampedePolicyTemplate then says so in its InvalidSpec message.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import kopf
from pydantic import BaseModel, ValidationError

from ..api import GROUP, VERSION
from ..api.spec import PolicySpec, TemplateKind
from ..api.templates import CLUSTER_TEMPLATE_PLURAL, TEMPLATE_PLURAL, TemplateDocument, TemplateProblem, render_spec
from ..linting import validation_lines

M = TypeVar("M", bound=BaseModel)
NAMESPACED_INDEX = "stampede_templates"
CLUSTER_INDEX = "stampede_cluster_templates"


@dataclass(frozen=True)
class Entry:
    """One template as indexed: parsed, or the reason it cannot be used."""

    resource_version: str
    document: TemplateDocument | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class _Rendered:
    key: tuple[str, str, str]
    spec: PolicySpec


_PARTS: weakref.WeakValueDictionary[tuple[type[BaseModel], str], BaseModel] = weakref.WeakValueDictionary()
"""Every part of a kept spec, by its model and its JSON: held as long as some policy's spec holds it."""


def share_parts(spec: M) -> M:
    """`spec` with each of its parts replaced by an equal part another kept spec already holds.

    Equal JSON is an equal value: the models are frozen and hold nothing their JSON does not show, apart
    from the spec's own private fields (`PolicySpec._template_generation`), which stay with `spec` itself:
    only its parts are shared, never the spec. Runs once per kept spec (a new policy or generation), not per poll.
    """
    update: dict[str, Any] = {}
    for name, value in spec.__dict__.items():
        shared = _shared(value)
        if shared is not value:
            update[name] = shared
    return spec.model_copy(update=update) if update else spec


def _shared(value: Any) -> Any:
    if isinstance(value, BaseModel):
        part = share_parts(value)
        key = (type(part), part.model_dump_json())
        held = _PARTS.get(key)
        if held is not None:
            return held
        _PARTS[key] = part
        return part
    if isinstance(value, list) and value:
        items = [_shared(item) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, dict) and value:
        members = {k: _shared(v) for k, v in value.items()}
        return value if all(members[k] is v for k, v in value.items()) else members
    return value


class TemplateStore:
    """The indices kopf maintains, and the per-policy render cache."""

    def __init__(self) -> None:
        self.namespaced: Mapping[Any, Any] | None = None
        self.cluster: Mapping[Any, Any] | None = None
        self.cluster_served = False
        self._rendered: dict[tuple[str, str], _Rendered] = {}
        self.renders = 0
        """How many policies were rendered and validated (not served from the cache): for the benchmark."""

    def attach(self, *, namespaced: Mapping[Any, Any] | None, cluster: Mapping[Any, Any] | None) -> None:
        self.namespaced, self.cluster = namespaced, cluster
        self._rendered.clear()

    def lookup(self, kind: str, *, namespace: str, name: str) -> Entry | None:
        index, key = (self.cluster, name) if kind == TemplateKind.CLUSTER else (self.namespaced, (namespace, name))
        if index is None or key not in index:
            return None
        for entry in index[key]:  # a kopf index holds a store of values per key; one object per key here
            if isinstance(entry, Entry):
                return entry
        return None

    def policy_spec(self, body: Mapping[str, Any]) -> PolicySpec:
        """The policy's spec as in force: rendered from its template when it names one.

        Raises TemplateProblem (a missing or invalid template, missing or unknown arguments) or
        pydantic's ValidationError (the rendered spec is not a valid policy).
        """
        raw = dict(body.get("spec") or {})
        ref = raw.get("templateRef")
        meta = body.get("metadata") or {}
        namespace, policy = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        if not isinstance(ref, Mapping):
            # Validated once per generation, not at every poll: at 10,000 policies validating the spec was
            # a third of the event loop's time. A spec edit bumps the generation; the uid tells a new object.
            generation, uid = meta.get("generation"), meta.get("uid")
            if generation is None or uid is None:
                return render_spec(raw, None)
            own = ("", f"{uid}/{generation}", "")
            hit = self._rendered.get((namespace, policy))
            if hit is not None and hit.key == own:
                return hit.spec
            own_spec = share_parts(render_spec(raw, None))
            self._rendered[(namespace, policy)] = _Rendered(key=own, spec=own_spec)
            return own_spec
        kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
        entry = self.lookup(kind, namespace=namespace, name=name)
        if entry is None:
            if kind == TemplateKind.CLUSTER and not self.cluster_served:
                raise TemplateProblem(
                    f"spec.templateRef: {kind} {name} cannot be used: the operator watches only its namespaces (-n), "
                    "so it does not read cluster-scoped templates; use a StampedePolicyTemplate or run it with -A"
                )
            where = "" if kind == TemplateKind.CLUSTER else f" in namespace {namespace}"
            raise TemplateProblem(f"spec.templateRef: {kind} {name} not found{where}")
        if entry.document is None:
            raise TemplateProblem(f"spec.templateRef: {kind} {name} is invalid: {entry.error}")
        key = (kind, entry.resource_version, json.dumps(raw, sort_keys=True))
        cached = self._rendered.get((namespace, policy))
        if cached is not None and cached.key == key:
            return cached.spec
        self.renders += 1
        spec = share_parts(render_spec(raw, entry.document))
        self._rendered[(namespace, policy)] = _Rendered(key=key, spec=spec)
        return spec

    def forget(self, namespace: str, name: str) -> None:
        self._rendered.pop((namespace, name), None)


STORE = TemplateStore()


def policy_spec(body: Mapping[str, Any]) -> PolicySpec:
    """`TemplateStore.policy_spec` of the operator's store (what the poll loop calls)."""
    return STORE.policy_spec(body)


def entry_of(body: Mapping[str, Any]) -> Entry:
    """Parse a template once, when it changes, instead of at every poll of every policy."""
    meta = body.get("metadata") or {}
    resource_version = str(meta.get("resourceVersion") or meta.get("generation") or "")
    try:
        # A plain deep copy: kopf's body is a live view, and the index must hold what was parsed.
        document = TemplateDocument.model_validate(json.loads(json.dumps(dict(body), default=dict)))
    except ValidationError as error:
        return Entry(resource_version=resource_version, document=None, error="; ".join(validation_lines(error)))
    return Entry(resource_version=resource_version, document=document)


@kopf.index(GROUP, VERSION, TEMPLATE_PLURAL, id=NAMESPACED_INDEX)
async def index_template(*, body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Any, Entry]:
    """Namespaced templates, by (namespace, name)."""
    return {(namespace or "", name): entry_of(body)}


async def index_cluster_template(*, body: kopf.Body, name: str, **_: Any) -> dict[Any, Entry]:
    """Cluster templates, by name."""
    return {name: entry_of(body)}


def serve_cluster_templates(registry: kopf.OperatorRegistry | None = None) -> None:
    """Watch ClusterStampedePolicyTemplates too (`stampede run -A` only: it needs a cluster-wide watch)."""
    if STORE.cluster_served:
        return
    kopf.index(GROUP, VERSION, CLUSTER_TEMPLATE_PLURAL, id=CLUSTER_INDEX, registry=registry)(index_cluster_template)
    STORE.cluster_served = True


@kopf.on.startup()
async def attach_indices(**kwargs: Any) -> None:
    """kopf hands its indices to handlers as keyword arguments; the poll loops read them through STORE."""
    STORE.attach(namespaced=kwargs.get(NAMESPACED_INDEX), cluster=kwargs.get(CLUSTER_INDEX))


__all__ = ["STORE", "Entry", "TemplateStore", "entry_of", "policy_spec", "serve_cluster_templates"]
