"""Invariants of the engine and of change arithmetic, over generated readings, ConfigMaps and replica counts.

Scenarios are sequences of segments, each a kind of readings held for some polls at some spacing,
so that whole incidents (open, raise, phases, recovery, rollback, reopen) happen within one example.
"""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from stampede.api.spec import Mode, PolicySpec
from stampede.api.status import State
from stampede.engine.changes import (
    apply_merge_patch,
    apply_scale_patch,
    configmap_apply_patch,
    configmap_rollback,
    plan_configmap,
    plan_scale,
    scale_rollback,
)

from .policies import HEALTHY, Cluster, Readings, Simulation, at, readings, runbook_spec, tiny_spec

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KINDS: dict[str, Readings] = {
    "healthy": HEALTHY,
    "neutral": readings(hitRate=0.85, missRate=0.15),
    "p2": readings(hitRate=0.7, missRate=0.3),
    "p2-queue": readings(queueDepth=900.0),
    "p1": readings(hitRate=0.85, missRate=0.9),
    "p1-spike": readings(spikeRatio=5.0, hitRate=0.5),
    "p0": readings(dbConnections=200.0),
    "p0-p2": readings(dbConnections=200.0, hitRate=0.6, missRate=0.4),
    "queue-unknown": readings(queueDepth=None),
    "hit-nan": readings(hitRate=math.nan),
    "all-unknown": dict.fromkeys(HEALTHY, None),
}

BREACHING = ["p2", "p2-queue", "p1", "p1-spike", "p0", "p0-p2"]
GAPS = [1.0, 5.0, 15.0, 15.0, 15.0, 40.0]


def episodes(gaps: list[float]) -> st.SearchStrategy[list[tuple[str, int, float]]]:
    """Segments shaped like incidents: a breach long enough to open one and often to enter later phases
    (5 m, 15 m), an optional detour through any kind of readings, then healthy readings for a while,
    often long enough to recover (5 m) and start a rollback that the next episode's breach interrupts.
    Random segments of random kinds rarely do all that: most never recover, fewer re-open."""
    episode = st.tuples(
        st.tuples(st.sampled_from(BREACHING), st.integers(min_value=1, max_value=80), st.sampled_from(gaps)),
        st.lists(
            st.tuples(st.sampled_from(sorted(KINDS)), st.integers(min_value=1, max_value=10), st.sampled_from(gaps)),
            max_size=1,
        ),
        # 21 or 22 polls, 15 s apart: just past the 5 m recovery window, so the next breach meets a rollback.
        st.tuples(st.just("healthy"), st.sampled_from([10, 21, 21, 22, 22, 25, 40]), st.just(15.0)),
    )
    return st.lists(episode, min_size=1, max_size=3).map(
        lambda drawn: [segment for breach, detour, healthy in drawn for segment in (breach, *detour, healthy)]
    )


segments = st.one_of(
    episodes(GAPS),
    episodes(GAPS),
    episodes(GAPS),
    st.lists(
        st.tuples(st.sampled_from(sorted(KINDS)), st.integers(min_value=1, max_value=30), st.sampled_from(GAPS)),
        min_size=1,
        max_size=8,
    ),
)
"""Three in four incident-shaped scenarios, else segments of any kind in any order."""
specs = st.builds(
    lambda mode, on_error, step, suspend: runbook_spec(
        mode=mode, onMetricsError=on_error, suspend=suspend, rollback={"stepDelay": step}
    ),
    st.sampled_from(["Enforce", "Enforce", "Enforce", "DryRun"]),
    st.sampled_from(["Hold", "Continue"]),
    st.sampled_from(["0s", "10s", "30s", "2m"]),
    st.sampled_from([False, False, False, True]),
)
"""Three in four Enforce and three in four not suspended: the cases that change the cluster come first."""


