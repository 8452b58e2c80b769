"""A corpus of hostile policies through the real API path, with an operator restricted to one Prometheus.

The harness's custom-resource schema validation is switched off here (HARNESS_STRICTNESS), so every policy
reaches the operator as it would through a CRD applied without its schema; a real server with the CRD's
schema refuses most of them before the operator sees them. Each must end with `Ready=False`,
reason `InvalidSpec` and a message naming the field, or be run safely (extreme but valid values, replicas
capped by STAMPEDE_MAX_REPLICAS); the operator process stays up, never queries a URL outside the allow-list,
never touches another namespace, and a normal policy next to the corpus keeps opening and closing incidents.
"""

from __future__ import annotations

import copy
import http.server
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import policies
from tests.e2e.stack import Stack
from tests.faults.helpers import HEALTHY, UNHEALTHY, Case, assert_phase_one_applied, assert_restored, condition
from tests.harness.store import Strictness
from tests.support.prometheus import free_port

ALLOW_OWN_PROMETHEUS = True
HARNESS_STRICTNESS = Strictness(custom_resource_schemas=False)
OPERATOR_ENV = {"STAMPEDE_MAX_REPLICAS": "7"}
CONDITION_MESSAGE_MAX = 32768  # metav1.Condition.message maxLength


class Bait:
    """An HTTP server no policy may reach: every request to it would be SSRF through a policy."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'{"status":"success","data":{"resultType":"scalar","result":[0,"0.1"]}}')

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def bait() -> Iterator[Bait]:
    server = Bait()
    yield server
    server.close()


def _spec(case: Case) -> dict[str, Any]:
    spec: dict[str, Any] = policies.policy("x", case.ns, case.label, phases=[policies.phase_one()])["spec"]
    return spec


def _with(case: Case, edit: Any) -> dict[str, Any]:
    spec = copy.deepcopy(_spec(case))
    edit(spec)
    return spec


def _action(spec: dict[str, Any], action: dict[str, Any]) -> None:
    spec["phases"][0]["actions"][0] = {"name": "hostile", **action}


def _invalid_corpus(case: Case, stack: Stack, bait: Bait) -> dict[str, tuple[dict[str, Any], str]]:
    """policy name → (spec, the field the InvalidSpec message must name)."""
    assert stack.prometheus is not None
    prom = stack.prometheus.url
    port = stack.prometheus.port
    cm = {"data": {"K": "v"}}
    return {
        "huge-replicas": (
            _with(
                case, lambda s: _action(s, {"scale": {"kind": "Deployment", "name": policies.API, "replicas": 10**12}})
            ),
            "spec.phases.0.actions.0.scale.replicas",
        ),
        "infinite-threshold": (
            _with(case, lambda s: s["severities"][1].update(any=["hitRate < 1e309"])),
            "spec.severities.1.any.0",
        ),
        "ten-thousand-signals": (
            _with(
                case,
                lambda s: s.update(
                    signals=[*s["signals"], *({"name": f"s{i}", "query": f"vector({i})"} for i in range(10_000))]
                ),
            ),
            "spec.signals",
        ),
        "unicode-signal": (
            _with(case, lambda s: s["signals"].append({"name": "hitRaté😀", "query": "vector(1)"})),
            "spec.signals.2.name",
        ),
        "unicode-action": (
            _with(case, lambda s: s["phases"][0]["actions"][0].update(name="ação-💥")),
            "spec.phases.0.actions.0.name",
        ),
        "url-port-suffix": (
            _with(case, lambda s: s.update(prometheus={"url": f"http://127.0.0.1:{port}.evil.example"})),
            "spec.prometheus.url",
        ),
        "url-userinfo": (
            _with(case, lambda s: s.update(prometheus={"url": f"http://x@127.0.0.1:{bait.port}/"})),
            "spec.prometheus.url",
        ),
        "url-userinfo-allowed-prefix": (
            _with(case, lambda s: s.update(prometheus={"url": f"{prom}@127.0.0.1:{bait.port}/"})),
            "spec.prometheus.url",
        ),
        "url-elsewhere": (
            _with(case, lambda s: s.update(prometheus={"url": f"http://127.0.0.1:{bait.port}/"})),
            "spec.prometheus.url",
        ),
        "url-longer-port": (_with(case, lambda s: s.update(prometheus={"url": f"{prom}0"})), "spec.prometheus.url"),
        "cm-dotdot": (
            _with(case, lambda s: _action(s, {"configMap": {"name": "../other-ns/cm", **cm}})),
            "spec.phases.0.actions.0.configMap.name",
        ),
        "cm-slash": (
            _with(case, lambda s: _action(s, {"configMap": {"name": "other-ns/cm", **cm}})),
            "spec.phases.0.actions.0.configMap.name",
        ),
        "cm-only-dots": (
            _with(case, lambda s: _action(s, {"configMap": {"name": "..", **cm}})),
            "spec.phases.0.actions.0.configMap.name",
        ),
        "cm-key-traversal": (
            _with(case, lambda s: _action(s, {"configMap": {"name": policies.API_CONFIG, "data": {"../K": "v"}}})),
            "spec.phases.0.actions.0.configMap.data",
        ),
        "scale-slash": (
            _with(
                case,
                lambda s: _action(s, {"scale": {"kind": "Deployment", "name": "other-ns/aurum-api", "replicas": 2}}),
            ),
            "spec.phases.0.actions.0.scale.name",
        ),
        "job-traversal": (
            _with(case, lambda s: _action(s, {"job": {"fromCronJob": "../other-ns/cache-warming"}})),
            "spec.phases.0.actions.0.job.fromCronJob",
        ),
        "restart-slash": (
            _with(
                case,
                lambda s: s["phases"][0]["actions"][0]["configMap"].update(
                    restart=[{"kind": "Deployment", "name": "../other-ns/aurum-api"}]
                ),
            ),
            "spec.phases.0.actions.0.configMap.restart.0.name",
        ),
    }


def _create(stack: Stack, case: Case, name: str, spec: dict[str, Any]) -> None:
    stack.apply_policy(
        {
            "apiVersion": "stampede.aurum.io/v1alpha1",
            "kind": "StampedePolicy",
            "metadata": {"name": name, "namespace": case.ns},
            "spec": spec,
        }
    )


def test_hostile_policies_are_rejected_naming_the_field_while_a_normal_policy_keeps_working(
    case: Case, stack: Stack, bait: Bait
) -> None:
    assert stack.operator is not None and stack.operator.process is not None
    other = Case(stack, "other-ns")  # what the traversal names would reach, were they not rejected
    other_before = other.snapshot()
    before = case.snapshot()
    corpus = _invalid_corpus(case, stack, bait)
    for name, (spec, _) in corpus.items():
        _create(stack, case, name, spec)
    case.create_ready("normal", phases=[policies.phase_one()])

    for name, (_, field) in corpus.items():
        status = case.wait_status(
            name, "Ready=False InvalidSpec", lambda s: condition(s, "Ready").get("reason") == "InvalidSpec", timeout=60
        )
        ready = condition(status, "Ready")
        assert ready["status"] == "False"
        # `spec.a[0].b` (lint's format) and `spec.a.0.b` both name the field.
        assert field in re.sub(r"\[(\d+)\]", r".\1", ready["message"]), f"{name}: {ready['message'][:500]}"
        assert len(ready["message"]) <= CONDITION_MESSAGE_MAX, f"{name}: {len(ready['message'])} characters"
        assert any(e.reason == "InvalidSpec" for e in case.events(name)), name
        assert not status.get("applied") and status.get("state", "Idle") == "Idle"

    # The normal policy next to the corpus still runs whole incidents.
    case.set(hit_rate=UNHEALTHY)
    case.wait_status("normal", "incident with phase one applied", lambda s: len(s.get("applied") or []) == 2)
    assert_phase_one_applied(before, case.snapshot())
    case.set(hit_rate=HEALTHY)
    case.wait_status("normal", "incident closed", lambda s: s.get("state") == "Idle" and s.get("history"), timeout=60)
    after = case.snapshot()
    assert_restored(before, after)
    assert_restored(other_before, other.snapshot())
    assert other.snapshot()["Jobs"] == []
    assert bait.requests == [], f"a policy made the operator query a URL outside the allow-list: {bait.requests}"
    assert stack.operator.process.poll() is None, "the operator process died"


def test_extreme_but_valid_values_run_safely_and_replicas_are_capped(case: Case, stack: Stack, bait: Bait) -> None:
    assert stack.operator is not None and stack.operator.process is not None
    assert stack.prometheus is not None
    before = case.snapshot()
    capped = _with(
        case,
        lambda s: s["phases"][0]["actions"].__setitem__(
            1, {"name": "scale-api", "scale": {"kind": "Deployment", "name": policies.API, "replicas": 100000}}
        ),
    )
    capped["severities"][1]["any"] = ["hitRate < 0.5", "db >= 1e308", "db <= -1e308"]
    _create(stack, case, "capped", capped)
    regex = _with(case, lambda s: s["signals"].append({"name": "greedy", "query": '{__name__=~"(a|b|c)*.*.*.*"}'}))
    _create(stack, case, "greedy-regex", regex)
    unicode_query = _with(
        case,
        lambda s: s["signals"].append({"name": "uni", "query": 'sum(e2e_hit_rate{case="ünïcødé-😀-\\"quoted\\""})'}),
    )
    _create(stack, case, "unicode-query", unicode_query)
    slow = _with(case, lambda s: s.update(pollInterval="8760h"))  # the longest duration allowed
    _create(stack, case, "very-slow-poll", slow)
    odd_url = f"{stack.prometheus.url}/@127.0.0.1:{bait.port}/"
    allowed_path = _with(case, lambda s: s.update(prometheus={"url": odd_url}))
    _create(stack, case, "allowed-host-odd-path", allowed_path)

    for name in ("capped", "greedy-regex", "unicode-query", "very-slow-poll", "allowed-host-odd-path"):
        status = case.wait_status(
            name, "polled", lambda s: condition(s, "Ready").get("status") == "True" and s.get("signals"), timeout=60
        )
        signals = {s["name"]: s for s in status["signals"]}
        if name in ("greedy-regex", "unicode-query"):
            odd = signals["greedy" if name == "greedy-regex" else "uni"]
            assert odd["value"] == "unknown" and odd.get("error"), odd  # many series / no series: never 0
            assert condition(status, "MetricsAvailable").get("status") == "False"
        if name == "allowed-host-odd-path":
            assert all(s["value"] == "unknown" for s in status["signals"])

    case.set(hit_rate=UNHEALTHY)
    opened = case.wait_status("capped", "phase one applied", lambda s: len(s.get("applied") or []) == 2)
    assert case.stack.replicas(case.ns, policies.API) == 7
    assert {c["action"]: c["applied"] for c in opened["applied"]}["scale-api"] == {"replicas": "7"}
    assert any("capped" in e.message for e in case.events("capped", "ActionApplied"))
    case.set(hit_rate=HEALTHY)
    case.wait_status("capped", "incident closed", lambda s: s.get("state") == "Idle" and s.get("history"), timeout=60)
    for name in ("greedy-regex", "unicode-query", "very-slow-poll", "allowed-host-odd-path"):
        assert not case.status(name).get("applied"), name  # Hold: unknown signals open nothing
    assert_restored(before, case.snapshot())
    assert bait.requests == [], bait.requests
    assert stack.operator.process.poll() is None


def test_a_duration_too_large_to_represent_is_reported_as_invalid_spec(case: Case, stack: Stack) -> None:
    _create(stack, case, "overflow-poll", _with(case, lambda s: s.update(pollInterval="9999999999999h")))
    status = case.wait_status("overflow-poll", "Ready=False", lambda s: condition(s, "Ready"), timeout=10)
    ready = condition(status, "Ready")
    assert ready["reason"] == "InvalidSpec" and "spec.pollInterval" in ready["message"]


def test_a_huge_escalation_delay_does_not_stop_the_runbook(case: Case, stack: Stack) -> None:
    # The longest duration allowed (8760h) is still added to timestamps at every poll of an incident.
    before = case.snapshot()
    _create(stack, case, "far-escalation", _with(case, lambda s: s.update(escalation={"after": "8760h"})))
    case.wait_status("far-escalation", "Ready", lambda s: condition(s, "Ready").get("status") == "True")
    case.set(hit_rate=UNHEALTHY)
    status = case.wait_status(
        "far-escalation", "incident with phase one applied", lambda s: len(s.get("applied") or []) == 2, timeout=30
    )
    assert status["incident"].get("escalated", False) is False
    assert condition(status, "Escalated").get("status") == "False"
    assert_phase_one_applied(before, case.snapshot())
    case.set(hit_rate=HEALTHY)
    case.wait_status(
        "far-escalation", "incident closed", lambda s: s.get("state") == "Idle" and s.get("history"), timeout=60
    )
    assert_restored(before, case.snapshot())
