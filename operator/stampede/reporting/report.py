"""What a report is made of, the Markdown postmortem draft, and writing both files.

The Markdown is built from data only (no clock, no I/O), so tests pin its content; the plot lives in
`plot.py` because matplotlib is an optional extra the operator image does not carry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from ..api.durations import format_duration
from ..api.incident import ChangeOutcome, IncidentRecordStatus, RecordState
from ..api.spec import PolicySpec
from ..api.status import format_time
from ..engine.records import NearMiss, near_misses, worse_is_lower

Series = Mapping[str, Sequence[tuple[datetime, float | None]]]
"""Per signal: (time, value) pairs, value None where unknown."""

MIN_MARGIN = timedelta(seconds=30)


def report_window(record: IncidentRecordStatus, *, now: datetime) -> tuple[datetime, datetime]:
    """The incident with a margin before the first breach and after the close (a quarter of its length, ≥ 30s):
    enough to see the calm before and after without squeezing the incident itself."""
    start = record.first_breach_at
    end = record.closed_at or now
    margin = max(MIN_MARGIN, (end - start) / 4)
    return start - margin, end + margin


@dataclass(frozen=True)
class Report:
    """Everything one incident's report shows."""

    namespace: str
    policy: str
    incident: str
    spec: PolicySpec
    record: IncidentRecordStatus
    series: Series = field(default_factory=dict)
    """Every signal over the report window (empty when no Prometheus could be read)."""
    source: str = "cluster"
    """`cluster` (the StampedeIncident record) or `replay` (stampede simulate)."""
    note: str = ""
    """A remark for the reader, e.g. why the series are missing."""

    @property
    def basename(self) -> str:
        return f"{self.policy}-{self.incident}"

    def near_misses(self) -> list[NearMiss]:
        """Near misses during the incident itself (first breach to close): the margin is context, and a
        threshold crossed there (e.g. by a counter's warm-up) says nothing about this incident."""
        if not self.series:
            return []
        start, end = self.record.first_breach_at, self.record.closed_at
        during = {
            name: [(t, v) for t, v in points if t >= start and (end is None or t <= end)]
            for name, points in self.series.items()
        }
        return near_misses(self.spec, during)


def _t(value: datetime | None) -> str:
    return format_time(value.replace(microsecond=0)) if value is not None else "-"


def _since(value: datetime | None, origin: datetime) -> str:
    if value is None:
        return "-"
    delta = value - origin
    sign = "-" if delta < timedelta(0) else "+"
    return sign + format_duration(timedelta(seconds=int(abs(delta.total_seconds()))))


def _cell(text: str) -> str:
    """Markdown table cell: pipes escaped, one line."""
    return " ".join(text.replace("|", "\\|").split())


def _seconds(value: float | None) -> str:
    return format_duration(timedelta(seconds=int(value))) if value is not None else "not reached"


def _value(value: float) -> str:
    return f"{value:.6g}"


