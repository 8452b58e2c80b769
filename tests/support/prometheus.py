"""A real Prometheus and an exporter it scrapes, for integration tests, e2e tests, the demo and benchmarks.

Mocked Prometheus answers are what let "unknown" silently become 0, so the suites talk to Debian's real
prometheus binary instead. This module has no pytest dependency so the demo and benchmarks can use it:

    with Exporter() as exporter, PrometheusServer(exporters=[exporter]) as prom:
        exporter.set("aurum_db_connections_active", 195)
        prom.wait_for("aurum_db_connections_active", lambda v: v == 195)
"""

from __future__ import annotations

import atexit
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from tests.support.closing import Closing

__all__ = ["Exporter", "PrometheusMissing", "PrometheusServer", "find_prometheus", "free_port"]

_MISSING_HINT = "prometheus not installed: run make test which installs Debian's prometheus"


class PrometheusMissing(RuntimeError):
    """The prometheus/promtool binaries are absent; tests must fail, never skip (CI would go green)."""


def find_prometheus(binary: str = "prometheus") -> str:
    """Path of `prometheus` or `promtool`, or a clear failure telling how to get it."""
    found = shutil.which(binary) or (f"/usr/bin/{binary}" if os.access(f"/usr/bin/{binary}", os.X_OK) else None)
    if found is None:
        raise PrometheusMissing(f"{binary} not found. {_MISSING_HINT}")
    return found


_PORTS = random.SystemRandom()  # not `random`: a test that seeds it must not make two workers draw alike
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_CLAIMS = Path(tempfile.gettempdir()) / "stampede-test-ports"


def _claim(port: int) -> bool:
    """Reserve a port for this process's lifetime among every process using this module (a file per port).

    A claim whose process is gone is taken over; this process's claims go when it exits.
    """
    _CLAIMS.mkdir(exist_ok=True)
    claim = _CLAIMS / str(port)
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _alive(claim):
                return False
            claim.unlink(missing_ok=True)  # left by a process that died without its exit hook
            continue
        with os.fdopen(fd, "w") as out:
            out.write(str(os.getpid()))
        if not _claimed:
            atexit.register(_release_claims)
        _claimed.append(claim)
        return True
    return False


def _alive(claim: Path) -> bool:
    try:
        pid = int(claim.read_text() or "0")
    except (OSError, ValueError):
        return True  # being written right now by its owner
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _release_claims() -> None:
    for claim in _claimed:
        claim.unlink(missing_ok=True)


_claimed: list[Path] = []


def free_port() -> int:
    """A loopback port that was free a moment ago, below the kernel's ephemeral range.

    Not `bind(0)`: that hands out a port of the ephemeral range (`ip_local_port_range`), which every
    outgoing connection on the machine draws from too, and under load (two test workers, a benchmark
    beside them) a client socket took such a port between this call and the server's own bind
    (`OSError: [Errno 98] Address already in use` at the operator's start). Below that range only
    servers that ask for a port take one: a random one, tried with a bind and claimed machine-wide
    (`_claim`), so neither this process nor another test process (the other pytest worker, a benchmark,
    a second checkout's suite, run beside CI on this shared machine) hands it out again while this one lives.
    """
    high = _ephemeral_low() - 1
    for _ in range(100):
        port = _PORTS.randint(20000, high)
        if port in _handed_out or not _claim(port):
            continue
        _handed_out.add(port)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded machine: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Exporter(Closing):
    """Metrics that a test sets directly, served on 127.0.0.1 for Prometheus to scrape.

    Metric families are created on first use; a family's label names are fixed by its first use.
    """

    def __init__(self, *, job: str = "exporter") -> None:
        self.job = job
        self.registry = CollectorRegistry()
        self._gauges: dict[str, Gauge] = {}
        self._counters: dict[str, Counter] = {}
        self._server, self._thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self.port = int(self._server.server_port)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, name: str, value: float, **labels: str) -> None:
        """Sets gauge `name{labels}` to `value`."""
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = self._gauges[name] = Gauge(name, name, sorted(labels), registry=self.registry)
        (gauge.labels(**labels) if labels else gauge).set(value)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Increments counter `name` (exposed as `name` with a `_total` suffix, as Prometheus requires)."""
        base = name.removesuffix("_total")
        counter = self._counters.get(base)
        if counter is None:
            counter = self._counters[base] = Counter(base, base, sorted(labels), registry=self.registry)
        (counter.labels(**labels) if labels else counter).inc(amount)

    def remove(self, name: str, **labels: str) -> None:
        """Stops exposing one labelled series (or, without labels, the whole gauge's samples)."""
        gauge = self._gauges.get(name)
        if gauge is None:
            return
        if labels:
            gauge.remove(*(labels[key] for key in sorted(labels)))
        else:
            self.registry.unregister(gauge)
            del self._gauges[name]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _equals(expected: float) -> Callable[[float | None], bool]:
    def check(value: float | None) -> bool:
        return value == expected

    return check


def _config_yaml(exporters: Iterable[Exporter]) -> str:
    # JSON is valid YAML, which saves a PyYAML dependency and quoting mistakes.
    jobs: dict[str, list[str]] = {}
    for exporter in exporters:
        jobs.setdefault(exporter.job, []).append(exporter.target)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        # Lets replay tests append samples older than the head (2.39+ supports it).
        "storage": {"tsdb": {"out_of_order_time_window": "1h"}},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in sorted(jobs.items())
        ],
    }
    return json.dumps(config, indent=2)


