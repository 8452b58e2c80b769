"""`stampede lint`: check StampedePolicy YAML before it reaches a cluster.

Policies live in Git and reach the cluster through Argo CD, where a mistake surfaces late (a sync
error, or an `InvalidSpec` condition nobody is watching). Linting validates through exactly the
models the operator uses, so "lint clean" means "the operator accepts it", and reports each problem
as one line that names the file, the object and the wire-name path of the field (`spec.phases[0]
.actions[1].scale.replicas`), ready for CI logs and editors. Files may be whole kustomize bundles:
documents of other kinds are skipped, but a file holding no StampedePolicy at all is a problem (a
wrong path in CI must not pass as "OK").

One run reports every problem of a file: pydantic stops at field errors before the spec's
cross-field rules run, so when the schema fails, the cross-field rules (undeclared signals,
duplicate names, phase order) are re-checked here on the raw YAML, with the operator's own
messages. One mistake gives one line: a misspelt required field is one unknown field with a "did you
mean", not "Field required" plus "Extra inputs are not permitted". Unknown `metadata` fields, which
the models let through and the API server silently drops, are reported too.
"""

from __future__ import annotations

import asyncio
import difflib
import itertools
import json
import re
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from .api import API_VERSION, GROUP, KIND
from .api.conditions import parse_condition
from .api.crd import open_api_schema
from .api.durations import format_duration, parse_duration
from .api.spec import PolicySpec, StampedePolicyDocument, TemplateKind
from .api.templates import TemplateDocument, TemplateProblem, render, rendered_context

