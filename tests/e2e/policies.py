"""Builders for the e2e tests: a per-test copy of the demo cluster and small, fast policies.

Every test gets its own namespace (a copy of examples/demo-cluster.yaml) and its own exporter label
`case="<name>"`, so tests sharing one operator and one Prometheus never see each other's signals or targets.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.e2e.stack import REPO, load_yaml

API_CONFIG = "aurum-api-config"
CACHE_CONFIG = "cache-config"
API = "aurum-api"
CRONJOB = "cache-warming"
NEW_KEY = "STAMPEDE_E2E_ADDED_KEY"

_DEMO = load_yaml(REPO / "examples" / "demo-cluster.yaml")


def cluster_objects(namespace: str) -> list[dict[str, Any]]:
    """The demo cluster's Namespace, ConfigMaps, Deployments and CronJob, moved into `namespace`."""
    docs = []
    for doc in copy.deepcopy(_DEMO):
        if doc["kind"] == "Namespace":
            doc["metadata"]["name"] = namespace
        else:
            doc["metadata"]["namespace"] = namespace
        docs.append(doc)
    return docs


def hit_rate_query(case: str) -> str:
    return f'sum(e2e_hit_rate{{case="{case}"}})'


def db_query(case: str) -> str:
    return f'sum(e2e_db{{case="{case}"}})'


def phase_one(*, restart: bool = True) -> dict[str, Any]:
    config_map: dict[str, Any] = {
        "name": API_CONFIG,
        "data": {"AURUM_API_CIRCUIT_BREAKER_ENABLED": "true", NEW_KEY: "added"},
    }
    if restart:
        config_map["restart"] = [{"kind": "Deployment", "name": API}]
    return {
        "name": "immediate",
        "after": "0s",
        "actions": [
            {"name": "api-config", "configMap": config_map},
            {"name": "scale-api", "scale": {"kind": "Deployment", "name": API, "replicas": 6}},
        ],
    }


def phase_two(after: str = "3s") -> dict[str, Any]:
    return {
        "name": "stabilization",
        "after": after,
        "actions": [
            {"name": "cache-lazy", "configMap": {"name": CACHE_CONFIG, "data": {"CACHE_REFRESH_STRATEGY": "lazy"}}},
            {"name": "warm-cache", "job": {"fromCronJob": CRONJOB}},
        ],
    }


def policy(
    name: str,
    namespace: str,
    case: str,
    *,
    phases: list[dict[str, Any]] | None = None,
    recovery_for: str = "2s",
    step_delay: str = "1s",
    **spec: Any,
) -> dict[str, Any]:
    """A policy polling every second: P1 when hitRate < 0.5 for 2s, P0 when db >= 190 for 2s."""
    body: dict[str, Any] = {
        "pollInterval": "1s",
        "signals": [{"name": "hitRate", "query": hit_rate_query(case)}, {"name": "db", "query": db_query(case)}],
        "severities": [
            {"level": "P0", "any": ["db >= 190"], "for": "2s"},
            {"level": "P1", "any": ["hitRate < 0.5"], "for": "2s"},
        ],
        "recovery": {"all": ["hitRate > 0.9"], "for": recovery_for},
        "phases": phases if phases is not None else [phase_one(), phase_two()],
        "rollback": {"stepDelay": step_delay},
        **spec,
    }
    return {
        "apiVersion": "stampede.aurum.io/v1alpha1",
        "kind": "StampedePolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }
