"""Server-owned metadata, writes, subresources, selectors and events, exercised over raw HTTP."""

from __future__ import annotations

from typing import Any

import aiohttp

STP = "/apis/stampede.aurum.io/v1alpha1/namespaces/default/stampedepolicies"
CMS = "/api/v1/namespaces/default/configmaps"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSONP = {"Content-Type": "application/json-patch+json"}


async def call(
    api: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, Any]:
    async with api.request(method, path, json=body, headers=headers, params=params) as rsp:
        return rsp.status, await rsp.json(content_type=None)


def stp(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "stampede.aurum.io/v1alpha1",
        "kind": "StampedePolicy",
        "metadata": {"name": name},
        "spec": spec or {"target": "web"},
    }


async def test_discovery_reports_group_versions_verbs_and_subresources(api: aiohttp.ClientSession) -> None:
    _, core = await call(api, "GET", "/api/v1")
    assert core["groupVersion"] == "v1"
    names = {r["name"]: r for r in core["resources"]}
    assert names["namespaces"]["namespaced"] is False
    assert "watch" in names["configmaps"]["verbs"]
    _, apps = await call(api, "GET", "/apis/apps/v1")
    entries = {r["name"]: r for r in apps["resources"]}
    assert entries["deployments/scale"]["kind"] == "Scale"
    assert entries["deployments/scale"]["group"] == "autoscaling"
    assert "deployments/status" in entries
    assert "statefulsets/scale" in entries
    _, custom = await call(api, "GET", "/apis/stampede.aurum.io/v1alpha1")
    policy = {r["name"]: r for r in custom["resources"]}
    assert policy["stampedepolicies"]["shortNames"] == ["stp"]
    assert policy["stampedepolicies"]["categories"] == ["stampede"]
    assert "stampedepolicies/status" in policy
    _, groups = await call(api, "GET", "/apis")
    (stampede,) = [g for g in groups["groups"] if g["name"] == "stampede.aurum.io"]
    assert stampede["versions"] == [{"groupVersion": "stampede.aurum.io/v1alpha1", "version": "v1alpha1"}]
    assert stampede["preferredVersion"] == {"groupVersion": "stampede.aurum.io/v1alpha1", "version": "v1alpha1"}
    (apps_group,) = [g for g in groups["groups"] if g["name"] == "apps"]
    assert {"groupVersion": "apps/v1", "version": "v1"} in apps_group["versions"]
    _, version = await call(api, "GET", "/version")
    assert version["major"] == "1"


async def test_namespace_paths_are_objects_not_prefixes(api: aiohttp.ClientSession) -> None:
    status, ns = await call(api, "GET", "/api/v1/namespaces/default")
    assert status == 200
    assert ns["kind"] == "Namespace"
    assert ns["status"]["phase"] == "Active"
    status, lst = await call(api, "GET", "/api/v1/namespaces")
    assert status == 200
    assert lst["kind"] == "NamespaceList"