class Reached:
    """Which parts of the lifecycle the examples of one property reached, asserted after the run.

    A strategy narrowed by accident (a sampled list shortened, a bound lowered) leaves a property
    test green and vacuous; counting what the examples did and asserting a share of them catches it.
    `event` puts the same cases in hypothesis' statistics (`--hypothesis-show-statistics`).
    """

    CASES = ("enforced, not suspended", "changed the cluster", "several phases", "rolled back", "re-opened in rollback")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples = 0

    def record(self, sim: Simulation, *, changed_cluster: bool | None = None) -> None:
        self.examples += 1
        spec = sim.spec
        closing = [e.message for _, e in sim.events if e.reason == "IncidentClosed"]
        seen = {
            "enforced, not suspended": spec.mode == Mode.ENFORCE and not spec.suspend,
            "changed the cluster": bool(changed_cluster),
            "several phases": any(e.reason == "PhaseEntered" and "(2/" in e.message for _, e in sim.events),
            "rolled back": any(d.status.state == State.ROLLING_BACK for _, d in sim.decisions),
            "re-opened in rollback": any("a new incident opened during rollback" in m for m in closing),
        }
        for case, happened in seen.items():
            if happened:
                event(case)
                self.counts[case] += 1

    def assert_share(self, share: float, cases: tuple[str, ...] = CASES) -> None:
        """At least `share` of the examples (and at least one) reached each case. The shares sit at about a
        third of what random runs reach, so they fail for a narrowed strategy, not for an unlucky seed; in
        CI hypothesis derandomizes, so the run is the same every time."""
        assert self.examples >= 50, self.examples
        for case in cases:
            assert self.counts[case] >= max(1.0, share * self.examples), (case, dict(self.counts), self.examples)


def timeline(plan: list[tuple[str, int, float]]) -> list[tuple[float, Readings]]:
    """(seconds after T0, readings) of every poll of a scenario."""
    out: list[tuple[float, Readings]] = []
    t = 0.0
    for kind, count, gap in plan:
        for _ in range(count):
            out.append((t, KINDS[kind]))
            t += gap
    return out


def phase_index(spec: PolicySpec, name: str) -> int:
    return next((i for i, phase in enumerate(spec.phases) if phase.name == name), -1)


# -- flapping ------------------------------------------------------------------------------------

BREACH = {"hitRate": 0.5, "queueDepth": 900.0, "missRate": 0.9, "spikeRatio": 5.0, "dbConnections": 200.0}
"""A breaching value per signal; in the runbook each signal belongs to one condition of one level."""
WINDOW = {"hitRate": 120.0, "queueDepth": 120.0, "missRate": 60.0, "spikeRatio": 60.0, "dbConnections": 60.0}
"""The `for` of the level each signal's condition belongs to."""


@SETTINGS
@given(
    polls=st.lists(
        st.tuples(
            st.floats(min_value=0.5, max_value=45.0),
            st.dictionaries(st.sampled_from(sorted(BREACH)), st.sampled_from(["breach", "unknown"]), max_size=5),
        ),
        min_size=1,
        max_size=120,
    ),
    on_error=st.sampled_from(["Hold", "Continue"]),
)
def test_a_signal_flapping_faster_than_for_never_opens_an_incident(
    polls: list[tuple[float, dict[str, str]]], on_error: str
) -> None:
    sim = Simulation(runbook_spec(onMetricsError=on_error))
    run_start: dict[str, float] = {}
    t = 0.0
    for gap, wanted in polls:
        t += gap
        values: dict[str, float | None] = dict(HEALTHY)
        for signal, what in wanted.items():
            if what == "unknown":
                values[signal] = None
                continue
            # Keep every run of breaching polls of one condition shorter than its level's `for`.
            start = run_start.get(signal, t)
            if t - start < WINDOW[signal]:
                values[signal] = BREACH[signal]
        for signal in BREACH:
            if values[signal] == BREACH[signal]:
                run_start.setdefault(signal, t)
            else:
                run_start.pop(signal, None)
        d = sim.poll(at(t), values)
        assert d.status.state == State.IDLE
        assert d.apply == ()
    assert "IncidentOpened" not in sim.reasons()


# -- monotonic incidents -------------------------------------------------------------------------


