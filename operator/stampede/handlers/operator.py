"""kopf wiring: one daemon per StampedePolicy, rollback on deletion, startup settings.

Importing this module registers the handlers with kopf's default registry; `stampede run`
imports it and starts kopf.

Why the daemon does not hold kopf's finalizer: kopf puts a finalizer on every object with a
daemon, so deleting any policy would hang while the operator is down (forever, if it was
uninstalled). Instead the policy carries `stampede.aurum.io/rollback` only while it has changes
applied: an idle policy deletes at once; a policy with changes waits for the operator to roll them
back (or for a user to remove the finalizer, leaving the annotated changes in place).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import socket
import sys
from collections.abc import Awaitable, Mapping
from typing import Any

import kopf

from ..actuators.kube import Kube, KubeError, load_api_client
from ..actuators.policies import FINALIZER, Policies
from ..actuators.targets import Actuators
from ..actuators.watching import TargetWatches
from ..api import GROUP, PLURAL, VERSION
from ..api.reasons import Reason
from ..settings import SettingsError, load_settings
from ..sources.prometheus import PrometheusSource
from . import incidents, metrics, storm
from . import templates as _templates  # importing registers the template indices
from .config import OperatorConfig
from .runner import PolicyRunner, Shared

log = logging.getLogger("stampede")
ANNOTATION_PREFIX = "stampede.aurum.io"
_deleted: set[str] = set()


#: kopf sets `eventTime`, so the API server holds the message to 1024 *bytes* (legacyValidateEvent in
#: kubernetes pkg/apis/core/validation/events.go); kopf's own cut counts characters, too many for UTF-8.
EVENT_MESSAGE_BYTES = 1024


def fit_event_message(message: str, limit: int = EVENT_MESSAGE_BYTES) -> str:
    """The longest prefix of `message` whose UTF-8 encoding fits in `limit` bytes, cut between characters."""
    encoded = message.encode("utf-8")
    if len(encoded) <= limit:
        return message
    # Decoding with "ignore" drops the partial character a byte cut may leave at the end.
    return encoded[:limit].decode("utf-8", errors="ignore")


def _emit(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    # kopf builds the event's object reference from these fields alone; the runner passes any mapping.
    reference = kopf.RawBody(apiVersion=body.get("apiVersion") or "", kind=body.get("kind") or "")
    if "metadata" in body:
        reference["metadata"] = body["metadata"]
    kopf.event(kopf.Body(reference), type=type_, reason=reason, message=fit_event_message(message))


def credentials_problem() -> str | None:
    """Why no Kubernetes client can be configured (neither in-cluster nor a kubeconfig), or None.

    Checked by `stampede run` before kopf starts: kopf would log a traceback and retry its startup
    every 60 s for ever, which a person trying the operator on a laptop reads as a hang.
    """
    try:
        load_api_client()
    except Exception as exc:  # ConfigException, but also a kubeconfig that is not YAML or names no context
        detail = " ".join(str(exc).split()) or type(exc).__name__
        return (
            f"no usable Kubernetes credentials: not in a pod (no in-cluster config) and no usable kubeconfig "
            f"({detail}); set KUBECONFIG or create ~/.kube/config"
        )
    return None


def _shared(memo: Any) -> Shared:
    shared: Shared = memo["shared"]
    return shared


EVENT_COMPONENT = "stampede-operator"


def configure_event_source(settings: kopf.OperatorSettings) -> None:
    """Events name this operator, not kopf: `kubectl describe` shows `From: stampede-operator`.

    The instance is the pod (its hostname), so with two replicas an event says which one acted; the API
    server requires it when `eventTime` is set and caps it at 128 characters.
    """
    settings.posting.reporting_component = EVENT_COMPONENT
    settings.posting.reporting_instance = (socket.gethostname() or EVENT_COMPONENT)[:128]
    settings.posting.event_name_prefix = f"{EVENT_COMPONENT}-"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Operator settings, clients and the worker threads for blocking client calls."""
    # `stampede run` checked the settings before starting kopf and hands them over in the memo; run any
    # other way (`kopf run`), the operator reads them here, and bad ones stop it rather than being retried.
    try:
        config: OperatorConfig = memo.get("settings") or load_settings()
    except SettingsError as error:
        raise kopf.PermanentError("; ".join(error.lines)) from None
    # kopf calls on.delete handlers only while *its* finalizer blocks the deletion, so the rollback
    # finalizer must be kopf's finalizer; `roll_back_on_delete`'s `when` filter keeps kopf from adding
    # it to (or stripping it from) policies on its own: only the runner adds and removes it.
    metrics.configure(
        per_policy_poll_duration=config.metrics_per_policy_poll_duration, signal_values=config.metrics_signal_values
    )
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    configure_event_source(settings)
    settings.watching.server_timeout = 300
    # The kubernetes and Prometheus clients block; each call runs in a thread. The default pool
    # (cores + 4) would queue a thousand policies behind six threads.
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="stampede-io")
    )
    kube = Kube(load_api_client())
    # Drift is seen by watches on the held targets, not by a GET per target per poll.
    watches = TargetWatches.connect()
    metrics.watch_cache(watches.stats)
    if config.max_concurrent_incidents and not _storm_index_served:
        # Run other than by `stampede run` (which serves the index when the breaker is on): the count then
        # holds only what the loops decided since this start, not incidents opened before it.
        log.warning("storm breaker on without the policy index: incidents open before this start are not counted")
    memo["shared"] = Shared(
        config=config,
        actuators=Actuators(
            kube,
            max_replicas=config.max_replicas,
            journal_namespace=config.journal_namespace,
            reader=watches,
            require_opt_in=config.require_target_opt_in,
        ),
        policies=Policies(kube),
        source=PrometheusSource(max_workers=32),
        emit=incidents.capture(_emit),
        watches=watches,
        status_pool=concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="stampede-status"),
        refresh_pool=concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="stampede-refresh"),
    )


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    if "shared" in memo:
        shared = _shared(memo)
        shared.source.close()
        for pool in (shared.status_pool, shared.refresh_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        if shared.watches is not None:
            shared.watches.close()


STORM_INDEX = "stampede_open_incidents"


async def stampede_open_incidents(
    *, name: str, namespace: str | None, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], str]:
    """The storm breaker's count, from every policy's status: complete before any poll, so it survives a restart."""
    return storm.index_entry(namespace=namespace or "", name=name, status=status)


