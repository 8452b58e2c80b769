"""The emulated API server refuses what a real kube-apiserver refuses, one test per rule.

Each rule is exercised at its limit: the largest accepted value passes and one byte or item more is
refused with the real server's status code, so a harness that drifts back to lenient fails here.
Most tests drive the store directly (the rules sit under HTTP); the CRD-column test goes through the
Table API that kubectl reads.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import aiohttp
import pytest
import yaml

from tests.harness import patches, schemas
from tests.harness.resources import load_yaml_documents
from tests.harness.server import Harness
from tests.harness.store import MERGE, ApiError, Store, Strictness

REPO = pathlib.Path(__file__).resolve().parents[2]
NS = "default"
KiB = 1024
Obj = dict[str, Any]


def store(strictness: Strictness | None = None, *, repo_crd: bool = True) -> Store:
    result = Store(strictness=strictness)
    if repo_crd:
        for doc in load_yaml_documents([REPO / "crds"]):
            create(result, doc)
    return result


def create(s: Store, body: Obj) -> Obj:
    api_version, kind = body["apiVersion"], body["kind"]
    info = s.catalogue.by_kind(api_version, kind)
    assert info is not None, kind
    return s.create(info, namespace=NS if info.namespaced else None, body=copy.deepcopy(body))


def refused(s: Store, body: Obj, code: int = 422) -> str:
    with pytest.raises(ApiError) as caught:
        create(s, body)
    assert caught.value.code == code, caught.value.message
    return caught.value.message


def cm(name: str = "c", *, data: dict[str, str] | None = None, **meta: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}, "data": data or {"k": "v"}}


def policy(**spec_overrides: Any) -> Obj:
    spec: Obj = {
        "signals": [{"name": "hitRate", "query": "vector(1)"}],
        "severities": [{"level": "P1", "any": ["hitRate < 0.5"], "for": "1m"}],
        "recovery": {"all": ["hitRate > 0.9"], "for": "5m"},
        "phases": [
            {
                "name": "now",
                "actions": [{"name": "scale", "scale": {"kind": "Deployment", "name": "api", "replicas": 3}}],
            }
        ],
    }
    spec.update(spec_overrides)
    return {
        "apiVersion": "stampede.aurum.io/v1alpha1",
        "kind": "StampedePolicy",
        "metadata": {"name": "p"},
        "spec": spec,
    }


def crd(schema: Obj, *, name: str = "widgets.example.com") -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }


# -- CRDs: structural schemas (apiextensions-apiserver schema/validation.go) -----------------------


def test_the_repo_crd_installs_on_the_strict_server() -> None:
    s = store()
    assert s.catalogue.find("stampede.aurum.io", "v1alpha1", "stampedepolicies") is not None


def test_a_crd_whose_root_metadata_has_a_description_is_refused() -> None:
    schema = {"type": "object", "properties": {"metadata": {"type": "object", "description": "Standard metadata."}}}
    message = refused(store(repo_crd=False), crd(schema))
    assert "must not specify anything other than name and generateName" in message


def test_a_crd_may_restrict_only_name_and_generate_name_in_root_metadata() -> None:
    schema = {
        "type": "object",
        "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}}},
    }
    create(store(repo_crd=False), crd(schema))


def test_a_crd_with_an_untyped_field_or_an_array_without_items_is_refused() -> None:
    untyped = {"type": "object", "properties": {"spec": {"properties": {"a": {"type": "string"}}}}}
    assert "must not be empty for specified object fields" in refused(store(repo_crd=False), crd(untyped))
    no_items = {"type": "object", "properties": {"spec": {"type": "array"}}}
    assert "items: Required value" in refused(store(repo_crd=False), crd(no_items))


def test_a_crd_with_a_value_validation_that_declares_a_type_inside_any_of_is_refused() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "string", "anyOf": [{"type": "string"}]}}}
    assert "must be empty to be structural" in refused(store(repo_crd=False), crd(schema))


def test_a_crd_whose_default_fails_its_own_schema_or_whose_cel_rule_does_not_compile_is_refused() -> None:
    bad_default = {"type": "object", "properties": {"spec": {"type": "string", "enum": ["a"], "default": "b"}}}
    assert "default" in refused(store(repo_crd=False), crd(bad_default))
    bad_rule = {
        "type": "object",
        "properties": {"spec": {"type": "object", "x-kubernetes-validations": [{"rule": "self.("}]}},
    }
    assert "x-kubernetes-validations" in refused(store(repo_crd=False), crd(bad_rule))


def test_a_crd_must_be_named_plural_dot_group() -> None:
    schema = {"type": "object"}
    assert "spec.names.plural" in refused(store(repo_crd=False), crd(schema, name="gadgets.example.com"))


# -- custom resources: pruning, defaulting, validation -------------------------------------------


def test_unknown_fields_of_a_policy_are_pruned_and_defaults_are_filled_in() -> None:
    stored = create(
        store(), policy(bogus="x", recovery={"all": ["hitRate > 0.9"], "for": "5m", "extra": 1}, rollback={})
    )
    assert "bogus" not in stored["spec"]
    assert "extra" not in stored["spec"]["recovery"]
    # Nested defaults are filled in; top-level spec fields have none in the CRD, so that a template's value
    # is not overridden by a server default the policy's author never wrote (api/templates.py).
    assert stored["spec"]["rollback"]["stepDelay"] == "30s"
    assert "mode" not in stored["spec"]


async def test_kubectl_get_stp_shows_the_mode_in_force_from_status() -> None:
    async with (
        Harness(crds=[REPO / "crds"]) as harness,
        aiohttp.ClientSession(harness.url) as api,
    ):
        path = "/apis/stampede.aurum.io/v1alpha1/namespaces/default/stampedepolicies"
        async with api.post(path, json=policy()) as rsp:
            assert rsp.status == 201, await rsp.text()
        status_path = f"{path}/{policy()['metadata']['name']}/status"
        merge = {"Content-Type": "application/merge-patch+json"}
        async with api.patch(status_path, json={"status": {"mode": "Enforce"}}, headers=merge) as rsp:
            assert rsp.status == 200, await rsp.text()
        headers = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
        async with api.get(path, headers=headers) as rsp:
            table = await rsp.json()
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert table["rows"][0]["cells"][columns.index("Mode")] == "Enforce"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"mode": "Sometimes"}, 'spec.mode: Unsupported value: "Sometimes"'),
        ({"pollInterval": "15 s"}, "spec.pollInterval"),
        ({"pollInterval": "15s\n"}, "spec.pollInterval"),
        ({"pollInterval": "15s\u00a0"}, "spec.pollInterval"),
        ({"pollInterval": 15}, "must be of type string"),
        ({"phases": []}, "should have at least 1 items"),
        ({"phases": [{"name": f"p{i}", "actions": []} for i in range(21)]}, "must have at most 20 items"),
        ({"signals": [{"name": "hitRate", "query": "x" * 8193}]}, "Too long"),
        ({"recovery": {"for": "5m"}}, "spec.recovery.all: Required value"),
    ],
)
def test_a_policy_that_breaks_its_schema_is_refused(overrides: Obj, expected: str) -> None:
    assert expected in refused(store(), policy(**overrides))


def test_a_scale_below_the_minimum_is_refused_and_the_minimum_is_accepted() -> None:
    s = store()
    action = {"name": "scale", "scale": {"kind": "Deployment", "name": "api", "replicas": 0}}
    assert "greater than or equal to 1" in refused(s, policy(phases=[{"name": "now", "actions": [action]}]))
    action["scale"]["replicas"] = 1
    create(s, policy(phases=[{"name": "now", "actions": [action]}]))


def test_x_kubernetes_validations_are_evaluated_with_cel() -> None:
    both = {
        "name": "two",
        "scale": {"kind": "Deployment", "name": "api", "replicas": 3},
        "configMap": {"name": "c", "data": {"k": "v"}},
    }
    message = refused(store(), policy(phases=[{"name": "now", "actions": [both]}]))
    assert "exactly one of configMap, scale, job" in message


def test_duplicate_list_map_keys_are_refused() -> None:
    signals = [{"name": "hitRate", "query": "vector(1)"}, {"name": "hitRate", "query": "vector(2)"}]
    assert "Duplicate value" in refused(store(), policy(signals=signals))


def test_a_nullable_map_value_keeps_its_null_and_a_non_nullable_null_is_dropped() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "marks": {"type": "object", "additionalProperties": {"type": "string", "nullable": True}},
                    "name": {"type": "string"},
                },
            }
        },
    }
    obj, errors = schemas.admit_custom_resource({"spec": {"marks": {"a": None}, "name": None}}, schema)
    assert errors == []
    assert obj["spec"] == {"marks": {"a": None}}


# -- object metadata (apimachinery objectmeta.go, util/validation) ---------------------------------


@pytest.mark.parametrize("name", ["Upper", "a..b", "-a", "a_b", "x" * 254])
def test_names_that_are_not_dns_subdomains_are_refused(name: str) -> None:
    assert "metadata.name" in refused(store(repo_crd=False), cm(name))


def test_a_namespace_name_must_be_a_dns_label() -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}
    assert "RFC 1123 label" in refused(store(repo_crd=False), body)


@pytest.mark.parametrize(
    "labels",
    [{"-bad": "v"}, {"a/b/c": "v"}, {"Example.com/x": "v"}, {"k": "v" * 64}, {"k": "bad value"}, {"k": "-v"}],
)
def test_invalid_label_keys_and_values_are_refused(labels: dict[str, str]) -> None:
    assert "metadata.labels" in refused(store(repo_crd=False), cm(labels=labels))


def test_a_63_character_label_value_and_a_prefixed_key_are_accepted() -> None:
    create(store(repo_crd=False), cm(labels={"app.kubernetes.io/name": "v" * 63, "k": ""}))


def test_annotations_are_limited_to_256_kib_of_keys_and_values_in_total() -> None:
    s = store(repo_crd=False)
    key = "kubectl.kubernetes.io/last-applied-configuration"
    create(s, cm("fits", annotations={key: "x" * (256 * KiB - len(key))}))
    message = refused(s, cm("over", annotations={key: "x" * (256 * KiB - len(key) + 1)}))
    assert "may not be more than 262144 bytes" in message


def test_annotation_sizes_count_utf8_bytes() -> None:
    s = store(repo_crd=False)
    assert "Too long" in refused(s, cm(annotations={"a": "メ" * (90 * KiB)}))  # 270 KiB of UTF-8


def test_an_annotation_key_that_is_not_a_qualified_name_is_refused() -> None:
    assert "metadata.annotations" in refused(store(repo_crd=False), cm(annotations={"bad key": "v"}))


def test_an_object_larger_than_etcd_accepts_is_refused_with_a_500() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "big"}, "data": {"k": "QQ==" * (400 * KiB)}}
    assert "request is too large" in refused(store(repo_crd=False), secret, code=500)


# -- the kinds the operator touches ---------------------------------------------------------------


def test_config_map_keys_must_be_config_map_keys() -> None:
    s = store(repo_crd=False)
    for key in (".", "..", "..x", "a b", "a/b"):
        assert "a valid config key" in refused(s, cm(data={key: "v"})) or "must not" in refused(s, cm(data={key: "v"}))
    create(s, cm("dots", data={".a": "1", "a..b": "2", "A_b-c.d": "3"}))


def test_a_config_map_holds_at_most_one_mebibyte_of_values() -> None:
    s = store(repo_crd=False)
    create(s, cm("fits", data={"a": "x" * (512 * KiB), "b": "y" * (512 * KiB)}))
    assert "must have at most 1048576 bytes" in refused(
        s, cm("over", data={"a": "x" * (512 * KiB), "b": "y" * (512 * KiB + 1)})
    )


def hpa(min_replicas: int | None, max_replicas: int) -> Obj:
    spec: Obj = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
        "maxReplicas": max_replicas,
    }
    if min_replicas is not None:
        spec["minReplicas"] = min_replicas
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "api"},
        "spec": spec,
    }


def test_an_hpa_needs_one_at_most_min_at_most_max_replicas() -> None:
    s = store(repo_crd=False)
    assert "minReplicas" in refused(s, hpa(0, 3))
    assert "must be greater than or equal to `minReplicas`" in refused(s, hpa(4, 3))
    assert "maxReplicas" in refused(s, hpa(None, 0))
    create(s, hpa(3, 3))


def test_an_hpa_update_that_raises_min_above_max_is_refused() -> None:
    s = store(repo_crd=False)
    create(s, hpa(1, 3))
    info = s.info("autoscaling", "v2", "horizontalpodautoscalers")
    with pytest.raises(ApiError) as caught:
        s.patch(
            info,
            namespace=NS,
            name="api",
            body={"spec": {"minReplicas": 5}},
            content_type="application/merge-patch+json",
        )
    assert caught.value.code == 422


def deployment(replicas: int) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api"}, "spec": {"replicas": replicas}}


def test_negative_replicas_are_refused_and_zero_is_accepted() -> None:
    s = store(repo_crd=False)
    assert "spec.replicas" in refused(s, deployment(-1))
    create(s, deployment(0))


def test_job_names_are_at_most_63_characters_and_cronjob_names_at_most_52() -> None:
    s = store(repo_crd=False)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j" * 64}, "spec": {}}
    assert "no more than 63" in refused(s, job)
    job["metadata"]["name"] = "j" * 63
    create(s, job)
    cron = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c" * 53}, "spec": {}}
    assert "no more than 52" in refused(s, cron)


def event(**fields: Any) -> Obj:
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "kopf-event-", "namespace": NS},
        "involvedObject": {"kind": "StampedePolicy", "name": "p", "namespace": NS},
        "type": "Normal",
        "reason": "ActionApplied",
        "action": "Action?",
        "message": "ok",
        "reportingComponent": "kopf",
        "reportingInstance": "dev",
        "eventTime": "2026-12-03T08:00:00.000000+00:00",
    }
    body.update(fields)
    return body


def test_an_event_with_event_time_holds_at_most_1024_bytes_of_message() -> None:
    s = store(repo_crd=False)
    create(s, event(message="メ" * 341))  # 1023 bytes
    assert "message" in refused(s, event(message="メ" * 342))  # 1026 bytes, only 342 characters


def test_an_event_with_event_time_needs_reason_action_and_the_reporter() -> None:
    s = store(repo_crd=False)
    assert "reason" in refused(s, event(reason="r" * 129))
    assert "action: Required value" in refused(s, event(action=""))
    assert "reportingInstance: Required value" in refused(s, event(reportingInstance=""))
    assert "reportingController: Required value" in refused(s, event(reportingComponent=""))


def test_an_event_without_event_time_keeps_the_old_rules() -> None:
    create(store(repo_crd=False), event(eventTime=None, message="m" * 4000, action="", reportingInstance=""))


# -- merge patch (evanphx/json-patch MergePatch) ----------------------------------------------------


def test_evanphx_merge_patch_drops_nulls_inside_objects_inside_arrays() -> None:
    target = {"status": {"applied": [{"original": {"a": "1"}}]}}
    patch = {"status": {"applied": [{"original": {"a": None, "b": "2"}}, None]}}
    assert patches.evanphx_merge_patch(target, patch) == {"status": {"applied": [{"original": {"b": "2"}}, None]}}
    # RFC 7386, as the lenient harness applies it, keeps the array as sent.
    assert patches.merge_patch(target, patch)["status"]["applied"][0]["original"] == {"a": None, "b": "2"}


def test_evanphx_merge_patch_still_deletes_and_merges_like_rfc_7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "d": [1]}
    assert patches.evanphx_merge_patch(target, {"a": {"b": None, "e": {"f": None}}, "d": None}) == {
        "a": {"c": 2, "e": {}}
    }


def test_the_store_applies_the_evanphx_merge_patch_when_switched_on() -> None:
    s = store(Strictness(merge_patch_prunes_array_nulls=True), repo_crd=False)
    create(s, cm())
    info = s.info("", "v1", "configmaps")
    body = {"metadata": {"annotations": {"x": "1"}}, "data": {"k": "v"}}
    s.patch(info, namespace=NS, name="c", body=body, content_type="application/merge-patch+json")
    fixture = yaml.safe_load((pathlib.Path(__file__).parent / "fixtures" / "stampedepolicies.yaml").read_text())
    create(s, fixture)
    stp = s.catalogue.find("stampede.aurum.io", "v1alpha1", "stampedepolicies")
    assert stp is not None
    s.create(stp, namespace=NS, body={"metadata": {"name": "p"}, "spec": {}})
    patched = s.patch(
        stp,
        namespace=NS,
        name="p",
        body={"spec": {"items": [{"a": None, "b": 1}]}},
        content_type="application/merge-patch+json",
    )
    assert patched["spec"]["items"] == [{"b": 1}]


# -- admission: OwnerReferencesPermissionEnforcement -----------------------------------------------


def job(*, block: bool | None) -> Obj:
    ref: Obj = {"apiVersion": "batch/v1", "kind": "CronJob", "name": "warm", "uid": "u-1", "controller": True}
    if block is not None:
        ref["blockOwnerDeletion"] = block
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "warm-1", "ownerReferences": [ref]},
        "spec": {},
    }


def test_block_owner_deletion_is_forbidden_with_the_admission_switch_on() -> None:
    s = store(Strictness(owner_references_permission_enforcement=True), repo_crd=False)
    message = refused(s, job(block=True), code=403)
    assert "cannot set blockOwnerDeletion" in message
    create(s, job(block=None))


def test_block_owner_deletion_is_accepted_with_the_admission_switch_off() -> None:
    create(store(Strictness(owner_references_permission_enforcement=False), repo_crd=False), job(block=True))


# -- the switches ----------------------------------------------------------------------------------


def test_the_lenient_mode_accepts_what_the_real_server_refuses() -> None:
    s = store(Strictness.lenient(), repo_crd=False)
    create(s, cm("Upper", data={".": "v"}, labels={"k": "v" * 64}))


def test_the_default_is_strict_with_every_switch_on() -> None:
    default = Strictness()
    assert default == Strictness.everything()


def test_an_event_message_cut_by_the_operator_is_accepted_where_the_uncut_one_is_refused() -> None:
    from stampede.handlers.operator import fit_event_message

    s = store(repo_crd=False)
    message = "ConfigMap web/banner: text '" + "メンテナンス中です。" * 60 + "'"
    assert "message" in refused(s, event(message=message))
    create(s, event(message=fit_event_message(message)))


async def test_request_bodies_are_taken_up_to_the_api_servers_3_mib_and_refused_beyond() -> None:
    """A Secret holding a ConfigMap's near 1 MiB as base64 is a ~1.2 MiB body: a real server takes it."""
    path = "/api/v1/namespaces/default/secrets"

    def secret(name: str, size: int) -> Obj:
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": {"k": "QUFB" * (size // 4)}}

    async with Harness(crds=[]) as harness, aiohttp.ClientSession(harness.url) as api:
        async with api.post(path, json=secret("journal", 1200 * KiB)) as rsp:
            assert rsp.status == 201, await rsp.text()
        async with api.post(path, json=secret("over", 3 * 1024 * KiB + 4)) as rsp:
            assert rsp.status == 413, await rsp.text()


