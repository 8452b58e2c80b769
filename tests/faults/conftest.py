"""One Stack per module (emulated API server + real Prometheus + real `stampede run`), one namespace per test.

A module may set `OPERATOR_ENV` (extra environment for the operator), `ALLOW_OWN_PROMETHEUS = True`
(start the operator with STAMPEDE_ALLOWED_PROMETHEUS_URLS set to the real Prometheus' URL, which is only
known once Prometheus runs) and `HARNESS_STRICTNESS` (the emulated server's rules, if not the defaults).
A missing Prometheus raises PrometheusMissing from the fixture, so the
tests error: never a skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack
from tests.faults.helpers import Case

STATUS_REFRESH_SECONDS = "2"


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    env = {"STAMPEDE_STATUS_REFRESH_SECONDS": STATUS_REFRESH_SECONDS, **getattr(request.module, "OPERATOR_ENV", {})}
    strictness = getattr(request.module, "HARNESS_STRICTNESS", None)
    with Stack(operator_env=env, start_operator=False, strictness=strictness) as running:
        assert running.operator is not None and running.prometheus is not None
        if getattr(request.module, "ALLOW_OWN_PROMETHEUS", False):
            running.operator.env["STAMPEDE_ALLOWED_PROMETHEUS_URLS"] = running.prometheus.url
        running.operator.start()
        yield running
        keep = os.environ.get("STAMPEDE_E2E_KEEP_LOGS")  # a directory to keep the operator's logs and requests in
        if keep:
            where = Path(keep) / request.module.__name__.rpartition(".")[2]
            where.mkdir(parents=True, exist_ok=True)
            (where / "operator.log").write_text(running.operator.logs())
            (where / "requests.log").write_text(
                "\n".join(
                    f"{e.time:.3f} {e.method} {e.path} {e.status} {e.content_type or ''}"
                    for e in running.harness.log.entries()
                )
            )


@pytest.fixture
def case(stack: Stack, request: pytest.FixtureRequest) -> Case:
    return Case(stack, request.node.name.removeprefix("test_"))