_storm_index_served = False


def serve_storm_index(registry: kopf.OperatorRegistry | None = None) -> None:
    """Index every policy's incident state for the storm breaker; `stampede run` calls it only when the breaker is on.

    A kopf index over the policies holds every policy's handlers back until all of them are indexed, through one
    toggle per policy whose every change wakes every policy already waiting: quadratic in the number of policies
    at startup (py-spy, `bench/scale.py --profile`: a third of a 1,500-policy start's CPU, most of a 10,000-policy
    one). With the breaker off (STAMPEDE_MAX_CONCURRENT_INCIDENTS=0, the default) nothing reads the index.
    """
    global _storm_index_served
    if _storm_index_served:
        return
    kopf.index(GROUP, VERSION, PLURAL, id=STORM_INDEX, registry=registry)(stampede_open_incidents)
    _storm_index_served = True


@kopf.daemon(GROUP, VERSION, PLURAL, id="poll", cancellation_timeout=30)
async def poll(
    *,
    body: kopf.Body,
    name: str,
    namespace: str | None,
    uid: str,
    stopped: kopf.DaemonStopped,
    memo: Any,
    **kwargs: Any,
) -> None:
    """The policy's poll loop; the body is kopf's live view, so spec edits apply at the next tick."""
    shared = _shared(memo)
    shared.incidents.index = kwargs.get(STORM_INDEX)  # kopf passes every index by its name (None: not served)
    del kwargs  # kopf's other keyword arguments: not held for the daemon's whole life (~1 KiB per policy)
    # One string per namespace, not one per policy: it is kept by the runner, its metric series and its problems.
    runner = PolicyRunner(shared=shared, namespace=sys.intern(namespace or ""), name=name)
    loop = asyncio.get_running_loop()
    try:
        while not stopped and uid not in _deleted:
            delay = await _guarded(runner.tick(body), namespace=namespace, name=name)
            # Between ticks, an event on a held target runs the drift step at once (within a second of a revert).
            deadline = loop.time() + delay
            while not stopped and uid not in _deleted and (left := deadline - loop.time()) > 0:
                if not await runner.wait(stopped, left):
                    break
                await _guarded(runner.correct_drift(), namespace=namespace, name=name)
    finally:
        runner.stop_watching()
        _deleted.discard(uid)


