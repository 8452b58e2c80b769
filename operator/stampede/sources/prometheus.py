"""Reads stampede signals from Prometheus: concurrent, deduplicated, bounded in time, never raising.

Many StampedePolicies usually poll the same Prometheus with the same queries on the same tick, so identical
requests of a poll round are sent once and shared. Each request runs in a worker thread of a `DeadlinePool`
(the client blocks), through one cached `PrometheusClient` per endpoint. What this module adds is the sharing,
the client cache and the deadline bookkeeping; what a result means is `readings.py`'s, and how the client
library fails is `client.py`'s.

The names callers use (`Auth`, `Endpoint`, `Reading`, `check_url_allowed`) are re-exported here and from
`stampede.sources`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar
from urllib.parse import urlsplit

from .allowlist import check_url_allowed, redact_url
from .client import PrometheusClient, range_steps
from .endpoints import Auth, Endpoint
from .pooling import DeadlineExceeded, DeadlinePool, Gate
from .readings import Reading, ReadingKind

_log = logging.getLogger(__name__)

T = TypeVar("T")
_RoundEntries = dict[tuple[Endpoint, str], asyncio.Future[Reading]]


class PrometheusSource:
    """Concurrent, deduplicated instant and range queries against any number of Prometheus endpoints."""

    def __init__(
        self, *, max_workers: int = 16, max_rounds: int = 4, max_clients: int = 256, per_endpoint: int | None = None
    ) -> None:
        self._pool = DeadlinePool(max_workers=max_workers, thread_name_prefix="stampede-prometheus")
        # One Prometheus (scheme, host, port) may hold at most a quarter of the workers: a hung one then
        # slows only the policies that query it.
        self._per_endpoint = per_endpoint or max(1, max_workers // 4)
        self._gates: dict[tuple[str, str, int | None], Gate] = {}
        self._max_clients = max_clients
        # Least recently used first: rotated Secrets create new Endpoints, and the clients (and CA files) of
        # the old ones must not pile up for the life of the operator.
        self._clients: OrderedDict[Endpoint, PrometheusClient] = OrderedDict()
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
        stamps = range_steps(start=start, end=end, step=step)

        def call(client: PrometheusClient, budget: float) -> list[tuple[datetime, Reading]]:
            return client.range(query, start=start, end=end, step=step, budget=budget, limit=timeout)

        outcome = await self._run(endpoint, call, limit=timeout)
        if isinstance(outcome, Reading):
            return [(datetime.fromtimestamp(ts, UTC), outcome) for ts in stamps]
        return outcome

    def close(self) -> None:
        """Stops the workers and releases sessions and CA bundle files; the source is unusable after."""
        self._closed = True
        self._pool.shutdown()
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
        def call(client: PrometheusClient, budget: float) -> Reading:
            return client.instant(query, budget=budget, limit=limit)

        return await self._run(endpoint, call, limit=limit)

    async def _run(
        self, endpoint: Endpoint, call: Callable[[PrometheusClient, float], T], *, limit: float
    ) -> T | Reading:
        """Runs `call` with the endpoint's client in the pool; its answer, or a Reading saying why there is none."""

        def counted(budget: float) -> T:
            client = self._client(endpoint)
            with self._count_lock:
                self._request_count += 1
            return call(client, budget)

        try:
            outcome: T | Reading = await self._pool.run(counted, limit=limit, gate=self._gate(endpoint))
        except DeadlineExceeded as late:
            url = redact_url(endpoint.url)
            # Time spent queued behind other queries counts against the caller's timeout.
            what = "did not answer" if late.started else "was not queried"
            outcome = Reading.unknown(ReadingKind.TIMEOUT, f"Prometheus at {url} {what} within {limit:g}s.")
        if isinstance(outcome, Reading) and not outcome.known:
            _log.debug("Prometheus read failed (%s): %s", outcome.kind, outcome.error)
        return outcome

    def _gate(self, endpoint: Endpoint) -> Gate:
        """The gate of the server an endpoint names, whatever its path and credentials."""
        try:
            parts = urlsplit(endpoint.url)
            key = (parts.scheme.lower(), (parts.hostname or "").lower(), parts.port)
        except ValueError:
            key = ("", endpoint.url, None)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = Gate(self._per_endpoint)
        return gate

    def _client(self, endpoint: Endpoint) -> PrometheusClient:
        evicted: list[PrometheusClient] = []
        with self._clients_lock:
            client = self._clients.get(endpoint)
            if client is None:
                client = self._clients[endpoint] = PrometheusClient(endpoint, pool_size=self._pool.max_workers)
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


__all__ = ["Auth", "Endpoint", "PrometheusSource", "Reading", "ReadingKind", "check_url_allowed"]
