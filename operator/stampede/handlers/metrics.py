"""The operator's own metrics on `/metrics` (names from the API contract), per namespace and policy."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

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
    "stampede_prometheus_errors_total", "Signals that came back unknown.", (*_LABELS, "signal"), registry=REGISTRY
)
POLL_DURATION = Histogram(
    "stampede_poll_duration_seconds",
    "Time of one poll (query, decide, act, report).",
    _LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
SIGNAL_VALUE = Gauge("stampede_signal_value", "Last known value of a signal.", (*_LABELS, "signal"), registry=REGISTRY)


def serve(port: int) -> None:
    """Expose the registry on 0.0.0.0:PORT (a daemon thread of prometheus-client)."""
    start_http_server(port, registry=REGISTRY)


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
