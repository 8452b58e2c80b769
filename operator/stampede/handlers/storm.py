"""The storm breaker's count: which policies this operator serves have an incident open.

When a shared cache or database fails, every service's policy fires at once, and ten policies
scaling up and restarting together feed the stampede. `decide` holds a newly opened incident while
STAMPEDE_MAX_CONCURRENT_INCIDENTS other policies already act on theirs; this module gives it that
count. It comes from two places: a kopf index over the policies' status (complete before any poll
runs, so the count survives a restart; served only while the breaker is on, since the index makes
kopf's startup quadratic in the number of policies: `operator.serve_storm_index`) and what each
loop decided a moment ago (the index lags behind the status writes; all loops share one event loop
and nothing awaits between reading the count and recording the decision, so two policies firing in
the same second cannot both slip in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..api.status import PolicyStatus
from ..engine.decide import Storm

ACTIVE = "active"
HELD = "held"
IDLE = "idle"

Key = tuple[str, str]


def state_of(incident: Mapping[str, Any] | None) -> str:
    """How one policy counts, from its status's `incident` in wire form."""
    if not incident:
        return IDLE
    return HELD if incident.get("stormHeld") else ACTIVE


def index_entry(*, namespace: str, name: str, status: Mapping[str, Any]) -> dict[Key, str]:
    """The kopf index's value for one policy (an entry for every policy, so a closed incident replaces it)."""
    return {(namespace, name): state_of(status.get("incident"))}


class Incidents:
    """Every served policy's incident state: the kopf index, overlaid with the loops' own latest decisions."""

    def __init__(self) -> None:
        self.index: Mapping[Any, Iterable[Any]] | None = None
        """kopf's index (`stampede_open_incidents`): key → the values stored for it."""
        self.decided: dict[Key, str] = {}

    def note(self, key: Key, status: PolicyStatus) -> None:
        """What a loop just decided; counted at once by every other loop."""
        incident = status.incident
        self.decided[key] = IDLE if incident is None else (HELD if incident.storm_held else ACTIVE)

    def forget(self, key: Key) -> None:
        self.decided.pop(key, None)

    def states(self) -> dict[Key, str]:
        out: dict[Key, str] = {}
        for key, values in (self.index or {}).items():
            for value in values:
                if isinstance(key, tuple) and isinstance(value, str):
                    out[(str(key[0]), str(key[1]))] = value
        out.update(self.decided)
        return out

    def view(self, me: Key, *, limit: int) -> Storm:
        """The counts `decide` needs, leaving out the asking policy itself."""
        if limit <= 0:
            return Storm()
        others = [state for key, state in self.states().items() if key != me]
        return Storm(limit=limit, active=others.count(ACTIVE), held=others.count(HELD))


__all__ = ["Incidents", "index_entry", "state_of"]
