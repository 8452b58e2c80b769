"""Post-incident reports: a Markdown postmortem draft and a PNG plot per incident.

The runbook's "Post-Incident Tasks" (document the timeline and impact, review cache access
patterns, update thresholds) start from the same facts every time; the report writes them down
from an incident record and the signals' history, so people spend the review on the root cause.
The same `Report` comes from the cluster (`stampede report`: the StampedeIncident plus Prometheus
range queries) or from a replay (`stampede simulate --report-dir`).
"""

from __future__ import annotations

from .report import Report, Series, report_window, write_report

__all__ = ["Report", "Series", "report_window", "write_report"]