if TYPE_CHECKING:
    from .sources.prometheus import Reading


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing wrong with one file, printed as one line."""

    file: str
    object: str
    path: str
    message: str
    line: int | None = None
    """1-based line, when known (YAML syntax errors)."""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return ": ".join(part for part in (where, self.object, self.path, self.message) if part)


@dataclass(frozen=True, kw_only=True)
class _Policy:
    """A policy that validated, kept for the optional query check."""

    file: str
    object: str
    spec: PolicySpec


def lint_files(paths: list[str], *, prometheus_url: str | None = None) -> list[Problem]:
    """Every problem in every file, in file order; with `prometheus_url`, also every failing query."""
    return lint_report(paths, prometheus_url=prometheus_url)[0]


def lint_report(paths: list[str], *, prometheus_url: str | None = None) -> tuple[list[Problem], list[Problem]]:
    """The problems (`lint_files`) and the advice: valid policies whose remedies may feed the stampede."""
    problems: list[Problem] = []
    policies: list[_Policy] = []
    templates = _templates_in(paths)  # a policy may name a template given in any of the files
    for path in paths:
        problems += _lint_file(path, policies, templates)
    if prometheus_url is not None:
        problems += _query_problems(policies, url=prometheus_url)
    advice = [
        Problem(file=p.file, object=p.object, path=where, message=message)
        for p in policies
        for where, message in restart_advice(p.spec)
    ]
    return problems, advice


def restart_advice(spec: PolicySpec) -> list[tuple[str, str]]:
    """(path, advice) for restarts that may feed the stampede: a restarted pod starts with a cold cache.

    A workload restarted by several actions restarts once per poll that applies or undoes one of them
    (the operator coalesces only within a poll); one restarted in the first phase restarts at the
    stampede's worst moment, when every cold cache adds misses.
    """
    advice: list[tuple[str, str]] = []
    restarted_by: dict[tuple[str, str], list[str]] = {}
    for i, phase in enumerate(spec.phases):
        for j, action in enumerate(phase.actions):
            if action.config_map is None:
                continue
            for k, workload in enumerate(action.config_map.restart):
                where = f"spec.phases[{i}].actions[{j}].configMap.restart[{k}]"
                earlier = restarted_by.setdefault((workload.kind.value, workload.name), [])
                if earlier:
                    advice.append(
                        (
                            where,
                            f"{workload.kind.value} {workload.name} is also restarted by action(s) "
                            f"{', '.join(earlier)}: each phase and each rollback step that reaches one of them "
                            "restarts it again (restarts are coalesced only within one poll), and every restart "
                            "brings its pods back with cold caches; consider one ConfigMap action for it",
                        )
                    )
                earlier.append(action.name)
                if i == 0:
                    advice.append(
                        (
                            where,
                            f"{workload.kind.value} {workload.name} is restarted in the first phase "
                            f"({phase.name}), while the stampede is at its worst: its pods come back with cold "
                            "caches and new connections; consider a later phase, or settings it reads without "
                            "a restart",
                        )
                    )
    return advice


def _lint_file(path: str, policies: list[_Policy], templates: _Templates) -> list[Problem]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Problem(file=path, object="", path="", message=f"cannot read the file: {exc}")]
    problems: list[Problem] = []
    found = 0
    try:
        # Iterating lazily keeps the documents before a syntax error, so they are still checked.
        for index, document in enumerate(yaml.load_all(text, Loader=_StrictLoader), start=1):
            for obj in _objects(document):
                found += isinstance(obj, dict) and obj.get("kind") in (KIND, *TEMPLATE_KINDS)
                problems += _lint_object(obj, file=path, index=index, policies=policies, templates=templates)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        detail = " ".join(part for part in (exc.context, exc.problem) if part)
        problems.append(Problem(file=path, object="", path="", message=f"YAML syntax error: {detail}", line=line))
    except yaml.YAMLError as exc:
        problems.append(Problem(file=path, object="", path="", message=f"YAML syntax error: {exc}"))
    if not found and not problems:
        problems.append(Problem(file=path, object="", path="", message=f"no {KIND} in this file"))
    return problems


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys, as `kubectl apply` does.

    PyYAML silently keeps the last of two `data:` keys; the cluster would refuse the file, so lint must too.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _objects(document: Any) -> Iterator[Any]:
    """The objects of one YAML document; `kind: List` (what `kubectl get -o yaml` prints) is unpacked."""
    if document is None:
        return
    if (
        isinstance(document, dict)
        and str(document.get("kind", "")).endswith("List")
        and isinstance(document.get("items"), list)
    ):
        yield from document["items"]
        return
    yield document


def _lint_object(
    obj: Any, *, file: str, index: int, policies: list[_Policy], templates: _Templates | None = None
) -> list[Problem]:
    if not isinstance(obj, dict):
        return [
            Problem(
                file=file,
                object=f"document {index}",
                path="",
                message="not a Kubernetes object (a mapping with apiVersion and kind)",
            )
        ]
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    label = _label(obj, index=index)
    if kind in TEMPLATE_KINDS:
        return _template_problems(obj, file=file, index=index)
    if kind != KIND:
        if isinstance(api_version, str) and api_version.startswith(f"{GROUP}/"):
            return [
                Problem(
                    file=file,
                    object=f"document {index}",
                    path="kind",
                    message=f"unknown kind {kind!r} in {GROUP} (expected {KIND!r})",
                )
            ]
        return []
    problems: list[Problem] = []
    if api_version != API_VERSION:
        problems.append(
            Problem(
                file=file,
                object=label,
                path="apiVersion",
                message=f"expected {API_VERSION!r} for kind {KIND} (got {api_version!r})",
            )
        )
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        problems += [
            Problem(file=file, object=label, path=f"metadata.{key}", message=message)
            for key, message in _unknown_metadata(metadata)
        ]
    obj, label, unrenderable = _rendered(obj, file=file, label=label, templates=templates or {})
    if unrenderable:
        return problems + unrenderable
    try:
        spec_of = obj.get("spec")
        context = rendered_context(spec_of) if isinstance(spec_of, dict) else None
        document = StampedePolicyDocument.model_validate(obj, context=context)
    except ValidationError as exc:
        pairs = _schema_pairs(exc.errors(include_url=False))
        spec = obj.get("spec")
        if isinstance(spec, dict) and _cross_field_skipped(exc):
            pairs += [(f"spec.{where}", message) for where, message in _cross_field(spec)]
        problems += [
            Problem(file=file, object=label, path=path, message=message) for path, message in dict.fromkeys(pairs)
        ]
        return problems
    if not problems:
        policies.append(_Policy(file=file, object=label, spec=document.spec))
    return problems


def _schema_pairs(errors: list[ErrorDetails]) -> list[tuple[str, str]]:
    """(path, message) pairs for pydantic's errors, one per mistake.

    An unknown field next to a missing required one it resembles is one misspelling: it is reported
    once, at the unknown field, with the name it should have had.
    """
    missing = {tuple(error["loc"]) for error in errors if error["type"] == "missing"}
    absorbed: set[tuple[int | str, ...]] = set()
    pairs: list[tuple[str, str]] = []
    for error in errors:
        loc = tuple(error["loc"])
        if error["type"] != "extra_forbidden" or not loc or not isinstance(loc[-1], str):
            continue
        parent, name = loc[:-1], loc[-1]
        wanted = [str(other[-1]) for other in missing if other[:-1] == parent and other not in absorbed]
        match = difflib.get_close_matches(name, wanted, n=1, cutoff=0.6)
        if match:
            absorbed.add((*parent, match[0]))
    for error in errors:
        loc = tuple(error["loc"])
        if loc in absorbed:
            continue
        if error["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
            pairs.append((_path(list(loc)), _unknown_field(loc[-1], _known_fields(loc[:-1]))))
        else:
            pairs += _lines(error)
    return pairs


def _unknown_field(name: str, known: list[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"unknown field, did you mean {match[0]!r}?" if match else "unknown field"


def _known_fields(loc: tuple[int | str, ...]) -> list[str]:
    """The wire names allowed at a location, read from the CRD schema the API server enforces."""
    node: Any = open_api_schema()
    for part in loc:
        node = node.get("items", {}) if isinstance(part, int) else node.get("properties", {}).get(part, {})
    return sorted(node.get("properties", {}))


#: ObjectMeta's fields: anything else under `metadata` is dropped by the API server without a word.
_METADATA_FIELDS = [
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
]


def _unknown_metadata(metadata: dict[Any, Any]) -> list[tuple[str, str]]:
    return [
        (str(key), _unknown_field(str(key), _METADATA_FIELDS) + " (the API server would drop it)")
        for key in metadata
        if key not in _METADATA_FIELDS
    ]


def _cross_field_skipped(exc: ValidationError) -> bool:
    """True when an error inside the spec kept pydantic from running the spec's cross-field rules."""
    return any(len(error["loc"]) >= 2 and error["loc"][0] == "spec" for error in exc.errors(include_url=False))


