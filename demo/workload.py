"""A synthetic Aurum workload for `make demo`: the metrics a real cache stampede produces, in seconds.

The demo must show the operator reacting to the same metric names the runbook policy queries
(cache_hits_total, cache_misses_total, aurum_api_requests_total, aurum_db_connections_active,
aurum_scenario_queue_size) without an Aurum deployment, so a thread plays the application: every
0.5 s it adds the requests, hits and misses of that half second to the counters and moves the
gauges, following the stage the demo sets (calm → stampede → recovery).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from tests.support.prometheus import Exporter

TICK_SECONDS = 0.5
BASE_REQUESTS_PER_SECOND = 200.0


@dataclass(frozen=True)
class Stage:
    """How the application behaves during one stage of the story."""

    name: str
    hit_ratio: float
    request_factor: float
    db_target: float
    """Connections the database drifts towards."""
    db_step: float
    """Connections gained or lost per tick while drifting."""
    queue_target: float
    queue_step: float


CALM = Stage("calm", hit_ratio=0.95, request_factor=1.0, db_target=80, db_step=20, queue_target=20, queue_step=50)
STAMPEDE = Stage(
    "stampede", hit_ratio=0.08, request_factor=4.0, db_target=196, db_step=3.0, queue_target=900, queue_step=40
)
RECOVERY = Stage(
    "recovery", hit_ratio=0.95, request_factor=1.0, db_target=80, db_step=40, queue_target=20, queue_step=200
)


class Workload:
    """The Aurum API, cache and database as five metrics, updated by a daemon thread."""

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self.stage = CALM
        self.db = CALM.db_target
        self.queue = CALM.queue_target
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="aurum-workload", daemon=True)

    def start(self) -> None:
        self._publish_gauges()
        self._thread.start()

    def set_stage(self, stage: Stage) -> None:
        with self._lock:
            self.stage = stage

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            self.tick()

    def tick(self) -> None:
        """One half second of traffic."""
        with self._lock:
            stage = self.stage
            self.db = _towards(self.db, stage.db_target, stage.db_step)
            self.queue = _towards(self.queue, stage.queue_target, stage.queue_step)
        requests = BASE_REQUESTS_PER_SECOND * stage.request_factor * TICK_SECONDS
        hits = requests * stage.hit_ratio
        self.exporter.inc("aurum_api_requests_total", requests)
        self.exporter.inc("cache_hits_total", hits)
        self.exporter.inc("cache_misses_total", requests - hits)
        self._publish_gauges()

    def _publish_gauges(self) -> None:
        self.exporter.set("aurum_db_connections_active", round(self.db))
        self.exporter.set("aurum_scenario_queue_size", round(self.queue))


def _towards(value: float, target: float, step: float) -> float:
    if value < target:
        return min(value + step, target)
    return max(value - step, target)
