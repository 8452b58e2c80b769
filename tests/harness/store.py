"""In-memory object store with the server-owned semantics of a real kube-apiserver.

kmock's own `KubernetesEmulator` keeps objects as-is: no uid, resourceVersion, generation,
generateName, finalizer-driven deletion, subresource isolation or optimistic concurrency, and it
cannot replay watch history. kopf, the `kubernetes` client and kubectl depend on all of these,
so the store implements them here, independently of HTTP (the server module only translates).

All methods are synchronous and must be called from the event loop thread that runs the server:
watch queues are plain `asyncio.Queue`s fed without locks.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import os
import random
import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

from . import managed, patches, rules, schemas
from .patches import clone
from .resources import Catalogue, ResourceInfo, resources_from_crd

Obj = dict[str, Any]
ObjKey = tuple[str, str]  # (namespace or '', name)

MERGE = "application/merge-patch+json"
JSON = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"


class ApiError(Exception):
    """An error the server reports as a `v1 Status` with the given HTTP code and reason."""

    def __init__(self, code: int, reason: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(info: ResourceInfo, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{info.qualified} "{name}" not found',
        details={"name": name, "group": info.group, "kind": info.plural},
    )


def conflict(info: ResourceInfo, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {info.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        details={"name": name, "group": info.group, "kind": info.plural},
    )


def invalid(info: ResourceInfo, name: str, message: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{info.kind} "{name}" is invalid: {message}',
        details={"name": name, "group": info.group, "kind": info.kind},
    )


@dataclasses.dataclass(kw_only=True)
class Strictness:
    """Which of a real API server's rules the harness applies; the default is what the whole suite runs on.

    `lenient()` turns every rule off, for the harness's own tests of plain storage semantics only;
    `everything()` turns every rule on; every rule is on by default. `HARNESS_STRICT=name,...` turns
    named switches on for one run (`from_env`).
    """

    #: Object metadata, built-in kinds (rules.py), CRD structure (schemas.py), etcd's size limit.
    validation: bool = True
    #: Custom resources pruned, defaulted and validated against their CRD's schema and CEL rules (schemas.py);
    #: off models a CRD applied without its schema (the hostile-policy fault test).
    custom_resource_schemas: bool = True
    #: evanphx/json-patch MergePatch: `null` members of objects inside arrays are dropped (the operator's
    #: status names absent keys in `absent` instead).
    merge_patch_prunes_array_nulls: bool = True
    #: OwnerReferencesPermissionEnforcement, modelling a client without `update` on owners' finalizers
    #: (the operator's Jobs carry no blockOwnerDeletion, as `kubectl create job --from` makes them).
    owner_references_permission_enforcement: bool = True
    #: managedFields with real field sets per manager, ownership moving on writes, Apply conflicts (managed.py).
    managed_fields: bool = True
    #: Deployment/StatefulSet rollout progress written to `status` over a second or two (controllers.py).
    rollout_controller: bool = True
    #: An HPA controller that keeps its target's replicas within [minReplicas, maxReplicas].
    hpa_controller: bool = True
    #: A Job controller that writes Job status (active, then succeeded) shortly after creation.
    job_controller: bool = True

    @classmethod
    def from_env(cls) -> Strictness:
        """The defaults, with the switches named in HARNESS_STRICT (comma-separated, or `all`) turned on.

        Lets a targeted run try a pending switch without editing code:
        `HARNESS_STRICT=rollout_controller pytest tests/e2e/test_modes.py`.
        """
        names = [n.strip() for n in os.environ.get("HARNESS_STRICT", "").split(",") if n.strip()]
        if names == ["all"]:
            return cls.everything()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(names) - known
        if unknown:
            raise ValueError(f"HARNESS_STRICT: unknown switches {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict.fromkeys(names, True))

    @classmethod
    def lenient(cls) -> Strictness:
        return cls(
            validation=False,
            custom_resource_schemas=False,
            merge_patch_prunes_array_nulls=False,
            managed_fields=False,
            rollout_controller=False,
            hpa_controller=False,
            job_controller=False,
        )

    @classmethod
    def everything(cls) -> Strictness:
        return cls(
            merge_patch_prunes_array_nulls=True,
            owner_references_permission_enforcement=True,
            rollout_controller=True,
            hpa_controller=True,
            job_controller=True,
        )


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_part(obj: Obj) -> Obj:
    """Everything generation tracks: the object without metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}


