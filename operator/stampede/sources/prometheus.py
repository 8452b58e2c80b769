"""Reads stampede signals from Prometheus without ever lying about them.

The engine needs numbers, but an outage, a typo in PromQL or an empty vector must never be mistaken for 0:
a dashboard reading 0 connections during an outage is exactly how a stampede goes unnoticed. So every
read answers with a `Reading` that is either a number or *unknown* with a one-sentence reason and a
machine-readable kind. Many StampedePolicies usually poll the same Prometheus with the same queries on
the same tick, so identical requests of a poll round are sent once and shared.

prometheus-api-client is blocking; all calls run in a bounded thread pool so the operator's event loop
(and with it kopf's handlers and timers) never stalls behind a slow Prometheus.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import concurrent.futures
import contextlib
import json
import logging
import math
import os
import re
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

_log = logging.getLogger(__name__)

ALLOWED_URLS_ENV: Final = "STAMPEDE_ALLOWED_PROMETHEUS_URLS"


class ReadingKind:
    """Machine-readable reasons for an unknown reading (plain strings so they serialise as-is)."""

    CONNECTION: Final = "connection"
    TIMEOUT: Final = "timeout"
    HTTP_4XX: Final = "http_4xx"
    HTTP_5XX: Final = "http_5xx"
    EMPTY: Final = "empty"
    MULTIPLE_SERIES: Final = "multiple_series"
    NAN: Final = "nan"
    INVALID_RESPONSE: Final = "invalid_response"


@dataclass(frozen=True)
class Auth:
    """Secret material already resolved by the caller (handlers read the Secrets, not this layer)."""

    bearer_token: str | None = None
    basic: tuple[str, str] | None = None
    ca_pem: str | None = None
    insecure_skip_verify: bool = False

    def __repr__(self) -> str:
        # Endpoints end up in log lines and exception messages; only say *whether* a secret is set.
        def shown(value: object) -> str:
            return "<set>" if value else "None"

        return (
            f"Auth(bearer_token={shown(self.bearer_token)}, basic={shown(self.basic)}, "
            f"ca_pem={shown(self.ca_pem)}, insecure_skip_verify={self.insecure_skip_verify})"
        )

    def secrets(self) -> list[str]:
        """Every string that must never appear in an error message, in the forms it could leak in."""
        found: list[str] = []
        if self.bearer_token:
            found.append(self.bearer_token)
        if self.basic:
            user, password = self.basic
            if password:
                found.append(password)
            # A server echoing the Authorization header would leak the pair base64-encoded.
            found.append(base64.b64encode(f"{user}:{password}".encode()).decode("ascii"))
        return found


@dataclass(frozen=True)
class Endpoint:
    """Where a Prometheus lives and how to authenticate to it; hashable so clients can be cached per
    endpoint."""

    url: str
    auth: Auth = field(default_factory=Auth)


@dataclass(frozen=True)
class Reading:
    """A number, or unknown (value None) with the reason; unknown is never 0."""

    value: float | None
    error: str | None = None
    kind: str | None = None

    @property
    def known(self) -> bool:
        return self.value is not None

    @classmethod
    def unknown(cls, kind: str, error: str) -> Reading:
        return cls(value=None, error=error, kind=kind)


# --------------------------------------------------------------------------------------------------------
# Pure parsing of Prometheus API results.


def _sample_value(raw: object, *, what: str) -> Reading:
    """Turns one `[timestamp, "value"]` pair into a Reading, refusing NaN and infinities."""
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        return Reading.unknown(ReadingKind.INVALID_RESPONSE, f"Prometheus returned a malformed {what}.")
    try:
        number = float(raw[1])
    except (TypeError, ValueError):
        return Reading.unknown(
            ReadingKind.INVALID_RESPONSE,
            f"Prometheus returned a non-numeric {what} value {str(raw[1])[:60]!r}.",
        )
    if math.isnan(number) or math.isinf(number):
        # NaN/Inf usually mean a division by zero (e.g. an idle rate); they are no basis for a decision.
        return Reading.unknown(ReadingKind.NAN, f"The query evaluated to {raw[1]}, which is not a usable number.")
    return Reading(value=number)


_NOT_A_LIST: Final = Reading.unknown(ReadingKind.INVALID_RESPONSE, "Prometheus returned a result that is not a list.")


def reading_from_result(result: object, result_type: str | None = None) -> Reading:
    """Interprets the `data.result` part of an instant-query answer.

    prometheus-api-client hands back only `data.result` and drops `resultType`, so when it is not given
    the type is recognised by shape: a scalar is `[ts, "v"]`, a vector is a list of `{metric, value}`.
    """
    if result_type == "string":
        return Reading.unknown(ReadingKind.INVALID_RESPONSE, "The query returned a string, not a number.")
    if result_type == "scalar" or (
        result_type is None and isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict)
    ):
        return _sample_value(result, what="scalar")
    if not isinstance(result, list):
        return _NOT_A_LIST
    if not result:
        return Reading.unknown(ReadingKind.EMPTY, "The query returned no series (empty vector).")
    if len(result) > 1:
        return Reading.unknown(
            ReadingKind.MULTIPLE_SERIES,
            f"The query returned {len(result)} series; aggregate it (e.g. with sum or max) to a single one.",
        )
    series = result[0]
    if not isinstance(series, dict):
        return Reading.unknown(ReadingKind.INVALID_RESPONSE, "Prometheus returned a malformed series.")
    if result_type == "matrix" or "values" in series:
        return Reading.unknown(
            ReadingKind.INVALID_RESPONSE, "The query returned a range vector; an instant vector is required."
        )
    return _sample_value(series.get("value"), what="sample")


def _error_text(body: bytes) -> tuple[str | None, str]:
    """Prometheus's own (errorType, error) from an error body, or the start of whatever else came back
    (a proxy's HTML page, for instance)."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        error_type = payload.get("errorType")
        return (error_type if isinstance(error_type, str) else None), payload["error"]
    text = " ".join(body.decode("utf-8", errors="replace").split())
    return None, (text[:200] + "…") if len(text) > 200 else text


def reading_from_error_response(status: int, body: bytes) -> Reading:
    """Interprets a non-200 answer, keeping Prometheus's own error text (e.g. "parse error: ...")."""
    error_type, text = _error_text(body)
    detail = f": {text}" if text else "."
    if error_type == "timeout":
        # Prometheus gave up evaluating within its query timeout; to the caller that is a timeout.
        return Reading.unknown(ReadingKind.TIMEOUT, f"Prometheus timed out evaluating the query{detail}")
    label = f"HTTP {status}" + (f" {error_type}" if error_type else "")
    if 400 <= status < 500:
        return Reading.unknown(ReadingKind.HTTP_4XX, f"Prometheus rejected the query ({label}){detail}")
    if 500 <= status < 600:
        return Reading.unknown(ReadingKind.HTTP_5XX, f"Prometheus failed to answer ({label}){detail}")
    return Reading.unknown(ReadingKind.INVALID_RESPONSE, f"Prometheus answered with unexpected {label}{detail}")


# prometheus-api-client 0.7.2 raises PrometheusApiClientException("HTTP Status Code 400 (b'...')") and
# keeps neither the status nor the body as attributes, so both are recovered from the message. The body
# is the repr() of a bytes object, which ast.literal_eval turns back into bytes without evaluating code.
_CLIENT_ERROR = re.compile(r"\AHTTP Status Code (\d{3}) \((.*)\)\Z", re.DOTALL)


def _reading_from_client_exception(exc: PrometheusApiClientException) -> Reading:
    match = _CLIENT_ERROR.match(str(exc))
    if match is None:
        return Reading.unknown(ReadingKind.INVALID_RESPONSE, f"Prometheus query failed: {str(exc)[:200]}")
    status = int(match.group(1))
    try:
        body = ast.literal_eval(match.group(2))
    except (ValueError, SyntaxError):
        body = match.group(2).encode()
    if not isinstance(body, bytes):
        body = str(body).encode()
    return reading_from_error_response(status, body)


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """exc and the exceptions it wraps, outermost first (urllib3 nests them in `reason` and `args`)."""
    chain = [exc]
    seen = {id(exc)}
    while True:
        current = chain[-1]
        nested = getattr(current, "reason", None)
        if not isinstance(nested, BaseException):
            nested = current.args[0] if current.args and isinstance(current.args[0], BaseException) else None
        if nested is None:
            nested = current.__cause__
        if nested is None or id(nested) in seen:
            return chain
        seen.add(id(nested))
        chain.append(nested)


def _innermost_reason(exc: BaseException) -> str:
    """The most specific message in an exception chain ("[Errno 111] Connection refused" rather than
    three layers of urllib3 wrapping that include the request path)."""
    reason = _exception_chain(exc)[-1]
    text = str(reason)
    # urllib3 prefixes connection errors with the connection object's repr.
    text = re.sub(r"^<[^>]*>:\s*", "", text)
    return text or type(reason).__name__


def _is_timeout(exc: BaseException) -> bool:
    # urllib3 2.x derives NewConnectionError (e.g. connection refused) from ConnectTimeoutError for
    # backwards compatibility; requests makes the same exception.
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return False
    return isinstance(exc, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError)


def _reading_from_exception(exc: BaseException, *, url: str, timeout: float) -> Reading:
    if isinstance(exc, PrometheusApiClientException):
        return _reading_from_client_exception(exc)
    # ConnectTimeout is both a Timeout and a ConnectionError, and with retries disabled requests reports a
    # read timeout as a ConnectionError wrapping urllib3's MaxRetryError(ReadTimeoutError); either way it
    # is a timeout.
    if any(_is_timeout(link) for link in _exception_chain(exc)):
        return Reading.unknown(ReadingKind.TIMEOUT, f"Prometheus at {url} did not answer within {timeout:g}s.")
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return Reading.unknown(ReadingKind.CONNECTION, f"Prometheus URL {url!r} is not a valid http(s) URL.")
    if isinstance(exc, requests.exceptions.InvalidSchema):
        return Reading.unknown(ReadingKind.CONNECTION, f"Prometheus URL {url!r} must use http or https.")
    if isinstance(exc, requests.exceptions.SSLError):
        return Reading.unknown(
            ReadingKind.CONNECTION, f"TLS connection to Prometheus at {url} failed: {_innermost_reason(exc)}"
        )
    if isinstance(exc, requests.ConnectionError):
        return Reading.unknown(
            ReadingKind.CONNECTION, f"Cannot connect to Prometheus at {url}: {_innermost_reason(exc)}"
        )
    if isinstance(exc, ValueError | KeyError | TypeError):
        # JSON decoding errors and missing "data"/"result" keys: something that is not Prometheus answered.
        return Reading.unknown(
            ReadingKind.INVALID_RESPONSE,
            f"Prometheus at {url} sent an answer that is not Prometheus API JSON.",
        )
    if isinstance(exc, requests.RequestException):
        return Reading.unknown(ReadingKind.CONNECTION, f"Request to Prometheus at {url} failed: {exc}")
    return Reading.unknown(ReadingKind.INVALID_RESPONSE, f"Reading Prometheus at {url} failed: {exc!r}")


def _scrub(reading: Reading, secrets: Sequence[str]) -> Reading:
    """Last line of defence: whatever a server or library put into the message, secrets do not leave."""
    if reading.error is None or not secrets:
        return reading
    text = reading.error
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return Reading(value=reading.value, error=text, kind=reading.kind)


# --------------------------------------------------------------------------------------------------------
# URL allow-list.


def allowed_prefixes_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The comma-separated allow-list from STAMPEDE_ALLOWED_PROMETHEUS_URLS; empty means unrestricted."""
    raw = (os.environ if environ is None else environ).get(ALLOWED_URLS_ENV, "")
    return [part.strip() for part in raw.split(",") if part.strip()]


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True)
class _UrlParts:
    scheme: str
    host: str
    port: int
    segments: tuple[str, ...]


def _split_url(url: str) -> tuple[_UrlParts | None, str | None]:
    if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in url):
        return None, "contains whitespace, control characters or backslashes"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return None, f"cannot be parsed ({exc})"
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        return None, "must use http or https"
    if "@" in parts.netloc or parts.username is not None or parts.password is not None:
        # Credentials belong in a Secret, and "@" is the classic way to disguise the real host.
        return None, "must not contain user information (user:password@); put credentials in a Secret"
    if not parts.hostname:
        return None, "has no host"
    path = parts.path
    raw_segments = [segment for segment in path.split("/") if segment]
    decoded = [unquote(segment) for segment in raw_segments]
    if any(segment in {".", ".."} or "/" in segment or "\\" in segment for segment in decoded):
        return None, "contains dot segments or encoded slashes in its path"
    return (
        _UrlParts(
            scheme=scheme,
            host=parts.hostname.lower(),
            port=port if port is not None else _DEFAULT_PORTS[scheme],
            segments=tuple(raw_segments),
        ),
        None,
    )


def check_url_allowed(url: str, allowed_prefixes: Sequence[str]) -> str | None:
    """None when `url` may be queried, otherwise the reason it may not.

    Prefixes are compared as parsed URLs (scheme, host, effective port, then whole path segments), never
    as strings, so "http://prom.ok:9090" does not admit "http://prom.ok:9090.evil.com",
    "http://prom.ok:9090@evil.com" or "http://prom.ok:90901". An empty allow-list means no restriction,
    but a URL must still be a plain http(s) URL without credentials.
    """
    target, problem = _split_url(url)
    if target is None:
        return f"Prometheus URL {_redact_url(url)!r} {problem}."
    if not allowed_prefixes:
        return None
    for prefix in allowed_prefixes:
        allowed, _ = _split_url(prefix.strip())
        if allowed is None:
            continue
        if (allowed.scheme, allowed.host, allowed.port) == (
            target.scheme,
            target.host,
            target.port,
        ) and target.segments[: len(allowed.segments)] == allowed.segments:
            return None
    return (
        f"Prometheus URL {_redact_url(url)!r} is not under any prefix allowed by {ALLOWED_URLS_ENV} "
        f"({', '.join(allowed_prefixes)})."
    )


def _redact_url(url: str) -> str:
    """The URL without any user information, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


# --------------------------------------------------------------------------------------------------------
# The source.


class _Client:
    """One PrometheusConnect per endpoint, owning the session and the CA bundle file it verifies with."""

    def __init__(self, endpoint: Endpoint, *, pool_size: int) -> None:
        self.url = endpoint.url.rstrip("/")
        self.secrets = endpoint.auth.secrets()
        self._ca_path: str | None = None
        auth = endpoint.auth
        session = requests.Session()
        if auth.insecure_skip_verify:
            session.verify = False
            _silence_insecure_warning_for(self.url)
        elif auth.ca_pem:
            # requests only takes a CA bundle as a path; mkstemp creates it 0600 so other users of the node
            # cannot swap it, and close() removes it.
            fd, self._ca_path = tempfile.mkstemp(prefix="stampede-ca-", suffix=".pem")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(auth.ca_pem)
            session.verify = self._ca_path
        headers = {"Authorization": f"Bearer {auth.bearer_token}"} if auth.bearer_token else None
        # Retries are disabled: the client's default (3 retries with backoff on connection errors and 5xx)
        # turns an outage into a silent 6-9 s stall per query. A failure is reported in the same poll and
        # the next poll tick is the retry.
        no_retry = Retry(total=0, connect=0, read=0, status=0, redirect=0, raise_on_status=False)
        self.connect = PrometheusConnect(
            url=self.url, headers=headers, auth=auth.basic, retry=no_retry, session=session
        )
        # Re-mount with a pool as large as the thread pool so concurrent queries do not churn connections.
        session.mount(self.url, HTTPAdapter(max_retries=no_retry, pool_maxsize=pool_size))
        self.session = session

    def close(self) -> None:
        self.session.close()
        if self._ca_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._ca_path)
            self._ca_path = None


