"""One poll of one policy: the whole runbook as a state machine.

`decide` takes the spec, the status (all state lives there), one poll's readings and `now`, and
returns the new status, the actions to apply, the changes to undo and the events to emit. The
caller performs the changes and records their outcome in `status.applied`; the engine never
assumes a change succeeded, so a failed apply is simply planned again at the next poll.

Rules, in the words of the runbook:
- A severity level fires when any one of its conditions has held at every poll for `for`.
  Unknown readings never hold, so they break a window rather than extend it.
- Severity rises but never falls inside an incident.
- Phases are cumulative and time-boxed from incident start; `minSeverity` skips milder incidents.
- Escalation happens once, by age or by severity.
- Recovery needs every recovery condition to hold at every poll for `for`, with no level firing;
  then changes are undone newest first, `stepDelay` apart. A level firing during rollback opens a
  new incident that keeps what is still applied.
- `onMetricsError: Hold` freezes transitions while any signal is unknown; `Continue` lets phases
  advance by time. Either way unknown is never healthy.
- DryRun computes the same decisions; the caller records them in `status.planned` instead.
- `suspend` keeps detection and reporting but asks for no change and no rollback.
- An action with `dryRun` is only planned (the caller records it in `status.planned`); the others act.
- Rollback waits for the rollout of the workloads its last undo restarted or scaled
  (`rollback.waitForRollout`), at most `rollback.rolloutTimeout`; the wait is in status. The caller
  reads the rollouts (`awaited_workloads`) and passes them in, so the engine stays pure.
- Storm breaker: an incident that opens while `Storm.limit` other policies already have one acting is
  held (opened and reported, nothing new applied) until their count falls below the limit.
- Manual controls: `hold` freezes phases, applies and undos and keeps what is applied;
  `rollback_now` starts rollback of an open incident as recovery would (and wins over `hold` for it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ..api.durations import format_duration
from ..api.kinds import ChangeKind
from ..api.reasons import Reason
from ..api.spec import Action, EscalationLevel, Mode, OnMetricsError, PolicySpec, Severity
from ..api.status import (
    AppliedChange,
    Breach,
    HistoryEntry,
    IncidentStatus,
    PolicyStatus,
    RolloutWait,
    SignalStatus,
    State,
    StatusCondition,
    WorkloadStatusRef,
)
from .conditions import condition_is, set_condition

HISTORY_LIMIT = 10


@dataclass(frozen=True, init=False)
class Event:
    """A Kubernetes event to emit on the policy; a reason outside `Reason` is refused at once."""

    reason: Reason
    message: str
    warning: bool = False

    def __init__(self, reason: Reason | str, message: str, warning: bool = False) -> None:
        object.__setattr__(self, "reason", Reason(reason))
        object.__setattr__(self, "message", message)
        object.__setattr__(self, "warning", warning)


@dataclass(frozen=True)
class Controls:
    """What the person on call asked for through the policy's annotations."""

    hold: bool = False
    """stampede.aurum.io/hold: no new phase, apply or undo; what is applied stays."""
    rollback_now: bool = False
    """stampede.aurum.io/rollback-now: roll the open incident back now, as if it recovered."""


@dataclass(frozen=True)
class Storm:
    """The storm breaker's view across the policies this operator serves (counted by the caller)."""

    limit: int = 0
    """STAMPEDE_MAX_CONCURRENT_INCIDENTS; 0 turns the breaker off."""
    active: int = 0
    """Other policies with an open incident that is not held by the breaker."""
    held: int = 0
    """Other policies held by the breaker (a storm is under way when there is one)."""


@dataclass(frozen=True)
class Decision:
    """What one poll decided."""

    status: PolicyStatus
    apply: tuple[Action, ...] = ()
    """Actions to apply now, in runbook order."""
    undo: tuple[AppliedChange, ...] = ()
    """Changes to roll back now (at most one per rollback step)."""
    events: tuple[Event, ...] = ()
    wake_at: datetime | None = None
    """Earliest moment the engine wants another call besides the regular poll (phase, step, escalation)."""
    incident_id: str | None = None
    """The incident the applies belong to."""
    phase_by_action: Mapping[str, str] = field(default_factory=dict)
    rollback_now_done: bool = False
    """The rollback-now request was dealt with: the caller removes the annotation."""


