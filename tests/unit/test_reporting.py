"""After a tick: which runbook messages and metrics an event calls for is decided by its reason enum."""

from __future__ import annotations

import pytest

from stampede.api.reasons import Reason
from stampede.api.status import IncidentStatus, PolicyStatus, State
from stampede.engine.decide import Event
from stampede.handlers.notifying import NOTIFIED, notices
from stampede.handlers.reporting import TickReport

from .policies import at, tiny_spec

OPEN = IncidentStatus(id="i-1", started_at=at(0), severity="P2", phase="first", actions=["flag"])


def report(*events: Event, old: PolicyStatus | None = None, new: PolicyStatus | None = None) -> TickReport:
    return TickReport(
        namespace="ns",
        policy="p",
        spec=tiny_spec(),
        old=old or PolicyStatus(state=State.INCIDENT, incident=OPEN),
        new=new or PolicyStatus(state=State.INCIDENT, incident=OPEN),
        events=events,
        done=(),
        readings={},
        now=at(60),
    )


def test_the_runbook_sends_its_four_messages_and_the_storm_breakers_p0_and_only_for_those_reasons() -> None:
    assert set(NOTIFIED) == {
        Reason.INCIDENT_OPENED,
        Reason.PHASE_ENTERED,
        Reason.ESCALATED,
        Reason.INCIDENT_CLOSED,
        Reason.SYSTEM_WIDE_STAMPEDE,
    }
    sent = notices(
        report(
            Event(Reason.INCIDENT_OPENED, "opened because"),
            Event(Reason.SEVERITY_RAISED, "raised"),
            Event(Reason.PHASE_ENTERED, "entered first"),
            Event(Reason.ESCALATED, "escalated because"),
            Event(Reason.METRICS_UNAVAILABLE, "no data", warning=True),
        )
    )
    texts = [notice.text for notice in sent]
    assert [notice.event for notice in sent] == [Reason.INCIDENT_OPENED, Reason.PHASE_ENTERED, Reason.ESCALATED]
    assert [t.splitlines()[0].split("*")[1] for t in texts] == [
        "Cache stampede detected",
        "Mitigation progress",
        "Incident escalated",
    ]
    assert "opened because" in texts[0] and "entered first" in texts[1] and "escalated because" in texts[2]


def test_the_resolved_message_names_the_closed_incident_and_its_actions() -> None:
    (notice,) = notices(report(Event(Reason.INCIDENT_CLOSED, "closed after 5m"), new=PolicyStatus(state=State.IDLE)))
    text = notice.text
    assert notice.incident == "i-1"
    assert "Cache stampede resolved" in text
    assert "i-1" in text and "closed after 5m" in text
    assert "Actions taken (all rolled back):* flag" in text


def test_an_event_reason_outside_the_enum_is_refused_when_the_event_is_made() -> None:
    with pytest.raises(ValueError, match="IncidentOpend"):
        Event("IncidentOpend", "a typo would otherwise never notify anyone")
