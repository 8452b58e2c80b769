"""Apply, verify and undo one action against its target object, idempotently.

Every change is written together with a ledger annotation on the target that records the
original values, in the same request where the API allows it. The status is written after the
change, so if the operator dies in between, the next apply finds the ledger and records the true
originals instead of the values it set itself: a crash never turns a change into one that cannot
be rolled back. The ledger and the `applied-by` annotation go away with the last rollback.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from ..api.spec import Action
from ..api.status import AppliedChange, WorkloadStatusRef, format_time, parse_time
from ..engine.changes import configmap_rollback, plan_configmap, scale_target
from .kube import JSON, Kube, KubeError, path

APPLIED_BY = "stampede.aurum.io/applied-by"
LEDGER = "stampede.aurum.io/originals"
POLICY_LABEL = "stampede.aurum.io/policy"
INCIDENT_LABEL = "stampede.aurum.io/incident"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
DEFAULT_JOB_TTL = 3600


@dataclass(frozen=True)
class Outcome:
    """What happened to one change; `reason` is the event reason to emit."""

    ok: bool
    reason: str
    message: str
    change: AppliedChange | None = None
    skipped: tuple[str, ...] = ()
    owner: str | None = None
    warnings: tuple[str, ...] = ()
    """Side effects that failed although the change itself succeeded (reported as ActionFailed)."""


@dataclass(frozen=True)
class Target:
    """Where an action's change lands."""

    namespace: str
    policy: str


def _meta(obj: JSON) -> JSON:
    meta: JSON = obj.get("metadata") or {}
    return meta


def _annotations(obj: JSON) -> dict[str, str]:
    return dict(_meta(obj).get("annotations") or {})


def _ledger(obj: JSON) -> dict[str, Any]:
    try:
        data = json.loads(_annotations(obj).get(LEDGER, "{}"))
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


def _owner_conflict(obj: JSON, policy: str) -> str | None:
    owner = _annotations(obj).get(APPLIED_BY)
    return owner if owner and owner != policy else None


def _ledger_patch(obj: JSON, *, policy: str, key: str, entry: dict[str, Any] | None) -> JSON:
    """Annotations patch adding or removing one ledger entry (and applied-by with the last one)."""
    ledger = _ledger(obj)
    if entry is None:
        ledger.pop(key, None)
    else:
        ledger[key] = entry
    if ledger:
        return {APPLIED_BY: policy, LEDGER: json.dumps(ledger, sort_keys=True, separators=(",", ":"))}
    return {APPLIED_BY: None, LEDGER: None}


def label_value(text: str) -> str:
    """A label-safe form of a name: names may be 253 characters, label values only 63."""
    if len(text) <= 63:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[:54].rstrip('.-')}-{digest}"


def job_name(cronjob: str, *, policy: str, incident: str) -> str:
    """One deterministic Job name per (policy, incident): a restarted operator finds, not duplicates, it."""
    digest = hashlib.sha256(f"{policy}/{incident}".encode()).hexdigest()[:8]
    return f"{cronjob[: 63 - 13]}-stp-{digest}"


