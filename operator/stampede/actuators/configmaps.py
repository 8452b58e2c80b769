"""ConfigMap actions: merge keys in, restart the workloads that read them, restore exactly.

Workloads reading a ConfigMap as environment variables never see a changed value until their pods
restart, so a change (and its rollback) stamps their pod templates as `kubectl rollout restart` does.
An apply or undo only names the workloads to restart: the caller (`executing.execute`) restarts each
once for all the changes of a poll (every restart is a burst of cold caches), and drops the record of
an apply whose restart failed, so the next poll retries it. A drift re-apply restarts at once.
Only `stampede.aurum.io/applied-by` is added to the ConfigMap, however large the values it overrides.
The values it replaces go to a journal Secret in the operator's namespace before anything else is
written (`journals.py`); the change's record (status) keeps their digests only.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import ClassVar

from ..api.kinds import ChangeKind
from ..api.spec import Action
from ..api.status import AppliedChange, WorkloadStatusRef, format_time
from ..engine import outcomes
from ..engine.changes import configmap_rollback, plan_configmap
from ..engine.digests import digested, is_digest
from ..engine.outcomes import Outcome
from .handback import CONFIGMAP_DATA, hand_back
from .journals import JournalProblem, Journals
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

    def __init__(self, kube: Kube, *, journals: Journals, reader: Reader | None = None) -> None:
        self.kube = kube
        self.journals = journals
        """Where the originals of each change are kept (status keeps their digests)."""
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
        recovered = None if applied or dry_run or not owner.holds(cm) else self._recover(namespace, owner, action)
        if recovered is not None:
            original, applied = recovered, dict(spec.data)
        change = AppliedChange(
            action=action.name,
            kind=ChangeKind.CONFIG_MAP,
            name=spec.name,
            incident=incident,
            applied_at=now,
            original=digested(original),
            applied=applied,
            restart=restart,
        )
        if dry_run:
            return outcomes.configmap_set(change, configmap=spec.name, dry_run=True)
        if recovered is not None:  # nothing to write: the values are there, the record is what was missing
            return outcomes.configmap_set(change, configmap=spec.name, dry_run=False, restarts=restart)
        if applied:
            # The originals first, then their digests in status: if the operator dies after the target
            # write below, status says what to restore and the Secret holds it.
            present = {key: value for key, value in original.items() if value is not None}
            if present:
                try:
                    self.journals.write(
                        namespace=namespace,
                        policy=owner.policy,
                        action=action.name,
                        configmap=spec.name,
                        originals=present,
                    )
                except KubeError as error:
                    where = self.journals.where(namespace=namespace, policy=owner.policy, action=action.name)
                    what = f"originals could not be kept in journal Secret {where} ({failure_text(error)})"
                    return outcomes.failed(
                        action=action.name,
                        kind=action.kind,
                        where=f"{namespace}/{spec.name}",
                        what=f"not changed: its {what}",
                    )
            if intend is not None and (problem := intend(change)) is not None:
                if present:  # nothing in status points at the originals just kept: they go again
                    self._forget(namespace, owner, change)
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

    def _recover(self, namespace: str, owner: Ownership, action: Action) -> dict[str, str | None] | None:
        """The originals of a change that already landed but whose record was lost; None when it is not that case.

        The engine plans only actions the policy holds no record of, so a ConfigMap that already has every value
        of the action and this policy's mark was changed by an earlier apply of it whose record is gone (killed
        twice around a restart). Planning against it would record the policy's own values as the originals (or
        nothing at all) and lose the real ones, which that apply kept in the action's journal Secret. Keys the
        Secret does not hold were absent before. Without the Secret nothing can be recovered (None).
        """
        spec = action.config_map
        assert spec is not None
        kept = self.journals.kept(namespace=namespace, policy=owner.policy, action=action.name, configmap=spec.name)
        if kept is None:
            return None
        return {key: kept.get(key) for key in spec.data}

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
        try:
            cm = self.kube.get(cm_path)
        except KubeError as error:
            if error.not_found:  # nothing to restore the originals to: their journal goes too
                self._forget(namespace, owner, change)
            raise
        if not change.applied:  # nothing was changed: only a mark left by an attempt may need to go
            return self._release_only(cm_path, cm, owner, change, last=last)
        if not owner.holds(cm):
            return outcomes.not_rolled_back(change, why=not_held(change, policy=owner.policy))
        try:
            originals = self.journals.originals(change, namespace=namespace, policy=owner.policy)
        except JournalProblem as refused:
            return outcomes.originals_unavailable(change, why=str(refused))
        patch, skipped = configmap_rollback(dict(cm.get("data") or {}), originals, change.applied)
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
        outcome = outcomes.undo_outcome(
            change, restored=list(patch), skipped=skipped, restarts=change.restart if patch else []
        )
        problem = self._forget(namespace, owner, change)
        return replace(outcome, warnings=(*outcome.warnings, problem)) if problem else outcome

    def _forget(self, namespace: str, owner: Ownership, change: AppliedChange) -> str | None:
        """Delete the change's journal Secret once it is rolled back; a clause when that failed (it stays).

        Only a change that kept originals has one (every key absent before it, or a status from before
        journal Secrets, has none): the others cost no request.
        """
        if not any(is_digest(value) for value in change.original.values()):
            return None
        try:
            self.journals.forget(namespace=namespace, policy=owner.policy, action=change.action)
        except KubeError as error:
            where = self.journals.where(namespace=namespace, policy=owner.policy, action=change.action)
            return f"journal Secret {where} of action {change.action} could not be deleted ({failure_text(error)})"
        return None

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
