"""ConfigMap actions: merge keys in, restart the workloads that read them, restore exactly.

Workloads reading a ConfigMap as environment variables never see a changed value until their pods
restart, so a change (and its rollback) stamps their pod templates as `kubectl rollout restart` does.
An apply or undo only names the workloads to restart: the caller (`executing.execute`) restarts each
once for all the changes of a poll (every restart is a burst of cold caches), and drops the record of
an apply whose restart failed, so the next poll retries it. A drift re-apply restarts at once.
Only `stampede.aurum.io/applied-by` is added to the ConfigMap, however large the values it overrides.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from ..api.kinds import ChangeKind
from ..api.spec import Action
from ..api.status import AppliedChange, WorkloadStatusRef, format_time
from ..engine import outcomes
from ..engine.changes import configmap_rollback, plan_configmap
from ..engine.outcomes import Outcome
from .handback import CONFIGMAP_DATA, hand_back
from .kube import JSON, Kube, KubeError, path
from .ownership import Intend, Ownership, meta, not_held
from .watching import ApiReader, Reader

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def failure_text(error: KubeError) -> str:
    """How a failed request reads inside a sentence: "not found" or the API server's answer."""
    return "not found" if error.not_found else f"failed ({error.status or 'unreachable'}): {error.message}"


class ConfigMaps:
    """The ConfigMap target kind."""

    reversible: ClassVar[bool] = True
    kinds: ClassVar[frozenset[ChangeKind]] = frozenset({ChangeKind.CONFIG_MAP})

    def __init__(self, kube: Kube, *, reader: Reader | None = None) -> None:
        self.kube = kube
        self.reader = reader or ApiReader(kube)
        """Where drift checks read the target: the watch cache in the operator, the API otherwise."""

    def handles(self, action: Action) -> bool:
        return action.config_map is not None

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
        spec = action.config_map
        assert spec is not None
        cm = self.kube.get(path("ConfigMap", namespace, spec.name))
        if (other := owner.owner(cm)) is not None:
            return outcomes.conflict(action=action.name, kind="ConfigMap", name=spec.name, owner=other)
        data: dict[str, str] = dict(cm.get("data") or {})
        original, applied = plan_configmap(data, spec.data)
        restart = [WorkloadStatusRef(kind=w.kind.value, name=w.name) for w in spec.restart]
        change = AppliedChange(
            action=action.name,
            kind=ChangeKind.CONFIG_MAP,
            name=spec.name,
            incident=incident,
            applied_at=now,
            original=original,
            applied=applied,
            restart=restart,
        )
        if dry_run:
            return outcomes.configmap_set(change, configmap=spec.name, dry_run=True)
        if applied:
            # The journal first: if the operator dies after the write below, the originals are known.
            if intend is not None and (problem := intend(change)) is not None:
                return outcomes.failed(
                    action=action.name, kind=action.kind, where=f"{namespace}/{spec.name}", what=problem
                )
            self.kube.merge(
                path("ConfigMap", namespace, spec.name),
                {
                    "metadata": {"resourceVersion": meta(cm).get("resourceVersion"), "annotations": owner.mark()},
                    "data": applied,
                },
            )
        # The caller restarts the workloads, once per poll for all the actions that ask (restart coalescing).
        return outcomes.configmap_set(change, configmap=spec.name, dry_run=False, restarts=restart if applied else [])

    def landed(self, namespace: str, owner: Ownership, change: AppliedChange) -> bool:
        """Whether a journalled write reached the ConfigMap: it is marked and holds a value it set."""
        cm = self.kube.get(path("ConfigMap", namespace, change.name))
        data = cm.get("data") or {}
        return owner.holds(cm) and any(data.get(k) == v for k, v in change.applied.items())

    def reverted(self, namespace: str, change: AppliedChange) -> list[str]:
        data = self.reader.read("ConfigMap", namespace, change.name).get("data") or {}
        return [k for k, v in change.applied.items() if data.get(k) != v]

    def reapply(self, namespace: str, owner: Ownership, change: AppliedChange, *, now: datetime) -> Outcome | None:
        """Put the keys back, on a ConfigMap this policy still marks; None when all went well."""
        cm_path = path("ConfigMap", namespace, change.name)
        cm = self.kube.get(cm_path)
        if not owner.holds(cm):
            return outcomes.reapply_failed(change, problem=not_held(change, policy=owner.policy))
        version = meta(cm).get("resourceVersion")
        self.kube.merge(cm_path, {"metadata": {"resourceVersion": version}, "data": change.applied})
        _, failures = self._restart(namespace, change.restart, now=now)
        return outcomes.reapplied_but_restart_failed(change, failures=failures) if failures else None

    def undo(
        self, namespace: str, owner: Ownership, change: AppliedChange, *, now: datetime, last: bool = True
    ) -> Outcome:
        cm_path = path("ConfigMap", namespace, change.name)
        cm = self.kube.get(cm_path)
        if not change.applied:  # nothing was changed: only a mark left by an attempt may need to go
            return self._release_only(cm_path, cm, owner, change, last=last)
        if not owner.holds(cm):
            return outcomes.not_rolled_back(change, why=not_held(change, policy=owner.policy))
        patch, skipped = configmap_rollback(dict(cm.get("data") or {}), change.original, change.applied)
        metadata: JSON = {"resourceVersion": meta(cm).get("resourceVersion")}
        release = owner.release(cm) if last else None
        if release is not None:
            metadata["annotations"] = release
        body: JSON = {"metadata": metadata}
        if patch:
            body["data"] = patch
        if patch or release is not None:
            self.kube.merge(cm_path, body)
        if last:  # no change of the policy holds a key any more: the operator's keys go back (handback.py)
            hand_back(self.kube, cm_path, CONFIGMAP_DATA)
        return outcomes.undo_outcome(
            change, restored=list(patch), skipped=skipped, restarts=change.restart if patch else []
        )

    def _release_only(
        self, obj_path: str, obj: JSON, owner: Ownership, change: AppliedChange, *, last: bool
    ) -> Outcome:
        release = owner.release(obj) if last and owner.holds(obj) else None
        if release is not None:
            self.kube.merge(obj_path, {"metadata": {"annotations": release}})
            hand_back(self.kube, obj_path, CONFIGMAP_DATA)
        return outcomes.undo_outcome(change, restored=[], skipped=[])

    def restart(self, namespace: str, workload: WorkloadStatusRef, *, now: datetime) -> None:
        """One rollout restart, as `kubectl rollout restart` does: stamp the pod template."""
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: format_time(now)}}}}}
        self.kube.merge(path(workload.kind, namespace, workload.name), patch)

    def _restart(
        self, namespace: str, workloads: list[WorkloadStatusRef], *, now: datetime
    ) -> tuple[list[str], list[str]]:
        """Rollout restart, as `kubectl rollout restart` does: stamp the pod template.

        Returns the workloads restarted and one clause per workload that could not be.
        """
        done, failed = [], []
        for workload in workloads:
            try:
                self.restart(namespace, workload, now=now)
                done.append(f"{workload.kind} {workload.name}")
            except KubeError as error:
                failed.append(outcomes.restart_failed(kind=workload.kind, name=workload.name, what=failure_text(error)))
        return done, failed


__all__ = ["RESTARTED_AT", "ConfigMaps", "failure_text"]