class Actuators:
    """The operator's hands: every Kubernetes change to a target goes through here."""

    def __init__(self, kube: Kube, *, max_replicas: int) -> None:
        self.kube = kube
        self.max_replicas = max_replicas

    # -- apply ----------------------------------------------------------------------------------
    def apply(self, target: Target, action: Action, *, incident: str, now: datetime, dry_run: bool) -> Outcome:
        """Make (or, in DryRun, compute) the change of one action."""
        try:
            if action.config_map is not None:
                return self._apply_configmap(target, action, incident=incident, now=now, dry_run=dry_run)
            if action.scale is not None:
                return self._apply_scale(target, action, incident=incident, now=now, dry_run=dry_run)
            return self._apply_job(target, action, incident=incident, now=now, dry_run=dry_run)
        except KubeError as error:
            what = "not found" if error.not_found else f"failed ({error.status or 'unreachable'}): {error.message}"
            return Outcome(
                False, "ActionFailed", f"Action {action.name}: {action.kind} {target.namespace}/{action.target} {what}."
            )

    def _record(
        self,
        action: Action,
        *,
        kind: str,
        name: str,
        incident: str,
        now: datetime,
        original: dict[str, str | None],
        applied: dict[str, str],
        restart: list[WorkloadStatusRef] | None = None,
    ) -> AppliedChange:
        return AppliedChange(
            action=action.name,
            kind=kind,
            name=name,
            incident=incident,
            applied_at=now,
            original=original,
            applied=applied,
            restart=restart or [],
        )

    def _apply_configmap(
        self, target: Target, action: Action, *, incident: str, now: datetime, dry_run: bool
    ) -> Outcome:
        spec = action.config_map
        assert spec is not None
        cm = self.kube.get(path("ConfigMap", target.namespace, spec.name))
        if (owner := _owner_conflict(cm, target.policy)) is not None:
            return Outcome(
                False,
                "Conflict",
                f"Action {action.name}: ConfigMap {spec.name} is held by policy {owner}; not applied.",
                owner=owner,
            )
        key = f"{target.policy}/{action.name}"
        data: dict[str, str] = dict(cm.get("data") or {})
        previous = _ledger(cm).get(key)
        if previous is not None:  # a change made before a crash: its true originals are in the ledger
            original = dict(previous.get("original", {}))
            applied = dict(previous.get("applied", {}))
        else:
            original, applied = plan_configmap(data, spec.data)
        restart = [WorkloadStatusRef(kind=w.kind.value, name=w.name) for w in spec.restart]
        change = self._record(
            action,
            kind="ConfigMap",
            name=spec.name,
            incident=incident,
            now=now,
            original=original,
            applied=applied,
            restart=restart,
        )
        keys = ", ".join(f"{k}={v}" for k, v in applied.items()) or "no key (values already set)"
        if dry_run:
            return Outcome(
                True, "WouldApply", f"Would set {keys} in ConfigMap {spec.name} (action {action.name}).", change
            )
        if applied and (previous is None or any(data.get(k) != v for k, v in applied.items())):
            entry = {"incident": incident, "appliedAt": format_time(now), "original": original, "applied": applied}
            self.kube.merge(
                path("ConfigMap", target.namespace, spec.name),
                {
                    "metadata": {
                        "resourceVersion": _meta(cm).get("resourceVersion"),
                        "annotations": _ledger_patch(cm, policy=target.policy, key=key, entry=entry),
                    },
                    "data": applied,
                },
            )
        restarted, failed = self._restart(target, restart, now=now) if applied else ([], [])
        if failed:
            # The keys are set (and in the ledger); the change is recorded only once its workloads have
            # restarted, so the next poll runs this again: no key write, the restart retried.
            return Outcome(
                False,
                "ActionFailed",
                f"Set {keys} in ConfigMap {spec.name} (action {action.name}), but "
                f"{'; '.join(failed)}; retrying at the next poll.",
            )
        suffix = f"; restarted {', '.join(restarted)}" if restarted else ""
        return Outcome(
            True, "ActionApplied", f"Set {keys} in ConfigMap {spec.name} (action {action.name}){suffix}.", change
        )

    def _restart(
        self, target: Target, workloads: list[WorkloadStatusRef], *, now: datetime
    ) -> tuple[list[str], list[str]]:
        """Rollout restart, as `kubectl rollout restart` does: stamp the pod template.

        Returns the workloads restarted and one sentence per workload that could not be.
        """
        done, failed = [], []
        for workload in workloads:
            patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: format_time(now)}}}}}
            try:
                self.kube.merge(path(workload.kind, target.namespace, workload.name), patch)
                done.append(f"{workload.kind} {workload.name}")
            except KubeError as error:
                what = "not found" if error.not_found else f"failed ({error.status or 'unreachable'}): {error.message}"
                failed.append(f"rollout restart of {workload.kind} {workload.name} {what}")
        return done, failed

    def _find_hpa(self, target: Target, kind: str, name: str) -> JSON | None:
        hpas = self.kube.get(path("HorizontalPodAutoscaler", target.namespace)).get("items") or []
        for hpa in hpas:
            ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == kind and ref.get("name") == name:
                found: JSON = hpa
                return found
        return None

    def _apply_scale(self, target: Target, action: Action, *, incident: str, now: datetime, dry_run: bool) -> Outcome:
        spec = action.scale
        assert spec is not None
        kind = spec.kind.value
        key = f"{target.policy}/{action.name}"
        workload = self.kube.get(path(kind, target.namespace, spec.name))
        hpa = self._find_hpa(target, kind, spec.name)
        obj, obj_kind, field_name = (
            (hpa, "HorizontalPodAutoscaler", "minReplicas") if hpa else (workload, kind, "replicas")
        )
        obj_name = str(_meta(obj).get("name"))
        if (owner := _owner_conflict(obj, target.policy)) is not None:
            return Outcome(
                False,
                "Conflict",
                f"Action {action.name}: {obj_kind} {obj_name} is held by policy {owner}; not applied.",
                owner=owner,
            )
        raw = (obj.get("spec") or {}).get(field_name)
        current = int(raw) if raw is not None else 1
        previous = _ledger(obj).get(key)
        cap = self.max_replicas
        if hpa is not None:
            cap = min(cap, int((hpa.get("spec") or {}).get("maxReplicas") or cap))
        if previous is not None:
            original = dict(previous.get("original", {}))
            applied = dict(previous.get("applied", {}))
            wanted = int(applied[field_name]) if field_name in applied else None
        else:
            wanted = scale_target(current=current, wanted=spec.replicas, cap=cap)
            original = {field_name: str(raw) if raw is not None else None} if wanted is not None else {}
            applied = {field_name: str(wanted)} if wanted is not None else {}
        change = self._record(
            action, kind=obj_kind, name=obj_name, incident=incident, now=now, original=original, applied=applied
        )
        capped = " (capped by STAMPEDE_MAX_REPLICAS)" if spec.replicas > self.max_replicas else ""
        if wanted is None:
            return Outcome(
                True,
                "WouldApply" if dry_run else "ActionApplied",
                f"{obj_kind} {obj_name} {field_name} is already {current} (≥ {spec.replicas}); "
                f"nothing to change (action {action.name}).",
                change,
            )
        what = f"{field_name} of {obj_kind} {obj_name} from {current} to {wanted}{capped}"
        if dry_run:
            return Outcome(True, "WouldApply", f"Would raise {what} (action {action.name}).", change)
        entry = {"incident": incident, "appliedAt": format_time(now), "original": original, "applied": applied}
        annotations = _ledger_patch(obj, policy=target.policy, key=key, entry=entry)
        if hpa is not None:
            if current < wanted or previous is None:
                self.kube.merge(
                    path("HorizontalPodAutoscaler", target.namespace, obj_name),
                    {
                        "metadata": {"resourceVersion": _meta(hpa).get("resourceVersion"), "annotations": annotations},
                        "spec": {"minReplicas": max(current, wanted)},
                    },
                )
        else:
            version = _meta(workload).get("resourceVersion")
            if previous is None:
                version = _meta(
                    self.kube.merge(
                        path(kind, target.namespace, obj_name),
                        {"metadata": {"resourceVersion": version, "annotations": annotations}},
                    )
                ).get("resourceVersion")
            if current < wanted:
                # Conditional on the version read: a concurrent scale-up is never overwritten (scaled down).
                self.kube.merge(
                    path(kind, target.namespace, obj_name, "scale"),
                    {"metadata": {"resourceVersion": version}, "spec": {"replicas": wanted}},
                )
        return Outcome(True, "ActionApplied", f"Raised {what} (action {action.name}).", change)

    def _apply_job(self, target: Target, action: Action, *, incident: str, now: datetime, dry_run: bool) -> Outcome:
        spec = action.job
        assert spec is not None
        cronjob = self.kube.get(path("CronJob", target.namespace, spec.from_cron_job))
        name = job_name(spec.from_cron_job, policy=target.policy, incident=incident)
        change = self._record(
            action, kind="Job", name=name, incident=incident, now=now, original={}, applied={"job": name}
        )
        if dry_run:
            return Outcome(
                True,
                "WouldApply",
                f"Would create Job {name} from CronJob {spec.from_cron_job} (action {action.name}).",
                change,
            )
        template = (cronjob.get("spec") or {}).get("jobTemplate") or {}
        template_meta = template.get("metadata") or {}
        job_spec = dict(template.get("spec") or {})
        job_spec.setdefault("ttlSecondsAfterFinished", DEFAULT_JOB_TTL)
        meta = _meta(cronjob)
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": target.namespace,
                "labels": {
                    **(template_meta.get("labels") or {}),
                    POLICY_LABEL: label_value(target.policy),
                    INCIDENT_LABEL: incident,
                },
                "annotations": {
                    **(template_meta.get("annotations") or {}),
                    "cronjob.kubernetes.io/instantiate": "manual",
                },
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "CronJob",
                        "name": meta.get("name"),
                        "uid": meta.get("uid"),
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": job_spec,
        }
        try:
            self.kube.create(path("Job", target.namespace), job)
            verb = "Created"
        except KubeError as error:
            if not error.conflict:
                raise
            verb = "Found existing"
        return Outcome(
            True,
            "ActionApplied",
            f"{verb} Job {name} from CronJob {spec.from_cron_job} for incident {incident} (action {action.name}).",
            change,
        )

    # -- adoption -------------------------------------------------------------------------------
    def adopt(self, target: Target, action: Action, *, now: datetime) -> AppliedChange | None:
        """A change of this action found in its target's ledger: made, but never recorded in status.

        That happens when the operator dies between a target write and the status write that records it;
        the ledger holds the true originals, so the change can still be rolled back exactly.
        """
        key = f"{target.policy}/{action.name}"
        restart: list[WorkloadStatusRef] = []
        try:
            if action.config_map is not None:
                obj = self.kube.get(path("ConfigMap", target.namespace, action.config_map.name))
                kind = "ConfigMap"
                restart = [WorkloadStatusRef(kind=w.kind.value, name=w.name) for w in action.config_map.restart]
            elif action.scale is not None:
                kind = action.scale.kind.value
                obj = self.kube.get(path(kind, target.namespace, action.scale.name))
                if key not in _ledger(obj):
                    hpa = self._find_hpa(target, kind, action.scale.name)
                    if hpa is None:
                        return None
                    obj, kind = hpa, "HorizontalPodAutoscaler"
            else:
                return None
        except KubeError:
            return None
        entry = _ledger(obj).get(key)
        if not isinstance(entry, dict):
            return None
        try:
            applied_at = parse_time(entry["appliedAt"]) if entry.get("appliedAt") else now
        except ValueError:
            applied_at = now
        return AppliedChange(
            action=action.name,
            kind=kind,
            name=str(_meta(obj).get("name")),
            incident=str(entry.get("incident") or ""),
            applied_at=applied_at,
            original=dict(entry.get("original") or {}),
            applied=dict(entry.get("applied") or {}),
            restart=restart,
        )

    # -- drift ----------------------------------------------------------------------------------
    def reverted(self, target: Target, change: AppliedChange) -> list[str] | None:
        """Fields of a change someone else reverted; None when the target cannot be read."""
        if change.kind == "Job" or not change.applied:
            return []
        try:
            obj = self.kube.get(path(change.kind, target.namespace, change.name))
        except KubeError:
            return None
        if change.kind == "ConfigMap":
            data = obj.get("data") or {}
            return [k for k, v in change.applied.items() if data.get(k) != v]
        spec = obj.get("spec") or {}
        return [f for f, v in change.applied.items() if _replicas(spec, f) < int(v)]

    def reapply(self, target: Target, change: AppliedChange, *, now: datetime) -> Outcome:
        """Put a reverted change back, keeping its recorded originals (also in the ledger, if a revert
        dropped it together with `applied-by`); conditional on the version read, never scaling down."""
        obj_path = path(change.kind, target.namespace, change.name)
        key = f"{target.policy}/{change.action}"
        entry = {
            "incident": change.incident,
            "appliedAt": format_time(change.applied_at),
            "original": dict(change.original),
            "applied": dict(change.applied),
        }
        try:
            obj = self.kube.get(obj_path)
            meta: JSON = {"resourceVersion": _meta(obj).get("resourceVersion")}
            if _ledger(obj).get(key) != entry or _annotations(obj).get(APPLIED_BY) != target.policy:
                meta["annotations"] = _ledger_patch(obj, policy=target.policy, key=key, entry=entry)
            spec = obj.get("spec") or {}
            if change.kind == "ConfigMap":
                self.kube.merge(obj_path, {"metadata": meta, "data": change.applied})
                _, failed = self._restart(target, change.restart, now=now)
                if failed:
                    return Outcome(
                        False,
                        "ActionFailed",
                        f"Re-applied action {change.action} to ConfigMap {change.name}, but {'; '.join(failed)}.",
                    )
            elif change.kind == "HorizontalPodAutoscaler":
                wanted = int(change.applied["minReplicas"])
                body: JSON = {"metadata": meta}
                if _replicas(spec, "minReplicas") < wanted:
                    body["spec"] = {"minReplicas": wanted}
                if "spec" in body or "annotations" in meta:
                    self.kube.merge(obj_path, body)
            else:
                wanted = int(change.applied["replicas"])
                version = meta["resourceVersion"]
                if "annotations" in meta:
                    version = _meta(self.kube.merge(obj_path, {"metadata": meta})).get("resourceVersion")
                if _replicas(spec, "replicas") < wanted:
                    self.kube.merge(
                        path(change.kind, target.namespace, change.name, "scale"),
                        {"metadata": {"resourceVersion": version}, "spec": {"replicas": wanted}},
                    )
        except KubeError as error:
            return Outcome(
                False,
                "ActionFailed",
                f"Re-applying action {change.action} to {change.kind} {change.name} failed: {error.message}.",
            )
        values = ", ".join(f"{k}={v}" for k, v in change.applied.items())
        return Outcome(
            True,
            "DriftCorrected",
            f"{change.kind} {change.name} was reverted by someone else; re-applied {values} (action {change.action}).",
            replace_reverts(change),
        )

    # -- undo -----------------------------------------------------------------------------------
    def undo(self, target: Target, change: AppliedChange, *, now: datetime, dry_run: bool) -> Outcome:
        """Restore what this policy changed, only where it still holds the value it set."""
        if change.kind == "Job":
            return Outcome(
                True,
                "ActionRolledBack",
                f"Job {change.name} (action {change.action}) is left to "
                f"finish; it is removed by its ttlSecondsAfterFinished.",
            )
        if dry_run:
            return Outcome(
                True,
                "WouldApply",
                f"Would roll back action {change.action} on {change.kind} {change.name} to {_values(change.original)}.",
            )
        try:
            if change.kind == "ConfigMap":
                return self._undo_configmap(target, change, now=now)
            return self._undo_scale(target, change)
        except KubeError as error:
            if error.not_found:
                return Outcome(
                    True,
                    "RollbackSkipped",
                    f"{change.kind} {change.name} no longer exists; nothing to roll back for action {change.action}.",
                )
            return Outcome(
                False,
                "ActionFailed",
                f"Rolling back action {change.action} on {change.kind} "
                f"{change.name} failed ({error.status}): {error.message}.",
            )

    def _undo_configmap(self, target: Target, change: AppliedChange, *, now: datetime) -> Outcome:
        cm_path = path("ConfigMap", target.namespace, change.name)
        cm = self.kube.get(cm_path)
        patch, skipped = configmap_rollback(dict(cm.get("data") or {}), change.original, change.applied)
        key = f"{target.policy}/{change.action}"
        body: JSON = {
            "metadata": {
                "resourceVersion": _meta(cm).get("resourceVersion"),
                "annotations": _ledger_patch(cm, policy=target.policy, key=key, entry=None),
            }
        }
        if patch:
            body["data"] = patch
        if patch or key in _ledger(cm):
            self.kube.merge(cm_path, body)
        restarted, failed = self._restart(target, change.restart, now=now) if patch else ([], [])
        outcome = _undo_outcome(change, restored=list(patch), skipped=skipped, restarted=restarted)
        return replace(outcome, warnings=tuple(failed))

    def _undo_scale(self, target: Target, change: AppliedChange) -> Outcome:
        obj_path = path(change.kind, target.namespace, change.name)
        obj = self.kube.get(obj_path)
        key = f"{target.policy}/{change.action}"
        spec = obj.get("spec") or {}
        restored, skipped = [], []
        body: JSON = {
            "metadata": {
                "resourceVersion": _meta(obj).get("resourceVersion"),
                "annotations": _ledger_patch(obj, policy=target.policy, key=key, entry=None),
            }
        }
        for field_name, value in change.applied.items():
            if str(spec.get(field_name)) != value:
                skipped.append(field_name)
                continue
            restored.append(field_name)
            original = change.original.get(field_name)
            if change.kind == "HorizontalPodAutoscaler":
                body["spec"] = {field_name: int(original) if original is not None else None}
        # The ledger goes first: the scale write below changes the resourceVersion this patch checks.
        version = _meta(obj).get("resourceVersion")
        if key in _ledger(obj) or "spec" in body:
            version = _meta(self.kube.merge(obj_path, body)).get("resourceVersion")
        if change.kind != "HorizontalPodAutoscaler" and restored:
            original = change.original.get("replicas")
            # Conditional: someone scaling in between gets a 409 here, not their replicas overwritten.
            self.kube.merge(
                path(change.kind, target.namespace, change.name, "scale"),
                {
                    "metadata": {"resourceVersion": version},
                    "spec": {"replicas": int(original) if original is not None else 1},
                },
            )
        return _undo_outcome(change, restored=restored, skipped=skipped, restarted=[])


