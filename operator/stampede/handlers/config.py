"""Operator-wide settings from the environment (documented in docs/configuration.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..sources.prometheus import allowed_prefixes_from_env


@dataclass(frozen=True)
class OperatorConfig:
    prometheus_url: str | None = None
    allowed_prometheus_urls: list[str] = field(default_factory=list)
    max_replicas: int = 50
    status_refresh_seconds: float = 60.0
    """Steady-state status writes (signal values, lastPollTime) happen at most this often."""
    deletion_attempts: int = 10
    """Rollback attempts on deletion before the finalizer is released with the changes left in place."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorConfig:
        env = os.environ if environ is None else environ
        raw_max = env.get("STAMPEDE_MAX_REPLICAS", "50")
        try:
            max_replicas = int(raw_max)
        except ValueError:
            raise SystemExit(f"STAMPEDE_MAX_REPLICAS must be a whole number, got {raw_max!r}") from None
        if max_replicas < 1:
            raise SystemExit(f"STAMPEDE_MAX_REPLICAS must be at least 1, got {max_replicas}")
        prometheus_url = env.get("STAMPEDE_PROMETHEUS_URL") or None
        return cls(
            prometheus_url=prometheus_url,
            allowed_prometheus_urls=_allow_list(allowed_prefixes_from_env(env), default_url=prometheus_url),
            max_replicas=max_replicas,
            status_refresh_seconds=float(env.get("STAMPEDE_STATUS_REFRESH_SECONDS", "60")),
        )


ANY_URL = "*"
"""STAMPEDE_ALLOWED_PROMETHEUS_URLS=* lets policies name any Prometheus: the only way to open the list."""


def _allow_list(prefixes: list[str], *, default_url: str | None) -> list[str]:
    """The URL prefixes policies may query ([] = any). Closed by default: unset, only the default URL.

    Left empty, policies could make the operator send requests anywhere (SSRF); a cluster that really
    wants that says so with `*`.
    """
    if prefixes == [ANY_URL]:
        return []
    if not prefixes and default_url:
        return [default_url]
    return prefixes
