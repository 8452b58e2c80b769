"""What `kubectl stampede` shows: rows for tables and the incident as a story, from plain objects.

Pure functions of policies, incident records, events and the clock, so the views are tested without a
cluster and the same objects always print the same way. Tables follow `kubectl get`: upper-case headers,
ages like `5m` and `3h`, `<none>` for nothing. On a narrow terminal the least useful columns are
dropped (as a person would read it) instead of wrapping every cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..engine.digests import shown

NONE = "<none>"
WRAP_WIDTH = 30
TEMPLATE_KIND_SHORT = {"ClusterStampedePolicyTemplate": "cstpt", "StampedePolicyTemplate": "stpt"}


@dataclass
class Table:
    """Headers, rows, and per column a priority: higher survives a narrow terminal longer."""

    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    priorities: list[int] = field(default_factory=list)
    wrapping: frozenset[str] = frozenset()
    """Columns of prose that wrap (messages): they count as at most WRAP_WIDTH wide when fitting."""

    def natural_width(self, *, gap: int = 3, keep: Sequence[int] | None = None) -> int:
        """Width of the table when no cell wraps (wrapping columns counted at WRAP_WIDTH at most)."""
        columns = range(len(self.headers)) if keep is None else keep
        widths = []
        for i in columns:
            width = max([len(self.headers[i]), *(len(row[i]) for row in self.rows)])
            widths.append(min(width, WRAP_WIDTH) if self.headers[i] in self.wrapping else width)
        return sum(widths) + gap * (len(widths) - 1)

    def fit(self, width: int, *, gap: int = 3) -> Table:
        """The table without its lowest-priority columns until it fits `width` (never below two columns)."""
        keep = list(range(len(self.headers)))
        while self.natural_width(gap=gap, keep=keep) > width and len(keep) > 2:
            keep.remove(min(keep, key=lambda i: (self.priorities[i], -i)))
        return Table(
            headers=[self.headers[i] for i in keep],
            rows=[[row[i] for i in keep] for row in self.rows],
            priorities=[self.priorities[i] for i in keep],
            wrapping=self.wrapping,
        )


# -- small formatting ---------------------------------------------------------------------------------


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(since: datetime | None, now: datetime) -> str:
    """kubectl's short age: 45s, 12m, 5h, 3d."""
    if since is None:
        return NONE
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def duration(seconds: float | None) -> str:
    """4m12s, 1h3m, 15s."""
    if seconds is None:
        return NONE
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def clock(when: datetime | None) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if when else NONE


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, Mapping) else {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def kpis_met(entry: Mapping[str, Any]) -> str:
    """`4/5` from a `kpis` list of {name, met} (records and history), or empty when there are none."""
    kpis = entry.get("kpis")
    if isinstance(kpis, list) and kpis:
        met = sum(1 for kpi in kpis if isinstance(kpi, Mapping) and kpi.get("met"))
        return f"{met}/{len(kpis)}"
    return ""


def template_of(policy: Mapping[str, Any]) -> str:
    ref = _spec(policy).get("templateRef")
    if not isinstance(ref, Mapping):
        return NONE
    generation = _status(policy).get("templateGeneration")
    short = TEMPLATE_KIND_SHORT.get(str(ref.get("kind")), str(ref.get("kind")))
    return f"{short}/{ref.get('name')}" + (f"@{generation}" if generation is not None else "")


def condition(policy: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    for item in _status(policy).get("conditions") or []:
        if isinstance(item, Mapping) and item.get("type") == type_:
            return item
    return {}


# -- get --------------------------------------------------------------------------------------------


def policies_table(policies: Iterable[Mapping[str, Any]], *, now: datetime, all_namespaces: bool, wide: bool) -> Table:
    headers = ["NAME", "STATE", "SEVERITY", "PHASE", "LAST INCIDENT", "KPIS MET", "AGE"]
    priorities = [10, 9, 8, 6, 5, 4, 3]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
        priorities.insert(0, 10)
    if wide:
        headers += ["MODE", "READY", "TEMPLATE"]
        priorities += [2, 2, 1]
    table = Table(headers=headers, priorities=priorities)
    for policy in policies:
        meta, status, spec = _meta(policy), _status(policy), _spec(policy)
        incident = status.get("incident") if isinstance(status.get("incident"), Mapping) else None
        history = [h for h in status.get("history") or [] if isinstance(h, Mapping)]
        state = str(status.get("state") or "")
        if spec.get("suspend"):
            state = f"{state or 'Idle'},Suspended"
        if condition(policy, "Held").get("status") == "True":
            state = f"{state or 'Idle'},Held"
        if condition(policy, "Ready").get("reason") == "InvalidSpec":
            state = "InvalidSpec"
        if incident:
            last = f"{age(parse_time(incident.get('startedAt')), now)} (open)"
        elif history:
            last = f"{age(parse_time(history[0].get('startedAt')), now)} ago"
        else:
            last = NONE
        row = [
            str(meta.get("name", "")),
            state or "Unknown",
            str(status.get("severity") or "") or "-",
            str(status.get("phase") or "") or "-",
            last,
            (kpis_met(history[0]) if history else "") or "-",
            age(parse_time(meta.get("creationTimestamp")), now),
        ]
        if all_namespaces:
            row.insert(0, str(meta.get("namespace", "")))
        if wide:
            ready = condition(policy, "Ready")
            row += [str(spec.get("mode") or "Enforce"), str(ready.get("status") or "Unknown"), template_of(policy)]
        table.rows.append(row)
    return table


# -- incidents --------------------------------------------------------------------------------------


def records_table(records: Iterable[Mapping[str, Any]], *, now: datetime, all_namespaces: bool) -> Table:
    """From StampedeIncident records (the operator keeps them when it has the records kind)."""
    headers = ["POLICY", "INCIDENT", "STATE", "SEVERITY", "PHASE", "ESCALATED", "STARTED", "DURATION", "KPIS MET"]
    priorities = [10, 9, 9, 8, 5, 4, 6, 7, 3]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
        priorities.insert(0, 10)
    table = Table(headers=headers, priorities=priorities)
    ordered = sorted(records, key=lambda r: str(_status(r).get("startedAt") or ""), reverse=True)
    for record in ordered:
        meta, status = _meta(record), _status(record)
        started = parse_time(status.get("startedAt"))
        closed = parse_time(status.get("closedAt"))
        policy = str(status.get("policy") or (meta.get("labels") or {}).get("stampede.aurum.io/policy") or "")
        named = str(meta.get("name", "")).removeprefix(f"{policy}-") if policy else str(meta.get("name", ""))
        incident = str(_spec(record).get("incident") or named)
        escalations = status.get("escalations") or []
        row = [
            policy,
            incident,
            str(status.get("state") or "Open"),
            str(status.get("severity") or "-"),
            str(status.get("phase") or (status.get("phases") or [{}])[-1].get("name") or "-"),
            "yes" if escalations else "no",
            age(started, now) + " ago" if started else NONE,
            duration(((closed or now) - started).total_seconds()) if started else NONE,
            kpis_met(status) or "-",
        ]
        if all_namespaces:
            row.insert(0, str(meta.get("namespace", "")))
        table.rows.append(row)
    return table


def history_table(policies: Iterable[Mapping[str, Any]], *, now: datetime, all_namespaces: bool) -> Table:
    """From the policies' status (current incident and history): clusters without incident records."""
    headers = ["POLICY", "INCIDENT", "STATE", "SEVERITY", "MAX PHASE", "ESCALATED", "STARTED", "DURATION"]
    priorities = [10, 9, 9, 8, 5, 4, 6, 7]
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
        priorities.insert(0, 10)
    entries: list[tuple[str, list[str]]] = []
    for policy in policies:
        meta, status = _meta(policy), _status(policy)
        name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
        incident = status.get("incident")
        rows: list[tuple[str, list[str]]] = []
        if isinstance(incident, Mapping):
            started = parse_time(incident.get("startedAt"))
            state = "RollingBack" if status.get("state") == "RollingBack" else "Open"
            rows.append(
                (
                    str(incident.get("startedAt") or ""),
                    [
                        name,
                        str(incident.get("id", "")),
                        state,
                        str(incident.get("severity") or "-"),
                        str(incident.get("maxPhase") or incident.get("phase") or "-"),
                        "yes" if incident.get("escalated") else "no",
                        age(started, now) + " ago" if started else NONE,
                        duration((now - started).total_seconds()) if started else NONE,
                    ],
                )
            )
        for entry in status.get("history") or []:
            if not isinstance(entry, Mapping):
                continue
            started = parse_time(entry.get("startedAt"))
            rows.append(
                (
                    str(entry.get("startedAt") or ""),
                    [
                        name,
                        str(entry.get("id", "")),
                        "Closed",
                        str(entry.get("severity") or "-"),
                        str(entry.get("maxPhase") or "-"),
                        "yes" if entry.get("escalated") else "no",
                        age(started, now) + " ago" if started else NONE,
                        duration(entry.get("durationSeconds")),
                    ],
                )
            )
        for key, row in rows:
            entries.append((key, [namespace, *row] if all_namespaces else row))
    table = Table(headers=headers, priorities=priorities)
    table.rows = [row for _, row in sorted(entries, key=lambda e: e[0], reverse=True)]
    return table


# -- describe ---------------------------------------------------------------------------------------


@dataclass
class Story:
    """The incident as a person reads it: a header, a timeline, the changes, the KPIs."""

    title: str
    facts: list[tuple[str, str]]
    timeline: Table
    changes: Table
    kpis: Table | None = None
    note: str = ""


def event_time(event: Mapping[str, Any]) -> datetime | None:
    for key in ("eventTime", "lastTimestamp", "firstTimestamp"):
        found = parse_time(event.get(key))
        if found:
            return found
    return parse_time(_meta(event).get("creationTimestamp"))


def _policy_facts(policy: Mapping[str, Any]) -> list[tuple[str, str]]:
    meta, status, spec = _meta(policy), _status(policy), _spec(policy)
    conditions = [
        f"{c.get('type')}={c.get('status')}"
        for c in status.get("conditions") or []
        if isinstance(c, Mapping) and (c.get("status") == "True") != (c.get("type") in ("Ready", "MetricsAvailable"))
    ]
    signals = [f"{s.get('name')}={s.get('value')}" for s in status.get("signals") or [] if isinstance(s, Mapping)]
    facts = [
        ("Policy", f"{meta.get('namespace', '')}/{meta.get('name', '')}"),
        ("State", str(status.get("state") or "Unknown") + (" (suspended)" if spec.get("suspend") else "")),
        ("Mode", str(spec.get("mode") or "Enforce")),
    ]
    if spec.get("templateRef"):
        facts.append(("Template", template_of(policy)))
    facts.append(("Signals", "  ".join(signals) or NONE))
    facts.append(("Attention", "  ".join(conditions) or "none (Ready, metrics available, no conflict)"))
    ready = condition(policy, "Ready")
    if ready.get("status") == "False":
        facts.append(("Not ready", f"{ready.get('reason')}: {ready.get('message')}"))
    return facts


def _change_rows(changes: Iterable[Mapping[str, Any]], *, incident: str) -> Table:
    table = Table(
        headers=["ACTION", "TARGET", "CHANGE", "OUTCOME"], priorities=[8, 9, 10, 7], wrapping=frozenset({"CHANGE"})
    )
    for change in changes:
        if incident and change.get("incident") not in (None, "", incident):
            continue
        original = change.get("original") or {}
        applied = change.get("applied") or {}
        parts = [
            f"{key}: {shown(str(original[key])) if original.get(key) is not None else '∅'} → {value}"
            for key, value in applied.items()
        ]
        table.rows.append(
            [
                str(change.get("action", "")),
                f"{change.get('kind', '')}/{change.get('name', '')}",
                "; ".join(parts) or str(change.get("message") or "-"),
                str(change.get("outcome") or "Applied"),
            ]
        )
    return table


def story(
    policy: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    record: Mapping[str, Any] | None = None,
) -> Story:
    """The current incident, else the last one, as a timeline with its changes (and KPIs from its record)."""
    status = _status(policy)
    incident = status.get("incident") if isinstance(status.get("incident"), Mapping) else None
    history = [h for h in status.get("history") or [] if isinstance(h, Mapping)]
    facts = _policy_facts(policy)
    timeline = Table(
        headers=["AT", "AFTER", "EVENT", "WHAT HAPPENED"],
        priorities=[6, 8, 9, 10],
        wrapping=frozenset({"WHAT HAPPENED"}),
    )
    if incident is None and not history and record is None:
        return Story(
            title="No incident yet",
            facts=facts,
            timeline=timeline,
            changes=_change_rows([], incident=""),
            note="This policy has not opened an incident.",
        )
    if record is not None:
        rstatus = _status(record)
        ident = str(_spec(record).get("incident") or "") or str(_meta(record).get("name", "")).removeprefix(
            f"{_meta(policy).get('name', '')}-"
        )
        started = parse_time(rstatus.get("startedAt"))
        closed = parse_time(rstatus.get("closedAt"))
        severity, escalated = rstatus.get("severity"), bool(rstatus.get("escalations"))
        phase = str((rstatus.get("phases") or [{}])[-1].get("name") or "")
    elif incident is not None:
        ident, started, closed = str(incident.get("id", "")), parse_time(incident.get("startedAt")), None
        severity, escalated, phase = (
            incident.get("severity"),
            bool(incident.get("escalated")),
            str(incident.get("phase") or ""),
        )
    else:
        last = history[0]
        ident, started, closed = (
            str(last.get("id", "")),
            parse_time(last.get("startedAt")),
            parse_time(last.get("closedAt")),
        )
        severity, escalated, phase = last.get("severity"), bool(last.get("escalated")), str(last.get("maxPhase") or "")
    state = "closed" if closed else ("rolling back" if status.get("state") == "RollingBack" else "open")
    length = duration(((closed or now) - started).total_seconds()) if started else NONE
    title = f"Incident {ident}: {severity or '?'}, {state}, {length}{'' if closed else ' so far'}"
    facts += [
        ("Started", clock(started)),
        ("Closed", clock(closed) if closed else "-"),
        ("Phase", phase or "-"),
        ("Escalated", "yes" if escalated else "no"),
    ]
    if incident is not None and incident.get("nextPhaseAt") and not closed:
        facts.append(("Next phase", f"{clock(parse_time(incident.get('nextPhaseAt')))}"))
    entries: list[tuple[datetime, str, str]] = []
    if record is not None and _status(record).get("timeline"):
        for item in _status(record).get("timeline") or []:
            when = parse_time(item.get("time"))
            if when:
                entries.append((when, str(item.get("reason", "")), str(item.get("message", ""))))
    else:
        for event in events:
            when = event_time(event)
            if when is None or started is None:
                continue
            if when < started.replace(microsecond=0) or (closed and when > closed):
                continue
            entries.append((when, str(event.get("reason", "")), str(event.get("message", ""))))
    for when, reason, message in sorted(entries, key=lambda e: e[0]):
        offset = "+" + duration((when - started).total_seconds()) if started else ""
        timeline.rows.append([when.astimezone(UTC).strftime("%H:%M:%S"), offset, reason, message])
    if record is not None:
        changes = _change_rows(_status(record).get("changes") or [], incident="")
        kpis = Table(headers=["KPI", "TOOK", "TARGET", "MET"], priorities=[10, 9, 8, 10])
        for kpi in _status(record).get("kpis") or []:
            kpis.rows.append(
                [
                    str(kpi.get("name", "")),
                    duration(kpi.get("seconds")),
                    duration(kpi.get("target"))
                    if isinstance(kpi.get("target"), int | float)
                    else str(kpi.get("target") or "-"),
                    "-" if kpi.get("met") is None else "yes" if kpi.get("met") else "NO",
                ]
            )
        return Story(title=title, facts=facts, timeline=timeline, changes=changes, kpis=kpis if kpis.rows else None)
    changes = _change_rows(
        [*(status.get("applied") or []), *(status.get("planned") or [])] if not closed else [], incident=ident
    )
    note = "" if not closed else "Changes of a closed incident are in its timeline (ActionApplied, ActionRolledBack)."
    return Story(title=title, facts=facts, timeline=timeline, changes=changes, note=note)


__all__ = ["Story", "Table", "age", "duration", "history_table", "policies_table", "records_table", "story"]
