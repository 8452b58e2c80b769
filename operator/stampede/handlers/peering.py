"""kopf peering made safe to install: the operator creates its own peering object and says when it is stuck.

Why this exists: kopf (1.45) never creates the `ClusterKopfPeering` / `KopfPeering` object, and with a
named peering it treats peering as mandatory: an instance without its object stays paused for ever,
and says so only at DEBUG. One `kubectl apply -k` on an empty cluster cannot create that object
(its CRD is not mapped yet in the same run), so the shipped two-replica install never acted.

So, at startup and every few seconds after, this module:
- creates the peering object when it is missing (RBAC: `create` on exactly that kind; a 409 from a
  replica that won the race is success). kopf's peering watcher then sees it ADDED and elects.
- reads the peers' heartbeats and derives this instance's state the way kopf decides it:
  `active` (no live peer of higher or equal priority), `standby` (a live peer of higher priority
  works: the normal state of the second replica), or `stuck` (paused with nobody working: the
  object or its CRD is missing, or a peer has the same priority).
- reports it: the gauge `stampede_peering_paused_seconds{state}`, a WARNING once stuck for longer
  than a peering lifetime (repeated every ten lifetimes while it lasts), and `/readyz` on the
  metrics port failing while stuck. A standby stays ready: a not-ready standby would block every
  rolling update (`maxUnavailable: 0`) and the PodDisruptionBudget.

The peering lifetime (how long a silent peer counts as alive, so the upper bound of a failover
after a crash) is `stampede run --peering-lifetime` (default 20 s; kopf's own default is 60 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from ..actuators.kube import Kube, KubeError, load_api_client
from . import metrics

log = logging.getLogger("stampede.peering")

DEFAULT_LIFETIME = 20
"""Seconds. kopf refreshes a heartbeat 5-10 s before it expires, so anything much below 10 s means a
PATCH every second; 20 s bounds a failover after a crash at about 20 s plus one poll."""

ACTIVE, STANDBY, STUCK = "active", "standby", "stuck"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PeeringSetup:
    """What `stampede run` chose; kopf keeps its own copy in its settings but hides its identity."""

    name: str
    identity: str
    priority: int
    lifetime: int
    clusterwide: bool
    namespaces: tuple[str, ...] = ()


@dataclasses.dataclass(kw_only=True)
class PeeringState:
    state: str = STUCK
    reason: str = "peering not checked yet"
    since: float = dataclasses.field(default_factory=time.monotonic)
    warned_at: float | None = None


_setup: PeeringSetup | None = None
_state = PeeringState()


def configure(setup: PeeringSetup | None) -> None:
    """Called by `stampede run` before kopf starts; None means --standalone (no peering to watch)."""
    global _setup, _state
    _setup = setup
    _state = PeeringState()
    if readiness_problem not in metrics.readiness_checks:
        metrics.readiness_checks.append(readiness_problem)


def readiness_problem() -> str | None:
    """Why this instance is not ready, or None. Only a stuck pause counts (see the module docstring)."""
    if _setup is None or _state.state != STUCK:
        return None
    paused = time.monotonic() - _state.since
    if paused <= _setup.lifetime:
        return None
    return f"paused for {paused:.0f}s with no active peer: {_state.reason}"


def _path(setup: PeeringSetup, namespace: str | None, name: str | None = None) -> str:
    base = "/apis/kopf.dev/v1"
    base += "/clusterkopfpeerings" if namespace is None else f"/namespaces/{namespace}/kopfpeerings"
    return f"{base}/{name}" if name else base


def _scopes(setup: PeeringSetup) -> list[str | None]:
    # Glob patterns (`-n 'team-*'`) name no single namespace to create an object in; kopf resolves
    # them itself, and their peering objects must be installed by hand.
    if setup.clusterwide:
        return [None]
    return [ns for ns in setup.namespaces if not any(c in ns for c in "*?[!,")]


def ensure_object(kube: Kube, setup: PeeringSetup, namespace: str | None) -> Mapping[str, Any] | str:
    """The peering object (created if missing), or why it cannot be had."""
    where = "cluster-wide" if namespace is None else f"in {namespace}"
    kind = "ClusterKopfPeering" if namespace is None else "KopfPeering"
    try:
        # `list` rather than `get`: kopf's watcher needs list anyway, so no extra RBAC verb.
        found = kube.get(_path(setup, namespace), query={"fieldSelector": f"metadata.name={setup.name}"})
    except KubeError as error:
        if error.not_found:
            return f"the {kind} CRD is not installed (kopf.dev/v1)"
        return f"cannot list {kind} objects {where}: {error.message}"
    items = [item for item in found.get("items") or [] if item.get("metadata", {}).get("name") == setup.name]
    if items:
        existing: Mapping[str, Any] = items[0]
        return existing
    body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": setup.name}}
    if namespace is not None:
        body["metadata"] = {"name": setup.name, "namespace": namespace}
    try:
        created: Mapping[str, Any] = kube.create(_path(setup, namespace), body)
    except KubeError as error:
        if error.conflict:  # another replica created it between our list and our create
            return {"metadata": {"name": setup.name}, "status": {}}
        return f"cannot create {kind} {setup.name} {where}: {error.message}"
    log.info("Created the missing %s %s %s, so that the replicas can elect an active one.", kind, setup.name, where)
    return created


def judge(setup: PeeringSetup, body: Mapping[str, Any], *, now: dt.datetime) -> tuple[str, str]:
    """kopf's election rule (engines/peering.py) applied to one peering object: state and reason."""
    higher: list[str] = []
    same: list[str] = []
    for identity, info in (body.get("status") or {}).items():
        if identity == setup.identity or not isinstance(info, Mapping):
            continue
        try:
            lastseen = dt.datetime.fromisoformat(str(info["lastseen"]))
            lifetime = int(info.get("lifetime", 60))
            priority = int(info.get("priority", 0))
        except (KeyError, ValueError, TypeError):
            continue
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=dt.UTC)
        if lastseen + dt.timedelta(seconds=lifetime) <= now:
            continue  # dead: kopf ignores it (and cleans it up)
        if priority > setup.priority:
            higher.append(identity)
        elif priority == setup.priority:
            same.append(identity)
    if same:
        return STUCK, f"peers with the same priority {setup.priority}: {', '.join(sorted(same))} (all pause)"
    if higher:
        return STANDBY, f"standing by for {', '.join(sorted(higher))}"
    return ACTIVE, "no live peer of higher priority"


