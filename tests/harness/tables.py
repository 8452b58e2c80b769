"""Server-side `meta.k8s.io/v1 Table` rendering, which `kubectl get` asks for via the Accept header.

Without it kubectl would print only names; with it, CRD additionalPrinterColumns appear exactly
as on a real cluster, which is what the project's docs and e2e tests assert on.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

from .resources import ResourceInfo

_AGE = {
    "name": "Age",
    "type": "string",
    "format": "",
    "priority": 0,
    "description": "CreationTimestamp is the server time when this object was created.",
}
_NAME = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "priority": 0,
    "description": "Name must be unique within a namespace.",
}


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def human_age(timestamp: str | None, *, now: datetime.datetime | None = None) -> str:
    """Mimic kubectl's duration formatting (e.g. 42s, 5m3s, 3h, 2d)."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    seconds = max(0, int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def jsonpath(obj: Any, path: str) -> Any:
    """Evaluate the simple JSONPaths CRDs use: `.a.b`, `.a[0].b`, `.a['x.y']`, `{.a.b}`."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    node = obj
    for m in re.finditer(r"\.([A-Za-z0-9_$-]+)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]", path):
        key = m.group(1) or m.group(3) or m.group(4)
        if m.group(2) is not None:
            index = int(m.group(2))
            node = node[index] if isinstance(node, list) and index < len(node) else None
        else:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def _cell(value: Any, col_type: str) -> Any:
    if value is None:
        return None
    if col_type == "date":
        return human_age(str(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _builtin_columns(info: ResourceInfo) -> list[tuple[dict[str, Any], Any]]:
    """Column definitions with extractor callables for a few built-in kinds."""

    def col(name: str, fn: Any, col_type: str = "string") -> tuple[dict[str, Any], Any]:
        return ({"name": name, "type": col_type, "format": "", "priority": 0, "description": name}, fn)

    if info.key == ("", "configmaps") or info.key == ("", "secrets"):
        return [col("Data", lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}), "integer")]
    if info.key == ("", "namespaces"):
        return [col("Status", lambda o: (o.get("status") or {}).get("phase", "Active"))]
    if info.key in (("apps", "deployments"), ("apps", "statefulsets")):

        def ready(o: dict[str, Any]) -> str:
            ready, wanted = (
                (o.get("status") or {}).get("readyReplicas", 0),
                (o.get("spec") or {}).get("replicas", 0),
            )
            return f"{ready}/{wanted}"

        cols = [col("Ready", ready)]
        if info.plural == "deployments":
            cols += [
                col("Up-to-date", lambda o: (o.get("status") or {}).get("updatedReplicas", 0), "integer"),
                col("Available", lambda o: (o.get("status") or {}).get("availableReplicas", 0), "integer"),
            ]
        return cols
    if info.key == ("batch", "cronjobs"):
        return [
            col("Schedule", lambda o: (o.get("spec") or {}).get("schedule")),
            col("Suspend", lambda o: (o.get("spec") or {}).get("suspend", False), "boolean"),
        ]
    if info.key == ("", "events"):
        return [
            col("Type", lambda o: o.get("type")),
            col("Reason", lambda o: o.get("reason")),
            col(
                "Object",
                lambda o: (
                    f"{(o.get('involvedObject') or {}).get('kind', '').lower()}/"
                    f"{(o.get('involvedObject') or {}).get('name', '')}"
                ),
            ),
            col("Message", lambda o: o.get("message")),
        ]
    return []


def table(
    info: ResourceInfo, objs: list[dict[str, Any]], *, resource_version: str, include_object: str = "Metadata"
) -> dict[str, Any]:
    columns: list[dict[str, Any]] = [_NAME]
    extractors: list[Any] = [lambda o: o["metadata"]["name"]]
    if info.custom:
        printer = list(info.printer_columns) or [
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ]
        for pc in printer:
            columns.append(
                {
                    "name": pc["name"],
                    "type": pc.get("type", "string"),
                    "format": pc.get("format", ""),
                    "description": pc.get("description", pc["name"]),
                    "priority": pc.get("priority", 0),
                }
            )
            extractors.append(lambda o, p=pc: _cell(jsonpath(o, p["jsonPath"]), p.get("type", "string")))
    else:
        for definition, fn in _builtin_columns(info):
            columns.append(definition)
            extractors.append(fn)
        columns.append(_AGE)
        extractors.append(lambda o: human_age(o["metadata"].get("creationTimestamp")))
    rows = []
    for obj in objs:
        row: dict[str, Any] = {"cells": [fn(obj) for fn in extractors]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    }
