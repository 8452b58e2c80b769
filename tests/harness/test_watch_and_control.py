"""Watch streams (resume, 410, timeouts, selectors, bookmarks), the request log and fault injection."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from .server import Harness
from .test_api_semantics import CMS, MERGE, call


async def read_events(
    api: aiohttp.ClientSession,
    path: str,
    params: dict[str, str],
    *,
    count: int | None = None,
    within: float = 3.0,
) -> list[dict[str, Any]]:
    events = []
    async with api.get(path, params={"watch": "true", **params}) as rsp:
        assert rsp.status == 200
        async with asyncio.timeout(within):
            async for line in rsp.content:
                events.append(json.loads(line))
                if count is not None and len(events) >= count:
                    break
    return events


async def test_watch_without_resource_version_starts_with_added_for_existing(
    api: aiohttp.ClientSession,
) -> None:
    await call(api, "POST", CMS, {"metadata": {"name": "w1"}})
    events = await read_events(api, CMS, {"timeoutSeconds": "1"})
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "w1")]
    assert events[0]["object"]["kind"] == "ConfigMap"


async def test_watch_resumes_from_resource_version(api: aiohttp.ClientSession) -> None:
    _, obj = await call(api, "POST", CMS, {"metadata": {"name": "r1"}})
    rv = obj["metadata"]["resourceVersion"]
    await call(api, "PATCH", f"{CMS}/r1", {"data": {"a": "1"}}, headers=MERGE)
    await call(api, "DELETE", f"{CMS}/r1")
    events = await read_events(api, CMS, {"resourceVersion": rv, "timeoutSeconds": "1"})
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]


async def test_watch_from_too_old_resource_version_gets_410_error_event(
    api: aiohttp.ClientSession, k8s_harness: Harness
) -> None:
    _, obj = await call(api, "POST", CMS, {"metadata": {"name": "old"}})
    await call(api, "PATCH", f"{CMS}/old", {"data": {"a": "1"}}, headers=MERGE)
    k8s_harness.store.compact()
    events = await read_events(api, CMS, {"resourceVersion": obj["metadata"]["resourceVersion"]})
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410


async def test_timeout_seconds_ends_the_stream(api: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    events = await read_events(api, CMS, {"timeoutSeconds": "1", "resourceVersion": "1"})
    assert events == []
    assert 0.8 < time.monotonic() - started < 2.5


async def test_watch_streams_live_changes_through_label_selectors(api: aiohttp.ClientSession) -> None:
    async def produce() -> None:
        await asyncio.sleep(0.2)
        await call(api, "POST", CMS, {"metadata": {"name": "l1", "labels": {"app": "x"}}})
        await call(api, "POST", CMS, {"metadata": {"name": "l2", "labels": {"app": "y"}}})
        await call(api, "PATCH", f"{CMS}/l1", {"metadata": {"labels": {"app": "z"}}}, headers=MERGE)

    task = asyncio.create_task(produce())
    events = await read_events(api, CMS, {"labelSelector": "app=x", "resourceVersion": "1"}, count=2)
    await task
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "l1"),
        ("DELETED", "l1"),
    ]


async def test_bookmarks_and_initial_events_end_marker(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", CMS, {"metadata": {"name": "b1"}})
    events = await read_events(
        api,
        CMS,
        {"sendInitialEvents": "true", "allowWatchBookmarks": "true", "resourceVersionMatch": "NotOlderThan"},
        count=2,
    )
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_request_log_is_queryable_over_http(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", CMS, {"metadata": {"name": "q"}}, params={"fieldManager": "tester"})
    await call(api, "PATCH", f"{CMS}/q", {"data": {"a": "1"}}, headers=MERGE, params={"fieldManager": "tester"})
    _, log = await call(api, "GET", "/_harness/requests", params={"resource": "configmaps"})
    verbs = [(r["verb"], r["namespace"], r["name"], r["field_manager"], r["status"]) for r in log["items"]]
    assert verbs == [("create", "default", None, "tester", 201), ("patch", "default", "q", "tester", 200)]
    _, after = await call(api, "GET", "/_harness/requests", params={"since": str(log["items"][0]["id"])})
    assert [r["verb"] for r in after["items"]] == ["patch"]  # control calls are not logged
    _, obj = await call(api, "GET", f"{CMS}/q")
    assert obj["metadata"]["managedFields"][0]["manager"] == "tester"
    await call(api, "DELETE", "/_harness/requests")
    _, log = await call(api, "GET", "/_harness/requests")
    assert log["items"] == []


async def test_fault_injection_fails_the_next_matching_requests(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", CMS, {"metadata": {"name": "f"}})
    status, rule = await call(
        api,
        "POST",
        "/_harness/faults",
        {"verbs": ["patch", "update"], "resources": ["configmaps"], "status": 409, "times": 2},
    )
    assert status == 201
    assert rule["id"]
    results = [(await call(api, "PATCH", f"{CMS}/f", {"data": {"n": str(n)}}, headers=MERGE))[0] for n in range(3)]
    assert results == [409, 409, 200]
    _, rules = await call(api, "GET", "/_harness/faults")
    assert rules["items"] == []
    _, log = await call(api, "GET", "/_harness/requests", params={"verb": "patch"})
    assert [r["fault"] for r in log["items"]] == [rule["id"], rule["id"], None]


async def test_fault_injection_can_delay_and_be_removed_in_process(
    api: aiohttp.ClientSession, k8s_harness: Harness
) -> None:
    rule = k8s_harness.faults.add(verbs=["get"], resources=["namespaces"], status=None, delay=0.3)
    started = time.monotonic()
    status, _ = await call(api, "GET", "/api/v1/namespaces/default")
    assert status == 200
    assert time.monotonic() - started >= 0.3
    assert k8s_harness.faults.remove(rule.id)
    never = k8s_harness.faults.add(verbs=["get"], status=500, probability=0.0)
    assert (await call(api, "GET", "/api/v1/namespaces/default"))[0] == 200
    assert never.hits == 0
