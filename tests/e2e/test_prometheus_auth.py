"""Credentials come from labelled Secrets in the policy's namespace, go to Prometheus over verified https only,
and are never shown."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Case, condition
from tests.support.ci import unavailable
from tests.support.fake_http import FakeHTTPServer, make_self_signed_cert, vector_response

TOKEN = "s3cr3t-token-value"
PASSWORD = "hunter2-password"


LABELS = {"stampede.aurum.io/credentials": "true"}


@pytest.fixture
def prometheus_with_auth(tmp_path: Path) -> Iterator[FakeHTTPServer]:
    """Stands in for a Prometheus behind an authenticating https proxy: it records headers and answers 0.95."""
    cert_and_key = make_self_signed_cert(tmp_path)
    if cert_and_key is None:
        unavailable("the openssl CLI is needed to make a test certificate")
    with FakeHTTPServer(vector_response(0.95), tls=cert_and_key) as server:
        server.ca_pem = cert_and_key[0].read_text()  # type: ignore[attr-defined]
        yield server


def secret(case: Case, name: str, data: dict[str, str], *, labelled: bool = True) -> None:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    meta: dict[str, Any] = {"name": name, "namespace": case.ns, **({"labels": LABELS} if labelled else {})}
    case.stack.harness.apply([{"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": encoded}])


def tls(case: Case, server: FakeHTTPServer) -> dict[str, Any]:
    """The prometheus section reaching `server` over https, verified with its CA from a labelled Secret."""
    secret(case, "prom-ca", {"ca.crt": server.ca_pem})  # type: ignore[attr-defined]
    return {"url": server.url, "caSecretRef": {"name": "prom-ca", "key": "ca.crt"}}


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
        prometheus={
            **tls(case, prometheus_with_auth),
            "bearerTokenSecretRef": {"name": "prom-token", "key": "token"},
        },
    )
    case.wait_status(
        "bearer", "signals read through the proxy", lambda s: condition(s, "MetricsAvailable").get("status") == "True"
    )
    assert prometheus_with_auth.requests
    assert {r.headers.get("Authorization") for r in prometheus_with_auth.requests} == {f"Bearer {TOKEN}"}
    no_secret_anywhere(case, "bearer", TOKEN)


def test_basic_auth_from_a_secret_is_sent_and_never_shown(case: Case, prometheus_with_auth: FakeHTTPServer) -> None:
    secret(case, "prom-basic", {"username": "stampede", "password": PASSWORD})
    case.create("basic", prometheus={**tls(case, prometheus_with_auth), "basicAuthSecretRef": {"name": "prom-basic"}})
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
        prometheus={**tls(case, prometheus_with_auth), "bearerTokenSecretRef": {"name": "absent", "key": "token"}},
    )
    status = case.wait_status(
        "nosecret", "MetricsAvailable=False", lambda s: condition(s, "MetricsAvailable").get("status") == "False"
    )
    assert "absent" in condition(status, "MetricsAvailable")["message"]
    assert prometheus_with_auth.requests == [], "no request without the credentials the policy asked for"


def test_an_unlabelled_secret_is_never_read_and_reads_like_a_missing_one(
    case: Case, prometheus_with_auth: FakeHTTPServer
) -> None:
    secret(case, "not-for-stampede", {"token": TOKEN}, labelled=False)
    case.create(
        "unlabelled",
        prometheus={
            **tls(case, prometheus_with_auth),
            "bearerTokenSecretRef": {"name": "not-for-stampede", "key": "token"},
        },
    )
    status = case.wait_status(
        "unlabelled", "MetricsAvailable=False", lambda s: condition(s, "MetricsAvailable").get("status") == "False"
    )
    message = condition(status, "MetricsAvailable")["message"]
    assert "(missing, not labelled stampede.aurum.io/credentials=true, or without that key)" in message
    assert prometheus_with_auth.requests == []
    no_secret_anywhere(case, "unlabelled", TOKEN)


def test_credentials_for_an_http_url_are_refused_as_an_invalid_spec_and_nothing_is_sent(case: Case) -> None:
    secret(case, "prom-token", {"token": TOKEN})
    with FakeHTTPServer(vector_response(0.95)) as plain:
        case.create(
            "cleartext",
            prometheus={"url": plain.url, "bearerTokenSecretRef": {"name": "prom-token", "key": "token"}},
        )
        status = case.wait_status(
            "cleartext", "Ready=False InvalidSpec", lambda s: condition(s, "Ready").get("reason") == "InvalidSpec"
        )
        assert "bearerTokenSecretRef: credentials are sent over https only" in condition(status, "Ready")["message"]
        assert plain.requests == []