def test_phases_never_go_backwards_and_severity_never_falls_inside_an_incident() -> None:
    reached = Reached()

    @SETTINGS
    @given(spec=specs, plan=segments, suspend_from=st.one_of(st.none(), st.integers(min_value=0, max_value=150)))
    def check(spec: PolicySpec, plan: list[tuple[str, int, float]], suspend_from: int | None) -> None:
        sim = Simulation(spec)
        last: dict[str, tuple[int, int, bool]] = {}
        for i, (t, values) in enumerate(timeline(plan)):
            if i == suspend_from:
                sim.spec = spec.model_copy(update={"suspend": True})
            d = sim.poll(at(t), values)
            # An immediate second call is only worth asking for right after an undo (to close at once).
            assert d.wake_at is None or d.wake_at > at(t) or d.undo
            incident = d.status.incident
            if incident is None:
                continue
            now = (phase_index(spec, incident.phase), incident.severity.rank, incident.escalated)
            if incident.id in last:
                phase, rank, escalated = last[incident.id]
                assert now[0] >= phase
                assert now[1] >= rank
                assert now[2] >= escalated
            last[incident.id] = now
            assert d.status.severity == incident.severity.value
        opened = Counter(e.message.split()[1] for _, e in sim.events if e.reason == "IncidentOpened")
        assert all(count == 1 for count in opened.values())
        entered = Counter(
            (e.message.split()[1], e.message.split()[4]) for _, e in sim.events if e.reason == "PhaseEntered"
        )
        assert all(count == 1 for count in entered.values())
        reached.record(sim)

    check()
    reached.assert_share(0.1, ("enforced, not suspended", "several phases"))
    reached.assert_share(0.05, ("rolled back",))
    reached.assert_share(0.01, ("re-opened in rollback",))


@SETTINGS
@given(
    plan=st.lists(
        st.tuples(
            st.sampled_from([1.0, 7.0, 20.0, None]),
            st.integers(min_value=1, max_value=8),
            st.sampled_from([1.0, 15.0, 60.0]),
            st.booleans(),
        ),
        min_size=1,
        max_size=20,
    ),
    step=st.sampled_from(["0s", "30s"]),
    fail_undo=st.booleans(),
)
@example(plan=[(20.0, 5, 15.0, False), (1.0, 2, 60.0, True)], step="0s", fail_undo=False)  # suspended last step
def test_the_engine_asks_for_an_immediate_call_only_right_after_asking_for_an_undo(
    plan: list[tuple[float | None, int, float, bool]], step: str, fail_undo: bool
) -> None:
    # The runner sleeps until wake_at; `now` without an undo to follow up would be a busy loop.
    specs_by_suspend = {s: tiny_spec(suspend=s, rollback={"stepDelay": step}) for s in (False, True)}
    sim = Simulation(specs_by_suspend[False], fail_undo={"flag", "more"} if fail_undo else set())
    t = 0.0
    for load, count, gap, suspend in plan:
        sim.spec = specs_by_suspend[suspend]
        for _ in range(count):
            d = sim.poll(at(t), {"load": load})
            assert d.wake_at is None or d.wake_at > at(t) or d.undo
            t += gap


# -- ConfigMap arithmetic ------------------------------------------------------------------------

keys = st.sampled_from([f"K{i}" for i in range(8)])
values_ = st.sampled_from(["a", "b", "c", "true", "false", "", "30s"])
configmaps = st.dictionaries(keys, values_, max_size=8)
wanted_data = st.dictionaries(keys, values_, min_size=1, max_size=8)


@SETTINGS
@given(current=configmaps, wanted=wanted_data)
def test_rolling_back_an_applied_configmap_change_restores_it_exactly(
    current: dict[str, str], wanted: dict[str, str]
) -> None:
    original, applied = plan_configmap(current, wanted)
    changed = apply_merge_patch(current, configmap_apply_patch(applied))
    assert changed == {**current, **wanted}
    patch, skipped = configmap_rollback(changed, original, applied)
    assert skipped == []
    assert apply_merge_patch(changed, patch) == current


