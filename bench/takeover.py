"""Failover time: SIGKILL of the active replica mid-incident → the standby's first poll of that policy.

Two `stampede run` processes with the rendered Deployment's args (tests/e2e/deployed.py), the real
Prometheus and the emulated API server, as in tests/e2e/test_ha.py, at the shipped default peering
lifetime. The bound is one lifetime plus one poll; kopf's own default lifetime (60 s) gave 44 s.

The standby's first poll is read from its own /metrics (`stampede_poll_duration_seconds_count` of the
policy). Not its first write: mid-incident with nothing changing, the first write after a takeover is the
next status refresh, up to STAMPEDE_STATUS_REFRESH_SECONDS (60 s) later, because a replica resumes the
refresh clock from `lastPollTime` instead of rewriting an unchanged status. The first write is reported
too, for what `kubectl get` shows.

    .venv/bin/python bench/takeover.py [--rounds 2] [--lifetime 20]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from common import log, summary
from tests.e2e import policies
from tests.e2e.conftest import Case
from tests.e2e.deployed import peering_crds, replica
from tests.e2e.stack import Stack

POLL = 1.0


def one_round(stack: Stack, *, lifetime: int, index: int) -> tuple[float, float]:
    assert stack.prometheus is not None
    env = {"STAMPEDE_PROMETHEUS_URL": stack.prometheus.url, "STAMPEDE_PEERING_LIFETIME": str(lifetime)}
    pair = [
        replica(overlay="cluster", kubeconfig=stack.harness.kubeconfig, log_dir=stack.dir / f"r{index}{n}", env=env)
        for n in "ab"
    ]
    stack.operator = pair[0].operator
    for r in pair:
        r.operator.start()
    try:
        active = stack.wait_for(
            "one active replica",
            lambda: (
                next((r for r in pair if r.peering_state() == "active"), None)
                if sorted(str(r.peering_state()) for r in pair) == ["active", "standby"]
                else None
            ),
            timeout=120,
        )
        case = Case(stack, f"takeover-{index}", prefix="bench")
        case.create_ready("takeover", phases=[policies.phase_one(), policies.phase_two(after="600s")])
        case.set(hit_rate=0.2)
        case.wait_status("takeover", "phase one applied", lambda s: len(s.get("applied") or []) == 2)
        standby = next(r for r in pair if r is not active)
        polls = {"namespace": case.ns, "policy": "takeover"}
        before = standby.sample("stampede_poll_duration_seconds_count", **polls) or 0.0
        active.operator.kill()
        killed = time.monotonic()
        mark = stack.harness.log.last_id
        stack.wait_for(
            "the standby's first poll",
            lambda: (standby.sample("stampede_poll_duration_seconds_count", **polls) or 0.0) > before,
            timeout=lifetime * 3 + 30,
            interval=0.05,
        )
        polled = time.monotonic() - killed
        stack.wait_for(
            "the standby's first write",
            lambda: stack.harness.log.entries(since=mark, namespace=case.ns, verb="patch", resource="stampedepolicies"),
            timeout=lifetime * 3 + 90,
            interval=0.05,
        )
        return polled, time.monotonic() - killed
    finally:
        for r in pair:
            r.operator.stop()


def run(*, lifetime: int = 20, rounds: int = 2) -> dict[str, Any]:
    samples: list[float] = []
    writes: list[float] = []
    with Stack(start_operator=False) as stack:
        stack.harness.apply(peering_crds())
        for index in range(rounds):
            for item in stack.custom.list_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings")["items"]:
                stack.custom.delete_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", item["metadata"]["name"]
                )
            polled, written = one_round(stack, lifetime=lifetime, index=index)
            samples.append(round(polled, 2))
            writes.append(round(written, 2))
            log(f"takeover round {index + 1}: first poll {samples[-1]} s, first status write {writes[-1]} s")
    return {
        "lifetime_s": lifetime,
        "poll_s": POLL,
        "bound_s": lifetime + POLL,
        "takeover_s": summary(samples),
        "samples_s": samples,
        "within_bound": sum(s <= lifetime + POLL for s in samples),
        "first_status_write_s": summary(writes),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--lifetime", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(run(lifetime=args.lifetime, rounds=args.rounds), indent=2))
