"""Scale: many policies (15 s polls) on one operator, against the emulated API server and a real Prometheus.

Policies are added in steps (e.g. 100 → 250 → 500 → 1000) spread over 50 namespaces; every policy has
its own ConfigMap and Deployment to act on, and reads two signals of its *shard* (100 policies per
shard) plus one signal every policy shares, so the distinct queries per round are 2 x shards + 1 while
the reads per round are 3 x policies. At each step, after every policy has polled once, a steady-state
window of whole rounds measures:

- the operator's CPU seconds per poll round (/proc/<pid>/stat) and its peak RSS (VmHWM);
- Kubernetes API requests per minute from the harness request log, by kind, and status writes per
  policy per minute (target: no target writes, ≤ 1 status write per policy per minute);
- Prometheus requests per round, counted by a proxy in front of Prometheus (target: one per distinct
  query), cross-checked with Prometheus's own prometheus_http_requests_total;
- stampede_poll_duration_seconds from the operator's /metrics.

After the last step the operator is restarted over the idle policies (`restart`): seconds and operator
CPU until every policy has polled again, and the targets read meanwhile (none: a restart reads only the
targets named in a policy's status.journal). Then one shard (100 policies) is driven into breach through
the exporter and back; the API requests of that incident window are counted the same way.

The harness API server runs in this process (a thread), the operator and Prometheus in their own;
all three share the machine's cores, and other test suites may too: see `machine` in the result.

    .venv/bin/python bench/scale.py [--levels 100,250,500,1000] [--rounds 4] [--last-rounds 8]
    .venv/bin/python bench/scale.py --levels 10000 --namespaces 200 --preload --last-rounds 4   # `scale10k`

During the incident, while its changes are held, two rounds count the target reads (0: drift is seen by
watches, not GETs) and read the watch cache's size from /metrics; then `--reverts` ConfigMaps are
reverted one at a time, as Argo CD self-heal would, timing each revert to the operator's re-apply.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import signal
import subprocess
import time
import urllib.parse
from collections import Counter
from typing import Any

from common import (
    CountingProxy,
    Sample,
    histogram_delta,
    histogram_quantile,
    histogram_totals,
    log,
    machine,
    memory_kb,
    scrape,
    summary,
    threads,
)
from tests.e2e.stack import GROUP, PLURAL, VERSION, Stack
from tests.support.prometheus import free_port

POLL = 15.0
NAMESPACES = 50
SHARD = 100  # policies per shard: the incident breaches exactly one shard (--incident sets it)
HEALTHY, BREACH = 0.95, 0.2
TARGET_RESOURCES = {"configmaps", "deployments", "jobs", "horizontalpodautoscalers"}
WRITES = {"create", "patch", "update", "delete", "deletecollection"}


COALESCED = "stampede_status_refreshes_coalesced_total"


def counter_value(text: str, name: str) -> float:
    """An unlabelled counter's value in a /metrics text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.rpartition(" ")[2])
    return 0.0


def namespace_of(index: int) -> str:
    return f"bench-{index % NAMESPACES:02d}"


def shard_of(index: int) -> str:
    return f"s{index // SHARD}"


def set_shard_size(size: int) -> None:
    global SHARD
    SHARD = max(1, size)


def set_namespaces(count: int) -> None:
    global NAMESPACES
    NAMESPACES = max(1, count)


def prepare(stack: Stack, *, policies: int) -> None:
    """Healthy signals for every shard of `policies` (scraped before anything polls) and the namespaces."""
    assert stack.prometheus is not None and stack.exporter is not None
    shards = math.ceil(policies / SHARD)
    for shard in range(shards):
        stack.exporter.set("bench_hit_rate", HEALTHY, shard=f"s{shard}")
        stack.exporter.set("bench_db", 10.0, shard=f"s{shard}")
    stack.exporter.set("bench_queue", 3.0)
    stack.prometheus.wait_for(f'sum(bench_db{{shard="s{shards - 1}"}})', lambda v: v == 10.0, timeout=20)
    stack.harness.apply(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace_of(i)}} for i in range(NAMESPACES)]
    )