@SETTINGS
@given(current=configmaps, changes=st.lists(wanted_data, min_size=1, max_size=4))
def test_stacked_configmap_changes_rolled_back_newest_first_restore_it_exactly(
    current: dict[str, str], changes: list[dict[str, str]]
) -> None:
    data = dict(current)
    records = []
    for wanted in changes:
        original, applied = plan_configmap(data, wanted)
        records.append((original, applied))
        data = apply_merge_patch(data, configmap_apply_patch(applied))
    for original, applied in reversed(records):
        patch, skipped = configmap_rollback(data, original, applied)
        assert skipped == []
        data = apply_merge_patch(data, patch)
    assert data == current


@SETTINGS
@given(current=configmaps, wanted=wanted_data, data=st.data())
def test_rollback_skips_exactly_the_keys_edited_by_someone_else_and_leaves_their_value(
    current: dict[str, str], wanted: dict[str, str], data: st.DataObject
) -> None:
    original, applied = plan_configmap(current, wanted)
    changed = apply_merge_patch(current, configmap_apply_patch(applied))
    edited = data.draw(st.sets(st.sampled_from(sorted(applied))) if applied else st.just(set()), label="edited")
    foreign: dict[str, str | None] = {}
    for key in sorted(edited):
        # None: the foreign edit deleted the key.
        foreign[key] = data.draw(
            st.one_of(st.none(), values_.filter(lambda v, k=key: v != applied[k])), label=f"foreign {key}"
        )
    changed = apply_merge_patch(changed, foreign)
    patch, skipped = configmap_rollback(changed, original, applied)
    assert sorted(skipped) == sorted(edited)
    restored = apply_merge_patch(changed, patch)
    for key in set(current) | set(wanted):
        if key in edited:
            assert restored.get(key) == foreign[key]
        else:
            assert restored.get(key) == current.get(key)


# -- scale arithmetic ----------------------------------------------------------------------------

counts = st.one_of(st.none(), st.integers(min_value=0, max_value=200))
"""A replica count or HPA minReplicas; None: the field is absent (the API server reads it as 1)."""
fields = st.sampled_from(["replicas", "minReplicas"])
targets = st.integers(min_value=1, max_value=200)


@SETTINGS
@given(field=fields, current=counts, wanted=targets, cap=targets)
def test_scale_rollback_is_the_exact_inverse_of_scaling_up(
    field: str, current: int | None, wanted: int, cap: int
) -> None:
    original, applied = plan_scale(field=field, current=current, wanted=wanted, cap=cap)
    before = {field: current}
    if not applied:  # already at or above the (capped) target: nothing to change, nothing to undo
        assert (current if current is not None else 1) >= min(wanted, cap)
        return
    assert int(applied[field]) == min(wanted, cap) > (current if current is not None else 1), "never scales down"
    changed = apply_scale_patch(before, applied)
    patch, skipped = scale_rollback(changed, original, applied)
    assert skipped == []
    assert apply_scale_patch(changed, patch) == before


@SETTINGS
@given(field=fields, current=counts, changes=st.lists(targets, min_size=1, max_size=4), cap=targets)
def test_stacked_scale_changes_rolled_back_newest_first_restore_the_count_exactly(
    field: str, current: int | None, changes: list[int], cap: int
) -> None:
    state = {field: current}
    records = []
    for wanted in changes:
        original, applied = plan_scale(field=field, current=state[field], wanted=wanted, cap=cap)
        records.append((original, applied))
        state = apply_scale_patch(state, applied)
    for original, applied in reversed(records):
        patch, skipped = scale_rollback(state, original, applied)
        assert skipped == []
        state = apply_scale_patch(state, patch)
    assert state == {field: current}


@SETTINGS
@given(field=fields, current=counts, wanted=targets, cap=targets, foreign=counts)
def test_scale_rollback_skips_a_count_someone_else_changed_and_leaves_it(
    field: str, current: int | None, wanted: int, cap: int, foreign: int | None
) -> None:
    original, applied = plan_scale(field=field, current=current, wanted=wanted, cap=cap)
    if not applied or str(foreign) == applied[field]:
        return
    changed = apply_scale_patch(apply_scale_patch({field: current}, applied), {field: foreign})
    patch, skipped = scale_rollback(changed, original, applied)
    assert skipped == [field]
    assert apply_scale_patch(changed, patch) == {field: foreign}