def observe(setup: PeeringSetup, kube: Kube, *, now: dt.datetime) -> tuple[str, str]:
    """One check of every peering object this instance peers through; the worst state wins."""
    results: list[tuple[str, str]] = []
    for namespace in _scopes(setup):
        found = ensure_object(kube, setup, namespace)
        if isinstance(found, str):
            results.append((STUCK, found))
        else:
            results.append(judge(setup, found, now=now))
    if not results:
        return ACTIVE, "no peering object to watch (namespace patterns only)"
    for wanted in (STUCK, STANDBY):
        for state, reason in results:
            if state == wanted:
                return state, reason
    return results[0]


def record(state: str, reason: str, *, lifetime: int, now: float) -> None:
    """Update the gauge, the readiness and the log from one observation."""
    global _state
    previous = _state
    if state != previous.state:
        # active → standby (or back) is a new pause or its end; standby → stuck keeps its start:
        # the instance has been paused all along.
        keep = previous.state != ACTIVE and state != ACTIVE
        _state = PeeringState(state=state, reason=reason, since=previous.since if keep else now)
        if state == STANDBY:
            log.info("Peering: %s.", reason)
        elif state == ACTIVE and previous.warned_at is not None:
            log.warning("Peering: active again after %.0fs paused.", now - previous.since)
    else:
        _state.reason = reason
    paused = 0.0 if state == ACTIVE else now - _state.since
    for other in (ACTIVE, STANDBY, STUCK):
        if other != state:
            with contextlib.suppress(KeyError):
                metrics.PEERING_PAUSED.remove(other)
    metrics.PEERING_PAUSED.labels(state).set(round(paused, 1))
    due = _state.warned_at is None or now - _state.warned_at >= 10 * lifetime
    if state == STUCK and paused > lifetime and due:
        _state.warned_at = now
        log.warning(
            "Paused for %.0fs (longer than the peering lifetime, %ds) and nobody is acting: %s. "
            "Policies are not polled until this is fixed.",
            paused,
            lifetime,
            reason,
        )


async def check(setup: PeeringSetup, kube: Kube) -> None:
    try:
        state, reason = await asyncio.to_thread(observe, setup, kube, now=dt.datetime.now(dt.UTC))
    except Exception as error:  # the watchdog must outlive any surprise; it reports, never acts
        state, reason = STUCK, f"peering check failed: {error}"
    record(state, reason, lifetime=setup.lifetime, now=time.monotonic())


async def watch(setup: PeeringSetup, kube: Kube) -> None:
    """Forever: bootstrap the object and report the state, a few times per lifetime."""
    interval = max(1.0, min(5.0, setup.lifetime / 4))
    while True:
        await asyncio.sleep(interval)
        await check(setup, kube)


@kopf.on.startup()
async def start_peering_watch(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Startup runs before kopf's peering starts, so the object usually exists before kopf first looks."""
    if _setup is None:
        return
    settings.peering.lifetime = _setup.lifetime
    kube = Kube(load_api_client())
    await check(_setup, kube)
    memo["peering_watch"] = asyncio.create_task(watch(_setup, kube), name="stampede peering watch")


@kopf.on.cleanup()
async def stop_peering_watch(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("peering_watch")
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
