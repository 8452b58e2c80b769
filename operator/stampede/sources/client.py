"""The adapter around prometheus-api-client: the only module that knows that library and its quirks.

The project is specified on prometheus-api-client, and the library has habits the rest of the operator must not
learn: it reports an HTTP error only as the text of an exception (status and body recovered here with a regex
and `ast.literal_eval`), it retries connection errors and 5xx by default (an outage becomes a 6-9 s stall per
query), it rounds range bounds to whole seconds, and requests/urllib3 wrap the real cause of a failure several
layers deep. Everything leaves this module as a `Reading` (or a list of them); nothing it raises escapes,
except for programming errors.

Calls block; `PrometheusSource` runs them in its worker threads with a time budget.

What a hostile or broken server can make the operator do is bounded here, under the library rather than
instead of it (`_GuardedAdapter`, the session's transport): a body is streamed and refused beyond
`MAX_BODY_BYTES`, its reading ends at the caller's deadline (and the socket is closed, not pooled), a 3xx is an
error and never followed (the allow-list only ever saw the first hop), and a CA bundle is an in-memory
`ssl.SSLContext` of bounded size instead of a file in /tmp.
"""

from __future__ import annotations

import ast
import re
import ssl
import time
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

import requests
import urllib3
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .allowlist import redact_url
from .endpoints import Endpoint
from .readings import (
    Reading,
    ReadingKind,
    inert,
    reading_from_error_response,
    reading_from_result,
    readings_at_steps,
    without_secrets,
)

MAX_BODY_BYTES: Final = 1024 * 1024
"""Largest answer read from Prometheus: a signal is one number, and a hostile server must not fill memory."""
MAX_CA_BUNDLE_BYTES: Final = 256 * 1024
"""Largest CA bundle (PEM) accepted from a Secret; every cached client keeps its context in memory."""
_CHUNK: Final = 64 * 1024


class BodyTooLarge(requests.RequestException):
    """The answer was longer than MAX_BODY_BYTES; reading stopped there and the connection was closed."""


class RedirectRefused(requests.RequestException):
    """Prometheus answered 3xx; redirects are never followed (the allow-list vetted only the first hop)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def _refuse_redirects(response: requests.Response, *args: object, **kwargs: object) -> None:
    # A response hook runs before requests' own redirect handling would send the second request.
    if 300 <= response.status_code < 400:
        response.close()
        raise RedirectRefused(response.status_code)


def ssl_context_from_pem(pem: str) -> ssl.SSLContext:
    """A verifying client context trusting only the CAs of `pem`; ValueError when it is too large or unusable."""
    size = len(pem.encode("utf-8"))
    if size > MAX_CA_BUNDLE_BYTES:
        raise ValueError(f"the CA bundle is {size} bytes, more than the {MAX_CA_BUNDLE_BYTES} allowed")
    try:
        return ssl.create_default_context(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(f"the CA bundle is not usable PEM ({exc})") from None


def _total_seconds(timeout: object) -> float | None:
    if isinstance(timeout, int | float):
        return float(timeout)
    if isinstance(timeout, tuple):
        parts = [part for part in timeout if isinstance(part, int | float)]
        return float(sum(parts)) if parts else None
    return None


class _GuardedAdapter(HTTPAdapter):
    """The session's transport: a bounded, deadline-bound body read and an in-memory CA context.

    The library asks requests for the whole body at once; this adapter streams it instead and hands the
    library a body it has already read within the limits, so the library itself stays unchanged.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext | None, pool_size: int, max_retries: Retry) -> None:
        self._ssl_context = ssl_context  # set before super().__init__, which builds the pool manager
        super().__init__(max_retries=max_retries, pool_maxsize=pool_size)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        if self._ssl_context is not None:
            pool_kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        if self._ssl_context is not None and url.lower().startswith("https") and verify:
            # requests would add certifi's bundle to the context; only the Secret's CAs are trusted.
            conn.cert_reqs = "CERT_REQUIRED"
            conn.ca_certs = None
            conn.ca_cert_dir = None
            return
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, **kwargs: Any
    ) -> requests.Response:
        started = time.monotonic()
        response = super().send(request, stream=True, timeout=timeout, **kwargs)
        if stream:
            return response
        total = _total_seconds(timeout)
        deadline = started + total if total is not None else None
        try:
            response._content = _read_capped(response, deadline=deadline)
        except BaseException:
            # Closed, not returned to the pool: the rest of this answer must never be read by anyone.
            response.raw.close()
            response.close()
            raise
        response._content_consumed = True  # type: ignore[attr-defined]
        return response