_VOLATILE_TOP = frozenset({"kind", "apiVersion", "metadata"})
_VOLATILE_META = frozenset({"resourceVersion", "managedFields", "generation"})


def _same_but_volatile(a: Obj, b: Obj) -> bool:
    """Whether two objects are equal but for fields that change on every write, for no-op detection.

    Compares in place: copying both objects only to drop three keys cost more than the rest of a write.
    """
    if {k: v for k, v in a.items() if k not in _VOLATILE_TOP} != {k: v for k, v in b.items() if k not in _VOLATILE_TOP}:
        return False
    meta_a, meta_b = a.get("metadata") or {}, b.get("metadata") or {}
    return {k: v for k, v in meta_a.items() if k not in _VOLATILE_META} == {
        k: v for k, v in meta_b.items() if k not in _VOLATILE_META
    }


def _field_sets(obj: Obj) -> list[Obj]:
    """managedFields without their timestamps."""
    return [{k: v for k, v in e.items() if k != "time"} for e in obj.get("metadata", {}).get("managedFields") or []]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Change:
    """One committed change; the history of these serves watch resumption."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    key: tuple[str, str]  # (group, plural)
    obj: Obj
    old: Obj | None


@dataclasses.dataclass(kw_only=True)
class Watcher:
    key: tuple[str, str]
    namespace: str | None
    labels: patches.Matcher
    fields: patches.Matcher
    queue: asyncio.Queue[tuple[str, Obj]] = dataclasses.field(default_factory=asyncio.Queue)

    def translate(self, change: Change) -> tuple[str, Obj] | None:
        """Map a change to what this watcher sees: selectors turn moves in/out into ADDED/DELETED."""
        if change.key != self.key:
            return None
        new_in = self.accepts(change.obj)
        old_in = change.old is not None and self.accepts(change.old)
        if change.type == "MODIFIED":
            if new_in and old_in:
                return ("MODIFIED", change.obj)
            if new_in:
                return ("ADDED", change.obj)
            if old_in:
                return ("DELETED", change.obj)
            return None
        return (change.type, change.obj) if new_in else None

    def accepts(self, obj: Obj) -> bool:
        ns = obj.get("metadata", {}).get("namespace")
        if self.namespace is not None and ns != self.namespace:
            return False
        return self.labels(obj) and self.fields(obj)


class Store:
    """Objects per resource, one global resourceVersion counter, bounded change history."""

    def __init__(
        self,
        *,
        catalogue: Catalogue | None = None,
        history_size: int = 10_000,
        auto_namespaces: bool = False,
        simulate_controllers: bool = True,
        seed: int | None = None,
        strictness: Strictness | None = None,
    ) -> None:
        self.catalogue = catalogue or Catalogue()
        self.strictness = strictness if strictness is not None else Strictness.from_env()
        #: openAPIV3Schema per served custom resource version, from the CRDs (group, version, plural).
        self._schemas: dict[tuple[str, str, str], Obj] = {}
        #: Called after every committed change (asynchronous controllers subscribe here).
        self.listeners: list[Callable[[Change], None]] = []
        self.auto_namespaces = auto_namespaces
        self.simulate_controllers = simulate_controllers
        self._objects: dict[tuple[str, str], dict[ObjKey, Obj]] = collections.defaultdict(dict)
        self._rv = 0
        self._history: collections.deque[Change] = collections.deque(maxlen=history_size)
        self._forgotten_rv = 0  # changes up to and including this RV are no longer replayable
        self._watchers: list[Watcher] = []
        self._random = random.Random(seed)
        for ns in ("default", "kube-system", "kube-public"):
            self.create(self.info("", "v1", "namespaces"), namespace=None, body={"metadata": {"name": ns}})

    # -- lookups ----------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    def info(self, group: str, version: str, plural: str) -> ResourceInfo:
        info = self.catalogue.find(group, version, plural)
        if info is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return info

    def register_crd(self, crd: Obj) -> list[ResourceInfo]:
        infos = resources_from_crd(crd)
        for info in infos:
            self.catalogue.add(info)
        for version in crd.get("spec", {}).get("versions", []):
            schema = (version.get("schema") or {}).get("openAPIV3Schema")
            key = (crd["spec"]["group"], version["name"], crd["spec"]["names"]["plural"])
            if schema is not None:
                self._schemas[key] = schema
            else:
                self._schemas.pop(key, None)
        return infos

    # -- admission: what the real server checks before anything is stored --------------------

    def _admit(self, info: ResourceInfo, obj: Obj, *, old: Obj | None) -> Obj:
        """Prune, default and validate `obj` (custom resources by their schema), then run admission.

        Returns the object to store; raises the ApiError the real server would answer.
        """
        name = obj.get("metadata", {}).get("name", "")
        strictness = self.strictness
        if strictness.validation:
            errors: list[str] = []
            if info.custom and strictness.custom_resource_schemas:
                schema = self._schemas.get((info.group, info.version, info.plural))
                if schema is not None:
                    obj, errors = schemas.admit_custom_resource(obj, schema)
            if info.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
                errors += schemas.validate_crd(obj)
            errors += rules.validate(info.key, obj, custom=info.custom)
            if errors:
                raise invalid(info, name, errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]")
            try:
                rules.check_size(obj)
            except rules.ObjectTooLarge as e:
                raise ApiError(500, "InternalError", str(e)) from e
        if strictness.owner_references_permission_enforcement:
            refused = rules.owner_references_permission_errors(obj, old)
            if refused:
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{info.qualified} "{name}" is forbidden: {refused[0]}',
                    details={"name": name, "group": info.group, "kind": info.plural},
                )
        return obj

    def _bucket(self, info: ResourceInfo) -> dict[ObjKey, Obj]:
        return self._objects[info.key]

    def _decorate(self, info: ResourceInfo, obj: Obj) -> Obj:
        """A copy of a stored object for a caller, who may change it."""
        result: Obj = clone(obj)
        result["apiVersion"] = info.api_version
        result["kind"] = info.kind
        return result

    @staticmethod
    def _view(info: ResourceInfo, obj: Obj) -> Obj:
        """A stored object with its kind, sharing everything below the top level with the store.

        Only for readers that change nothing (watch events, controllers, patch functions, which build
        new objects): stored objects are never changed in place, every write stores a new one.
        """
        return {**obj, "apiVersion": info.api_version, "kind": info.kind}

    def get(self, info: ResourceInfo, *, namespace: str | None, name: str) -> Obj:
        obj = self._bucket(info).get((namespace or "", name))
        if obj is None:
            raise not_found(info, name)
        return self._decorate(info, obj)

    def list(
        self,
        info: ResourceInfo,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Obj]:
        labels, fields = patches.label_selector(label_selector), patches.field_selector(field_selector)
        bucket = self._bucket(info)
        # The namespace first, then the order by (namespace, name): sorting all of a kind's objects for one
        # namespace's list made every LIST cost the whole store.
        keys = sorted(bucket if namespace is None else (key for key in bucket if key[0] == namespace))
        return [self._decorate(info, bucket[key]) for key in keys if labels(bucket[key]) and fields(bucket[key])]

    # -- writes -----------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _commit(self, info: ResourceInfo, kind: str, obj: Obj, old: Obj | None) -> None:
        change = Change(
            rv=self._rv,
            type=kind,
            key=info.key,
            obj=self._view(info, obj),
            old=self._view(info, old) if old is not None else None,
        )
        if len(self._history) == self._history.maxlen:
            self._forgotten_rv = self._history[0].rv
        self._history.append(change)
        for watcher in self._watchers:
            event = watcher.translate(change)
            if event is not None:
                watcher.queue.put_nowait(event)
        for listener in list(self.listeners):
            listener(change)

    def _check_namespace(self, info: ResourceInfo, namespace: str | None) -> None:
        if not info.namespaced:
            return
        if not namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        ns_info = self.info("", "v1", "namespaces")
        existing = self._bucket(ns_info).get(("", namespace))
        if existing is None:
            if not self.auto_namespaces:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{namespace}" not found',
                    details={"name": namespace, "kind": "namespaces"},
                )
            self.create(ns_info, namespace=None, body={"metadata": {"name": namespace}})
        elif existing["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )

    def _managed(
        self,
        info: ResourceInfo,
        obj: Obj,
        *,
        old: Obj | None,
        manager: str | None,
        operation: str,
        subresource: str | None,
        applied: Any = None,
        force: bool = False,
        requested: Any = None,
    ) -> None:
        """Record the write in `metadata.managedFields` (managed.py); a lenient harness only names the manager.

        `requested` is the managedFields the request's object carried (None when absent, or through a subresource).
        """
        if not manager:
            return
        meta = obj["metadata"]
        if (
            operation == "Apply"
            and isinstance(applied, dict)
            and (applied.get("metadata") or {}).get("managedFields") is not None
        ):
            # structuredmerge.go (Apply): an applied configuration may not name managedFields.
            raise ApiError(400, "BadRequest", "metadata.managedFields must be nil")
        if not self.strictness.managed_fields:
            kept = [
                e
                for e in meta.get("managedFields", [])
                if (e.get("manager"), e.get("operation"), e.get("subresource")) != (manager, operation, subresource)
            ]
            entry: Obj = {"manager": manager, "operation": operation, "apiVersion": info.api_version}
            entry.update({"time": now_iso(), "fieldsType": "FieldsV1", "fieldsV1": {}})
            if subresource:
                entry["subresource"] = subresource
            meta["managedFields"] = [*kept, entry]
            return
        live = list((old or {}).get("metadata", {}).get("managedFields") or [])
        base, reset = managed.requested_entries(requested, live=live) if operation == "Update" else (live, False)
        if reset and old is not None:
            # skipnonapplied.go: an update of an object whose managedFields are empty (here: just reset) is not
            # tracked, so the object is left with none. (Objects the harness seeds without a manager stay tracked.)
            meta.pop("managedFields", None)
            return
        try:
            entries = managed.update_entries(
                base,
                manager=manager,
                operation=operation,
                subresource=subresource,
                api_version=info.api_version,
                now=now_iso(),
                old=old,
                new=obj,
                has_status=info.status,
                applied=applied if isinstance(applied, dict) else None,
                force=force,
            )
        except managed.ApplyConflict as e:
            raise ApiError(
                409,
                "Conflict",
                str(e),
                details={
                    "name": meta.get("name", ""),
                    "group": info.group,
                    "kind": info.plural,
                    "causes": [
                        {
                            "reason": "FieldManagerConflict",
                            "message": f'conflict with "{m}"',
                            "field": managed.render_path(p),
                        }
                        for m, p in e.conflicts
                    ],
                },
            ) from e
        if entries:
            meta["managedFields"] = entries
        else:
            meta.pop("managedFields", None)

    def create(
        self,
        info: ResourceInfo,
        *,
        namespace: str | None,
        body: Any,
        field_manager: str | None = None,
        dry_run: bool = False,
        operation: str = "Update",
    ) -> Obj:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        applied = clone(body) if operation == "Apply" else None
        obj = {k: clone(v) for k, v in body.items() if k not in ("kind", "apiVersion")}
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        body_ns = meta.get("namespace")
        if info.namespaced:
            if body_ns and namespace and body_ns != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            namespace = namespace or body_ns
        else:
            namespace = None
        if not meta.get("name"):
            if meta.get("generateName"):
                alphabet = "bcdfghjklmnpqrstvwxz2456789"
                meta["name"] = meta["generateName"] + "".join(self._random.choice(alphabet) for _ in range(5))
            else:
                raise invalid(info, "", "metadata.name: Required value: name or generateName is required")
        name = meta["name"]
        requested = meta.get("managedFields")
        self._check_namespace(info, namespace)
        if (namespace or "", name) in self._bucket(info):
            raise ApiError(
                409,
                "AlreadyExists",
                f'{info.qualified} "{name}" already exists',
                details={"name": name, "group": info.group, "kind": info.plural},
            )
        for key in (
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
            "selfLink",
        ):
            meta.pop(key, None)
        if info.namespaced:
            meta["namespace"] = namespace
        if info.status or info.custom:
            obj.pop("status", None)  # status is server/controller-owned on creation
        meta["uid"] = str(uuid.UUID(int=self._random.getrandbits(128), version=4))
        meta["creationTimestamp"] = now_iso()
        meta["generation"] = 1
        self._defaults(info, obj)
        obj = self._admit(info, obj, old=None)
        meta = obj["metadata"]
        self._managed(
            info,
            obj,
            old=None,
            manager=field_manager,
            operation=operation,
            subresource=None,
            applied=applied,
            requested=requested,
        )
        if dry_run:
            meta["resourceVersion"] = self.resource_version
            return self._decorate(info, obj)
        meta["resourceVersion"] = self._next_rv()
        self._bucket(info)[(namespace or "", name)] = obj
        self._commit(info, "ADDED", obj, None)
        if info.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self.register_crd(obj)
        self._simulate(info, namespace=namespace, name=name)
        return self._decorate(info, self._bucket(info)[(namespace or "", name)])

    def _defaults(self, info: ResourceInfo, obj: Obj) -> None:
        if info.key == ("", "namespaces"):
            obj["status"] = {"phase": "Active"}
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif info.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            names = obj.get("spec", {}).get("names", {})
            obj["status"] = {
                "acceptedNames": names,
                "storedVersions": [v["name"] for v in obj.get("spec", {}).get("versions", []) if v.get("storage")],
                "conditions": [
                    {
                        "type": "Established",
                        "status": "True",
                        "lastTransitionTime": now_iso(),
                        "reason": "InitialNamesAccepted",
                        "message": "the initial names have been accepted",
                    }
                ],
            }
        elif info.key in (("apps", "deployments"), ("apps", "statefulsets")):
            obj.setdefault("spec", {}).setdefault("replicas", 1)

    def _simulate(self, info: ResourceInfo, *, namespace: str | None, name: str) -> None:
        """A tiny stand-in for the workload controllers: status follows spec immediately."""
        if self.strictness.rollout_controller:
            return  # controllers.py reports rollouts later, in several writes, as a real controller does
        if not self.simulate_controllers or info.key not in (
            ("apps", "deployments"),
            ("apps", "statefulsets"),
        ):
            return
        old = self._bucket(info).get((namespace or "", name))
        if old is None or old["metadata"].get("deletionTimestamp"):
            return
        replicas = old.get("spec", {}).get("replicas", 1)
        status = dict(old.get("status") or {})
        wanted = {
            "observedGeneration": old["metadata"].get("generation", 1),
            "replicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "updatedReplicas": replicas,
        }
        if info.key == ("apps", "statefulsets"):
            wanted["currentReplicas"] = replicas
        if all(status.get(k) == v for k, v in wanted.items()):
            return
        status.update(wanted)
        new = clone(old)
        new["status"] = status
        self._write(info, old=old, new=new, subresource="status", field_manager=None, operation="Update")

    def _write(
        self,
        info: ResourceInfo,
        *,
        old: Obj,
        new: Obj,
        subresource: str | None,
        field_manager: str | None,
        operation: str,
        dry_run: bool = False,
        applied: Any = None,
        force: bool = False,
    ) -> Obj:
        """Turn a client-proposed new state into the stored one; the heart of update semantics."""
        meta_old = old["metadata"]
        name = meta_old["name"]
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        proposed_rv = new.get("metadata", {}).get("resourceVersion")
        if proposed_rv not in (None, "") and str(proposed_rv) != meta_old["resourceVersion"]:
            raise conflict(info, name)
        if new.get("metadata", {}).get("name", name) != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({new['metadata']['name']}) does not match the name on the URL ({name})",
            )

        # fieldmanager.go decodeLiveOrNew: managedFields sent through a subresource are ignored.
        requested = None if subresource else new.get("metadata", {}).get("managedFields")
        if subresource == "status":
            result = {k: clone(v) for k, v in old.items() if k != "status"}
            if "status" in new:
                result["status"] = clone(new["status"])
            else:
                result.pop("status", None)
        else:
            result = clone(new)
            result.pop("kind", None)
            result.pop("apiVersion", None)
            if info.status:  # the main endpoint cannot touch the status when it is a subresource
                if "status" in old:
                    result["status"] = clone(old["status"])
                else:
                    result.pop("status", None)
            meta = result.setdefault("metadata", {})
            for key in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
                "managedFields",
            ):
                if key in meta_old:
                    meta[key] = clone(meta_old[key])
                else:
                    meta.pop(key, None)
            if meta_old.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(meta_old.get("finalizers") or [])
                if added:
                    raise invalid(
                        info,
                        name,
                        "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
                    )

        result["metadata"]["resourceVersion"] = meta_old["resourceVersion"]
        result = self._admit(info, result, old=old)
        self._managed(
            info,
            result,
            old=old,
            manager=field_manager,
            operation=operation,
            subresource=subresource,
            applied=applied,
            force=force,
            requested=requested,
        )
        # A no-op write (no new RV, no watch event) unless the field sets moved, as an Apply of
        # unchanged values does; the timestamps of managedFields alone do not count.
        if _same_but_volatile(result, old) and _field_sets(result) == _field_sets(old):
            return self._decorate(info, old)

        if _spec_part(result) != _spec_part(old):
            result["metadata"]["generation"] = meta_old.get("generation", 1) + 1
        if dry_run:
            return self._decorate(info, result)
        result["metadata"]["resourceVersion"] = self._next_rv()
        obj_key = (meta_old.get("namespace") or "", name)
        if result["metadata"].get("deletionTimestamp") and not result["metadata"].get("finalizers"):
            del self._bucket(info)[obj_key]
            self._commit(info, "DELETED", result, old)
            self._after_delete(info, result)
            return self._decorate(info, result)
        self._bucket(info)[obj_key] = result
        self._commit(info, "MODIFIED", result, old)
        self._simulate(info, namespace=meta_old.get("namespace"), name=name)
        return self._decorate(info, self._bucket(info).get(obj_key, result))

    def _current(self, info: ResourceInfo, namespace: str | None, name: str) -> Obj:
        obj = self._bucket(info).get((namespace or "", name) if info.namespaced else ("", name))
        if obj is None:
            raise not_found(info, name)
        return obj

    def replace(
        self,
        info: ResourceInfo,
        *,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None = None,
        field_manager: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        old = self._current(info, namespace, name)
        if subresource == "scale":
            return self._scale_write(info, old, lambda _: body, field_manager=field_manager, dry_run=dry_run)
        return self._write(
            info,
            old=old,
            new=body,
            subresource=subresource,
            field_manager=field_manager,
            operation="Update",
            dry_run=dry_run,
        )

    def patch(
        self,
        info: ResourceInfo,
        *,
        namespace: str | None,
        name: str,
        body: Any,
        content_type: str,
        subresource: str | None = None,
        field_manager: str | None = None,
        dry_run: bool = False,
        force: bool = False,
    ) -> Obj:
        if content_type == STRATEGIC and info.custom:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{JSON}, {MERGE}, {APPLY}",
            )
        if content_type == APPLY:
            try:
                old = self._current(info, namespace, name)
            except ApiError:
                if subresource:
                    raise
                return self.create(
                    info,
                    namespace=namespace,
                    body=body,
                    field_manager=field_manager,
                    dry_run=dry_run,
                    operation="Apply",
                )
        else:
            old = self._current(info, namespace, name)

        def apply(current: Obj) -> Obj:
            try:
                if content_type == JSON:
                    return patches.json_patch(current, body)
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
                if content_type in (STRATEGIC, APPLY):
                    return cast(Obj, patches.strategic_merge_patch(current, body))
                if content_type == MERGE:
                    if self.strictness.merge_patch_prunes_array_nulls:
                        return cast(Obj, patches.evanphx_merge_patch(current, body))
                    return cast(Obj, patches.merge_patch(current, body))
            except patches.PatchError as e:
                raise ApiError(e.code, "Invalid" if e.code == 422 else "BadRequest", str(e)) from e
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - unsupported content type {content_type!r}",
            )

        if subresource == "scale":
            return self._scale_write(info, old, apply, field_manager=field_manager, dry_run=dry_run)
        new = apply(self._view(info, old))
        return self._write(
            info,
            old=old,
            new=new,
            subresource=subresource,
            field_manager=field_manager,
            operation="Apply" if content_type == APPLY else "Update",
            dry_run=dry_run,
            applied=body if content_type == APPLY else None,
            force=force,
        )

    def delete(
        self,
        info: ResourceInfo,
        *,
        namespace: str | None,
        name: str,
        options: Mapping[str, Any] | None = None,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """Delete or mark for deletion; returns the object and whether it is really gone."""
        old = self._current(info, namespace, name)
        preconditions = (options or {}).get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != old["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                f"UID in object meta: {old['metadata']['uid']}",
            )
        if (
            preconditions.get("resourceVersion")
            and preconditions["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise conflict(info, name)
        key = (old["metadata"].get("namespace") or "", name)
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return self._decorate(info, old), False
            new = clone(old)
            new["metadata"]["deletionTimestamp"] = now_iso()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            if dry_run:
                return self._decorate(info, new), False
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._bucket(info)[key] = new
            self._commit(info, "MODIFIED", new, old)
            return self._decorate(info, new), False
        if dry_run:
            return self._decorate(info, old), True
        gone = self._bucket(info).pop(key)
        gone = clone(gone)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._commit(info, "DELETED", gone, old)
        self._after_delete(info, gone)
        return self._decorate(info, gone), True

    def _after_delete(self, info: ResourceInfo, obj: Obj) -> None:
        if info.key == ("", "namespaces"):  # a namespace takes its content with it
            ns = obj["metadata"]["name"]
            for other in self.catalogue:
                if other.namespaced:
                    for obj_ns, obj_name in list(self._bucket(other)):
                        if obj_ns == ns:
                            self._force_delete(other, ns, obj_name)
        elif info.key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self.catalogue.remove_crd(obj)

    def _force_delete(self, info: ResourceInfo, namespace: str, name: str) -> None:
        gone = clone(self._bucket(info).pop((namespace, name)))
        gone["metadata"]["resourceVersion"] = self._next_rv()
        self._commit(info, "DELETED", gone, gone)

    # -- scale ------------------------------------------------------------------------------

    def scale_of(self, info: ResourceInfo, obj: Obj) -> Obj:
        if not info.scale:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        meta = obj["metadata"]
        selector = patches.field_value(obj, info.label_selector_path.lstrip(".")) if info.label_selector_path else None
        if isinstance(selector, dict):  # a LabelSelector object is rendered as a selector string
            selector = ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
        status: Obj = {"replicas": patches.field_value(obj, info.status_replicas_path.lstrip(".")) or 0}
        if selector:
            status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
            },
            "spec": {"replicas": patches.field_value(obj, info.spec_replicas_path.lstrip(".")) or 0},
            "status": status,
        }

    def _scale_write(
        self,
        info: ResourceInfo,
        old: Obj,
        fn: Callable[[Obj], Any],
        *,
        field_manager: str | None,
        dry_run: bool,
    ) -> Obj:
        new_scale = fn(self.scale_of(info, old))
        if not isinstance(new_scale, dict):
            raise ApiError(400, "BadRequest", "the body of the request was in an unknown format")
        rv = new_scale.get("metadata", {}).get("resourceVersion")
        if rv not in (None, "") and str(rv) != old["metadata"]["resourceVersion"]:
            raise conflict(info, old["metadata"]["name"])
        replicas = (new_scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(info, old["metadata"]["name"], "spec.replicas: must be a non-negative integer")
        new = clone(old)
        node = new
        *parents, leaf = info.spec_replicas_path.lstrip(".").split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = replicas
        new["metadata"].pop("resourceVersion", None)
        # The write is recorded under `subresource: scale` (apiserver handlers/fieldmanager/scalehandler.go maps the
        # Scale's spec.replicas onto the parent's replicas path and keeps the scale updater's own entry).
        result = self._write(
            info,
            old=old,
            new=new,
            subresource="scale",
            field_manager=field_manager,
            operation="Update",
            dry_run=dry_run,
        )
        current = self._bucket(info).get((old["metadata"].get("namespace") or "", old["metadata"]["name"]))
        return self.scale_of(info, current if current is not None and not dry_run else result)

    # -- watching ---------------------------------------------------------------------------

    def watch(
        self,
        info: ResourceInfo,
        *,
        namespace: str | None,
        since: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        send_initial: bool | None = None,
    ) -> Watcher:
        """Register a watcher and pre-fill its queue with the replay; raises 410 if `since` is too old.

        Registration and replay happen in one synchronous step, so no change can slip between them.
        """
        watcher = Watcher(
            key=info.key,
            namespace=namespace,
            labels=patches.label_selector(label_selector),
            fields=patches.field_selector(field_selector),
        )
        if since in (None, "", "0") or send_initial:
            for obj in self.list(
                info, namespace=namespace, label_selector=label_selector, field_selector=field_selector
            ):
                watcher.queue.put_nowait(("ADDED", obj))
        else:
            try:
                rv = int(since)
            except ValueError:
                raise ApiError(400, "BadRequest", f"invalid resource version: {since!r}") from None
            if rv < self._forgotten_rv:
                raise ApiError(410, "Expired", f"too old resource version: {rv} ({self._forgotten_rv + 1})")
            for change in self._history:
                if change.rv > rv:
                    event = watcher.translate(change)
                    if event is not None:
                        watcher.queue.put_nowait(event)
        self._watchers.append(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        if watcher in self._watchers:
            self._watchers.remove(watcher)

    def is_expired(self, since: str) -> bool:
        try:
            return int(since) < self._forgotten_rv
        except ValueError:
            return False

    def compact(self) -> None:
        """Forget the whole change history, as etcd compaction does; old watch RVs then get 410."""
        self._history.clear()
        self._forgotten_rv = self._rv
