"""The operator's own /metrics during an incident, and the runbook's messages reaching a webhook receiver."""

from __future__ import annotations

import base64
import json
import select
import socket
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import policies
from tests.e2e.conftest import HEALTHY_HIT_RATE, Case


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    for (sample, sample_labels), number in samples.items():
        if sample == name and set(labels.items()) <= sample_labels:
            return number
    return None


class Receiver:
    """A Slack-compatible incoming webhook on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        received = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self) -> list[str]:
        return [m["text"] for m in self.messages]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.close()


class HangingReceiver:
    """A webhook that reads each message and never answers while its sender still waits.

    It counts how many senders were waiting at once: a runner that awaited each post before going on
    could never have two waiting (its sender gives up, closing the connection, before the next post).
    A sender's closed connection is seen by peeking at its socket when the next message arrives, so the
    count depends on the order of events, not on how fast anything is.
    """

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.most_waiting = 0
        self.release = threading.Event()
        lock = threading.Lock()
        waiting: list[socket.socket] = []
        outer = self

        def still_waiting(sock: socket.socket) -> bool:
            readable, _, _ = select.select([sock], [], [], 0)
            return not readable or sock.recv(1, socket.MSG_PEEK) != b""

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                text = json.loads(self.rfile.read(length))["text"]
                with lock:
                    waiting[:] = [sock for sock in waiting if still_waiting(sock)]
                    waiting.append(self.connection)
                    outer.texts.append(text)
                    outer.most_waiting = max(outer.most_waiting, len(waiting))
                while not self.release.wait(0.05) and still_waiting(self.connection):
                    pass
                with lock:
                    if self.connection in waiting:
                        waiting.remove(self.connection)
                if outer.release.is_set():
                    self.send_response(200)
                    self.end_headers()

            @property
            def release(self) -> threading.Event:
                return outer.release

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000/slow-secret-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hanging_receiver() -> Iterator[HangingReceiver]:
    running = HangingReceiver()
    yield running
    running.close()


def webhook_secret(case: Case, name: str, url: str) -> None:
    case.stack.harness.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": name,
                    "namespace": case.ns,
                    "labels": {"stampede.aurum.io/credentials": "true"},
                },
                "data": {"url": base64.b64encode(url.encode()).decode()},
            }
        ]
    )


def test_metrics_show_the_incident_its_phase_signals_and_actions(case: Case, metrics_port: int) -> None:
    case.set(hit_rate=HEALTHY_HIT_RATE)
    case.create_ready("metered")
    labels = {"namespace": case.ns, "policy": "metered"}
    assert value(scrape(metrics_port), "stampede_incident_active", **labels) == 0
    case.set(hit_rate=0.2)
    case.wait_status("metered", "phase stabilization", lambda s: s.get("phase") == "stabilization")
    samples = scrape(metrics_port)
    assert value(samples, "stampede_incident_active", **labels) == 1
    assert value(samples, "stampede_incidents_total", **labels, severity="P1") == 1
    assert value(samples, "stampede_phase_info", **labels, phase="stabilization") == 1
    assert value(samples, "stampede_phase_info", **labels, phase="immediate") is None
    assert value(samples, "stampede_signal_value", **labels, signal="hitRate") == pytest.approx(0.2)
    assert (value(samples, "stampede_actions_total", **labels, kind="ConfigMap", result="applied") or 0) >= 2
    assert (value(samples, "stampede_poll_duration_seconds_count", **labels) or 0) > 0
    case.set(hit_rate=HEALTHY_HIT_RATE)
    case.wait_status("metered", "closed", lambda s: s.get("state") == "Idle" and s.get("history"))
    samples = scrape(metrics_port)
    assert value(samples, "stampede_incident_active", **labels) == 0
    assert (value(samples, "stampede_rollbacks_total", **labels) or 0) >= 3
    assert value(samples, "stampede_incident_duration_seconds_count", **labels) == 1


def test_unknown_signals_are_counted_by_kind_and_their_status_error_starts_with_the_kind(
    case: Case, metrics_port: int
) -> None:
    signals = [
        {"name": "hitRate", "query": policies.hit_rate_query(case.label)},
        {"name": "db", "query": f'e2e_no_such_metric{{case="{case.label}"}}'},
        {"name": "typo", "query": "sum(e2e_db"},
    ]
    case.create("blind", signals=signals)

    def unknown_twice(status: dict[str, Any]) -> bool:
        found = {s["name"]: s for s in status.get("signals") or []}
        counted = scrape(metrics_port)
        return all(found.get(name, {}).get("value") == "unknown" for name in ("db", "typo")) and all(
            (value(counted, "stampede_prometheus_errors_total", namespace=case.ns, signal=name) or 0) >= 2
            for name in ("db", "typo")
        )

    status = case.wait_status("blind", "db and typo unknown, counted twice", unknown_twice)
    found = {s["name"]: s for s in status["signals"]}
    assert found["db"]["error"].startswith("[empty] ")
    assert found["typo"]["error"].startswith("[http_4xx] ")
    assert found["hitRate"].get("error") is None
    samples = scrape(metrics_port)
    labels = {"namespace": case.ns, "policy": "blind"}
    assert (value(samples, "stampede_prometheus_errors_total", **labels, signal="db", kind="empty") or 0) >= 2
    assert (value(samples, "stampede_prometheus_errors_total", **labels, signal="typo", kind="http_4xx") or 0) >= 2
    assert value(samples, "stampede_prometheus_errors_total", **labels, signal="db", kind="http_4xx") is None
    assert value(samples, "stampede_prometheus_errors_total", **labels, signal="hitRate") is None


def test_the_runbook_messages_reach_the_webhook_from_open_to_resolved(case: Case, receiver: Receiver) -> None:
    webhook_secret(case, "team-webhook", receiver.url)
    case.create_ready("notify", notifications={"webhook": {"secretRef": {"name": "team-webhook", "key": "url"}}})
    case.set(hit_rate=0.2)
    case.wait_status("notify", "phase stabilization", lambda s: s.get("phase") == "stabilization")
    case.set(hit_rate=HEALTHY_HIT_RATE)
    case.wait_status("notify", "closed", lambda s: s.get("state") == "Idle" and s.get("history"))
    case.stack.wait_for("the resolved message", lambda: any("resolved" in t for t in receiver.texts()), timeout=20)
    texts = receiver.texts()
    assert "Cache stampede detected" in texts[0]
    assert sum("Mitigation progress" in t for t in texts) == 2  # one per phase entered
    assert "Actions taken (all rolled back):* api-config, scale-api, cache-lazy, warm-cache" in texts[-1]
    assert not case.events("notify", "NotificationFailed")


def test_a_failing_webhook_becomes_an_event_and_never_blocks_remediation(
    case: Case, hanging_receiver: HangingReceiver
) -> None:
    webhook_secret(case, "slow-webhook", hanging_receiver.url)
    case.create_ready(
        "unheard",
        notifications={"webhook": {"secretRef": {"name": "slow-webhook", "key": "url"}}},
        phases=[policies.phase_one(), policies.phase_two(after="1s")],
    )
    before = case.configmap("aurum-api-config")["data"]
    case.set(hit_rate=0.2)
    case.wait_status(
        "unheard",
        "both phases applied",
        lambda s: {"api-config", "cache-lazy"} <= {c["action"] for c in s.get("applied") or []},
    )
    assert case.configmap("aurum-api-config")["data"] != before
    assert case.configmap(policies.CACHE_CONFIG)["data"]["CACHE_REFRESH_STRATEGY"] == "lazy"
    case.stack.wait_for("two messages", lambda: len(hanging_receiver.texts) >= 2, timeout=30)
    assert "Cache stampede detected" in hanging_receiver.texts[0]
    # Phase 2's message was posted while the sender of the first one still waited for an answer.
    assert hanging_receiver.most_waiting >= 2
    case.stack.wait_for("NotificationFailed", lambda: case.events("unheard", "NotificationFailed"), timeout=30)
    failed = case.events("unheard", "NotificationFailed")[0]
    assert "did not answer" in failed.message
    assert "slow-secret-path" not in failed.message
