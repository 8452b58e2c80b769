"""One policy's poll loop: read the body, query Prometheus, decide, act, report.

kopf gives every policy its own daemon, so a slow Prometheus or API call of one policy never
delays another, and the poll interval is re-read from the live body at every tick. All the state
needed to continue lives in `status`; the only memory kept here is what must not be repeated
(event de-duplication, the last status written) and is rebuilt harmlessly after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from ..actuators.kube import KubeError
from ..actuators.policies import FINALIZER, Policies
from ..actuators.targets import Actuators, Outcome, Target
from ..api.spec import Mode, PolicySpec, Severity
from ..api.status import AppliedChange, IncidentStatus, PolicyStatus, State
from ..engine import Decision, Event, decide, record_applied, record_undone, set_condition
from ..engine.decide import incident_id_for
from ..linting import validation_lines
from ..notifiers import messages
from ..notifiers.webhook import post as webhook_post
from ..sources.prometheus import Auth, Endpoint, PrometheusSource, check_url_allowed
from . import incidents, metrics
from .config import OperatorConfig

log = logging.getLogger("stampede")
MAX_DRIFT_REVERTS = 3
MIN_DELAY = 0.2
EARLY = timedelta(milliseconds=100)
MAX_LATE = timedelta(seconds=5)
EventSink = Callable[[Mapping[str, Any], str, str, str], None]
"""(body, type, reason, message) → posts a Kubernetes event on the policy."""


class InvalidSpec(Exception):
    """The spec cannot be acted on; the message names the field and value."""


def spec_error_text(error: ValidationError) -> str:
    """The same `spec.path: message (got value)` lines `stampede lint` prints, joined on one line."""
    return "; ".join(validation_lines(error, root="spec"))


@dataclass
class Shared:
    """What every policy's loop shares: clients, settings, the event sink."""

    config: OperatorConfig
    actuators: Actuators
    policies: Policies
    source: PrometheusSource
    emit: EventSink


