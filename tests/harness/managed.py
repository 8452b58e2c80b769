"""managedFields as a real API server keeps them: one entry per manager, operation and subresource, with
the set of fields each owns, ownership moving as writes change fields, and Apply conflicts.

Argo CD's `managedFieldsManagers` and any server-side-apply user read these sets, and the operator
promises that after rollback its manager owns no field it restored; with empty `fieldsV1` the
harness could not tell. This follows k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager and
sigs.k8s.io/structured-merge-diff (merge/update.go: Update gives the updater every changed field and
takes it from the others; Apply sets the applier's fields to exactly its configuration and refuses
to change a field another manager owns unless forced).

What is approximated, without the Go types' schemas: which lists are associative (keyed by `name`,
`type`, `level`, `uid` or `containerPort` when every item has it; `finalizers` is a set; other lists
are atomic) and which objects are maps whose own node is owned (`labels`, `annotations`, `data`,
...); structs own only their leaves, as in the real sets. Apply does not delete fields its manager
stops applying.

Writing `metadata.managedFields` follows k8s.io/apimachinery/pkg/util/managedfields/internal/fieldmanager.go
(`decodeLiveOrNew`, `isResetManagedFields`) and managedfields.go (`DecodeManagedFields`): see `requested_entries`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]
Path = tuple[str, ...]

#: Object fields that are granular maps in the Go types: their node is owned as `.` when added.
_MAPS = frozenset({"labels", "annotations", "data", "binaryData", "stringData", "matchLabels", "nodeSelector"})
#: Keys that make a list of objects associative, tried in this order (containers, conditions, ...).
_LIST_KEYS = ("name", "type", "level", "uid", "containerPort")
#: metadata fields the server owns or the request cannot set: never in anyone's set.
_SYSTEM_METADATA = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
        "generateName",
    }
)
_ITEM = object()  # the marker value of a list item's or map's own node


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[str, Path]]) -> None:
        self.conflicts = conflicts
        listed = "\n".join(f'- conflict with "{manager}": {render_path(path)}' for manager, path in conflicts)
        super().__init__(f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) != 1 else ''}:\n{listed}")


def render_path(path: Path) -> str:
    """`.spec.replicas`, `.spec.containers[name="web"].image` as the server's conflict messages spell them."""
    out = ""
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            out += f".{rest}"
        elif kind == "k":
            key = json.loads(rest)
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in key.items()) + "]"
        elif kind == "v":
            out += f"[={rest}]"
    return out


def _relevant(obj: Obj, *, subresource: str | None, has_status: bool) -> Obj:
    """The part of an object a write through this endpoint may own (fieldmanager's reset fields)."""
    result = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    meta = {k: v for k, v in (result.get("metadata") or {}).items() if k not in _SYSTEM_METADATA}
    # ObjectMeta's maps are `omitempty` (k8s.io/apimachinery/pkg/apis/meta/v1/types.go): a real server never
    # stores an empty `labels` or `annotations`, so removing the last key removes the field from every set.
    meta = {k: v for k, v in meta.items() if not (k in ("labels", "annotations") and not v)}
    result["metadata"] = meta
    if subresource == "status":
        return {"status": result["status"]} if "status" in result else {}
    if has_status:
        result.pop("status", None)
    if not meta:
        result.pop("metadata")
    return result


def _list_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    for key in _LIST_KEYS:
        if all(key in item for item in items):
            return key
    return None


def _walk(value: Any, prefix: Path, out: dict[Path, Any]) -> None:
    if isinstance(value, dict):
        name = prefix[-1][2:] if prefix and prefix[-1].startswith("f:") else ""
        if name in _MAPS:
            out[prefix] = _ITEM
        if not value and prefix:
            out[prefix] = {}
        for key, item in value.items():
            _walk(item, (*prefix, f"f:{key}"), out)
    elif isinstance(value, list) and prefix == ("f:metadata", "f:finalizers"):
        for item in value:
            out[(*prefix, f"v:{json.dumps(item)}")] = item
    elif isinstance(value, list) and (key := _list_key(value)) is not None:
        for item in value:
            element = f"k:{json.dumps({key: item[key]}, separators=(',', ':'))}"
            out[(*prefix, element)] = _ITEM
            for field, sub in item.items():
                _walk(sub, (*prefix, element, f"f:{field}"), out)
    else:
        out[prefix] = value


def paths(obj: Obj) -> dict[Path, Any]:
    """Every owned-able node of an (already filtered) object, with its value (leaves) or a marker."""
    out: dict[Path, Any] = {}
    _walk(obj, (), out)
    out.pop((), None)
    return out


