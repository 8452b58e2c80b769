"""Writes to StampedePolicy objects themselves: status, the rollback finalizer, and Secret reads.

The finalizer is added only while changes are applied and removed with the last rollback, so an
idle policy deletes at once, even while the operator is down.

Secrets are read only when labelled `stampede.aurum.io/credentials: "true"`: whoever may write a policy
must not be able to make the operator send any other Secret of the namespace somewhere. A Secret that is
missing, not labelled, or lacks the key reads alike (one message), so a policy cannot probe which Secrets
and keys exist.
"""

from __future__ import annotations

from base64 import b64decode
from typing import Any

from ..api import GROUP, PLURAL, VERSION
from .kube import JSON, Kube, KubeError, path, retry_conflicts

FINALIZER = "stampede.aurum.io/rollback"
CREDENTIALS_LABEL = "stampede.aurum.io/credentials"
"""The label (value "true") a Secret needs before the operator reads it for a policy."""


def policy_path(namespace: str, name: str, subresource: str | None = None) -> str:
    out = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"
    return f"{out}/{subresource}" if subresource else out


def merge_diff(old: Any, new: Any) -> Any:
    """RFC 7386 merge patch turning `old` into `new` (None where a key disappeared)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = (
                merge_diff(old[key], value) if isinstance(value, dict) and isinstance(old[key], dict) else value
            )
    return patch


class Policies:
    """Status, finalizer and Secret access for policies."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def read(self, namespace: str, name: str) -> JSON:
        return self.kube.get(policy_path(namespace, name))

    def read_template(self, *, kind: str, namespace: str, name: str) -> JSON:
        """The (Cluster)StampedePolicyTemplate a policy's `spec.templateRef` names (for `stampede report`)."""
        if kind == "ClusterStampedePolicyTemplate":
            return self.kube.get(f"/apis/{GROUP}/{VERSION}/clusterstampedepolicytemplates/{name}")
        return self.kube.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/stampedepolicytemplates/{name}")

    def write_status(self, namespace: str, name: str, *, old: JSON, new: JSON) -> JSON | None:
        """Patch only what changed in status; None when nothing did."""
        patch = merge_diff(old, new)
        if not patch:
            return None
        return self.kube.merge(policy_path(namespace, name, "status"), {"status": patch})

    def write_journal(self, namespace: str, name: str, journal: list[JSON]) -> None:
        """Record the changes about to be written to targets, before they are (`status.journal`)."""
        self.kube.merge(policy_path(namespace, name, "status"), {"status": {"journal": journal}})

    def set_finalizer(self, namespace: str, name: str, *, present: bool) -> None:
        """Add or remove the rollback finalizer, keeping everyone else's (again with a fresh read on a 409)."""
        retry_conflicts(lambda: self._set_finalizer(namespace, name, present=present))

    def _set_finalizer(self, namespace: str, name: str, *, present: bool) -> None:
        body = self.kube.get(policy_path(namespace, name))
        meta = body.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if (FINALIZER in finalizers) == present:
            return
        finalizers = [*finalizers, FINALIZER] if present else [f for f in finalizers if f != FINALIZER]
        self.kube.merge(
            policy_path(namespace, name),
            {"metadata": {"resourceVersion": meta.get("resourceVersion"), "finalizers": finalizers or None}},
        )

    def remove_annotation(self, namespace: str, name: str, key: str) -> None:
        """Drop one annotation of the policy (a manual request the operator has carried out)."""
        self.kube.merge(policy_path(namespace, name), {"metadata": {"annotations": {key: None}}})

    def read_secret(self, namespace: str, name: str, key: str) -> str:
        """One key of a labelled Secret in the policy's namespace.

        Raises KubeError(404) with the same message whether the Secret is missing, not labelled for the
        operator, or has no such key. A 403 is the operator's own RBAC (Secrets not granted in that
        namespace) and is reported as such.
        """
        unavailable = KubeError(
            404,
            f"Secret {namespace}/{name} key {key!r} unavailable (missing, not labelled "
            f"{CREDENTIALS_LABEL}=true, or without that key)",
        )
        try:
            secret = self.kube.get(path("Secret", namespace, name))
        except KubeError as error:
            if error.not_found:
                raise unavailable from None
            raise
        labels = (secret.get("metadata") or {}).get("labels") or {}
        if labels.get(CREDENTIALS_LABEL) != "true":
            raise unavailable
        data = secret.get("data") or {}
        if key in data:
            return b64decode(data[key]).decode("utf-8")
        string_data = secret.get("stringData") or {}
        if key in string_data:
            return str(string_data[key])
        raise unavailable
