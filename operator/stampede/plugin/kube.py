"""The plugin's API access: the user's kubeconfig and context, policies, incident records, events.

Everything is read as plain dicts: the plugin must keep working against an operator one version ahead
or behind (a field it does not know is ignored, a missing one is shown as empty).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

GROUP, VERSION = "stampede.aurum.io", "v1alpha1"
POLICIES, INCIDENTS = "stampedepolicies", "stampedeincidents"
POLICY_LABEL = "stampede.aurum.io/policy"


class PluginError(Exception):
    """A failure to print as kubectl does (`Error from server (NotFound): ...`) with an exit code."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _error(error: ApiException, *, what: str) -> PluginError:
    reasons = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 422: "Invalid"}
    reason = reasons.get(error.status or 0, error.reason or "Error")
    return PluginError(f"Error from server ({reason}): {what}")


@dataclass
class Cluster:
    """One API server as the user's kubeconfig describes it."""

    api: Any
    namespace: str
    """The namespace of -n, else the context's, else `default` (as kubectl)."""

    @classmethod
    def connect(cls, *, kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
        try:
            api = kubernetes.config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
            contexts, active = kubernetes.config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        except (kubernetes.config.ConfigException, OSError) as error:
            raise PluginError(f"error: {error}") from None
        chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
        default = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        return cls(api=api, namespace=namespace or default)

    @property
    def custom(self) -> Any:
        return kubernetes.client.CustomObjectsApi(self.api)

    @property
    def core(self) -> Any:
        return kubernetes.client.CoreV1Api(self.api)

    # -- policies ---------------------------------------------------------------------------------
    def policies(self, *, all_namespaces: bool) -> list[dict[str, Any]]:
        try:
            if all_namespaces:
                found = self.custom.list_cluster_custom_object(GROUP, VERSION, POLICIES)
            else:
                found = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, POLICIES)
        except ApiException as error:
            raise _error(error, what=f"cannot list {POLICIES}.{GROUP}") from None
        items: list[dict[str, Any]] = found.get("items") or []
        return sorted(items, key=lambda p: (p["metadata"].get("namespace", ""), p["metadata"]["name"]))

    def policy(self, name: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, POLICIES, name
            )
        except ApiException as error:
            raise _error(error, what=f'{POLICIES}.{GROUP} "{name}" not found') from None
        return found

    def patch_policy(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        try:
            patched: dict[str, Any] = self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, POLICIES, name, patch
            )
        except ApiException as error:
            raise _error(error, what=f'{POLICIES}.{GROUP} "{name}" not found') from None
        return patched

    # -- incident records (StampedeIncident, when the cluster serves it) ---------------------------
    def records(self, *, all_namespaces: bool, policy: str | None = None) -> list[dict[str, Any]] | None:
        """The incident records, or None when the cluster has no StampedeIncident kind (older operator)."""
        # The operator's label holds the name cut to a label value (63 characters, alphanumeric ends), so
        # a long name is matched by its cut label and then exactly by the record's spec.policy below.
        selector = f"{POLICY_LABEL}={re.sub(r'^[^A-Za-z0-9]+|[^A-Za-z0-9]+$', '', policy[:63])}" if policy else None
        try:
            if all_namespaces:
                found = self.custom.list_cluster_custom_object(GROUP, VERSION, INCIDENTS, label_selector=selector)
            else:
                found = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, INCIDENTS, label_selector=selector
                )
        except ApiException as error:
            if error.status == 404:
                return None
            raise _error(error, what=f"cannot list {INCIDENTS}.{GROUP}") from None
        items: list[dict[str, Any]] = found.get("items") or []
        if policy:
            items = [i for i in items if (i.get("spec") or {}).get("policy", policy) == policy]
        return items

    # -- events ---------------------------------------------------------------------------------------
    def events(self, name: str) -> list[dict[str, Any]]:
        try:
            found = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
        except ApiException as error:
            raise _error(error, what=f"cannot list events in {self.namespace}") from None
        events: list[dict[str, Any]] = self.api.sanitize_for_serialization(found).get("items") or []
        return [e for e in events if (e.get("involvedObject") or {}).get("kind") in (None, "StampedePolicy")]


__all__ = ["Cluster", "PluginError"]