def render_markdown(report: Report) -> str:
    """The postmortem draft, following the runbook's post-incident tasks."""
    r = report.record
    spec = report.spec
    origin = r.first_breach_at
    end = r.closed_at
    origin_text = ("replay of the history", "StampedeIncident record")
    duration = format_duration(timedelta(seconds=int(((end or r.started_at) - r.started_at).total_seconds())))
    lines: list[str] = [
        f"# Postmortem draft: cache stampede in {report.namespace}/{report.policy}, incident {report.incident}",
        "",
        f"_Written by `stampede report` from the {origin_text[report.source == 'cluster']} and the signals' history."
        " Fill in the placeholders, then keep it with the team's postmortems._",
        "",
    ]
    if report.note:
        lines += [f"> {report.note}", ""]
    escalated = ", ".join(f"{e.level} at {_t(e.at)}" for e in r.escalations) if r.escalations else "no"
    state = "still open" if r.state != RecordState.CLOSED else "closed"
    lines += [
        "## Summary",
        "",
        "| | |",
        "|---|---|",
        f"| Severity | {r.severity.value} (highest reached) |",
        f"| Duration | {duration} (opened → {'closed' if end else 'not closed yet'}) |",
        f"| First breach | {_t(r.first_breach_at)} |",
        f"| Opened | {_t(r.started_at)} |",
        f"| Recovered | {_t(r.recovered_at)} |",
        f"| Closed | {_t(r.closed_at)} |",
        f"| State | {r.state.value} ({state}) |",
        f"| Furthest phase | {r.phase or '-'} |",
        f"| Escalated | {_cell(escalated)} |",
        f"| Mode | {'DryRun: changes were only planned' if r.dry_run else 'Enforce'} |",
        "| Root cause | _TODO: what emptied or invalidated the cache, and why many requests missed at once_ |",
        "",
        "## Impact",
        "",
        "Worst value of every signal during the incident, against the thresholds of the policy.",
        "",
        "| Signal | Worst | At | Severity thresholds | Recovery threshold |",
        "|---|---|---|---|---|",
    ]
    peaks = {p.signal: p for p in r.peaks}
    for signal in spec.signals:
        peak = peaks.get(signal.name)
        severity = ", ".join(
            f"{s.level.value}: `{c.text}`" for s in spec.severities for c in s.parsed() if c.signal == signal.name
        )
        recovery = ", ".join(f"`{c.text}`" for c in spec.recovery.parsed() if c.signal == signal.name)
        worst = "lowest" if worse_is_lower(spec, signal.name) else "highest"
        lines.append(
            f"| {signal.name} | {_value(peak.value) + f' ({worst})' if peak else 'unknown'} | "
            f"{_t(peak.at) if peak else '-'} | {severity or '-'} | {recovery or '-'} |"
        )
    lines += [
        "",
        "## Timeline",
        "",
        f"Times in UTC; offsets from the first breach ({_t(origin)}).",
        "",
        "| Time | Since breach | Event | Message |",
        "|---|---|---|---|",
        f"| {_t(origin)} | +0s | _Breach window starts_ | The condition that opened the incident first held. |",
    ]
    for entry in r.timeline:
        lines.append(f"| {_t(entry.time)} | {_since(entry.time, origin)} | {entry.reason} | {_cell(entry.message)} |")
    lines += [
        "",
        "## Changes",
        "",
        "Every change the incident made, with the values before → during → after.",
        "",
        "| Action | Object | Before → during → after | Outcome | Applied | Rolled back |",
        "|---|---|---|---|---|---|",
    ]
    for change in r.changes:
        lines.append(
            f"| {change.action} | {change.kind} {change.name} | {_cell(change.message) or '-'} | "
            f"{change.outcome.value} | {_t(change.applied_at)} | {_t(change.rolled_back_at)} |"
        )
    if not r.changes:
        lines.append("| - | - | No change was made. | - | - | - |")
    lines += [
        "",
        "## KPIs",
        "",
        "The runbook's response-time targets, measured from the first breach.",
        "",
        "| KPI | Measured | Target | Met |",
        "|---|---|---|---|",
    ]
    for kpi in r.kpis:
        met = "yes" if kpi.met else ("**no**" if kpi.met is False else "pending")
        lines.append(f"| {kpi.name} | {_seconds(kpi.seconds)} | {kpi.target} | {met} |")
    misses = report.near_misses()
    lines += ["", "## Near misses", ""]
    if not report.series:
        lines.append("Unknown: the signals' history could not be read, so near misses cannot be computed.")
    elif misses:
        lines.append("Severity conditions that came within 10 % of their threshold without ever holding:")
        lines.append("")
        for miss in misses:
            lines.append(
                f"- {miss.level} `{miss.condition}`: reached {_value(miss.value)} at {_t(miss.at)} "
                f"({miss.margin:.0%} from the threshold)."
            )
    else:
        lines.append("None: no severity condition came within 10 % of its threshold without firing.")
    missed = [k for k in r.kpis if k.met is False]
    troubled = [c for c in r.changes if c.outcome in (ChangeOutcome.FAILED, ChangeOutcome.SKIPPED)]
    lines += [
        "",
        "## Follow-up checklist",
        "",
        "From the runbook's post-incident tasks:",
        "",
        "- [ ] Document the timeline and impact: review this draft and fill in the root cause.",
        "- [ ] Review cache access patterns: which keys expired or were evicted together, TTL alignment, "
        "hot keys behind the misses.",
        "- [ ] Update thresholds: check the severity and recovery thresholds against the impact"
        + (" and the near misses" if misses else "")
        + " above.",
    ]
    for kpi in missed:
        lines.append(f"- [ ] KPI {kpi.name} missed its target {kpi.target}: find what slowed it down.")
    for change in troubled:
        lines.append(
            f"- [ ] Change {change.action} ({change.kind} {change.name}) was {change.outcome.value}: "
            "check the object by hand."
        )
    if r.escalations:
        lines.append("- [ ] Debrief with everyone the escalation reached.")
    lines += [
        "- [ ] Update the runbook and the StampedePolicy with what was learnt.",
        "",
        "## Plot",
        "",
        f"![Signals, thresholds, phases and milestones of incident {report.incident}]({report.basename}.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(report: Report, directory: Path, *, now: datetime) -> tuple[Path, Path]:
    """Write `<policy>-<id>.md` and `<policy>-<id>.png` into `directory`; returns both paths.

    The Markdown is written first: without matplotlib (PlotUnavailable) the draft still exists.
    """
    from .plot import render_png

    directory.mkdir(parents=True, exist_ok=True)
    markdown = directory / f"{report.basename}.md"
    png = directory / f"{report.basename}.png"
    markdown.write_text(render_markdown(report), encoding="utf-8")
    render_png(report, png, now=now)
    return markdown, png
