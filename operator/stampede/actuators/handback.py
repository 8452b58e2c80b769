"""Give up field ownership of what a rollback restored, so GitOps tools see those fields again.

Every write of the operator is recorded in `metadata.managedFields` under its field manager, the restore
included: without this module the operator would own a restored ConfigMap key, `spec.replicas` (in its
`subresource: scale` entry) or an HPA's `minReplicas` for ever, and Argo CD's recommended
`managedFieldsManagers: [stampede-operator]` rule would then ignore a later Git change to them.

When the last change of a policy on an object is undone (the undo that removes its `applied-by` mark), the
fields the operator changes on that kind of object are removed from every entry of the operator's manager
(Argo CD matches entries by manager name alone): a ConfigMap's `data`, a workload's `spec.replicas`, an
HPA's `spec.minReplicas`; an entry left holding nothing is dropped. Not before: while another change of
the policy holds the object, a key restored by a newer change's undo may hold the older change's value,
still a mitigation. At the last undo every such field the operator owns there was the policy's (a second
policy cannot hold the object at the same time), and a key someone else changed meanwhile is theirs.
What the operator owns for other reasons stays: a restart's `restartedAt` stamp in a pod template, the
`applied-by` mark of another change of the policy. The previous owner is not restored (it is not
recorded), so a restored field is owned by nobody until its next writer, which is what a GitOps tool needs
to see a difference.

A real API server takes `metadata.managedFields` sent in an update or patch as the new entries (see
k8s.io/apimachinery/pkg/util/managedfields/internal/fieldmanager.go, `decodeLiveOrNew`); a request with no
other change adds nothing for its own manager. The write is conditional on the resourceVersion read and
retried with a fresh read on 409. Failing to hand back never fails the rollback: values restored is what
matters, so it is logged and left.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable

from .kube import FIELD_MANAGER, JSON, Kube, KubeError, retry_conflicts
from .ownership import meta

log = logging.getLogger("stampede.handback")

FieldPath = tuple[str, ...]
"""A field as FieldsV1 spells its steps: `("f:spec", "f:replicas")`."""


CONFIGMAP_DATA: tuple[FieldPath, ...] = (("f:data",),)
"""Every ConfigMap key (and the `data` map itself, when the operator's write created it)."""
COUNTS: tuple[FieldPath, ...] = (("f:spec", "f:replicas"), ("f:spec", "f:minReplicas"))
"""A workload's replicas (written through `/scale`) and an HPA's minReplicas."""


def _without(tree: JSON, field: FieldPath) -> bool:
    """Remove one path (and what is under it) from a FieldsV1 tree, pruning parents left empty; True if found."""
    head, *rest = field
    if head not in tree:
        return False
    if rest:
        child = tree[head]
        if not isinstance(child, dict) or not _without(child, tuple(rest)):
            return False
        if not child:  # a parent only there to hold the removed field (an owned parent keeps its ".")
            del tree[head]
        return True
    del tree[head]
    return True


def released(entries: list[JSON], fields: Iterable[FieldPath], *, manager: str = FIELD_MANAGER) -> list[JSON] | None:
    """The managedFields with `fields` no longer owned by `manager`; None when it owned none of them."""
    fields = list(fields)
    result: list[JSON] = []
    changed = False
    for entry in entries:
        if entry.get("manager") != manager:
            result.append(entry)
            continue
        tree = copy.deepcopy(entry.get("fieldsV1") or {})
        found = [field for field in fields if _without(tree, field)]
        if not found:
            result.append(entry)
            continue
        changed = True
        if tree:
            result.append({**entry, "fieldsV1": tree})
    return result if changed else None


def hand_back(kube: Kube, obj_path: str, fields: Iterable[FieldPath]) -> None:
    """Drop the operator's ownership of `fields` on the object at `obj_path`; logs, never raises."""
    fields = list(fields)
    if not fields:
        return

    def attempt() -> None:
        obj = kube.get(obj_path)
        entries = released(list(meta(obj).get("managedFields") or []), fields)
        if entries is None:
            return
        # The resourceVersion read makes the write conditional (409 when the object changed since). A JSON patch
        # so it reads as what it is in audit logs: a write of managedFields alone, no field's value changes.
        # `[]` would reset every entry (fieldmanager.go isResetManagedFields): only sent when none is left anyway.
        kube.json_patch(
            obj_path,
            [
                {"op": "replace", "path": "/metadata/resourceVersion", "value": meta(obj).get("resourceVersion")},
                {"op": "add", "path": "/metadata/managedFields", "value": entries},
            ],
        )

    try:
        retry_conflicts(attempt)
    except KubeError as error:
        log.warning(
            "Rolled back %s, but could not give up field ownership of %s: %s",
            obj_path,
            ", ".join(".".join(step[2:] for step in field) for field in fields),
            error.message,
        )


__all__ = ["CONFIGMAP_DATA", "COUNTS", "FieldPath", "hand_back", "released"]
