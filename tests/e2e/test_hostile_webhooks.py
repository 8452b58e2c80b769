"""Hostile webhooks through the real operator, with STAMPEDE_ALLOWED_WEBHOOK_URLS set.

One policy notifies five targets: a receiver under the allow-list (it must hear the incident), a webhook
answering 307 towards a second server (which must receive nothing), one answering 500 with a 200 MiB body
full of a secret-looking marker, one answering 403 with the marker in its body and reason, and a URL
outside the allow-list (never contacted). Every failure is a NotificationFailed naming its target, and
the marker reaches no event, status or incident record.

This module has its own stack: the allow-list applies to every policy the operator serves.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest

from stampede.actuators.policies import CREDENTIALS_LABEL
from tests.e2e.conftest import HEALTHY_HIT_RATE, STATUS_REFRESH_SECONDS, Case
from tests.e2e.stack import GROUP, VERSION, Stack
from tests.support.fake_http import FakeHTTPServer, Response

POLICY = "noisy"
MARKER = "sk-LEAKED-0123456789abcdef"
CHUNK = (MARKER + " ").encode() * 1024


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeHTTPServer]]:
    collector = FakeHTTPServer(Response(status=200, body=b"ok"))
    hooks = FakeHTTPServer(
        lambda path: (
            Response(status=307, headers={"Location": f"{collector.url}/stolen"})
            if path.endswith("/bounce")
            else Response(status=500, body=CHUNK, repeat=200 * 1024 * 1024 // len(CHUNK))
            if path.endswith("/huge")
            else Response(status=403, body=f"invalid_token {MARKER}".encode())
            if path.endswith("/leaky")
            else Response(status=200, body=b"ok")
        )
    )
    try:
        yield {"collector": collector, "hooks": hooks}
    finally:
        hooks.close()
        collector.close()


@pytest.fixture(scope="module")
def webhook_stack(servers: dict[str, FakeHTTPServer]) -> Iterator[Stack]:
    env = {
        "STAMPEDE_STATUS_REFRESH_SECONDS": str(STATUS_REFRESH_SECONDS),
        "STAMPEDE_ALLOWED_PROMETHEUS_URLS": "*",
        "STAMPEDE_ALLOWED_WEBHOOK_URLS": f"{servers['hooks'].url}/hooks/",
    }
    with Stack(operator_env=env, operator_args=["--standalone", "-A"]) as stack:
        yield stack


def secret(case: Case, name: str, url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": case.ns, "labels": {CREDENTIALS_LABEL: "true"}},
        "data": {"url": base64.b64encode(url.encode()).decode()},
    }


def test_hostile_webhooks_fail_alone_without_redirects_bodies_or_urls_outside_the_list(
    webhook_stack: Stack, servers: dict[str, FakeHTTPServer]
) -> None:
    hooks, collector = servers["hooks"], servers["collector"]
    urls = {
        "good": f"{hooks.url}/hooks/good",
        "bounce": f"{hooks.url}/hooks/bounce",
        "huge": f"{hooks.url}/hooks/huge",
        "leaky": f"{hooks.url}/hooks/leaky",
        "outsider": f"{collector.url}/hooks/PATH-SECRET",
    }
    case = Case(webhook_stack, "hostile-webhooks", prefix="hooks")
    try:
        webhook_stack.harness.apply([secret(case, name, url) for name, url in urls.items()])
        targets = [
            {"name": name, "webhook": {"secretRef": {"name": name, "key": "url"}, "format": "json"}} for name in urls
        ]
        case.create_ready(POLICY, notifications={"targets": targets})
        case.set(hit_rate=0.2)

        def failed_targets() -> set[str]:
            return {
                name
                for e in case.events(POLICY, "NotificationFailed")
                for name in urls
                if f"target {name} " in e.message
            }

        webhook_stack.wait_for(
            "every hostile target failed", lambda: failed_targets() == {"bounce", "huge", "leaky", "outsider"}
        )
        webhook_stack.wait_for(
            "the good target heard the incident",
            lambda: any(
                json.loads(r.body)["event"] == "IncidentOpened" for r in hooks.requests if r.path.endswith("/good")
            ),
        )
        messages = {
            name: [e.message for e in case.events(POLICY, "NotificationFailed") if f"target {name} " in e.message]
            for name in urls
        }
        assert all(
            m.endswith("failed: the target answered with a redirect (HTTP 307), which is never followed.")
            for m in messages["bounce"]
        )
        assert all(
            m.endswith("failed: the target answered HTTP 500 (Internal Server Error).") for m in messages["huge"]
        )
        assert all(m.endswith("failed: the target answered HTTP 403 (Forbidden).") for m in messages["leaky"])
        host = collector.url.removeprefix("http://")
        assert all(
            m.endswith(
                f"failed: its URL (at http://{host}) is not under any prefix allowed by "
                "STAMPEDE_ALLOWED_WEBHOOK_URLS; nothing was sent."
            )
            for m in messages["outsider"]
        )
        assert collector.requests == [], "neither the redirect nor the refused URL reached the second server"

        case.set(hit_rate=HEALTHY_HIT_RATE)
        status = case.wait_status(POLICY, "closed", lambda s: s.get("state") == "Idle" and s.get("history"))
        incident = status["history"][-1]["id"]
        record = webhook_stack.custom.get_namespaced_custom_object(
            GROUP, VERSION, case.ns, "stampedeincidents", f"{POLICY}-{incident}"
        )
        texts = [e.message for e in case.events(POLICY)] + [json.dumps(case.policy(POLICY)), json.dumps(record)]
        for text in texts:
            assert MARKER not in text
            assert "PATH-SECRET" not in text
    finally:
        case.set(hit_rate=HEALTHY_HIT_RATE, wait=False)
        case.cleanup()
