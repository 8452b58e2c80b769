"""How many requests per second the emulated API server (tests/harness) takes, and its CPU per request.

At 10,000 policies (`bench/scale.py --levels 10000 --preload`) the harness itself was the bottleneck: the
operator's status writes queued behind it. This measures the harness alone, without the operator or
Prometheus: it starts the harness as `tests/e2e/stack.py` does (a thread of this process, CRDs from
crds/, the default strictness), creates N StampedePolicies shaped like bench/scale.py's, opens one watch
on all policies (as the operator keeps one), and then sends, with the operator's own JSON client
(`stampede.actuators.kube.Kube`), in a process of its own:

- `PATCH .../stampedepolicies/NAME/status` (merge patch, a status like the operator's first write, with a
  new `lastPollTime` each round so that no write is a no-op), from 1 and from 16 threads;
- `GET .../stampedepolicies/NAME`, from 16 threads;
- `LIST` of one namespace's policies, and of all policies across namespaces.

Requests per second are wall-clock (they carry the machine's load); the CPU seconds per request are the
harness thread's own (/proc/self/task/<tid>/stat), the figure that does not depend on other processes.

    .venv/bin/python bench/harness_throughput.py [--policies 2000] [--namespaces 40] [--patches 2000]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import cProfile
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from functools import partial
from typing import Any

from common import ROOT, machine
from scale import namespace_of, policy_for, set_namespaces
from tests.e2e.stack import GROUP, PLURAL, VERSION
from tests.harness.server import HarnessThread

from stampede.actuators.kube import Kube, load_api_client

CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu(native_id: int) -> float:
    text = pathlib.Path(f"/proc/self/task/{native_id}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def status_for(i: int, round_: int, generation: int) -> dict[str, Any]:
    """The shape of the operator's first status write (policies.py sends the diff; the first is all of it)."""
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(seconds=round_ * 15 + i % 15)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "state": "Idle",
        "mode": "Enforce",
        "observedGeneration": generation,
        "lastPollTime": stamp,
        "signals": [
            {"name": "hitRate", "value": "0.95"},
            {"name": "db", "value": "10"},
            {"name": "queue", "value": str(3 + round_)},
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Polling",
                "message": "signals are read every 15s",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": generation,
            },
            {
                "type": "MetricsAvailable",
                "status": "True",
                "reason": "AllSignalsRead",
                "message": "all 3 signals returned a value",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
                "observedGeneration": generation,
            },
        ],
    }


class Watch:
    """One watch on all policies, read to the end like the operator's: the fan-out every write pays."""

    def __init__(self, url: str) -> None:
        self.events = 0
        self._response = urllib.request.urlopen(f"{url}/apis/{GROUP}/{VERSION}/{PLURAL}?watch=true", timeout=600)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._response:
                if line.strip():
                    self.events += 1
        except Exception:
            pass

    def close(self) -> None:
        self._response.close()


def requests_for(kind: str, *, kube: Kube, count: int, round_: int, policies: int, namespaces: int) -> list[Any]:
    """The calls of one measurement; names and namespaces as `scale.policy_for` makes them."""
    set_namespaces(namespaces)
    base = f"/apis/{GROUP}/{VERSION}"

    def where(i: int) -> str:
        return f"{base}/namespaces/{namespace_of(i % policies)}/{PLURAL}/p-{i % policies}"

    if kind == "patch":
        return [partial(kube.merge, f"{where(i)}/status", {"status": status_for(i, round_, 1)}) for i in range(count)]
    if kind == "get":
        return [partial(kube.get, where(i)) for i in range(count)]
    if kind == "list-namespace":
        return [partial(kube.get, f"{base}/namespaces/{namespace_of(i)}/{PLURAL}") for i in range(count)]
    if kind == "list-all":
        return [partial(kube.get, f"{base}/{PLURAL}") for _ in range(count)]
    raise ValueError(kind)


def client(spec: dict[str, Any]) -> None:
    """The load, in a process of its own: client threads in the harness's process would compete with it
    for the GIL, and the operator is another process too."""
    kube = Kube(load_api_client(config_file=spec["kubeconfig"]))
    calls = requests_for(
        spec["kind"],
        kube=kube,
        count=spec["count"],
        round_=spec["round"],
        policies=spec["policies"],
        namespaces=spec["namespaces"],
    )
    started = time.monotonic()
    if spec["threads"] == 1:
        for call in calls:
            call()
    else:
        with concurrent.futures.ThreadPoolExecutor(spec["threads"]) as pool:
            for future in [pool.submit(call) for call in calls]:
                future.result()
    print(json.dumps({"wall_s": time.monotonic() - started}))


