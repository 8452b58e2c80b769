"""Where the operator's memory per policy goes: tracemalloc snapshots before and after adding N policies.

    .venv/bin/python bench/memory.py [--policies 1000] [--namespaces 50] [--top 25] [--rss-only]

The operator runs as in `bench/scale.py` (harness, real Prometheus), with `bench/tracemalloc_hook` on its
PYTHONPATH: tracemalloc is on only in this benchmark. After the operator has started with no policy, a
snapshot; then N policies are added, every one polls Ready, two more rounds pass, a second snapshot. The
difference, divided by N, is the Python heap per policy, attributed to the innermost frame of our code
(`stampede/...`) on each allocation's stack, else to the innermost kopf frame, else to the allocating
file. RSS per policy is given beside it (RSS also holds the allocator's free lists and fragmentation,
which tracemalloc does not see). tracemalloc itself slows the operator down (and quadruples its RSS); CPU figures
from this run mean nothing. `--rss-only` runs the same steps without tracemalloc and reports RSS alone: the
figure comparable to production.

Frames that only pass an allocation through (`Model.model_copy`, which shares the copy's fields set) are
skipped, so a copy is attributed to the code that asked for it.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import pathlib
import tempfile
import time
import tracemalloc
from collections import Counter
from typing import Any

from common import CountingProxy, log, memory_kb
from scale import (
    POLL,
    SHARD,
    Bench,
    prepare,
    set_namespaces,
    set_shard_size,
)
from tests.e2e.stack import Stack
from tests.support.prometheus import free_port

HOOK = pathlib.Path(__file__).resolve().parent / "tracemalloc_hook"
PACKAGES = ("stampede", "kopf", "pydantic", "prometheus_client", "aiohttp", "asyncio", "json", "urllib3", "http")


def snapshot(directory: pathlib.Path, name: str, *, timeout: float = 300) -> tracemalloc.Snapshot:
    (directory / f"{name}.request").touch()
    target = directory / f"{name}.snapshot"
    deadline = time.monotonic() + timeout
    while not target.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {name} snapshot from the operator")
        time.sleep(0.5)
    return tracemalloc.Snapshot.load(str(target))


@functools.cache
def pass_through() -> frozenset[tuple[str, int]]:
    """(file, line) of our frames that only pass an allocation on to pydantic: attributed to their caller."""
    from stampede.api.spec import Model

    lines, start = inspect.getsourcelines(Model.model_copy)
    return frozenset(("stampede/api/spec.py", n) for n in range(start, start + len(lines)))


def owner(traceback: tracemalloc.Traceback) -> tuple[str, str]:
    """(package, file:line) of the innermost frame of ours, else kopf's, else the allocating frame."""
    frames = list(reversed(traceback))  # most recent first
    skipped = pass_through()
    for mark, package in (("/stampede/", "stampede"), ("/kopf/", "kopf")):
        for frame in frames:
            if mark in frame.filename:
                if (frame.filename[frame.filename.rindex(mark) + 1 :], frame.lineno) in skipped:
                    continue
                short = frame.filename[frame.filename.rindex(mark) + 1 :]
                return package, f"{short}:{frame.lineno}"
    top = frames[0]
    package = next((p for p in PACKAGES if f"/{p}/" in top.filename or top.filename.endswith(f"/{p}.py")), "other")
    return package, f"{top.filename.rsplit('/site-packages/', 1)[-1]}:{top.lineno}"


def analyse(empty: tracemalloc.Snapshot, loaded: tracemalloc.Snapshot, *, policies: int, top: int) -> dict[str, Any]:
    by_site: Counter[tuple[str, str]] = Counter()
    by_package: Counter[str] = Counter()
    for stat in loaded.compare_to(empty, "traceback"):
        package, site = owner(stat.traceback)
        by_site[(package, site)] += stat.size_diff
        by_package[package] += stat.size_diff
    total = sum(by_package.values())

    def kib(n: float) -> float:
        return round(n / 1024 / policies, 2)

    return {
        "traced_kib_per_policy": kib(total),
        "by_package_kib_per_policy": {p: kib(n) for p, n in by_package.most_common()},
        "top_sites_kib_per_policy": [
            {"package": p, "site": s, "kib": kib(n)} for (p, s), n in by_site.most_common(top)
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--frames", type=int, default=6, help="frames kept per allocation")
    parser.add_argument("--rss-only", action="store_true", help="no tracemalloc: RSS per policy alone")
    args = parser.parse_args(argv)
    set_shard_size(SHARD)
    set_namespaces(args.namespaces)
    metrics_port = free_port()
    result: dict[str, Any] = {"policies": args.policies, "namespaces": args.namespaces}
    with (
        tempfile.TemporaryDirectory(prefix="stampede-tracemalloc-") as snaps,
        Stack(start_operator=False, operator_args=["--standalone", "-A", "--metrics-port", str(metrics_port)]) as stack,
    ):
        assert stack.prometheus is not None and stack.operator is not None and stack.exporter is not None
        directory = pathlib.Path(snaps)
        proxy = CountingProxy(stack.prometheus.url)
        try:
            prepare(stack, policies=args.policies)
            stack.operator.env["STAMPEDE_PROMETHEUS_URL"] = proxy.url
            if not args.rss_only:
                stack.operator.env.update(
                    {
                        "PYTHONPATH": os.pathsep.join(filter(None, [str(HOOK), os.environ.get("PYTHONPATH")])),
                        "STAMPEDE_BENCH_TRACEMALLOC": snaps,
                        "STAMPEDE_BENCH_TRACEMALLOC_FRAMES": str(args.frames),
                    }
                )
            stack.operator.start()
            bench = Bench(stack, proxy, f"http://127.0.0.1:{metrics_port}/metrics")
            time.sleep(5)
            empty = None if args.rss_only else snapshot(directory, "empty")
            rss_empty = memory_kb(bench.pids["operator"]).get("VmRSS", 0)
            try:
                result["grow"] = bench.grow(args.policies)
            except TimeoutError as error:  # tracemalloc slows the operator; measure what is there
                result["grow"] = {"error": str(error)}
            ready = sum(1 for s in bench.states().values() if s[1])
            result["ready_at_snapshot"] = ready
            log(f"memory: {ready} of {args.policies} policies Ready; two more rounds")
            time.sleep(2 * POLL)
            loaded = None if args.rss_only else snapshot(directory, "loaded")
            rss = memory_kb(bench.pids["operator"])
            rss_loaded, rss_peak = rss.get("VmRSS", 0), rss.get("VmHWM", 0)
        finally:
            proxy.close()
    result["rss_kib_per_policy"] = round((rss_loaded - rss_empty) / args.policies, 1)
    result["rss_mib"] = {
        "empty": round(rss_empty / 1024, 1),
        "loaded": round(rss_loaded / 1024, 1),
        "peak": round(rss_peak / 1024, 1),
    }
    if empty is not None and loaded is not None:
        result.update(analyse(empty, loaded, policies=args.policies, top=args.top))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
