"""The operator's own metrics on `/metrics` (names from the API contract), per namespace and policy.

At 10,000 policies the exposition is most of the operator's series: each policy's poll-duration histogram
is 14 series and its signal values one per signal. Both can be turned down (`Detail`, from the
STAMPEDE_METRICS_* settings); `bench/metrics_bench.py` measures the size and the scrape's CPU.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import prometheus_client
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..sources import Reading, ReadingKind

# prometheus-client's text format adds a `*_created` gauge beside every counter and histogram series: one more
# series per policy and metric that no dashboard or alert here reads (Prometheus ingests it as its own series).
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]


@dataclass
class Detail:
    """Which per-policy series are exported (the STAMPEDE_METRICS_* settings)."""

    per_policy_poll_duration: bool = True
    signal_values: bool = True


DETAIL = Detail()


def configure(*, per_policy_poll_duration: bool, signal_values: bool) -> None:
    DETAIL.per_policy_poll_duration = per_policy_poll_duration
    DETAIL.signal_values = signal_values


REGISTRY = CollectorRegistry(auto_describe=True)
_LABELS = ("namespace", "policy")

INCIDENT_ACTIVE = Gauge(
    "stampede_incident_active",
    "1 while the policy has an incident (Incident or RollingBack).",
    _LABELS,
    registry=REGISTRY,
)
INCIDENTS_TOTAL = Counter("stampede_incidents_total", "Incidents opened.", (*_LABELS, "severity"), registry=REGISTRY)
INCIDENT_DURATION = Histogram(
    "stampede_incident_duration_seconds",
    "Duration of closed incidents.",
    _LABELS,
    buckets=(60, 120, 300, 600, 900, 1800, 3600, 7200),
    registry=REGISTRY,
)
PHASE_INFO = Gauge(
    "stampede_phase_info",
    "1 for the phase the policy's incident is in.",
    (*_LABELS, "phase", "severity"),
    registry=REGISTRY,
)
ACTIONS_TOTAL = Counter(
    "stampede_actions_total",
    "Changes applied, failed, rolled back or skipped.",
    (*_LABELS, "kind", "result"),
    registry=REGISTRY,
)
ROLLBACKS_TOTAL = Counter("stampede_rollbacks_total", "Rollback steps taken.", _LABELS, registry=REGISTRY)
PROMETHEUS_ERRORS = Counter(
    "stampede_prometheus_errors_total",
    "Signal readings that came back unknown, by why (kind: connection, timeout, http_4xx, empty, ...).",
    (*_LABELS, "signal", "kind"),
    registry=REGISTRY,
)
STATUS_REFRESHES_COALESCED = Counter(
    "stampede_status_refreshes_coalesced_total",
    "Refresh-only status writes (lastPollTime, signal values) replaced by a newer one before they were sent, "
    "because the API server had not yet taken the policy's previous refresh.",
    registry=REGISTRY,
)
POLL_DURATION = Histogram(
    "stampede_poll_duration_seconds",
    "Time of one poll (query, decide, act, report).",
    _LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
SIGNAL_VALUE = Gauge("stampede_signal_value", "Last known value of a signal.", (*_LABELS, "signal"), registry=REGISTRY)
PEERING_PAUSED = Gauge(
    "stampede_peering_paused_seconds",
    "Seconds this instance has been paused by kopf peering (0 while active); one series, labelled with the "
    "state: active, standby (a live peer of higher priority acts) or stuck (paused and nobody acts).",
    ("state",),
    registry=REGISTRY,
)

readiness_checks: list[Callable[[], str | None]] = []
"""Each returns why the instance is not ready, or None; `/readyz` fails while any says why."""


class _Handler(BaseHTTPRequestHandler):
    """`/readyz` for the readiness probe, the registry on every other path (as prometheus-client serves it)."""

    def do_GET(self) -> None:  # http.server dispatches by this name
        if self.path.split("?", 1)[0] == "/readyz":
            problems = [problem for check in readiness_checks if (problem := check())]
            status, body, content_type = (503 if problems else 200), ("\n".join(problems) or "ok"), "text/plain"
            payload = (body + "\n").encode()
        else:
            status, payload, content_type = 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Probes and scrapes every few seconds would flood the log."""


