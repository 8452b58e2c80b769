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
from ..api.status import AppliedChange, WorkloadStatusRef
from ..engine import outcomes
from ..engine.changes import plan_scale, scale_rollback
from ..engine.outcomes import Outcome
from .handback import COUNTS, hand_back
from .kube import JSON, Kube, path
from .ownership import Intend, Ownership, meta, not_held
from .watching import ApiReader, Reader

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

    def __init__(self, kube: Kube, *, max_replicas: int, reader: Reader | None = None) -> None:
        self.kube = kube
        self.max_replicas = max_replicas
        self.reader = reader or ApiReader(kube)
        """Where drift checks read the target: the watch cache in the operator, the API otherwise."""

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
        self,
        namespace: str,
        owner: Ownership,
        action: Action,
        *,
        incident: str,
        now: datetime,
        dry_run: bool,
        intend: Intend | None = None,
    ) -> Outcome:
        spec = action.scale
        assert spec is not None
        kind = ChangeKind(spec.kind.value)
        workload = self.kube.get(path(kind, namespace, spec.name))
        hpa = self._find_hpa(namespace, kind, spec.name)
        obj, obj_kind, field_name = (hpa, HPA, "minReplicas") if hpa else (workload, kind, "replicas")
        obj_name = str(meta(obj).get("name"))
        if (other := owner.owner(obj)) is not None:
            return outcomes.conflict(action=action.name, kind=obj_kind, name=obj_name, owner=other)
        raw = _count(obj.get("spec") or {}, field_name)
        current = raw if raw is not None else 1
        original, applied = plan_scale(
            field=field_name, current=raw, wanted=spec.replicas, cap=self._capped(spec.replicas, hpa=hpa)
        )
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
        # The journal first: if the operator dies after the writes below, the original count is known.
        if intend is not None and (problem := intend(change)) is not None:
            return outcomes.failed(action=action.name, kind=action.kind, where=f"{namespace}/{spec.name}", what=problem)
        version = meta(obj).get("resourceVersion")
        if hpa is not None:
            self.kube.merge(
                path(HPA, namespace, obj_name),
                {"metadata": {"resourceVersion": version, "annotations": owner.mark()}, "spec": {field_name: wanted}},
            )
            return raised
        # The mark first, then the count through the scale subresource, each conditional on the version
        # read: a concurrent scale-up is never overwritten (scaled down), and a count written is always marked.
        if not owner.holds(obj):
            written = self.kube.merge(
                path(kind, namespace, obj_name), {"metadata": {"resourceVersion": version, "annotations": owner.mark()}}
            )
            version = meta(written).get("resourceVersion")
        self.kube.merge(
            path(kind, namespace, obj_name, "scale"),
            {"metadata": {"resourceVersion": version}, "spec": {"replicas": wanted}},
        )
        return raised

    def landed(self, namespace: str, owner: Ownership, change: AppliedChange) -> bool:
        """Whether a journalled write reached its object: it is marked and holds the count set."""
        obj = self.kube.get(path(change.kind, namespace, change.name))
        spec = obj.get("spec") or {}
        return owner.holds(obj) and any(str(_count(spec, f)) == v for f, v in change.applied.items())

    def reverted(self, namespace: str, change: AppliedChange) -> list[str]:
        spec = self.reader.read(change.kind, namespace, change.name).get("spec") or {}
        return [f for f, v in change.applied.items() if _replicas(spec, f) < int(v)]

    def reapply(self, namespace: str, owner: Ownership, change: AppliedChange, *, now: datetime) -> Outcome | None:
        """Raise the count back on an object this policy still marks, never scaling down, always capped."""
        obj_path = path(change.kind, namespace, change.name)
        obj = self.kube.get(obj_path)
        if not owner.holds(obj):
            return outcomes.reapply_failed(change, problem=not_held(change, policy=owner.policy))
        version = meta(obj).get("resourceVersion")
        spec = obj.get("spec") or {}
        if change.kind == HPA:
            # Capped again at every write: a real server refuses minReplicas > maxReplicas, and status
            # (where this count was read) is not trusted with more than the operator's own cap.
            wanted = self._capped(int(change.applied["minReplicas"]), hpa=obj)
            if _replicas(spec, "minReplicas") < wanted:
                self.kube.merge(obj_path, {"metadata": {"resourceVersion": version}, "spec": {"minReplicas": wanted}})
            return None
        wanted = self._capped(int(change.applied["replicas"]), hpa=None)
        if _replicas(spec, "replicas") < wanted:
            self.kube.merge(
                path(change.kind, namespace, change.name, "scale"),
                {"metadata": {"resourceVersion": version}, "spec": {"replicas": wanted}},
            )
        return None

    def undo(
        self, namespace: str, owner: Ownership, change: AppliedChange, *, now: datetime, last: bool = True
    ) -> Outcome:
        obj_path = path(change.kind, namespace, change.name)
        obj = self.kube.get(obj_path)
        if not change.applied:  # nothing was changed: only a mark left by an attempt may need to go
            release = owner.release(obj) if last and owner.holds(obj) else None
            if release is not None:
                self.kube.merge(obj_path, {"metadata": {"annotations": release}})
                hand_back(self.kube, obj_path, COUNTS)
            return outcomes.undo_outcome(change, restored=[], skipped=[])
        if not owner.holds(obj):
            return outcomes.not_rolled_back(change, why=not_held(change, policy=owner.policy))
        spec = obj.get("spec") or {}
        counts = {f: _count(spec, f) for f in change.applied}
        patch, skipped = scale_rollback(counts, change.original, change.applied)
        version = meta(obj).get("resourceVersion")
        release = owner.release(obj) if last else None
        if change.kind != HPA and "replicas" in patch:
            restored = patch["replicas"]
            # Conditional: someone scaling in between gets a 409 here, not their replicas overwritten. The
            # count goes before the mark, so a count still to restore is always on a marked object.
            written = self.kube.merge(
                path(change.kind, namespace, change.name, "scale"),
                {
                    "metadata": {"resourceVersion": version},
                    "spec": {"replicas": self._capped(restored if restored is not None else 1, hpa=None)},
                },
            )
            version = meta(written).get("resourceVersion")
        # An HPA's minimum and the mark go in one request, conditional on the version read; a workload's
        # mark alone goes unconditionally (a merge of one annotation overwrites nobody's change).
        body: JSON = {"metadata": {"resourceVersion": version} if change.kind == HPA else {}}
        if release is not None:
            body["metadata"]["annotations"] = release
        if change.kind == HPA and patch:
            minimum = patch.get("minReplicas")
            body["spec"] = {"minReplicas": self._capped(minimum, hpa=obj) if minimum is not None else None}
        if "spec" in body or release is not None:
            self.kube.merge(obj_path, body)
        if last:  # no change of the policy holds a count any more: the operator's counts go back (handback.py)
            hand_back(self.kube, obj_path, COUNTS)
        return outcomes.undo_outcome(change, restored=list(patch), skipped=skipped)

    def rollout_complete(self, namespace: str, workload: WorkloadStatusRef) -> bool:
        """Whether the workload's rollout is complete, as `kubectl rollout status` judges it.

        For an HPA (a scale change recorded on it), the workload it drives is read.
        """
        kind, name = str(workload.kind.value), workload.name
        if kind == HPA:
            ref = (self.kube.get(path(HPA, namespace, name)).get("spec") or {}).get("scaleTargetRef") or {}
            kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
        obj = self.kube.get(path(kind, namespace, name))
        return rollout_done(obj)


def rollout_done(obj: JSON) -> bool:
    """observedGeneration ≥ generation and updatedReplicas = availableReplicas = replicas (absent counts 0).

    As `kubectl rollout status` judges it, `replicas` is both the wanted count (spec) and the count of pods
    still running (status: old pods being replaced or scaled away count until they are gone).
    """
    status = obj.get("status") or {}
    generation = int(meta(obj).get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return False
    wanted = _replicas(obj.get("spec") or {}, "replicas")
    if "desiredNumberScheduled" in status:  # a DaemonSet counts scheduled pods rather than replicas
        wanted = int(status.get("desiredNumberScheduled") or 0)
        return int(status.get("updatedNumberScheduled") or 0) == wanted == int(status.get("numberAvailable") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    running = int(status.get("replicas") or 0)
    return updated == available == running == wanted


__all__ = ["Scaling", "rollout_done"]
