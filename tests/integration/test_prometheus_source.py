"""The Prometheus source against a real Prometheus: every reading is a number or unknown with its reason.

Failures a real server cannot be made to produce on demand (slow answers, 503s, dropped connections,
TLS, header recording) come from the tiny servers in tests.support.fake_http.
"""

from __future__ import annotations

import asyncio
import base64
import os
import tempfile
import warnings
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import urllib3.util.connection

from stampede.sources import (
    Auth,
    Endpoint,
    PrometheusSource,
    Reading,
    check_url_allowed,
    reading_from_error_response,
    reading_from_result,
)
from stampede.sources.client import MAX_CA_BUNDLE_BYTES, PrometheusClient
from tests.integration.conftest import (
    REPLAY_A,
    REPLAY_METRIC,
    REPLAY_START,
    REPLAY_STEP,
    PrometheusFixture,
)
from tests.support.ci import unavailable
from tests.support.fake_http import (
    DroppingServer,
    FakeHTTPServer,
    Response,
    make_self_signed_cert,
    vector_response,
)
from tests.support.prometheus import free_port

pytestmark = [pytest.mark.prometheus, pytest.mark.timeout(60)]

TIMEOUT = 5.0


@pytest.fixture
async def source() -> AsyncIterator[PrometheusSource]:
    created = PrometheusSource(max_workers=8)
    try:
        yield created
    finally:
        created.close()


@pytest.fixture
def endpoint(prometheus: PrometheusFixture) -> Endpoint:
    return Endpoint(url=prometheus.url)


async def read_one(source: PrometheusSource, endpoint: Endpoint, query: str, *, limit: float = TIMEOUT) -> Reading:
    readings = await source.read(endpoint, {"q": query}, timeout=limit, round_key=object())
    return readings["q"]


# ---------------------------------------------------------------------------------------------------------
# Numbers


async def test_a_gauge_scraped_by_prometheus_reads_as_its_number(
    prometheus: PrometheusFixture, source: PrometheusSource, endpoint: Endpoint
) -> None:
    prometheus.exporter.set("aurum_db_connections_active", 195)
    prometheus.server.wait_for("aurum_db_connections_active", lambda value: value == 195)

    reading = await read_one(source, endpoint, "aurum_db_connections_active")

    assert reading == Reading(value=195.0)
    assert reading.known


@pytest.mark.parametrize(
    ("query", "expected"),
    [("scalar(vector(42))", 42.0), ("vector(1)", 1.0), ("7.5", 7.5), ("sum(vector(2)) * 3", 6.0)],
)
async def test_scalar_results_and_single_element_vectors_are_numbers(
    source: PrometheusSource, endpoint: Endpoint, query: str, expected: float
) -> None:
    assert await read_one(source, endpoint, query) == Reading(value=expected)


async def test_zero_is_a_known_number_not_unknown(source: PrometheusSource, endpoint: Endpoint) -> None:
    reading = await read_one(source, endpoint, "vector(0)")
    assert reading.known
    assert reading.value == 0.0


async def test_several_queries_in_one_read_are_answered_independently(
    source: PrometheusSource, endpoint: Endpoint
) -> None:
    readings = await source.read(
        endpoint,
        {"good": "vector(3)", "empty": "stampede_no_such_metric", "bad": "sum("},
        timeout=TIMEOUT,
        round_key="independent",
    )

    assert readings["good"] == Reading(value=3.0)
    assert readings["empty"].kind == "empty"
    assert readings["bad"].kind == "http_4xx"


# ---------------------------------------------------------------------------------------------------------
# Unknown, with the reason


async def test_an_empty_vector_is_unknown_never_zero(source: PrometheusSource, endpoint: Endpoint) -> None:
    reading = await read_one(source, endpoint, "stampede_metric_that_does_not_exist")

    assert reading.value is None
    assert not reading.known
    assert reading.kind == "empty"
    assert "no series" in (reading.error or "")


