"""Micro-benchmark of the decision engine: the cost of one policy tick.

Every poll of every policy runs `decide` and writes the status back, and a restart parses it
again, so a tick here is `decide` plus the status round trip (`PolicyStatus.model_validate(
status.wire())`). The policy is the runbook example (5 signals, 3 severities, 3 phases, 9 actions).
Plain script, stdlib timing only; it prints microseconds per tick and writes a JSON dict to
stdout or to `--out PATH`. Nothing asserts a time: compare numbers between commits.

    .venv/bin/python bench/engine_bench.py [--repeat 5] [--number 2000] [--out bench.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def best_us(fn: Callable[[], object], *, number: int, repeat: int) -> float:
    """Best mean of `repeat` runs of `number` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per timing run")
    parser.add_argument("--repeat", type=int, default=5, help="timing runs; the best is kept")
    parser.add_argument("--out", type=Path, help="write the JSON result here instead of stdout")
    args = parser.parse_args(argv)

    sys.path[:0] = [str(ROOT), str(ROOT / "operator")]
    from tests.unit.policies import HEALTHY, P0_READINGS, P2_READINGS, Simulation, at, readings, runbook_spec

    from stampede.api.status import PolicyStatus, State
    from stampede.engine.decide import decide

    spec = runbook_spec()
    shape = (len(spec.signals), len(spec.severities), len(spec.phases), len(spec.actions()))
    assert shape == (5, 3, 3, 9), shape

    # Idle: healthy readings on a policy with some history.
    idle = Simulation(spec)
    idle.run(start=0, until=600, values=HEALTHY)
    idle_status, idle_now = idle.status, at(615)

    # Incident: a P0 incident in its last phase with all 9 changes held, still firing.
    busy = Simulation(spec)
    worse = readings(hitRate=0.6, missRate=0.4, dbConnections=200.0)
    busy.run(start=0, until=1200, values=worse)
    assert (busy.status.state, len(busy.status.applied)) == (State.INCIDENT, 9)
    busy_status, busy_now = busy.status, at(1215)

    def tick(status: PolicyStatus, values: dict[str, float | None], now: Any, roundtrip: bool) -> Callable[[], object]:
        def run() -> object:
            d = decide(spec=spec, status=status, readings=values, now=now)
            if roundtrip:
                return PolicyStatus.model_validate(d.status.wire())
            return d

        return run

    n, r = args.number, args.repeat
    result: dict[str, Any] = {
        "policy": {"signals": 5, "severities": 3, "phases": 3, "actions": 9},
        "python": platform.python_version(),
        "number": n,
        "repeat": r,
        "idle_decide_us": best_us(tick(idle_status, HEALTHY, idle_now, False), number=n, repeat=r),
        "idle_tick_us": best_us(tick(idle_status, HEALTHY, idle_now, True), number=n, repeat=r),
        "incident_decide_us": best_us(tick(busy_status, worse, busy_now, False), number=n, repeat=r),
        "incident_tick_us": best_us(tick(busy_status, worse, busy_now, True), number=n, repeat=r),
        "wire_roundtrip_incident_us": best_us(
            lambda: PolicyStatus.model_validate(busy_status.wire()), number=n, repeat=r
        ),
    }

    # A whole incident, tick by tick, as the operator runs it: open (P2), raise to P0, three phases,
    # recovery and a rollback of every change, with the caller's bookkeeping and the round trip.
    def lifecycle() -> tuple[int, float]:
        sim = Simulation(spec, roundtrip=True)
        start = time.perf_counter()
        sim.run(start=0, until=600, values=P2_READINGS)
        sim.run(start=615, until=1500, values=P0_READINGS | {"hitRate": 0.6})
        sim.run(start=1515, until=3600, values=HEALTHY, follow_wake=True, stop=Simulation.settled)
        elapsed = time.perf_counter() - start
        assert (sim.status.state, len(sim.status.history)) == (State.IDLE, 1)
        return len(sim.decisions), elapsed

    runs = [lifecycle() for _ in range(r)]
    ticks = runs[0][0]
    result["lifecycle_ticks"] = ticks
    result["lifecycle_tick_us"] = min(elapsed for _, elapsed in runs) / ticks * 1e6
    result["ratio_incident_to_idle_tick"] = result["incident_tick_us"] / result["idle_tick_us"]
    result["ratio_roundtrip_share_of_incident_tick"] = result["wire_roundtrip_incident_us"] / result["incident_tick_us"]
    result["ticks_per_second_per_core_incident"] = 1e6 / result["incident_tick_us"]

    for key, value in result.items():
        if key.endswith("_us"):
            print(f"{key:40s} {value:10.1f} µs", file=sys.stderr)
    text = json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
