"""Status writes run on their own threads, so a slow API server's backlog of them cannot hold a tick's work."""

from __future__ import annotations

import concurrent.futures
import pathlib
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from stampede.actuators.kube import JSON
from stampede.handlers.runner import PolicyRunner
from tests.harness.server import HarnessThread
from tests.integration.test_runner import NS, T0, Source, WatchedPolicies, runner_for
from tests.support.kube import harness_with_namespace


class ThreadNoting(WatchedPolicies):
    def __init__(self, policies: WatchedPolicies) -> None:
        super().__init__(policies.kube, namespace=policies.labels[0], name=policies.labels[1])
        self.status_threads: list[str] = []

    def write_status(self, namespace: str, name: str, *, old: JSON, new: JSON) -> JSON | None:
        self.status_threads.append(threading.current_thread().name)
        return super().write_status(namespace, name, old=old, new=new)


@pytest.fixture
def h(tmp_path: pathlib.Path) -> Iterator[HarnessThread]:
    with harness_with_namespace(tmp_path, NS, configmaps=["cfg"]) as harness:
        yield harness


async def test_status_writes_run_on_the_status_pool_and_nothing_else_does(h: HarnessThread) -> None:
    source = Source()
    runner, policies = runner_for(h, "pooled", source)
    noting = ThreadNoting(policies)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="status-only")
    shared = runner.shared
    shared.policies, shared.status_pool = noting, pool
    runner = PolicyRunner(shared=shared, namespace=runner.namespace, name=runner.name)
    try:
        source.load = 50.0  # an incident: status writes at once, and the tick's target writes in between
        t = T0
        for _ in range(4):
            await runner.tick(noting.read(runner.namespace, "pooled"), now=t)
            t += timedelta(seconds=15)
    finally:
        pool.shutdown(wait=True)
    assert noting.status_threads, "no status was written"
    assert all(name.startswith("status-only") for name in noting.status_threads), noting.status_threads
    assert runner.current is not None and runner.current.applied, "the tick's own work did not happen"
