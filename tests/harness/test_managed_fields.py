"""managedFields on the emulated server: field sets per manager, ownership moving, Apply conflicts.

What Argo CD's `managedFieldsManagers` and the operator's "owns nothing it restored" promise read.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.harness import managed
from tests.harness.server import Harness
from tests.harness.store import ApiError, Store

NS = "default"
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"
Obj = dict[str, Any]


@pytest.fixture
def s() -> Store:
    return Store()


def cms(s: Store) -> Any:
    return s.info("", "v1", "configmaps")


def owners(obj: Obj) -> dict[tuple[str, str, str | None], set[managed.Path]]:
    return {
        (e["manager"], e["operation"], e.get("subresource")): managed.from_fields_v1(e["fieldsV1"])
        for e in obj["metadata"].get("managedFields", [])
    }


def create(s: Store, *, manager: str = "a", data: dict[str, str] | None = None) -> Obj:
    body = {"metadata": {"name": "c", "labels": {"app": "web"}}, "data": data or {"x": "1", "y": "2"}}
    return s.create(cms(s), namespace=NS, body=body, field_manager=manager)


def merge(s: Store, body: Obj, *, manager: str) -> Obj:
    return s.patch(cms(s), namespace=NS, name="c", body=body, content_type=MERGE, field_manager=manager)


def test_the_creator_owns_every_field_it_set_with_maps_owned_as_dot() -> None:
    obj = create(Store())
    [entry] = obj["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"], entry["apiVersion"]) == ("a", "Update", "v1")
    assert entry["fieldsV1"] == {
        "f:data": {".": {}, "f:x": {}, "f:y": {}},
        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
    }


def test_an_update_moves_only_the_changed_fields_to_the_updater(s: Store) -> None:
    create(s)
    obj = merge(s, {"data": {"x": "9"}}, manager="b")
    sets = owners(obj)
    assert ("f:data", "f:x") not in sets[("a", "Update", None)]
    assert ("f:data", "f:y") in sets[("a", "Update", None)]
    assert sets[("b", "Update", None)] == {("f:data", "f:x")}


def test_a_removed_field_leaves_every_set_and_an_empty_manager_disappears(s: Store) -> None:
    create(s, data={"x": "1"})
    merge(s, {"data": {"x": "2"}}, manager="b")
    obj = merge(s, {"data": {"x": None}}, manager="c")
    sets = owners(obj)
    assert ("b", "Update", None) not in sets  # b owned only data.x, which is gone
    assert all(("f:data", "f:x") not in owned for owned in sets.values())


def test_a_manager_that_restores_a_value_it_changed_no_longer_owns_what_another_set_back(s: Store) -> None:
    create(s, data={"x": "1"})
    merge(s, {"data": {"x": "2"}}, manager="stampede-operator")
    obj = merge(s, {"data": {"x": "1"}}, manager="kubectl-edit")
    assert ("stampede-operator", "Update", None) not in owners(obj)


def test_apply_of_a_field_another_manager_owns_with_another_value_is_a_conflict(s: Store) -> None:
    create(s)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "9"}}
    with pytest.raises(ApiError) as caught:
        s.patch(cms(s), namespace=NS, name="c", body=body, content_type=APPLY, field_manager="ssa")
    assert caught.value.code == 409
    assert 'conflict with "a": .data.x' in caught.value.message
    obj = s.patch(cms(s), namespace=NS, name="c", body=body, content_type=APPLY, field_manager="ssa", force=True)
    sets = owners(obj)
    assert sets[("ssa", "Apply", None)] == {("f:data",), ("f:data", "f:x")}
    assert ("f:data", "f:x") not in sets[("a", "Update", None)]


def test_apply_of_the_same_value_shares_the_field(s: Store) -> None:
    create(s)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1"}}
    obj = s.patch(cms(s), namespace=NS, name="c", body=body, content_type=APPLY, field_manager="ssa")
    sets = owners(obj)
    assert ("f:data", "f:x") in sets[("ssa", "Apply", None)]
    assert ("f:data", "f:x") in sets[("a", "Update", None)]


def test_status_writes_are_tracked_under_the_status_subresource_only(s: Store) -> None:
    info = s.info("apps", "v1", "deployments")
    s.create(info, namespace=NS, body={"metadata": {"name": "d"}, "spec": {"replicas": 2}}, field_manager="a")
    obj = s.patch(
        info,
        namespace=NS,
        name="d",
        body={"status": {"replicas": 7}, "spec": {"replicas": 9}},
        content_type=MERGE,
        subresource="status",
        field_manager="ctl",
    )
    sets = owners(obj)
    assert sets[("ctl", "Update", "status")] == {("f:status", "f:replicas")}
    assert all(not any(p[0] == "f:status" for p in owned) for key, owned in sets.items() if key[2] is None)


async def test_without_a_field_manager_the_user_agent_names_the_manager_and_apply_needs_one() -> None:
    async with Harness() as harness, aiohttp.ClientSession(harness.url, headers={"User-Agent": "kopf/1.45.2"}) as api:
        path = "/api/v1/namespaces/default/configmaps"
        async with api.post(path, json={"metadata": {"name": "u"}, "data": {"k": "v"}}) as rsp:
            obj = await rsp.json()
        assert [e["manager"] for e in obj["metadata"]["managedFields"]] == ["kopf"]
        body = '{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u"}}'
        async with api.patch(f"{path}/u", data=body, headers={"Content-Type": APPLY}) as rsp:
            assert rsp.status == 400


def test_field_sets_round_trip_through_fields_v1() -> None:
    owned = {("f:data", "f:x"), ("f:data",), ("f:spec", 'k:{"name":"web"}'), ("f:spec", 'k:{"name":"web"}', "f:image")}
    assert managed.from_fields_v1(managed.to_fields_v1(owned)) == owned
