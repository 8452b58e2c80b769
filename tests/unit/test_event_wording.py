"""Event and condition messages say what happened, in words a person on call can trust.

Each test here stands for a message that once said something false: an action skipped for its
`minSeverity` listed as if it ran, an escalation "severity P0 reached P0", and a DryRun policy whose
Suspended condition claimed that changes were made.
"""

from __future__ import annotations

from stampede.api.status import PolicyStatus, StatusCondition

from .policies import P0_READINGS, P2_READINGS, Simulation, at, open_incident, runbook_spec


def _condition(status: PolicyStatus, type_: str) -> StatusCondition:
    return next(c for c in status.conditions if c.type == type_)


def _messages(sim: Simulation, reason: str) -> list[str]:
    return [event.message for _, event in sim.events if event.reason == reason]


def test_phase_entered_names_actions_below_their_min_severity_as_skipped() -> None:
    sim = Simulation(runbook_spec())
    start = open_incident(sim, P2_READINGS)
    sim.run(start=start + 15, until=start + 1200, values=P2_READINGS)
    with_postgres = [message for message in _messages(sim, "PhaseEntered") if "scale-postgres" in message]
    assert with_postgres, _messages(sim, "PhaseEntered")
    for message in with_postgres:
        taken, _, skipped = message.partition("; skipped at P2: ")
        assert "scale-postgres" not in taken
        assert "scale-postgres (minSeverity P0)" in skipped


def test_phase_entered_in_a_p0_incident_lists_every_action_and_skips_none() -> None:
    sim = Simulation(runbook_spec())
    start = open_incident(sim, P0_READINGS)
    sim.run(start=start + 15, until=start + 1200, values=P0_READINGS)
    messages = _messages(sim, "PhaseEntered")
    assert any("scale-postgres" in message for message in messages)
    assert not any("skipped" in message for message in messages)


def test_escalation_by_severity_does_not_say_a_severity_reached_itself() -> None:
    sim = Simulation(runbook_spec())
    open_incident(sim, P0_READINGS)
    [message] = _messages(sim, "Escalated")
    assert "P0 reached P0" not in message
    assert "severity P0 is the escalation severity" in message


def test_escalation_by_a_severity_above_the_threshold_names_both() -> None:
    sim = Simulation(runbook_spec(escalation={"after": "1h", "atSeverity": "P1"}))
    open_incident(sim, P0_READINGS)
    [message] = _messages(sim, "Escalated")
    assert "severity P0 is above the escalation severity P1" in message


def test_escalation_by_age_says_how_long_the_incident_was_open() -> None:
    sim = Simulation(runbook_spec())
    start = open_incident(sim, P2_READINGS)
    sim.run(start=start + 15, until=start + 1800, values=P2_READINGS)
    [message] = _messages(sim, "Escalated")
    assert "open for more than 30m" in message


def test_the_suspended_condition_of_a_dry_run_policy_says_no_change_is_made() -> None:
    sim = Simulation(runbook_spec(mode="DryRun"))
    sim.poll(at(0), P2_READINGS)
    suspended = _condition(sim.status, "Suspended")
    assert suspended.status.value == "False"
    assert "none is made" in suspended.message
    assert "Changes are made" not in suspended.message


def test_the_suspended_condition_of_an_enforcing_policy_says_changes_are_made() -> None:
    sim = Simulation(runbook_spec())
    sim.poll(at(0), P2_READINGS)
    assert _condition(sim.status, "Suspended").message == "Changes are made as the policy prescribes."


def test_signals_failing_for_one_reason_name_that_reason_once() -> None:
    sim = Simulation(runbook_spec())
    error = "Prometheus at http://prometheus:9090 is unreachable: connection refused"
    sim.poll(at(0), dict.fromkeys(P2_READINGS), errors=dict.fromkeys(P2_READINGS, error))
    message = _condition(sim.status, "MetricsAvailable").message
    assert message.count("connection refused") == 1, message
    assert all(name in message for name in P2_READINGS)


def test_signals_failing_for_different_reasons_keep_each_reason_beside_its_signals() -> None:
    sim = Simulation(runbook_spec())
    names = list(P2_READINGS)
    errors = {name: "empty result" for name in names} | {names[0]: "parse error"}
    sim.poll(at(0), dict.fromkeys(names), errors=errors)
    message = _condition(sim.status, "MetricsAvailable").message
    assert f"{names[0]} (parse error)" in message
    assert message.count("empty result") == 1
