"""One real Prometheus (plus the exporter it scrapes) shared by the whole integration session.

Starting Prometheus and waiting for its first scrape costs ~6 s, so it is paid once. The server is
backfilled at startup with a small known history (REPLAY_*) for replay/simulate tests, because promtool
blocks can only be added before the server starts.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from stampede.actuators.kube import Kube
from stampede.actuators.targets import Actuators
from tests.harness.server import HarnessThread
from tests.support.kube import harness_with_namespace, make_kube
from tests.support.prometheus import Exporter, PrometheusMissing, PrometheusServer, openmetrics_gauge

REPLAY_METRIC = "stampede_replay_value"
REPLAY_STEP = 60
# Whole minutes in the past, well inside the default 15 d retention and clear of the live head block.
REPLAY_START = (int(time.time()) // 3600) * 3600 - 3 * 3600
# Series "a" has a sample at every step 0..9; series "b" joins at step 5, so those steps hold two series.
REPLAY_A = {REPLAY_START + k * REPLAY_STEP: 1.5 * (k + 1) for k in range(10)}
REPLAY_B = {REPLAY_START + k * REPLAY_STEP: 100.0 + k for k in range(5, 10)}


@dataclass
class PrometheusFixture:
    server: PrometheusServer
    exporter: Exporter

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="session")
def prometheus() -> Iterator[PrometheusFixture]:
    backfill = openmetrics_gauge(
        REPLAY_METRIC,
        {'series="a"': list(REPLAY_A.items()), 'series="b"': list(REPLAY_B.items())},
    )
    try:
        exporter = Exporter()
    except OSError as exc:  # pragma: no cover - environment problem, not a test outcome
        pytest.fail(f"cannot start the metrics exporter: {exc}")
    try:
        server = PrometheusServer(exporters=[exporter], backfill_openmetrics=backfill)
    except PrometheusMissing as exc:
        exporter.close()
        # Never skip: a skipped Prometheus suite in CI is a green build that tested nothing.
        ci = " (CI)" if os.environ.get("CI") else ""
        pytest.fail(f"{exc}{ci}")
    except BaseException:
        exporter.close()
        raise
    try:
        yield PrometheusFixture(server=server, exporter=exporter)
    finally:
        server.close()
        exporter.close()


# -- the emulated API server and the actuators over it, for modules that act on targets --------------
# A module sets NS (the targets' namespace) and may set JOURNAL_NS (the operator's namespace, where
# journal Secrets go; NS by default) and MAX_REPLICAS (10 by default). A module's own fixture of the
# same name takes precedence.


@pytest.fixture
def h(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[HarnessThread]:
    module = request.module
    with harness_with_namespace(tmp_path, module.NS) as harness:
        journal_ns = getattr(module, "JOURNAL_NS", module.NS)
        if journal_ns != module.NS:
            harness.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": journal_ns}}])
        yield harness


@pytest.fixture
def kube(h: HarnessThread) -> Kube:
    return make_kube(h)


@pytest.fixture
def act(request: pytest.FixtureRequest, kube: Kube) -> Actuators:
    module = request.module
    return Actuators(
        kube,
        max_replicas=getattr(module, "MAX_REPLICAS", 10),
        journal_namespace=getattr(module, "JOURNAL_NS", module.NS),
    )
