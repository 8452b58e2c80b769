"""ConfigMap actions: merge keys in, restart the workloads that read them, restore exactly.

Workloads reading a ConfigMap as environment variables never see a changed value until their pods
restart, so a change (and its rollback) stamps their pod templates as `kubectl rollout restart` does.
An apply or undo only names the workloads to restart: the caller (`executing.execute`) restarts each
once for all the changes of a poll (every restart is a burst of cold caches), and drops the record of
an apply whose restart failed, so the next poll retries it. A drift re-apply restarts at once.
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
from .kube import JSON, Kube, KubeError, path
from .ledger import Ledger, LedgerEntry, meta
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
        self, namespace: str, ledger: Ledger, action: Action, *, incident: str, now: datetime, dry_run: bool
    ) -> Outcome:
        spec = action.config_map
        assert spec is not None
        cm = self.kube.get(path("ConfigMap", namespace, spec.name))
        if (owner := ledger.owner(cm)) is not None:
            return outcomes.conflict(action=action.name, kind="ConfigMap", name=spec.name, owner=owner)
        data: dict[str, str] = dict(cm.get("data") or {})
        previous = ledger.find(cm, action.name)
        if previous is not None:  # a change made before a crash: its true originals are in the ledger
            original, applied = dict(previous.original), dict(previous.applied)
        else:
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
        if applied and (previous is None or any(data.get(k) != v for k, v in applied.items())):
            self.kube.merge(
                path("ConfigMap", namespace, spec.name),
                {
                    "metadata": {
                        "resourceVersion": meta(cm).get("resourceVersion"),
                        "annotations": ledger.patch(cm, action.name, LedgerEntry.of(change)),
                    },
                    "data": applied,
                },
            )
        # The caller restarts the workloads, once per poll for all the actions that ask (restart coalescing).
        return outcomes.configmap_set(change, configmap=spec.name, dry_run=False, restarts=restart if applied else [])

    def adopt(self, namespace: str, ledger: Ledger, action: Action, *, now: datetime) -> AppliedChange | None:
        spec = action.config_map
        assert spec is not None
        entry = ledger.find(self.kube.get(path("ConfigMap", namespace, spec.name)), action.name)
        if entry is None:
            return None
        restart = [WorkloadStatusRef(kind=w.kind.value, name=w.name) for w in spec.restart]
        return entry.change(action=action.name, kind=ChangeKind.CONFIG_MAP, name=spec.name, now=now, restart=restart)

    def reverted(self, namespace: str, change: AppliedChange) -> list[str]:
        data = self.reader.read("ConfigMap", namespace, change.name).get("data") or {}
        return [k for k, v in change.applied.items() if data.get(k) != v]

    def reapply(self, namespace: str, ledger: Ledger, change: AppliedChange, *, now: datetime) -> Outcome | None:
        """Put the keys back (and the ledger entry, if a revert dropped it); None when all went well."""
        cm_path = path("ConfigMap", namespace, change.name)
        cm = self.kube.get(cm_path)
        entry = LedgerEntry.of(change)
        metadata: JSON = {"resourceVersion": meta(cm).get("resourceVersion")}
        if not ledger.holds(cm, change.action, entry):
            metadata["annotations"] = ledger.patch(cm, change.action, entry)
        self.kube.merge(cm_path, {"metadata": metadata, "data": change.applied})
        _, failures = self._restart(namespace, change.restart, now=now)
        return outcomes.reapplied_but_restart_failed(change, failures=failures) if failures else None

    def undo(self, namespace: str, ledger: Ledger, change: AppliedChange, *, now: datetime) -> Outcome:
        cm_path = path("ConfigMap", namespace, change.name)
        cm = self.kube.get(cm_path)
        patch, skipped = configmap_rollback(dict(cm.get("data") or {}), change.original, change.applied)
        body: JSON = {
            "metadata": {
                "resourceVersion": meta(cm).get("resourceVersion"),
                "annotations": ledger.patch(cm, change.action, None),
            }
        }
        if patch:
            body["data"] = patch
        if patch or ledger.has(cm, change.action):
            self.kube.merge(cm_path, body)
        return outcomes.undo_outcome(
            change, restored=list(patch), skipped=skipped, restarts=change.restart if patch else []
        )

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