class PrometheusServer(Closing):
    """Runs /usr/bin/prometheus on a free loopback port with a throwaway config and TSDB.

    `backfill_openmetrics` (OpenMetrics text, timestamps in seconds, ending with "# EOF") is turned into
    TSDB blocks with promtool before the server starts, for replay tests that need exact history.
    Startup waits until the server is ready and, when there are exporters, until each job's first scrape
    has landed (about 5-6 s: Prometheus throttles target discovery updates to every 5 s).
    """

    def __init__(
        self,
        *,
        exporters: Iterable[Exporter] = (),
        backfill_openmetrics: str | None = None,
        port: int | None = None,
        start_timeout: float = 30.0,
        extra_args: Iterable[str] = (),
    ) -> None:
        self.binary = find_prometheus("prometheus")
        self.exporters = list(exporters)
        self.port = port or free_port()
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args)
        self._tmp = tempfile.TemporaryDirectory(prefix="stampede-prometheus-")
        self.workdir = Path(self._tmp.name)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir()
        self.config_path = self.workdir / "prometheus.yml"
        self.config_path.write_text(_config_yaml(self.exporters))
        self.log_path = self.workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None
        if backfill_openmetrics is not None:
            self._backfill(backfill_openmetrics)
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Starts (or restarts) the server on the same port and data dir, waiting until it serves data."""
        if self.running:
            return
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.data_dir}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-remote-write-receiver",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        started_at = time.time()
        try:
            self._wait_ready()
            jobs: dict[str, int] = {}
            for exporter in self.exporters:
                jobs[exporter.job] = jobs.get(exporter.job, 0) + 1
            for job, targets in sorted(jobs.items()):
                # After a restart the previous run's `up` samples are still within the lookback window, so
                # only scrapes that happened after this start count.
                selector = f'up{{job="{job}"}}'
                fresh = f"count(timestamp({selector}) >= {started_at:.3f} and on(instance) {selector} == 1)"
                self.wait_for(fresh, _equals(targets), timeout=self.start_timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; also how tests simulate a Prometheus outage."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)

    def kill(self) -> None:
        """An abrupt crash (SIGKILL), for tests that need Prometheus to vanish mid-incident."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    # -- queries ------------------------------------------------------------------------------------------

    def api(self, path: str, params: Mapping[str, str] | None = None, *, timeout: float = 5.0) -> object:
        """GETs an API path and returns its `data` (stdlib only, independent of the code under test)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=timeout) as response:
            payload = json.load(response)
        if payload.get("status") != "success":
            raise RuntimeError(f"Prometheus API error for {path}: {payload}")
        return payload["data"]

    def query(self, promql: str, *, at: float | None = None) -> float | None:
        """The value of a single-series or scalar instant query; None when it has no (single) value."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("/api/v1/query", params)
        assert isinstance(data, dict)
        result = data["result"]
        if data["resultType"] == "scalar":
            return float(result[1])
        if data["resultType"] == "vector" and len(result) == 1:
            return float(result[0]["value"][1])
        return None

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[float | None], bool] = lambda value: value is not None,
        *,
        timeout: float = 15.0,
        interval: float = 0.2,
    ) -> float | None:
        """Polls `promql` until `predicate(value)` holds; returns that value or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        last: float | str | None = "never queried"
        while True:
            try:
                value = self.query(promql)
            except (OSError, RuntimeError) as exc:
                last = f"error: {exc}"
            else:
                if predicate(value):
                    return value
                last = value
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited ({self._process.returncode}); log:\n{self._log_tail()}")
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{promql!r} did not satisfy the predicate within {timeout}s (last: {last})")
            time.sleep(interval)

    # -- internals ----------------------------------------------------------------------------------------

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise RuntimeError(f"prometheus exited during startup ({code}); log:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"prometheus not ready within {self.start_timeout}s; log:\n{self._log_tail()}")
            time.sleep(0.1)

    def _backfill(self, openmetrics: str) -> None:
        if not openmetrics.rstrip().endswith("# EOF"):
            raise ValueError('OpenMetrics backfill must end with "# EOF"')
        source = self.workdir / "backfill.om"
        source.write_text(openmetrics if openmetrics.endswith("\n") else openmetrics + "\n")
        result = subprocess.run(
            [
                find_prometheus("promtool"),
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                str(source),
                str(self.data_dir),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"promtool backfill failed:\n{result.stdout}\n{result.stderr}")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"


def openmetrics_gauge(name: str, samples: Mapping[str, Iterable[tuple[float, float]]]) -> str:
    """OpenMetrics text for one gauge family: {label-string: [(timestamp_seconds, value), ...]}.

    The label string is the inside of the braces, e.g. 'series="a"' ('' for no labels). Ends with "# EOF"
    so it can be passed straight to PrometheusServer(backfill_openmetrics=...).
    """
    lines = [f"# TYPE {name} gauge"]
    for labels, points in samples.items():
        selector = f"{name}{{{labels}}}" if labels else name
        lines.extend(f"{selector} {value!r} {timestamp:.3f}" for timestamp, value in sorted(points))
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
