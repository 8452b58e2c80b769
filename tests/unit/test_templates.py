"""Rendering a policy from its template: substitution, `$$`, the overlay, and errors that name the culprit."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from pydantic import ValidationError

from stampede.api.crd import render_crd_yaml
from stampede.api.spec import PolicySpec
from stampede.api.template_crds import render_template_crd
from stampede.api.templates import TemplateDocument, TemplateProblem, render, render_spec, substitute
from stampede.handlers.templates import TemplateStore, entry_of
from tests.unit.test_crd import REPO, _as_json_schema, _nodes


def _policy() -> dict[str, Any]:
    return {
        "pollInterval": "$(interval)",
        "signals": [
            {"name": "hitRate", "query": 'sum(rate(cache_hits_total{service="$(service)"}[1m]))'},
            {"name": "dbLoad", "query": 'max(db_load{service="$(service)"})'},
        ],
        "severities": [{"level": "P1", "any": ["hitRate < 0.5"], "for": "1m"}],
        "recovery": {"all": ["hitRate > 0.9"], "for": "2m"},
        "phases": [
            {
                "name": "immediate",
                "actions": [
                    {
                        "name": "breaker",
                        "configMap": {"name": "$(service)-config", "data": {"$(prefix)_BREAKER": "on", "PRICE": "$$5"}},
                    },
                    {"name": "scale", "scale": {"kind": "Deployment", "name": "$(service)", "replicas": "$(replicas)"}},
                ],
            }
        ],
    }


def _template(
    policy: dict[str, Any] | None = None, *, parameters: list[dict[str, Any]] | None = None, generation: int = 3
) -> TemplateDocument:
    return TemplateDocument.model_validate(
        {
            "apiVersion": "stampede.aurum.io/v1alpha1",
            "kind": "ClusterStampedePolicyTemplate",
            "metadata": {"name": "runbook", "generation": generation},
            "spec": {
                "parameters": parameters
                if parameters is not None
                else [
                    {"name": "service"},
                    {"name": "prefix", "default": "APP"},
                    {"name": "interval", "default": "15s"},
                    {"name": "replicas", "default": "4"},
                ],
                "policy": policy if policy is not None else _policy(),
            },
        }
    )


REF = {"kind": "ClusterStampedePolicyTemplate", "name": "runbook"}


def test_every_string_of_the_template_gets_its_arguments_and_defaults() -> None:
    spec = render_spec({"templateRef": REF, "arguments": {"service": "checkout", "replicas": "8"}}, _template())
    assert spec.signals[0].query == 'sum(rate(cache_hits_total{service="checkout"}[1m]))'
    action = spec.phases[0].actions[0]
    assert action.config_map is not None
    assert action.config_map.name == "checkout-config"
    assert spec.phases[0].actions[1].scale is not None
    assert spec.phases[0].actions[1].scale.replicas == 8, "a quoted number fills a number field"
    assert spec.poll_interval.total_seconds() == 15


def test_map_keys_are_substituted_too() -> None:
    rendered = render({"templateRef": REF, "arguments": {"service": "a", "prefix": "CART"}}, _template())
    assert rendered["phases"][0]["actions"][0]["configMap"]["data"] == {"CART_BREAKER": "on", "PRICE": "$5"}


def test_a_double_dollar_is_a_literal_dollar_and_is_never_substituted_again() -> None:
    assert substitute("$$(service) costs $$5, $(service)", {"service": "x"}) == "$(service) costs $5, x"
    assert substitute("a lone $ stays", {}) == "a lone $ stays"
    assert substitute("$(a)", {"a": "$(b)"}) == "$(b)", "a value is inserted once, not rendered again"


def test_rendering_never_changes_the_template_or_the_policy() -> None:
    template = _template()
    before = copy.deepcopy(template.spec.policy)
    own = {"templateRef": REF, "arguments": {"service": "checkout"}}
    own_before = copy.deepcopy(own)
    first = render(own, template)
    first["signals"].clear()
    assert template.spec.policy == before
    assert own == own_before
    assert render(own, template)["signals"], "a second render is unaffected by changes to the first"


def test_the_policys_own_top_level_fields_replace_the_templates_whole() -> None:
    own = {
        "templateRef": REF,
        "arguments": {"service": "checkout"},
        "mode": "DryRun",
        "pollInterval": "5s",
        "phases": [{"name": "only", "actions": [{"name": "warm", "job": {"fromCronJob": "warm"}}]}],
    }
    spec = render_spec(own, _template())
    assert spec.mode.value == "DryRun"
    assert spec.poll_interval.total_seconds() == 5, "the policy's value wins over the template's $(interval)"
    assert [phase.name for phase in spec.phases] == ["only"], "lists are replaced, not merged"
    assert spec.signals[0].query.endswith('{service="checkout"}[1m]))'), "untouched fields come from the template"
    assert spec.template_ref is not None and spec.template_ref.name == "runbook"


def test_the_rendered_spec_records_the_template_generation() -> None:
    spec = render_spec({"templateRef": REF, "arguments": {"service": "a"}}, _template(generation=7))
    assert spec.template_generation == 7
    assert render_spec(_plain(), None).template_generation is None


def test_a_missing_argument_without_default_is_named() -> None:
    with pytest.raises(TemplateProblem) as raised:
        render({"templateRef": REF, "arguments": {}}, _template())
    message = str(raised.value)
    assert "spec.arguments.service" in message and "missing argument 'service'" in message
    assert "ClusterStampedePolicyTemplate runbook" in message


def test_an_unknown_argument_is_named_with_the_declared_ones() -> None:
    with pytest.raises(TemplateProblem) as raised:
        render({"templateRef": REF, "arguments": {"service": "a", "sevrice": "b"}}, _template())
    message = str(raised.value)
    assert "unknown argument 'sevrice'" in message
    assert "declares interval, prefix, replicas, service" in message


def test_every_argument_problem_is_reported_at_once() -> None:
    with pytest.raises(TemplateProblem) as raised:
        render({"templateRef": REF, "arguments": {"typo": "b"}}, _template())
    assert "unknown argument 'typo'" in str(raised.value) and "missing argument 'service'" in str(raised.value)


def test_a_missing_template_is_named() -> None:
    with pytest.raises(TemplateProblem, match=r"spec\.templateRef: ClusterStampedePolicyTemplate runbook not found"):
        render({"templateRef": REF}, None)


def test_arguments_without_a_template_are_refused() -> None:
    with pytest.raises(TemplateProblem, match=r"spec\.arguments: given without spec\.templateRef"):
        render({**_plain(), "arguments": {"a": "b"}}, None)


def test_a_non_string_argument_asks_for_quotes() -> None:
    with pytest.raises(TemplateProblem, match=r"spec.arguments.replicas: must be a string \(quote it\)"):
        render({"templateRef": REF, "arguments": {"service": "a", "replicas": 8}}, _template())


def test_a_rendered_spec_that_is_not_a_valid_policy_fails_with_the_policys_paths() -> None:
    with pytest.raises(ValidationError) as raised:
        render_spec({"templateRef": REF, "arguments": {"service": "Not_A_Dns_Name"}}, _template())
    locations = {".".join(str(part) for part in error["loc"]) for error in raised.value.errors()}
    assert "phases.0.actions.0.configMap.name" in locations


def test_a_template_referencing_an_undeclared_parameter_is_invalid() -> None:
    with pytest.raises(ValidationError, match=r"policy.signals\[0\].query: \$\(servce\) names no declared parameter"):
        _template({**_policy(), "signals": [{"name": "hitRate", "query": "x{s='$(servce)'}"}]})


def test_a_template_cannot_itself_name_a_template() -> None:
    with pytest.raises(ValidationError, match=r"policy\.templateRef: a template cannot itself use a template"):
        _template({**_policy(), "templateRef": REF})


def test_duplicate_parameters_are_refused() -> None:
    with pytest.raises(ValidationError, match="duplicate parameter name 'service'"):
        _template(parameters=[{"name": "service"}, {"name": "service"}, {"name": "prefix"}, {"name": "interval"}])


def test_a_plain_policy_renders_to_itself() -> None:
    assert render(_plain(), None) == _plain()


def _plain() -> dict[str, Any]:
    policy = copy.deepcopy(_policy())
    policy["pollInterval"] = "15s"
    text = yaml.safe_dump(policy).replace("$(service)", "svc").replace("$(prefix)", "APP").replace("$$", "$")
    loaded: dict[str, Any] = yaml.safe_load(text.replace("$(replicas)", "4"))
    return loaded


# -- the operator's store: one parse per template change, one render per policy change ----------------


def _body(name: str, spec: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name}, "spec": spec}


def _entry(policy: dict[str, Any] | None = None, *, resource_version: str = "1") -> Any:
    return entry_of(
        {
            "apiVersion": "stampede.aurum.io/v1alpha1",
            "kind": "ClusterStampedePolicyTemplate",
            "metadata": {"name": "runbook", "generation": int(resource_version), "resourceVersion": resource_version},
            "spec": {"parameters": [{"name": "service"}], "policy": policy or _plain()},
        }
    )


def test_the_store_renders_a_policy_once_while_neither_it_nor_its_template_changes() -> None:
    store = TemplateStore()
    index = {"runbook": [_entry()]}
    store.attach(namespaced={}, cluster=index)
    store.cluster_served = True
    body = _body("checkout", {"templateRef": REF, "arguments": {"service": "checkout"}})
    first = store.policy_spec(body)
    assert store.policy_spec(body) is first
    assert store.renders == 1
    edited = {**_plain(), "pollInterval": "30s"}
    index["runbook"] = [_entry(edited, resource_version="2")]
    assert store.policy_spec(body).poll_interval.total_seconds() == 30, "a template edit is seen at the next poll"
    assert store.policy_spec(body).template_generation == 2
    assert store.renders == 2


def test_the_store_names_a_cluster_template_it_does_not_watch() -> None:
    store = TemplateStore()
    store.attach(namespaced={}, cluster=None)
    with pytest.raises(TemplateProblem, match="does not read cluster-scoped templates"):
        store.policy_spec(_body("a", {"templateRef": REF}))


def test_the_store_looks_namespaced_templates_up_in_the_policys_namespace() -> None:
    store = TemplateStore()
    entry = _entry()
    store.attach(namespaced={("shop", "runbook"): [entry]}, cluster={})
    ref = {"kind": "StampedePolicyTemplate", "name": "runbook"}
    assert store.policy_spec(_body("a", {"templateRef": ref, "arguments": {"service": "a"}})).signals
    with pytest.raises(TemplateProblem, match="StampedePolicyTemplate runbook not found in namespace other"):
        store.policy_spec(_body("a", {"templateRef": ref}, namespace="other"))


def test_an_invalid_template_is_reported_on_its_policies() -> None:
    store = TemplateStore()
    broken = entry_of(
        {"apiVersion": "x", "kind": "ClusterStampedePolicyTemplate", "metadata": {"name": "r"}, "spec": {}}
    )
    assert broken.document is None
    store.attach(namespaced={}, cluster={"runbook": [broken]})
    with pytest.raises(TemplateProblem, match=r"runbook is invalid: spec.policy: Field required"):
        store.policy_spec(_body("a", {"templateRef": REF}))


def test_policies_from_one_template_share_their_equal_parts_and_keep_their_own() -> None:
    policy = _plain()
    policy["signals"][0]["query"] = 'sum(hits{service="$(service)"})'
    store = TemplateStore()
    store.attach(namespaced={}, cluster={"runbook": [_entry(policy)]})
    store.cluster_served = True
    a = store.policy_spec(_body("a", {"templateRef": REF, "arguments": {"service": "a"}}))
    b = store.policy_spec(_body("b", {"templateRef": REF, "arguments": {"service": "b"}}))
    assert a.severities[0] is b.severities[0] and a.recovery is b.recovery, "equal parts are one object"
    assert a.signals[1] is b.signals[1]
    assert a.signals[0] is not b.signals[0], "parts that differ are not shared"
    assert (a.signals[0].query, b.signals[0].query) == ('sum(hits{service="a"})', 'sum(hits{service="b"})')
    assert a.template_generation == b.template_generation == 1
    assert (
        a.model_dump()
        == render_spec({"templateRef": REF, "arguments": {"service": "a"}}, _entry(policy).document).model_dump()
    )


def test_a_plain_policys_shared_parts_equal_what_validation_gives() -> None:
    store = TemplateStore()
    store.attach(namespaced={}, cluster={})
    bodies = [{"metadata": {"namespace": "shop", "name": n, "uid": n, "generation": 1}, "spec": _plain()} for n in "ab"]
    a, b = (store.policy_spec(body) for body in bodies)
    assert a.signals[0] is b.signals[0] and a.phases[0] is b.phases[0]
    assert a is not b, "the spec itself is each policy's own"
    assert a == b == PolicySpec.model_validate(_plain())
    assert a.model_dump() == PolicySpec.model_validate(_plain()).model_dump()


# -- the CRDs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plural", "cluster", "short"),
    [("stampedepolicytemplates", False, "stpt"), ("clusterstampedepolicytemplates", True, "cstpt")],
)
def test_the_committed_template_crds_are_generated_and_named_as_the_contract_says(
    plural: str, cluster: bool, short: str
) -> None:
    crd = render_template_crd(cluster=cluster)
    assert (REPO / "crds" / f"{plural}.stampede.aurum.io.yaml").read_text() == render_crd_yaml(crd)
    assert crd["spec"]["scope"] == ("Cluster" if cluster else "Namespaced")
    assert crd["spec"]["names"]["shortNames"] == [short]
    assert crd["spec"]["names"]["categories"] == ["stampede"]
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert root["properties"]["metadata"] == {"type": "object"}
    policy = root["properties"]["spec"]["properties"]["policy"]
    assert policy["x-kubernetes-preserve-unknown-fields"] is True, "an unrendered policy must not be pruned"


@pytest.mark.parametrize("cluster", [False, True])
def test_the_template_crds_install_and_explain_every_field(cluster: bool) -> None:
    crd = render_template_crd(cluster=cluster)
    assert kubernetes_validate.validate(crd, "1.31", strict=True) == "1.31"
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _nodes(root):
        if path != ".metadata":
            assert node.get("description"), f"{path} has no description for kubectl explain"


def test_the_example_template_and_policies_fit_their_crds() -> None:
    from stampede.api.crd import render_crd

    schemas = {
        "ClusterStampedePolicyTemplate": render_template_crd(cluster=True),
        "StampedePolicy": render_crd(),
    }
    documents = list(yaml.safe_load_all((REPO / "examples" / "many-services.yaml").read_text()))
    assert [d["kind"] for d in documents] == ["ClusterStampedePolicyTemplate", *["StampedePolicy"] * 3]
    for document in documents:
        schema = _as_json_schema(schemas[document["kind"]]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        jsonschema.validate(document, schema)
