"""Bench only: tracemalloc in the operator process, snapshots on request (`bench/memory.py`).

Put on the operator's PYTHONPATH with STAMPEDE_BENCH_TRACEMALLOC=DIR; nothing in the operator's code knows.
A thread watches DIR for `NAME.request` and answers with `NAME.snapshot` (tracemalloc's own format), so the
operator's signal handling and event loop are left alone.
"""

from __future__ import annotations

import gc
import os
import pathlib
import threading
import time
import tracemalloc


def _serve(directory: pathlib.Path) -> None:
    while True:
        for request in sorted(directory.glob("*.request")):
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
            target = request.with_suffix(".snapshot")
            snapshot.dump(str(target.with_suffix(".tmp")))
            target.with_suffix(".tmp").rename(target)
            request.unlink()
        time.sleep(0.5)


_DIRECTORY = os.environ.get("STAMPEDE_BENCH_TRACEMALLOC")
if _DIRECTORY:
    tracemalloc.start(int(os.environ.get("STAMPEDE_BENCH_TRACEMALLOC_FRAMES", "12")))
    threading.Thread(target=_serve, args=(pathlib.Path(_DIRECTORY),), daemon=True, name="bench-tracemalloc").start()