def observe_poll(namespace: str, policy: str, seconds: float) -> None:
    """One poll's duration, per policy or (STAMPEDE_METRICS_PER_POLICY_POLL_DURATION=false) per namespace."""
    POLL_DURATION.labels(namespace, policy if DETAIL.per_policy_poll_duration else "").observe(seconds)


def set_signal_value(namespace: str, policy: str, signal: str, value: float) -> None:
    """A signal's last known value, unless STAMPEDE_METRICS_SIGNAL_VALUES=false."""
    if DETAIL.signal_values:
        SIGNAL_VALUE.labels(namespace, policy, signal).set(value)


def count_unknown(readings: Mapping[str, Reading], *, namespace: str, policy: str) -> None:
    """One error per signal that came back unknown, labelled with the reading's kind."""
    for signal, reading in readings.items():
        if not reading.known:
            kind = reading.kind or ReadingKind.INVALID_RESPONSE
            PROMETHEUS_ERRORS.labels(namespace, policy, signal, kind.value).inc()


WATCHED_TARGETS = Gauge(
    "stampede_watched_targets",
    "Target objects watched for reverts (one watch each, while a policy holds a change on them).",
    registry=REGISTRY,
)
WATCH_CACHE_BYTES = Gauge(
    "stampede_watch_cache_bytes",
    "Size of the watched targets' cached objects, as JSON (a lower bound of their memory).",
    registry=REGISTRY,
)


def watch_cache(stats: Callable[[], Mapping[str, int]]) -> None:
    """Read the watch cache's size at each scrape."""
    WATCHED_TARGETS.set_function(lambda: stats()["watches"])
    WATCH_CACHE_BYTES.set_function(lambda: stats()["cached_bytes"])


def serve(port: int) -> None:
    """Serve /metrics and /readyz on 0.0.0.0:PORT from a daemon thread."""
    server = ThreadingHTTPServer(("0.0.0.0", port), _Handler)  # probed from outside the pod
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="stampede-metrics", daemon=True).start()


def forget(namespace: str, policy: str) -> None:
    """Drop a deleted policy's series so dashboards do not show ghosts."""
    for metric in (
        INCIDENT_ACTIVE,
        INCIDENTS_TOTAL,
        INCIDENT_DURATION,
        PHASE_INFO,
        ACTIONS_TOTAL,
        ROLLBACKS_TOTAL,
        PROMETHEUS_ERRORS,
        POLL_DURATION,
        SIGNAL_VALUE,
        KPI_SECONDS,
        KPI_MISSED,
        KPI_TARGET,
    ):
        for labels in list(metric._metrics):  # prometheus-client has no public iteration
            if labels[:2] == (namespace, policy):
                metric.remove(*labels)


# Response-time KPIs (API.md "Response-time KPIs"): observed once per incident and KPI, when measured.
KPI_SECONDS = Histogram(
    "stampede_incident_kpi_seconds",
    "Seconds from the start of the breach window to each KPI's milestone (detection, mitigation, "
    "stabilization, mttr, fullRecovery).",
    (*_LABELS, "kpi"),
    buckets=(15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200),
    registry=REGISTRY,
)
KPI_MISSED = Counter(
    "stampede_incident_kpi_missed_total",
    "Incidents that missed a KPI's target (counted as soon as the target passes).",
    (*_LABELS, "kpi"),
    registry=REGISTRY,
)
KPI_TARGET = Gauge(
    "stampede_incident_kpi_target_seconds",
    "The policy's target for each KPI (spec.targets), for dashboards to draw against.",
    (*_LABELS, "kpi"),
    registry=REGISTRY,
)


def count_coalesced_refresh() -> None:
    STATUS_REFRESHES_COALESCED.inc()
