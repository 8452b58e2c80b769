"""`make demo` / `python -m demo`: one whole cache-stampede incident on this machine, in about two minutes.

The README's first command must work on a fresh machine with no cluster, and it must prove
something rather than print a story: it runs the real `stampede run` against a real Prometheus
scraping a synthetic Aurum workload, with only the Kubernetes API server emulated (tests/harness),
and exits non-zero unless the incident opened, rolled back and left every target exactly as before.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.e2e.stack import REPO, Stack, load_yaml

from demo.workload import RECOVERY, STAMPEDE, Workload

NAMESPACE = "aurum-demo"
POLICY = "aurum-cache-demo"
CLUSTER_FILE = REPO / "examples" / "demo-cluster.yaml"
POLICY_FILE = REPO / "examples" / "demo-fast.yaml"
CONFIGMAPS = ("aurum-api-config", "aurum-worker-config", "cache-config")
DEPLOYMENTS = ("aurum-api", "aurum-worker", "postgres")
BASELINE_LIMIT_SECONDS = 90.0
"""Time allowed for the counters to build the history the 1m rate of spikeRatio needs."""
STAMPEDE_LIMIT_SECONDS = 75.0
"""Recovery starts once the incident reached its last phase at P0, or after this long at the latest."""
SETTLE_LIMIT_SECONDS = 75.0
"""Time allowed from recovery of the workload to the incident being closed."""
REPORT_DIR = pathlib.Path(tempfile.gettempdir()) / "stampede-demo-report"
"""Where the postmortem draft and plot go (outlives the demo; STAMPEDE_DEMO_REPORT_DIR overrides it)."""


class DemoFailed(Exception):
    """The operator did not do what the demo checks; the message says what."""


def say(text: str = "") -> None:
    print(text, flush=True)


def clock() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


class Watch:
    """What `kubectl get stp -w` and `kubectl get events -w` would print, from polling the API server."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.row: tuple[str, str, str] | None = None
        self.seen_events: set[str] = set()
        self.events: list[tuple[str, str, str]] = []
        """(time seen, reason, message) of every event on the policy, in order."""
        self.transitions: list[tuple[str, str, str, str]] = []
        self.status: dict[str, Any] = {}
        self.last_signals_at = 0.0

    def header(self) -> None:
        say(f"{'TIME':<9} {'STATE':<12} {'SEVERITY':<9} {'PHASE':<22} (and each new event on the policy)")

    def poll(self) -> dict[str, Any]:
        try:
            self.status = self.stack.status(NAMESPACE, POLICY)
        except Exception:  # not created yet, or a transient harness hiccup: try next poll
            return self.status
        row = (self.status.get("state") or "-", self.status.get("severity") or "-", self.status.get("phase") or "-")
        if row != self.row and self.status.get("state"):
            self.row = row
            self.transitions.append((clock(), *row))
            say(f"{clock():<9} {row[0]:<12} {row[1]:<9} {row[2]:<22}")
        for event in self._new_events():
            self.events.append(event)
            say(f"{event[0]:<9}   event {event[1]}: {event[2]}")
        if time.monotonic() - self.last_signals_at >= 5 and self.status.get("signals"):
            self.last_signals_at = time.monotonic()
            values = ", ".join(f"{s['name']}={s.get('value')}" for s in self.status["signals"])
            say(f"{clock():<9}   signals {values}")
        return self.status

    def _new_events(self) -> list[tuple[str, str, str]]:
        try:
            items = self.stack.core.list_namespaced_event(
                NAMESPACE, field_selector=f"involvedObject.name={POLICY}"
            ).items
        except Exception:  # a transient harness hiccup: the next poll lists them again
            return []
        found: list[tuple[datetime, str, str]] = []
        for item in items:
            if item.involved_object is not None and item.involved_object.name != POLICY:
                continue
            key = item.metadata.uid or item.metadata.name or f"{item.reason}/{item.message}"
            if key in self.seen_events:
                continue
            self.seen_events.add(key)
            # kopf posts events from a queue, so list order is not emission order; its timestamps are.
            when = item.first_timestamp or item.event_time or item.metadata.creation_timestamp
            found.append(
                (when if isinstance(when, datetime) else datetime.now(UTC), str(item.reason), str(item.message))
            )
        found.sort(key=lambda event: event[0])
        return [(when.astimezone(UTC).strftime("%H:%M:%S"), reason, message) for when, reason, message in found]

    def until(
        self, what: str, predicate: Callable[[dict[str, Any]], bool], *, timeout: float, interval: float = 0.25
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.poll()
            if status and predicate(status):
                return status
            time.sleep(interval)
        raise DemoFailed(f"timed out after {timeout:.0f}s waiting for {what}")


def snapshot(stack: Stack) -> dict[str, Any]:
    return {
        "configmaps": {name: stack.configmap_data(NAMESPACE, name) for name in CONFIGMAPS},
        "replicas": {name: stack.replicas(NAMESPACE, name) for name in DEPLOYMENTS},
    }


def kubectl(stack: Stack, *args: str) -> str:
    binary = pathlib.Path(sys.executable).with_name("kubectl")
    path = str(binary) if binary.exists() else shutil.which("kubectl")
    if path is None:
        return "(kubectl not installed: run make install)"
    env = {**os.environ, "KUBECONFIG": str(stack.harness.kubeconfig)}
    result = subprocess.run([path, *args], env=env, capture_output=True, text=True, timeout=30, check=False)
    return (result.stdout + result.stderr).rstrip()


def run(stack: Stack, watch: Watch) -> None:
    assert stack.exporter is not None
    assert stack.prometheus is not None
    workload = Workload(stack.exporter)
    workload.start()
    try:
        story(stack, watch, workload)
    finally:
        workload.stop()


def story(stack: Stack, watch: Watch, workload: Workload) -> None:
    assert stack.prometheus is not None
    say(f"{clock()} workload: calm (cache hit rate 0.95, 200 req/s, 80 database connections)")
    policy = next(doc for doc in load_yaml(POLICY_FILE) if doc.get("kind") == "StampedePolicy")
    spike = next(s["query"] for s in policy["spec"]["signals"] if s["name"] == "spikeRatio")
    # spikeRatio divides a 10s rate by a 1m rate; Prometheus computes the 1m rate of a counter born seconds
    # ago over the whole minute, so it reads as a huge spike until the counters have some history. The
    # policy is applied once that artefact has faded, exactly as it would meet a long-running service.
    say(f"{clock()} building a calm baseline until spikeRatio (10s rate / 1m rate) reads below 1.5 (about 40 s) ...")
    stack.prometheus.wait_for(spike, lambda v: v is not None and v < 1.5, timeout=BASELINE_LIMIT_SECONDS, interval=1.0)
    before = snapshot(stack)
    stack.apply_policy(policy)
    say(f"{clock()} applied {POLICY_FILE.relative_to(REPO)} (StampedePolicy {NAMESPACE}/{POLICY}, polls every 1s)")
    say()
    watch.header()
    watch.until(
        "the policy to report Idle with every signal known",
        lambda s: (
            s.get("state") == "Idle"
            and all(sig.get("value") != "unknown" for sig in s.get("signals") or [{"value": "unknown"}])
        ),
        timeout=30,
    )
    _pause(watch, 3)

    say(
        f"{clock()}   workload: STAMPEDE — cache miss rate 0.92, requests x4, database connections climbing "
        "to ~196, scenario queue growing"
    )
    workload.set_stage(STAMPEDE)
    watch.until("the incident to open", lambda s: s.get("state") == "Incident", timeout=40)
    last_phase = policy["spec"]["phases"][-1]["name"]
    try:
        watch.until(
            f"severity P0 and phase {last_phase}",
            lambda s: (
                s.get("severity") == "P0"
                and s.get("phase") == last_phase
                and bool((s.get("incident") or {}).get("escalated"))
            ),
            timeout=STAMPEDE_LIMIT_SECONDS,
        )
    except DemoFailed as problem:
        say(f"{clock()}   (note: {problem}; recovering anyway)")
    _pause(watch, 2)
    say(f"{clock()}   workload: RECOVERY — hit rate back to 0.95, request spike gone, database at 80")
    workload.set_stage(RECOVERY)
    final = watch.until(
        "the incident to recover, roll back and close",
        lambda s: s.get("state") == "Idle" and bool(s.get("history")),
        timeout=SETTLE_LIMIT_SECONDS,
    )
    _pause(watch, 1.5)  # the last events of the close
    after = snapshot(stack)
    report(stack, watch, final=final, before=before, after=after)


def _pause(watch: Watch, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        watch.poll()
        time.sleep(0.25)


def report(stack: Stack, watch: Watch, *, final: dict[str, Any], before: dict[str, Any], after: dict[str, Any]) -> None:
    say()
    say("=== kubectl get stp -n aurum-demo " + "=" * 40)
    say(kubectl(stack, "get", "stp", "-n", NAMESPACE))
    say()
    say(f"=== kubectl describe stp {POLICY} -n {NAMESPACE} " + "=" * 26)
    say(kubectl(stack, "describe", "stp", POLICY, "-n", NAMESPACE))
    say()
    say("=== targets before the incident and after the rollback " + "=" * 18)
    problems: list[str] = []
    for name in CONFIGMAPS:
        was, now = before["configmaps"][name], after["configmaps"][name]
        same = "equal" if was == now else "DIFFERENT"
        say(f"ConfigMap {name}: {same}")
        say(f"  before: {was}")
        say(f"  after:  {now}")
        if was != now:
            problems.append(f"ConfigMap {name} was not restored: {was} → {now}")
    for name in DEPLOYMENTS:
        was, now = before["replicas"][name], after["replicas"][name]
        say(f"Deployment {name} replicas: before {was}, after {now} ({'equal' if was == now else 'DIFFERENT'})")
        if was != now:
            problems.append(f"Deployment {name} replicas were not restored: {was} → {now}")
    say()
    say("=== incident timeline (status.history + events) " + "=" * 25)
    for entry in final.get("history") or []:
        say(
            f"incident {entry.get('id')}: {entry.get('severity')}, opened {entry.get('startedAt')}, "
            f"recovered {entry.get('recoveredAt')}, closed {entry.get('closedAt')} "
            f"({entry.get('durationSeconds')} s), furthest phase {entry.get('maxPhase')}, "
            f"escalated {entry.get('escalated')}"
        )
    for seen, reason, message in watch.events:
        say(f"  {seen}  {reason:<18} {message}")
    say()

    reasons = [reason for _, reason, _ in watch.events]
    if not final.get("history"):
        problems.append("no incident was opened and closed (status.history is empty)")
    if "IncidentOpened" not in reasons:
        problems.append("no IncidentOpened event")
    if "ActionRolledBack" not in reasons or "IncidentClosed" not in reasons:
        problems.append("the changes were not rolled back (no ActionRolledBack/IncidentClosed events)")
    if final.get("applied"):
        problems.append(f"changes still recorded as applied: {[c.get('action') for c in final['applied']]}")
    if problems:
        raise DemoFailed("; ".join(problems))
    record_and_report(stack, final)
    phases = [p for _, _, _, p in watch.transitions if p != "-"]
    say(
        f"RESULT: incident opened, went through phases {', '.join(dict.fromkeys(phases))}, rolled back "
        f"{reasons.count('ActionRolledBack')} change(s) and closed; every target restored exactly."
    )


def record_and_report(stack: Stack, final: dict[str, Any]) -> None:
    """The incident's StampedeIncident record, and a postmortem draft with its plot written from it."""
    assert stack.prometheus is not None
    incident = (final.get("history") or [{}])[0].get("id")
    name = f"{POLICY}-{incident}"
    try:
        stack.wait_for(
            f"StampedeIncident {name} closed",
            lambda: (
                (
                    stack.custom.get_namespaced_custom_object(
                        "stampede.aurum.io", "v1alpha1", NAMESPACE, "stampedeincidents", name
                    ).get("status")
                    or {}
                ).get("state")
                == "Closed"
            ),
            timeout=15,
        )
    except AssertionError as problem:
        raise DemoFailed(f"the incident record {name} was not closed: {str(problem).splitlines()[0]}") from None
    say("=== kubectl get stpi -n aurum-demo (the incident log) " + "=" * 19)
    say(kubectl(stack, "get", "stpi", "-n", NAMESPACE))
    say()
    directory = pathlib.Path(os.environ.get("STAMPEDE_DEMO_REPORT_DIR") or REPORT_DIR)
    binary = pathlib.Path(sys.executable).with_name("stampede")
    command = [str(binary) if binary.exists() else "stampede", "report", "-n", NAMESPACE, POLICY]
    command += ["--incident", str(incident), "--prometheus", stack.prometheus.url, "--output-dir", str(directory)]
    env = {**os.environ, "KUBECONFIG": str(stack.harness.kubeconfig)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    say(f"=== stampede report -n {NAMESPACE} {POLICY} --incident {incident} " + "=" * 12)
    if done.returncode != 0:
        say(f"(no report: {done.stderr.strip()})")
    else:
        for path in done.stdout.split():
            say(f"report: {path}")
    say()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    started = time.monotonic()
    say(
        "stampede-operator demo: the Kubernetes API server is EMULATED (tests/harness, seeded with "
        "examples/demo-cluster.yaml); Prometheus and the operator (`stampede run`) are the real programs."
    )
    say("No cluster is needed and nothing outside a temporary directory is touched.")
    # Ctrl-C and SIGTERM both end up in the Stack's context manager, which stops every process it started.
    signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    try:
        say(f"{clock()} starting the emulated API server, Prometheus and `stampede run` ...")
        with Stack(seed=[CLUSTER_FILE]) as stack:
            assert stack.prometheus is not None
            say(
                f"{clock()} Prometheus {stack.prometheus.url} (real), API server kubeconfig "
                f"{stack.harness.kubeconfig} (emulated)"
            )
            watch = Watch(stack)
            try:
                run(stack, watch)
            except DemoFailed as problem:
                say(f"DEMO FAILED: {problem}")
                tail = stack.operator.logs()[-3000:] if stack.operator else ""
                say(f"--- operator log tail ---\n{tail}")
                code = 1
            say(f"{clock()} stopping everything the demo started ...")
    except KeyboardInterrupt:
        say("interrupted: every process the demo started has been stopped")
        return 130
    say(f"demo finished in {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
