"""Patch semantics of the emulated API server: JSON merge, strategic merge, JSON patch, and selectors.

These are pure functions over plain dicts so that the store can apply them atomically and the
unit tests can exercise them without HTTP. RFC 6902 JSON patch is delegated to `jsonpatch`,
which is already a dependency of kopf and kmock, so it is always present in the venv.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from typing import Any

import jsonpatch

# Lists of objects that the real API server merges by the `name` key under strategic merge patch.
_NAME_KEYED_LISTS = frozenset(
    {
        "containers",
        "initContainers",
        "ephemeralContainers",
        "env",
        "volumes",
        "volumeMounts",
        "ports",
        "imagePullSecrets",
        "volumeClaimTemplates",
        "conditions",
    }
)


_ATOMS = (str, int, float, bool, type(None))


def clone(value: Any) -> Any:
    """A deep copy of JSON-shaped data, several times faster than `copy.deepcopy` on objects of dicts and lists.

    Anything else (a `datetime` from a YAML seed) falls back to `copy.deepcopy`.
    """
    kind = type(value)
    if kind is dict:
        return {k: clone(v) for k, v in value.items()}
    if kind is list:
        return [clone(v) for v in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


class PatchError(Exception):
    """A patch that cannot be applied; the server answers 422 (test failures) or 400."""

    def __init__(self, message: str, *, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def evanphx_merge_patch(target: Any, patch: Any) -> Any:
    """JSON merge patch as the real API server applies it: evanphx/json-patch v4 `MergePatch`.

    It differs from RFC 7386 in one way that matters: a value copied in from the patch (a new key,
    or anything replacing a non-object) goes through `pruneNulls`, which drops `null` members of
    objects at any depth, inside arrays too (`pruneAryNulls` recurses into their elements), so
    `[{"a": null}]` is stored as `[{}]`. Null elements of an array themselves are kept.
    """
    if not isinstance(patch, dict):
        return _prune_nulls(clone(patch))
    if not isinstance(target, dict):
        return _prune_nulls(clone(patch))
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif result.get(key) is None:
            result[key] = _prune_nulls(clone(value))
        else:
            result[key] = _evanphx_merge(result[key], value)
    return result


def _evanphx_merge(current: Any, patch: Any) -> Any:
    """evanphx `merge`: a non-object current value is replaced by the pruned patch; a non-object
    patch over an object replaces it as is."""
    if not isinstance(current, dict):
        return _prune_nulls(clone(patch))
    if not isinstance(patch, dict):
        return clone(patch)
    return evanphx_merge_patch(current, patch)


def _prune_nulls(value: Any) -> Any:
    """evanphx `pruneNulls` / `pruneDocNulls` / `pruneAryNulls`."""
    if isinstance(value, dict):
        return {k: _prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune_nulls(v) if v is not None else None for v in value]
    return value


def strategic_merge_patch(target: Any, patch: Any, *, key: str = "") -> Any:
    """A pragmatic subset of strategic merge: named lists merge by `name`, `$patch: delete` removes."""
    if isinstance(patch, dict):
        if patch.get("$patch") == "delete":
            return None
        if patch.get("$patch") == "replace":
            return {k: clone(v) for k, v in patch.items() if not k.startswith("$")}
        result = dict(target) if isinstance(target, dict) else {}
        for k, value in patch.items():
            if k.startswith("$"):  # directives such as $setElementOrder/$retainKeys: not emulated
                continue
            if value is None:
                result.pop(k, None)
            else:
                merged = strategic_merge_patch(result.get(k), value, key=k)
                if merged is None:
                    result.pop(k, None)
                else:
                    result[k] = merged
        return result
    if (
        isinstance(patch, list)
        and isinstance(target, list)
        and key in _NAME_KEYED_LISTS
        and all(isinstance(i, dict) and "name" in i for i in patch + target)
    ):
        merged_list = [clone(i) for i in target]
        for item in patch:
            idx = next((n for n, old in enumerate(merged_list) if old["name"] == item["name"]), None)
            if item.get("$patch") == "delete":
                if idx is not None:
                    del merged_list[idx]
            elif idx is None:
                merged_list.append(strategic_merge_patch(None, item))
            else:
                merged_list[idx] = strategic_merge_patch(merged_list[idx], item)
        return merged_list
    return clone(patch)


def json_patch(target: dict[str, Any], ops: Any) -> dict[str, Any]:
    """RFC 6902; a failed `test` or a bad path is a 422 like on the real server."""
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations", code=400)
    try:
        result = jsonpatch.apply_patch(target, ops, in_place=False)
    except jsonpatch.JsonPatchTestFailed as e:
        raise PatchError(f"the server rejected our request due to an error in our request: {e}") from e
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as e:
        raise PatchError(f"the server rejected our request due to an error in our request: {e}") from e
    if not isinstance(result, dict):
        raise PatchError("json patch must produce an object")
    return result


# ---------------------------------------------------------------------------------------------
# Selectors. They live here because they are the other pure, dict-level piece of API semantics.

Matcher = Callable[[Mapping[str, Any]], bool]


def _split_top_level(text: str) -> list[str]:
    """Split by commas not inside parentheses (label `in (a,b)` sets contain commas)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^([^\s!=]+)\s+(in|notin)\s+\((.*)\)$")
_CMP_RE = re.compile(r"^([^\s!=]+)\s*(==|!=|=)\s*(.*)$")


class SelectorError(ValueError):
    pass


def label_selector(text: str | None) -> Matcher:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h` into a predicate over an object."""
    # Each requirement is (key, operator, values); operators: in, notin, exists, !exists.
    reqs: list[tuple[str, str, frozenset[str]]] = []
    for term in _split_top_level(text or ""):
        if m := _SET_RE.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append((m.group(1), m.group(2), values))
        elif m := _CMP_RE.match(term):
            reqs.append((m.group(1), "notin" if m.group(2) == "!=" else "in", frozenset([m.group(3).strip()])))
        elif term.startswith("!"):
            reqs.append((term[1:].strip(), "!exists", frozenset()))
        elif re.fullmatch(r"[A-Za-z0-9_./-]+", term):
            reqs.append((term, "exists", frozenset()))
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")

    def check(labels: Mapping[str, str], key: str, op: str, values: frozenset[str]) -> bool:
        if op == "exists":
            return key in labels
        if op == "!exists":
            return key not in labels
        return (labels.get(key) in values) == (op == "in")

    def match(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels, *req) for req in reqs)

    return match


def field_value(obj: Mapping[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _field_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def field_selector(text: str | None) -> Matcher:
    """Parse `metadata.name=x,involvedObject.kind!=Pod` into a predicate over generic dotted paths."""
    checks: list[tuple[str, bool, str]] = []
    for term in _split_top_level(text or ""):
        m = _CMP_RE.match(term)
        if not m:
            raise SelectorError(f"invalid field selector: {term!r}")
        value = m.group(3).strip().replace("\\,", ",").replace("\\=", "=").replace("\\\\", "\\")
        checks.append((m.group(1), m.group(2) != "!=", value))

    def match(obj: Mapping[str, Any]) -> bool:
        return all((_field_str(field_value(obj, path)) == value) == positive for path, positive, value in checks)

    return match
