"""Watched targets: the objects this operator holds changes on, kept current by watches, not polls.

During an incident a change can be reverted by someone else (Argo CD self-heal, a person) at any
moment. Reading every target at every poll costs a GET per target per poll and leaves a revert in
place for up to a whole `pollInterval`; a watch sees it at once and costs nothing while nothing
changes. So the drift check (`reverted`) reads this cache, and an event on a watched object wakes the
policies holding it, whose loop runs the drift step of `executing.execute` at once.

What is watched is exactly what is held: one watch per target object, selected on the server by
`fieldSelector=metadata.name=NAME` in its namespace, started when a policy records a change it must
keep in place (`track`) and stopped when the change is rolled back or given up on. No namespace- or
cluster-wide cache of ConfigMaps or workloads is ever built: memory grows with the targets held by
open incidents (a few KiB each), not with the cluster. A label on held targets would allow one watch
per kind, but adding one is a write to every target and a field GitOps tools would see as drift.

Each watch is a thread blocked on its stream (the `kubernetes` client is blocking, as `Kube` is):
a LIST by name gives the object and a resourceVersion, then a watch from there; an expired version
(410) or a closed stream lists again. Stopping a watch shuts its socket, so its thread ends at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes.watch.watch import iter_resp_lines

from .kube import JSON, Kube, KubeError, load_api_client, path

log = logging.getLogger("stampede.watching")

WATCH_SECONDS = 300
"""Server-side timeout of one watch request; the stream is then resumed from the last version seen."""
RETRY_SECONDS = 2.0


class Reader(Protocol):
    """Where a drift check reads a target from."""

    def read(self, kind: str, namespace: str, name: str) -> JSON: ...


@dataclass(frozen=True)
class ApiReader:
    """A GET per read: for one-off uses of the actuators (tests, tools) that keep no watches."""

    kube: Kube

    def read(self, kind: str, namespace: str, name: str) -> JSON:
        return self.kube.get(path(kind, namespace, name))


@dataclass(frozen=True, order=True)
class TargetKey:
    """One watched object."""

    kind: str
    namespace: str
    name: str


Listener = Callable[[], None]
"""Called (in a watch thread) when a watched object of its owner changed; must not block."""


@dataclass
class _Entry:
    owners: set[str] = field(default_factory=set)
    synced: bool = False
    obj: JSON | None = None
    """The object as last seen; None once synced means it does not exist."""
    watch: _Watch | None = None


class TargetWatches:
    """The cache of held targets and their watches, shared by every policy of one operator."""

    def __init__(self, kube: Kube, *, watch_seconds: int = WATCH_SECONDS) -> None:
        self.kube = kube
        self.watch_seconds = watch_seconds
        self._lock = threading.Lock()
        self._entries: dict[TargetKey, _Entry] = {}
        self._held: dict[str, frozenset[TargetKey]] = {}
        self._listeners: dict[str, Listener] = {}

    @classmethod
    def connect(cls) -> TargetWatches:
        """Watches on their own client: each holds a connection for as long as it runs."""
        configuration = load_api_client().configuration
        configuration.connection_pool_maxsize = 4096  # every open watch's connection goes back to the pool
        return cls(Kube(k8s.ApiClient(configuration)))

    # -- what is watched -----------------------------------------------------------------------------
    def track(self, owner: str, keys: Iterable[TargetKey], listener: Listener) -> None:
        """Watch exactly `keys` for `owner` (replacing what it watched before); an empty set releases it."""
        wanted = frozenset(keys)
        start: list[_Watch] = []
        stop: list[_Watch] = []
        with self._lock:
            before = self._held.get(owner, frozenset())
            if wanted:
                self._held[owner] = wanted
                self._listeners[owner] = listener
            else:
                self._held.pop(owner, None)
                self._listeners.pop(owner, None)
            for key in wanted - before:
                entry = self._entries.setdefault(key, _Entry())
                entry.owners.add(owner)
                if entry.watch is None:
                    entry.watch = _Watch(self, key)
                    start.append(entry.watch)
            for key in before - wanted:
                entry = self._entries[key]
                entry.owners.discard(owner)
                if not entry.owners:
                    del self._entries[key]
                    if entry.watch is not None:
                        stop.append(entry.watch)
        for watch in stop:
            watch.stop()
        for watch in start:
            watch.start()

    def release(self, owner: str) -> None:
        self.track(owner, (), lambda: None)

    def close(self) -> None:
        with self._lock:
            watches = [e.watch for e in self._entries.values() if e.watch is not None]
            self._entries.clear()
            self._held.clear()
            self._listeners.clear()
        for watch in watches:
            watch.stop()

    # -- reading -------------------------------------------------------------------------------------
    def read(self, kind: str, namespace: str, name: str) -> JSON:
        """The object as last seen; `KubeError` 404 when it does not exist, 0 when it is not (yet) watched."""
        with self._lock:
            entry = self._entries.get(TargetKey(kind, namespace, name))
            if entry is None or not entry.synced:
                raise KubeError(0, f"{kind} {namespace}/{name} is not watched yet")
            if entry.obj is None:
                raise KubeError(404, f"{kind} {namespace}/{name} not found")
            return entry.obj

    def stats(self) -> dict[str, int]:
        """Watches open and the size of the objects cached (the JSON bytes, a lower bound of their memory)."""
        with self._lock:
            objects = [e.obj for e in self._entries.values() if e.obj is not None]
            return {
                "watches": len(self._entries),
                "owners": len(self._held),
                "cached_objects": len(objects),
                "cached_bytes": sum(len(json.dumps(o, separators=(",", ":"))) for o in objects),
            }

    # -- fed by the watches --------------------------------------------------------------------------
    def _seen(self, watch: _Watch, obj: JSON | None) -> None:
        with self._lock:
            entry = self._entries.get(watch.key)
            if entry is None or entry.watch is not watch:  # stopped meanwhile: not ours to write
                return
            entry.synced, entry.obj = True, obj
            listeners = [self._listeners[o] for o in entry.owners if o in self._listeners]
        for listener in listeners:
            try:
                listener()
            except Exception:  # a listener's bug must not end the watch
                log.exception("listener of %s failed", watch.key)


class _Watch:
    """One object's LIST-then-WATCH loop in a daemon thread."""

    def __init__(self, cache: TargetWatches, key: TargetKey) -> None:
        self.cache = cache
        self.key = key
        self.stopping = threading.Event()
        self._response: Any = None
        self._thread = threading.Thread(
            target=self._run, name=f"stampede-watch-{key.kind}-{key.namespace}-{key.name}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):  # already closed
                response.shutdown()  # unblocks the read in the watch thread

    @property
    def _query(self) -> dict[str, str]:
        return {"fieldSelector": f"metadata.name={self.key.name}"}

    def _run(self) -> None:
        collection = path(self.key.kind, self.key.namespace)
        while not self.stopping.is_set():
            try:
                listing = self.cache.kube.get(collection, query=self._query)
                items = listing.get("items") or []
                self.cache._seen(self, items[0] if items else None)
                version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
                while version and not self.stopping.is_set():
                    version = self._stream(collection, version)
            except KubeError as error:
                log.warning("watch of %s %s/%s: %s", self.key.kind, self.key.namespace, self.key.name, error.message)
                self.stopping.wait(RETRY_SECONDS)
            except Exception as error:  # a broken stream: list again after a pause
                if not self.stopping.is_set():
                    log.warning("watch of %s %s/%s broke: %s", self.key.kind, self.key.namespace, self.key.name, error)
                    self.stopping.wait(RETRY_SECONDS)

    def _stream(self, collection: str, version: str) -> str:
        """Follow one watch request; returns the version to resume from, or "" to list again."""
        api = self.cache.kube.api
        query = [
            *self._query.items(),
            ("watch", "1"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(self.cache.watch_seconds)),
        ]
        _, url, headers, _, _ = api.param_serialize(
            method="GET",
            resource_path=collection,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        self.cache.kube.counter.add("WATCH")
        rest = api.call_api("GET", url, header_params=headers, _request_timeout=(10, self.cache.watch_seconds + 30))
        response = rest.response
        self._response = response
        try:
            if self.stopping.is_set():
                return ""
            if not 200 <= response.status <= 299:
                raise KubeError(response.status, f"watch refused ({response.status})")
            for line in iter_resp_lines(response):  # type: ignore[no-untyped-call]
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":  # 410 Gone: the version is too old; list again
                    return ""
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED"):
                    self.cache._seen(self, obj)
                elif kind == "DELETED":
                    self.cache._seen(self, None)
            return version
        finally:
            self._response = None
            response.release_conn()


__all__ = ["ApiReader", "Reader", "TargetKey", "TargetWatches"]
