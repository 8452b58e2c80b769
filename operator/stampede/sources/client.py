"""The adapter around prometheus-api-client: the only module that knows that library and its quirks.

The project is specified on prometheus-api-client, and the library has habits the rest of the operator must not
learn: it reports an HTTP error only as the text of an exception (status and body recovered here with a regex
and `ast.literal_eval`), it retries connection errors and 5xx by default (an outage becomes a 6-9 s stall per
query), it rounds range bounds to whole seconds, and requests/urllib3 wrap the real cause of a failure several
layers deep. Everything leaves this module as a `Reading` (or a list of them); nothing it raises escapes,
except for programming errors.

Calls block; `PrometheusSource` runs them in its worker threads with a time budget.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
import tempfile
import warnings
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

import requests
import urllib3
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .allowlist import redact_url
from .endpoints import Endpoint
from .readings import Reading, ReadingKind, reading_from_error_response, reading_from_result, readings_at_steps


class PrometheusClient:
    """One PrometheusConnect per endpoint, owning the session and the CA bundle file it verifies with."""

    def __init__(self, endpoint: Endpoint, *, pool_size: int) -> None:
        self.url = endpoint.url.rstrip("/")
        self.shown_url = redact_url(endpoint.url)
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
        self._connect = PrometheusConnect(
            url=self.url, headers=headers, auth=auth.basic, retry=no_retry, session=session
        )
        # Re-mount with a pool as large as the thread pool so concurrent queries do not churn connections.
        session.mount(self.url, HTTPAdapter(max_retries=no_retry, pool_maxsize=pool_size))
        self._session = session

    def instant(self, query: str, *, budget: float, limit: float) -> Reading:
        """An instant query within `budget` seconds; `limit` is the caller's whole timeout, named in messages."""
        # Prometheus's own timeout param (float seconds) makes it stop evaluating a query that nobody waits
        # for any more.
        try:
            result = self._connect.custom_query(query, params={"timeout": f"{budget:.3f}"}, timeout=budget)
        except Exception as exc:
            return reading_from_exception(exc, url=self.shown_url, timeout=limit).scrubbed(self.secrets)
        return reading_from_result(result)

    def range(
        self, query: str, *, start: datetime, end: datetime, step: float, budget: float, limit: float
    ) -> list[tuple[datetime, Reading]]:
        """One Reading per step of `range_steps(start, end, step)`; a failed query fails every step."""
        stamps = range_steps(start=start, end=end, step=step)
        try:
            result = self._connect.custom_query_range(
                query,
                start_time=datetime.fromtimestamp(round(start.timestamp()), UTC),
                end_time=datetime.fromtimestamp(round(end.timestamp()), UTC),
                step=f"{step:g}",
                params={"timeout": f"{budget:.3f}"},
                timeout=budget,
            )
        except Exception as exc:
            failed = reading_from_exception(exc, url=self.shown_url, timeout=limit).scrubbed(self.secrets)
            return [(datetime.fromtimestamp(ts, UTC), failed) for ts in stamps]
        return readings_at_steps(result, stamps)

    def close(self) -> None:
        self._session.close()
        if self._ca_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._ca_path)
            self._ca_path = None


def range_steps(*, start: datetime, end: datetime, step: float) -> list[float]:
    """The timestamps Prometheus evaluates a range query at, as this client sends it.

    The client rounds start and end to whole seconds, so the steps are counted from the rounded start.
    """
    if step <= 0:
        raise ValueError("step must be positive")
    first = round(start.timestamp())
    last = round(end.timestamp())
    stamps: list[float] = []
    index = 0
    while first + index * step <= last:
        stamps.append(first + index * step)
        index += 1
    return stamps


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


# --------------------------------------------------------------------------------------------------------
# What the library and its transport raise, turned into readings.

# prometheus-api-client 0.7.2 raises PrometheusApiClientException("HTTP Status Code 400 (b'...')") and
# keeps neither the status nor the body as attributes, so both are recovered from the message. The body
# is the repr() of a bytes object, which ast.literal_eval turns back into bytes without evaluating code.
_CLIENT_ERROR: Final = re.compile(r"\AHTTP Status Code (\d{3}) \((.*)\)\Z", re.DOTALL)


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


def reading_from_exception(exc: BaseException, *, url: str, timeout: float) -> Reading:
    """What a failed call of the client means, as an unknown reading; `url` must already be redacted."""
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


__all__ = ["PrometheusClient", "range_steps", "reading_from_exception"]