async def test_several_series_are_unknown_and_the_error_says_to_aggregate(
    prometheus: PrometheusFixture, source: PrometheusSource, endpoint: Endpoint
) -> None:
    prometheus.exporter.set("aurum_cache_hit_ratio", 0.9, pod="a")
    prometheus.exporter.set("aurum_cache_hit_ratio", 0.4, pod="b")
    prometheus.server.wait_for("count(aurum_cache_hit_ratio)", lambda value: value == 2)

    reading = await read_one(source, endpoint, "aurum_cache_hit_ratio")
    aggregated = await read_one(source, endpoint, "max(aurum_cache_hit_ratio)")

    assert reading.kind == "multiple_series"
    assert reading.value is None
    assert "2 series" in (reading.error or "")
    assert aggregated == Reading(value=0.9)


@pytest.mark.parametrize("query", ["0/0", "vector(0)/0", "1/0", "-1/0", "vector(1)/0"])
async def test_nan_and_infinities_are_unknown(source: PrometheusSource, endpoint: Endpoint, query: str) -> None:
    reading = await read_one(source, endpoint, query)

    assert reading.value is None
    assert reading.kind == "nan"
    assert any(word in (reading.error or "") for word in ("NaN", "Inf"))


async def test_bad_promql_is_unknown_with_prometheus_parse_error_text(
    source: PrometheusSource, endpoint: Endpoint
) -> None:
    reading = await read_one(source, endpoint, "sum(rate(aurum_requests_total[5m])")

    assert reading.value is None
    assert reading.kind == "http_4xx"
    assert "HTTP 400" in (reading.error or "")
    assert "parse error" in (reading.error or "")
    # Prometheus's JSON text, not the client's "HTTP Status Code 400 (b'...')" wrapping.
    assert "b'" not in (reading.error or "")