def incident_id_for(started_at: datetime) -> str:
    """Incident ids are the start time: unique per policy (polls are ≥1 s apart) and label-safe."""
    return started_at.strftime("%Y%m%d-%H%M%S")


def format_value(value: float | None) -> str:
    if value is None or math.isnan(value) or math.isinf(value):
        return "unknown"
    return f"{value:.6g}"


def held_changes(spec: PolicySpec, status: PolicyStatus) -> list[AppliedChange]:
    """The changes that count as made in the current mode (planned ones in DryRun, and shadowed actions')."""
    if spec.mode == Mode.DRY_RUN:
        return list(status.planned)
    shadowed = [c for c in status.planned if (action := spec.action(c.action)) is not None and action.dry_run]
    return [*status.applied, *shadowed]


def awaited_workloads(status: PolicyStatus) -> list[WorkloadStatusRef]:
    """The workloads whose rollout the caller must read for the next `decide` (rollback.waitForRollout)."""
    incident = status.incident
    if incident is None or incident.rollout_wait is None:
        return []
    return list(incident.rollout_wait.workloads)


def rollout_key(workload: WorkloadStatusRef) -> str:
    """How a workload's rollout reading is keyed in `decide(rollouts=...)`."""
    return f"{workload.kind}/{workload.name}"


def rolled_out_by(changes: tuple[AppliedChange, ...] | list[AppliedChange]) -> list[WorkloadStatusRef]:
    """The workloads an undo of these changes restarts or scales (what the next undo waits for)."""
    out: list[WorkloadStatusRef] = []
    for change in changes:
        if change.kind == ChangeKind.CONFIG_MAP:
            found = list(change.restart)
        elif change.reversible:
            found = [WorkloadStatusRef(kind=change.kind.value, name=change.name)]
        else:
            found = []
        out += [w for w in found if w not in out]
    return out


def record_applied(status: PolicyStatus, change: AppliedChange, *, dry_run: bool) -> PolicyStatus:
    """The caller's half of the contract, after a change was made (or, in DryRun, computed): hold it."""
    key = "planned" if dry_run else "applied"
    status = status.model_copy(update={key: [*getattr(status, key), change]})
    incident = status.incident
    if incident is not None and change.action not in incident.actions:
        incident = incident.model_copy(update={"actions": [*incident.actions, change.action]})
        status = status.model_copy(update={"incident": incident})
    return status


def record_undone(status: PolicyStatus, change: AppliedChange) -> PolicyStatus:
    """The caller's half of the contract, after a change was rolled back: stop holding it."""
    return status.model_copy(
        update={
            "applied": [c for c in status.applied if c.action != change.action],
            "planned": [c for c in status.planned if c.action != change.action],
        }
    )