async def _guarded(step: Awaitable[float | None], *, namespace: str | None, name: str) -> float:
    """One step of a policy's loop; returns the seconds to wait before its next tick."""
    try:
        return await step or 0.0
    except KubeError as error:
        log.warning("%s/%s: poll failed: %s", namespace, name, error.message)
        return 5.0
    except Exception:  # one policy's bug must never take the operator or other policies down
        log.exception("%s/%s: poll failed", namespace, name)
        return 15.0


# kopf would add its own finalizer for the daemon; see the module docstring for why it must not.
_registry = kopf.get_default_registry()
_registry._spawning._handlers[:] = [  # pinned kopf==1.45.2: the registry has no public setter
    dataclasses.replace(h, requires_finalizer=False) for h in _registry._spawning._handlers
]


def _is_deletion(type: str, **_: Any) -> bool:
    # kopf checks this filter before invoking the handler; every status write comes back as a MODIFIED event,
    # and invoking the handler for each cost a few per cent of the operator's steady-state CPU (py-spy).
    return type == "DELETED"


@kopf.on.event(GROUP, VERSION, PLURAL, when=_is_deletion)
async def forget_deleted(*, type: str, uid: str, name: str, namespace: str | None, memo: Any, **_: Any) -> None:
    """Stop the loop of a policy that is gone (no finalizer means kopf may not stop the daemon itself)."""
    if type == "DELETED":
        _deleted.add(uid)
        metrics.forget(namespace or "", name)
        incidents.forget(namespace or "", name)
        _templates.STORE.forget(namespace or "", name)
        if "shared" in memo:
            _shared(memo).incidents.forget((namespace or "", name))


def _has_rollback_finalizer(body: kopf.Body, **_: Any) -> bool:
    return FINALIZER in (body.get("metadata", {}).get("finalizers") or [])


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_has_rollback_finalizer, backoff=5)
async def roll_back_on_delete(
    *, body: kopf.Body, name: str, namespace: str | None, retry: int, memo: Any, **_: Any
) -> None:
    """Deleting a policy with applied changes rolls them all back first, then lets it go."""
    shared = _shared(memo)
    namespace = namespace or ""
    runner = PolicyRunner(shared=shared, namespace=namespace, name=name)
    # The event's body may predate the daemon's last status write; read the object fresh.
    try:
        fresh = await asyncio.to_thread(shared.policies.read, namespace, name)
    except KubeError as error:
        if error.not_found:  # already released and gone; a stale event brought us here again
            return
        raise
    failed = await runner.roll_back_all(fresh)
    if failed and retry + 1 < shared.config.deletion_attempts:
        raise kopf.TemporaryError(f"rollback incomplete: {', '.join(failed)}", delay=5)
    if failed:
        _emit(
            body,
            "Warning",
            Reason.ROLLBACK_SKIPPED,
            f"Gave up rolling back {', '.join(failed)} after {retry + 1} attempts; the changes stay in place "
            f"(annotated stampede.aurum.io/applied-by={name}) and the policy is released.",
        )
    # The rollback finalizer is kopf's finalizer: kopf removes it once this handler succeeds. Removing it
    # here too would delete the object under kopf, which then re-runs this handler on a stale event.
