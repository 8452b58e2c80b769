"""HTTP face of the emulated Kubernetes API server: routing, watch streams, request log, faults.

Why this shape: the handler subclasses `kmock.RawHandler`, so kmock's request parsing/recording and
its DSL reactions stay available in-process (`harness.handler['patch', kmock.resource(...)] << 500`
is tried before the emulation). kmock's `KubernetesEmulator` itself is not used: its path parser
mistakes `/api/v1/namespaces/NAME` for a namespace prefix, its discovery reports `groupVersion: "/v1"`,
and its object store lacks server-owned metadata, subresources, selectors and watch resumption
(see `store.py`). `kmock.Server` is not used either, because it monkeypatches aiohttp's DNS
resolver process-wide and requires strictly nested exits, which breaks when several harnesses
(e.g. in background threads) stop in arbitrary order; a plain aiohttp `ServerRunner` serves instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import pathlib
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Self, TypeVar

import aiohttp.web
import attrs
import kmock
import yaml

from . import tables
from .controllers import Controllers
from .resources import Catalogue, ResourceInfo, load_yaml_documents
from .store import APPLY, ApiError, Obj, Store, Strictness

T = TypeVar("T")

_ERROR_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Gone",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Route:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_route(path: str) -> Route | None:
    """Resource path -> Route; `/api/v1/namespaces/X` is the namespace X, not a prefix."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3:
        return None
    return Route(
        group=group,
        version=version,
        plural=rest[0],
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource=rest[2] if len(rest) > 2 else None,
    )


def classify(method: str, route: Route | None, query: dict[str, str]) -> str:
    if route is None:
        return "discovery" if method == "GET" else "other"
    if method == "GET":
        if query.get("watch") in ("true", "1"):
            return "watch"
        return "get" if route.name else "list"
    if method == "DELETE":
        return "delete" if route.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "other")


# -- request log ----------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class RequestRecord:
    id: int
    time: float
    method: str
    path: str
    query: dict[str, str]
    verb: str
    group: str | None
    version: str | None
    resource: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    field_manager: str | None
    user_agent: str | None
    content_type: str | None
    status: int | None = None
    duration: float | None = None
    fault: int | None = None
    #: "client" for HTTP requests; the controller's name for writes of the harness's own controllers.
    actor: str = "client"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RequestLog:
    """Every API request, in arrival order; safe to read from other threads (appends are atomic)."""

    def __init__(self) -> None:
        self._records: list[RequestRecord] = []
        self._next_id = 1

    def add(self, record: RequestRecord) -> None:
        self._records.append(record)

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def entries(self, *, since: int | None = None, controllers: bool = False, **filters: Any) -> list[RequestRecord]:
        """Records with id > since whose attributes equal the filters (e.g. verb='patch').

        The harness's own controllers' writes are left out unless `controllers=True`, so a count of
        entries is a count of what clients (the operator) did.
        """
        result = []
        for record in list(self._records):
            if since is not None and record.id <= since:
                continue
            if record.actor != "client" and not controllers:
                continue
            if all(getattr(record, k) == v for k, v in filters.items()):
                result.append(record)
        return result

    def errors(self, *, since: int | None = None) -> list[RequestRecord]:
        return [r for r in self.entries(since=since) if r.status is not None and r.status >= 400]

    def clear(self) -> None:
        self._records.clear()

    @property
    def last_id(self) -> int:
        return self._next_id - 1


