"""The plugin's views from plain objects: narrow tables, and an incident record told as a story."""

from __future__ import annotations

from datetime import UTC, datetime

from stampede.plugin.views import Table, age, duration, records_table, story

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def test_fitting_drops_the_lowest_priority_columns_first_and_keeps_at_least_two() -> None:
    table = Table(headers=["NAME", "STATE", "AGE"], rows=[["checkout", "Incident", "5m"]], priorities=[10, 9, 1])
    assert table.fit(200).headers == ["NAME", "STATE", "AGE"]
    assert table.fit(20).headers == ["NAME", "STATE"]
    assert table.fit(5).headers == ["NAME", "STATE"]


def test_a_wrapping_column_counts_as_narrow_when_fitting() -> None:
    table = Table(
        headers=["EVENT", "WHAT HAPPENED"],
        rows=[["IncidentOpened", "x" * 300]],
        priorities=[9, 10],
        wrapping=frozenset({"WHAT HAPPENED"}),
    )
    assert table.natural_width() == len("IncidentOpened") + 3 + 30


def test_ages_and_durations_read_like_kubectl() -> None:
    assert age(datetime(2026, 12, 3, 8, 59, 15, tzinfo=UTC), NOW) == "45s"
    assert age(datetime(2026, 12, 3, 8, 48, tzinfo=UTC), NOW) == "12m"
    assert age(datetime(2026, 12, 1, 9, 0, tzinfo=UTC), NOW) == "2d"
    assert age(None, NOW) == "<none>"
    assert duration(252) == "4m12s"
    assert duration(3780) == "1h3m"


RECORD = {
    "metadata": {
        "name": "checkout-20261203-081203",
        "namespace": "shop",
        "labels": {"stampede.aurum.io/policy": "checkout"},
    },
    "status": {
        "policy": "checkout",
        "state": "Closed",
        "severity": "P1",
        "startedAt": "2026-12-03T08:12:03Z",
        "closedAt": "2026-12-03T08:40:03Z",
        "phases": [{"name": "immediate-mitigation", "enteredAt": "2026-12-03T08:12:03Z"}],
        "escalations": [],
        "changes": [
            {
                "action": "scale-service",
                "kind": "Deployment",
                "name": "checkout",
                "appliedAt": "2026-12-03T08:12:04Z",
                "rolledBackAt": "2026-12-03T08:40:00Z",
                "outcome": "RolledBack",
                "message": "replicas 3 → 12 → 3",
            }
        ],
        "timeline": [
            {"time": "2026-12-03T08:12:03Z", "reason": "IncidentOpened", "message": "Opened P1."},
            {"time": "2026-12-03T08:40:03Z", "reason": "IncidentClosed", "message": "Closed after 28m."},
        ],
        "kpis": [
            {"name": "detection", "seconds": 60, "target": 120, "met": True},
            {"name": "mttr", "seconds": 1200, "target": 900, "met": False},
        ],
    },
}


def test_records_list_as_incidents_with_their_kpis() -> None:
    table = records_table([RECORD], now=NOW, all_namespaces=True)
    row = dict(zip(table.headers, table.rows[0], strict=True))
    assert row["NAMESPACE"] == "shop" and row["POLICY"] == "checkout" and row["INCIDENT"] == "20261203-081203"
    assert row["STATE"] == "Closed" and row["DURATION"] == "28m0s" and row["KPIS MET"] == "1/2"


def test_a_record_tells_its_timeline_changes_and_kpis() -> None:
    told = story({"metadata": {"name": "checkout", "namespace": "shop"}, "status": {}}, [], now=NOW, record=RECORD)
    assert told.title == "Incident 20261203-081203: P1, closed, 28m0s"
    assert [row[2] for row in told.timeline.rows] == ["IncidentOpened", "IncidentClosed"]
    assert told.changes.rows == [["scale-service", "Deployment/checkout", "replicas 3 → 12 → 3", "RolledBack"]]
    assert told.kpis is not None
    assert told.kpis.rows[1] == ["mttr", "20m0s", "15m0s", "NO"]