def decide(
    *,
    spec: PolicySpec,
    status: PolicyStatus,
    readings: Mapping[str, float | None],
    now: datetime,
    errors: Mapping[str, str] | None = None,
    generation: int | None = None,
    rollouts: Mapping[str, bool | None] | None = None,
    controls: Controls | None = None,
    storm: Storm | None = None,
) -> Decision:
    """Advance the policy by one poll. See the module docstring for the rules.

    `rollouts`: whether the rollout of each of `awaited_workloads(status)` is complete (by `rollout_key`);
    `controls`: the policy's manual-control annotations; `storm`: the storm breaker's counts.
    """
    errors = errors or {}
    controls = controls or Controls()
    values = {s.name: _clean(readings.get(s.name)) for s in spec.signals}
    unknown = [name for name, value in values.items() if value is None]
    hold = bool(unknown) and spec.on_metrics_error == OnMetricsError.HOLD
    events: list[Event] = []

    signals = [
        SignalStatus(
            name=name, value=format_value(value), error=None if value is not None else errors.get(name, "no value")
        )
        for name, value in values.items()
    ]
    conditions = list(status.conditions)
    was_available = condition_is(conditions, "MetricsAvailable")
    if unknown:
        # Signals that failed for the same reason (typically: Prometheus unreachable) share one mention of
        # it, so an outage reads as one error rather than the same text once per signal.
        by_error: dict[str, list[str]] = {}
        for name in unknown:
            by_error.setdefault(errors.get(name, "no value"), []).append(name)
        message = (
            "Signals unknown: " + "; ".join(f"{', '.join(names)} ({error})" for error, names in by_error.items()) + "."
        )
        conditions = set_condition(
            conditions,
            type_="MetricsAvailable",
            status=False,
            reason="SignalsUnknown",
            message=message,
            now=now,
            generation=generation,
        )
        if was_available is not False:
            action = "holding the incident state" if hold else "continuing by time"
            events.append(Event("MetricsUnavailable", f"{message[:-1]}; {action}.", warning=True))
    else:
        conditions = set_condition(
            conditions,
            type_="MetricsAvailable",
            status=True,
            reason="AllSignalsKnown",
            message=f"All {len(values)} signals have values.",
            now=now,
            generation=generation,
        )
        if was_available is False:
            events.append(Event("MetricsRestored", f"All {len(values)} signals have values again."))

    breaching = _update_breaches(spec, status.breaching, values, now)
    firing = _firing_level(spec, breaching, now)
    work = _Work(
        spec=spec,
        status=status.model_copy(update={"breaching": breaching, "signals": signals}),
        now=now,
        values=values,
        events=events,
        generation=generation,
        rollouts=rollouts or {},
        manual_hold=controls.hold,
    )
    manual = status.incident is not None and status.incident.manual_rollback

    if controls.rollback_now and work.status.state == State.INCIDENT:
        work.start_manual_rollback()
    if not hold:
        if status.state == State.IDLE and firing is not None:
            work.open_incident(firing)
        elif status.state == State.ROLLING_BACK and firing is not None and not manual:
            # A manual rollback was asked for while the levels still fire: it is not interrupted.
            work.close_incident(reason="a new incident opened during rollback")
            work.open_incident(firing)
        elif work.status.state == State.INCIDENT and firing is not None:
            work.raise_severity(firing)
        if work.status.state == State.INCIDENT:
            if not controls.hold:
                work.advance_phases()
            work.escalate()
            work.track_recovery(firing_now=firing is not None)
        if work.status.state == State.ROLLING_BACK:
            work.roll_back()
    elif work.status.state != State.IDLE:
        work.track_recovery(firing_now=False, frozen=True)
        if work.status.state == State.ROLLING_BACK and work.status.incident and work.status.incident.manual_rollback:
            work.roll_back()
        work.plan_wake()

    if work.status.state == State.INCIDENT:
        work.storm_gate(storm or Storm())
    incident_now = work.status.incident
    storm_held = incident_now is not None and incident_now.storm_held
    if work.status.state == State.INCIDENT and not hold and not controls.hold and not storm_held:
        work.plan_applies()
    work.report_hold(conditions)
    if spec.suspend:
        work.apply, work.undo = [], []
        # An immediate call only serves to close right after the last undo; with none asked for it would
        # be a busy loop (stepDelay 0) or a wasted poll.
        if work.wake_at is not None and work.wake_at <= now:
            work.wake_at = None

    conditions = _incident_conditions(work.status, conditions, spec, now, generation)
    conditions = _held_condition(work.status, conditions, manual_hold=controls.hold, now=now, generation=generation)
    status_out = work.status.model_copy(update={"conditions": conditions})
    return Decision(
        status=status_out,
        apply=tuple(work.apply),
        undo=tuple(work.undo),
        events=tuple(work.events),
        wake_at=work.wake_at,
        incident_id=status_out.incident.id if status_out.incident else None,
        phase_by_action=work.phase_by_action,
        rollback_now_done=controls.rollback_now,
    )


def _clean(value: float | None) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return float(value)


def _update_breaches(
    spec: PolicySpec, previous: list[Breach], values: Mapping[str, float | None], now: datetime
) -> list[Breach]:
    since = {(b.level, b.condition): b.since for b in previous}
    out: list[Breach] = []
    for severity in spec.severities:
        for condition in severity.parsed():
            if condition.holds(values.get(condition.signal)):
                start = since.get((severity.level, condition.text), now)
                out.append(Breach(level=severity.level, condition=condition.text, since=start))
    return out


def _firing_level(spec: PolicySpec, breaching: list[Breach], now: datetime) -> Severity | None:
    windows = {s.level: s.for_ for s in spec.severities}
    fired = [b.level for b in breaching if now - b.since >= windows[b.level]]
    return max(fired, key=lambda level: level.rank) if fired else None


