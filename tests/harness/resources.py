"""Resource catalogue of the emulated API server: built-in kinds plus kinds loaded from CRD YAML.

It exists separately from the store so that discovery, path routing, table rendering and the
store all agree on one description of each resource (scope, verbs, subresources, columns).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResourceInfo:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    status: bool = False
    scale: bool = False
    # JSON paths (".spec.replicas" style) of the scale subresource, as in CRD's scale spec.
    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str | None = None
    printer_columns: tuple[dict[str, Any], ...] = ()
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Storage identity: the same plural in another group is another resource."""
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """`plural.group` as the real server spells it in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> list[dict[str, Any]]:
        """APIResource entries for this resource and its subresources."""
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        if self.status:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if self.scale:
            entries.append(
                {
                    "name": f"{self.plural}/scale",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


def _b(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    status: bool = False,
    scale: bool = False,
    categories: tuple[str, ...] = (),
    label_selector_path: str | None = None,
) -> ResourceInfo:
    return ResourceInfo(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        short_names=short,
        status=status,
        scale=scale,
        categories=categories,
        label_selector_path=label_selector_path,
    )


BUILTINS: tuple[ResourceInfo, ...] = (
    _b("", "v1", "namespaces", "Namespace", namespaced=False, short=("ns",), status=True),
    _b("", "v1", "configmaps", "ConfigMap", short=("cm",)),
    _b("", "v1", "secrets", "Secret"),
    _b("", "v1", "events", "Event", short=("ev",)),
    _b("", "v1", "pods", "Pod", short=("po",), status=True, categories=("all",)),
    _b("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
    # Stored only (no behaviour), so that `kubectl apply -k deploy/overlays/...` installs the whole operator.
    _b("", "v1", "services", "Service", short=("svc",), status=True, categories=("all",)),
    _b("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    _b("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    _b("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _b("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _b("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", short=("pdb",), status=True),
    _b("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short=("netpol",)),
    # Stored only, not enforced: the admission policies of deploy/components/admission (1.30+ serves them).
    _b(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        namespaced=False,
        status=True,
    ),
    _b(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        namespaced=False,
    ),
    _b(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        short=("deploy",),
        status=True,
        scale=True,
        categories=("all",),
        label_selector_path=".spec.selector",
    ),
    _b(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        short=("sts",),
        status=True,
        scale=True,
        categories=("all",),
        label_selector_path=".spec.selector",
    ),
    _b("apps", "v1", "daemonsets", "DaemonSet", short=("ds",), status=True, categories=("all",)),
    _b("batch", "v1", "jobs", "Job", status=True, categories=("all",)),
    _b("batch", "v1", "cronjobs", "CronJob", short=("cj",), status=True, categories=("all",)),
    _b(
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short=("hpa",),
        status=True,
        categories=("all",),
    ),
    _b("events.k8s.io", "v1", "events", "Event", short=("ev",)),
    _b("coordination.k8s.io", "v1", "leases", "Lease"),
    _b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=("crd", "crds"),
        status=True,
    ),
)


def resources_from_crd(crd: dict[str, Any]) -> list[ResourceInfo]:
    """One ResourceInfo per served version of an apiextensions.k8s.io/v1 CRD."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    result = []
    for ver in spec.get("versions", []):
        if not ver.get("served", True):
            continue
        subs = ver.get("subresources") or {}
        scale = subs.get("scale")
        result.append(
            ResourceInfo(
                group=spec["group"],
                version=ver["name"],
                plural=names["plural"],
                kind=names["kind"],
                singular=names.get("singular", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames", ())),
                categories=tuple(names.get("categories", ())),
                status="status" in subs,
                scale=scale is not None,
                spec_replicas_path=(scale or {}).get("specReplicasPath", ".spec.replicas"),
                status_replicas_path=(scale or {}).get("statusReplicasPath", ".status.replicas"),
                label_selector_path=(scale or {}).get("labelSelectorPath"),
                printer_columns=tuple(ver.get("additionalPrinterColumns", ())),
                custom=True,
            )
        )
    return result


def load_yaml_documents(paths: Iterable[pathlib.Path | str]) -> Iterator[dict[str, Any]]:
    """All non-empty YAML documents of the given files or directories (recursively, sorted)."""
    for path in map(pathlib.Path, paths):
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
        for file in files:
            with file.open(encoding="utf-8") as f:
                for doc in yaml.safe_load_all(f):
                    if isinstance(doc, dict) and doc:
                        if doc.get("kind", "").endswith("List") and isinstance(doc.get("items"), list):
                            yield from (item for item in doc["items"] if isinstance(item, dict))
                        else:
                            yield doc


class Catalogue:
    """Mutable set of served resources; CRDs can be added at runtime (e.g. by POSTing a CRD)."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str, str], ResourceInfo] = {}
        for info in BUILTINS:
            self.add(info)

    def add(self, info: ResourceInfo) -> None:
        self._items[(info.group, info.version, info.plural)] = info

    def remove_crd(self, crd: dict[str, Any]) -> None:
        for info in resources_from_crd(crd):
            self._items.pop((info.group, info.version, info.plural), None)

    def find(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._items.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceInfo | None:
        for info in self._items.values():
            if info.api_version == api_version and info.kind == kind:
                return info
        return None

    def groups(self) -> dict[str, list[str]]:
        """Group name -> versions, in registration order ('' is the legacy core group)."""
        result: dict[str, list[str]] = {}
        for info in self._items.values():
            versions = result.setdefault(info.group, [])
            if info.version not in versions:
                versions.append(info.version)
        return result

    def in_group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return [i for i in self._items.values() if i.group == group and i.version == version]

    def __iter__(self) -> Iterator[ResourceInfo]:
        return iter(list(self._items.values()))