def to_fields_v1(owned: Iterable[Path]) -> Obj:
    """A set of paths as the FieldsV1 tree: `{"f:spec": {"f:replicas": {}}}`, `.` for owned inner nodes."""
    owned = set(owned)
    tree: Obj = {}
    for path in sorted(owned):
        node = tree
        for element in path:
            node = node.setdefault(element, {})

    def mark(node: Obj, prefix: Path) -> None:
        for element, child in node.items():
            path = (*prefix, element)
            if child and path in owned:
                child["."] = {}
            if element != ".":
                mark(child, path)

    mark(tree, ())
    return tree


def from_fields_v1(tree: Obj, prefix: Path = ()) -> set[Path]:
    result: set[Path] = set()
    for element, child in (tree or {}).items():
        if element == ".":
            continue
        path = (*prefix, element)
        if not child or "." in child:
            result.add(path)
        result |= from_fields_v1(child, path)
    return result


def _identifier(entry: Obj) -> tuple[Any, ...]:
    # managedfields.go BuildManagerIdentifier: all but fieldsType, fieldsV1 and time; appliers without apiVersion.
    rest = {k: v for k, v in entry.items() if k not in ("fieldsType", "fieldsV1", "time")}
    if entry.get("operation") == "Apply":
        rest.pop("apiVersion", None)
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in rest.items()))


def requested_entries(requested: Any, *, live: list[Obj]) -> tuple[list[Obj], bool]:
    """The managedFields an Update-style write starts from, and whether the request reset them.

    k8s.io/apimachinery/pkg/util/managedfields/internal/fieldmanager.go `decodeLiveOrNew`: a write through a
    subresource, or one whose managedFields are absent, undecodable or hold no entry, keeps the live object's
    (callers pass `None` for subresources and absent fields); `[]` or `[{}]` (`isResetManagedFields`) resets them to
    none; any other list replaces them as given. managedfields.go `DecodeManagedFields`: each entry needs operation
    `Apply` or `Update`, a non-empty apiVersion and fieldsType `FieldsV1`, or the whole list is ignored; entries with
    the same identifier collapse into the last one. Entries that own nothing are dropped later, as
    sigs.k8s.io/structured-merge-diff merge/update.go deletes every manager whose set is empty.
    """
    if not isinstance(requested, list):
        return live, False
    if requested == [] or requested == [{}]:
        return [], True
    decoded: dict[tuple[Any, ...], Obj] = {}
    for entry in requested:
        if (
            not isinstance(entry, dict)
            or entry.get("operation") not in ("Apply", "Update")
            or not entry.get("apiVersion")
            or entry.get("fieldsType") != "FieldsV1"
            or not isinstance(entry.get("fieldsV1") or {}, dict)
        ):
            return live, False
        decoded[_identifier(entry)] = entry
    return list(decoded.values()), False


def update_entries(
    entries: list[Obj],
    *,
    manager: str,
    operation: str,
    subresource: str | None,
    api_version: str,
    now: str,
    old: Obj | None,
    new: Obj,
    has_status: bool,
    applied: Obj | None = None,
    force: bool = False,
) -> list[Obj]:
    """The managedFields after `manager` turned `old` into `new` (Update), or applied `applied` (Apply)."""
    before = paths(_relevant(old, subresource=subresource, has_status=has_status)) if old is not None else {}
    after = paths(_relevant(new, subresource=subresource, has_status=has_status))
    changed = {p for p, v in after.items() if p not in before or (v is not _ITEM and before[p] != v)}
    removed = set(before) - set(after)
    sets = [(entry, from_fields_v1(entry.get("fieldsV1") or {})) for entry in entries]
    mine = lambda e: (  # noqa: E731
        e.get("manager") == manager and e.get("operation") == operation and e.get("subresource") == subresource
    )
    if operation == "Apply":
        wanted = set(paths(_relevant(applied or {}, subresource=subresource, has_status=has_status)))
        conflicts = [
            (entry.get("manager", ""), p)
            for entry, owned in sets
            if not mine(entry) and entry.get("manager") != manager
            for p in sorted(owned & changed & wanted)
        ]
        if conflicts and not force:
            raise ApplyConflict(conflicts)
        own = wanted
    else:
        previous = next((owned for entry, owned in sets if mine(entry)), set())
        own = (previous | changed) - removed
    result: list[Obj] = []
    for entry, owned in sets:
        if mine(entry):
            continue
        remaining = owned - changed - removed
        if remaining:
            result.append({**entry, "fieldsV1": to_fields_v1(remaining)})
    if own:
        mine_entry: Obj = {
            "manager": manager,
            "operation": operation,
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(own),
        }
        if subresource:
            mine_entry["subresource"] = subresource
        result.append(mine_entry)
    return result