def measure(name: str, harness_tid: int, spec: dict[str, Any], *, results: dict[str, Any]) -> dict[str, Any]:
    cpu0 = thread_cpu(harness_tid)
    out = subprocess.run(
        [sys.executable, __file__, "--client", json.dumps(spec)], check=True, capture_output=True, text=True
    ).stdout
    wall, cpu = json.loads(out.strip().splitlines()[-1])["wall_s"], thread_cpu(harness_tid) - cpu0
    count = spec["count"]
    row = {
        "requests": count,
        "threads": spec["threads"],
        "requests_per_s": round(count / wall, 1),
        "harness_cpu_ms_per_request": round(cpu / count * 1000, 3),
    }
    results[name] = row
    print(
        f"{name:<28} {row['requests']:>6} req  {row['threads']:>2} threads  "
        f"{row['requests_per_s']:>8.1f} req/s  {row['harness_cpu_ms_per_request']:>7.3f} ms harness CPU/req"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", type=int, default=2000)
    parser.add_argument("--namespaces", type=int, default=40)
    parser.add_argument("--patches", type=int, default=2000, help="status PATCHes per measurement")
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--lists", type=int, default=100, help="namespace LISTs (and a tenth as many of all)")
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--profile", help="cProfile the harness thread during the status PATCHes; pstats file")
    parser.add_argument("--client", help=argparse.SUPPRESS)  # internal: run one measurement's load
    args = parser.parse_args()
    if args.client:
        client(json.loads(args.client))
        return
    set_namespaces(args.namespaces)

    results: dict[str, Any] = {"policies": args.policies, "namespaces": args.namespaces, "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="harness-throughput-") as tmp:
        harness = HarnessThread(crds=[ROOT / "crds"], kubeconfig=pathlib.Path(tmp) / "kubeconfig")
        with harness:
            assert harness._thread is not None and harness._thread.native_id is not None
            tid = harness._thread.native_id
            started = time.monotonic()
            harness.apply(
                [
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"bench-{n:02d}"}}
                    for n in range(args.namespaces)
                ]
            )
            policies = [policy_for(i) for i in range(args.policies)]
            for start in range(0, len(policies), 500):
                harness.apply(policies[start : start + 500])
            print(f"created {args.policies} policies in {time.monotonic() - started:.1f}s")
            watch = Watch(harness.url)
            while watch.events < args.policies:  # the initial ADDED events first
                time.sleep(0.05)
            events0 = watch.events
            common = {
                "kubeconfig": str(harness.kubeconfig),
                "policies": args.policies,
                "namespaces": args.namespaces,
                "round": 0,
            }
            profiler = cProfile.Profile(time.thread_time) if args.profile else None
            if profiler is not None:
                harness.call(profiler.enable)
            patches = {**common, "kind": "patch", "count": args.patches}
            measure("patch status, 1 thread", tid, {**patches, "threads": 1, "round": 1}, results=results)
            measure("patch status, 16 threads", tid, {**patches, "threads": 16, "round": 2}, results=results)
            if profiler is not None:
                harness.call(profiler.disable)
                profiler.dump_stats(args.profile)
            measure(
                "get, 16 threads", tid, {**common, "kind": "get", "count": args.gets, "threads": 16}, results=results
            )
            measure(
                f"list one namespace ({args.policies // args.namespaces})",
                tid,
                {**common, "kind": "list-namespace", "count": args.lists, "threads": 4},
                results=results,
            )
            measure(
                f"list all ({args.policies})",
                tid,
                {**common, "kind": "list-all", "count": max(1, args.lists // 10), "threads": 1},
                results=results,
            )
            deadline = time.monotonic() + 30
            while watch.events - events0 < 2 * args.patches and time.monotonic() < deadline:
                time.sleep(0.1)
            results["watch_events"] = watch.events - events0
            print(f"watch events seen for the {2 * args.patches} patches: {watch.events - events0}")
            watch.close()
            errors = harness.call(lambda: len(harness.log.errors()))
            results["errors"] = errors
            print(f"request errors in the harness log: {errors}")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
