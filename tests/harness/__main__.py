"""Standalone entry point: `python -m tests.harness --port 0 --crds crds/ --seed objs.yaml`.

Lets e2e runs, benchmarks and humans (kubectl) talk to the emulated API server from other processes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import signal
import sys

from .server import Harness
from .store import Strictness


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.harness", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--crds", action="append", default=[], help="CRD YAML file or directory (repeatable)")
    parser.add_argument("--seed", action="append", default=[], help="multi-document YAML of objects (repeatable)")
    parser.add_argument("--kubeconfig", help="write a kubeconfig pointing at the server here")
    parser.add_argument("--auto-namespaces", action="store_true", help="create missing namespaces on demand")
    parser.add_argument("--no-controllers", action="store_true", help="do not simulate workload status")
    parser.add_argument("--lenient", action="store_true", help="accept what a real API server refuses")
    parser.add_argument(
        "--strict-everything",
        action="store_true",
        help="also the admission plugin and the asynchronous controllers that are off by default",
    )
    parser.add_argument("--bookmark-interval", type=float, default=5.0)
    parser.add_argument("--history-size", type=int, default=10_000)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    harness = Harness(
        host=args.host,
        port=args.port,
        crds=args.crds,
        seed=args.seed,
        kubeconfig=args.kubeconfig,
        auto_namespaces=args.auto_namespaces,
        simulate_controllers=not args.no_controllers,
        bookmark_interval=args.bookmark_interval,
        history_size=args.history_size,
        # Neither flag: the defaults plus whatever HARNESS_STRICT names (Strictness.from_env).
        strictness=Strictness.lenient()
        if args.lenient
        else Strictness.everything()
        if args.strict_everything
        else None,
    )
    async with harness:
        print(json.dumps({"url": harness.url, "kubeconfig": str(harness.kubeconfig or "")}), flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.crds and pathlib.Path("crds").is_dir():  # the repo's CRDs when run from the repo root
        args.crds = ["crds"]
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