def _silence_insecure_warning_for(url: str) -> None:
    # warnings.catch_warnings() is not thread-safe, so instead of silencing around each call a filter is
    # added that matches only this host's message: the user explicitly chose insecure_skip_verify for it,
    # while other hosts keep warning.
    host = urlsplit(url).hostname or ""
    warnings.filterwarnings(
        "ignore",
        message=rf"Unverified HTTPS request is being made to host '{re.escape(host)}'",
        category=urllib3.exceptions.InsecureRequestWarning,
    )


_RoundEntries = dict[tuple[Endpoint, str], asyncio.Future[Reading]]


class PrometheusSource:
    """Concurrent, deduplicated instant and range queries against any number of Prometheus endpoints."""

    def __init__(self, *, max_workers: int = 16, max_rounds: int = 4, max_clients: int = 256) -> None:
        self._max_workers = max_workers
        self._max_clients = max_clients
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="stampede-prometheus"
        )
        # Least recently used first: rotated Secrets create new Endpoints, and the clients (and CA files) of
        # the old ones must not pile up for the life of the operator.
        self._clients: OrderedDict[Endpoint, _Client] = OrderedDict()
        self._clients_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._request_count = 0
        self._max_rounds = max_rounds
        # round_key -> (endpoint, query) -> shared future; finished futures double as the round's cache.
        self._rounds: OrderedDict[object, _RoundEntries] = OrderedDict()
        self._closed = False

    @property
    def request_count(self) -> int:
        """HTTP queries actually sent (deduplicated and cached reads do not count)."""
        return self._request_count

    async def read(
        self,
        endpoint: Endpoint,
        queries: Mapping[str, str],
        *,
        # The timeout is passed down to the HTTP client in the worker thread, which asyncio.timeout
        # around the caller's await could not reach.
        timeout: float,  # noqa: ASYNC109
        round_key: object,
    ) -> dict[str, Reading]:
        """Instant-queries each name -> PromQL concurrently; never raises for Prometheus failures.

        Identical (endpoint, query, round_key) requests are sent once and shared by every caller, and the
        answers of the last few rounds are kept, so a policy polling late in a round still gets that
        round's answer. A shared request runs with the timeout of the caller that started it.
        """
        if self._closed:
            raise RuntimeError("PrometheusSource is closed")
        loop = asyncio.get_running_loop()
        entries = self._round(round_key)
        futures: dict[str, asyncio.Future[Reading]] = {}
        for name, query in queries.items():
            key = (endpoint, query)
            future = entries.get(key)
            if future is None or not _reusable(future, loop):
                future = asyncio.ensure_future(self._instant(endpoint, query, limit=timeout))
                entries[key] = future
            futures[name] = future
        # shield: one caller being cancelled must not cancel the request other callers are waiting for.
        results = await asyncio.gather(*(self._await_shared(f, loop) for f in futures.values()))
        return dict(zip(futures, results, strict=True))

    async def read_range(
        self,
        endpoint: Endpoint,
        query: str,
        *,
        start: datetime,
        end: datetime,
        step: float,
        timeout: float,  # noqa: ASYNC109 - handed to the HTTP client in the worker thread, as in read()
    ) -> list[tuple[datetime, Reading]]:
        """One Reading per step timestamp from start to end (whole seconds, as the client sends them).

        A step without a sample is unknown ("empty"), a step where several series have samples is unknown
        ("multiple_series"); if the whole query fails every step carries that failure.
        """
        if self._closed:
            raise RuntimeError("PrometheusSource is closed")
        if step <= 0:
            raise ValueError("step must be positive")
        # The client rounds start and end to whole seconds, so the steps Prometheus evaluates are these.
        first = round(start.timestamp())
        last = round(end.timestamp())
        stamps: list[float] = []
        index = 0
        while first + index * step <= last:
            stamps.append(first + index * step)
            index += 1
        deadline = time.monotonic() + timeout

        def call(client: _Client, remaining: float) -> Any:
            return client.connect.custom_query_range(
                query,
                start_time=datetime.fromtimestamp(first, UTC),
                end_time=datetime.fromtimestamp(last, UTC),
                step=f"{step:g}",
                params={"timeout": f"{remaining:.3f}"},
                timeout=remaining,
            )

        outcome = await self._run(endpoint, call, deadline=deadline, limit=timeout)
        if isinstance(outcome, Reading):
            return [(datetime.fromtimestamp(ts, UTC), outcome) for ts in stamps]
        return _range_readings(outcome, stamps)

    def close(self) -> None:
        """Stops the workers and releases sessions and CA bundle files; the source is unusable after."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            client.close()
        self._rounds.clear()

    # ----------------------------------------------------------------------------------------------------

    def _round(self, round_key: object) -> _RoundEntries:
        entries = self._rounds.get(round_key)
        if entries is None:
            entries = self._rounds[round_key] = {}
            while len(self._rounds) > self._max_rounds:
                self._rounds.popitem(last=False)
        return entries

    @staticmethod
    async def _await_shared(future: asyncio.Future[Reading], loop: asyncio.AbstractEventLoop) -> Reading:
        if future.get_loop() is not loop:
            # A finished answer from an earlier event loop (e.g. another test) is still a valid answer.
            return future.result()
        return await asyncio.shield(future)

    async def _instant(self, endpoint: Endpoint, query: str, *, limit: float) -> Reading:
        deadline = time.monotonic() + limit

        def call(client: _Client, remaining: float) -> Any:
            # Prometheus's own timeout param (float seconds) makes it stop evaluating a query that nobody
            # waits for any more.
            params = {"timeout": f"{remaining:.3f}"}
            return client.connect.custom_query(query, params=params, timeout=remaining)

        outcome = await self._run(endpoint, call, deadline=deadline, limit=limit)
        return outcome if isinstance(outcome, Reading) else reading_from_result(outcome)

    async def _run(
        self,
        endpoint: Endpoint,
        call: Callable[[_Client, float], Any],
        *,
        deadline: float,
        limit: float,
    ) -> Any:
        """Runs `call` in the pool; answers its result, or a Reading describing why there is none."""
        url = _redact_url(endpoint.url)
        secrets = endpoint.auth.secrets()

        def blocking() -> Any:
            # Time spent queued behind other queries counts against the caller's timeout.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Reading.unknown(ReadingKind.TIMEOUT, f"Prometheus at {url} was not queried within {limit:g}s.")
            client = self._client(endpoint)
            with self._count_lock:
                self._request_count += 1
            try:
                return call(client, remaining)
            except Exception as exc:
                return _reading_from_exception(exc, url=url, timeout=limit)

        loop = asyncio.get_running_loop()
        try:
            # requests' timeout bounds each socket operation, not the whole exchange (a server trickling
            # bytes could hold it for much longer), so the await is bounded too. The worker thread cannot be
            # interrupted; it ends at the latest when its socket timeout fires.
            outcome = await asyncio.wait_for(loop.run_in_executor(self._executor, blocking), limit)
        except TimeoutError:
            outcome = Reading.unknown(ReadingKind.TIMEOUT, f"Prometheus at {url} did not answer within {limit:g}s.")
        if isinstance(outcome, Reading):
            scrubbed = _scrub(outcome, secrets)
            _log.debug("Prometheus read failed (%s): %s", scrubbed.kind, scrubbed.error)
            return scrubbed
        return outcome

    def _client(self, endpoint: Endpoint) -> _Client:
        evicted: list[_Client] = []
        with self._clients_lock:
            client = self._clients.get(endpoint)
            if client is None:
                client = self._clients[endpoint] = _Client(endpoint, pool_size=self._max_workers)
                while len(self._clients) > self._max_clients:
                    evicted.append(self._clients.popitem(last=False)[1])
            else:
                self._clients.move_to_end(endpoint)
        # An evicted client has not been used for the longest time; a request still running on it would
        # at worst fail once and be retried on the next poll with a fresh client.
        for old in evicted:
            old.close()
        return client


def _reusable(future: asyncio.Future[Reading], loop: asyncio.AbstractEventLoop) -> bool:
    if future.get_loop() is loop:
        return not future.cancelled()
    # A future of another (maybe closed) event loop can only be reused once it holds an answer.
    return future.done() and not future.cancelled() and future.exception() is None


def _range_readings(result: object, stamps: Sequence[float]) -> list[tuple[datetime, Reading]]:
    """Spreads a matrix result over the expected step timestamps."""
    if not isinstance(result, list):
        return [(datetime.fromtimestamp(ts, UTC), _NOT_A_LIST) for ts in stamps]
    # Millisecond keys: Prometheus's float timestamps and ours agree to the millisecond, not bit for bit.
    by_stamp: dict[int, list[object]] = {}
    for series in result:
        values = series.get("values") if isinstance(series, dict) else None
        if not isinstance(values, list):
            continue
        for pair in values:
            if isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], int | float):
                by_stamp.setdefault(round(float(pair[0]) * 1000), []).append(pair)
    readings: list[tuple[datetime, Reading]] = []
    for ts in stamps:
        samples = by_stamp.get(round(ts * 1000), [])
        if not samples:
            reading = Reading.unknown(ReadingKind.EMPTY, "No series had a sample at this step.")
        elif len(samples) > 1:
            reading = Reading.unknown(
                ReadingKind.MULTIPLE_SERIES,
                f"{len(samples)} series had a sample at this step; aggregate the query to a single series.",
            )
        else:
            reading = _sample_value(samples[0], what="sample")
        readings.append((datetime.fromtimestamp(ts, UTC), reading))
    return readings
