"""Two operators with disjoint `--selector`s share one cluster's policies and never act on the same one.

Its own stack (the session's operator serves every policy): the emulated API server, a real Prometheus,
and two real `stampede run -A --selector shard=...` processes. What each operator acted on is read from
its own /metrics (a series per policy it polled or changed), and what happened to each target from the
harness's request log.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e import policies
from tests.e2e.conftest import Case, condition
from tests.e2e.stack import Operator, Stack
from tests.e2e.test_metrics_and_notifications import scrape
from tests.support.prometheus import free_port

pytestmark = pytest.mark.timeout(240)

SHARDS = {"a": ["pa-1", "pa-2"], "b": ["pb-1", "pb-2"]}
UNSELECTED = "nobody"


@pytest.fixture(scope="module")
def sharded() -> Iterator[tuple[Stack, dict[str, tuple[Operator, int]]]]:
    with Stack(start_operator=False) as stack:
        assert stack.operator is not None
        operators: dict[str, tuple[Operator, int]] = {}
        try:
            for shard in SHARDS:
                port = free_port()
                operator = Operator(
                    kubeconfig=stack.harness.kubeconfig,
                    env=stack.operator.env,
                    log_dir=stack.dir / f"shard-{shard}",
                    args=["--standalone", "-A", "--selector", f"shard={shard}", "--metrics-port", str(port)],
                )
                operator.log_dir.mkdir()
                operator.start()
                operators[shard] = (operator, port)
            yield stack, operators
        finally:
            for operator, _ in operators.values():
                operator.stop()


def policies_seen(port: int) -> set[str]:
    """The policies an operator has any series for: the ones it polled or acted on."""
    return {dict(labels).get("policy", "") for (name, labels) in scrape(port) if name.startswith("stampede_")} - {""}


def action(name: str) -> dict[str, Any]:
    return {
        "name": "immediate",
        "after": "0s",
        "actions": [{"name": "flag", "configMap": {"name": f"cfg-{name}", "data": {"FLAG": "on"}}}],
    }


def test_two_operators_with_disjoint_selectors_each_serve_only_their_share(
    sharded: tuple[Stack, dict[str, tuple[Operator, int]]],
) -> None:
    stack, operators = sharded
    names = [n for share in SHARDS.values() for n in share] + [UNSELECTED]
    configmaps = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cfg-{n}"}, "data": {"FLAG": "off"}}
        for n in names
    ]
    case = Case(stack, "sharding", extra=configmaps)
    for shard, share in SHARDS.items():
        for name in share:
            body = policies.policy(name, case.ns, case.label, phases=[action(name)], recovery_for="1s")
            body["metadata"]["labels"] = {"shard": shard}
            stack.apply_policy(body)
    case.create(UNSELECTED, phases=[action(UNSELECTED)])
    for share in SHARDS.values():
        for name in share:
            case.wait_status(name, "Ready", lambda s: condition(s, "Ready").get("status") == "True")

    case.set(hit_rate=0.2)
    for share in SHARDS.values():
        for name in share:
            case.wait_status(name, "mitigated", lambda s: len(s.get("applied") or []) == 1)
    case.set(hit_rate=0.95)
    for share in SHARDS.values():
        for name in share:
            case.wait_status(name, "closed", lambda s: s.get("state") == "Idle" and s.get("history"))

    for shard, (operator, port) in operators.items():
        mine = set(SHARDS[shard])
        assert policies_seen(port) == mine, (shard, operator.logs()[-2000:])
    assert not case.status(UNSELECTED), "a policy no selector matches was served"
    for name in names:
        writes = [
            r.verb
            for r in stack.harness.log.entries(namespace=case.ns, resource="configmaps", name=f"cfg-{name}")
            if r.verb == "patch" and r.content_type == "application/merge-patch+json"  # not a hand-back of fields
        ]
        # Exactly one apply and one rollback: a second operator acting would have raced or doubled them.
        assert writes == ([] if name == UNSELECTED else ["patch", "patch"]), (name, writes)
        assert case.configmap(f"cfg-{name}")["data"]["FLAG"] == "off"