async def test_created_objects_get_uid_resource_version_generation_and_timestamp(
    api: aiohttp.ClientSession,
) -> None:
    status, obj = await call(api, "POST", STP, stp("a"))
    assert status == 201
    meta = obj["metadata"]
    assert meta["uid"]
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    status, obj2 = await call(api, "POST", STP, stp("b"))
    assert int(obj2["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    status, again = await call(api, "POST", STP, stp("a"))
    assert status == 409
    assert again["reason"] == "AlreadyExists"


async def test_generate_name_produces_distinct_names(api: aiohttp.ClientSession) -> None:
    body = {"metadata": {"generateName": "ev-"}, "involvedObject": {"name": "x"}, "message": "hi"}
    names = set()
    for _ in range(3):
        status, obj = await call(api, "POST", "/api/v1/namespaces/default/events", body)
        assert status == 201
        names.add(obj["metadata"]["name"])
    assert len(names) == 3
    assert all(n.startswith("ev-") and len(n) == 8 for n in names)


async def test_create_in_missing_namespace_gets_404(api: aiohttp.ClientSession) -> None:
    status, body = await call(api, "POST", "/api/v1/namespaces/nowhere/configmaps", {"metadata": {"name": "x"}})
    assert status == 404
    assert "nowhere" in body["message"]


async def test_generation_bumps_on_spec_changes_but_not_on_metadata_or_status_writes(
    api: aiohttp.ClientSession,
) -> None:
    await call(api, "POST", STP, stp("g"))
    _, obj = await call(api, "PATCH", f"{STP}/g", {"metadata": {"labels": {"x": "y"}}}, headers=MERGE)
    assert obj["metadata"]["generation"] == 1
    _, obj = await call(api, "PATCH", f"{STP}/g/status", {"status": {"state": "Armed"}}, headers=MERGE)
    assert obj["metadata"]["generation"] == 1
    assert obj["status"]["state"] == "Armed"
    _, obj = await call(api, "PATCH", f"{STP}/g", {"spec": {"target": "db"}}, headers=MERGE)
    assert obj["metadata"]["generation"] == 2


async def test_noop_patch_keeps_the_resource_version(api: aiohttp.ClientSession) -> None:
    _, obj = await call(api, "POST", STP, stp("n"))
    _, same = await call(api, "PATCH", f"{STP}/n", {"spec": {"target": "web"}}, headers=MERGE)
    assert same["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


async def test_stale_resource_version_on_put_gets_409(api: aiohttp.ClientSession) -> None:
    _, obj = await call(api, "POST", CMS, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    obj["data"] = {"a": "2"}
    status, fresh = await call(api, "PUT", f"{CMS}/c", obj)
    assert status == 200
    assert fresh["data"] == {"a": "2"}
    obj["data"] = {"a": "3"}
    status, err = await call(api, "PUT", f"{CMS}/c", obj)
    assert status == 409
    assert err["reason"] == "Conflict"


async def test_stale_resource_version_in_merge_patch_gets_409(api: aiohttp.ClientSession) -> None:
    _, obj = await call(api, "POST", CMS, {"metadata": {"name": "m"}, "data": {"a": "1"}})
    await call(api, "PATCH", f"{CMS}/m", {"data": {"b": "2"}}, headers=MERGE)
    status, _ = await call(
        api,
        "PATCH",
        f"{CMS}/m",
        {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "data": {"c": "3"}},
        headers=MERGE,
    )
    assert status == 409


async def test_merge_patch_null_deletes_keys(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", CMS, {"metadata": {"name": "d", "labels": {"a": "1", "b": "2"}}, "data": {"k": "v"}})
    _, obj = await call(api, "PATCH", f"{CMS}/d", {"metadata": {"labels": {"a": None}}, "data": None}, headers=MERGE)
    assert obj["metadata"]["labels"] == {"b": "2"}
    assert "data" not in obj


async def test_json_patch_test_failure_gets_422(api: aiohttp.ClientSession) -> None:
    _, obj = await call(api, "POST", STP, stp("j"))
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": obj["metadata"]["resourceVersion"]},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
    ]
    status, patched = await call(api, "PATCH", f"{STP}/j", ops, headers=JSONP)
    assert status == 200
    assert patched["metadata"]["finalizers"] == ["x/y"]
    status, _err = await call(api, "PATCH", f"{STP}/j", ops, headers=JSONP)
    assert status == 422


async def test_strategic_merge_patch_merges_containers_by_name(api: aiohttp.ClientSession) -> None:
    containers = [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]
    await call(
        api,
        "POST",
        DEPLOYS,
        {"metadata": {"name": "s"}, "spec": {"template": {"spec": {"containers": containers}}}},
    )
    _, obj = await call(
        api,
        "PATCH",
        f"{DEPLOYS}/s",
        {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}},
        headers={"Content-Type": "application/strategic-merge-patch+json"},
    )
    assert obj["spec"]["template"]["spec"]["containers"] == [
        {"name": "a", "image": "a:1"},
        {"name": "b", "image": "b:2"},
    ]
    status, _ = await call(
        api, "PATCH", f"{STP}/s", {}, headers={"Content-Type": "application/strategic-merge-patch+json"}
    )
    assert status in (404, 415)


async def test_status_subresource_is_isolated_from_the_main_resource(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", STP, {**stp("s"), "status": {"state": "Ignored"}})
    _, obj = await call(api, "GET", f"{STP}/s")
    assert "status" not in obj
    _, obj = await call(api, "PATCH", f"{STP}/s", {"spec": {"target": "x"}, "status": {"state": "Nope"}}, headers=MERGE)
    assert "status" not in obj
    assert obj["spec"]["target"] == "x"
    _, obj = await call(
        api, "PATCH", f"{STP}/s/status", {"spec": {"target": "y"}, "status": {"state": "Ok"}}, headers=MERGE
    )
    assert obj["spec"]["target"] == "x"
    assert obj["status"] == {"state": "Ok"}
    obj["status"] = {"state": "Put"}
    status, put = await call(api, "PUT", f"{STP}/s/status", obj)
    assert status == 200
    assert put["status"] == {"state": "Put"}
    assert put["metadata"]["generation"] == 2


async def test_scale_subresource_returns_scale_and_changes_only_replicas(api: aiohttp.ClientSession) -> None:
    await call(
        api,
        "POST",
        DEPLOYS,
        {"metadata": {"name": "w"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "w"}}}},
    )
    _, scale = await call(api, "GET", f"{DEPLOYS}/w/scale")
    assert scale["kind"] == "Scale"
    assert scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"] == {"replicas": 2, "selector": "app=w"}
    status, scale = await call(api, "PATCH", f"{DEPLOYS}/w/scale", {"spec": {"replicas": 5}}, headers=MERGE)
    assert status == 200
    assert scale["spec"]["replicas"] == 5
    _, deploy = await call(api, "GET", f"{DEPLOYS}/w")
    assert deploy["spec"]["replicas"] == 5
    assert deploy["metadata"]["generation"] == 2
    assert deploy["status"]["readyReplicas"] == 5
    assert deploy["status"]["observedGeneration"] == 2
    _, scale = await call(api, "GET", f"{DEPLOYS}/w/scale")
    scale["spec"]["replicas"] = 1
    status, _ = await call(api, "PUT", f"{DEPLOYS}/w/scale", scale)
    assert status == 200
    status, _ = await call(api, "PUT", f"{DEPLOYS}/w/scale", scale)
    assert status == 409


async def test_list_has_kind_api_version_and_resource_version(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", STP, stp("l"))
    _, lst = await call(api, "GET", "/apis/stampede.aurum.io/v1alpha1/stampedepolicies")
    assert lst["kind"] == "StampedePolicyList"
    assert lst["apiVersion"] == "stampede.aurum.io/v1alpha1"
    assert int(lst["metadata"]["resourceVersion"]) >= int(lst["items"][0]["metadata"]["resourceVersion"])


async def test_list_pagination_with_limit_and_continue(api: aiohttp.ClientSession) -> None:
    for n in range(5):
        await call(api, "POST", CMS, {"metadata": {"name": f"p{n}"}})
    _, page = await call(api, "GET", CMS, params={"limit": "2"})
    names = [i["metadata"]["name"] for i in page["items"]]
    while page["metadata"]["continue"]:
        _, page = await call(api, "GET", CMS, params={"limit": "2", "continue": page["metadata"]["continue"]})
        names += [i["metadata"]["name"] for i in page["items"]]
    assert names == [f"p{n}" for n in range(5)]


async def test_label_and_field_selectors_filter_lists(api: aiohttp.ClientSession) -> None:
    for name, labels in [("x1", {"app": "a", "tier": "web"}), ("x2", {"app": "b"}), ("x3", {"app": "c"})]:
        await call(api, "POST", CMS, {"metadata": {"name": name, "labels": labels}})

    async def names(**params: str) -> list[str]:
        _, lst = await call(api, "GET", CMS, params=params)
        return [i["metadata"]["name"] for i in lst["items"]]

    assert await names(labelSelector="app=a") == ["x1"]
    assert await names(labelSelector="app==b") == ["x2"]
    assert await names(labelSelector="app!=a") == ["x2", "x3"]
    assert await names(labelSelector="app in (a,c)") == ["x1", "x3"]
    assert await names(labelSelector="app notin (a,c)") == ["x2"]
    assert await names(labelSelector="tier") == ["x1"]
    assert await names(labelSelector="!tier") == ["x2", "x3"]
    assert await names(fieldSelector="metadata.name=x3") == ["x3"]
    assert await names(fieldSelector="metadata.name!=x3,metadata.namespace=default") == ["x1", "x2"]


async def test_finalizers_delay_deletion_until_removed(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", STP, {**stp("f"), "metadata": {"name": "f", "finalizers": ["a/b"]}})
    status, obj = await call(api, "DELETE", f"{STP}/f")
    assert status == 200
    assert obj["metadata"]["deletionTimestamp"]
    _, still = await call(api, "GET", f"{STP}/f")
    assert still["metadata"]["deletionTimestamp"] == obj["metadata"]["deletionTimestamp"]
    status, _ = await call(api, "PATCH", f"{STP}/f", {"metadata": {"finalizers": ["a/b", "c/d"]}}, headers=MERGE)
    assert status == 422
    await call(api, "PATCH", f"{STP}/f", {"metadata": {"finalizers": None}}, headers=MERGE)
    status, _ = await call(api, "GET", f"{STP}/f")
    assert status == 404


async def test_builtin_delete_returns_status_and_then_404(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", CMS, {"metadata": {"name": "z"}})
    status, body = await call(api, "DELETE", f"{CMS}/z")
    assert status == 200
    assert body["kind"] == "Status"
    assert body["status"] == "Success"
    status, body = await call(api, "DELETE", f"{CMS}/z")
    assert status == 404
    assert body["reason"] == "NotFound"


async def test_events_are_stored_and_selectable_by_involved_object(api: aiohttp.ClientSession) -> None:
    _, obj = await call(api, "POST", STP, stp("e"))
    ref = {"kind": "StampedePolicy", "name": "e", "namespace": "default", "uid": obj["metadata"]["uid"]}
    await call(
        api,
        "POST",
        "/api/v1/namespaces/default/events",
        {
            "metadata": {"generateName": "e."},
            "involvedObject": ref,
            "reason": "Armed",
            "message": "armed",
            "type": "Normal",
        },
    )
    await call(
        api,
        "POST",
        "/api/v1/namespaces/default/events",
        {"metadata": {"generateName": "o."}, "involvedObject": {**ref, "name": "other"}, "reason": "Other"},
    )
    sel = (
        f"involvedObject.name=e,involvedObject.namespace=default,involvedObject.kind=StampedePolicy,"
        f"involvedObject.uid={ref['uid']}"
    )
    _, lst = await call(api, "GET", "/api/v1/namespaces/default/events", params={"fieldSelector": sel})
    assert [e["reason"] for e in lst["items"]] == ["Armed"]
    status, _ = await call(
        api,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        {"metadata": {"name": "new"}, "regarding": ref, "reason": "New", "note": "n", "action": "A"},
    )
    assert status == 201


async def test_crd_posted_at_runtime_becomes_discoverable(api: aiohttp.ClientSession) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "kopfpeerings.kopf.dev"},
        "spec": {
            "group": "kopf.dev",
            "scope": "Namespaced",
            "names": {"kind": "KopfPeering", "plural": "kopfpeerings", "singular": "kopfpeering"},
            # A real server refuses a v1 CRD without a schema ("schemas are required").
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                }
            ],
        },
    }
    status, _ = await call(api, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 201
    _, res = await call(api, "GET", "/apis/kopf.dev/v1")
    assert res["resources"][0]["kind"] == "KopfPeering"
    status, _ = await call(
        api, "POST", "/apis/kopf.dev/v1/namespaces/default/kopfpeerings", {"metadata": {"name": "default"}}
    )
    assert status == 201


async def test_table_rendering_uses_printer_columns(api: aiohttp.ClientSession) -> None:
    await call(api, "POST", STP, stp("t"))
    await call(api, "PATCH", f"{STP}/t/status", {"status": {"state": "Armed"}}, headers=MERGE)
    _, table = await call(
        api, "GET", STP, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    )
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "State", "Target", "Age"]
    assert table["rows"][0]["cells"][:3] == ["t", "Armed", "web"]