def objects_for(indexes: range) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for i in indexes:
        ns = namespace_of(i)
        labels = {"app": f"app-{i}"}
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"cfg-{i}", "namespace": ns},
                "data": {"MODE": "normal"},
            }
        )
        docs.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"app-{i}", "namespace": ns},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
                    },
                },
            }
        )
    return docs


def policy_for(i: int) -> dict[str, Any]:
    shard = shard_of(i)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "StampedePolicy",
        "metadata": {"name": f"p-{i}", "namespace": namespace_of(i)},
        "spec": {
            "pollInterval": f"{POLL:g}s",
            "signals": [
                {"name": "hitRate", "query": f'sum(bench_hit_rate{{shard="{shard}"}})'},
                {"name": "db", "query": f'sum(bench_db{{shard="{shard}"}})'},
                {"name": "queue", "query": "sum(bench_queue)"},
            ],
            "severities": [
                {"level": "P0", "any": ["db >= 190"], "for": "15s"},
                {"level": "P1", "any": ["hitRate < 0.5"], "for": "15s"},
            ],
            "recovery": {"all": ["hitRate > 0.9"], "for": "15s"},
            "phases": [
                {
                    "name": "immediate",
                    "after": "0s",
                    "actions": [
                        {"name": "config", "configMap": {"name": f"cfg-{i}", "data": {"MODE": "degraded"}}},
                        {"name": "scale", "scale": {"kind": "Deployment", "name": f"app-{i}", "replicas": 4}},
                    ],
                }
            ],
            "rollback": {"stepDelay": "15s"},
        },
    }