def _cross_field(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """The spec's cross-field rules on raw YAML, for a spec that failed elsewhere; same wording as the models.

    Values that are themselves malformed are left to the schema errors, so no mistake is counted twice.
    """
    pairs: list[tuple[str, str]] = []
    poll = _duration(spec.get("pollInterval"))
    if poll is not None and poll.total_seconds() < 1:
        pairs.append(("pollInterval", f"must be at least 1s, got {format_duration(poll)!r}"))
    signals = _items(spec.get("signals"))
    pairs += _raw_duplicates("signal name", [(f"signals[{i}].name", s.get("name")) for i, s in signals])
    severities = _items(spec.get("severities"))
    pairs += _raw_duplicates("severity level", [(f"severities[{i}].level", s.get("level")) for i, s in severities])
    phases = _items(spec.get("phases"))
    pairs += _raw_duplicates("phase name", [(f"phases[{i}].name", p.get("name")) for i, p in phases])
    pairs += _raw_duplicates(
        "action name",
        [(f"phases[{i}].actions[{j}].name", a.get("name")) for i, p in phases for j, a in _items(p.get("actions"))],
    )
    declared = {s.get("name") for _, s in signals}
    located = [(f"severities[{i}].any", s.get("any")) for i, s in severities]
    recovery = spec.get("recovery")
    if isinstance(recovery, dict):
        located.append(("recovery.all", recovery.get("all")))
    for where, texts in located:
        for j, text in enumerate(texts if isinstance(texts, list) else []):
            try:
                condition = parse_condition(text)
            except (TypeError, ValueError):
                continue
            if condition.signal not in declared:
                pairs.append(
                    (
                        f"{where}[{j}]",
                        f"condition {condition.text!r} names undeclared signal {condition.signal!r}",
                    )
                )
    afters = [(i, _duration(p.get("after", "0"))) for i, p in phases]
    for (before_index, before), (index, after) in itertools.pairwise(afters):
        if before is not None and after is not None and after < before and index == before_index + 1:
            pairs.append(
                (
                    f"phases[{index}].after",
                    f"{format_duration(after)!r} is earlier than phases[{before_index}].after "
                    f"{format_duration(before)!r} (must be non-decreasing)",
                )
            )
    return pairs


def _items(value: Any) -> list[tuple[int, dict[str, Any]]]:
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)] if isinstance(value, list) else []