# -- fault injection ------------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class FaultRule:
    """Matches requests by any of its non-empty criteria; answers `status` and/or sleeps `delay`."""

    id: int = 0
    methods: list[str] | None = None
    verbs: list[str] | None = None
    resources: list[str] | None = None
    subresources: list[str] | None = None
    namespace: str | None = None
    name: str | None = None
    path_regex: str | None = None
    status: int | None = 500
    reason: str | None = None
    message: str | None = None
    delay: float = 0.0
    probability: float = 1.0
    times: int | None = None  # None = unlimited; decremented per firing, removed at zero
    hits: int = 0

    def matches(self, record: RequestRecord) -> bool:
        return (
            (not self.methods or record.method in [m.upper() for m in self.methods])
            and (not self.verbs or record.verb in self.verbs)
            and (not self.resources or record.resource in self.resources)
            and (not self.subresources or (record.subresource or "") in self.subresources)
            and (self.namespace is None or record.namespace == self.namespace)
            and (self.name is None or record.name == self.name)
            and (self.path_regex is None or re.search(self.path_regex, record.path) is not None)
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Faults:
    def __init__(self, *, seed: int | None = None) -> None:
        self.rules: list[FaultRule] = []
        self._next_id = 1
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def add(self, rule: FaultRule | None = None, **kwargs: Any) -> FaultRule:
        rule = rule or FaultRule(**kwargs)
        with self._lock:
            rule.id = self._next_id
            self._next_id += 1
            self.rules.append(rule)
        return rule

    def remove(self, rule_id: int) -> bool:
        with self._lock:
            before = len(self.rules)
            self.rules = [r for r in self.rules if r.id != rule_id]
            return len(self.rules) != before

    def clear(self) -> None:
        with self._lock:
            self.rules = []

    def pick(self, record: RequestRecord) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(record) and self._random.random() < rule.probability:
                    rule.hits += 1
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self.rules.remove(rule)
                    return rule
        return None


def _manager_from_user_agent(user_agent: str | None) -> str | None:
    """The default field manager: the User-Agent up to its first `/`, at most 128 characters."""
    if not user_agent:
        return None
    return user_agent.split("/", 1)[0][:128] or None


def _json(body: Any, *, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(text=json.dumps(body), status=status, content_type="application/json")


def _status_success(info: ResourceInfo, obj: Obj) -> Obj:
    meta = obj["metadata"]
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": meta["name"], "group": info.group, "kind": info.plural, "uid": meta["uid"]},
    }


# -- the handler ----------------------------------------------------------------------------------


MAX_REQUEST_BODY_BYTES = 3 * 1024 * 1024
"""The API server's request body limit: DefaultMaxRequestBodyBytes (k8s.io/apiserver/pkg/server/config.go),
`--max-request-body-bytes`. aiohttp's own default (1 MiB) would refuse a Secret holding a ConfigMap's 1 MiB
as base64, which a real server stores (etcd's 1.5 MiB object limit is enforced in store.py)."""


def _request_factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> aiohttp.web.BaseRequest:
    return aiohttp.web.BaseRequest(
        message, payload, protocol, writer, task, protocol._loop, client_max_size=MAX_REQUEST_BODY_BYTES
    )


@attrs.define(kw_only=True)
class HarnessHandler(kmock.RawHandler):
    store: Store
    log: RequestLog = attrs.field(factory=RequestLog)
    faults: Faults = attrs.field(factory=Faults)
    bookmark_interval: float = 5.0
    server_address: str = ""
    closing: bool = False
    keep_kmock_requests: bool = False  # kmock's own request list grows unbounded; opt in for DSL assertions

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, ApiError):
            return _json(exc.status(), status=exc.code)
        return _json(ApiError(500, "InternalError", f"harness failure: {exc!r}").status(), status=500)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # kmock's own parser raises on `/api/v1/namespaces` (it expects a name after "namespaces");
        # fall back to an unparsed kmock Request so that such paths still reach the emulation.
        # The parsed form (the body decoded once more, the path guessed) serves only kmock's DSL reactions and
        # its request list; without either, the emulation reads the raw request and parsing is skipped.
        body = await raw_request.read()
        try:
            if not (self._payloads or self.keep_kmock_requests):
                raise LookupError("kmock's parsed request is not needed")
            request = await kmock.Request._parse(raw_request, id=len(self._requests))
        except Exception:
            request = kmock.Request(
                id=len(self._requests),
                method=raw_request.method,
                url=raw_request.url,
                params=dict(raw_request.query),
                headers=dict(raw_request.headers),
                body=body,
                raw_request=raw_request,
            )
        if self.keep_kmock_requests:
            self._requests.append(request)
        return await self._handle(request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        raw = request._raw_request
        assert raw is not None
        if raw.path.startswith("/_harness"):
            return await self._serve_control(raw, request.body)
        query = dict(raw.query)
        route = parse_route(raw.path)
        record = RequestRecord(
            id=self.log.new_id(),
            time=time.time(),
            method=raw.method,
            path=raw.path,
            query=query,
            verb=classify(raw.method, route, query),
            group=route.group if route else None,
            version=route.version if route else None,
            resource=route.plural if route else None,
            subresource=route.subresource if route else None,
            namespace=route.namespace if route else None,
            name=route.name if route else None,
            field_manager=query.get("fieldManager"),
            user_agent=raw.headers.get("User-Agent"),
            content_type=raw.headers.get("Content-Type"),
        )
        self.log.add(record)
        started = time.monotonic()
        try:
            response = await self._respond(request, raw, route, record)
        except ApiError as e:
            response = _json(e.status(), status=e.code)
        except Exception as e:  # keep the server alive and the client informed, like a real 500
            response = _json(ApiError(500, "InternalError", f"harness failure: {e!r}").status(), status=500)
        if record.status is None:
            record.status = response.status
        record.duration = time.monotonic() - started
        return response

    async def _respond(
        self, request: kmock.Request, raw: aiohttp.web.BaseRequest, route: Route | None, record: RequestRecord
    ) -> aiohttp.web.StreamResponse:
        rule = self.faults.pick(record)
        if rule is not None:
            record.fault = rule.id
            if rule.delay:
                await asyncio.sleep(rule.delay)
            if rule.status:
                reason = rule.reason or _ERROR_REASONS.get(rule.status, "InternalError")
                raise ApiError(rule.status, reason, rule.message or f"injected fault #{rule.id}")
        if self._payloads:  # in-process kmock DSL reactions take precedence over the emulation
            try:
                return await super()._handle(request)
            except NotImplementedError:
                pass
        if route is None:
            return self._serve_discovery(raw.path, raw.method)
        return await self._serve_resource(raw, route, record, request.body)

    # -- discovery --

    def _serve_discovery(self, path: str, method: str) -> aiohttp.web.StreamResponse:
        catalogue = self.store.catalogue
        path = path.rstrip("/") or "/"
        if method != "GET":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if path == "/version":
            return _json(
                {
                    "major": "1",
                    "minor": "31",
                    "gitVersion": "v1.31.0-harness",
                    "gitCommit": "harness",
                    "gitTreeState": "clean",
                    "buildDate": "2024-01-01T00:00:00Z",
                    "goVersion": "go1.22",
                    "compiler": "gc",
                    "platform": "linux/amd64",
                }
            )
        if path in ("/healthz", "/livez", "/readyz"):
            return aiohttp.web.Response(text="ok")
        if path == "/openapi/v3" or path.startswith("/openapi/v3/"):
            return _json(self._openapi_v3(path.removeprefix("/openapi/v3").strip("/")))
        if path == "/api":
            return _json(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.server_address}],
                }
            )
        groups = {g: vs for g, vs in catalogue.groups().items() if g}

        def group_body(name: str, versions: list[str]) -> Obj:
            entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
            return {"name": name, "versions": entries, "preferredVersion": entries[0]}

        if path == "/apis":
            return _json(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [group_body(g, vs) for g, vs in groups.items()],
                }
            )
        if path == "/":
            paths = ["/api", "/api/v1", "/apis", "/version", "/healthz"]
            for g, vs in groups.items():
                paths += [f"/apis/{g}"] + [f"/apis/{g}/{v}" for v in vs]
            return _json({"paths": sorted(paths)})
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return _json({"kind": "APIGroup", "apiVersion": "v1", **group_body(parts[1], groups[parts[1]])})
        gv = (
            ("", parts[1])
            if len(parts) == 2 and parts[0] == "api"
            else (parts[1], parts[2])
            if len(parts) == 3 and parts[0] == "apis"
            else None
        )
        if gv is not None:
            infos = catalogue.in_group_version(*gv)
            if infos:
                return _json(
                    {
                        "kind": "APIResourceList",
                        "apiVersion": "v1",
                        "groupVersion": f"{gv[0]}/{gv[1]}" if gv[0] else gv[1],
                        "resources": [entry for info in infos for entry in info.discovery()],
                    }
                )
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _openapi_v3(self, group_version: str) -> Obj:
        """Just enough OpenAPI v3 for `kubectl apply`'s validation: per group version, a PATCH operation
        per kind that takes `fieldValidation`, so kubectl leaves validation to the server (it sends
        `fieldValidation=Strict`) instead of downloading schemas. No schemas are served."""
        groups = self.store.catalogue.groups()
        if not group_version:
            paths = {}
            for group, versions in groups.items():
                for version in versions:
                    gv = f"api/{version}" if not group else f"apis/{group}/{version}"
                    paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={self.store.resource_version}"}
            return {"paths": paths}
        parts = group_version.split("/")
        group, version = ("", parts[1]) if parts[0] == "api" and len(parts) == 2 else (parts[1], parts[-1])
        operations = {}
        for info in self.store.catalogue.in_group_version(group, version):
            prefix = f"/api/{version}" if not group else f"/apis/{group}/{version}"
            scope = "/namespaces/{namespace}" if info.namespaced else ""
            operations[f"{prefix}{scope}/{info.plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": info.kind},
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        if not operations:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes (harness)", "version": "v1.31.0"},
            "paths": operations,
        }

    # -- resources --

    async def _serve_resource(
        self, raw: aiohttp.web.BaseRequest, route: Route, record: RequestRecord, body_bytes: bytes
    ) -> aiohttp.web.StreamResponse:
        store = self.store
        info = store.info(route.group, route.version, route.plural)
        record.resource = info.plural
        if route.subresource is not None and not (
            (route.subresource == "status" and info.status) or (route.subresource == "scale" and info.scale)
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if route.namespace is not None and not info.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        query = record.query
        ns = route.namespace if info.namespaced else None
        dry_run = bool(query.get("dryRun"))
        # Like the real server (fieldmanager's prefixFromUserAgent): without fieldManager, writes are
        # recorded under the User-Agent's first segment; apply requests must name their manager.
        manager = query.get("fieldManager") or _manager_from_user_agent(raw.headers.get("User-Agent"))
        force = query.get("force") in ("true", "1")
        accept = raw.headers.get("Accept", "")
        verb = record.verb

        if verb == "watch":
            return await self._serve_watch(raw, info, route, record)
        if verb in ("list", "get"):
            if verb == "get":
                obj = store.get(info, namespace=ns, name=route.name or "")
                if route.subresource == "scale":
                    return _json(store.scale_of(info, obj))
                if tables.wants_table(accept) and route.subresource is None:
                    return _json(
                        tables.table(
                            info,
                            [obj],
                            resource_version=store.resource_version,
                            include_object=query.get("includeObject", "Metadata"),
                        )
                    )
                return _json(obj)
            return self._serve_list(info, ns, query, accept)

        body: Any = None
        if body_bytes:
            content_type = raw.headers.get("Content-Type", "").split(";")[0].strip()
            try:
                body = yaml.safe_load(body_bytes) if content_type == APPLY else json.loads(body_bytes)
            except (ValueError, yaml.YAMLError) as e:
                raise ApiError(400, "BadRequest", f"the body of the request could not be decoded: {e}") from e

        if verb == "create":
            if route.name is not None:
                raise ApiError(405, "MethodNotAllowed", "POST to a named object is not allowed")
            return _json(
                store.create(info, namespace=ns, body=body, field_manager=manager, dry_run=dry_run),
                status=201,
            )
        if verb == "update":
            return _json(
                store.replace(
                    info,
                    namespace=ns,
                    name=route.name or "",
                    body=body,
                    subresource=route.subresource,
                    field_manager=manager,
                    dry_run=dry_run,
                )
            )
        if verb == "patch":
            content_type = raw.headers.get("Content-Type", "").split(";")[0].strip()
            if content_type == APPLY and not query.get("fieldManager"):
                raise ApiError(400, "BadRequest", "PATCH, application/apply-patch+yaml: fieldManager is required")
            return _json(
                store.patch(
                    info,
                    namespace=ns,
                    name=route.name or "",
                    body=body,
                    content_type=content_type,
                    subresource=route.subresource,
                    field_manager=manager,
                    dry_run=dry_run,
                    force=force,
                )
            )
        if verb == "delete":
            obj, gone = store.delete(
                info,
                namespace=ns,
                name=route.name or "",
                options=body if isinstance(body, dict) else None,
                dry_run=dry_run,
            )
            return _json(_status_success(info, obj) if gone and not info.custom else obj)
        if verb == "deletecollection":
            deleted = []
            for obj in store.list(
                info,
                namespace=ns,
                label_selector=query.get("labelSelector"),
                field_selector=query.get("fieldSelector"),
            ):
                deleted.append(
                    store.delete(
                        info,
                        namespace=obj["metadata"].get("namespace"),
                        name=obj["metadata"]["name"],
                        dry_run=dry_run,
                    )[0]
                )
            return _json(
                {
                    "kind": f"{info.kind}List",
                    "apiVersion": info.api_version,
                    "metadata": {"resourceVersion": store.resource_version},
                    "items": deleted,
                }
            )
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _serve_list(
        self, info: ResourceInfo, ns: str | None, query: dict[str, str], accept: str
    ) -> aiohttp.web.StreamResponse:
        try:
            items = self.store.list(
                info,
                namespace=ns,
                label_selector=query.get("labelSelector"),
                field_selector=query.get("fieldSelector"),
            )
        except ValueError as e:
            raise ApiError(400, "BadRequest", str(e)) from e
        rv = self.store.resource_version
        # Pagination: the continue token is the offset, pinned to nothing — good enough for chunked readers.
        offset = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        end = offset + limit if limit else len(items)
        page, more = items[offset:end], end < len(items)
        meta: Obj = {"resourceVersion": rv, "continue": str(end) if more else ""}
        if more:
            meta["remainingItemCount"] = len(items) - end
        if tables.wants_table(accept):
            result = tables.table(
                info, page, resource_version=rv, include_object=query.get("includeObject", "Metadata")
            )
            result["metadata"].update(meta)
            return _json(result)
        return _json({"kind": f"{info.kind}List", "apiVersion": info.api_version, "metadata": meta, "items": page})

    async def _serve_watch(
        self, raw: aiohttp.web.BaseRequest, info: ResourceInfo, route: Route, record: RequestRecord
    ) -> aiohttp.web.StreamResponse:
        query = record.query
        ns = route.namespace if info.namespaced else None
        field_selector = query.get("fieldSelector")
        if route.name:  # watching a single object is a watch with a name field selector
            field_selector = ",".join(filter(None, [field_selector, f"metadata.name={route.name}"]))
        send_initial = query.get("sendInitialEvents") == "true"
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        response = aiohttp.web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        try:
            watcher = self.store.watch(
                info,
                namespace=ns,
                since=query.get("resourceVersion"),
                label_selector=query.get("labelSelector"),
                field_selector=field_selector,
                send_initial=send_initial,
            )
        except ApiError as e:
            if e.code != 410:
                raise
            await response.prepare(raw)  # like the real server: HTTP 200, then an ERROR event
            await response.write(json.dumps({"type": "ERROR", "object": e.status()}).encode() + b"\n")
            await response.write_eof()
            return response
        except ValueError as e:
            raise ApiError(400, "BadRequest", str(e)) from e
        record.status = 200
        await response.prepare(raw)
        initial = watcher.queue.qsize() if send_initial else 0
        deadline = time.monotonic() + timeout if timeout is not None else None
        try:
            if send_initial:
                for _ in range(initial):
                    await self._emit(response, *watcher.queue.get_nowait())
                if bookmarks:
                    await self._emit(response, "BOOKMARK", self._bookmark(info, initial_end=True))
            while not self.closing:
                wait = self.bookmark_interval
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        break
                try:
                    kind, obj = await asyncio.wait_for(watcher.queue.get(), timeout=max(wait, 0.001))
                except TimeoutError:
                    if bookmarks and (deadline is None or deadline > time.monotonic()):
                        await self._emit(response, "BOOKMARK", self._bookmark(info))
                    continue
                if kind == "CLOSE":
                    break
                await self._emit(response, kind, obj)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(watcher)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    def _bookmark(self, info: ResourceInfo, *, initial_end: bool = False) -> Obj:
        meta: Obj = {"resourceVersion": self.store.resource_version}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": info.kind, "apiVersion": info.api_version, "metadata": meta}

    @staticmethod
    async def _emit(response: aiohttp.web.StreamResponse, kind: str, obj: Obj) -> None:
        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    def close_watches(self) -> None:
        self.closing = True
        for watcher in list(self.store._watchers):
            watcher.queue.put_nowait(("CLOSE", {}))

    # -- control endpoints for out-of-process tests and benchmarks --

    async def _serve_control(self, raw: aiohttp.web.BaseRequest, body_bytes: bytes) -> aiohttp.web.StreamResponse:
        path, method = raw.path.rstrip("/"), raw.method
        if path == "/_harness/requests" and method == "GET":
            since = int(raw.query["since"]) if raw.query.get("since") else None
            filters = {
                k: raw.query[k]
                for k in ("verb", "resource", "method", "namespace", "name", "subresource", "actor")
                if k in raw.query
            }
            controllers = raw.query.get("controllers") in ("true", "1") or "actor" in filters
            records = [r.as_dict() for r in self.log.entries(since=since, controllers=controllers, **filters)]
            return _json({"last_id": self.log.last_id, "items": records})
        if path == "/_harness/requests" and method == "DELETE":
            self.log.clear()
            return _json({"last_id": self.log.last_id, "items": []})
        if path == "/_harness/faults" and method == "GET":
            return _json({"items": [r.as_dict() for r in self.faults.rules]})
        if path == "/_harness/faults" and method == "POST":
            try:
                spec = json.loads(body_bytes or b"{}")
                spec.pop("id", None)
                spec.pop("hits", None)
                rule = self.faults.add(FaultRule(**spec))
            except (TypeError, ValueError) as e:
                return _json({"error": str(e)}, status=400)
            return _json(rule.as_dict(), status=201)
        if path == "/_harness/faults" and method == "DELETE":
            self.faults.clear()
            return _json({"items": []})
        if (m := re.fullmatch(r"/_harness/faults/(\d+)", path)) and method == "DELETE":
            return _json({"removed": self.faults.remove(int(m.group(1)))})
        if path == "/_harness/compact" and method == "POST":
            self.store.compact()
            return _json({"resourceVersion": self.store.resource_version})
        return _json({"error": f"unknown harness endpoint {method} {path}"}, status=404)


# -- lifecycle: async and threaded ----------------------------------------------------------------


def kubeconfig_text(url: str, *, namespace: str = "default") -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [{"name": "harness", "cluster": {"server": url}}],
            "users": [{"name": "harness", "user": {"token": "harness-token"}}],
            "contexts": [
                {
                    "name": "harness",
                    "context": {"cluster": "harness", "user": "harness", "namespace": namespace},
                }
            ],
            "current-context": "harness",
        },
        sort_keys=False,
    )