def _read_capped(response: requests.Response, *, deadline: float | None) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BodyTooLarge(f"Content-Length {declared}")
    raw = response.raw
    chunks: list[bytes] = []
    size = 0
    while True:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise requests.exceptions.ReadTimeout("the answer was not read within the deadline")
            _shorten_socket_timeout(raw, left)
        chunk = raw.read(_CHUNK, decode_content=True)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BodyTooLarge(f"more than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)


def _shorten_socket_timeout(raw: Any, left: float) -> None:
    # A server trickling bytes keeps every single read under the read timeout; each read gets only what is
    # left of the deadline instead. urllib3 keeps the connection on the response while it is streamed.
    sock = getattr(getattr(raw, "_connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(left, 0.001))


class PrometheusClient:
    """One PrometheusConnect per endpoint, owning its session (and the in-memory CA context it verifies with)."""

    def __init__(self, endpoint: Endpoint, *, pool_size: int) -> None:
        self.url = endpoint.url.rstrip("/")
        self.shown_url = redact_url(endpoint.url)
        self.secrets = endpoint.auth.secrets()
        self._problem: Reading | None = None
        auth = endpoint.auth
        session = requests.Session()
        session.max_redirects = 0
        session.hooks["response"].append(_refuse_redirects)
        context = None
        if auth.insecure_skip_verify:
            session.verify = False
            _silence_insecure_warning_for(self.url)
        elif auth.ca_pem and urlsplit(self.url).scheme.lower() == "https":
            try:
                context = ssl_context_from_pem(auth.ca_pem)
            except ValueError as exc:
                self._problem = Reading.unknown(
                    ReadingKind.CONNECTION, f"Prometheus at {self.shown_url} was not queried: {exc}."
                )
        headers = {"Authorization": f"Bearer {auth.bearer_token}"} if auth.bearer_token else None
        # Retries are disabled: the client's default (3 retries with backoff on connection errors and 5xx)
        # turns an outage into a silent 6-9 s stall per query. A failure is reported in the same poll and
        # the next poll tick is the retry.
        no_retry = Retry(total=0, connect=0, read=0, status=0, redirect=0, raise_on_status=False)
        self._connect = PrometheusConnect(
            url=self.url, headers=headers, auth=auth.basic, retry=no_retry, session=session
        )
        # Re-mount with a pool as large as the thread pool so concurrent queries do not churn connections.
        session.mount(self.url, _GuardedAdapter(ssl_context=context, pool_size=pool_size, max_retries=no_retry))
        self._session = session

    def instant(self, query: str, *, budget: float, limit: float) -> Reading:
        """An instant query within `budget` seconds; `limit` is the caller's whole timeout, named in messages."""
        if self._problem is not None:
            return self._problem
        # Prometheus's own timeout param (float seconds) makes it stop evaluating a query that nobody waits
        # for any more.
        try:
            result = self._connect.custom_query(query, params={"timeout": f"{budget:.3f}"}, timeout=budget)
        except Exception as exc:
            return reading_from_exception(exc, url=self.shown_url, timeout=limit, secrets=self.secrets).scrubbed(
                self.secrets
            )
        return reading_from_result(result)

    def range(
        self, query: str, *, start: datetime, end: datetime, step: float, budget: float, limit: float
    ) -> list[tuple[datetime, Reading]]:
        """One Reading per step of `range_steps(start, end, step)`; a failed query fails every step."""
        stamps = range_steps(start=start, end=end, step=step)
        if self._problem is not None:
            return [(datetime.fromtimestamp(ts, UTC), self._problem) for ts in stamps]
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
            failed = reading_from_exception(exc, url=self.shown_url, timeout=limit, secrets=self.secrets).scrubbed(
                self.secrets
            )
            return [(datetime.fromtimestamp(ts, UTC), failed) for ts in stamps]
        return readings_at_steps(result, stamps)

    def close(self) -> None:
        self._session.close()


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


def _reading_from_client_exception(text: str) -> Reading:
    match = _CLIENT_ERROR.match(text)
    if match is None:
        return Reading.unknown(ReadingKind.INVALID_RESPONSE, f"Prometheus query failed: {inert(text)}")
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


def reading_from_exception(exc: BaseException, *, url: str, timeout: float, secrets: Sequence[str] = ()) -> Reading:
    """What a failed call of the client means, as an unknown reading; `url` must already be redacted.

    Text that came from the server or the library is scrubbed of `secrets` before the reading cuts it.
    """

    def told(text: str) -> str:
        # Scrubbed before it is cut: a secret cut in half would no longer be found.
        return inert(without_secrets(text, secrets))

    if isinstance(exc, PrometheusApiClientException):
        return _reading_from_client_exception(without_secrets(str(exc), secrets))
    if isinstance(exc, RedirectRefused):
        return Reading.unknown(
            ReadingKind.INVALID_RESPONSE,
            f"Prometheus at {url} answered with a redirect (HTTP {exc.status}), which is never followed: "
            "set spec.prometheus.url to the final address.",
        )
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return Reading.unknown(
            ReadingKind.INVALID_RESPONSE, f"Prometheus at {url} answered with a redirect, which is never followed."
        )
    if isinstance(exc, BodyTooLarge):
        return Reading.unknown(
            ReadingKind.INVALID_RESPONSE,
            f"Prometheus at {url} sent an answer larger than {MAX_BODY_BYTES // 1024} KiB; it was not read "
            "(aggregate the query to a single series).",
        )
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
            ReadingKind.CONNECTION, f"TLS connection to Prometheus at {url} failed: {told(_innermost_reason(exc))}"
        )
    if isinstance(exc, requests.ConnectionError):
        return Reading.unknown(
            ReadingKind.CONNECTION, f"Cannot connect to Prometheus at {url}: {told(_innermost_reason(exc))}"
        )
    if isinstance(exc, ValueError | KeyError | TypeError):
        # JSON decoding errors and missing "data"/"result" keys: something that is not Prometheus answered.
        return Reading.unknown(
            ReadingKind.INVALID_RESPONSE,
            f"Prometheus at {url} sent an answer that is not Prometheus API JSON.",
        )
    if isinstance(exc, requests.RequestException):
        return Reading.unknown(ReadingKind.CONNECTION, f"Request to Prometheus at {url} failed: {told(str(exc))}")
    return Reading.unknown(ReadingKind.INVALID_RESPONSE, f"Reading Prometheus at {url} failed: {told(repr(exc))}")


__all__ = [
    "MAX_BODY_BYTES",
    "MAX_CA_BUNDLE_BYTES",
    "PrometheusClient",
    "range_steps",
    "reading_from_exception",
    "ssl_context_from_pem",
]