def _held_condition(
    status: PolicyStatus,
    conditions: list[StatusCondition],
    *,
    manual_hold: bool,
    now: datetime,
    generation: int | None,
) -> list[StatusCondition]:
    incident = status.incident
    if manual_hold:
        return set_condition(
            conditions,
            type_="Held",
            status=True,
            reason="Manual",
            message="Annotation stampede.aurum.io/hold is true: no new phase, action or undo; "
            "what is applied stays applied.",
            now=now,
            generation=generation,
        )
    if incident is not None and incident.storm_held:
        return set_condition(
            conditions,
            type_="Held",
            status=True,
            reason="StormBreaker",
            message=f"Incident {incident.id} is held by the storm breaker (STAMPEDE_MAX_CONCURRENT_INCIDENTS): "
            "it applies nothing new until fewer policies have an incident open.",
            now=now,
            generation=generation,
        )
    return set_condition(
        conditions,
        type_="Held",
        status=False,
        reason="NotHeld",
        message="The policy acts as its runbook says.",
        now=now,
        generation=generation,
    )


def _incident_conditions(
    status: PolicyStatus, conditions: list[StatusCondition], spec: PolicySpec, now: datetime, generation: int | None
) -> list[StatusCondition]:
    incident = status.incident
    if incident is None:
        conditions = set_condition(
            conditions,
            type_="IncidentActive",
            status=False,
            reason="Idle",
            message="No incident.",
            now=now,
            generation=generation,
        )
        conditions = set_condition(
            conditions,
            type_="Escalated",
            status=False,
            reason="NotEscalated",
            message="No incident is escalated.",
            now=now,
            generation=generation,
        )
    else:
        reason = "RollingBack" if status.state == State.ROLLING_BACK else "Incident"
        conditions = set_condition(
            conditions,
            type_="IncidentActive",
            status=True,
            reason=reason,
            message=f"Incident {incident.id} at {incident.severity.value}, phase {incident.phase or '-'}"
            f" ({status.state.value}).",
            now=now,
            generation=generation,
        )
        if incident.escalated:
            conditions = set_condition(
                conditions,
                type_="Escalated",
                status=True,
                reason="Escalated",
                message=f"Incident {incident.id} was escalated.",
                now=now,
                generation=generation,
            )
        else:
            conditions = set_condition(
                conditions,
                type_="Escalated",
                status=False,
                reason="NotEscalated",
                message=f"Incident {incident.id} is not escalated.",
                now=now,
                generation=generation,
            )
    if spec.suspend:
        conditions = set_condition(
            conditions,
            type_="Suspended",
            status=True,
            reason="Suspended",
            message="spec.suspend is true: polling and reporting only, no changes and no rollback.",
            now=now,
            generation=generation,
        )
    else:
        conditions = set_condition(
            conditions,
            type_="Suspended",
            status=False,
            reason="Active",
            message=(
                "Mode DryRun: the changes the policy prescribes are planned in status.planned, none is made."
                if spec.mode == Mode.DRY_RUN
                else "Changes are made as the policy prescribes."
            ),
            now=now,
            generation=generation,
        )
    return conditions


