"""The incident at a glance: every signal over the incident, thresholds, phases and milestones.

matplotlib is an optional extra (`pip install 'stampede-operator[report]'`): the operator image does
not need it, so it is imported only here, when a plot is asked for, with the Agg backend (no display).
The figure has a fixed size (1200 px wide, 260 px per signal plus 140 px) so readers and tests know
what to expect; `bbox_inches="tight"` is not used because it would change the size with the labels.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from .report import Report, report_window

WIDTH_PX = 1200
PER_SIGNAL_PX = 260
EXTRA_PX = 140
DPI = 100
LEVEL_COLOURS = {"P0": "#c62828", "P1": "#ef6c00", "P2": "#f9a825"}
PHASE_COLOURS = ("#bbdefb", "#c8e6c9", "#ffe0b2", "#e1bee7", "#b2dfdb", "#f8bbd0")


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def figure_size(report: Report) -> tuple[int, int]:
    """Width and height in pixels of the plot of `report`."""
    return WIDTH_PX, PER_SIGNAL_PX * max(1, len(report.spec.signals)) + EXTRA_PX


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(
            "plotting needs matplotlib: pip install 'stampede-operator[report]' (the Markdown report needs nothing)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_png(report: Report, path: Path, *, now: datetime) -> None:
    """Draw the incident into `path` (PNG)."""
    plt = _pyplot()
    import matplotlib.dates

    mdates: Any = matplotlib.dates  # partly untyped

    record = report.record
    spec = report.spec
    width, height = figure_size(report)
    signals = spec.signals
    fig, axes = plt.subplots(
        max(1, len(signals)), 1, figsize=(width / DPI, height / DPI), dpi=DPI, sharex=True, squeeze=False
    )
    start, end = report_window(record, now=now)
    closed = record.closed_at
    milestones = [
        ("first breach", record.first_breach_at, "#6d4c41", ":"),
        ("opened", record.started_at, LEVEL_COLOURS.get(record.severity.value, "#c62828"), "-"),
        ("recovered", record.recovered_at, "#2e7d32", "-"),
        ("closed", closed, "#1565c0", "-"),
    ]
    phase_spans = []
    for index, phase in enumerate(record.phases):
        following = record.phases[index + 1].entered_at if index + 1 < len(record.phases) else None
        until = following or record.recovered_at or closed or end
        phase_spans.append((phase.name, phase.entered_at, until, PHASE_COLOURS[index % len(PHASE_COLOURS)]))
    for row, signal in enumerate(signals):
        ax = axes[row][0]
        points = [(t, v) for t, v in report.series.get(signal.name, ()) if start <= t <= end]
        for name, first, last, colour in phase_spans:
            ax.axvspan(first, last, color=colour, alpha=0.45, lw=0, label=f"phase {name}" if row == 0 else None)
        if points:
            ax.plot(
                [t for t, _ in points],
                [v if v is not None else float("nan") for _, v in points],
                color="#263238",
                lw=1.6,
                label=signal.name,
            )
        else:
            ax.text(0.5, 0.5, "no history", transform=ax.transAxes, ha="center", va="center", color="#90a4ae")
        for severity in spec.severities:
            for condition in severity.parsed():
                if condition.signal == signal.name:
                    ax.axhline(
                        condition.threshold,
                        color=LEVEL_COLOURS[severity.level.value],
                        lw=1.2,
                        ls="--",
                        label=f"{severity.level.value}: {condition.text}",
                    )
        for condition in spec.recovery.parsed():
            if condition.signal == signal.name:
                ax.axhline(condition.threshold, color="#2e7d32", lw=1.2, ls="-.", label=f"recovery: {condition.text}")
        # Milestones are named in the first legend (with their time) rather than on the plot, where labels of
        # close milestones would overlap.
        for label, when, colour, style in milestones:
            if when is not None:
                ax.axvline(when, color=colour, lw=1.4, ls=style, label=f"{label} {when:%H:%M:%S}" if row == 0 else None)
        for escalation in record.escalations:
            ax.axvline(
                escalation.at,
                color="#6a1b9a",
                lw=1.0,
                ls=":",
                label=f"escalated: {escalation.level} {escalation.at:%H:%M:%S}" if row == 0 else None,
            )
        ax.set_ylabel(signal.name)
        ax.grid(alpha=0.25)
        ax.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    bottom = axes[-1][0]
    bottom.set_xlim(start, end)
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    bottom.set_xlabel("time (UTC)")
    kind = "DryRun " if record.dry_run else ""
    level = record.escalation_level
    escalated = "" if not level else ", escalated" if level == "escalated" else f", escalated to {level}"
    fig.suptitle(
        f"{report.namespace}/{report.policy} — {kind}incident {report.incident} ({record.severity.value}, "
        f"phase {record.phase or '-'}{escalated})",
        fontsize=12,
    )
    fig.subplots_adjust(left=0.07, right=0.76, top=1 - 60 / height, bottom=70 / height, hspace=0.25)
    fig.savefig(path, format="png", dpi=DPI)
    plt.close(fig)
