"""The harness's asynchronous controllers write between a client's read and its write, as real ones do.

They are what makes a read-modify-write meet 409 on the harness as on a cluster, so the tests check
that they write later and several times, that their writes conflict with a stale client write, and
that the request log keeps them apart from the clients' requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from tests.harness.server import Harness
from tests.harness.store import Strictness

DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
HPAS = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers"
JOBS = "/apis/batch/v1/namespaces/default/jobs"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async with Harness(strictness=Strictness.everything()) as harness:
        yield harness


@pytest.fixture
async def api(h: Harness) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(h.url) as session:
        yield session


async def call(api: aiohttp.ClientSession, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
    async with api.request(method, path, json=body, **kw) as rsp:
        return rsp.status, await rsp.json(content_type=None)


async def until(check: Callable[[], Any]) -> Any:
    """Poll a condition on the loop until it holds (the controllers run on this loop too)."""
    async with asyncio.timeout(10):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.05)


def deployment(replicas: int) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}, "spec": {"replicas": replicas}}


async def test_a_replica_change_is_rolled_out_in_several_status_writes(h: Harness, api: aiohttp.ClientSession) -> None:
    status, created = await call(api, "POST", DEPLOYS, deployment(3))
    assert status == 201
    assert "status" not in created  # nothing is reported in the same write as the change

    async def rolled_out() -> bool:
        _, obj = await call(api, "GET", f"{DEPLOYS}/api")
        st = obj.get("status") or {}
        return st.get("observedGeneration") == 1 and st.get("updatedReplicas") == st.get("availableReplicas") == 3

    await until(rolled_out)
    writes = h.log.entries(controllers=True, actor="deployment-controller", subresource="status")
    assert len(writes) >= 3
    assert all(r.field_manager == "deployment-controller" for r in writes)
    # The clients' view of the log leaves the controller out: "zero target writes" stays countable.
    assert [r for r in h.log.entries(resource="deployments") if r.verb != "get"] == h.log.entries(verb="create")


async def test_a_write_with_the_version_read_before_a_controller_write_gets_409(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", DEPLOYS, deployment(2))
    _, before = await call(api, "GET", f"{DEPLOYS}/api")
    stale = before["metadata"]["resourceVersion"]

    async def controller_wrote() -> bool:
        _, obj = await call(api, "GET", f"{DEPLOYS}/api")
        return bool(obj["metadata"]["resourceVersion"] != stale)

    await until(controller_wrote)
    body = {**before, "spec": {"replicas": 5}}
    status, answer = await call(api, "PUT", f"{DEPLOYS}/api", body)
    assert (status, answer["reason"]) == (409, "Conflict")


async def test_the_hpa_controller_keeps_its_target_at_its_recommendation_within_min_and_max(
    api: aiohttp.ClientSession,
) -> None:
    await call(api, "POST", DEPLOYS, deployment(1))
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "api"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
            "minReplicas": 2,
            "maxReplicas": 4,
        },
    }
    assert (await call(api, "POST", HPAS, hpa))[0] == 201

    async def replicas(n: int) -> bool:
        _, obj = await call(api, "GET", f"{DEPLOYS}/api")
        return bool(obj["spec"]["replicas"] == n)

    await until(lambda: replicas(2))
    await call(api, "PATCH", f"{DEPLOYS}/api", {"spec": {"replicas": 10}}, headers=MERGE)
    await until(lambda: replicas(2))  # a manual scale is overridden by the HPA's recommendation
    metrics = {"metadata": {"annotations": {"harness.k8s.io/metric-replicas": "9"}}}
    await call(api, "PATCH", f"{HPAS}/api", metrics, headers=MERGE)
    await call(api, "PATCH", f"{HPAS}/api", {"spec": {"maxReplicas": 5}}, headers=MERGE)
    await until(lambda: replicas(5))  # the recommendation, capped at maxReplicas
    _, hpa_now = await call(api, "GET", f"{HPAS}/api")
    assert hpa_now["status"]["desiredReplicas"] == 5
    await call(api, "PATCH", f"{HPAS}/api", {"spec": {"minReplicas": 1, "maxReplicas": 10}}, headers=MERGE)
    await until(lambda: replicas(9))


async def test_the_job_controller_reports_the_job_active_then_succeeded(h: Harness, api: aiohttp.ClientSession) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "warm-1"}, "spec": {}}
    assert (await call(api, "POST", JOBS, job))[0] == 201

    async def phase(field: str) -> bool:
        _, obj = await call(api, "GET", f"{JOBS}/warm-1")
        return bool((obj.get("status") or {}).get(field))

    await until(lambda: phase("active"))
    await until(lambda: phase("succeeded"))
    assert {r.actor for r in h.log.entries(controllers=True, resource="jobs", subresource="status")} == {
        "job-controller"
    }


async def test_controllers_stay_quiet_when_switched_off() -> None:
    quiet = Strictness(rollout_controller=False, hpa_controller=False, job_controller=False)
    async with Harness(strictness=quiet) as harness, aiohttp.ClientSession(harness.url) as api:
        await call(api, "POST", DEPLOYS, deployment(2))
        _, obj = await call(api, "GET", f"{DEPLOYS}/api")
        # The default harness keeps its instant status simulation and logs no controller writes.
        assert obj["status"]["availableReplicas"] == 2
        assert harness.log.entries(controllers=True, subresource="status") == []