def _replicas(spec: JSON, field_name: str) -> int:
    """A replica count or HPA minReplicas as the API server defaults it: absent is 1, 0 is 0."""
    value = spec.get(field_name)
    return int(value) if value is not None else 1


def replace_reverts(change: AppliedChange) -> AppliedChange:
    return change.model_copy(update={"reverts": change.reverts + 1})


def _values(values: dict[str, str | None]) -> str:
    return ", ".join(f"{k}={'(absent)' if v is None else v}" for k, v in values.items()) or "nothing"


def _undo_outcome(change: AppliedChange, *, restored: list[str], skipped: list[str], restarted: list[str]) -> Outcome:
    if skipped:
        held = ", ".join(skipped)
        done = f"; restored {', '.join(restored)}" if restored else ""
        return Outcome(
            True,
            "RollbackSkipped",
            f"{change.kind} {change.name}: {held} changed by someone else since action {change.action} set "
            f"it; left as is{done}.",
            skipped=tuple(skipped),
        )
    suffix = f"; restarted {', '.join(restarted)}" if restarted else ""
    original = {k: change.original.get(k) for k in restored}
    return Outcome(
        True,
        "ActionRolledBack",
        f"Rolled back action {change.action}: {change.kind} {change.name} {_values(original)}{suffix}.",
    )


__all__ = ["Actuators", "Outcome", "Target", "job_name", "replace_reverts"]