class _Work:
    """Mutable scratchpad for one decision, so each rule reads as a short method."""

    def __init__(
        self,
        *,
        spec: PolicySpec,
        status: PolicyStatus,
        now: datetime,
        values: Mapping[str, float | None],
        events: list[Event],
        generation: int | None,
        rollouts: Mapping[str, bool | None],
        manual_hold: bool,
    ) -> None:
        self.spec = spec
        self.status = status
        self.now = now
        self.values = values
        self.events = events
        self.generation = generation
        self.rollouts = rollouts
        self.manual_hold = manual_hold
        self.opened = False
        self.apply: list[Action] = []
        self.undo: list[AppliedChange] = []
        self.wake_at: datetime | None = None
        self.phase_by_action: dict[str, str] = {}

    # -- helpers -----------------------------------------------------------------------------
    def _emit(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(Event(reason, message, warning))

    def _set_incident(self, **update: object) -> IncidentStatus:
        assert self.status.incident is not None
        incident = self.status.incident.model_copy(update=update)
        self.status = self.status.model_copy(
            update={"incident": incident, "severity": incident.severity.value, "phase": incident.phase}
        )
        return incident

    def _wake(self, when: datetime | None) -> None:
        if when is not None and when > self.now and (self.wake_at is None or when < self.wake_at):
            self.wake_at = when

    def _readings_text(self, signals: list[str]) -> str:
        return ", ".join(f"{name}={format_value(self.values.get(name))}" for name in signals)

    def _phase_index(self, name: str) -> int:
        return next((i for i, phase in enumerate(self.spec.phases) if phase.name == name), -1)

    # -- transitions ---------------------------------------------------------------------------
    def open_incident(self, level: Severity) -> None:
        conditions = [b for b in self.status.breaching if b.level == level]
        why = "; ".join(f"{b.condition} since {b.since:%H:%M:%S}" for b in conditions)
        incident = IncidentStatus(id=incident_id_for(self.now), started_at=self.now, severity=level)
        # Jobs are one per incident: a Job record from an interrupted rollback must not count
        # for the new incident. Other changes are still applied and stay held.
        applied = [c for c in self.status.applied if c.reversible]
        planned = [c for c in self.status.planned if c.reversible]
        self.status = self.status.model_copy(
            update={
                "state": State.INCIDENT,
                "incident": incident,
                "severity": level.value,
                "phase": "",
                "applied": applied,
                "planned": planned,
            }
        )
        self.opened = True
        self._emit(
            "IncidentOpened",
            f"Incident {incident.id} opened at {level.value}: {why} "
            f"({self._readings_text(sorted({c.condition.split()[0] for c in conditions}))}).",
            warning=True,
        )

    def raise_severity(self, level: Severity) -> None:
        incident = self.status.incident
        assert incident is not None
        if level.rank > incident.severity.rank:
            self._set_incident(severity=level)
            self._emit(
                "SeverityRaised",
                f"Incident {incident.id} severity raised from {incident.severity.value} to {level.value}.",
                warning=True,
            )

    def advance_phases(self) -> None:
        incident = self.status.incident
        assert incident is not None
        age = self.now - incident.started_at
        current = self._phase_index(incident.phase)
        reached = max((i for i, p in enumerate(self.spec.phases) if p.after <= age), default=-1)
        if reached > current:
            for index in range(current + 1, reached + 1):
                phase = self.spec.phases[index]
                # Actions below their minSeverity are named as skipped, so a P2 incident's event never
                # suggests that a P0-only action ran; they are applied if the severity rises later.
                taken = [a.name for a in phase.actions if incident.severity.at_least(a.min_severity)]
                skipped = [
                    f"{a.name} (minSeverity {a.min_severity.value})"
                    for a in phase.actions
                    if not incident.severity.at_least(a.min_severity)
                ]
                what = ", ".join(taken) if taken else f"no action at {incident.severity.value}"
                if skipped:
                    what += f"; skipped at {incident.severity.value}: {', '.join(skipped)}"
                self._emit(
                    "PhaseEntered",
                    f"Incident {incident.id} entered phase {phase.name} "
                    f"({index + 1}/{len(self.spec.phases)}) after "
                    f"{format_duration(age)}: {what}.",
                )
            name = self.spec.phases[reached].name
            furthest = max(reached, self._phase_index(incident.max_phase))
            self._set_incident(phase=name, phase_started_at=self.now, max_phase=self.spec.phases[furthest].name)
        incident = self.status.incident
        assert incident is not None
        index = self._phase_index(incident.phase)
        next_at = (
            incident.started_at + self.spec.phases[index + 1].after if 0 <= index + 1 < len(self.spec.phases) else None
        )
        if next_at != incident.next_phase_at:
            self._set_incident(next_phase_at=next_at)
        self._wake(next_at)

    def escalate(self) -> None:
        """Reach the escalation levels in order, each once per incident, by age or by severity."""
        incident = self.status.incident
        assert incident is not None
        chain = self.spec.escalation.chain()
        legacy = not self.spec.escalation.levels
        names = [level.name for level in chain]
        if incident.escalation_level in names:
            reached = names.index(incident.escalation_level)
        else:
            # Escalated before levels were recorded (or under a level since renamed): the first level counts.
            reached = 0 if incident.escalated else -1
        for index in range(reached + 1, len(chain)):
            level = chain[index]
            why = self._escalation_reason(level, incident)
            if why is None:
                if level.after is not None:
                    self._wake(incident.started_at + level.after)
                return
            first = not incident.escalated
            incident = self._set_incident(
                escalated=True,
                escalated_at=self.now if first else incident.escalated_at,
                escalation_level=level.name,
            )
            to = "" if legacy else f" to level {level.name} ({index + 1}/{len(chain)})"
            self._emit(
                Reason.ESCALATED,
                f"Incident {incident.id} escalated{to}: {why} (phase {incident.phase}).",
                warning=True,
            )

    def _escalation_reason(self, level: EscalationLevel, incident: IncidentStatus) -> str | None:
        """Why `level` is reached now, or None while it is not."""
        if level.at_severity is not None and incident.severity.at_least(level.at_severity):
            if incident.severity == level.at_severity:
                return f"severity {incident.severity.value} is the escalation severity"
            return f"severity {incident.severity.value} is above the escalation severity {level.at_severity.value}"
        if level.after is not None and self.now >= incident.started_at + level.after:
            return f"open for more than {format_duration(level.after)}"
        return None

    def track_recovery(self, *, firing_now: bool, frozen: bool = False) -> None:
        incident = self.status.incident
        assert incident is not None
        if self.status.state != State.INCIDENT:
            return
        conditions = self.spec.recovery.parsed()
        healthy = not frozen and not firing_now and all(c.holds(self.values.get(c.signal)) for c in conditions)
        if not healthy:
            if incident.recovering_since is not None:
                self._set_incident(recovering_since=None)
            return
        since = incident.recovering_since or self.now
        if incident.recovering_since is None:
            self._set_incident(recovering_since=since)
        if self.now - since >= self.spec.recovery.for_:
            self._set_incident(recovered_at=self.now)
            self.status = self.status.model_copy(update={"state": State.ROLLING_BACK})
            held = held_changes(self.spec, self.status)
            self._emit(
                "RecoveryStarted",
                f"Incident {incident.id} recovered: {', '.join(self.spec.recovery.all)} held for "
                f"{format_duration(self.now - since)} "
                f"({self._readings_text(sorted({c.signal for c in conditions}))}); rolling back "
                f"{len(held)} change(s), {format_duration(self.spec.rollback.step_delay)} apart.",
            )
        else:
            self._wake(since + self.spec.recovery.for_)

    def roll_back(self) -> None:
        incident = self.status.incident
        assert incident is not None
        held = sorted(self.status.applied + self.status.planned, key=lambda c: c.applied_at)
        if not held:
            self.close_incident(reason="every change was rolled back")
            return
        if self.manual_hold and not incident.manual_rollback:
            return  # held by hand: what is applied stays
        if not self._rollouts_done(incident):
            return
        last = incident.last_rollback_at
        step = self.spec.rollback.step_delay
        if last is None or self.now - last >= step:
            # Jobs are left to finish, so they cost no step: they go with the next real undo.
            count = 1
            while count < len(held) and not held[-count].reversible:
                count += 1
            self.undo = held[-count:][::-1]
            self._set_incident(last_rollback_at=self.now)
            waited = rolled_out_by([c for c in self.undo if c not in self.status.planned])
            if self.spec.rollback.wait_for_rollout and waited and count < len(held):
                self._set_incident(rollout_wait=RolloutWait(workloads=waited, since=self.now))
            # The last step closes the incident at the very next call rather than a poll later.
            self.wake_at = self.now if count == len(held) else None
            if count < len(held):
                self._wake(self.now + step)
        else:
            self._wake(last + step)

    def _rollouts_done(self, incident: IncidentStatus) -> bool:
        """Whether rollback may take its next step as far as the previous undo's rollouts go."""
        wait = incident.rollout_wait
        if wait is None:
            return True
        if self.spec.rollback.wait_for_rollout:
            pending = [w for w in wait.workloads if self.rollouts.get(rollout_key(w)) is not True]
            deadline = wait.since + self.spec.rollback.rollout_timeout
            if pending and self.now < deadline:
                self._wake(deadline)
                return False
            if pending:
                names = ", ".join(f"{w.kind} {w.name}" for w in pending)
                self._emit(
                    "RolloutTimedOut",
                    f"Incident {incident.id}: the rollout of {names} did not complete within "
                    f"{format_duration(self.spec.rollback.rollout_timeout)} (rollback.rolloutTimeout); "
                    "rollback goes on.",
                    warning=True,
                )
        self._set_incident(rollout_wait=None)
        return True

    def start_manual_rollback(self) -> None:
        incident = self.status.incident
        assert incident is not None
        self._set_incident(recovered_at=self.now, recovering_since=None, manual_rollback=True)
        self.status = self.status.model_copy(update={"state": State.ROLLING_BACK})
        held = held_changes(self.spec, self.status)
        self._emit(
            "ManualRollback",
            f"Incident {incident.id}: rollback started by annotation stampede.aurum.io/rollback-now "
            f"(phase {incident.phase or '-'}); rolling back {len(held)} change(s), "
            f"{format_duration(self.spec.rollback.step_delay)} apart.",
            warning=True,
        )

    def storm_gate(self, storm: Storm) -> None:
        """Hold a newly opened incident while `storm.limit` other policies already act on theirs."""
        incident = self.status.incident
        assert incident is not None
        if incident.storm_held:
            if storm.limit <= 0 or storm.active < storm.limit:
                self._set_incident(storm_held=False)
                self._emit(
                    "Released",
                    f"Incident {incident.id} released by the storm breaker: {storm.active} other incident(s) "
                    f"open (limit {storm.limit}); acting on the runbook.",
                )
            return
        if self.opened and storm.limit > 0 and storm.active >= storm.limit:
            self._set_incident(storm_held=True)
            self._emit(
                "StormHold",
                f"Incident {incident.id} held by the storm breaker: {storm.active} other policies already "
                f"have an incident open (STAMPEDE_MAX_CONCURRENT_INCIDENTS={storm.limit}); it is reported "
                "but applies nothing until fewer are open.",
                warning=True,
            )
            if storm.held == 0:
                self._emit(
                    "SystemWideStampede",
                    f"System-wide stampede: {storm.active + 1} policies have an incident open at once "
                    f"(limit {storm.limit}); the storm breaker holds the newest ones. The runbook's P0: "
                    "a cache stampede affecting all services.",
                    warning=True,
                )

    def report_hold(self, previous: list[StatusCondition]) -> None:
        """Held and Released events for the manual hold, from the Held condition last written."""
        was = next((c for c in previous if c.type == "Held"), None)
        was_manual = was is not None and was.status.value == "True" and was.reason == "Manual"
        if self.manual_hold and not was_manual:
            self._emit(
                "Held",
                "Held by annotation stampede.aurum.io/hold: no new phase, action or undo until it is removed.",
            )
        elif was_manual and not self.manual_hold:
            self._emit("Released", "Annotation stampede.aurum.io/hold removed: the policy acts again.")

    def close_incident(self, *, reason: str) -> None:
        incident = self.status.incident
        assert incident is not None
        duration = int((self.now - incident.started_at).total_seconds())
        entry = HistoryEntry(
            id=incident.id,
            severity=incident.severity,
            started_at=incident.started_at,
            recovered_at=incident.recovered_at,
            closed_at=self.now,
            duration_seconds=duration,
            max_phase=incident.max_phase or incident.phase,
            escalated=incident.escalated,
            manual=incident.manual_rollback,
        )
        if incident.manual_rollback:
            reason += " (rolled back by hand: stampede.aurum.io/rollback-now)"
        history = [entry, *self.status.history][:HISTORY_LIMIT]
        self.status = self.status.model_copy(
            update={"state": State.IDLE, "incident": None, "severity": "", "phase": "", "history": history}
        )
        took = format_duration(self.now - incident.started_at)
        self._emit(
            "IncidentClosed",
            f"Incident {incident.id} ({incident.severity.value}) closed after {took}: {reason}; "
            f"furthest phase {entry.max_phase or '-'}{', escalated' if incident.escalated else ''}.",
        )

    def plan_wake(self) -> None:
        incident = self.status.incident
        if incident is not None:
            self._wake(incident.next_phase_at)

    def plan_applies(self) -> None:
        incident = self.status.incident
        assert incident is not None
        current = self._phase_index(incident.phase)
        held = {c.action for c in held_changes(self.spec, self.status)}
        for phase in self.spec.phases[: current + 1]:
            for action in phase.actions:
                if action.name in held or not incident.severity.at_least(action.min_severity):
                    continue
                self.apply.append(action)
                self.phase_by_action[action.name] = phase.name
