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


def exposition() -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.REGISTRY).decode()


def test_no_created_series_are_exported_beside_counters_and_histograms() -> None:
    metrics.observe_poll("metrics-test", "created", 0.1)
    metrics.ROLLBACKS_TOTAL.labels("metrics-test", "created").inc()
    text = exposition()
    assert 'stampede_poll_duration_seconds_count{namespace="metrics-test",policy="created"} 1.0' in text
    assert "_created{" not in text


def test_poll_durations_are_per_policy_by_default_and_per_namespace_when_turned_down() -> None:
    try:
        metrics.observe_poll("metrics-detail", "a", 0.1)
        metrics.configure(per_policy_poll_duration=False, signal_values=True)
        metrics.observe_poll("metrics-detail", "b", 0.2)
        metrics.observe_poll("metrics-detail", "c", 0.3)
    finally:
        metrics.configure(per_policy_poll_duration=True, signal_values=True)
    count = "stampede_poll_duration_seconds_count"
    assert metrics.REGISTRY.get_sample_value(count, {"namespace": "metrics-detail", "policy": "a"}) == 1
    assert metrics.REGISTRY.get_sample_value(count, {"namespace": "metrics-detail", "policy": ""}) == 2
    assert metrics.REGISTRY.get_sample_value(count, {"namespace": "metrics-detail", "policy": "b"}) is None


def test_signal_values_are_not_exported_when_turned_off() -> None:
    labels = {"namespace": "metrics-detail", "policy": "signals"}
    try:
        metrics.set_signal_value("metrics-detail", "signals", "kept", 0.5)
        metrics.configure(per_policy_poll_duration=True, signal_values=False)
        metrics.set_signal_value("metrics-detail", "signals", "dropped", 0.7)
    finally:
        metrics.configure(per_policy_poll_duration=True, signal_values=True)
    assert metrics.REGISTRY.get_sample_value("stampede_signal_value", {**labels, "signal": "kept"}) == 0.5
    assert metrics.REGISTRY.get_sample_value("stampede_signal_value", {**labels, "signal": "dropped"}) is None
