"""Events posted by the operator name `stampede-operator` as their source, not `kopf`.

The body is built by kopf's own event poster with our settings, so the test sees exactly what the API
server would receive (`source.component` is the "From" column of `kubectl describe`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
import pytest
from kopf._cogs.clients import api as kopf_api
from kopf._cogs.clients import events as kopf_events
from kopf._cogs.structs import references

from stampede.handlers.operator import EVENT_COMPONENT, configure_event_source


def test_events_report_stampede_operator_as_their_component(monkeypatch: pytest.MonkeyPatch) -> None:
    posted: list[dict[str, Any]] = []

    async def post(*, payload: dict[str, Any], **_: Any) -> None:
        posted.append(payload)

    monkeypatch.setattr(kopf_api, "post", post)
    settings = kopf.OperatorSettings()
    configure_event_source(settings)
    resource = references.Resource(group="", version="v1", plural="events", namespaced=True)
    ref = {"apiVersion": "stampede.aurum.io/v1alpha1", "kind": "StampedePolicy", "name": "p", "namespace": "ns"}
    asyncio.run(
        kopf_events.post_event(
            ref=ref,  # type: ignore[arg-type]
            type="Normal",
            reason="IncidentOpened",
            message="m",
            resource=resource,
            settings=settings,
            logger=logging.getLogger("test"),
        )
    )
    [body] = posted
    assert EVENT_COMPONENT == "stampede-operator"
    assert body["source"] == {"component": "stampede-operator"}
    assert body["reportingComponent"] == "stampede-operator"
    assert 0 < len(body["reportingInstance"]) <= 128
    assert body["metadata"]["generateName"].startswith("stampede-operator-")
