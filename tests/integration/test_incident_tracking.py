"""The poll loop's record keeping never costs remediation anything, whatever the API server does."""

from __future__ import annotations

from typing import Any

from stampede.api.status import PolicyStatus
from stampede.engine import Decision, decide
from stampede.handlers import incidents
from tests.unit.policies import at, tiny_spec


class ExplodingKube:
    """Every call fails with something that is not a KubeError (a bug, a broken client)."""

    calls = 0

    def _boom(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise RuntimeError("boom")

    get = merge = create = request = json_patch = _boom


async def _track(kube: ExplodingKube, name: str, decision: Decision, *, load: float, now: float) -> PolicyStatus:
    """One poll's `incidents.track` for policy aurum/NAME, with the decision's own status."""
    body = {"metadata": {"namespace": "aurum", "name": name, "uid": "u"}}
    return await incidents.track(
        kube,  # type: ignore[arg-type]
        body,
        tiny_spec(),
        decision,
        decision.status,
        readings={"load": load},
        now=at(now),
    )


async def test_a_record_store_that_breaks_leaves_the_polls_status_untouched() -> None:
    spec = tiny_spec()
    status = decide(spec=spec, status=PolicyStatus(), readings={"load": 20.0}, now=at(0)).status
    decision = decide(spec=spec, status=status, readings={"load": 20.0}, now=at(60))
    assert decision.status.incident is not None  # the poll that opens the incident
    kube = ExplodingKube()

    after = await _track(kube, "exploding", decision, load=20.0, now=60)

    assert after == decision.status
    assert kube.calls >= 1  # it did try
    incidents.forget("aurum", "exploding")


async def test_a_policy_without_an_incident_keeps_no_tracker_and_one_with_an_incident_does() -> None:
    spec = tiny_spec()
    quiet = decide(spec=spec, status=PolicyStatus(), readings={"load": 1.0}, now=at(0))
    assert quiet.status.incident is None and not quiet.events
    kube = ExplodingKube()
    after = await _track(kube, "idle", quiet, load=1.0, now=0)
    assert after == quiet.status and kube.calls == 0
    assert ("aurum", "idle") not in incidents._trackers, "an idle policy holds no incident tracker"

    status = decide(spec=spec, status=PolicyStatus(), readings={"load": 20.0}, now=at(0)).status
    opened = decide(spec=spec, status=status, readings={"load": 20.0}, now=at(60))
    await _track(kube, "idle", opened, load=20.0, now=60)
    assert ("aurum", "idle") in incidents._trackers, "the incident's record is tracked from its first poll"
    incidents.forget("aurum", "idle")
