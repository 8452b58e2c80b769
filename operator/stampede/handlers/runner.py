"""One policy's poll loop: read the body, query Prometheus, decide, execute, report.

kopf gives every policy its own daemon, so a slow Prometheus or API call of one policy never
delays another, and the poll interval is re-read from the live body at every tick. All the state
needed to continue lives in `status`; the only memory kept here is what must not be repeated
(event de-duplication, the last status written) and is rebuilt harmlessly after a restart.

One tick, in order: skip a policy being deleted (its deletion handler rolls back), resolve the spec,
settle the journal (only when status holds one: a write was under way when the operator stopped),
read, `decide`, `execute` in a worker thread (each change journalled in status before its target
write), post the events, keep the incident's StampedeIncident record current (`incidents.track`, which
can never cost the tick its status write), then `after_tick` (metrics first, then notifications to every
target, sent in the background), and only then write status and release the finalizer, so nothing a
scrape sees contradicts a status already written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from ..actuators.kube import KubeError
from ..actuators.policies import FINALIZER, Policies
from ..actuators.targets import Actuators, PolicyActuator, Target
from ..actuators.watching import TargetKey, TargetWatches
from ..api.reasons import Reason
from ..api.spec import PolicySpec
from ..api.status import AppliedChange, PolicyStatus, State
from ..engine import Decision, decide, drift, journal, outcomes, set_condition
from ..engine.decide import Controls, awaited_workloads
from ..engine.outcomes import Outcome
from ..executing import Execution, execute, read_rollouts, reconcile, roll_back_all
from ..sources.allowlist import redact_url
from ..sources.prometheus import Auth, Endpoint, PrometheusSource, Reading, ReadingKind
from . import incidents, metrics
from .config import OperatorConfig
from .notifying import Notifier
from .problems import EventSink, Problems
from .reporting import Listener, TickReport, count_outcomes, update_metrics
from .scheduling import Schedule
from .specs import InvalidSpec, resolve_spec, spec_error_text
from .status_writes import StatusWrites, refresh_offset
from .storm import Incidents

log = logging.getLogger("stampede")
HOLD_ANNOTATION = "stampede.aurum.io/hold"
ROLLBACK_NOW_ANNOTATION = "stampede.aurum.io/rollback-now"


@dataclass
class Shared:
    """What every policy's loop shares: clients, settings, the event sink."""

    config: OperatorConfig
    actuators: Actuators
    policies: Policies
    source: PrometheusSource
    emit: EventSink
    watches: TargetWatches | None = None
    """The watch cache of held targets: events on them wake `PolicyRunner.correct_drift` (None: no watches)."""
    incidents: Incidents = field(default_factory=Incidents)
    """Every served policy's incident state, for the storm breaker."""
    status_pool: concurrent.futures.Executor | None = None
    """Threads for status writes alone (None: the loop's default executor). With a slow API server, thousands of
    pending status writes would otherwise hold every thread the ticks' reads and target writes need."""
    refresh_pool: concurrent.futures.Executor | None = None
    """Threads for refresh-only status writes (None: `status_pool`): a transition write never queues behind
    thousands of background refreshes for a thread."""