def test_a_remembered_verdict_is_never_reused_for_another_schema_or_another_value() -> None:
    loose: Obj = {
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    }
    strict = copy.deepcopy(loose)
    strict["properties"]["spec"]["properties"]["n"]["maximum"] = 3
    for _ in range(2):  # the second round answers from what the first remembered
        assert schemas.admit_custom_resource({"spec": {"n": 5}}, loose)[1] == []
        assert schemas.admit_custom_resource({"spec": {"n": 5}}, strict)[1] != []
        assert schemas.admit_custom_resource({"spec": {"n": 3}}, strict)[1] == []
        assert schemas.admit_custom_resource({"spec": {"n": 3.5}}, loose)[1] != []


def test_a_status_write_still_refuses_an_invalid_status_and_watch_events_keep_each_version() -> None:
    s = store()
    create(s, policy())
    info = s.catalogue.by_kind("stampede.aurum.io/v1alpha1", "StampedePolicy")
    assert info is not None
    watcher = s.watch(info, namespace=NS, since=s.resource_version)
    for state in ("Idle", "Incident"):
        s.patch(
            info, namespace=NS, name="p", body={"status": {"state": state}}, content_type=MERGE, subresource="status"
        )
    with pytest.raises(ApiError) as caught:
        s.patch(
            info, namespace=NS, name="p", body={"status": {"state": "Bogus"}}, content_type=MERGE, subresource="status"
        )
    assert caught.value.code == 422
    s.get(info, namespace=NS, name="p")["status"]["state"] = "changed by a caller"
    events = [watcher.queue.get_nowait() for _ in range(watcher.queue.qsize())]
    assert [(kind, obj["status"]["state"]) for kind, obj in events] == [("MODIFIED", "Idle"), ("MODIFIED", "Incident")]
    assert s.get(info, namespace=NS, name="p")["status"]["state"] == "Incident"
