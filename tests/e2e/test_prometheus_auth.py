"""Credentials come from Secrets in the policy's namespace, are sent to Prometheus, and are never shown."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Case, condition
from tests.support.fake_http import FakeHTTPServer, vector_response

TOKEN = "s3cr3t-token-value"
PASSWORD = "hunter2-password"


@pytest.fixture
def prometheus_with_auth() -> Iterator[FakeHTTPServer]:
    """Stands in for a Prometheus behind an authenticating proxy: it records headers and answers 0.95."""
    with FakeHTTPServer(vector_response(0.95)) as server:
        yield server


def secret(case: Case, name: str, data: dict[str, str]) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    case.stack.harness.apply(
        [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": case.ns}, "data": encoded}]
    )


def no_secret_anywhere(case: Case, name: str, *secrets: str) -> None:
    shown = str(case.policy(name)) + str([(e.reason, e.message) for e in case.events(name)])
    assert case.stack.operator is not None
    shown += case.stack.operator.logs()
    for value in secrets:
        assert value not in shown


def test_a_bearer_token_from_a_secret_is_sent_and_never_shown(case: Case, prometheus_with_auth: FakeHTTPServer) -> None:
    secret(case, "prom-token", {"token": TOKEN})
    case.create(
        "bearer",
        prometheus={"url": prometheus_with_auth.url, "bearerTokenSecretRef": {"name": "prom-token", "key": "token"}},
    )
    case.wait_status(
        "bearer", "signals read through the proxy", lambda s: condition(s, "MetricsAvailable").get("status") == "True"
    )
    assert prometheus_with_auth.requests
    assert {r.headers.get("Authorization") for r in prometheus_with_auth.requests} == {f"Bearer {TOKEN}"}
    no_secret_anywhere(case, "bearer", TOKEN)


def test_basic_auth_from_a_secret_is_sent_and_never_shown(case: Case, prometheus_with_auth: FakeHTTPServer) -> None:
    secret(case, "prom-basic", {"username": "stampede", "password": PASSWORD})
    case.create("basic", prometheus={"url": prometheus_with_auth.url, "basicAuthSecretRef": {"name": "prom-basic"}})
    case.wait_status(
        "basic", "signals read through the proxy", lambda s: condition(s, "MetricsAvailable").get("status") == "True"
    )
    expected = "Basic " + base64.b64encode(f"stampede:{PASSWORD}".encode()).decode()
    assert {r.headers.get("Authorization") for r in prometheus_with_auth.requests} == {expected}
    no_secret_anywhere(case, "basic", PASSWORD, expected)


def test_a_missing_secret_makes_the_signals_unknown_naming_the_secret(
    case: Case, prometheus_with_auth: FakeHTTPServer
) -> None:
    case.create(
        "nosecret",
        prometheus={"url": prometheus_with_auth.url, "bearerTokenSecretRef": {"name": "absent", "key": "token"}},
    )
    status = case.wait_status(
        "nosecret", "MetricsAvailable=False", lambda s: condition(s, "MetricsAvailable").get("status") == "False"
    )
    assert "absent" in condition(status, "MetricsAvailable")["message"]
    assert prometheus_with_auth.requests == [], "no request without the credentials the policy asked for"
