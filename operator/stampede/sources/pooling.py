"""Blocking calls in a bounded thread pool, each within one deadline that counts queueing too.

Prometheus clients block, and the operator's event loop (with it kopf's handlers and timers) must never stall
behind a slow Prometheus. A timeout handed to an HTTP client bounds each socket operation, not the whole
exchange, and says nothing about the time a call waited for a free worker; so the deadline is fixed when the
caller asks, the call gets what is left of it as its budget, and the await is bounded as well.

A `Gate` limits how many calls of one kind (the operator: per Prometheus endpoint) hold workers at once, so
one hung endpoint cannot take every worker from the others. A slot is held until the worker thread really
ends, not only until its caller stopped waiting: a call past its deadline still occupies a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The call did not finish within the caller's limit; `started` says whether it ever ran."""

    def __init__(self, *, started: bool) -> None:
        super().__init__("started but unfinished" if started else "never started")
        self.started = started


class Gate:
    """At most `size` holders at once; waiters are served first come, first served, from any event loop.

    Released from worker threads, so it is built on a lock and loop futures rather than asyncio.Semaphore
    (bound to one loop, released on it only).
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("a gate needs at least one slot")
        self.size = size
        self._busy = 0
        self._lock = threading.Lock()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def busy(self) -> int:
        with self._lock:
            return self._busy

    async def enter(self, *, timeout: float) -> bool:  # noqa: ASYNC109 - the caller's deadline, not a wrapper's
        """Takes a slot; False (and no slot) when none came free within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._busy < self.size and not self._waiters:
                self._busy += 1
                return True
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, waiter))
        try:
            await asyncio.wait_for(waiter, max(timeout, 0.0))
        except TimeoutError:
            with self._lock:
                if (loop, waiter) in self._waiters:
                    self._waiters.remove((loop, waiter))
            # Otherwise a slot is already on its way to this cancelled waiter; `_hand_over` passes it on.
            return False
        return True

    def leave(self) -> None:
        """Gives the slot back (from any thread): to the longest waiter, or free."""
        with self._lock:
            while self._waiters:
                loop, waiter = self._waiters.popleft()
                try:
                    loop.call_soon_threadsafe(self._hand_over, waiter)
                except RuntimeError:  # that waiter's loop is closed
                    continue
                return
            self._busy -= 1

    def _hand_over(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():  # it gave up in the meantime: the slot goes to the next one
            self.leave()
        else:
            waiter.set_result(None)


class DeadlinePool:
    """A thread pool whose calls receive the seconds left of their caller's deadline."""

    def __init__(self, *, max_workers: int, thread_name_prefix: str) -> None:
        self.max_workers = max_workers
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=thread_name_prefix
        )

    async def run(self, call: Callable[[float], T], *, limit: float, gate: Gate | None = None) -> T:
        """`call(budget)` in a worker, where budget is what is left of `limit` seconds from now.

        Raises DeadlineExceeded when the call was still queued at the deadline (it then never runs) or had
        not returned by then. A worker thread cannot be interrupted; it ends at the latest when the call's
        own budget-bound timeouts fire. With a `gate`, the call first waits (within the same deadline) for
        one of the gate's slots and holds it until its thread has ended.
        """
        deadline = time.monotonic() + limit
        if gate is not None and not await gate.enter(timeout=limit):
            raise DeadlineExceeded(started=False)
        started = threading.Event()

        def blocking() -> T:
            budget = deadline - time.monotonic()
            if budget <= 0:
                raise DeadlineExceeded(started=False)
            started.set()
            return call(budget)

        try:
            submitted = self._executor.submit(blocking)
        except RuntimeError:  # shut down while this call waited at its gate: it is never run
            if gate is not None:
                gate.leave()
            raise DeadlineExceeded(started=False) from None
        if gate is not None:
            submitted.add_done_callback(lambda _done: gate.leave())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(submitted), max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            # Still queued at the deadline means the pool is saturated, not that Prometheus is slow.
            raise DeadlineExceeded(started=started.is_set()) from None

    def shutdown(self) -> None:
        """Stops taking calls and drops the queued ones; running calls finish in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["DeadlineExceeded", "DeadlinePool", "Gate"]
