"""Blocking calls in a bounded thread pool, each within one deadline that counts queueing too.

Prometheus clients block, and the operator's event loop (with it kopf's handlers and timers) must never stall
behind a slow Prometheus. A timeout handed to an HTTP client bounds each socket operation, not the whole
exchange, and says nothing about the time a call waited for a free worker; so the deadline is fixed when the
caller asks, the call gets what is left of it as its budget, and the await is bounded as well.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The call did not finish within the caller's limit; `started` says whether it ever ran."""

    def __init__(self, *, started: bool) -> None:
        super().__init__("started but unfinished" if started else "never started")
        self.started = started


class DeadlinePool:
    """A thread pool whose calls receive the seconds left of their caller's deadline."""

    def __init__(self, *, max_workers: int, thread_name_prefix: str) -> None:
        self.max_workers = max_workers
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=thread_name_prefix
        )

    async def run(self, call: Callable[[float], T], *, limit: float) -> T:
        """`call(budget)` in a worker, where budget is what is left of `limit` seconds from now.

        Raises DeadlineExceeded when the call was still queued at the deadline (it then never runs) or had
        not returned by then. A worker thread cannot be interrupted; it ends at the latest when the call's
        own budget-bound timeouts fire.
        """
        deadline = time.monotonic() + limit
        started = threading.Event()

        def blocking() -> T:
            budget = deadline - time.monotonic()
            if budget <= 0:
                raise DeadlineExceeded(started=False)
            started.set()
            return call(budget)

        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._executor, blocking), limit)
        except TimeoutError:
            # Still queued at the deadline means the pool is saturated, not that Prometheus is slow.
            raise DeadlineExceeded(started=started.is_set()) from None

    def shutdown(self) -> None:
        """Stops taking calls and drops the queued ones; running calls finish in the background."""
        self._executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["DeadlineExceeded", "DeadlinePool"]