def _duration(value: Any) -> timedelta | None:
    try:
        return parse_duration(value)
    except (TypeError, ValueError):
        return None


def _raw_duplicates(what: str, located: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    seen: set[str] = set()
    pairs = []
    for where, value in located:
        if not isinstance(value, str):
            continue
        if value in seen:
            pairs.append((where, f"duplicate {what} {value!r}"))
        seen.add(value)
    return pairs


def _label(obj: dict[str, Any], *, index: int) -> str:
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not isinstance(name, str) or not name:
        return f"{KIND} (document {index})"
    return f"{KIND} {namespace}/{name}" if isinstance(namespace, str) and namespace else f"{KIND} {name}"


# A message of the spec's cross-field validator starts with the path it is about: `phases[1].after: ...`.
_PATH_PREFIX = re.compile(
    r"^(?P<path>[A-Za-z_]\w*(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?:\[\d+\])*)*): (?P<rest>.*)$", re.DOTALL
)
_SEPARATOR = re.compile(r"; (?=[A-Za-z_]\w*(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?:\[\d+\])*)*: )")
_IDENTIFIER = re.compile(r"^[A-Za-z_]\w*$")
# Inputs not shown as "(got ...)": their message already says all there is to say.
_NO_VALUE_SHOWN = {"missing", "extra_forbidden"}


def validation_lines(error: ValidationError, *, root: str = "") -> list[str]:
    """`path: message (got value)` lines for a validation error, paths prefixed with `root`."""
    lines = []
    for detail in error.errors():
        prefixed = cast("ErrorDetails", {**detail, "loc": (root, *detail["loc"]) if root else detail["loc"]})
        lines += [f"{where}: {text}" if where else text for where, text in _lines(prefixed)]
    return lines


def _lines(error: ErrorDetails) -> list[tuple[str, str]]:
    """(path, message) pairs for one pydantic error; a cross-field error becomes one pair per message."""
    loc = list(error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if loc and loc[-1] == "[key]":
        loc.pop()
        message = f"invalid key: {message}"
    path = _path(loc)
    if error["type"] == "value_error":
        pairs = []
        for part in _SEPARATOR.split(message):
            match = _PATH_PREFIX.match(part)
            if match:
                pairs.append((f"{path}.{match['path']}" if path else match["path"], match["rest"]))
            else:
                pairs.append((path, part))
        return [(where, _with_value(text, error)) for where, text in pairs]
    return [(path, _with_value(message, error))]


def _path(loc: list[int | str]) -> str:
    """`spec.phases[0].actions[1]` from pydantic's location (which uses the wire aliases)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part):
            out += f".{part}" if out else part
        else:
            # Map keys such as ConfigMap keys may contain dots: quote them so the path stays unambiguous.
            out += f"[{json.dumps(part)}]"
    return out


def _with_value(message: str, error: ErrorDetails) -> str:
    value = error.get("input")
    if error["type"] in _NO_VALUE_SHOWN or (value is not None and not isinstance(value, str | int | float | bool)):
        return message
    shown = repr(value)
    if isinstance(value, str) and shown in message:
        return message
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{message} (got {shown})"


def _query_problems(policies: list[_Policy], *, url: str) -> list[Problem]:
    """Run every signal's query once as an instant query; a signal that would be unknown is a problem."""
    # Imported here: only `stampede lint --prometheus` needs an HTTP client, and only the sources layer
    # talks to Prometheus.
    from .sources.prometheus import Endpoint, PrometheusSource

    async def read_all() -> list[dict[str, Reading]]:
        source = PrometheusSource()
        round_key = object()  # one round: a query repeated across policies is sent once
        try:
            return await asyncio.gather(
                *(
                    source.read(
                        Endpoint(url=url),
                        {signal.name: signal.query for signal in policy.spec.signals},
                        timeout=policy.spec.query_timeout.total_seconds(),
                        round_key=round_key,
                    )
                    for policy in policies
                )
            )
        finally:
            source.close()

    problems: list[Problem] = []
    for policy, readings in zip(policies, asyncio.run(read_all()), strict=True):
        for i, signal in enumerate(policy.spec.signals):
            reading = readings[signal.name]
            if reading.value is None:
                problems.append(
                    Problem(
                        file=policy.file,
                        object=policy.object,
                        path=f"spec.signals[{i}].query",
                        message=f"signal {signal.name!r} would be unknown: {reading.error}",
                    )
                )
    return problems


# -- templates ------------------------------------------------------------------------------------
# A templated policy is checked as the operator will run it: rendered from a template given in the same
# files (a template only in the cluster cannot be seen offline, and is reported as not found).

TEMPLATE_KINDS = {kind.value for kind in TemplateKind}
_Templates = dict[tuple[str, str, str], TemplateDocument]
"""(kind, namespace or "", name) → template; cluster templates have namespace ""."""


def _templates_in(paths: list[str]) -> _Templates:
    """The valid templates of all files (the invalid ones are reported where they are linted)."""
    found: _Templates = {}
    for path in paths:
        try:
            documents = list(yaml.load_all(Path(path).read_text(encoding="utf-8"), Loader=_StrictLoader))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # reported by _lint_file
        for document in documents:
            for obj in _objects(document):
                if isinstance(obj, dict) and obj.get("kind") in TEMPLATE_KINDS:
                    try:
                        template = TemplateDocument.model_validate(obj)
                    except ValidationError:
                        continue
                    cluster = template.kind == TemplateKind.CLUSTER
                    found[
                        (
                            template.kind.value,
                            "" if cluster else template.metadata.namespace or "",
                            template.metadata.name,
                        )
                    ] = template
    return found


def _template_problems(obj: dict[str, Any], *, file: str, index: int) -> list[Problem]:
    kind = obj.get("kind")
    name = (obj.get("metadata") or {}).get("name") if isinstance(obj.get("metadata"), dict) else None
    label = f"{kind} {name}" if name else f"{kind} (document {index})"
    problems = []
    if obj.get("apiVersion") != API_VERSION:
        problems.append(
            Problem(
                file=file,
                object=label,
                path="apiVersion",
                message=f"expected {API_VERSION!r} for kind {kind} (got {obj.get('apiVersion')!r})",
            )
        )
    try:
        TemplateDocument.model_validate(obj)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            problems += [Problem(file=file, object=label, path=path, message=text) for path, text in _lines(error)]
    return problems


def _rendered(
    obj: dict[str, Any], *, file: str, label: str, templates: _Templates
) -> tuple[dict[str, Any], str, list[Problem]]:
    """The policy with its spec rendered from its template and a label naming the template, or the problems
    that prevent rendering."""
    spec = obj.get("spec")
    if not isinstance(spec, dict) or (not isinstance(spec.get("templateRef"), dict) and not spec.get("arguments")):
        return obj, label, []
    ref = spec.get("templateRef") or {}
    kind, name = str(ref.get("kind")), str(ref.get("name"))
    metadata = obj.get("metadata")
    given = metadata.get("namespace") if isinstance(metadata, dict) else None
    namespace = "" if kind == TemplateKind.CLUSTER else str(given or "")
    template = templates.get((kind, namespace, name))
    try:
        rendered = render(spec, template)
    except TemplateProblem as problem:
        text = str(problem)
        if template is None and "not found" in text:
            text += " in the files given (lint resolves templates given in the same files)"
        problems = []
        for part in text.split("; "):
            path, _, message = part.partition(": ")
            problems.append(Problem(file=file, object=label, path=path, message=message))
        return obj, label, problems
    return {**obj, "spec": rendered}, f"{label} (rendered from {kind} {name})", []
