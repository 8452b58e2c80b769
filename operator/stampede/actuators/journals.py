"""Journal Secrets: where the original values of a ConfigMap change are kept until it is rolled back.

The originals are read from the cluster with the operator's rights, which the policy's author may not
have; they must not come back through the policy's status or events (issue 17), and the policy object
could not hold a value the size of a ConfigMap (1 MiB) beside its spec anyway (issue 9). So each change
of a configMap action keeps its originals in one Secret in the operator's own namespace, and status
keeps a digest per key (`engine/digests.py`).

One Secret per policy and action: a change's originals come from one ConfigMap, so the Secret holds at
most what that ConfigMap held (1 MiB of data; base64 in etcd stays under the 1.5 MiB object limit).
Its name is derived from the policy's namespace, name and action alone, so the operator reads journal
Secrets only by an exact name it computes, never by listing. A stored value is used only if its digest
is the one status recorded: a forged or stale Secret is refused and nothing is written.

The order that keeps a SIGKILL harmless: this Secret, then the intent in status (digests), then the
target, then `status.applied`. A Secret without a status entry (the operator stopped before the intent)
is overwritten by the next apply of the same action, and deleted with the policy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping

from ..api.status import AppliedChange
from ..engine.digests import is_digest, matches
from .kube import JSON, Kube, KubeError, path, retry_conflicts
from .ownership import meta

NAME_PREFIX = "stampede-journal-"
COMPONENT_LABEL = "stampede.aurum.io/component"
COMPONENT = "journal"
JOURNAL_OF = "stampede.aurum.io/journal-of"
"""Annotation: `<namespace>/<policy>` whose change the Secret journals."""
ACTION = "stampede.aurum.io/action"
CONFIGMAP = "stampede.aurum.io/configmap"


class JournalProblem(Exception):
    """The originals a rollback needs cannot be trusted or found; the message is a clause for a sentence."""


def journal_name(*, namespace: str, policy: str, action: str) -> str:
    """`stampede-journal-<40 hex>`: a DNS-1123 name from what both the spec and status name, of fixed length."""
    return NAME_PREFIX + hashlib.sha256(f"{namespace}/{policy}/{action}".encode()).hexdigest()[:40]


class Journals:
    """The journal Secrets of every policy, in one namespace (the operator's)."""

    def __init__(self, kube: Kube, *, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def where(self, *, namespace: str, policy: str, action: str) -> str:
        """`<operator namespace>/<secret name>`, as sentences name it."""
        return f"{self.namespace}/{journal_name(namespace=namespace, policy=policy, action=action)}"

    def write(self, *, namespace: str, policy: str, action: str, configmap: str, originals: Mapping[str, str]) -> None:
        """Keep a change's originals (present keys only), replacing what an earlier change of the action kept."""
        name = journal_name(namespace=namespace, policy=policy, action=action)
        body: JSON = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "labels": {COMPONENT_LABEL: COMPONENT, "app.kubernetes.io/managed-by": "stampede-operator"},
                "annotations": {JOURNAL_OF: f"{namespace}/{policy}", ACTION: action, CONFIGMAP: configmap},
            },
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in originals.items()},
        }
        try:
            self.kube.create(path("Secret", self.namespace), body)
            return
        except KubeError as error:
            if not error.conflict:  # 409 AlreadyExists: an earlier change of this action, replaced below
                raise
        secret_path = path("Secret", self.namespace, name)

        def replace() -> None:
            current = self.kube.get(secret_path)
            version = meta(current).get("resourceVersion")
            self.kube.replace(secret_path, {**body, "metadata": {**body["metadata"], "resourceVersion": version}})

        retry_conflicts(replace)

    def kept(self, *, namespace: str, policy: str, action: str, configmap: str) -> dict[str, str] | None:
        """The originals an earlier apply of the action kept for `configmap`; None without a (readable) Secret.

        Only for a change whose record was lost (see `ConfigMaps.apply`): there is no digest to check against,
        so the Secret must at least be the one this action wrote for this ConfigMap, every value decodable.
        """
        name = journal_name(namespace=namespace, policy=policy, action=action)
        try:
            secret = self.kube.get(path("Secret", self.namespace, name))
        except KubeError as error:
            if error.not_found:
                return None
            raise
        notes = meta(secret).get("annotations") or {}
        written_for = (notes.get(JOURNAL_OF), notes.get(ACTION), notes.get(CONFIGMAP))
        if written_for != (f"{namespace}/{policy}", action, configmap):
            return None
        out: dict[str, str] = {}
        for key, value in (secret.get("data") or {}).items():
            decoded = _decoded(value)
            if decoded is None:
                return None
            out[key] = decoded
        return out

    def originals(self, change: AppliedChange, *, namespace: str, policy: str) -> dict[str, str | None]:
        """The values a rollback restores, each checked against the digest status recorded.

        Raises `JournalProblem` when the Secret is missing or holds anything else. A plain value in status
        (written before digests) is its own original, and needs no Secret.
        """
        wanted = {key: recorded for key, recorded in change.original.items() if is_digest(recorded)}
        out = {key: recorded for key, recorded in change.original.items() if key not in wanted}
        if not wanted:
            return out
        where = self.where(namespace=namespace, policy=policy, action=change.action)
        name = journal_name(namespace=namespace, policy=policy, action=change.action)
        try:
            secret = self.kube.get(path("Secret", self.namespace, name))
        except KubeError as error:
            if error.not_found:
                raise JournalProblem(f"the journal Secret {where} holding its originals is missing") from None
            raise
        data: Mapping[str, str] = secret.get("data") or {}
        for key, recorded in wanted.items():
            value = _decoded(data.get(key))
            if value is None or not matches(recorded, value):
                raise JournalProblem(
                    f"the journal Secret {where} does not hold the original of key {key} that status recorded "
                    "(its digest differs)"
                )
            out[key] = value
        return out

    def forget(self, *, namespace: str, policy: str, action: str) -> None:
        """Delete an action's journal Secret (its change is rolled back, or the policy is gone); absent is fine."""
        name = journal_name(namespace=namespace, policy=policy, action=action)
        try:
            self.kube.delete(path("Secret", self.namespace, name))
        except KubeError as error:
            if not error.not_found:
                raise


def _decoded(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


__all__ = ["ACTION", "CONFIGMAP", "JOURNAL_OF", "JournalProblem", "Journals", "journal_name"]