# -- restarts ------------------------------------------------------------------------------------


ROUNDTRIP_GAPS = [0.25, 1.5, 15.0, 15.0, 33.333]
"""Sub-second and non-round gaps: the timestamps a wire round-trip could truncate."""


def test_continuing_from_a_round_tripped_status_gives_the_same_decisions() -> None:
    reached = Reached()

    @SETTINGS
    @given(
        spec=specs,
        plan=st.one_of(
            episodes(ROUNDTRIP_GAPS),
            episodes(ROUNDTRIP_GAPS),
            episodes(ROUNDTRIP_GAPS),
            st.lists(
                st.tuples(
                    st.sampled_from(sorted(KINDS)),
                    st.integers(min_value=1, max_value=30),
                    st.sampled_from(ROUNDTRIP_GAPS),
                ),
                min_size=1,
                max_size=8,
            ),
        ),
    )
    def check(spec: PolicySpec, plan: list[tuple[str, int, float]]) -> None:
        in_memory = Simulation(spec)
        restarted = Simulation(spec, roundtrip=True)  # parses status.wire() after every poll, asserting equality
        for t, values in timeline(plan):
            expected = in_memory.poll(at(t), values)
            got = restarted.poll(at(t), values)
            assert got == expected
            assert restarted.status == in_memory.status
        reached.record(in_memory)

    check()
    reached.assert_share(0.1, ("enforced, not suspended", "several phases"))
    reached.assert_share(0.05, ("rolled back",))
    reached.assert_share(0.01, ("re-opened in rollback",))


# -- rollback completeness -------------------------------------------------------------------------


def test_every_applied_change_is_undone_exactly_once_after_recovery() -> None:
    reached = Reached()

    @SETTINGS
    @given(spec=specs, plan=segments)
    def check(spec: PolicySpec, plan: list[tuple[str, int, float]]) -> None:
        cluster = Cluster(
            configmaps={
                "aurum-api-config": {"AURUM_API_CIRCUIT_BREAKER_ENABLED": "false", "OTHER": "x"},
                "aurum-worker-config": {},
                "cache-config": {"CACHE_TTL_REGULAR": "900"},
            },
            replicas={"aurum-api": 3, "aurum-worker": 12, "postgres": 1},
        )
        before = cluster.snapshot()
        sim = Simulation(spec, cluster=cluster, roundtrip=True)
        moments = timeline(plan)
        changed = False
        for t, values in moments:
            sim.poll(at(t), values)
            changed = changed or cluster.snapshot() != before
        end = moments[-1][0] + 15
        sim.run(start=end, until=end + 4 * 3600, values=HEALTHY, follow_wake=True, stop=Simulation.settled)
        assert sim.status.state == State.IDLE
        assert sim.status.applied == []
        assert sim.status.planned == []
        applied = Counter((action, incident) for _, action, incident in sim.applies)
        undone = Counter((action, incident) for _, action, incident in sim.undos)
        assert max(applied.values(), default=0) <= 1
        assert max(undone.values(), default=0) <= 1
        jobs = {a.name for _, a in spec.actions() if a.job is not None}
        # Job records are dropped, not undone, when a new incident opens during a rollback.
        assert {k for k in applied if k[0] not in jobs} == {k for k in undone if k[0] not in jobs}
        assert set(undone) <= set(applied)
        assert cluster.snapshot() == before
        if spec.mode == Mode.DRY_RUN or spec.suspend:
            assert not changed  # DryRun and suspend never touch the targets
        reached.record(sim, changed_cluster=changed)

    check()
    # The cluster check above is only as strong as the share of examples that changed the cluster.
    reached.assert_share(0.25, ("enforced, not suspended", "changed the cluster", "rolled back"))
    reached.assert_share(0.1, ("several phases",))
    reached.assert_share(0.01, ("re-opened in rollback",))
