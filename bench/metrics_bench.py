"""/metrics at scale: exposition size, series and the CPU one scrape costs, per metrics setting.

Fills the operator's own registry as N idle policies with 3 signals each leave it after a few polls (poll
durations, signal values, incident_active), then times `generate_latest` (what every scrape runs, holding
the GIL the poll loops need), best of 3, in CPU seconds:

    .venv/bin/python bench/metrics_bench.py [--policies 10000] [--namespaces 200]

Variants: `with_created` is prometheus-client's default (a `*_created` series beside every counter and
histogram series, what the operator exported before), `default` the operator's default now, then each of
STAMPEDE_METRICS_PER_POLICY_POLL_DURATION=false and STAMPEDE_METRICS_SIGNAL_VALUES=false, and both.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import prometheus_client
from common import log  # importing common puts the operator's package on sys.path
from prometheus_client import generate_latest

from stampede.handlers import metrics

SIGNALS = ("hitRate", "db", "queue")
VARIANTS = {
    "with_created": (True, True, True),
    "default": (False, True, True),
    "per_namespace_poll_duration": (False, False, True),
    "no_signal_values": (False, True, False),
    "both_off": (False, False, False),
}


def fill(policies: int, namespaces: int) -> None:
    for metric in (metrics.POLL_DURATION, metrics.SIGNAL_VALUE, metrics.INCIDENT_ACTIVE):
        metric.clear()
    for i in range(policies):
        ns, name = f"bench-{i % namespaces:03d}", f"p-{i}"
        for seconds in (0.004, 0.02, 0.3, 1.5):
            metrics.observe_poll(ns, name, seconds)
        for signal in SIGNALS:
            metrics.set_signal_value(ns, name, signal, 0.95)
        metrics.INCIDENT_ACTIVE.labels(ns, name).set(0)


def measure(policies: int, namespaces: int) -> dict[str, Any]:
    out: dict[str, Any] = {"policies": policies, "namespaces": namespaces, "signals_per_policy": len(SIGNALS)}
    for variant, (created, per_policy, signals) in VARIANTS.items():
        if created:
            prometheus_client.enable_created_metrics()  # type: ignore[no-untyped-call]
        else:
            prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        metrics.configure(per_policy_poll_duration=per_policy, signal_values=signals)
        fill(policies, namespaces)
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            text = generate_latest(metrics.REGISTRY)
            best = min(best, time.process_time() - started)
        series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
        out[variant] = {
            "bytes": len(text),
            "mib": round(len(text) / 2**20, 2),
            "series": series,
            "series_per_policy": round(series / policies, 2),
            "scrape_cpu_s": round(best, 3),
        }
        log(f"metrics: {variant}: {json.dumps(out[variant])}")
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics.configure(per_policy_poll_duration=True, signal_values=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=10_000)
    parser.add_argument("--namespaces", type=int, default=200)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.policies, args.namespaces), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