async def test_connection_refused_is_reported_in_the_same_call(source: PrometheusSource) -> None:
    closed = Endpoint(url=f"http://127.0.0.1:{free_port()}")
    attempts: list[tuple[object, ...]] = []
    connect = urllib3.util.connection.create_connection

    def counting(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        return connect(*args, **kwargs)

    # The client's default retries would connect again and again for ~6 s; a refused connection is
    # reported at once: exactly one attempt to connect (timing belongs to `make bench`).
    with mock.patch.object(urllib3.util.connection, "create_connection", counting):
        reading = await read_one(source, closed, "up")

    assert reading.kind == "connection"
    assert reading.value is None
    assert "refused" in (reading.error or "").lower()
    assert len(attempts) == 1
    assert source.request_count == 1


async def test_a_dropped_connection_is_not_retried(source: PrometheusSource) -> None:
    with DroppingServer() as server:
        reading = await read_one(source, Endpoint(url=server.url), "up")
        await asyncio.sleep(0.2)  # let the accept loop count anything that might still arrive

        assert reading.kind == "connection"
        assert server.connections == 1


async def test_a_slow_prometheus_is_a_timeout_and_does_not_block_the_event_loop(
    source: PrometheusSource,
) -> None:
    with FakeHTTPServer(Response(body=b"{}", delay=30.0)) as server:
        reading_task = asyncio.create_task(read_one(source, Endpoint(url=server.url), "up", limit=2.0))
        # This loop must see the server holding the request while the read is still pending: a read
        # that blocked the event loop would only let it look once the read was over.
        while True:
            if server.requests or reading_task.done():
                break
            await asyncio.sleep(0.01)
        assert server.requests
        assert not reading_task.done()
        reading = await reading_task

    # The server would answer after 30 s; a reading at all means the client gave up at its timeout.
    assert reading.kind == "timeout"
    assert "2s" in (reading.error or "")


async def test_http_503_is_unknown_with_the_server_error_and_not_retried(source: PrometheusSource) -> None:
    body = b'{"status":"error","errorType":"unavailable","error":"too many queries in flight"}'
    with FakeHTTPServer(Response(status=503, body=body)) as server:
        reading = await read_one(source, Endpoint(url=server.url), "up")

        assert reading.kind == "http_5xx"
        assert "HTTP 503" in (reading.error or "")
        assert "too many queries in flight" in (reading.error or "")
        # The client's default Retry would resend on 503 three times.
        assert len(server.requests) == 1


async def test_a_non_prometheus_answer_is_an_invalid_response(source: PrometheusSource) -> None:
    html = Response(body=b"<html>login</html>", content_type="text/html")
    with FakeHTTPServer(html) as server:
        reading = await read_one(source, Endpoint(url=server.url), "up")

    assert reading.kind == "invalid_response"
    assert reading.value is None


async def test_a_proxy_error_page_is_summarised_not_dumped(source: PrometheusSource) -> None:
    page = b"<html><body>" + b"Bad gateway " * 100 + b"</body></html>"
    with FakeHTTPServer(Response(status=502, body=page, content_type="text/html")) as server:
        reading = await read_one(source, Endpoint(url=server.url), "up")

    assert reading.kind == "http_5xx"
    assert len(reading.error or "") < 300


@pytest.mark.parametrize("url", ["not a url", "ftp://127.0.0.1/x", "http://"])
async def test_an_invalid_url_is_unknown_with_a_readable_reason(source: PrometheusSource, url: str) -> None:
    reading = await read_one(source, Endpoint(url=url), "up")

    assert reading.kind == "connection"
    assert "URL" in (reading.error or "")


async def test_least_recently_used_clients_are_closed_beyond_the_limit() -> None:
    limited = PrometheusSource(max_clients=2)
    try:
        with FakeHTTPServer(vector_response(1)) as server:
            for token in ("a", "b", "c"):
                endpoint = Endpoint(url=server.url, auth=Auth(bearer_token=token))
                assert (await read_one(limited, endpoint, "up")).known
        assert [e.auth.bearer_token for e in limited._clients] == ["b", "c"]
    finally:
        limited.close()


# ---------------------------------------------------------------------------------------------------------
# Authentication and secrets


async def test_bearer_token_and_basic_auth_are_sent_as_authorization_headers(
    source: PrometheusSource,
) -> None:
    with FakeHTTPServer(vector_response(5)) as server:
        bearer = Endpoint(url=server.url, auth=Auth(bearer_token="tok-123"))
        basic = Endpoint(url=server.url, auth=Auth(basic=("reader", "pa55")))

        assert await read_one(source, bearer, "up") == Reading(value=5.0)
        assert await read_one(source, basic, "up") == Reading(value=5.0)

        sent = [request.headers.get("Authorization") for request in server.requests]
    assert sent == ["Bearer tok-123", "Basic " + base64.b64encode(b"reader:pa55").decode()]


async def test_secrets_never_appear_in_reprs_or_error_messages(source: PrometheusSource) -> None:
    token, password = "s3cret-bearer-token", "hunter2-password"
    auth = Auth(bearer_token=token, basic=("alice", password), ca_pem="-----BEGIN CERTIFICATE-----x")
    encoded = base64.b64encode(f"alice:{password}".encode()).decode()

    # A misconfigured proxy that echoes the request's credentials back in its error page.
    def echo(_path: str) -> Response:
        return Response(
            status=401, body=f"denied: Bearer {token} / Basic {encoded}".encode(), content_type="text/plain"
        )

    with FakeHTTPServer(echo) as server:
        denied = await read_one(source, Endpoint(url=server.url, auth=auth), "up")
    refused = await read_one(source, Endpoint(url=f"http://127.0.0.1:{free_port()}", auth=auth), "up")

    assert denied.kind == "http_4xx"
    assert "HTTP 401" in (denied.error or "")
    texts = [repr(auth), repr(Endpoint(url="http://x", auth=auth)), str(auth), denied.error, refused.error]
    for text in texts:
        assert text is not None
        for secret in (token, password, encoded, "BEGIN CERTIFICATE"):
            assert secret not in text
    assert "<set>" in repr(auth)


async def test_https_with_a_private_ca_bundle_verifies_with_an_in_memory_context_and_no_file(
    tmp_path: Path, source: PrometheusSource
) -> None:
    cert_and_key = make_self_signed_cert(tmp_path)
    if cert_and_key is None:
        unavailable("the openssl CLI is needed to make a test certificate")
    ca_pem = cert_and_key[0].read_text()
    before = set(os.listdir(tempfile.gettempdir()))
    with FakeHTTPServer(vector_response(9), tls=cert_and_key) as server:
        trusted = Endpoint(url=server.url, auth=Auth(ca_pem=ca_pem))
        untrusted = Endpoint(url=server.url)

        assert await read_one(source, trusted, "up") == Reading(value=9.0)
        rejected = await read_one(source, untrusted, "up")
    created = set(os.listdir(tempfile.gettempdir())) - before
    assert not [name for name in created if name.startswith("stampede-ca-")]
    assert rejected.kind == "connection"
    assert "TLS" in (rejected.error or "")


async def test_a_private_ca_bundle_trusts_only_its_own_cas_not_the_public_ones(tmp_path: Path) -> None:
    # certifi's bundle would be added to the context if requests were left to do it: then any public
    # certificate for the host would pass as well. The context must trust exactly the Secret's CAs.
    cert_and_key = make_self_signed_cert(tmp_path)
    if cert_and_key is None:
        unavailable("the openssl CLI is needed to make a test certificate")
    with FakeHTTPServer(vector_response(9), tls=cert_and_key) as server:
        client = PrometheusClient(Endpoint(url=server.url, auth=Auth(ca_pem=cert_and_key[0].read_text())), pool_size=1)
        try:
            assert client.instant("up", budget=5, limit=5) == Reading(value=9.0)
            context = client._session.get_adapter(server.url)._ssl_context  # type: ignore[attr-defined]
        finally:
            client.close()
    assert [ca["subject"] for ca in context.get_ca_certs()] == [((("commonName", "127.0.0.1"),),)]


def test_a_ca_bundle_over_the_size_cap_or_not_pem_is_refused_without_a_request() -> None:
    with FakeHTTPServer(vector_response(1)) as server:
        url = server.url.replace("http://", "https://")
        for pem, words in [("x" * (MAX_CA_BUNDLE_BYTES + 1), "more than"), ("not a certificate", "not usable PEM")]:
            client = PrometheusClient(Endpoint(url=url, auth=Auth(ca_pem=pem)), pool_size=1)
            try:
                reading = client.instant("up", budget=5, limit=5)
            finally:
                client.close()
            assert reading.kind == "connection"
            assert words in (reading.error or "")
        assert server.requests == []


async def test_insecure_skip_verify_accepts_any_certificate_without_warning(
    tmp_path: Path, source: PrometheusSource
) -> None:
    cert_and_key = make_self_signed_cert(tmp_path)
    if cert_and_key is None:
        unavailable("the openssl CLI is needed to make a test certificate")
    with (
        FakeHTTPServer(vector_response(4), tls=cert_and_key) as server,
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("default")
        reading = await read_one(source, Endpoint(url=server.url, auth=Auth(insecure_skip_verify=True)), "up")

    assert reading == Reading(value=4.0)
    assert not [w for w in caught if "Unverified HTTPS" in str(w.message)]


# ---------------------------------------------------------------------------------------------------------
# Deduplication


async def test_identical_queries_of_one_round_are_sent_once_for_all_callers(source: PrometheusSource) -> None:
    # The delay keeps every request in flight while all 100 callers arrive, so sharing is what is tested.
    with FakeHTTPServer(Response(body=vector_response(1).body, delay=0.2)) as server:
        endpoint = Endpoint(url=server.url)
        queries = {f"q{i}": f"metric_{i}" for i in range(5)}

        async def caller(round_key: object) -> dict[str, Reading]:
            return await source.read(endpoint, queries, timeout=TIMEOUT, round_key=round_key)

        first = await asyncio.gather(*(caller(1000) for _ in range(100)))
        assert source.request_count == 5
        assert len(server.requests) == 5
        assert all(result == first[0] for result in first)
        assert first[0]["q0"] == Reading(value=1.0)

        # A late caller of the same round is answered from the round's cache.
        await caller(1000)
        assert source.request_count == 5

        # The next round asks again.
        await asyncio.gather(*(caller(1001) for _ in range(100)))
        assert source.request_count == 10
        assert len(server.requests) == 10


async def test_dedup_against_real_prometheus_counts_one_request_per_distinct_query(
    source: PrometheusSource, endpoint: Endpoint
) -> None:
    queries = {"a": "vector(1)", "b": "vector(2)", "same_as_a": "vector(1)"}

    results = await asyncio.gather(
        *(source.read(endpoint, queries, timeout=TIMEOUT, round_key="tick") for _ in range(20))
    )

    assert source.request_count == 2
    assert results[0] == {"a": Reading(value=1.0), "b": Reading(value=2.0), "same_as_a": Reading(value=1.0)}


async def test_old_rounds_are_evicted_so_the_cache_stays_small(source: PrometheusSource, endpoint: Endpoint) -> None:
    for tick in range(50):
        await source.read(endpoint, {"q": "vector(1)"}, timeout=TIMEOUT, round_key=tick)

    assert len(source._rounds) <= 4
    assert source.request_count == 50


async def test_a_cancelled_caller_does_not_cancel_the_shared_request(source: PrometheusSource) -> None:
    with FakeHTTPServer(Response(body=vector_response(8).body, delay=0.3)) as server:
        endpoint = Endpoint(url=server.url)
        impatient = asyncio.create_task(source.read(endpoint, {"q": "x"}, timeout=TIMEOUT, round_key="r"))
        patient = asyncio.create_task(source.read(endpoint, {"q": "x"}, timeout=TIMEOUT, round_key="r"))
        await asyncio.sleep(0.05)
        impatient.cancel()

        assert (await patient)["q"] == Reading(value=8.0)
        assert len(server.requests) == 1


# ---------------------------------------------------------------------------------------------------------
# Range queries over backfilled history (promtool)


def _at(step_index: int) -> datetime:
    return datetime.fromtimestamp(REPLAY_START + step_index * REPLAY_STEP, UTC)


async def test_read_range_returns_the_exact_backfilled_values_at_each_step(
    source: PrometheusSource, endpoint: Endpoint
) -> None:
    readings = await source.read_range(
        endpoint,
        f'{REPLAY_METRIC}{{series="a"}}',
        start=_at(0),
        end=_at(9),
        step=REPLAY_STEP,
        timeout=TIMEOUT,
    )

    assert readings == [(datetime.fromtimestamp(ts, UTC), Reading(value=value)) for ts, value in REPLAY_A.items()]


async def test_read_range_marks_steps_with_several_series_or_no_sample_as_unknown(
    source: PrometheusSource, endpoint: Endpoint
) -> None:
    readings = dict(
        await source.read_range(endpoint, REPLAY_METRIC, start=_at(0), end=_at(25), step=REPLAY_STEP, timeout=TIMEOUT)
    )

    assert len(readings) == 26
    for k in range(5):
        assert readings[_at(k)] == Reading(value=REPLAY_A[REPLAY_START + k * REPLAY_STEP])
    for k in range(5, 10):
        assert readings[_at(k)].kind == "multiple_series", k
    # Steps 10-14 still see both series' last samples (step 9) through Prometheus's 5 minute lookback.
    for k in range(10, 15):
        assert readings[_at(k)].kind == "multiple_series", k
    # Step 15 is exactly 5 minutes after the last sample: whether the lookback still reaches it is
    # Prometheus's boundary, not ours. After that, nothing.
    for k in range(16, 26):
        assert readings[_at(k)].kind == "empty", k
        assert readings[_at(k)].value is None


async def test_read_range_with_bad_promql_marks_every_step_with_the_parse_error(
    source: PrometheusSource, endpoint: Endpoint
) -> None:
    readings = await source.read_range(endpoint, "sum(", start=_at(0), end=_at(3), step=REPLAY_STEP, timeout=TIMEOUT)

    assert [ts for ts, _ in readings] == [_at(k) for k in range(4)]
    assert all(reading.kind == "http_4xx" and "parse error" in (reading.error or "") for _, reading in readings)


async def test_read_range_of_an_unreachable_prometheus_reports_connection_at_every_step(
    source: PrometheusSource,
) -> None:
    closed = Endpoint(url=f"http://127.0.0.1:{free_port()}")

    readings = await source.read_range(closed, "up", start=_at(0), end=_at(2), step=REPLAY_STEP, timeout=TIMEOUT)

    assert [reading.kind for _, reading in readings] == ["connection"] * 3


# ---------------------------------------------------------------------------------------------------------
# URL allow-list

ALLOWED = ["http://prom.ok:9090", "https://thanos.ok/prometheus/"]


@pytest.mark.parametrize(
    "url",
    [
        "http://prom.ok:9090",
        "http://prom.ok:9090/",
        "http://PROM.ok:9090/api",
        "https://thanos.ok/prometheus",
        "https://thanos.ok:443/prometheus/tenant-a",
    ],
)
def test_urls_under_an_allowed_prefix_are_accepted(url: str) -> None:
    assert check_url_allowed(url, ALLOWED) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://prom.ok:9090.evil.com",
        "http://prom.ok:9090@evil.com",
        "http://user:pw@prom.ok:9090",
        "http://prom.ok:90901",
        "http://prom.ok",
        "https://prom.ok:9090",
        "http://prom.ok.evil.com:9090",
        "https://thanos.ok/prometheus-admin",
        "https://thanos.ok/prometheus/../admin",
        "https://thanos.ok/prometheus/%2e%2e/admin",
        "https://thanos.ok/",
        "http://thanos.ok/prometheus",
        "file:///etc/passwd",
        "http://prom.ok:9090\\@evil.com",
        "http://prom.ok:notaport",
    ],
)
def test_urls_outside_the_allow_list_or_with_prefix_tricks_are_rejected(url: str) -> None:
    error = check_url_allowed(url, ALLOWED)
    assert error is not None
    assert "pw@" not in error


