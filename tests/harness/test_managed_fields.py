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


# -- writing metadata.managedFields (fieldmanager.go decodeLiveOrNew, isResetManagedFields) ---------------------


def entries_of(obj: Obj) -> list[Obj]:
    return list(obj["metadata"].get("managedFields") or [])


def test_an_update_by_another_manager_takes_an_applied_field_from_its_applier(s: Store) -> None:
    create(s)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "9"}}
    s.patch(cms(s), namespace=NS, name="c", body=body, content_type=APPLY, field_manager="argocd", force=True)
    obj = merge(s, {"data": {"x": "10"}}, manager="b")
    sets = owners(obj)
    assert ("f:data", "f:x") not in sets[("argocd", "Apply", None)]
    assert sets[("b", "Update", None)] == {("f:data", "f:x")}


def test_managed_fields_sent_in_a_patch_replace_them_as_given(s: Store) -> None:
    create(s)
    obj = merge(s, {"data": {"x": "9"}}, manager="b")
    kept = [e for e in entries_of(obj) if e["manager"] == "a"]
    obj = merge(
        s, {"metadata": {"managedFields": kept, "resourceVersion": obj["metadata"]["resourceVersion"]}}, manager="b"
    )
    assert set(owners(obj)) == {("a", "Update", None)}  # b's entry is gone and b's own request changed no field
    assert ("f:data", "f:x") not in owners(obj)[("a", "Update", None)]


def test_the_requests_own_changes_are_added_to_the_requester_over_the_managed_fields_it_sent(s: Store) -> None:
    create(s)
    obj = merge(s, {"data": {"x": "9"}}, manager="b")
    kept = [e for e in entries_of(obj) if e["manager"] == "a"]
    obj = merge(s, {"metadata": {"managedFields": kept}, "data": {"y": "7"}}, manager="b")
    sets = owners(obj)
    assert sets[("b", "Update", None)] == {("f:data", "f:y")}
    assert ("f:data", "f:y") not in sets[("a", "Update", None)]


def test_an_entry_sent_with_an_empty_field_set_is_dropped(s: Store) -> None:
    obj = create(s)
    empty = {"manager": "ghost", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {}}
    obj = merge(s, {"metadata": {"managedFields": [*entries_of(obj), empty]}}, manager="a")
    assert [e["manager"] for e in entries_of(obj)] == ["a"]


@pytest.mark.parametrize("reset", [[], [{}]], ids=["an empty list", "one empty entry"])
def test_managed_fields_reset_by_an_update_leave_the_object_untracked(s: Store, reset: list[Obj]) -> None:
    create(s)
    obj = merge(s, {"metadata": {"managedFields": reset}, "data": {"x": "9"}}, manager="b")
    assert "managedFields" not in obj["metadata"]
    assert obj["data"]["x"] == "9"


def test_undecodable_managed_fields_leave_the_live_ones_in_place(s: Store) -> None:
    before = entries_of(create(s))
    bad = {"manager": "x", "operation": "Patch", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {}}
    obj = merge(s, {"metadata": {"managedFields": [bad]}}, manager="a")
    assert owners(obj) == owners({"metadata": {"managedFields": before}})


def test_managed_fields_sent_through_the_scale_subresource_are_ignored(s: Store) -> None:
    info = s.info("apps", "v1", "deployments")
    body = {"metadata": {"name": "d"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "d"}}}}
    body["spec"]["template"] = {
        "metadata": {"labels": {"app": "d"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    s.create(info, namespace=NS, body=body, field_manager="a")
    obj = s.patch(
        info,
        namespace=NS,
        name="d",
        body={"metadata": {"managedFields": [{}]}, "spec": {"replicas": 5}},
        content_type=MERGE,
        subresource="scale",
        field_manager="op",
    )
    d = s.get(info, namespace=NS, name="d")
    sets = owners(d)
    assert sets[("op", "Update", "scale")] == {("f:spec", "f:replicas")}
    assert ("a", "Update", None) in sets
    assert obj["spec"]["replicas"] == 5


def test_an_applied_configuration_may_not_carry_managed_fields(s: Store) -> None:
    create(s)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "managedFields": []}, "data": {"x": "1"}}
    with pytest.raises(ApiError) as caught:
        s.patch(cms(s), namespace=NS, name="c", body=body, content_type=APPLY, field_manager="ssa")
    assert (caught.value.code, caught.value.message) == (400, "metadata.managedFields must be nil")


def test_managed_fields_given_on_create_are_kept_with_the_creators_fields_added(s: Store) -> None:
    given = {"manager": "argocd", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1"}
    given["fieldsV1"] = {"f:data": {"f:x": {}}}
    body = {"metadata": {"name": "c", "managedFields": [given]}, "data": {"x": "1", "y": "2"}}
    obj = s.create(cms(s), namespace=NS, body=body, field_manager="a")
    sets = owners(obj)
    assert ("f:data", "f:y") in sets[("a", "Update", None)]
    assert ("f:data", "f:x") in sets[("a", "Update", None)]  # the creator changed data.x too: it takes it
    assert ("argocd", "Update", None) not in sets


def test_managed_fields_sent_in_a_put_replace_them_as_given_and_absent_ones_keep_the_live_entries(s: Store) -> None:
    create(s)
    obj = merge(s, {"data": {"x": "9"}}, manager="b")
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    body["metadata"] = {**obj["metadata"], "managedFields": [e for e in entries_of(obj) if e["manager"] == "a"]}
    obj = s.replace(cms(s), namespace=NS, name="c", body=body, field_manager="b")
    assert set(owners(obj)) == {("a", "Update", None)}

    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
    body["metadata"] = {k: v for k, v in obj["metadata"].items() if k != "managedFields"}
    body["data"] = {**body["data"], "y": "3"}
    obj = s.replace(cms(s), namespace=NS, name="c", body=body, field_manager="b")
    sets = owners(obj)
    assert sets[("b", "Update", None)] == {("f:data", "f:y")}
    assert ("a", "Update", None) in sets  # a client that does not send managedFields never deletes them
