"""Latency of the whole loop: breach visible in Prometheus → first change applied, recovery → last rollback.

Small policies (pollInterval 1s, `for` 2s, recovery `for` 2s, stepDelay 1s, 3 actions) run whole
incidents in several namespaces at once, against the real `stampede run`, the real Prometheus and the
emulated API server. Times come from three clocks on the same machine: the moment this process's
instant query first returns the breach, the harness request log (arrival time of the operator's PATCH)
and the operator's own `recoveredAt`. Targets (from the issue):

  detection ≤ for + pollInterval + 1 s
  rollback  ≤ (actions - 1) x stepDelay + pollInterval   (from recoveredAt to the last undo write)

    .venv/bin/python bench/latency.py [--namespaces 5] [--incidents 4]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from datetime import datetime
from typing import Any

from common import Sample, log, machine, memory_kb, summary
from tests.e2e import policies
from tests.e2e.stack import GROUP, PLURAL, VERSION, Stack

POLL = 1.0
FOR = 2.0
RECOVERY_FOR = 2.0
STEP_DELAY = 1.0
ACTIONS = 3
BREACH, HEALTHY = 0.2, 0.95
TARGET_WRITES = {"patch", "update", "create"}
TARGET_RESOURCES = {"configmaps", "deployments"}


def policy_body(namespace: str) -> dict[str, Any]:
    phases = [
        {
            "name": "immediate",
            "after": "0s",
            "actions": [
                {
                    "name": "api-config",
                    "configMap": {"name": policies.API_CONFIG, "data": {"AURUM_API_CIRCUIT_BREAKER_ENABLED": "true"}},
                },
                {"name": "scale-api", "scale": {"kind": "Deployment", "name": policies.API, "replicas": 6}},
                {
                    "name": "cache-lazy",
                    "configMap": {"name": policies.CACHE_CONFIG, "data": {"CACHE_REFRESH_STRATEGY": "lazy"}},
                },
            ],
        }
    ]
    return policies.policy(
        "lat", namespace, namespace, phases=phases, recovery_for=f"{RECOVERY_FOR:g}s", step_delay=f"{STEP_DELAY:g}s"
    )


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Runner:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.info = stack.harness.store.info(GROUP, VERSION, PLURAL)
        self.results: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def status(self, namespace: str) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            obj = self.stack.harness.store._bucket(self.info).get((namespace, "lat")) or {}
            return json.loads(json.dumps(obj.get("status") or {}))

        return self.stack.harness.call(read)

    def wait(self, what: str, predicate: Any, *, timeout: float, interval: float = 0.05) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(what)

    def visible(self, namespace: str, value: float) -> float:
        """Set the exporter and return the wall-clock moment an instant query first shows the value."""
        assert self.stack.exporter is not None and self.stack.prometheus is not None
        self.stack.exporter.set("e2e_hit_rate", value, case=namespace)
        query = policies.hit_rate_query(namespace)
        prometheus = self.stack.prometheus
        return float(
            self.wait(
                f"{namespace}: prometheus shows {value}",
                lambda: prometheus.query(query) == value and time.time(),
                timeout=20,
                interval=0.05,
            )
        )

    def writes(self, namespace: str, *, since: int) -> list[Any]:
        return [
            r
            for r in self.stack.harness.log.entries(since=since, namespace=namespace)
            if r.resource in TARGET_RESOURCES and r.verb in TARGET_WRITES
        ]

    def one(self, namespace: str, index: int) -> dict[str, Any]:
        mark = self.stack.harness.log.last_id
        visible = self.visible(namespace, BREACH)
        first = self.wait(
            f"{namespace}: first change",
            lambda: [
                r for r in self.writes(namespace, since=mark) if r.resource == "configmaps" and r.time >= visible - 0.5
            ],
            timeout=30,
        )[0]
        applied = self.wait(
            f"{namespace}: all applied",
            lambda: (
                (s := self.status(namespace)).get("state") == "Incident"
                and len(s.get("applied") or []) == ACTIONS
                and s
            ),
            timeout=30,
        )
        incident_id = applied["incident"]["id"]
        apply_writes = [r for r in self.writes(namespace, since=mark) if r.time < first.time + 5]
        started_at = _ts(applied["incident"]["startedAt"])
        recover_mark = self.stack.harness.log.last_id
        healthy = self.visible(namespace, HEALTHY)
        closed = self.wait(
            f"{namespace}: closed",
            lambda: (
                (s := self.status(namespace)).get("state") == "Idle"
                and (s.get("history") or [{}])[0].get("id") == incident_id
                and s
            ),
            timeout=60,
        )
        entry = closed["history"][0]
        recovered_at = _ts(entry["recoveredAt"])
        undo = [r for r in self.writes(namespace, since=recover_mark) if r.time >= recovered_at - 0.5]
        last_undo = max(r.time for r in undo) if undo else float("nan")
        # The tick that may fire: the first aligned poll at or after the breach became visible, plus `for`.
        fire_tick = (int(visible // POLL) + (0 if visible % POLL == 0 else 1)) * POLL + FOR
        return {
            "namespace": namespace,
            "incident": index,
            "detection_s": round(first.time - visible, 3),
            "opened_after_visible_s": round(started_at - visible, 3),
            "visible_phase_s": round(visible % POLL, 3),
            "opened_tick_phase_s": round(started_at % POLL, 4),
            "overhead_after_firing_tick_s": round(first.time - fire_tick, 3),
            "apply_all_s": round(max(r.time for r in apply_writes) - first.time, 3),
            "apply_writes": len(apply_writes),
            "recovery_confirm_s": round(recovered_at - healthy, 3),
            "rollback_s": round(last_undo - recovered_at, 3),
            "undo_writes": len(undo),
            "closed_after_recovered_s": round(_ts(entry["closedAt"]) - recovered_at, 3),
        }

    def worker(self, namespace: str, incidents: int) -> None:
        for index in range(incidents):
            try:
                result = self.one(namespace, index)
            except Exception as error:  # record and go on: one stuck namespace must not hide the others
                with self.lock:
                    self.errors.append(f"{namespace}#{index}: {error!r}")
                return
            with self.lock:
                self.results.append(result)
            time.sleep(0.3)


def run(*, namespaces: int = 5, incidents: int = 4) -> dict[str, Any]:
    log(f"latency: {namespaces} namespaces x {incidents} incidents")
    before_machine = machine()
    with Stack() as stack:
        assert stack.exporter is not None and stack.operator is not None and stack.operator.process is not None
        runner = Runner(stack)
        names = [f"lat-{i}" for i in range(namespaces)]
        for ns in names:
            stack.harness.apply(policies.cluster_objects(ns))
            stack.exporter.set("e2e_hit_rate", HEALTHY, case=ns)
            stack.exporter.set("e2e_db", 10.0, case=ns)
        for ns in names:
            stack.prometheus.wait_for(policies.hit_rate_query(ns), lambda v: v == HEALTHY, timeout=20)  # type: ignore[union-attr]
            stack.apply_policy(policy_body(ns))
        for ns in names:
            runner.wait(
                f"{ns}: ready",
                lambda ns=ns: (runner.status(ns).get("signals") or [{}])[0].get("value") not in (None, "unknown"),
                timeout=60,
                interval=0.2,
            )
        pid = stack.operator.process.pid
        start = Sample.take({"operator": pid})
        started = time.monotonic()
        workers = [threading.Thread(target=runner.worker, args=(ns, incidents), daemon=True) for ns in names]
        for i, thread in enumerate(workers):
            thread.start()
            time.sleep(POLL / max(1, namespaces) * 1.3 + 0.1 * i % 1)  # spread breaches over the poll phase
        for thread in workers:
            thread.join(timeout=incidents * 90)
        elapsed = time.monotonic() - started
        cpu = Sample.take({"operator": pid}).minus(start)
        operator_mem = memory_kb(pid)
    results = sorted(runner.results, key=lambda r: (r["namespace"], r["incident"]))
    detect_target = FOR + POLL + 1.0
    rollback_target = (ACTIONS - 1) * STEP_DELAY + POLL
    detection = [r["detection_s"] for r in results]
    rollback = [r["rollback_s"] for r in results]
    out = {
        "policy": {
            "pollInterval_s": POLL,
            "for_s": FOR,
            "recovery_for_s": RECOVERY_FOR,
            "stepDelay_s": STEP_DELAY,
            "actions": ACTIONS,
            "namespaces_in_parallel": namespaces,
        },
        "incidents": len(results),
        "errors": runner.errors,
        "wall_s": round(elapsed, 1),
        "operator_cpu_s": round(cpu["operator"], 2),
        "operator_peak_rss_mb": round(operator_mem.get("VmHWM", 0) / 1024, 1),
        "detection_s": summary(detection),
        "detection_target_s": detect_target,
        "detection_within_target": sum(1 for d in detection if d <= detect_target),
        "overhead_after_firing_tick_s": summary([r["overhead_after_firing_tick_s"] for r in results]),
        "apply_all_actions_s": summary([r["apply_all_s"] for r in results]),
        "recovery_confirm_s": summary([r["recovery_confirm_s"] for r in results]),
        "recovery_confirm_target_s": RECOVERY_FOR + POLL + 1.0,
        "rollback_s": summary(rollback),
        "rollback_target_s": rollback_target,
        "rollback_within_target": sum(1 for d in rollback if d <= rollback_target),
        "rollback_overhead_s": summary([d - (ACTIONS - 1) * STEP_DELAY for d in rollback]),
        "machine": {"before": before_machine, "after": machine()},
        "per_incident": results,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespaces", type=int, default=5)
    parser.add_argument("--incidents", type=int, default=4, help="incidents per namespace")
    args = parser.parse_args(argv)
    print(json.dumps(run(namespaces=args.namespaces, incidents=args.incidents), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