def test_an_empty_allow_list_allows_any_plain_http_url_but_still_rejects_credentials() -> None:
    assert check_url_allowed("http://anything:9090", []) is None
    assert check_url_allowed("http://u:p@anything:9090", []) is not None
    assert check_url_allowed("ftp://anything", []) is not None


# ---------------------------------------------------------------------------------------------------------
# The pure parsers (cheap; kept next to the integration cases they mirror)


def test_parsers_map_prometheus_result_shapes_to_readings() -> None:
    assert reading_from_result([1.0, "3"]) == Reading(value=3.0)
    assert reading_from_result([{"metric": {}, "value": [1.0, "2.5"]}]) == Reading(value=2.5)
    assert reading_from_result([]).kind == "empty"
    assert reading_from_result([{"metric": {}, "values": [[1.0, "1"]]}]).kind == "invalid_response"
    assert reading_from_result([1.0, "hello"], "string").kind == "invalid_response"
    assert reading_from_result([1.0, "+Inf"]).kind == "nan"
    assert reading_from_result("garbage").kind == "invalid_response"
    assert reading_from_error_response(503, b'{"errorType":"timeout","error":"query timed out"}').kind == "timeout"
    assert reading_from_error_response(422, b'{"errorType":"execution","error":"boom"}').kind == "http_4xx"
    assert reading_from_error_response(500, b"").error == "Prometheus failed to answer (HTTP 500)."
