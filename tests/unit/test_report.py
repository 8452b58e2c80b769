"""The postmortem draft and its plot, from a replay of a known incident.

The replay fixes every fact (times, changes, KPIs), so the Markdown is checked section by section; the PNG
is decoded and checked for its size and for actually showing something.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from stampede.api.spec import PolicySpec
from stampede.reporting import Report, write_report
from stampede.reporting.plot import PlotUnavailable, figure_size
from stampede.reporting.report import render_markdown
from stampede.simulate import replay

from .policies import at, tiny_spec


def two_signal_spec(**overrides: object) -> PolicySpec:
    return tiny_spec(
        signals=[{"name": "load", "query": "load"}, {"name": "hitRate", "query": "hit"}],
        severities=[
            {"level": "P0", "any": ["load > 40"], "for": "1m"},
            {"level": "P2", "any": ["load > 10", "hitRate < 0.5"], "for": "1m"},
        ],
        recovery={"all": ["load < 5", "hitRate > 0.9"], "for": "1m"},
        targets={"mttr": "10m"},
        **overrides,
    )


def values(s: int) -> dict[str, float | None]:
    """Load 20 and hit rate 0.55 (a near miss of `hitRate < 0.5`) for 10 minutes, then healthy."""
    if s < 600:
        return {"load": 20.0 + (s % 120) / 20, "hitRate": 0.55}
    return {"load": 1.0, "hitRate": 0.95}


@pytest.fixture(scope="module")
def report() -> Report:
    spec = two_signal_spec()
    history = [(at(s), values(s), {}) for s in range(0, 1200, 15)]
    result = replay(spec, history, policy="aurum/cache")
    (incident,) = result.incidents
    assert incident.record is not None
    series = {name: [(t, v.get(name)) for t, v, _ in history] for name in ("load", "hitRate")}
    return Report(
        namespace="aurum",
        policy="cache",
        incident=incident.id,
        spec=spec,
        record=incident.record,
        series=series,
        source="replay",
    )


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_summary_names_severity_duration_escalation_and_a_root_cause_placeholder(report: Report) -> None:
    markdown = render_markdown(report)
    assert markdown.startswith("# Postmortem draft: cache stampede in aurum/cache, incident 20240501-120100")
    summary = section(markdown, "Summary")
    assert "| Severity | P2 (highest reached) |" in summary
    assert "| Duration | 10m30s (opened → closed) |" in summary
    assert "| Escalated | no |" in summary
    assert "| Root cause | _TODO:" in summary


def test_the_impact_lists_the_worst_value_of_every_signal(report: Report) -> None:
    impact = section(render_markdown(report), "Impact")
    assert "| load | 25.25 (highest) |" in impact
    assert "| hitRate | 0.55 (lowest) |" in impact
    assert "P2: `hitRate < 0.5`" in impact


def test_the_timeline_starts_at_the_breach_and_lists_every_event(report: Report) -> None:
    timeline = section(render_markdown(report), "Timeline")
    rows = [line for line in timeline.splitlines() if line.startswith("| 2024")]
    assert rows[0].startswith("| 2024-05-01T12:00:00Z | +0s | _Breach window starts_")
    assert "| 2024-05-01T12:01:00Z | +1m | IncidentOpened |" in rows[1]
    assert rows[-1].split(" | ")[2] == "IncidentClosed"
    assert len(rows) == 1 + len(report.record.timeline)


def test_every_change_shows_before_during_and_after(report: Report) -> None:
    changes = section(render_markdown(report), "Changes")
    assert "| flag | ConfigMap cfg | FLAG: (absent) → on → (absent) | RolledBack | 2024-05-01T12:01:00Z |" in changes
    assert "| more | Deployment api | replicas: (absent) → 4 → (absent) | RolledBack |" in changes


def test_the_kpis_are_shown_against_their_targets(report: Report) -> None:
    kpis = section(render_markdown(report), "KPIs")
    assert "| detection | 1m | 2m | yes |" in kpis
    assert "| mttr | 11m | 10m | **no** |" in kpis
    assert "| fullRecovery | 11m30s | 30m | yes |" in kpis


def test_near_misses_and_the_follow_up_checklist(report: Report) -> None:
    markdown = render_markdown(report)
    assert "- P2 `hitRate < 0.5`: reached 0.55 at 2024-05-01T12:00:00Z (10% from the threshold)." in section(
        markdown, "Near misses"
    )
    checklist = section(markdown, "Follow-up checklist")
    assert "- [ ] Review cache access patterns" in checklist
    assert "- [ ] Update thresholds: check the severity and recovery thresholds against the impact and the near" in (
        checklist
    )
    assert "- [ ] KPI mttr missed its target 10m" in checklist
    assert "![Signals, thresholds, phases and milestones of incident 20240501-120100](cache-20240501-120100.png)" in (
        markdown
    )


def test_a_report_without_history_says_near_misses_are_unknown(report: Report) -> None:
    bare = Report(**{**report.__dict__, "series": {}, "note": "No Prometheus URL."})
    markdown = render_markdown(bare)
    assert "> No Prometheus URL." in markdown
    assert "could not be read, so near misses cannot be computed" in section(markdown, "Near misses")


def test_the_png_decodes_has_the_expected_size_and_is_not_blank(report: Report, tmp_path: Path) -> None:
    markdown, png = write_report(report, tmp_path, now=datetime(2024, 5, 1, 13, tzinfo=at(0).tzinfo))
    assert markdown.name == "cache-20240501-120100.md"
    assert png.name == "cache-20240501-120100.png"
    with Image.open(png) as image:
        image.load()
        assert image.format == "PNG"
        assert image.size == figure_size(report) == (1200, 2 * 260 + 140)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 50, "a plot with lines, shading and text has many colours"
    white = max(count for count, colour in colours if colour == (255, 255, 255))
    assert white < 0.9 * rgb.size[0] * rgb.size[1], "mostly white: nothing was drawn"
    # Phases are shaded: the light blue of the first phase is there.
    assert any(abs(c[0] - 0xBB) < 20 and abs(c[2] - 0xFB) < 20 and c[1] > 200 for _, c in colours)


def test_near_misses_look_at_the_incident_not_at_the_margin_around_it(report: Report) -> None:
    # A warm-up artefact before the breach crosses the threshold; during the incident it only came close.
    series = dict(report.series)
    series["hitRate"] = [(at(-60), 0.1), *series["hitRate"]]
    misses = Report(**{**report.__dict__, "series": series}).near_misses()
    assert [(m.condition, m.value) for m in misses] == [("hitRate < 0.5", 0.55)]


def test_without_matplotlib_the_draft_is_written_and_the_plot_error_says_what_to_install(
    report: Report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(PlotUnavailable, match=r"pip install 'stampede-operator\[report\]'"):
        write_report(report, tmp_path, now=at(3600))
    assert (tmp_path / f"{report.basename}.md").exists()
    assert not (tmp_path / f"{report.basename}.png").exists()
