"""What the benchmarks share: process counters from /proc, a counting Prometheus proxy, /metrics parsing.

The machine running the benchmarks is small (2 cores) and often busy with other suites, so the
benchmarks report counts and CPU seconds (from /proc/<pid>/stat) rather than wall-clock where they
can, and record the load average and other busy processes next to every figure.
"""

from __future__ import annotations

import http.client
import http.server
import os
import socketserver
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for entry in (str(ROOT / "operator"), str(ROOT)):
    if entry not in sys.path:
        sys.path.insert(0, entry)

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- processes ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


def threads(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def machine() -> dict[str, Any]:
    """Load average and the other busy processes right now: the context every figure needs."""
    busy = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if any(word in cmd for word in ("pytest", "stampede run", "prometheus --config")):
            busy.append(cmd[:120])
    return {
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "other_test_processes": len(busy),
        "other_processes_sample": busy[:6],
    }


@dataclass
class Sample:
    """CPU seconds of the processes that matter, at one moment."""

    at: float
    cpu: dict[str, float]

    @classmethod
    def take(cls, pids: dict[str, int | str]) -> Sample:
        cpu = {}
        for name, pid in pids.items():
            try:
                cpu[name] = cpu_seconds(pid)
            except OSError:
                cpu[name] = float("nan")
        return cls(at=time.monotonic(), cpu=cpu)

    def minus(self, earlier: Sample) -> dict[str, float]:
        return {name: self.cpu[name] - earlier.cpu[name] for name in self.cpu}


# -- a counting proxy in front of Prometheus -----------------------------------------------------------


@dataclass
class ProxyRecord:
    time: float
    path: str


@dataclass
class CountingProxy:
    """A tiny HTTP/1.1 forwarder that records every request: Prometheus's request count, seen from outside.

    The operator is pointed at this proxy; the benchmark itself talks to Prometheus directly, so only the
    operator's queries are counted.
    """

    upstream: str
    records: list[ProxyRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        host_port = self.upstream.removeprefix("http://").rstrip("/")
        host, _, port = host_port.partition(":")
        proxy = self
        local = threading.local()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                proxy.records.append(ProxyRecord(time=time.time(), path=self.path))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                for attempt in range(2):
                    conn = getattr(local, "conn", None)
                    if conn is None:
                        conn = local.conn = http.client.HTTPConnection(host, int(port), timeout=30)
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        answer = conn.getresponse()
                        data = answer.read()
                        break
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        local.conn = None
                        if attempt:
                            self.send_error(502)
                            return
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="prom-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, *, since: float = 0.0, until: float = float("inf"), prefix: str = "/api/v1/query") -> int:
        return sum(1 for r in list(self.records) if since <= r.time < until and r.path.startswith(prefix + "?"))

    def queries(self, *, since: float, until: float) -> list[ProxyRecord]:
        return [r for r in list(self.records) if since <= r.time < until and r.path.startswith("/api/v1/query?")]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- the operator's /metrics -----------------------------------------------------------------------------


def scrape(url: str) -> str:
    # /metrics of 10,000 policies is ~20 MB of text, slow to render on a loaded machine.
    with urllib.request.urlopen(url, timeout=90) as response:
        return str(response.read().decode())


def histogram_totals(text: str, name: str) -> dict[str, Any]:
    """Sum of a labelled histogram over all its series: count, sum and cumulative buckets."""
    buckets: dict[float, float] = {}
    total = {"count": 0.0, "sum": 0.0}
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        metric, _, value = line.rpartition(" ")
        if metric.startswith(name + "_bucket{"):
            le = metric.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(value)
        elif metric.startswith(name + "_count"):
            total["count"] += float(value)
        elif metric.startswith(name + "_sum"):
            total["sum"] += float(value)
    return {**total, "buckets": dict(sorted(buckets.items()))}


def histogram_delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    return {
        "count": after["count"] - before["count"],
        "sum": after["sum"] - before["sum"],
        "buckets": {b: after["buckets"].get(b, 0.0) - before["buckets"].get(b, 0.0) for b in after["buckets"]},
    }


def histogram_quantile(hist: dict[str, Any], q: float) -> float | None:
    """Upper bucket bound containing the q-quantile (as Prometheus's histogram_quantile, without interpolation)."""
    count = hist["count"]
    if not count:
        return None
    for bound, cumulative in sorted(hist["buckets"].items()):
        if cumulative >= q * count:
            return bound
    return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "min": round(min(values), 3),
        "p50": round(percentile(values, 0.5) or 0, 3),
        "p95": round(percentile(values, 0.95) or 0, 3),
        "max": round(max(values), 3),
        "mean": round(sum(values) / len(values), 3),
    }


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
