"""The sources layer without a server: readings and their kinds, the client adapter's reading of library
exceptions, and the deadline pool. (tests/integration/test_prometheus_source.py runs the same code against a
real Prometheus.)"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest
import requests
import urllib3
from prometheus_api_client.exceptions import PrometheusApiClientException

from stampede.sources import Reading, ReadingKind
from stampede.sources.client import range_steps, reading_from_exception
from stampede.sources.pooling import DeadlineExceeded, DeadlinePool, Gate
from stampede.sources.readings import MESSAGE_LIMIT, TEXT_LIMIT, inert, printable, readings_at_steps

URL = "http://prometheus:9090"


def test_an_unknown_reading_summarises_as_its_kind_then_its_reason() -> None:
    reading = Reading.unknown(ReadingKind.EMPTY, "The query returned no series (empty vector).")
    assert reading.summary == "[empty] The query returned no series (empty vector)."
    assert Reading(value=0.0).summary is None


def test_a_kind_is_its_plain_string_so_labels_and_json_need_no_translation() -> None:
    assert ReadingKind.HTTP_4XX == "http_4xx"
    assert f"{ReadingKind.MULTIPLE_SERIES}" == "multiple_series"


def test_scrubbing_blanks_every_secret_in_the_reason_and_keeps_the_kind() -> None:
    leaky = Reading.unknown(ReadingKind.HTTP_4XX, "401: token s3cr3t rejected, echo czNjcjN0")
    assert leaky.scrubbed(["s3cr3t", "czNjcjN0"]) == Reading.unknown(
        ReadingKind.HTTP_4XX, "401: token *** rejected, echo ***"
    )


def test_range_results_are_spread_over_the_steps_with_gaps_and_overlaps_unknown() -> None:
    stamps = [100.0, 115.0, 130.0, 145.0]
    matrix = [
        {"metric": {"pod": "a"}, "values": [[100, "1"], [115, "2"], [145, "NaN"]]},
        {"metric": {"pod": "b"}, "values": [[115.0, "9"]]},
    ]
    readings = dict(readings_at_steps(matrix, stamps))
    at = {ts: datetime.fromtimestamp(ts, UTC) for ts in stamps}
    assert readings[at[100.0]] == Reading(value=1.0)
    assert readings[at[115.0]].kind == ReadingKind.MULTIPLE_SERIES
    assert readings[at[130.0]].kind == ReadingKind.EMPTY
    assert readings[at[145.0]].kind == ReadingKind.NAN


def test_range_steps_count_from_the_whole_second_the_client_sends() -> None:
    start = datetime.fromtimestamp(1000.4, UTC)
    end = datetime.fromtimestamp(1030.6, UTC)
    assert range_steps(start=start, end=end, step=15) == [1000.0, 1015.0, 1030.0]
    with pytest.raises(ValueError, match="positive"):
        range_steps(start=start, end=end, step=0)


# -- the client adapter: what prometheus-api-client and its transport raise --------------------------------


def test_the_client_libraries_http_error_text_becomes_prometheus_own_error() -> None:
    body = b'{"status":"error","errorType":"bad_data","error":"1:5: parse error: unclosed left parenthesis"}'
    reading = reading_from_exception(
        PrometheusApiClientException(f"HTTP Status Code 400 ({body!r})"), url=URL, timeout=5
    )
    assert reading.kind == ReadingKind.HTTP_4XX
    assert reading.error == (
        "Prometheus rejected the query (HTTP 400 bad_data): 1:5: parse error: unclosed left parenthesis"
    )


def test_a_query_timeout_reported_by_prometheus_is_a_timeout_not_a_server_error() -> None:
    body = b'{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}'
    reading = reading_from_exception(
        PrometheusApiClientException(f"HTTP Status Code 503 ({body!r})"), url=URL, timeout=5
    )
    assert reading.kind == ReadingKind.TIMEOUT


def test_a_read_timeout_wrapped_by_urllib3_and_requests_is_a_timeout() -> None:
    inner = urllib3.exceptions.ReadTimeoutError(None, "/api/v1/query", "Read timed out.")
    wrapped = requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/api/v1/query", inner))
    reading = reading_from_exception(wrapped, url=URL, timeout=2.5)
    assert reading == Reading.unknown(ReadingKind.TIMEOUT, f"Prometheus at {URL} did not answer within 2.5s.")


def test_a_refused_connection_is_a_connection_error_named_by_its_innermost_reason() -> None:
    refused = urllib3.exceptions.NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    wrapped = requests.exceptions.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/api/v1/query", refused))
    reading = reading_from_exception(wrapped, url=URL, timeout=5)
    assert reading.kind == ReadingKind.CONNECTION
    assert reading.error is not None
    assert reading.error.startswith(f"Cannot connect to Prometheus at {URL}: ")
    assert reading.error.endswith("[Errno 111] Connection refused")
    assert "/api/v1/query" not in reading.error


def test_an_answer_that_is_not_prometheus_json_is_an_invalid_response() -> None:
    reading = reading_from_exception(ValueError("Expecting value: line 1 column 1"), url=URL, timeout=5)
    assert reading.kind == ReadingKind.INVALID_RESPONSE


# -- the deadline pool ---------------------------------------------------------------------------------------


async def test_a_call_gets_what_is_left_of_its_deadline_as_its_budget() -> None:
    pool = DeadlinePool(max_workers=1, thread_name_prefix="test")
    try:
        budget = await pool.run(lambda left: left, limit=5.0)
    finally:
        pool.shutdown()
    assert 0 < budget <= 5.0


async def test_a_call_still_queued_at_its_deadline_never_runs_and_says_so() -> None:
    pool = DeadlinePool(max_workers=1, thread_name_prefix="test")
    release = threading.Event()
    ran: list[str] = []
    try:
        working = threading.Event()

        def occupy(_: float) -> bool:
            working.set()
            return release.wait(30)

        busy = asyncio.ensure_future(pool.run(occupy, limit=30))
        assert await asyncio.to_thread(working.wait, 10), "the only worker never picked up the first call"
        with pytest.raises(DeadlineExceeded) as late:
            await pool.run(lambda _: ran.append("queued"), limit=0.2)
        assert late.value.started is False
        release.set()
        assert await busy is True
        await pool.run(lambda _: ran.append("after"), limit=5)  # one worker: the queued call was taken first
    finally:
        release.set()
        pool.shutdown()
    assert ran == ["after"]


async def test_a_call_that_started_but_did_not_return_in_time_is_reported_as_started() -> None:
    pool = DeadlinePool(max_workers=1, thread_name_prefix="test")
    release = threading.Event()
    try:
        with pytest.raises(DeadlineExceeded) as late:
            await pool.run(lambda _: release.wait(30), limit=0.2)
        assert late.value.started is True
    finally:
        release.set()
        pool.shutdown()


# Text from outside, and the per-endpoint gate ---------------------------------------------------------


def test_inert_text_loses_escape_sequences_and_control_characters_and_is_cut() -> None:
    text = "a\x1b[31mred\x1b[0m \x1b]0;title\x07b\u202eevil\r\nnext\x00" + "x" * 500
    cleaned = inert(text)
    assert cleaned.startswith("ared bevil next ")
    assert len(cleaned) == TEXT_LIMIT
    assert cleaned.endswith("…")
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in cleaned)


def test_printable_text_keeps_lines_and_markup_but_no_escape_sequences() -> None:
    assert printable("[/oops]\n\x1b[2Jline\t\x1b]8;;http://x\x1b\\two\x9b1m") == "[/oops]\nline\ttwo"


def test_every_reading_error_is_inert_whoever_wrote_it() -> None:
    reading = Reading.unknown(ReadingKind.HTTP_4XX, "\x1b[31m" + "y" * 5000)
    assert reading.error is not None
    assert "\x1b" not in reading.error
    assert len(reading.error) <= MESSAGE_LIMIT


def test_a_secret_is_scrubbed_before_the_text_is_cut_so_no_half_of_it_survives() -> None:
    secret = "s3cr3t-" + "z" * 40
    padding = "p" * (TEXT_LIMIT - 20)
    reading = reading_from_exception(requests.RequestException(padding + secret), url=URL, timeout=5, secrets=[secret])
    assert "s3cr3t" not in (reading.error or "")


async def test_a_gate_slot_is_held_until_the_worker_thread_ends_not_until_the_caller_gives_up() -> None:
    pool = DeadlinePool(max_workers=4, thread_name_prefix="test-gate")
    gate = Gate(1)
    release = threading.Event()
    try:
        with pytest.raises(DeadlineExceeded) as late:
            await pool.run(lambda _budget: release.wait(10), limit=0.2, gate=gate)
        assert late.value.started
        assert gate.busy == 1, "the thread still runs, so its slot is still taken"
        with pytest.raises(DeadlineExceeded) as queued:
            await pool.run(lambda _budget: 1, limit=0.2, gate=gate)
        assert not queued.value.started
        release.set()
        assert await pool.run(lambda _budget: 2, limit=5, gate=gate) == 2
        assert gate.busy == 0
    finally:
        release.set()
        pool.shutdown()


async def test_a_gate_waiter_that_gave_up_does_not_keep_the_slot_from_the_next() -> None:
    gate = Gate(1)
    assert await gate.enter(timeout=1)
    assert not await gate.enter(timeout=0.05)  # gives up
    waiting = asyncio.ensure_future(gate.enter(timeout=5))
    await asyncio.sleep(0.01)
    threading.Thread(target=gate.leave).start()  # released from a worker thread
    assert await waiting
    gate.leave()
    assert gate.busy == 0
