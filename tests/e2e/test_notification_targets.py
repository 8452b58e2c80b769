"""Notification targets through the real operator: slack, teams, json, PagerDuty, and an escalation chain.

One local receiver stands in for every target (each webhook has its own path; PagerDuty is reached through
STAMPEDE_PAGERDUTY_URL, which the session's operator points at the receiver's port). One target is
broken on purpose: remediation and the other targets must not notice.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from stampede.actuators.policies import CREDENTIALS_LABEL
from tests.e2e.conftest import HEALTHY_HIT_RATE, Case
from tests.e2e.stack import GROUP, VERSION, Stack
from tests.support.fake_http import FakeHTTPServer, Response

POLICY = "paged"
ROUTING_KEYS = {"oncall-pd": "R0UTINGKEY-ONCALL-0000000000000001", "emergency-pd": "R0UTINGKEY-EMERG-00000000000000002"}
BROKEN_URL = "http://127.0.0.1:9/hooks/SECRET-TOKEN-broken"


@dataclass
class Seen:
    case: Case
    incident: str = ""
    bodies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    applied_during: list[str] = field(default_factory=list)


def secret(case: Case, name: str, value: str, key: str = "url") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        # Only Secrets labelled for the operator are read (docs/security.md).
        "metadata": {"name": name, "namespace": case.ns, "labels": {CREDENTIALS_LABEL: "true"}},
        "data": {key: base64.b64encode(value.encode()).decode()},
    }


def webhook(name: str, fmt: str) -> dict[str, Any]:
    return {"name": name, "webhook": {"secretRef": {"name": name, "key": "url"}, "format": fmt}}


def by_path(receiver: FakeHTTPServer) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for request in receiver.requests:
        out.setdefault(request.path, []).append(json.loads(request.body))
    return out


@pytest.fixture(scope="module")
def seen(stack: Stack, pagerduty_port: int) -> Iterator[Seen]:
    receiver = FakeHTTPServer(Response(status=202, body=b'{"status":"success"}'), port=pagerduty_port)
    case = Case(stack, "notification-targets")
    out = Seen(case=case)
    try:
        stack.harness.apply(
            [
                secret(case, "chat", f"{receiver.url}/slack"),
                secret(case, "teams", f"{receiver.url}/teams"),
                secret(case, "feed", f"{receiver.url}/json"),
                secret(case, "broken", BROKEN_URL),
                *(secret(case, name, key, key="routing-key") for name, key in ROUTING_KEYS.items()),
            ]
        )
        case.create_ready(
            POLICY,
            notifications={
                "targets": [
                    webhook("chat", "slack"),
                    webhook("teams", "teams"),
                    webhook("feed", "json"),
                    webhook("broken", "slack"),
                    *(
                        {"name": name, "pagerduty": {"routingKeySecretRef": {"name": name, "key": "routing-key"}}}
                        for name in ROUTING_KEYS
                    ),
                ]
            },
            escalation={
                "levels": [
                    {"name": "primary", "atSeverity": "P1"},
                    {"name": "emergency", "after": "3s", "notify": "emergency-pd"},
                ]
            },
        )
        case.set(hit_rate=0.2)
        status = case.wait_status(
            POLICY,
            "escalated to emergency",
            lambda s: (s.get("incident") or {}).get("escalationLevel") == "emergency",
            timeout=40,
        )
        out.incident = status["incident"]["id"]
        out.applied_during = [c["action"] for c in status.get("applied") or []]
        case.set(hit_rate=HEALTHY_HIT_RATE)
        case.wait_status(POLICY, "closed", lambda s: s.get("state") == "Idle" and s.get("history"), timeout=60)
        stack.wait_for(
            "both PagerDuty targets resolved",
            lambda: sum(b["event_action"] == "resolve" for b in by_path(receiver).get("/v2/enqueue", [])) == 2,
            timeout=30,
        )
        name = f"{POLICY}-{out.incident}"

        def record_noted() -> bool:
            found = stack.custom.get_namespaced_custom_object(GROUP, VERSION, case.ns, "stampedeincidents", name)
            out.record = found
            notes = (found.get("status") or {}).get("notifications") or []
            return sum(n["event"] == "IncidentClosed" for n in notes) == 6  # every target hears the close

        stack.wait_for("every notification noted in the record", record_noted, timeout=30)
        out.bodies = by_path(receiver)
        yield out
    finally:
        case.cleanup()
        receiver.close()


def events_of(bodies: list[dict[str, Any]]) -> list[str]:
    return [b["event"] for b in bodies]


def test_a_json_target_gets_one_object_per_message_with_the_documented_fields(seen: Seen) -> None:
    bodies = seen.bodies["/json"]
    assert all(
        set(b) == {"namespace", "policy", "incident", "event", "severity", "phase", "level", "message", "time"}
        for b in bodies
    )
    assert events_of(bodies) == ["IncidentOpened", "PhaseEntered", "Escalated", "PhaseEntered", "IncidentClosed"]
    opened = bodies[0]
    assert (opened["namespace"], opened["policy"], opened["incident"]) == (seen.case.ns, POLICY, seen.incident)
    assert opened["severity"] == "P1"
    assert opened["time"].endswith("Z")
    escalated = bodies[2]
    # The emergency level has its own target: only the primary level's escalation reaches the others.
    assert escalated["level"] == "primary"
    assert "escalated to level primary (1/2)" in escalated["message"]


def test_slack_and_teams_targets_get_the_runbook_messages_in_their_format(seen: Seen) -> None:
    slack = seen.bodies["/slack"]
    assert [set(b) for b in slack] == [{"text"}] * 5
    assert "Cache stampede detected" in slack[0]["text"]
    assert "Cache stampede resolved" in slack[-1]["text"]
    teams = seen.bodies["/teams"]
    assert len(teams) == 5
    assert all(b["@type"] == "MessageCard" and b["@context"] == "https://schema.org/extensions" for b in teams)
    assert "Cache stampede detected" in teams[0]["title"]


def test_pagerduty_triggers_on_open_and_escalation_and_resolves_on_close_with_one_dedup_key(seen: Seen) -> None:
    events = seen.bodies["/v2/enqueue"]
    by_key: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_key.setdefault(event["routing_key"], []).append(event)
    oncall = by_key[ROUTING_KEYS["oncall-pd"]]
    emergency = by_key[ROUTING_KEYS["emergency-pd"]]
    assert [e["event_action"] for e in oncall] == ["trigger", "trigger", "resolve"]  # open, primary, close
    assert [e["event_action"] for e in emergency] == ["trigger", "resolve"]  # its level, close
    dedup = f"{seen.case.ns}/{POLICY}/{seen.incident}"
    assert {e["dedup_key"] for e in events} == {dedup}
    trigger = oncall[0]["payload"]
    assert trigger["severity"] == "error"  # P1
    assert trigger["source"] == f"{seen.case.ns}/{POLICY}"
    assert "emergency" in emergency[0]["payload"]["summary"]


def test_a_failing_target_is_reported_without_its_url_and_blocks_nothing(seen: Seen) -> None:
    assert {"api-config", "scale-api"} <= set(seen.applied_during)
    failed = seen.case.events(POLICY, "NotificationFailed")
    assert failed
    assert all("target broken" in e.message for e in failed)
    assert all("SECRET-TOKEN" not in e.message for e in failed)
    notes = seen.record["status"]["notifications"]
    assert {n["ok"] for n in notes if n["target"] == "broken"} == {False}
    assert {n["ok"] for n in notes if n["target"] != "broken"} == {True}


def test_secrets_never_appear_in_events_status_or_records(seen: Seen) -> None:
    texts = [e.message for e in seen.case.events(POLICY)]
    texts.append(json.dumps(seen.case.policy(POLICY)))
    texts.append(json.dumps(seen.record))
    for text in texts:
        for key in ROUTING_KEYS.values():
            assert key not in text
        assert "SECRET-TOKEN" not in text
