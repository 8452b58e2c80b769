"""Spec builders, readings and a caller simulation shared by the engine tests and the benchmark.

The engine is only correct together with the way the operator calls it: record every applied
change in status, drop every undone one. `Simulation` runs the operator's own caller (`execute`)
against the in-memory actuator, wrapped in a double that fails the actions a test names, so tests
check both the decisions and what they do to the targets. Nothing here reads
files: the runbook policy is rebuilt as a dict so the tests do not depend on ../shared.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from stampede.actuators.memory import MemoryActuator, MemoryTargets
from stampede.api.spec import Action, Mode, PolicySpec
from stampede.api.status import AppliedChange, PolicyStatus, State, WorkloadStatusRef
from stampede.engine import outcomes
from stampede.engine.decide import Controls, Decision, Event, Storm, decide
from stampede.engine.outcomes import Outcome, Step
from stampede.executing import Done, execute, read_rollouts

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
MAX_REPLICAS = 50


def at(seconds: float) -> datetime:
    """A moment `seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


# -- specs -------------------------------------------------------------------------------------


def runbook_dict() -> dict[str, Any]:
    """The Aurum cache-stampede runbook policy (examples/aurum-cache-stampede.yaml) as a wire dict."""
    return {
        "mode": "Enforce",
        "pollInterval": "15s",
        "prometheus": {"url": "http://prometheus.aurum-dev.svc.cluster.local:9090", "timeout": "10s"},
        "onMetricsError": "Hold",
        "signals": [
            {
                "name": "hitRate",
                "query": "sum(rate(cache_hits_total[5m])) / (sum(rate(cache_hits_total[5m]))"
                " + sum(rate(cache_misses_total[5m])))",
            },
            {
                "name": "missRate",
                "query": "sum(rate(cache_misses_total[5m])) / (sum(rate(cache_hits_total[5m]))"
                " + sum(rate(cache_misses_total[5m])))",
            },
            {"name": "dbConnections", "query": "sum(aurum_db_connections_active)"},
            {
                "name": "spikeRatio",
                "query": "sum(rate(aurum_api_requests_total[1m])) / sum(rate(aurum_api_requests_total[5m]))",
            },
            {"name": "queueDepth", "query": "sum(aurum_scenario_queue_size)"},
        ],
        "severities": [
            {"level": "P0", "any": ["dbConnections >= 190"], "for": "1m"},
            {"level": "P1", "any": ["missRate > 0.8", "spikeRatio > 3"], "for": "1m"},
            {"level": "P2", "any": ["hitRate < 0.8", "queueDepth > 500"], "for": "2m"},
        ],
        "recovery": {"all": ["hitRate > 0.9", "spikeRatio < 1.5", "dbConnections < 150"], "for": "5m"},
        "phases": [
            {
                "name": "immediate-mitigation",
                "after": "0s",
                "actions": [
                    {
                        "name": "api-circuit-breaker-and-coalescing",
                        "configMap": {
                            "name": "aurum-api-config",
                            "data": {
                                "AURUM_API_CIRCUIT_BREAKER_ENABLED": "true",
                                "AURUM_API_CIRCUIT_BREAKER_THRESHOLD": "1000",
                                "AURUM_API_CIRCUIT_BREAKER_TIMEOUT": "30s",
                                "AURUM_API_REQUEST_COALESCING_ENABLED": "true",
                                "AURUM_API_REQUEST_COALESCING_WINDOW": "5s",
                            },
                            "restart": [{"kind": "Deployment", "name": "aurum-api"}],
                        },
                    },
                    {
                        "name": "worker-circuit-breaker",
                        "configMap": {
                            "name": "aurum-worker-config",
                            "data": {
                                "AURUM_WORKER_CIRCUIT_BREAKER_ENABLED": "true",
                                "AURUM_WORKER_CIRCUIT_BREAKER_THRESHOLD": "500",
                            },
                            "restart": [{"kind": "Deployment", "name": "aurum-worker"}],
                        },
                    },
                    {"name": "scale-api", "scale": {"kind": "Deployment", "name": "aurum-api", "replicas": 10}},
                    {"name": "scale-worker", "scale": {"kind": "Deployment", "name": "aurum-worker", "replicas": 8}},
                    {
                        "name": "scale-postgres",
                        "minSeverity": "P0",
                        "scale": {"kind": "Deployment", "name": "postgres", "replicas": 3},
                    },
                ],
            },
            {
                "name": "cache-stabilization",
                "after": "5m",
                "actions": [
                    {
                        "name": "staggered-refresh-and-ttl",
                        "configMap": {
                            "name": "cache-config",
                            "data": {
                                "CACHE_REFRESH_STRATEGY": "staggered",
                                "CACHE_STAGGER_WINDOW": "300",
                                "CACHE_REFRESH_JITTER": "60",
                                "CACHE_TTL_CRITICAL": "3600",
                                "CACHE_TTL_IMPORTANT": "1800",
                                "CACHE_TTL_REGULAR": "900",
                            },
                        },
                    },
                    {"name": "warm-cache", "job": {"fromCronJob": "cache-warming"}},
                ],
            },
            {
                "name": "load-distribution",
                "after": "15m",
                "actions": [
                    {
                        "name": "least-connections-and-queueing",
                        "configMap": {
                            "name": "aurum-api-config",
                            "data": {
                                "AURUM_API_LOAD_BALANCING_STRATEGY": "least_connections",
                                "AURUM_API_CONNECTION_POOL_SIZE": "50",
                                "AURUM_API_REQUEST_QUEUE_ENABLED": "true",
                                "AURUM_API_REQUEST_QUEUE_SIZE": "1000",
                                "AURUM_API_REQUEST_QUEUE_TIMEOUT": "30s",
                            },
                        },
                    },
                    {
                        "name": "cache-sharding",
                        "configMap": {
                            "name": "cache-config",
                            "data": {
                                "CACHE_SHARDING_ENABLED": "true",
                                "CACHE_SHARD_COUNT": "16",
                                "CACHE_SHARD_STRATEGY": "consistent_hash",
                            },
                        },
                    },
                ],
            },
        ],
        "escalation": {"after": "30m", "atSeverity": "P0"},
        "rollback": {"stepDelay": "30s"},
        "notifications": {"webhook": {"secretRef": {"name": "platform-team-webhook", "key": "url"}}},
    }


def runbook_spec(**overrides: Any) -> PolicySpec:
    """The runbook policy with top-level wire fields replaced, e.g. `runbook_spec(mode="DryRun")`."""
    data = runbook_dict()
    data.update(copy.deepcopy(overrides))
    return PolicySpec.model_validate(data)


def tiny_spec(**overrides: Any) -> PolicySpec:
    """One signal, one level, two one-action phases: for properties where fewer moving parts help."""
    data: dict[str, Any] = {
        "pollInterval": "15s",
        "signals": [{"name": "load", "query": "load"}],
        "severities": [{"level": "P2", "any": ["load > 10"], "for": "1m"}],
        "recovery": {"all": ["load < 5"], "for": "1m"},
        "phases": [
            {
                "name": "first",
                "after": "0s",
                "actions": [{"name": "flag", "configMap": {"name": "cfg", "data": {"FLAG": "on"}}}],
            },
            {
                "name": "second",
                "after": "2m",
                "actions": [{"name": "more", "scale": {"kind": "Deployment", "name": "api", "replicas": 4}}],
            },
        ],
        "rollback": {"stepDelay": "30s"},
    }
    data.update(copy.deepcopy(overrides))
    return PolicySpec.model_validate(data)


# -- readings ----------------------------------------------------------------------------------

Readings = Mapping[str, float | None]

HEALTHY: dict[str, float | None] = {
    "hitRate": 0.95,
    "missRate": 0.05,
    "dbConnections": 100.0,
    "spikeRatio": 1.0,
    "queueDepth": 10.0,
}


def readings(**changes: float | None) -> dict[str, float | None]:
    """Healthy runbook readings with some signals changed."""
    out = dict(HEALTHY)
    out.update(changes)
    return out


NEUTRAL = readings(hitRate=0.85, missRate=0.15)
"""Neither breaching any level nor recovered (hitRate between 0.8 and 0.9)."""
P2_READINGS = readings(hitRate=0.7, missRate=0.3)
"""Only P2 breaches (hitRate < 0.8)."""
P1_READINGS = readings(hitRate=0.85, missRate=0.85)
"""Only P1 breaches (missRate > 0.8; hitRate kept above P2's threshold)."""
P0_READINGS = readings(dbConnections=195.0)
"""Only P0 breaches (dbConnections >= 190)."""


# -- the caller ----------------------------------------------------------------------------------


Cluster = MemoryTargets
"""The targets, as flat data: ConfigMap data by name, replicas by workload name, created Jobs."""


@dataclass
class FailingActuator:
    """The test double: the perfect in-memory actuator, except for the actions told to fail."""

    inner: MemoryActuator
    fail_apply: set[str] = field(default_factory=set)
    """Actions whose apply fails (not recorded in status)."""
    fail_undo: set[str] = field(default_factory=set)
    """Actions whose undo fails (left in status)."""
    fail_restart: set[str] = field(default_factory=set)
    """Workloads whose rollout restart fails."""

    def apply(self, action: Action, *, incident: str, now: datetime, dry_run: bool) -> Outcome:
        if action.name in self.fail_apply:
            return outcomes.failed(action=action.name, kind=action.kind, where=action.target, what="failed (500): test")
        return self.inner.apply(action, incident=incident, now=now, dry_run=dry_run)

    def undo(self, change: AppliedChange, *, now: datetime, dry_run: bool, last: bool = True) -> Outcome:
        if change.action in self.fail_undo:
            return outcomes.rollback_failed(change, status=500, problem="test")
        return self.inner.undo(change, now=now, dry_run=dry_run, last=last)

    def reverted(self, change: AppliedChange) -> list[str] | None:
        return self.inner.reverted(change)

    def reapply(self, change: AppliedChange, *, now: datetime) -> Outcome:
        return self.inner.reapply(change, now=now)

    def landed(self, change: AppliedChange) -> bool | None:
        return self.inner.landed(change)

    def restart(self, workload: WorkloadStatusRef, *, now: datetime) -> str | None:
        if workload.name in self.fail_restart:
            return "failed (500): test"
        return self.inner.restart(workload, now=now)

    def rollout_complete(self, workload: WorkloadStatusRef) -> bool | None:
        return self.inner.rollout_complete(workload)


@dataclass
class Simulation:
    """The operator's side of `decide`, through the operator's own `execute`, against an in-memory cluster."""

    spec: PolicySpec
    status: PolicyStatus = field(default_factory=PolicyStatus)
    cluster: Cluster = field(default_factory=Cluster)
    roundtrip: bool = False
    """Pass the status through its wire form after every poll (as a restart would)."""
    fail_apply: set[str] = field(default_factory=set)
    """Actions whose apply fails (not recorded in status)."""
    fail_undo: set[str] = field(default_factory=set)
    """Actions whose undo fails (left in status)."""
    fail_restart: set[str] = field(default_factory=set)
    """Workloads whose rollout restart fails."""
    controls: Controls | None = None
    """The manual-control annotations, at every poll."""
    storm: Storm | None = None
    """The storm breaker's counts, at every poll."""
    now: datetime = T0
    decisions: list[tuple[datetime, Decision]] = field(default_factory=list)
    events: list[tuple[datetime, Event]] = field(default_factory=list)
    outcomes: list[tuple[datetime, Done]] = field(default_factory=list)
    """Every actuator outcome, as the operator would post it."""
    applies: list[tuple[datetime, str, str]] = field(default_factory=list)
    """(time, action, incident) of every successful apply."""
    undos: list[tuple[datetime, str, str]] = field(default_factory=list)
    """(time, action, incident) of every successful undo."""

    @property
    def actuator(self) -> FailingActuator:
        inner = MemoryActuator(policy="policy", max_replicas=MAX_REPLICAS, targets=self.cluster)
        return FailingActuator(
            inner, fail_apply=self.fail_apply, fail_undo=self.fail_undo, fail_restart=self.fail_restart
        )

    def poll(
        self,
        when: datetime,
        values: Readings,
        errors: Mapping[str, str] | None = None,
        *,
        controls: Controls | None = None,
        storm: Storm | None = None,
    ) -> Decision:
        self.now = when
        actuator = self.actuator
        d = decide(
            spec=self.spec,
            status=self.status,
            readings=values,
            now=when,
            errors=errors,
            rollouts=read_rollouts(self.status, actuator),
            controls=controls or self.controls,
            storm=storm or self.storm,
        )
        execution = execute(d, actuator, spec=self.spec, now=when)
        status = execution.status
        for done in execution.done:
            self.outcomes.append((when, done))
            if done.step == Step.UNDO and done.outcome.ok:
                undone = next(c for c in d.undo if c.action == done.action)
                self.undos.append((when, done.action, undone.incident))
            elif done.step == Step.APPLY and done.outcome.ok:
                assert d.incident_id is not None
                self.applies.append((when, done.action, d.incident_id))
        if self.roundtrip:
            parsed = PolicyStatus.model_validate(status.wire())
            assert parsed == status
            status = parsed
        self.status = status
        self.decisions.append((when, d))
        self.events.extend((when, event) for event in d.events)
        return d

    def run(
        self,
        *,
        start: float,
        until: float,
        values: Readings | Callable[[float], Readings],
        every: float | None = None,
        follow_wake: bool = False,
        stop: Callable[[Simulation], bool] | None = None,
    ) -> list[Decision]:
        """Poll from `start` to `until` seconds after T0 (inclusive), every pollInterval by default.

        With `follow_wake`, also poll at each `wake_at` the engine asks for, as the operator does;
        `stop` ends the run early once it returns True after a poll.
        """
        step = every if every is not None else self.spec.poll_interval.total_seconds()
        out: list[Decision] = []
        t = start
        regular = start
        repeated_at: float | None = None
        while t <= until:
            reading = values(t) if callable(values) else values
            d = self.poll(at(t), reading)
            out.append(d)
            if stop is not None and stop(self):
                break
            if t >= regular:
                regular = t + step
            nxt = regular
            if follow_wake and d.wake_at is not None:
                wake = (d.wake_at - T0).total_seconds()
                if wake <= t and repeated_at != t:
                    repeated_at = t
                    nxt = t
                elif t < wake < nxt:
                    nxt = wake
            t = nxt
        return out

    def settled(self) -> bool:
        """Idle with nothing held: every change is rolled back."""
        return self.status.state == State.IDLE and not self.status.applied and not self.status.planned

    def reasons(self, since: datetime | None = None) -> list[str]:
        return [e.reason for when, e in self.events if since is None or when >= since]

    def held(self) -> list[AppliedChange]:
        return list(self.status.planned if self.spec.mode == Mode.DRY_RUN else self.status.applied)


def open_incident(sim: Simulation, values: Readings = P2_READINGS, *, start: float = 0.0) -> float:
    """Breach from `start` until the incident opens; return the seconds (after T0) it opened at."""
    step = sim.spec.poll_interval.total_seconds()
    t = start
    while sim.status.incident is None:
        sim.poll(at(t), values)
        if sim.status.incident is not None:
            return t
        t += step
        assert t < start + 3600, "the incident never opened"
    return t