@dataclass
class PolicyRunner:
    shared: Shared
    namespace: str
    name: str
    last_written: dict[str, Any] | None = None
    last_write_at: datetime | None = None
    late: timedelta = timedelta(0)
    scheduled: datetime | None = None
    """The tick time the loop last slept towards: polls are decided at it, not at the moment of waking, so
    `for` windows and status refreshes count whole intervals whatever the scheduling delay."""
    reported: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Last (reason, message) per problem and action: repeated failures are not re-posted every poll, and the
    ones still standing feed the Ready and Conflict conditions."""
    invalid_generation: int | None = None
    background: set[asyncio.Task[None]] = field(default_factory=set)
    adopted: bool = False
    """Whether this loop has looked for changes made but never recorded (first valid tick only)."""
    current: PolicyStatus | None = None
    """The status as this loop last computed it (written or still to be written)."""

    @property
    def target(self) -> Target:
        return Target(namespace=self.namespace, policy=self.name)

    # -- the tick -------------------------------------------------------------------------------
    async def tick(self, body: Mapping[str, Any], *, now: datetime | None = None) -> float:
        """One poll; returns the seconds to sleep before the next one."""
        started = time.monotonic()
        generation = (body.get("metadata") or {}).get("generation")
        if self.current is None:
            # Only the first tick trusts the body's status: kopf's live body lags behind this loop's
            # own status writes, and this loop is the status's only writer while it runs.
            raw_status = dict(body.get("status") or {})
            self.last_written = raw_status
            self.current = _parse_status(raw_status)
        status = self.current
        now = now or self._tick_time(datetime.now(UTC))
        try:
            spec = self._spec(body)
        except InvalidSpec as problem:
            await self._report_invalid(body, status, str(problem), generation=generation, now=now)
            return 5.0  # the live body picks up a fixed spec; look again soon
        self.invalid_generation = None
        if not self.adopted:
            status = await self._adopt(body, spec, status, now=now)
            self.adopted = True

        readings, errors = await self._read(spec, now=now)
        decision = decide(spec=spec, status=status, readings=readings, now=now, errors=errors, generation=generation)
        if _deleting(body):  # the deletion handler rolls back; this loop must not race it
            return 1.0
        closing = status.incident
        status = decision.status
        for event in decision.events:
            self._event(body, event)
        status = await self._execute(body, spec, decision, now=now)
        status = await incidents.track(
            self.shared.policies.kube,
            body,
            spec,
            decision,
            status,
            readings=readings,
            now=now,
            closed=closing,
            emit=self.shared.emit,
        )
        if status.state == State.INCIDENT and spec.mode == Mode.ENFORCE and not spec.suspend:
            status = await self._correct_drift(body, status, now=now)
        status = self._finish_conditions(spec, status, generation=generation, now=now)
        self.current = status
        await self._write(status, now=now, force=bool(decision.events))
        if not status.applied and status.state == State.IDLE and FINALIZER in _finalizers(body):
            await self._call(self.shared.policies.set_finalizer, self.namespace, self.name, present=False)
        self._observe(spec, status, decision, readings, started)
        self.scheduled = _next_tick(spec, decision, now=now)
        self.late = min(MAX_LATE, spec.poll_interval / 2)
        return max(MIN_DELAY, (self.scheduled - datetime.now(UTC)).total_seconds())

    def _tick_time(self, actual: datetime) -> datetime:
        """The scheduled time of this tick when it woke on time (scheduling delay only), else the actual time."""
        scheduled = self.scheduled
        if scheduled is not None and scheduled - EARLY <= actual <= scheduled + self.late:
            return scheduled
        return actual

    def _spec(self, body: Mapping[str, Any]) -> PolicySpec:
        try:
            spec = PolicySpec.model_validate(body.get("spec") or {})
        except ValidationError as error:
            raise InvalidSpec(spec_error_text(error)) from None
        url = spec.prometheus.url or self.shared.config.prometheus_url
        if not url:
            raise InvalidSpec("spec.prometheus.url: not set and the operator has no STAMPEDE_PROMETHEUS_URL")
        if self.shared.config.allowed_prometheus_urls:
            problem = check_url_allowed(url, self.shared.config.allowed_prometheus_urls)
            if problem:
                raise InvalidSpec(f"spec.prometheus.url: {problem}")
        return spec

    async def _report_invalid(
        self, body: Mapping[str, Any], status: PolicyStatus, message: str, *, generation: int | None, now: datetime
    ) -> None:
        conditions = set_condition(
            status.conditions,
            type_="Ready",
            status=False,
            reason="InvalidSpec",
            message=message,
            now=now,
            generation=generation,
        )
        status = status.model_copy(update={"conditions": conditions, "observed_generation": generation})
        self.current = status
        if self.invalid_generation != generation:
            self.invalid_generation = generation
            self.shared.emit(body, "Warning", "InvalidSpec", f"Policy {self.name} is invalid: {message}")
        await self._write(status, now=now, force=False)

    async def _read(self, spec: PolicySpec, *, now: datetime) -> tuple[dict[str, float | None], dict[str, str]]:
        queries = {s.name: s.query for s in spec.signals}
        try:
            auth = await self._auth(spec)
        except KubeError as error:
            reason = f"Prometheus credentials unavailable: {error.message}"
            return dict.fromkeys(queries), dict.fromkeys(queries, reason)
        url = spec.prometheus.url or self.shared.config.prometheus_url
        assert url is not None
        interval = spec.poll_interval.total_seconds()
        round_key = (interval, math.floor(now.timestamp() / interval))
        results = await self.shared.source.read(
            Endpoint(url=url, auth=auth), queries, timeout=spec.prometheus.timeout.total_seconds(), round_key=round_key
        )
        readings = {name: r.value for name, r in results.items()}
        errors = {name: r.error or "unknown" for name, r in results.items() if r.value is None}
        return readings, errors

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

    async def _adopt(
        self, body: Mapping[str, Any], spec: PolicySpec, status: PolicyStatus, *, now: datetime
    ) -> PolicyStatus:
        """Record changes found in targets' ledgers that status does not know (the operator died between
        the write and its record), so they are rolled back like any other; an idle policy starts rolling
        them back at once."""
        known = {c.action for c in status.applied + status.planned}
        found: list[AppliedChange] = []
        for _, action in spec.actions():
            if action.name in known or action.job is not None:
                continue
            change = await self._call(self.shared.actuators.adopt, self.target, action, now=now)
            if change is not None:
                found.append(change)
                self.shared.emit(
                    body,
                    "Warning",
                    "ActionApplied",
                    f"Found action {action.name} applied to {change.kind} {change.name} for incident "
                    f"{change.incident or '-'} but not recorded (the operator stopped in between); "
                    f"recorded it so it is rolled back exactly.",
                )
        if not found:
            return status
        status = status.model_copy(update={"applied": [*status.applied, *found]})
        if status.state == State.IDLE:
            first = min(found, key=lambda c: c.applied_at)
            incident = IncidentStatus(
                id=first.incident or incident_id_for(now),
                started_at=first.applied_at,
                severity=Severity.P2,
                recovered_at=now,
                phase="",
                max_phase="",
            )
            status = status.model_copy(update={"state": State.ROLLING_BACK, "incident": incident})
        self.current = status
        return status

    # -- acting ---------------------------------------------------------------------------------
    async def _execute(
        self, body: Mapping[str, Any], spec: PolicySpec, decision: Decision, *, now: datetime
    ) -> PolicyStatus:
        status = decision.status
        dry_run = spec.mode == Mode.DRY_RUN
        for change in decision.undo:
            outcome = await self._call(
                self.shared.actuators.undo, self.target, change, now=now, dry_run=dry_run or change in status.planned
            )
            self._outcome(body, change.action, outcome, kind=change.kind, result="rolled_back")
            if outcome.ok:
                metrics.ROLLBACKS_TOTAL.labels(self.namespace, self.name).inc()
                status = record_undone(status, change)
        if not decision.apply:
            return status
        if not dry_run:
            try:
                await self._call(self.shared.policies.set_finalizer, self.namespace, self.name, present=True)
                self.reported.pop("finalizer", None)
            except KubeError as error:
                self._report(
                    body,
                    "finalizer",
                    "ActionFailed",
                    f"Cannot add finalizer {FINALIZER}: {error.message}; changes postponed.",
                )
                return status
        incident = decision.incident_id or ""
        for action in decision.apply:
            outcome = await self._call(
                self.shared.actuators.apply, self.target, action, incident=incident, now=now, dry_run=dry_run
            )
            self._outcome(body, action.name, outcome, kind=action.kind, result="applied")
            if outcome.ok and outcome.change is not None:
                status = record_applied(status, outcome.change, dry_run=dry_run)
        return status

    # -- notifications --------------------------------------------------------------------------
    def _notify(
        self,
        body: Mapping[str, Any],
        spec: PolicySpec,
        status: PolicyStatus,
        events: tuple[Event, ...],
        *,
        closed: IncidentStatus | None,
    ) -> None:
        """Post the runbook's messages in the background; remediation never waits for them."""
        webhook = spec.notifications.webhook if spec.notifications else None
        if webhook is None:
            return
        texts = []
        for event in events:
            incident = status.incident or closed
            if incident is None:
                continue
            ctx = messages.Context(
                namespace=self.namespace,
                policy=self.name,
                incident=incident.id,
                severity=incident.severity.value,
                phase=incident.phase,
                mode=spec.mode.value,
            )
            if event.reason == "IncidentOpened":
                texts.append(messages.detected(ctx, trigger=event.message))
            elif event.reason == "PhaseEntered":
                texts.append(messages.progress(ctx, detail=event.message))
            elif event.reason == "Escalated":
                texts.append(messages.escalated(ctx, reason=event.message))
            elif event.reason == "IncidentClosed" and closed is not None:
                texts.append(messages.resolved(ctx, summary=event.message, actions=closed.actions))
        if texts:
            task = asyncio.create_task(self._send(body, webhook.secret_ref.name, webhook.secret_ref.key, texts))
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    async def _send(self, body: Mapping[str, Any], secret: str, key: str, texts: list[str]) -> None:
        try:
            url = await self._call(self.shared.policies.read_secret, self.namespace, secret, key)
        except KubeError as error:
            self.shared.emit(
                body,
                "Warning",
                "NotificationFailed",
                f"Notification not sent: webhook Secret {secret} key {key}: {error.message}.",
            )
            return
        for text in texts:
            problem = await webhook_post(url.strip(), text)
            if problem:
                self.shared.emit(
                    body,
                    "Warning",
                    "NotificationFailed",
                    f"Notification to the webhook in Secret {secret} failed: {problem}.",
                )

    async def _correct_drift(self, body: Mapping[str, Any], status: PolicyStatus, *, now: datetime) -> PolicyStatus:
        applied: list[AppliedChange] = []
        for change in status.applied:
            if change.reverts >= MAX_DRIFT_REVERTS or change.kind == "Job":
                applied.append(change)
                continue
            reverted = await self._call(self.shared.actuators.reverted, self.target, change)
            if not reverted:
                applied.append(change)
                continue
            if change.reverts + 1 >= MAX_DRIFT_REVERTS:
                change = change.model_copy(update={"reverts": change.reverts + 1})
                self._report(body, f"drift/{change.action}", "Conflict", _gitops_message(change, reverted))
                applied.append(change)
                continue
            outcome = await self._call(self.shared.actuators.reapply, self.target, change, now=now)
            self._outcome(body, change.action, outcome, kind=change.kind, result="reapplied")
            applied.append(outcome.change if outcome.ok and outcome.change else change)
        return status.model_copy(update={"applied": applied})

    def _outcome(self, body: Mapping[str, Any], action: str, outcome: Outcome, *, kind: str, result: str) -> None:
        metrics.ACTIONS_TOTAL.labels(
            self.namespace, self.name, kind, result if outcome.ok else outcome.reason.lower()
        ).inc()
        if outcome.ok:
            self.reported.pop(f"action/{action}", None)
            self.shared.emit(
                body, "Warning" if outcome.reason == "RollbackSkipped" else "Normal", outcome.reason, outcome.message
            )
            for warning in outcome.warnings:
                self.shared.emit(body, "Warning", "ActionFailed", f"Action {action}: {warning}.")
        else:
            self._report(body, f"action/{action}", outcome.reason, outcome.message)

    def _report(self, body: Mapping[str, Any], key: str, reason: str, message: str) -> None:
        """Post a warning once per distinct message, not at every poll."""
        if self.reported.get(key) == (reason, message):
            return
        self.reported[key] = (reason, message)
        log.warning("%s/%s: %s", self.namespace, self.name, message)
        self.shared.emit(body, "Warning", reason, message)

    def _event(self, body: Mapping[str, Any], event: Event) -> None:
        self.shared.emit(body, "Warning" if event.warning else "Normal", event.reason, event.message)

    # -- reporting ------------------------------------------------------------------------------
    def _finish_conditions(
        self, spec: PolicySpec, status: PolicyStatus, *, generation: int | None, now: datetime
    ) -> PolicyStatus:
        if status.state == State.IDLE:  # nothing is being applied or undone: earlier problems are over
            self.reported = {k: v for k, v in self.reported.items() if not k.startswith(("action/", "drift/"))}
        failing = [m for _, (reason, m) in sorted(self.reported.items()) if reason == "ActionFailed"]
        if failing:
            conditions = set_condition(
                status.conditions,
                type_="Ready",
                status=False,
                reason="ActionFailed",
                message=" ".join(failing),
                now=now,
                generation=generation,
            )
        else:
            conditions = set_condition(
                status.conditions,
                type_="Ready",
                status=True,
                reason="Valid",
                message=f"The spec is valid and polled every {spec.poll_interval.total_seconds():g}s.",
                now=now,
                generation=generation,
            )
        conflicts = [m for _, (reason, m) in sorted(self.reported.items()) if reason == "Conflict"]
        conditions = set_condition(
            conditions,
            type_="Conflict",
            status=bool(conflicts),
            reason="Conflict" if conflicts else "NoConflict",
            message=" ".join(conflicts) or "No other writer fights this policy.",
            now=now,
            generation=generation,
        )
        planned = status.planned if spec.mode == Mode.DRY_RUN or status.state != State.IDLE else []
        return status.model_copy(
            update={
                "conditions": conditions,
                "observed_generation": generation,
                "planned": planned,
                "last_poll_time": now,
            }
        )

    async def _write(self, status: PolicyStatus, *, now: datetime, force: bool) -> None:
        new = status.wire()
        old = self.last_written or {}
        meaningful = _meaningful(new) != _meaningful(old)
        due = (
            self.last_write_at is None
            or (now - self.last_write_at).total_seconds() >= self.shared.config.status_refresh_seconds
        )
        if not (meaningful or force or due):
            return
        try:
            await self._call(self.shared.policies.write_status, self.namespace, self.name, old=old, new=new)
        except KubeError as error:
            log.warning("%s/%s: status write failed: %s", self.namespace, self.name, error.message)
            self.last_written = None if error.not_found else self.last_written
            return
        self.last_written = new
        self.last_write_at = now

    def _observe(
        self,
        spec: PolicySpec,
        status: PolicyStatus,
        decision: Decision,
        readings: Mapping[str, float | None],
        started: float,
    ) -> None:
        labels = (self.namespace, self.name)
        metrics.POLL_DURATION.labels(*labels).observe(time.monotonic() - started)
        metrics.INCIDENT_ACTIVE.labels(*labels).set(1 if status.incident else 0)
        for name, value in readings.items():
            if value is None:
                metrics.PROMETHEUS_ERRORS.labels(*labels, name).inc()
            else:
                metrics.SIGNAL_VALUE.labels(*labels, name).set(value)
        for event in decision.events:
            if event.reason == "IncidentOpened" and status.incident:
                metrics.INCIDENTS_TOTAL.labels(*labels, status.incident.severity.value).inc()
            if event.reason == "IncidentClosed" and status.history:
                metrics.INCIDENT_DURATION.labels(*labels).observe(status.history[0].duration_seconds)
        for namespace, policy, phase, severity in list(metrics.PHASE_INFO._metrics):
            if (namespace, policy) == labels:
                metrics.PHASE_INFO.remove(namespace, policy, phase, severity)
        if status.incident:
            metrics.PHASE_INFO.labels(*labels, status.incident.phase or "-", status.incident.severity.value).set(1)

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a blocking client call in a worker thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- deletion -------------------------------------------------------------------------------
    async def roll_back_all(self, body: Mapping[str, Any], *, now: datetime | None = None) -> list[str]:
        """Undo every applied change at once, newest first (the user asked for the policy to go).

        Returns the changes that could not be undone; their records stay in status for the next try.
        """
        status = _parse_status(dict(body.get("status") or {}))
        remaining = sorted(status.applied, key=lambda c: c.applied_at)
        failed: list[AppliedChange] = []
        now = now or datetime.now(UTC)
        for change in reversed(remaining):
            outcome = await self._call(self.shared.actuators.undo, self.target, change, now=now, dry_run=False)
            self._outcome(body, change.action, outcome, kind=change.kind, result="rolled_back")
            if not outcome.ok:
                failed.append(change)
        if self.last_written is None:
            self.last_written = dict(body.get("status") or {})
        await self._write(status.model_copy(update={"applied": list(reversed(failed))}), now=now, force=True)
        return [f"{c.action} ({c.kind} {c.name})" for c in failed]


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


def _meaningful(status: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in status.items() if k not in ("lastPollTime", "signals")}


def _gitops_message(change: AppliedChange, fields: list[str]) -> str:
    return (
        f"{change.kind} {change.name} ({', '.join(fields)}) was reverted {change.reverts} times during the "
        f"incident; stopped re-applying action {change.action}. If a GitOps tool (e.g. Argo CD self-heal) "
        f"reverts it, add ignoreDifferences with managedFieldsManagers: [stampede-operator] and the sync "
        f"option RespectIgnoreDifferences=true to that Application."
    )


def _next_tick(spec: PolicySpec, decision: Decision, *, now: datetime) -> datetime:
    """The next aligned tick of the interval (policies with equal intervals poll together, sharing queries),
    or earlier when the engine asked to wake for a phase, a rollback step or escalation."""
    interval = spec.poll_interval.total_seconds()
    stamp = now.timestamp()
    next_tick = datetime.fromtimestamp((math.floor(stamp / interval) + 1) * interval, UTC)
    if decision.wake_at is not None and decision.wake_at < next_tick:
        return decision.wake_at
    return next_tick


__all__ = ["InvalidSpec", "PolicyRunner", "Shared", "spec_error_text"]
