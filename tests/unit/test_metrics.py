"""The operator's own metrics: an unknown signal is counted under the kind of reading that made it unknown."""

from __future__ import annotations

from stampede.handlers import metrics
from stampede.sources import Reading, ReadingKind


def errors(policy: str, signal: str, kind: str) -> float | None:
    labels = {"namespace": "metrics-test", "policy": policy, "signal": signal, "kind": kind}
    return metrics.REGISTRY.get_sample_value("stampede_prometheus_errors_total", labels)


def test_unknown_readings_are_counted_by_signal_and_kind_and_known_ones_not_at_all() -> None:
    readings = {
        "hitRate": Reading(value=0.93),
        "db": Reading.unknown(ReadingKind.TIMEOUT, "Prometheus at http://p did not answer within 10s."),
        "queue": Reading.unknown(ReadingKind.EMPTY, "The query returned no series (empty vector)."),
    }
    metrics.count_unknown(namespace="metrics-test", policy="counted", readings=readings)
    metrics.count_unknown(
        namespace="metrics-test", policy="counted", readings={**readings, "queue": Reading(value=3.0)}
    )
    assert errors("counted", "db", "timeout") == 2
    assert errors("counted", "queue", "empty") == 1
    assert errors("counted", "db", "empty") is None
    assert all(errors("counted", "hitRate", kind) is None for kind in ReadingKind)


def test_a_reading_without_a_kind_counts_as_an_invalid_response() -> None:
    metrics.count_unknown(namespace="metrics-test", policy="kindless", readings={"db": Reading(value=None, error="?")})
    assert errors("kindless", "db", "invalid_response") == 1


def test_forgetting_a_policy_drops_its_error_series() -> None:
    metrics.count_unknown(
        namespace="metrics-test", policy="gone", readings={"db": Reading.unknown(ReadingKind.CONNECTION, "refused")}
    )
    metrics.forget("metrics-test", "gone")
    assert errors("gone", "db", "connection") is None
