"""Scale actions: raise a workload's replicas, or its HPA's minReplicas when an HPA targets it.

Replicas set under an HPA are undone by the HPA within seconds, so the HPA's floor is raised instead
(capped by its maxReplicas). Every count write is conditional on the resourceVersion read, so a
concurrent scale-up is never overwritten (scaled down), and a rollback restores only a count that
still holds the value this policy set.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from ..api.kinds import ChangeKind
from ..api.spec import Action
from ..api.status import AppliedChange
from ..engine import outcomes
from ..engine.changes import plan_scale, scale_rollback
from ..engine.outcomes import Outcome
from .kube import JSON, Kube, path
from .ledger import Ledger, LedgerEntry, meta

HPA = ChangeKind.HORIZONTAL_POD_AUTOSCALER


def _replicas(spec: JSON, field_name: str) -> int:
    """A replica count or HPA minReplicas as the API server defaults it: absent is 1, 0 is 0."""
    value = spec.get(field_name)
    return int(value) if value is not None else 1


def _count(spec: JSON, field_name: str) -> int | None:
    value = spec.get(field_name)
    return int(value) if value is not None else None


class Scaling:
    """The scale target kind: a Deployment or StatefulSet, or the HPA that drives it."""

    reversible: ClassVar[bool] = True
    kinds: ClassVar[frozenset[ChangeKind]] = frozenset({ChangeKind.DEPLOYMENT, ChangeKind.STATEFUL_SET, HPA})

    def __init__(self, kube: Kube, *, max_replicas: int) -> None:
        self.kube = kube
        self.max_replicas = max_replicas

    def handles(self, action: Action) -> bool:
        return action.scale is not None

    def _capped(self, count: int, *, hpa: JSON | None) -> int:
        """A count as it may be written: at most STAMPEDE_MAX_REPLICAS, and at most an HPA's maxReplicas."""
        cap = self.max_replicas
        if hpa is not None:
            maximum = (hpa.get("spec") or {}).get("maxReplicas")
            cap = min(cap, int(maximum)) if maximum is not None else cap
        return min(count, cap)

    def _find_hpa(self, namespace: str, kind: str, name: str) -> JSON | None:
        hpas = self.kube.get(path(HPA, namespace)).get("items") or []
        for hpa in hpas:
            ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == kind and ref.get("name") == name:
                found: JSON = hpa
                return found
        return None

    def apply(
        self, namespace: str, ledger: Ledger, action: Action, *, incident: str, now: datetime, dry_run: bool
    ) -> Outcome:
        spec = action.scale
        assert spec is not None
        kind = ChangeKind(spec.kind.value)
        workload = self.kube.get(path(kind, namespace, spec.name))
        hpa = self._find_hpa(namespace, kind, spec.name)
        obj, obj_kind, field_name = (hpa, HPA, "minReplicas") if hpa else (workload, kind, "replicas")
        obj_name = str(meta(obj).get("name"))
        if (owner := ledger.owner(obj)) is not None:
            return outcomes.conflict(action=action.name, kind=obj_kind, name=obj_name, owner=owner)
        raw = _count(obj.get("spec") or {}, field_name)
        current = raw if raw is not None else 1
        previous = ledger.find(obj, action.name)
        cap = self.max_replicas
        if hpa is not None:
            cap = min(cap, int((hpa.get("spec") or {}).get("maxReplicas") or cap))
        if previous is not None:  # a change made before a crash: its true originals are in the ledger
            original, applied = dict(previous.original), dict(previous.applied)
        else:
            original, applied = plan_scale(field=field_name, current=raw, wanted=spec.replicas, cap=cap)
        change = AppliedChange(
            action=action.name,
            kind=obj_kind,
            name=obj_name,
            incident=incident,
            applied_at=now,
            original=original,
            applied=applied,
        )
        if field_name not in applied:
            return outcomes.scale_unchanged(
                change, field=field_name, current=current, wanted=spec.replicas, dry_run=dry_run
            )
        wanted = int(applied[field_name])
        raised = outcomes.scale_raised(
            change,
            field=field_name,
            current=current,
            wanted=wanted,
            capped=spec.replicas > self.max_replicas,
            dry_run=dry_run,
        )
        if dry_run:
            return raised
        annotations = ledger.patch(obj, action.name, LedgerEntry.of(change))
        if hpa is not None:
            if current < wanted or previous is None:
                self.kube.merge(
                    path(HPA, namespace, obj_name),
                    {
                        "metadata": {"resourceVersion": meta(hpa).get("resourceVersion"), "annotations": annotations},
                        "spec": {"minReplicas": max(current, wanted)},
                    },
                )
        else:
            self._raise_workload(
                workload,
                kind=kind,
                namespace=namespace,
                annotations=annotations if previous is None else None,
                raise_to=wanted if current < wanted else None,
            )
        return raised

    def _raise_workload(
        self, workload: JSON, *, kind: ChangeKind, namespace: str, annotations: JSON | None, raise_to: int | None
    ) -> None:
        """The ledger first, then the count through the scale subresource, each conditional on the version read."""
        name = str(meta(workload).get("name"))
        version = meta(workload).get("resourceVersion")
        if annotations is not None:
            written = self.kube.merge(
                path(kind, namespace, name), {"metadata": {"resourceVersion": version, "annotations": annotations}}
            )
            version = meta(written).get("resourceVersion")
        if raise_to is not None:
            # Conditional on the version read: a concurrent scale-up is never overwritten (scaled down).
            self.kube.merge(
                path(kind, namespace, name, "scale"),
                {"metadata": {"resourceVersion": version}, "spec": {"replicas": raise_to}},
            )

    def adopt(self, namespace: str, ledger: Ledger, action: Action, *, now: datetime) -> AppliedChange | None:
        spec = action.scale
        assert spec is not None
        kind = ChangeKind(spec.kind.value)
        obj = self.kube.get(path(kind, namespace, spec.name))
        if not ledger.has(obj, action.name):
            hpa = self._find_hpa(namespace, kind, spec.name)
            if hpa is None:
                return None
            obj, kind = hpa, HPA
        entry = ledger.find(obj, action.name)
        if entry is None:
            return None
        return entry.change(action=action.name, kind=kind, name=str(meta(obj).get("name")), now=now)

    def reverted(self, namespace: str, change: AppliedChange) -> list[str]:
        spec = self.kube.get(path(change.kind, namespace, change.name)).get("spec") or {}
        return [f for f, v in change.applied.items() if _replicas(spec, f) < int(v)]

    def reapply(self, namespace: str, ledger: Ledger, change: AppliedChange, *, now: datetime) -> Outcome | None:
        """Raise the count back, never scaling down; put the ledger entry back if a revert dropped it."""
        obj_path = path(change.kind, namespace, change.name)
        obj = self.kube.get(obj_path)
        entry = LedgerEntry.of(change)
        metadata: JSON = {"resourceVersion": meta(obj).get("resourceVersion")}
        if not ledger.holds(obj, change.action, entry):
            metadata["annotations"] = ledger.patch(obj, change.action, entry)
        spec = obj.get("spec") or {}
        if change.kind == HPA:
            # Capped again at every write: a real server refuses minReplicas > maxReplicas, and status
            # (where this count was read) is not trusted with more than the operator's own cap.
            wanted = self._capped(int(change.applied["minReplicas"]), hpa=obj)
            body: JSON = {"metadata": metadata}
            if _replicas(spec, "minReplicas") < wanted:
                body["spec"] = {"minReplicas": wanted}
            if "spec" in body or "annotations" in metadata:
                self.kube.merge(obj_path, body)
            return None
        wanted = self._capped(int(change.applied["replicas"]), hpa=None)
        version = metadata["resourceVersion"]
        if "annotations" in metadata:
            version = meta(self.kube.merge(obj_path, {"metadata": metadata})).get("resourceVersion")
        if _replicas(spec, "replicas") < wanted:
            self.kube.merge(
                path(change.kind, namespace, change.name, "scale"),
                {"metadata": {"resourceVersion": version}, "spec": {"replicas": wanted}},
            )
        return None

    def undo(self, namespace: str, ledger: Ledger, change: AppliedChange, *, now: datetime) -> Outcome:
        obj_path = path(change.kind, namespace, change.name)
        obj = self.kube.get(obj_path)
        spec = obj.get("spec") or {}
        counts = {f: _count(spec, f) for f in change.applied}
        patch, skipped = scale_rollback(counts, change.original, change.applied)
        body: JSON = {
            "metadata": {
                "resourceVersion": meta(obj).get("resourceVersion"),
                "annotations": ledger.patch(obj, change.action, None),
            }
        }
        if change.kind == HPA and patch:
            minimum = patch.get("minReplicas")
            body["spec"] = {"minReplicas": self._capped(minimum, hpa=obj) if minimum is not None else None}
        # The ledger goes first: the scale write below changes the resourceVersion this patch checks.
        version = meta(obj).get("resourceVersion")
        if ledger.has(obj, change.action) or "spec" in body:
            version = meta(self.kube.merge(obj_path, body)).get("resourceVersion")
        if change.kind != HPA and "replicas" in patch:
            restored = patch["replicas"]
            # Conditional: someone scaling in between gets a 409 here, not their replicas overwritten.
            self.kube.merge(
                path(change.kind, namespace, change.name, "scale"),
                {
                    "metadata": {"resourceVersion": version},
                    "spec": {"replicas": self._capped(restored if restored is not None else 1, hpa=None)},
                },
            )
        return outcomes.undo_outcome(change, restored=list(patch), skipped=skipped)


__all__ = ["Scaling"]
