"""A Prometheus that fights back: redirects, huge or trickled answers, hanging sockets, hostile text.

Through the real `PrometheusSource` and its client (requests under prometheus-api-client), against local
servers that misbehave on purpose. The same attacks through the real operator process are in
tests/faults/test_hostile_prometheus.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from stampede.sources import Endpoint, PrometheusSource, Reading
from stampede.sources.client import MAX_BODY_BYTES
from stampede.sources.readings import TEXT_LIMIT
from tests.support.fake_http import FakeHTTPServer, HangingServer, Response, vector_response

pytestmark = pytest.mark.timeout(60)


async def read_one(source: PrometheusSource, url: str, *, limit: float = 5.0) -> Reading:
    return (await source.read(Endpoint(url=url), {"x": "up"}, timeout=limit, round_key=object()))["x"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_an_error_and_the_second_host_is_never_contacted(status: int) -> None:
    source = PrometheusSource()
    try:
        with FakeHTTPServer(vector_response(1)) as second:
            redirect = Response(status=status, headers={"Location": f"{second.url}/api/v1/query?query=up"})
            with FakeHTTPServer(redirect) as first:
                reading = await read_one(source, first.url)
            assert first.requests, "the first host was asked"
            assert second.requests == [], "a redirect was followed"
    finally:
        source.close()
    assert reading.kind == "invalid_response"
    assert f"redirect (HTTP {status})" in (reading.error or "")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "until-close"])
async def test_an_answer_larger_than_the_cap_is_refused_unread(declared: bool) -> None:
    chunk = b" " * 65536
    huge = Response(body=chunk, repeat=MAX_BODY_BYTES // len(chunk) * 4, declare_length=declared)
    source = PrometheusSource()
    try:
        with FakeHTTPServer(huge) as server:
            reading = await read_one(source, server.url)
    finally:
        source.close()
    assert reading.kind == "invalid_response"
    assert "larger than 1024 KiB" in (reading.error or "")


async def test_an_answer_just_under_the_cap_is_read() -> None:
    payload = json.loads(vector_response(3).body)
    body = json.dumps(payload).encode()
    padded = body + b" " * (MAX_BODY_BYTES - len(body))
    source = PrometheusSource()
    try:
        with FakeHTTPServer(Response(body=padded)) as server:
            assert await read_one(source, server.url) == Reading(value=3.0)
    finally:
        source.close()


async def test_a_trickled_answer_is_cut_off_at_the_deadline_not_read_to_its_end() -> None:
    # Each piece arrives well within a read timeout, so only a deadline over the whole body stops it;
    # read to its end (10 s) it would be invalid JSON, not a timeout.
    trickle = Response(body=b" " * 16, repeat=100, pause=0.1)
    source = PrometheusSource()
    try:
        with FakeHTTPServer(trickle) as server:
            reading = await read_one(source, server.url, limit=1.0)
    finally:
        source.close()
    assert reading.kind == "timeout", reading


async def test_a_hung_prometheus_with_a_long_timeout_takes_only_its_share_of_the_workers() -> None:
    source = PrometheusSource(max_workers=8)  # two workers per endpoint
    with HangingServer() as hung, FakeHTTPServer(vector_response(5)) as healthy:
        stuck = asyncio.ensure_future(
            source.read(Endpoint(url=hung.url), {f"s{i}": f"vector({i})" for i in range(30)}, timeout=60, round_key="r")
        )
        try:
            for _ in range(100):  # until the hung endpoint holds what it may (the loop gives it the chance)
                await asyncio.sleep(0.02)
                if hung.accepted >= 2:
                    break
            for _ in range(3):
                assert await read_one(source, healthy.url, limit=3.0) == Reading(value=5.0)
            assert 1 <= hung.most <= 2, hung.most
        finally:
            stuck.cancel()
            hung.close()  # the workers' sockets see EOF and the threads end
            source.close()


async def test_server_error_text_is_cut_and_has_no_control_characters() -> None:
    error = "\x1b[2J\x1b]0;pwned\x07" + "line\r\nbreak " * 10_000
    body = json.dumps({"status": "error", "errorType": "bad_data", "error": error}).encode()
    source = PrometheusSource()
    try:
        with FakeHTTPServer(Response(status=400, body=body)) as server:
            reading = await read_one(source, server.url)
    finally:
        source.close()
    text = reading.summary or ""
    assert reading.kind == "http_4xx"
    assert "line break line break" in text
    assert len(text) <= TEXT_LIMIT + 80
    assert not any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in text), repr(text)
