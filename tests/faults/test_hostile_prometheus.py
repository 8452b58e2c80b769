"""A hostile Prometheus through the real operator: it must neither starve other tenants nor fill memory.

One `stampede run` process for the module (tests/faults/conftest.py), policies pointing at local servers
that misbehave on purpose, next to a healthy policy reading the real Prometheus. The operator's memory is
read from /proc (VmHWM, its peak resident set), because memory is a correctness limit here: the
Deployment's limit is 512 Mi, and a policy must not be able to push the operator past it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.faults.helpers import HEALTHY, UNHEALTHY, Case, condition
from tests.support.fake_http import FakeHTTPServer, HangingServer, Response, vector_response

# Policies of this module point at stand-in servers on random ports.
OPERATOR_ENV = {"STAMPEDE_ALLOWED_PROMETHEUS_URLS": "*"}

pytestmark = pytest.mark.timeout(240)

PEAK_RSS_BOUND = 300 * 1024 * 1024
"""Far below the 512 Mi limit and far below the 300 MiB a body read whole would cost on its own."""


def _peak_rss(case: Case) -> int:
    operator = case.stack.operator
    assert operator is not None and operator.process is not None
    for line in Path(f"/proc/{operator.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def _signal(status: dict[str, object], name: str) -> dict[str, str]:
    signals = status.get("signals") or []
    assert isinstance(signals, list)
    return next((s for s in signals if s.get("name") == name), {})


def test_a_hung_prometheus_with_a_long_timeout_does_not_starve_a_healthy_policy(case: Case) -> None:
    with HangingServer() as hung:
        case.create_ready("healthy")
        case.create(
            "hung",
            pollInterval="1m",
            prometheus={"url": hung.url, "timeout": "1m"},
            signals=[{"name": f"s{i}", "query": f"vector({i})"} for i in range(30)],
            severities=[{"level": "P2", "any": ["s0 > 1"]}],
            recovery={"all": ["s0 < 1"]},
        )
        case.stack.wait_for("the hung Prometheus to hold connections", lambda: hung.accepted >= 1)

        # The healthy policy keeps its readings: a new value reaches its status while the other one hangs.
        case.set(hit_rate=UNHEALTHY)
        case.wait_status("healthy", "the new hitRate read", lambda s: _signal(s, "hitRate").get("value") == "0.2")
        case.set(hit_rate=HEALTHY)
        case.wait_status("healthy", "hitRate read again", lambda s: _signal(s, "hitRate").get("value") == "0.95")
        # One endpoint holds at most its share (a quarter of the operator's 32 workers), never all of them.
        assert 1 <= hung.most <= 8, hung.most


def test_a_300_mib_answer_is_refused_and_the_operator_stays_far_below_its_memory_limit(case: Case) -> None:
    chunk = b" " * (1024 * 1024)
    declared = Response(body=chunk, repeat=300)
    until_close = Response(body=chunk, repeat=300, declare_length=False)

    def respond(path: str) -> Response:
        return until_close if "undeclared" in path else declared

    with FakeHTTPServer(respond) as huge:
        case.create(
            "huge",
            prometheus={"url": huge.url},
            signals=[
                {"name": "hitRate", "query": 'vector(1) + 0 * absent(declared="1")'},
                {"name": "db", "query": 'vector(1) + 0 * absent(undeclared="1")'},
            ],
        )
        status = case.wait_status(
            "huge",
            "both signals refused as too large",
            lambda s: all("larger than 1024 KiB" in (_signal(s, n).get("error") or "") for n in ("hitRate", "db")),
        )
        # Several polls of both signals, each refused unread.
        case.stack.wait_for("more queries of the huge answers", lambda: len(huge.requests) >= 8)
    assert condition(status, "MetricsAvailable")["status"] == "False"
    peak = _peak_rss(case)
    print(f"operator peak RSS after the 300 MiB answers: {peak / 2**20:.0f} MiB")  # shown with -s
    assert peak < PEAK_RSS_BOUND, f"operator peak RSS {peak / 2**20:.0f} MiB"


def test_a_redirecting_prometheus_is_an_error_and_the_second_host_is_never_contacted(case: Case) -> None:
    with FakeHTTPServer(vector_response(0.95)) as second:
        redirect = Response(status=307, headers={"Location": f"{second.url}/api/v1/query"})
        with FakeHTTPServer(redirect) as first:
            case.create("redirected", prometheus={"url": first.url})
            status = case.wait_status(
                "redirected",
                "signals unknown because of the redirect",
                lambda s: "redirect (HTTP 307)" in (_signal(s, "hitRate").get("error") or ""),
            )
            assert first.requests
    assert second.requests == []
    assert condition(status, "MetricsAvailable")["status"] == "False"


def test_markup_and_escape_sequences_in_a_prometheus_error_reach_status_and_events_inert(case: Case) -> None:
    error = "[/oops] \x1b[31mred\x1b]0;owned\x07 " + "long " * 200
    body = json.dumps({"status": "error", "errorType": "bad_data", "error": error}).encode()
    with FakeHTTPServer(Response(status=400, body=body)) as hostile:
        case.create("hostile", prometheus={"url": hostile.url})
        status = case.wait_status(
            "hostile", "the error in status", lambda s: "[/oops]" in (_signal(s, "hitRate").get("error") or "")
        )
    stored = _signal(status, "hitRate")["error"]
    assert "\x1b" not in stored and "\x07" not in stored
    assert len(stored) <= 420
    message = condition(status, "MetricsAvailable")["message"]
    assert "\x1b" not in message
    for event in case.events("hostile"):
        assert "\x1b" not in event.message and "\x07" not in event.message
