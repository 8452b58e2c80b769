"""Who hears what, and in which shape: the notification rules without a network."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from stampede.api.spec import PolicySpec
from stampede.api.status import IncidentStatus, PolicyStatus
from stampede.engine.decide import Event
from stampede.handlers.notifying import notices, recipients
from stampede.handlers.reporting import TickReport
from stampede.notifiers import formats

from .policies import at, tiny_spec

INCIDENT = IncidentStatus(id="20240501-120100", started_at=at(60), severity="P1", phase="first", actions=["flag"])


def spec_with_targets(**escalation: Any) -> PolicySpec:
    secret = {"name": "s", "key": "k"}
    return tiny_spec(
        notifications={
            "webhook": {"secretRef": secret},
            "targets": [
                {"name": "feed", "webhook": {"secretRef": secret, "format": "json"}},
                {"name": "oncall", "pagerduty": {"routingKeySecretRef": secret}},
                {"name": "boss", "webhook": {"secretRef": secret, "format": "teams"}},
            ],
        },
        escalation=escalation
        or {"levels": [{"name": "primary", "after": "1m"}, {"name": "emergency", "after": "5m", "notify": "boss"}]},
    )


def tick(old: PolicyStatus, new: PolicyStatus, events: list[Event], *, now: datetime) -> TickReport:
    return TickReport(
        namespace="aurum",
        policy="cache",
        spec=spec_with_targets(),
        old=old,
        new=new,
        events=tuple(events),
        done=(),
        readings={},
        now=now,
    )


def notice(event: str, level: str = "", summary: str = "Incident 20240501-120100 something.") -> formats.Notice:
    return formats.Notice(
        namespace="aurum",
        policy="cache",
        incident="20240501-120100",
        event=event,
        severity="P1",
        phase="first",
        level=level,
        text="*Cache stampede detected*\nmore",
        summary=summary,
        time=at(60),
    )


@pytest.mark.parametrize(
    ("event", "level", "expected"),
    [
        ("IncidentOpened", "", ["webhook", "feed", "oncall"]),
        ("PhaseEntered", "", ["webhook", "feed", "oncall"]),
        ("Escalated", "primary", ["webhook", "feed", "oncall"]),
        ("Escalated", "emergency", ["boss"]),
        ("IncidentClosed", "", ["webhook", "feed", "oncall", "boss"]),
    ],
)
def test_a_levels_own_target_hears_only_its_escalation_and_the_close(
    event: str, level: str, expected: list[str]
) -> None:
    assert [t.name for t in recipients(spec_with_targets(), notice(event, level))] == expected


def test_the_old_webhook_field_is_one_slack_target() -> None:
    spec = tiny_spec(notifications={"webhook": {"secretRef": {"name": "s", "key": "k"}}})
    (target,) = recipients(spec, notice("IncidentOpened"))
    assert target.name == "webhook"
    assert target.webhook is not None
    assert target.webhook.format.value == "slack"


def test_messages_name_the_escalation_level_and_the_closed_incident() -> None:
    status = PolicyStatus(incident=INCIDENT)
    events = [
        Event("Escalated", "Incident 20240501-120100 escalated to level emergency (2/2): open for more than 5m."),
        Event("ActionApplied", "not a notification"),
    ]
    (escalated,) = notices(tick(status, status, events, now=at(400)))
    assert (escalated.event, escalated.level) == ("Escalated", "emergency")
    assert "Incident escalated" in escalated.text
    closing = [Event("IncidentClosed", "Incident 20240501-120100 (P1) closed after 11m.")]
    (closed,) = notices(tick(PolicyStatus(incident=INCIDENT), PolicyStatus(), closing, now=at(700)))
    assert closed.incident == INCIDENT.id
    assert "Actions taken (all rolled back):* flag" in closed.text


def test_the_json_format_has_exactly_the_documented_fields() -> None:
    body = formats.json_notice(notice("Escalated", "primary"))
    assert body == {
        "namespace": "aurum",
        "policy": "cache",
        "incident": "20240501-120100",
        "event": "Escalated",
        "severity": "P1",
        "phase": "first",
        "level": "primary",
        "message": "Incident 20240501-120100 something.",
        "time": "2024-05-01T12:01:00Z",
    }


def test_teams_gets_a_message_card_titled_like_the_slack_message() -> None:
    card = formats.teams(notice("IncidentOpened"))
    assert card["@type"] == "MessageCard"
    assert card["title"] == "Cache stampede detected"
    assert card["themeColor"] == "C62828"


def test_pagerduty_triggers_on_open_and_escalation_resolves_on_close_and_ignores_phases() -> None:
    opened = formats.pagerduty(notice("IncidentOpened"), routing_key="key", severity=None)
    assert opened is not None
    assert opened["event_action"] == "trigger"
    assert opened["dedup_key"] == "aurum/cache/20240501-120100"
    assert opened["payload"]["severity"] == "error"
    escalated = formats.pagerduty(notice("Escalated", "primary"), routing_key="key", severity="critical")
    assert escalated is not None
    assert (escalated["event_action"], escalated["payload"]["severity"]) == ("trigger", "critical")
    assert formats.pagerduty(notice("IncidentClosed"), routing_key="key", severity=None) == {
        "routing_key": "key",
        "event_action": "resolve",
        "dedup_key": "aurum/cache/20240501-120100",
    }
    assert formats.pagerduty(notice("PhaseEntered"), routing_key="key", severity=None) is None


def test_a_target_must_be_exactly_one_kind() -> None:
    secret = {"name": "s", "key": "k"}
    with pytest.raises(ValueError, match="must set exactly one of webhook, pagerduty"):
        tiny_spec(
            notifications={
                "targets": [
                    {"name": "both", "webhook": {"secretRef": secret}, "pagerduty": {"routingKeySecretRef": secret}}
                ]
            }
        )