class Profiler:
    """py-spy sampling the operator process (`--profile DIR`): one collapsed-stack file per phase.

    py-spy runs outside the operator (no hook in its code); `bench/profile_top.py` summarises a file.
    """

    def __init__(self, directory: str | None) -> None:
        self.directory = pathlib.Path(directory) if directory else None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, pid: int, phase: str) -> None:
        if self.directory is None:
            return
        self.stop()
        self.directory.mkdir(parents=True, exist_ok=True)
        spy = pathlib.Path(os.environ.get("VIRTUAL_ENV", ".venv")) / "bin" / "py-spy"
        out = self.directory / f"{phase}.txt"
        self.process = subprocess.Popen(
            [str(spy), "record", "--pid", str(pid), "--format", "raw", "--rate", "50", "--nonblocking", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(60)
        self.process = None


PROFILER = Profiler(None)


class Bench:
    def __init__(self, stack: Stack, proxy: CountingProxy, metrics_url: str) -> None:
        self.stack = stack
        self.proxy = proxy
        self.metrics_url = metrics_url
        self.info = stack.harness.store.info(GROUP, VERSION, PLURAL)
        assert stack.operator is not None and stack.operator.process is not None
        assert stack.prometheus is not None and stack.prometheus._process is not None
        self.pids: dict[str, int | str] = {
            "operator": stack.operator.process.pid,
            "bench_and_harness": "self",
            "prometheus": stack.prometheus._process.pid,
        }
        self.count = 0

    # -- reading state cheaply, in the harness's own loop --------------------------------------------
    def states(self) -> dict[str, tuple[str, bool, int, str | None]]:
        def read() -> dict[str, tuple[str, bool, int, str | None]]:
            out = {}
            for (_, name), obj in self.stack.harness.store._bucket(self.info).items():
                status = obj.get("status") or {}
                ready = any(
                    c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
                )
                history = status.get("history") or []
                out[name] = (
                    status.get("state") or "",
                    ready,
                    len(status.get("applied") or []),
                    history[0].get("id") if history else None,
                )
            return out

        return self.stack.harness.call(read)

    def wait(self, what: str, predicate: Any, *, timeout: float, interval: float = 1.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if predicate():
                return time.monotonic() - started
            time.sleep(interval)
        raise TimeoutError(f"{what} not reached within {timeout:g}s")

    def prometheus_query_total(self) -> float:
        """Prometheus's own count of instant queries, from its /metrics (it does not scrape itself here)."""
        assert self.stack.prometheus is not None
        total = 0.0
        for line in scrape(self.stack.prometheus.url + "/metrics").splitlines():
            if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query"' in line:
                total += float(line.rpartition(" ")[2])
        return total

    # -- steps -------------------------------------------------------------------------------------------
    def grow(self, target: int) -> dict[str, Any]:
        new = range(self.count, target)
        log(f"scale: adding policies {new.start}..{new.stop - 1}")
        before = Sample.take(self.pids)
        started = time.monotonic()
        docs = objects_for(new)
        for start in range(0, len(docs), 200):
            self.stack.harness.apply(docs[start : start + 200])
        pols = [policy_for(i) for i in new]
        for start in range(0, len(pols), 50):
            self.stack.harness.apply(pols[start : start + 50])
        self.count = target
        names = {f"p-{i}" for i in range(target)}
        ready_after = self.wait(
            f"{target} policies Ready",
            lambda: sum(1 for n, s in self.states().items() if n in names and s[1]) >= target,
            timeout=60 + target * 0.3,
        )
        cpu = Sample.take(self.pids).minus(before)
        return {
            "added": len(new),
            "all_ready_after_s": round(time.monotonic() - started, 1),
            "ready_wait_s": round(ready_after, 1),
            "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
        }

    def start_loaded(self, started: float) -> dict[str, Any]:
        """The operator started with every policy already there: time to all Ready, CPU spent getting there."""
        before = Sample.take(self.pids)
        names = {f"p-{i}" for i in range(self.count)}
        counts: list[tuple[float, int]] = []

        def all_ready() -> bool:
            ready = sum(1 for n, s in self.states().items() if n in names and s[1])
            counts.append((round(time.monotonic() - started, 1), ready))
            return ready >= self.count

        error = None
        try:
            self.wait(f"{self.count} policies Ready", all_ready, timeout=120 + self.count * 0.012, interval=0.5)
        except TimeoutError as timeout:  # measure the rest anyway, and say how far startup got
            error = str(timeout)
            log(f"scale: {error}")
        cpu = Sample.take(self.pids).minus(before)
        return {
            "policies": self.count,
            "error": error,
            "ready_at_end": counts[-1][1] if counts else 0,
            "all_ready_after_start_s": None if error else round(time.monotonic() - started, 1),
            "ready_goal_s": POLL,
            "ready_over_time": [c for k, c in enumerate(counts) if k % 4 == 0 or k == len(counts) - 1],
            "cpu_s": {k: round(v, 2) for k, v in cpu.items()},
            "operator_rss_mb": round(memory_kb(self.pids["operator"]).get("VmRSS", 0) / 1024, 1),
        }

    def polled(self) -> int:
        """Policies the (current) operator process has polled at least once, from its /metrics."""
        try:
            text = scrape(self.metrics_url)
        except OSError:
            return 0
        return sum(
            1
            for line in text.splitlines()
            if line.startswith("stampede_poll_duration_seconds_count{") and float(line.rpartition(" ")[2]) >= 1
        )

    def restart(self, size: int) -> dict[str, Any]:
        """Restart the operator over `size` idle policies: time and CPU until each has polled, targets read.

        A restart reads only the targets named in a policy's status.journal (writes under way when the
        operator stopped); with none, it reads no target at all.
        """
        assert self.stack.operator is not None
        self.stack.operator.stop()
        mark = self.stack.harness.log.last_id
        started = time.monotonic()
        self.stack.operator.start()
        assert self.stack.operator.process is not None
        self.pids["operator"] = self.stack.operator.process.pid
        before = Sample.take(self.pids)
        scrapes = 0

        def all_polled() -> bool:
            nonlocal scrapes
            scrapes += 1
            return self.polled() >= size

        # Each scrape costs the operator CPU (about 0.2 ms per policy: bench/metrics_bench.py); scrape less often
        # the more policies there are, and report how many scrapes the CPU figure includes.
        polled_after = self.wait(
            f"{size} policies polled after a restart",
            all_polled,
            timeout=min(300, 60 + size * 0.3),
            interval=max(0.25, size / 2000),
        )
        cpu = Sample.take(self.pids).minus(before)
        reads = Counter(
            f"{r.verb} {r.resource}"
            for r in self.stack.harness.log.entries(since=mark)
            if r.verb in ("get", "list") and r.resource in TARGET_RESOURCES
        )
        return {
            "policies": size,
            "all_polled_after_s": round(time.monotonic() - started, 1),
            "polled_wait_s": round(polled_after, 1),
            "operator_cpu_s": round(cpu.get("operator", 0.0), 2),
            "metrics_scrapes_included": scrapes,
            "status_writes": sum(
                1
                for r in self.stack.harness.log.entries(since=mark)
                if r.resource == PLURAL and r.subresource == "status" and r.verb == "patch"
            ),
            "target_reads": dict(reads),
        }

    def steady(self, rounds: int) -> dict[str, Any]:
        # Start mid-round so the window holds whole rounds (every policy polls once per round).
        now = time.time()
        start_at = (math.floor(now / POLL) + 1) * POLL + POLL / 2
        time.sleep(max(0.0, start_at - time.time()))
        log(f"scale: steady state with {self.count} policies for {rounds} rounds ({rounds * POLL:g}s)")
        mark = self.stack.harness.log.last_id
        prom_before = self.prometheus_query_total()
        text_before = scrape(self.metrics_url)
        hist_before = histogram_totals(text_before, "stampede_poll_duration_seconds")
        PROFILER.start(int(self.pids["operator"]), f"steady-{self.count}")
        sample = Sample.take(self.pids)
        t0 = time.time()
        time.sleep(max(0.0, t0 + rounds * POLL - time.time()))
        t1 = time.time()
        PROFILER.stop()
        cpu = Sample.take(self.pids).minus(sample)
        text_after = scrape(self.metrics_url)
        hist = histogram_delta(histogram_totals(text_after, "stampede_poll_duration_seconds"), hist_before)
        coalesced = counter_value(text_after, COALESCED) - counter_value(text_before, COALESCED)
        prom_after = self.prometheus_query_total()
        minutes = (t1 - t0) / 60
        api = self.api_counts(since=mark, until=t1)
        proxied = self.proxy.queries(since=t0, until=t1)
        per_round = Counter(math.floor(r.time / POLL) for r in proxied)
        distinct = {urllib.parse.parse_qs(urllib.parse.urlsplit(r.path).query).get("query", [""])[0] for r in proxied}
        expected_distinct = 2 * math.ceil(self.count / SHARD) + 1
        status_writes = api["by_kind"].get("patch stampedepolicies/status", 0)
        mem = memory_kb(self.pids["operator"])
        return {
            "policies": self.count,
            "rounds": rounds,
            "window_s": round(t1 - t0, 1),
            "operator_cpu_s_per_round": round(cpu["operator"] / rounds, 3),
            "operator_cpu_ms_per_policy_poll": round(cpu["operator"] / rounds / self.count * 1000, 3),
            "operator_cpu_share_of_one_core": round(cpu["operator"] / (t1 - t0), 3),
            "harness_process_cpu_s_per_round": round(cpu["bench_and_harness"] / rounds, 3),
            "prometheus_cpu_s_per_round": round(cpu["prometheus"] / rounds, 3),
            "operator_rss_mb": round(mem.get("VmRSS", 0) / 1024, 1),
            "operator_peak_rss_mb": round(mem.get("VmHWM", 0) / 1024, 1),
            "operator_threads": threads(self.pids["operator"]),
            "api_requests_per_min": round(api["total"] / minutes, 1),
            "api_requests_by_kind_per_min": {k: round(v / minutes, 1) for k, v in sorted(api["by_kind"].items())},
            "target_writes": api["target_writes"],
            "status_writes_per_policy_per_min": round(status_writes / self.count / minutes, 3),
            # Refresh-only writes replaced by a newer one before they were sent (the API server lagging behind).
            "status_refreshes_coalesced_per_min": round(coalesced / minutes, 1),
            "prometheus_requests_per_round": round(len(proxied) / rounds, 2),
            "prometheus_requests_by_round": sorted(per_round.values()),
            "distinct_queries_seen": len(distinct),
            "distinct_queries_expected": expected_distinct,
            "signal_reads_per_round": 3 * self.count,
            "dedup_ratio_reads_per_request": round(3 * self.count / max(1, len(proxied) / rounds), 1),
            "prometheus_own_query_counter_per_round": round((prom_after - prom_before) / rounds, 2),
            "poll_duration": {
                "polls": hist["count"],
                "polls_per_round_per_policy": round(hist["count"] / rounds / self.count, 3),
                "mean_s": round(hist["sum"] / hist["count"], 4) if hist["count"] else None,
                "p50_le_s": histogram_quantile(hist, 0.5),
                "p99_le_s": histogram_quantile(hist, 0.99),
            },
        }

    def api_counts(
        self, *, since: int, until: float | None = None, namespaces: set[str] | None = None
    ) -> dict[str, Any]:
        by_kind: Counter[str] = Counter()
        target_writes = 0
        for r in self.stack.harness.log.entries(since=since):
            if until is not None and r.time > until:
                continue
            if namespaces is not None and r.namespace not in namespaces:
                continue
            key = f"{r.verb} {r.resource}" + (f"/{r.subresource}" if r.subresource else "")
            by_kind[key] += 1
            if r.resource in TARGET_RESOURCES and r.verb in WRITES:
                target_writes += 1
        return {
            "total": sum(v for k, v in by_kind.items() if not k.startswith("watch")),
            "by_kind": by_kind,
            "target_writes": target_writes,
        }

    def held(self, members: list[int], *, rounds: int) -> dict[str, Any]:
        """While the incident holds its changes: target reads for drift (0 with watches) and the watch cache."""
        time.sleep(2)  # let the last watches sync
        mark = self.stack.harness.log.last_id
        rss_before = memory_kb(self.pids["operator"]).get("VmRSS", 0)
        time.sleep(rounds * POLL)
        reads = [
            r
            for r in self.stack.harness.log.entries(since=mark)
            if r.resource in TARGET_RESOURCES and r.verb in ("get", "list")
        ]
        samples = scrape(self.metrics_url)

        def gauge(name: str) -> float | None:
            for line in samples.splitlines():
                if line.startswith(name + " "):
                    return float(line.rpartition(" ")[2])
            return None

        watched = gauge("stampede_watched_targets")
        cache_bytes = gauge("stampede_watch_cache_bytes")
        return {
            "rounds": rounds,
            "target_reads": len(reads),
            "target_gets_per_poll": round(len(reads) / (rounds * len(members)), 3),
            "watched_targets": watched,
            "watch_cache_json_kib": round((cache_bytes or 0) / 1024, 1),
            "watch_cache_json_bytes_per_target": round((cache_bytes or 0) / watched, 1) if watched else None,
            "operator_threads": threads(self.pids["operator"]),
            "operator_rss_mb": round(rss_before / 1024, 1),
        }

    def reverts(self, members: list[int]) -> dict[str, Any]:
        """Revert one applied ConfigMap key per policy, as Argo CD self-heal would; time until it is re-applied."""
        log(f"scale: {len(members)} reverts, one at a time")
        latencies: list[float] = []
        missed = 0
        for i in members:
            ns, name = namespace_of(i), f"cfg-{i}"
            mark = self.stack.harness.log.last_id
            self.stack.core.patch_namespaced_config_map(name, ns, {"data": {"MODE": "normal"}})
            reverted = reapplied = None
            deadline = time.monotonic() + 3 * POLL
            while reapplied is None and time.monotonic() < deadline:
                for r in self.stack.harness.log.entries(since=mark, resource="configmaps", verb="patch", name=name):
                    if r.field_manager != "stampede-operator" and reverted is None:
                        reverted = r.time
                    elif r.field_manager == "stampede-operator" and reverted is not None:
                        reapplied = r.time
                        break
                time.sleep(0.02)
            if reverted is None or reapplied is None:
                missed += 1
            else:
                latencies.append(reapplied - reverted)
            time.sleep(0.5)
        return {
            "reverts": len(members),
            "not_reapplied_within_3_polls": missed,
            "revert_to_reapply_s": summary(latencies),
        }

    def incident(self, size: int, *, reverts: int = 20) -> dict[str, Any]:
        assert self.stack.exporter is not None and self.stack.prometheus is not None
        members = [i for i in range(self.count) if shard_of(i) == "s0"]
        assert len(members) == size, (len(members), size)
        shard = "s0"
        names = {f"p-{i}" for i in members}
        log(f"scale: incident on {len(members)} policies (shard {shard}) of {self.count}")
        before_ids = {n: s[3] for n, s in self.states().items() if n in names}
        mark = self.stack.harness.log.last_id
        sample = Sample.take(self.pids)
        t0 = time.time()
        self.stack.exporter.set("bench_hit_rate", BREACH, shard=shard)
        self.stack.prometheus.wait_for(f'sum(bench_hit_rate{{shard="{shard}"}})', lambda v: v == BREACH, timeout=20)
        visible = time.time()
        unmitigated = None
        try:
            self.wait(
                "all breached policies mitigated",
                lambda: all(s[0] == "Incident" and s[2] == 2 for n, s in self.states().items() if n in names),
                timeout=120,
            )
        except TimeoutError as timeout:  # still say how soon those that did act detected the breach
            unmitigated = str(timeout)
        mitigated = time.time()
        first_patch: dict[str, float] = {}
        for r in self.stack.harness.log.entries(since=mark, resource="configmaps", verb="patch"):
            first_patch.setdefault(r.name or "", r.time)
        detection = [first_patch[f"cfg-{i}"] - visible for i in members if f"cfg-{i}" in first_patch]
        if unmitigated is not None:
            return {
                "error": unmitigated,
                "policies_in_incident": len(members),
                "detected_within_120s": len(detection),
                "detection_s": summary(detection),
                "detection_bound_s": 15.0 + POLL + 1.0,
            }
        held = self.held(members, rounds=2)
        drift = self.reverts(members[:reverts]) if reverts else {}
        self.stack.exporter.set("bench_hit_rate", HEALTHY, shard=shard)
        self.stack.prometheus.wait_for(f'sum(bench_hit_rate{{shard="{shard}"}})', lambda v: v == HEALTHY, timeout=20)
        healthy = time.time()
        self.wait(
            "all breached policies closed",
            lambda: all(
                s[0] == "Idle" and s[3] and s[3] != before_ids.get(n) for n, s in self.states().items() if n in names
            ),
            timeout=180,
        )
        t1 = time.time()
        cpu = Sample.take(self.pids).minus(sample)
        minutes = (t1 - t0) / 60
        api = self.api_counts(since=mark, until=t1)
        target_writes_by_name = Counter(
            r.name
            for r in self.stack.harness.log.entries(since=mark)
            if r.resource in TARGET_RESOURCES and r.verb in WRITES
        )
        bystanders = [
            n
            for n in target_writes_by_name
            if n
            and n.removeprefix("cfg-").removeprefix("app-").isdigit()
            and int(n.removeprefix("cfg-").removeprefix("app-")) not in set(members)
        ]
        return {
            "policies_total": self.count,
            "policies_in_incident": len(members),
            "window_s": round(t1 - t0, 1),
            "visible_to_all_mitigated_s": round(mitigated - visible, 1),
            "healthy_to_all_closed_s": round(t1 - healthy, 1),
            "detection_s": summary(detection),
            # Detections a whole poll later than the earliest one: the firing tick came one round late.
            "late_tick_share": round(
                sum(1 for d in detection if d >= min(detection) + POLL / 2) / max(1, len(detection)), 3
            ),
            "api_requests": api["total"],
            "api_requests_per_min": round(api["total"] / minutes, 1),
            "api_requests_by_kind": dict(sorted(api["by_kind"].items())),
            "target_writes": api["target_writes"],
            "target_writes_per_incident_policy": round(api["target_writes"] / max(1, len(members)), 2),
            "target_writes_on_bystanders": len(bystanders),
            "operator_cpu_s": round(cpu["operator"], 2),
            "operator_cpu_s_per_round": round(cpu["operator"] / ((t1 - t0) / POLL), 3),
            "prometheus_requests": self.proxy.count(since=t0, until=t1),
            "detection_bound_s": 15.0 + POLL + 1.0,
            "held": held,
            "drift": drift,
        }


def run(
    *,
    levels: list[int],
    rounds: int,
    last_rounds: int,
    incident_size: int,
    namespaces: int = 50,
    preload: bool = False,
    reverts: int = 20,
    restart: bool = True,
) -> dict[str, Any]:
    """`preload`: create the last level's policies before the operator starts, and time it to all Ready."""
    set_shard_size(incident_size or 100)
    set_namespaces(namespaces)
    result: dict[str, Any] = {
        "poll_interval_s": POLL,
        "namespaces": NAMESPACES,
        "shard_size": SHARD,
        "signals_per_policy": 3,
        "levels": [],
        "machine": {"before": machine()},
    }
    metrics_port = free_port()
    args = ["--standalone", "-A", "--metrics-port", str(metrics_port)]
    with Stack(start_operator=False, operator_args=args) as stack:
        assert stack.prometheus is not None and stack.operator is not None and stack.exporter is not None
        proxy = CountingProxy(stack.prometheus.url)
        try:
            prepare(stack, policies=max(levels))
            if preload:
                log(f"scale: creating {max(levels)} policies and their targets before the operator starts")
                docs = objects_for(range(max(levels)))
                for start in range(0, len(docs), 500):
                    stack.harness.apply(docs[start : start + 500])
                pols = [policy_for(i) for i in range(max(levels))]
                for start in range(0, len(pols), 500):
                    stack.harness.apply(pols[start : start + 500])
            stack.operator.env["STAMPEDE_PROMETHEUS_URL"] = proxy.url
            started = time.monotonic()
            stack.operator.start()
            bench = Bench(stack, proxy, f"http://127.0.0.1:{metrics_port}/metrics")
            PROFILER.start(int(bench.pids["operator"]), "startup")
            if preload:
                bench.count = max(levels)
                result["startup"] = bench.start_loaded(started)
                PROFILER.stop()
            else:
                time.sleep(2)
                idle = {"operator_rss_mb": round(memory_kb(bench.pids["operator"]).get("VmRSS", 0) / 1024, 1)}
                result["operator_with_no_policies"] = idle
            for level in levels:
                entry: dict[str, Any] = {"policies": level}
                try:
                    if not preload:
                        entry["startup"] = bench.grow(level)
                    entry["steady"] = bench.steady(last_rounds if level == levels[-1] else rounds)
                except TimeoutError as error:
                    entry["error"] = str(error)
                    entry["operator_log_tail"] = stack.operator.logs()[-1500:]
                    result["levels"].append(entry)
                    log(f"scale: stopped at {level}: {error}")
                    break
                result["levels"].append(entry)
                log(f"scale: {level} policies: {json.dumps(entry['steady'])[:300]}")
            else:
                try:
                    if restart:
                        result["restart"] = bench.restart(levels[-1])
                        log(f"scale: restart: {json.dumps(result['restart'])}")
                except TimeoutError as error:
                    result["restart"] = {"error": str(error)}
                if incident_size:
                    try:
                        result["incident"] = bench.incident(incident_size, reverts=reverts)
                    except TimeoutError as error:
                        result["incident"] = {"error": str(error)}
            result["operator_peak_rss_mb"] = round(memory_kb(bench.pids["operator"]).get("VmHWM", 0) / 1024, 1)
            result["harness_process_peak_rss_mb"] = round(memory_kb("self").get("VmHWM", 0) / 1024, 1)
            warnings = [line for line in stack.operator.logs().splitlines() if "WARNING" in line or "ERROR" in line]
            result["operator_log_warnings"] = len(warnings)
            result["operator_log_warning_samples"] = sorted({w[24:200] for w in warnings})[:5]
        finally:
            PROFILER.stop()
            proxy.close()
    result["machine"]["after"] = machine()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="100,250,500,1000")
    parser.add_argument("--rounds", type=int, default=4, help="steady-state rounds at the intermediate levels")
    parser.add_argument("--last-rounds", type=int, default=8, help="steady-state rounds at the last level")
    parser.add_argument("--incident", type=int, default=100, help="policies driven into breach (0: none)")
    parser.add_argument("--namespaces", type=int, default=50, help="namespaces the policies are spread over")
    parser.add_argument("--preload", action="store_true", help="create every policy before the operator starts")
    parser.add_argument("--reverts", type=int, default=20, help="reverts during the incident (drift latency)")
    parser.add_argument(
        "--profile", default=None, help="directory for py-spy profiles of the operator (startup, steady)"
    )
    args = parser.parse_args(argv)
    PROFILER.directory = pathlib.Path(args.profile) if args.profile else None
    levels = [int(x) for x in args.levels.split(",")]
    result = run(
        levels=levels,
        rounds=args.rounds,
        last_rounds=args.last_rounds,
        incident_size=args.incident,
        namespaces=args.namespaces,
        preload=args.preload,
        reverts=args.reverts,
    )
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