class Harness:
    """The emulated API server as an async context manager: `async with Harness(...) as h: h.url`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        crds: Iterable[pathlib.Path | str] = (),
        seed: Iterable[pathlib.Path | str] = (),
        kubeconfig: pathlib.Path | str | None = None,
        auto_namespaces: bool = False,
        simulate_controllers: bool = True,
        history_size: int = 10_000,
        bookmark_interval: float = 5.0,
        random_seed: int | None = None,
        strictness: Strictness | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.store = Store(
            catalogue=Catalogue(),
            history_size=history_size,
            auto_namespaces=auto_namespaces,
            simulate_controllers=simulate_controllers,
            seed=random_seed,
            strictness=strictness,
        )
        self.handler = HarnessHandler(
            store=self.store, faults=Faults(seed=random_seed), bookmark_interval=bookmark_interval
        )
        self.controllers = Controllers(store=self.store, log=self.handler.log)
        self.kubeconfig = pathlib.Path(kubeconfig) if kubeconfig else None
        self._runner: aiohttp.web.ServerRunner | None = None
        self.load_crds(crds)
        self.seed(seed)

    @property
    def log(self) -> RequestLog:
        return self.handler.log

    @property
    def faults(self) -> Faults:
        return self.handler.faults

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def load_crds(self, paths: Iterable[pathlib.Path | str]) -> None:
        """Register CRDs from YAML files/dirs; they also become CRD objects, as if applied."""
        self.apply([doc for doc in load_yaml_documents(paths) if doc.get("kind") == "CustomResourceDefinition"])

    def seed(self, paths: Iterable[pathlib.Path | str]) -> None:
        self.apply(list(load_yaml_documents(paths)))

    def apply(self, docs: list[Obj]) -> list[Obj]:
        """Create objects (CRDs and namespaces first); existing objects are left as they are."""
        order = {"CustomResourceDefinition": 0, "Namespace": 1}
        created = []
        for doc in sorted(docs, key=lambda d: order.get(d.get("kind", ""), 2)):
            info = self.store.catalogue.by_kind(doc.get("apiVersion", ""), doc.get("kind", ""))
            if info is None:
                raise ValueError(f"unknown kind: {doc.get('apiVersion')} {doc.get('kind')}")
            ns = (doc.get("metadata", {}).get("namespace") or "default") if info.namespaced else None
            try:
                created.append(self.store.create(info, namespace=ns, body=doc))
            except ApiError as e:
                if e.code != 409:
                    raise
        return created

    async def __aenter__(self) -> Self:
        await self.handler.__aenter__()
        self._runner = aiohttp.web.ServerRunner(
            aiohttp.web.Server(self.handler, request_factory=_request_factory),
            handle_signals=False,
            shutdown_timeout=1.0,
        )
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.port
        self.handler.server_address = f"{self.host}:{self.port}"
        if self.kubeconfig is not None:
            self.kubeconfig.parent.mkdir(parents=True, exist_ok=True)
            self.kubeconfig.write_text(kubeconfig_text(self.url), encoding="utf-8")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.controllers.close()
        self.handler.close_watches()
        await asyncio.sleep(0)  # let the watch handlers see their close markers and finish
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.handler.__aexit__(None, None, None)


class HarnessThread:
    """The same server on a background thread with its own loop, for plain synchronous tests.

    Store access from the test thread goes through `call()`, which runs the function on the loop,
    so the store keeps its single-threaded invariants.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.harness: Harness | None = None

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="k8s-harness", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        async def main() -> None:
            try:
                self._loop = asyncio.get_running_loop()
                self._stop = asyncio.Event()
                async with Harness(**self._kwargs) as harness:
                    self.harness = harness
                    self._ready.set()
                    await self._stop.wait()
            except BaseException as e:
                self._error = e
                self._ready.set()

        asyncio.run(main())

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        assert self._loop is not None

        async def invoke() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(timeout=30)

    @property
    def _h(self) -> Harness:
        assert self.harness is not None, "the harness thread is not started"
        return self.harness

    @property
    def url(self) -> str:
        return self._h.url

    @property
    def kubeconfig(self) -> pathlib.Path | None:
        return self._h.kubeconfig

    @property
    def store(self) -> Store:
        return self._h.store

    @property
    def log(self) -> RequestLog:
        return self._h.log

    @property
    def faults(self) -> Faults:
        return self._h.faults

    def apply(self, docs: list[Obj]) -> list[Obj]:
        return self.call(self._h.apply, docs)