@dataclass(slots=True)  # thousands of these live at once: no per-instance __dict__
class PolicyRunner:
    shared: Shared
    namespace: str
    name: str
    schedule: Schedule = field(default_factory=Schedule)
    invalid_generation: int | None = None
    background: set[asyncio.Task[None]] = field(default_factory=set)
    intents: list[AppliedChange] = field(default_factory=list)
    """The changes this tick journalled in status before writing their targets."""
    current: PolicyStatus | None = None
    """The status as this loop last computed it (written or still to be written)."""
    problems: Problems = field(init=False)
    writes: StatusWrites = field(init=False)
    listeners: list[Listener] = field(init=False)
    """Who hears about each tick after it acted: metrics first, then notifications."""
    notifier: Notifier = field(init=False)
    body: Mapping[str, Any] = field(default_factory=dict)
    """The live body of the latest tick (what events are posted on)."""
    spec: PolicySpec | None = None
    """The spec of the latest valid tick (what a drift correction between ticks runs under)."""
    generation: int | None = None
    watched: frozenset[TargetKey] = frozenset()
    """The targets this policy holds changes on and watches for reverts."""
    _drifted: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    rollback_now_consumed: bool = False
    """The rollback-now annotation was acted on and its removal sent; kopf's live body may still show it."""

    def __post_init__(self) -> None:
        self.problems = Problems(self.namespace, self.name, self.shared.emit)
        self.writes = StatusWrites(refresh_seconds=self.shared.config.status_refresh_seconds)
        self.notifier = Notifier(
            policies=self.shared.policies,
            emit=self.shared.emit,
            note=functools.partial(incidents.note, self.shared.policies.kube),
            pagerduty_url=self.shared.config.pagerduty_url,
            allowed_webhook_urls=self.shared.config.allowed_webhook_urls,
            background=self.background,
        )
        self.listeners = [update_metrics, self._notify]

    @property
    def drifted(self) -> asyncio.Event:
        """Set (from a watch thread) when a watched target changed: the loop runs `correct_drift` at once.

        Made when first needed (a policy that holds a change): an Event is ~0.8 KiB, and most policies are idle.
        """
        if self._drifted is None:
            self._drifted = asyncio.Event()
        return self._drifted

    @property
    def target(self) -> Target:
        return Target(namespace=self.namespace, policy=self.name)

    @property
    def actuator(self) -> PolicyActuator:
        return self.shared.actuators.bind(self.target, intend=self._intend)

    # -- the tick -------------------------------------------------------------------------------
    async def tick(self, body: Mapping[str, Any], *, now: datetime | None = None) -> float:
        """One poll; returns the seconds to sleep before the next one."""
        started = time.monotonic()
        self.body = body
        if _deleting(body):  # the deletion handler rolls back; this loop must not race it, nor query for it
            return 1.0
        generation = (body.get("metadata") or {}).get("generation")
        status = self._status(body)
        now = now or self.schedule.tick_time(datetime.now(UTC))
        try:
            spec = resolve_spec(body, self.shared.config)
            self._refuse_credentials_in_the_clear(spec)
        except InvalidSpec as problem:
            await self._report_invalid(body, status, str(problem), generation=generation, now=now)
            return 5.0  # the live body picks up a fixed spec; look again soon
        self.invalid_generation = None
        self.spec, self.generation = spec, generation
        self.writes.first_refresh_early = refresh_offset(
            f"{self.namespace}/{self.name}",
            interval=spec.poll_interval.total_seconds(),
            refresh=self.shared.config.status_refresh_seconds,
        )
        if status.journal:  # a write under way when the operator stopped (or a target unreadable since)
            status = await self._reconcile(body, spec, status, now=now)
        self.intents = []

        readings, errors = await self._read(spec, now=now)
        rollouts = await asyncio.to_thread(read_rollouts, status, self.actuator) if awaited_workloads(status) else {}
        controls = self._controls(body)
        # Nothing awaits between reading the storm count and recording this decision in it (see storm.py).
        key = (self.namespace, self.name)
        storm = self.shared.incidents.view(key, limit=self.shared.config.max_concurrent_incidents)
        decision = decide(
            spec=spec,
            status=status,
            readings=readings,
            now=now,
            errors=errors,
            generation=generation,
            rollouts=rollouts,
            controls=controls,
            storm=storm,
        )
        self.shared.incidents.note(key, decision.status)
        for event in decision.events:
            self.problems.event(body, event)
        execution: Execution = await asyncio.to_thread(
            execute, decision, self.actuator, spec=spec, now=now, hold=self._hold
        )
        self.problems.record(body, execution)
        new = self.problems.conditions(spec, self._settled(execution.status), generation=generation, now=now)
        new = await incidents.track(self.shared.policies.kube, body, spec, decision, new, readings=readings, now=now)
        self.current = new
        self.watch_targets(spec, new)
        self.after_tick(
            TickReport(
                namespace=self.namespace,
                policy=self.name,
                spec=spec,
                old=status,
                new=new,
                events=decision.events,
                done=execution.done,
                readings=readings,
                now=now,
            )
        )
        await self._write(new, now=now, force=bool(decision.events))
        if decision.rollback_now_done and controls.rollback_now:
            await self._call(self.shared.policies.remove_annotation, self.namespace, self.name, ROLLBACK_NOW_ANNOTATION)
            self.rollback_now_consumed = True
        if not new.applied and new.state == State.IDLE and FINALIZER in _finalizers(body):
            await self._forget_journals(spec, new)  # once per incident, as its last change is rolled back
            await asyncio.to_thread(self.shared.policies.set_finalizer, self.namespace, self.name, present=False)
        metrics.observe_poll(self.namespace, self.name, time.monotonic() - started)
        return self.schedule.plan(spec, decision, now=now)

    # -- drift, seen by the watches --------------------------------------------------------------
    def watch_targets(self, spec: PolicySpec, status: PolicyStatus) -> None:
        """Watch the targets of the changes drift correction keeps in place, and only those."""
        watches = self.shared.watches
        if watches is None:
            return
        keys: frozenset[TargetKey] = frozenset()
        if drift.corrects_drift(spec, status):
            keys = frozenset(
                TargetKey(c.kind.value, self.namespace, c.name) for c in status.applied if drift.watched(c)
            )
        if keys != self.watched:
            self.loop = self.loop or asyncio.get_running_loop()
            _ = self.drifted  # made here, in the loop's thread, before a watch thread can set it
            watches.track(f"{self.namespace}/{self.name}", keys, self._target_changed)
            self.watched = keys

    def _target_changed(self) -> None:
        """A watched target changed (called in its watch thread)."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.drifted.set)

    def stop_watching(self) -> None:
        if self.shared.watches is not None and self.watched:
            self.shared.watches.release(f"{self.namespace}/{self.name}")
        self.watched = frozenset()

    async def correct_drift(self, *, now: datetime | None = None) -> None:
        """Between ticks: the drift step of `execute` alone, after a watched target changed.

        Reads the watch cache only; a change still in place costs nothing, a reverted one is re-applied
        (or given up on) through the same path as at a tick, and the result is written at once.
        """
        self.drifted.clear()
        spec, status = self.spec, self.current
        if spec is None or status is None or not self.watched or not drift.corrects_drift(spec, status):
            return
        now = now or datetime.now(UTC)
        execution = await asyncio.to_thread(execute, Decision(status=status), self.actuator, spec=spec, now=now)
        if not execution.done:
            return
        self.problems.record(self.body, execution)
        new = self.problems.conditions(spec, execution.status, generation=self.generation, now=now)
        new = new.model_copy(update={"last_poll_time": status.last_poll_time})  # this was no poll
        self.current = new
        self.watch_targets(spec, new)
        self.after_tick(
            TickReport(
                namespace=self.namespace,
                policy=self.name,
                spec=spec,
                old=status,
                new=new,
                events=(),
                done=execution.done,
                readings={},
                now=now,
            )
        )
        await self._write(new, now=now, force=True)

    async def wait(self, stopped: Any, seconds: float) -> bool:
        """Sleep until the next tick, or until stopped; True when woken early because a watched target changed."""
        if not self.watched:  # nothing to be woken for: the plain wait (no tasks for idle policies)
            await stopped.wait(seconds)
            return False

        async def until_stopped() -> None:
            await stopped.wait()

        waits = {asyncio.ensure_future(self.drifted.wait()), asyncio.ensure_future(until_stopped())}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return self.drifted.is_set() and not stopped

    def after_tick(self, report: TickReport) -> None:
        """The one place a tick's results fan out (metrics, notifications, ...), before its status is written."""
        for listener in self.listeners:
            listener(report)

    def _controls(self, body: Mapping[str, Any]) -> Controls:
        """The manual-control annotations; a rollback-now already carried out is not carried out twice."""
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        rollback_now = str(annotations.get(ROLLBACK_NOW_ANNOTATION, "")).lower() == "true"
        if not rollback_now:
            self.rollback_now_consumed = False
        return Controls(
            hold=str(annotations.get(HOLD_ANNOTATION, "")).lower() == "true",
            rollback_now=rollback_now and not self.rollback_now_consumed,
        )

    def _status(self, body: Mapping[str, Any]) -> PolicyStatus:
        if self.current is None:
            # Only the first tick trusts the body's status: kopf's live body lags behind this loop's
            # own status writes, and this loop is the status's only writer while it runs.
            raw_status = dict(body.get("status") or {})
            self.current = _parse_status(raw_status)
            # What was written, as the diff base: the parsed status's own wire form when it equals the body's (the
            # same diffs), whose strings are the parsed status's, rather than a part of kopf's body kept alive
            # after kopf has moved on to newer bodies (a copy of every idle policy's status after a restart).
            wire = self.current.wire()
            written = wire if wire == raw_status else raw_status
            # The refresh clock resumes from the last write (its lastPollTime): a restart rewrites no unchanged status.
            self.writes.resume(written, last_poll_time=self.current.last_poll_time)
        return self.current

    def _hold(self) -> Outcome | None:
        """The rollback finalizer, taken before the first change (runs in execute's worker thread)."""
        try:
            self.shared.policies.set_finalizer(self.namespace, self.name, present=True)
        except KubeError as error:
            return outcomes.hold_failed(finalizer=FINALIZER, problem=error.message)
        return None

    async def _report_invalid(
        self, body: Mapping[str, Any], status: PolicyStatus, message: str, *, generation: int | None, now: datetime
    ) -> None:
        conditions = set_condition(
            status.conditions,
            type_="Ready",
            status=False,
            reason=Reason.INVALID_SPEC,
            message=message,
            now=now,
            generation=generation,
        )
        status = status.model_copy(update={"conditions": conditions, "observed_generation": generation})
        self.current = status
        if self.invalid_generation != generation:
            self.invalid_generation = generation
            self.shared.emit(body, "Warning", Reason.INVALID_SPEC, f"Policy {self.name} is invalid: {message}")
        await self._write(status, now=now, force=False)

    async def _read(self, spec: PolicySpec, *, now: datetime) -> tuple[dict[str, float | None], dict[str, str]]:
        queries = {s.name: s.query for s in spec.signals}
        try:
            auth = await self._auth(spec)
        except KubeError as error:
            unknown = Reading.unknown(ReadingKind.CREDENTIALS, f"Prometheus credentials unavailable: {error.message}")
            metrics.count_unknown(dict.fromkeys(queries, unknown), namespace=self.namespace, policy=self.name)
            return dict.fromkeys(queries), dict.fromkeys(queries, unknown.summary or "")
        url = spec.prometheus.url or self.shared.config.prometheus_url
        assert url is not None
        interval = spec.poll_interval.total_seconds()
        round_key = (interval, math.floor(now.timestamp() / interval))
        results = await self.shared.source.read(
            Endpoint(url=url, auth=auth), queries, timeout=spec.query_timeout.total_seconds(), round_key=round_key
        )
        metrics.count_unknown(results, namespace=self.namespace, policy=self.name)
        readings = {name: r.value for name, r in results.items()}
        errors = {name: r.summary or "unknown" for name, r in results.items() if r.value is None}
        return readings, errors

    def _refuse_credentials_in_the_clear(self, spec: PolicySpec) -> None:
        """Credentials go over verified https only; the models check a policy's own URL, this the default."""
        p = spec.prometheus
        if not (p.bearer_token_secret_ref or p.basic_auth_secret_ref):
            return
        which = "bearerTokenSecretRef" if p.bearer_token_secret_ref else "basicAuthSecretRef"
        url = p.url or self.shared.config.prometheus_url or ""
        if not url.lower().startswith("https://"):
            raise InvalidSpec(
                f"spec.prometheus.{which}: credentials are sent over https only, and the Prometheus URL "
                f"{redact_url(url)!r} is not https"
            )
        if p.insecure_skip_verify:
            raise InvalidSpec(f"spec.prometheus.{which}: credentials are never sent with insecureSkipVerify: true")

    async def _auth(self, spec: PolicySpec) -> Auth:
        p = spec.prometheus
        read = self.shared.policies.read_secret
        token = basic = ca = None
        if p.bearer_token_secret_ref:
            token = await self._call(
                read, self.namespace, p.bearer_token_secret_ref.name, p.bearer_token_secret_ref.key
            )
        if p.basic_auth_secret_ref:
            user = await self._call(read, self.namespace, p.basic_auth_secret_ref.name, "username")
            password = await self._call(read, self.namespace, p.basic_auth_secret_ref.name, "password")
            basic = (user, password)
        if p.ca_secret_ref:
            ca = await self._call(read, self.namespace, p.ca_secret_ref.name, p.ca_secret_ref.key)
        return Auth(bearer_token=token, basic=basic, ca_pem=ca, insecure_skip_verify=p.insecure_skip_verify)

    async def _reconcile(
        self, body: Mapping[str, Any], spec: PolicySpec, status: PolicyStatus, *, now: datetime
    ) -> PolicyStatus:
        """Hold the journalled changes that reached their targets, drop the others (the adoption rule)."""
        execution = await asyncio.to_thread(reconcile, spec, status, self.actuator, now=now)
        self.problems.record(body, execution)
        self.current = execution.status
        return execution.status

    def _settled(self, status: PolicyStatus) -> PolicyStatus:
        """The journal as the tick leaves it: the entries of applies that did not end in `applied`.

        A write reported failed may still have landed (a timeout after the server took it), or an apply
        was dropped because its restart failed; its entry stays, so the next tick finds out before anything
        is re-planned against the values it set. Entries `reconcile` kept (a target it could not read) stay too.
        """
        held = {c.action for c in status.applied}
        fresh = {e.action for e in self.intents}
        entries = [*(e for e in status.journal if e.action not in fresh), *self.intents]
        return status.model_copy(update={"journal": [e for e in entries if e.action not in held]})

    async def _forget_journals(self, spec: PolicySpec, status: PolicyStatus) -> None:
        """Nothing is held any more: delete the journal Secrets of the policy's configMap actions.

        Each is deleted with its rollback already; this finds the ones no status entry refers to (the operator
        stopped between writing one and recording the intent), by exact name, once per incident and at
        deletion. Journal entries not yet settled keep theirs (their write may have landed on a target that
        could not be read).
        """
        pending = {e.action for e in status.journal}
        names = [a.name for p in spec.phases for a in p.actions if a.config_map is not None and a.name not in pending]
        for problem in await asyncio.to_thread(self.shared.actuators.forget_journals, self.target, names):
            log.warning("%s/%s: %s", self.namespace, self.name, problem)

    def _intend(self, change: AppliedChange) -> str | None:
        """Journal a change in status before its target is written (runs in execute's worker thread).

        Returns why it could not be, and then the target is not written: a change whose originals are
        not recorded first could not be rolled back exactly after a crash.
        """
        if change in self.intents:  # a retry (after a 409) of a write already journalled as it is
            return None
        entries = [*(e for e in self.intents if e.action != change.action), change]
        fresh = {e.action for e in entries}
        stored = [*(e for e in self._unrecorded() if e.action not in fresh), *entries]
        problem = journal.too_large(self.current or PolicyStatus(), stored)
        if problem is not None:
            return problem
        wire = [e.model_dump(mode="json", by_alias=True, exclude_none=True) for e in stored]
        try:
            self.shared.policies.write_journal(self.namespace, self.name, wire)
        except KubeError as error:
            return f"its originals could not be recorded in status first ({error.message}); nothing was changed"
        self.intents = entries
        # The tick's own status write then clears the journal as a difference from what was written.
        self.writes.journalled(wire)
        return None

    def _unrecorded(self) -> list[AppliedChange]:
        """What the stored status may not account for yet, which a journal write must therefore keep.

        The journal write replaces `status.journal` on the server. Kept in it: the entries `reconcile` left
        (a target it could not read), and held changes no status write has recorded yet (adopted at this
        restart, or applied at a tick whose status write failed). Dropping them there before the tick's
        status write lands would lose them to a crash in between: the next restart would find neither an
        entry nor a record, and re-plan the change over the values it set, taking them for the originals.
        """
        current = self.current or PolicyStatus()
        with self.writes.lock:
            written = (self.writes.last_written or {}).get("applied") or []
        unwritten = [
            c for c in current.applied if c.model_dump(mode="json", by_alias=True, exclude_none=True) not in written
        ]
        return [*current.journal, *unwritten]

    # -- notifications --------------------------------------------------------------------------
    def _notify(self, report: TickReport) -> None:
        """Send the runbook's messages to the policy's targets in the background; remediation never waits."""
        self.notifier.dispatch(report, self.body)

    async def _write(self, status: PolicyStatus, *, now: datetime, force: bool) -> None:
        """Write status as due: a transition awaited here, a refresh-only write in the background (status_writes)."""
        policies, namespace, name = self.shared.policies, self.namespace, self.name

        def blocking(old: dict[str, Any], new: dict[str, Any]) -> object:
            return policies.write_status(namespace, name, old=old, new=new)

        async def patch(old: dict[str, Any], new: dict[str, Any]) -> object:
            return await asyncio.get_running_loop().run_in_executor(
                self.shared.status_pool, functools.partial(blocking, old, new)
            )

        await self.writes.write(
            status,
            patch,
            now=now,
            force=force,
            who=f"{namespace}/{name}",
            refresh_patch=blocking,
            refresh_pool=self.shared.refresh_pool or self.shared.status_pool,
        )

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking client call in a worker thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- deletion -------------------------------------------------------------------------------
    async def roll_back_all(self, body: Mapping[str, Any], *, now: datetime | None = None) -> list[str]:
        """Undo every applied change at once, newest first (the user asked for the policy to go).

        Returns the changes that could not be undone; their records stay in status for the next try.
        """
        status = _parse_status(dict(body.get("status") or {}))
        now = now or datetime.now(UTC)
        try:
            spec: PolicySpec | None = resolve_spec(body, self.shared.config)
        except InvalidSpec:
            spec = None  # the records' own (pattern-checked) names, on targets that must carry the mark
        execution = await asyncio.to_thread(roll_back_all, status, self.actuator, now=now, spec=spec)
        if spec is not None and not execution.status.applied:
            await self._forget_journals(spec, execution.status)
        self.problems.record(body, execution)
        count_outcomes(self.namespace, self.name, execution.done)
        if self.writes.last_written is None:
            self.writes.last_written = dict(body.get("status") or {})
        await self._write(execution.status, now=now, force=True)
        return [f"{c.action} ({c.kind} {c.name})" for c in execution.status.applied]


def _parse_status(raw: Mapping[str, Any]) -> PolicyStatus:
    try:
        return PolicyStatus.model_validate(raw)
    except ValidationError as error:
        # A status edited by hand must not stop the loop; what cannot be parsed is started afresh,
        # but applied changes are kept whenever they parse, so nothing is lost for rollback.
        log.error("status could not be parsed (%s); keeping the applied changes that parse", error)
        applied = []
        for item in raw.get("applied") or []:
            try:
                applied.append(AppliedChange.model_validate(item))
            except ValidationError:
                continue
        return PolicyStatus(applied=applied, state=State.ROLLING_BACK if applied else State.IDLE)


def _deleting(body: Mapping[str, Any]) -> bool:
    return bool((body.get("metadata") or {}).get("deletionTimestamp"))


def _finalizers(body: Mapping[str, Any]) -> list[str]:
    return list((body.get("metadata") or {}).get("finalizers") or [])


__all__ = ["HOLD_ANNOTATION", "ROLLBACK_NOW_ANNOTATION", "InvalidSpec", "PolicyRunner", "Shared", "spec_error_text"]
