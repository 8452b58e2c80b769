"""Job actions: one Job per incident from a CronJob's template, as `kubectl create job --from` does.

The Job's name is derived from the policy and the incident, so a restarted operator finds the Job it
created instead of creating a second one. A Job is not reversible: at the end of the incident it is
left to finish and removed by its `ttlSecondsAfterFinished`.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from ..api.kinds import ChangeKind
from ..api.spec import Action
from ..api.status import AppliedChange
from ..engine import outcomes
from ..engine.changes import job_name, label_value
from ..engine.outcomes import Outcome
from .kube import JSON, Kube, KubeError, path
from .ownership import Intend, Ownership, meta

POLICY_LABEL = "stampede.aurum.io/policy"
INCIDENT_LABEL = "stampede.aurum.io/incident"
DEFAULT_JOB_TTL = 3600


class Jobs:
    """The Job target kind."""

    reversible: ClassVar[bool] = False
    kinds: ClassVar[frozenset[ChangeKind]] = frozenset({ChangeKind.JOB})

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def handles(self, action: Action) -> bool:
        return action.job is not None

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
        """Not journalled: the Job's name is derived from the incident, so a restarted operator finds it."""
        spec = action.job
        assert spec is not None
        cronjob = self.kube.get(path("CronJob", namespace, spec.from_cron_job))
        name = job_name(spec.from_cron_job, policy=owner.policy, incident=incident)
        change = AppliedChange(
            action=action.name, kind=ChangeKind.JOB, name=name, incident=incident, applied_at=now, applied={"job": name}
        )
        if dry_run:
            return outcomes.job_created(change, cronjob=spec.from_cron_job, existed=False, dry_run=True)
        try:
            self.kube.create(
                path("Job", namespace),
                _job(cronjob, name=name, namespace=namespace, policy=owner.policy, incident=incident),
            )
            existed = False
        except KubeError as error:
            if not error.conflict:
                raise
            existed = True
        return outcomes.job_created(change, cronjob=spec.from_cron_job, existed=existed, dry_run=False)

    def landed(self, namespace: str, owner: Ownership, change: AppliedChange) -> bool:
        """A Job is never journalled: it belongs to its incident and is not rolled back."""
        return False

    def reverted(self, namespace: str, change: AppliedChange) -> list[str]:
        return []

    def reapply(self, namespace: str, owner: Ownership, change: AppliedChange, *, now: datetime) -> Outcome | None:
        return None

    def undo(
        self, namespace: str, owner: Ownership, change: AppliedChange, *, now: datetime, last: bool = True
    ) -> Outcome:
        return outcomes.job_left_to_finish(change)


def _job(cronjob: JSON, *, name: str, namespace: str, policy: str, incident: str) -> JSON:
    """The Job `kubectl create job --from=cronjob/NAME` makes, labelled with the policy and the incident."""
    template = (cronjob.get("spec") or {}).get("jobTemplate") or {}
    template_meta = template.get("metadata") or {}
    job_spec = dict(template.get("spec") or {})
    job_spec.setdefault("ttlSecondsAfterFinished", DEFAULT_JOB_TTL)
    owner = meta(cronjob)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                **(template_meta.get("labels") or {}),
                POLICY_LABEL: label_value(policy),
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
                    "name": owner.get("name"),
                    "uid": owner.get("uid"),
                    "controller": True,
                    # No blockOwnerDeletion, as `kubectl create job --from` leaves it out: setting it needs
                    # `update` on cronjobs/finalizers where OwnerReferencesPermissionEnforcement is on.
                }
            ],
        },
        "spec": job_spec,
    }


__all__ = ["DEFAULT_JOB_TTL", "INCIDENT_LABEL", "POLICY_LABEL", "Jobs", "job_name"]
