"""A small, typed door to the Kubernetes API over the official `kubernetes` client.

The generated per-kind APIs of the client return model objects whose shapes change between
releases; the operator only needs JSON in and JSON out on a handful of paths, so it uses the
client's configured `ApiClient` (auth, TLS, kubeconfig or in-cluster) to send plain requests.
Every write carries one fixed field manager, documented for Argo CD's `managedFieldsManagers`.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "stampede-operator"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

JSON = dict[str, Any]


class KubeError(Exception):
    """An API call failed; `status` is the HTTP status (0 when the server could not be reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclass
class RequestCounter:
    """Counts requests by verb; the operator's own metrics and tests read it."""

    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, verb: str) -> None:
        with self.lock:
            self.counts[verb] = self.counts.get(verb, 0) + 1


T = TypeVar("T")
CONFLICT_ATTEMPTS = 5
"""How many times a read-modify-write is tried when the object changed between its read and its write."""


def retry_conflicts(attempt: Callable[[], T], *, attempts: int = CONFLICT_ATTEMPTS) -> T:
    """Run a read-modify-write, again at once (with its fresh read) when its conditional write gets a 409.

    On a real cluster the deployment and HPA controllers write status between any read and write of the
    operator; that is normal and must never be reported as a failure. Only a conflict that persists
    through every attempt is raised.
    """
    for _ in range(attempts - 1):
        try:
            return attempt()
        except KubeError as error:
            if not error.conflict:
                raise
    return attempt()


def load_api_client(*, config_file: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """In-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config.

    A kubeconfig file or context given (`stampede report --kubeconfig/--context`, as kubectl takes them)
    means that kubeconfig, never the in-cluster config.
    """
    configuration = k8s.Configuration()
    try:
        if config_file or context:
            raise k8s_config.ConfigException("a kubeconfig was asked for")
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        # KUBECONFIG is read now, not when the client library was imported (it freezes the default then).
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=config_file or os.environ.get("KUBECONFIG") or None,
            context=context,
            client_configuration=configuration,
        )
    # urllib3's default retries would turn one slow GET into four timeouts; the next poll is the retry.
    configuration.retries = 0
    # One connection per worker thread (64 for reads and target writes, 16 for status transitions, 16 for
    # status refreshes: handlers/operator.py), or urllib3 opens and drops extras.
    configuration.connection_pool_maxsize = 96
    return k8s.ApiClient(configuration)


class Kube:
    """Blocking JSON requests; callers run them in threads so the event loop never blocks."""

    def __init__(self, api_client: k8s.ApiClient, *, timeout: float = 10.0) -> None:
        self.api = api_client
        self.timeout = timeout
        self.counter = RequestCounter()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content_type: str | None = None,
        query: Mapping[str, str] | None = None,
    ) -> JSON:
        params = list((query or {}).items())
        if method in ("POST", "PUT", "PATCH"):
            params.append(("fieldManager", FIELD_MANAGER))
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type or "application/json"
        _, url, header_params, serialized, _ = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=params,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        self.counter.add(method)
        try:
            response = self.api.call_api(
                method, url, header_params=header_params, body=serialized, _request_timeout=self.timeout
            )
            response.read()  # type: ignore[no-untyped-call]
        except ApiException as error:
            raise KubeError(int(error.status or 0), _reason(error)) from None
        except Exception as error:  # urllib3 connection errors and timeouts
            raise KubeError(0, f"cannot reach the API server: {type(error).__name__}") from None
        data = response.data or b"{}"
        if not 200 <= response.status <= 299:
            raise KubeError(response.status, _reason_text(data.decode("utf-8", "replace")))
        parsed: JSON = json.loads(data)
        return parsed

    def get(self, path: str, *, query: Mapping[str, str] | None = None) -> JSON:
        return self.request("GET", path, query=query)

    def merge(self, path: str, patch: JSON) -> JSON:
        return self.request("PATCH", path, body=patch, content_type=MERGE)

    def json_patch(self, path: str, ops: list[JSON]) -> JSON:
        return self.request("PATCH", path, body=ops, content_type=JSON_PATCH)

    def create(self, path: str, body: JSON) -> JSON:
        return self.request("POST", path, body=body)

    def replace(self, path: str, body: JSON) -> JSON:
        """PUT: the whole object, conditional on the `metadata.resourceVersion` it carries."""
        return self.request("PUT", path, body=body)

    def delete(self, path: str) -> JSON:
        return self.request("DELETE", path)


def _reason(error: ApiException) -> str:
    return _reason_text(error.body) if error.body else str(error.reason or error.status)


def _reason_text(body: str | bytes | None) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or text[:300] or "no message")


# -- paths ---------------------------------------------------------------------------------------

_GROUPS = {
    "ConfigMap": ("api/v1", "configmaps"),
    "Secret": ("api/v1", "secrets"),
    "Deployment": ("apis/apps/v1", "deployments"),
    "StatefulSet": ("apis/apps/v1", "statefulsets"),
    "DaemonSet": ("apis/apps/v1", "daemonsets"),
    "CronJob": ("apis/batch/v1", "cronjobs"),
    "Job": ("apis/batch/v1", "jobs"),
    "HorizontalPodAutoscaler": ("apis/autoscaling/v2", "horizontalpodautoscalers"),
    "StampedeIncident": ("apis/stampede.aurum.io/v1alpha1", "stampedeincidents"),
}


# IsDNS1123Subdomain (k8s.io/apimachinery/pkg/util/validation): no `/`, no `..`, no empty label. Names
# reach this module from specs and from status; a name that is not one must never become a URL, where
# `..` segments would be resolved into another namespace.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBRESOURCES = frozenset({"scale", "status"})


class InvalidName(KubeError):
    """A kind, namespace, name or subresource that cannot be an object's: refused before any request."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


def path(kind: str, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    """URL path of a namespaced object or collection of a kind the operator touches.

    Raises `InvalidName` (a `KubeError`, so callers report it like any failed request) for anything that
    is not a DNS-1123 name: `/`, `..`, empty names.
    """
    if kind not in _GROUPS:
        raise InvalidName(f"refused: {kind!r} is not a kind the operator changes")
    if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        raise InvalidName(f"refused: {namespace!r} is not a namespace name")
    prefix, plural = _GROUPS[kind]
    out = f"/{prefix}/namespaces/{namespace}/{plural}"
    if name is not None:
        if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            raise InvalidName(f"refused: {name!r} is not a valid {kind} name (DNS-1123)")
        out += f"/{name}"
    if subresource is not None:
        if subresource not in _SUBRESOURCES or name is None:
            raise InvalidName(f"refused: {subresource!r} is not a subresource the operator writes")
        out += f"/{subresource}"
    return out
