"""Writes to `StampedeIncident` records: create one per incident, keep its status current, prune old ones.

A record is owned by its policy (ownerReference, so deleting the policy garbage-collects its records)
without `blockOwnerDeletion`: that flag needs `update` on the policy's `finalizers` under the
OwnerReferencesPermissionEnforcement admission plugin, and nothing should wait for a record anyway.
"""

from __future__ import annotations

import re
from typing import Any

from ..api import API_VERSION, KIND
from ..api.incident import INCIDENT_KIND, POLICY_LABEL, IncidentRecordStatus, IncidentSpec, RecordState, record_name
from .kube import JSON, Kube, KubeError, path
from .policies import merge_diff

INCIDENT_LABEL = "stampede.aurum.io/incident"


def label_value(text: str) -> str:
    """A valid label value (≤ 63 characters, alphanumeric at both ends) from a longer name."""
    value = text[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


class Records:
    """StampedeIncident objects in a policy's namespace."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def read(self, namespace: str, policy: str, incident: str) -> IncidentRecordStatus | None:
        """The record's status, or None when there is no record (or it cannot be parsed)."""
        try:
            body = self.kube.get(path(INCIDENT_KIND, namespace, record_name(policy, incident)))
        except KubeError as error:
            if error.not_found:
                return None
            raise
        try:
            return IncidentRecordStatus.model_validate(body.get("status") or {})
        except ValueError:
            return None  # hand-edited beyond repair: the operator writes it afresh

    def create(
        self, namespace: str, *, policy: str, policy_uid: str, incident: str, status: IncidentRecordStatus
    ) -> JSON:
        """Create the record and write its status (the status subresource ignores status on create)."""
        name = record_name(policy, incident)
        body: JSON = {
            "apiVersion": API_VERSION,
            "kind": INCIDENT_KIND,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {POLICY_LABEL: label_value(policy), INCIDENT_LABEL: label_value(incident)},
                "ownerReferences": [
                    {"apiVersion": API_VERSION, "kind": KIND, "name": policy, "uid": policy_uid, "controller": True}
                ],
            },
            "spec": IncidentSpec(policy=policy, incident=incident).model_dump(mode="json", by_alias=True),
        }
        try:
            self.kube.create(path(INCIDENT_KIND, namespace), body)
        except KubeError as error:
            if not error.conflict:  # 409: it exists (created before a restart); its status is written below
                raise
        return self.write_status(namespace, name, old={}, new=status.wire()) or {}

    def write_status(self, namespace: str, name: str, *, old: JSON, new: JSON) -> JSON | None:
        """Patch only what changed in the record's status; None when nothing did."""
        patch = merge_diff(old, new)
        if not patch:
            return None
        return self.kube.merge(path(INCIDENT_KIND, namespace, name, "status"), {"status": patch})

    def of_policy(self, namespace: str, policy: str) -> list[JSON]:
        """The policy's records (by label, checked again here in case a server ignores the selector)."""
        selector = f"{POLICY_LABEL}={label_value(policy)}"
        items: list[JSON] = (
            self.kube.get(path(INCIDENT_KIND, namespace), query={"labelSelector": selector}).get("items") or []
        )
        return [i for i in items if (i.get("spec") or {}).get("policy") == policy]

    def prune(self, namespace: str, policy: str, *, keep: int) -> list[str]:
        """Delete the policy's closed records beyond the newest `keep`; returns the names deleted."""
        closed = [i for i in self.of_policy(namespace, policy) if _status(i).get("state") == RecordState.CLOSED.value]
        closed.sort(key=lambda i: str(_status(i).get("closedAt") or ""), reverse=True)
        deleted = []
        for item in closed[keep:]:
            name = str((item.get("metadata") or {}).get("name"))
            try:
                self.kube.request("DELETE", path(INCIDENT_KIND, namespace, name))
            except KubeError as error:
                if not error.not_found:
                    raise
            deleted.append(name)
        return deleted


def _status(item: JSON) -> dict[str, Any]:
    status: dict[str, Any] = item.get("status") or {}
    return status
