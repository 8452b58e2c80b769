"""The admission policies in deploy/components/admission, evaluated without an API server.

A StampedePolicy makes the operator act with its own rights; the ValidatingAdmissionPolicy
`stampede-policy-author-rights` admits a policy only if its author holds those rights themselves.
No kube-apiserver runs here, so these tests take the policies from the rendered overlays and
evaluate their CEL (match conditions, variables, validations, message expressions) with cel-python,
the way the API server's admission plugin does: variables are lazy and evaluated once, a false
validation yields its messageExpression (or its message), an error refuses (failurePolicy Fail).
The `authorizer` library is implemented here over a table of RBAC-like rules, each one
(group, resource, subresource, namespace, name, verb) with name None meaning "any name", which
is what a Role without resourceNames grants.

cel-python neither short-circuits `||`/`&&` nor stops `all()` early, so it cannot measure the API
server's CEL cost; test_expressions_stay_within_the_api_servers_cost_limits checks the shape that
keeps the policy within it instead.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import celpy  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from celpy import celtypes

from tests.deploy.rendering import KUBECTL, needs_kubectl

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("cluster", "namespaced")
AUTHOR_RIGHTS = "stampede-policy-author-rights"
STATUS_WRITER = "stampede-policy-status-writer"
TEMPLATE_AUTHOR = "stampede-template-author-rights"
OPERATOR = "system:serviceaccount:stampede-system:stampede-operator"
NS = "aurum-dev"
USER = "jane"

pytestmark = needs_kubectl


# -- rendering ----------------------------------------------------------------------------------


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(ROOT / "deploy" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def rendered(overlay: str, kind: str, name: str) -> dict[str, Any]:
    found = [o for o in render(overlay) if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind} {name}, found {len(found)}"
    return found[0]


def policy(name: str) -> dict[str, Any]:
    return rendered("cluster", "ValidatingAdmissionPolicy", name)


# -- the authorizer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One granted right; name None grants every name (a Role rule without resourceNames)."""

    group: str
    resource: str
    verb: str
    name: str | None = None
    subresource: str = ""
    namespace: str = NS


@dataclass(frozen=True)
class ResourceCheck:
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass
class Authorizer:
    """The CEL `authorizer` of the request's user, answering from `rules` and recording each check."""

    rules: frozenset[Rule]
    checks: list[tuple[ResourceCheck, str]] = field(default_factory=list)

    def allows(self, check: ResourceCheck, verb: str) -> bool:
        self.checks.append((check, verb))
        return any(
            (r.group, r.resource, r.subresource, r.namespace, r.verb)
            == (check.group, check.resource, check.subresource, check.namespace, verb)
            and (r.name is None or r.name == check.name)
            for r in self.rules
        )


@dataclass(frozen=True)
class Decision:
    allowed: bool


def _functions(authorizer: Authorizer) -> dict[str, Callable[..., Any]]:
    """The builder and decision functions of Kubernetes' CEL authz library (receiver first)."""

    def setter(attribute: str) -> Callable[[ResourceCheck, Any], ResourceCheck]:
        return lambda check, value: replace(check, **{attribute: str(value)})

    return {
        "group": setter("group"),
        "resource": setter("resource"),
        "subresource": setter("subresource"),
        "namespace": setter("namespace"),
        "name": setter("name"),
        "check": lambda check, verb: Decision(authorizer.allows(check, str(verb))),
        "allowed": lambda decision: celtypes.BoolType(decision.allowed),
    }


# -- the admission plugin, replayed --------------------------------------------------------------

ENV = celpy.Environment()


@functools.cache
def _compiled(expression: str) -> Any:
    return ENV.compile(expression)


class _Variables(celtypes.MapType):  # type: ignore[misc]
    """`variables`: each evaluated on first use, then remembered, like the API server's lazy map."""

    def __init__(self, evaluate: Callable[[str], Any], names: Iterable[str]) -> None:
        super().__init__({})
        self._evaluate = evaluate
        self._names = set(names)

    def __getitem__(self, key: Any) -> Any:
        name = str(key)
        if name not in self._names:
            raise KeyError(name)
        if not super().__contains__(key):
            super().__setitem__(key, self._evaluate(name))
        return super().__getitem__(key)


@dataclass
class Verdict:
    matched: bool
    refusals: list[str]
    checks: list[tuple[ResourceCheck, str]]

    @property
    def admitted(self) -> bool:
        return not self.refusals


class Admission:
    """One admission request against one ValidatingAdmissionPolicy, with its own lazy `variables`."""

    def __init__(
        self,
        vap: dict[str, Any],
        *,
        obj: dict[str, Any] | None,
        rules: Iterable[Rule],
        user: str,
        operation: str,
        old: dict[str, Any] | None,
        subresource: str,
    ) -> None:
        self.spec = vap["spec"]
        self.authorizer = Authorizer(frozenset(rules))
        self.functions = _functions(self.authorizer)
        target = obj or old or {}
        request = {
            "operation": operation,
            "namespace": target.get("metadata", {}).get("namespace", ""),
            "name": target.get("metadata", {}).get("name", ""),
            "subResource": subresource,
            "kind": {"group": "stampede.aurum.io", "version": "v1alpha1", "kind": target.get("kind", "")},
            "userInfo": {"username": user, "groups": ["system:authenticated"]},
        }
        expressions = {v["name"]: v["expression"] for v in self.spec.get("variables", [])}
        self.activation: dict[str, Any] = {
            "object": celpy.json_to_cel(obj),
            "oldObject": celpy.json_to_cel(old),
            "request": celpy.json_to_cel(request),
            "authorizer": ResourceCheck(),
        }
        self.variables = _Variables(lambda name: self.evaluate(expressions[name]), expressions)
        self.activation["variables"] = self.variables

    def evaluate(self, expression: str) -> Any:
        return ENV.program(_compiled(expression), functions=self.functions).evaluate(self.activation)

    def verdict(self) -> Verdict:
        for condition in self.spec.get("matchConditions", []):
            if not self.evaluate(condition["expression"]):
                return Verdict(False, [], self.authorizer.checks)
        refusals = []
        for validation in self.spec["validations"]:
            try:
                ok = self.evaluate(validation["expression"])
            except celpy.CELEvalError as error:  # failurePolicy: Fail
                refusals.append(f"expression failed: {error}")
                continue
            if ok:
                continue
            message = validation.get("message", "")
            if "messageExpression" in validation:
                # The API server falls back to `message` when the messageExpression fails, too.
                with contextlib.suppress(celpy.CELEvalError):
                    message = str(self.evaluate(validation["messageExpression"])) or message
            refusals.append(message)
        return Verdict(True, refusals, self.authorizer.checks)


def admit(
    vap: dict[str, Any],
    *,
    obj: dict[str, Any] | None,
    rules: Iterable[Rule] = (),
    user: str = USER,
    operation: str = "CREATE",
    old: dict[str, Any] | None = None,
    subresource: str = "",
) -> Verdict:
    request = Admission(vap, obj=obj, rules=rules, user=user, operation=operation, old=old, subresource=subresource)
    return request.verdict()


# -- policies and rights -------------------------------------------------------------------------


def runbook() -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "aurum-cache-stampede.yaml").read_text())
    assert obj["metadata"]["namespace"] == NS
    return obj


def every_target_kind() -> dict[str, Any]:
    """A policy naming one target of every kind the operator acts on, and every Secret reference."""
    obj = runbook()
    spec = obj["spec"]
    spec["prometheus"] = {
        "url": "https://prometheus.example",
        "bearerTokenSecretRef": {"name": "prom-token", "key": "token"},
        "caSecretRef": {"name": "prom-ca", "key": "ca.crt"},
    }
    spec["phases"] = [
        {
            "name": "one",
            "actions": [
                {
                    "name": "flags",
                    "configMap": {
                        "name": "flags",
                        "data": {"A": "1"},
                        "restart": [
                            {"kind": "Deployment", "name": "api"},
                            {"kind": "StatefulSet", "name": "cache"},
                            {"kind": "DaemonSet", "name": "agent"},
                        ],
                    },
                },
                {"name": "scale-api", "scale": {"kind": "Deployment", "name": "api", "replicas": 5}},
            ],
        },
        {
            "name": "two",
            "after": "5m",
            "actions": [
                {"name": "scale-cache", "scale": {"kind": "StatefulSet", "name": "cache", "replicas": 3}},
                {"name": "warm", "job": {"fromCronJob": "warmer"}},
            ],
        },
    ]
    return obj


# Namespace-wide rights, each with the words a refusal must contain when it is missing.
ALL_RIGHTS: dict[Rule, list[str]] = {
    Rule("", "configmaps", "patch"): ["action 'flags'", "ConfigMap 'flags'", "configmaps, verb patch"],
    Rule("", "configmaps", "get"): ["action 'flags'", "ConfigMap 'flags'", "configmaps, verb get"],
    Rule("apps", "deployments", "patch"): ["action 'flags'", "Deployment 'api'", "deployments, verb patch"],
    Rule("apps", "statefulsets", "patch"): ["action 'flags'", "StatefulSet 'cache'", "statefulsets, verb patch"],
    Rule("apps", "daemonsets", "patch"): ["action 'flags'", "DaemonSet 'agent'", "daemonsets, verb patch"],
    Rule("apps", "deployments", "patch", subresource="scale"): [
        "action 'scale-api'",
        "Deployment 'api'",
        "deployments/scale, verb patch",
    ],
    Rule("apps", "statefulsets", "patch", subresource="scale"): [
        "action 'scale-cache'",
        "StatefulSet 'cache'",
        "statefulsets/scale, verb patch",
    ],
    Rule("autoscaling", "horizontalpodautoscalers", "patch"): [
        "action 'scale-api'",
        "HorizontalPodAutoscalers",
        "horizontalpodautoscalers, verb patch",
    ],
    Rule("batch", "cronjobs", "get"): ["action 'warm'", "CronJob 'warmer'", "cronjobs, verb get"],
    Rule("batch", "jobs", "create"): ["action 'warm'", "Jobs", "jobs, verb create"],
    Rule("", "secrets", "get"): ["prometheus.bearerTokenSecretRef", "Secret 'prom-token'", "secrets, verb get"],
}


def rights_for_runbook() -> set[Rule]:
    """What examples/aurum-cache-stampede.yaml makes the operator do in aurum-dev, as an author's Role."""
    return {
        Rule("", "configmaps", "patch"),
        Rule("", "configmaps", "get"),
        Rule("apps", "deployments", "patch"),  # rollout restart of aurum-api and aurum-worker
        Rule("apps", "deployments", "patch", subresource="scale"),
        Rule("autoscaling", "horizontalpodautoscalers", "patch"),
        Rule("batch", "cronjobs", "get"),
        Rule("batch", "jobs", "create"),
        Rule("", "secrets", "get", name="platform-team-webhook"),
    }


# -- the rendered objects ------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_both_overlays_ship_the_admission_policies_and_their_bindings(overlay: str) -> None:
    for name in (AUTHOR_RIGHTS, STATUS_WRITER, TEMPLATE_AUTHOR):
        vap = rendered(overlay, "ValidatingAdmissionPolicy", name)
        binding = rendered(overlay, "ValidatingAdmissionPolicyBinding", name)
        assert vap["apiVersion"] == binding["apiVersion"] == "admissionregistration.k8s.io/v1"
        assert binding["spec"]["policyName"] == name
        assert binding["spec"]["validationActions"] == ["Deny"], "on by default: refuse, not only warn"
        assert "paramRef" not in binding["spec"]
        assert vap["spec"]["failurePolicy"] == "Fail", "an expression that cannot be evaluated must refuse"
        if overlay == "cluster":
            # Cluster-scoped. An overlay's `namespace:` adds one (kustomize does not know these kinds),
            # which the API server clears for cluster-scoped objects.
            assert "namespace" not in vap["metadata"]
            assert "namespace" not in binding["metadata"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_admission_objects_validate_strictly_against_the_oldest_api_with_vap_v1(overlay: str) -> None:
    # admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy is GA since 1.30.
    for obj in render(overlay):
        if obj["kind"].startswith("ValidatingAdmissionPolicy"):
            kubernetes_validate.validate(obj, "1.30", strict=True)
            for validation in obj["spec"].get("validations", []):
                assert validation["reason"] in {"Unauthorized", "Forbidden", "Invalid", "RequestEntityTooLarge"}
                assert validation["message"]
                assert "\n" not in validation["message"]


def test_author_rights_policy_matches_stampede_policies_but_not_their_status() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "stampedepolicies.stampede.aurum.io.yaml").read_text())
    [rule] = policy(AUTHOR_RIGHTS)["spec"]["matchConstraints"]["resourceRules"]
    assert rule["apiGroups"] == [crd["spec"]["group"]]
    assert rule["resources"] == [crd["spec"]["names"]["plural"]]
    assert set(rule["operations"]) == {"CREATE", "UPDATE"}
    [status] = policy(STATUS_WRITER)["spec"]["matchConstraints"]["resourceRules"]
    assert status["resources"] == [crd["spec"]["names"]["plural"] + "/status"]
    assert "UPDATE" in status["operations"]


def test_every_expression_compiles() -> None:
    for name in (AUTHOR_RIGHTS, STATUS_WRITER, TEMPLATE_AUTHOR):
        spec = policy(name)["spec"]
        for item in spec.get("variables", []) + spec.get("matchConditions", []) + spec["validations"]:
            for key in ("expression", "messageExpression"):
                if key in item:
                    _compiled(item[key])


def test_expressions_stay_within_the_api_servers_cost_limits() -> None:
    # One authorizer check costs 350,000 and one expression may spend 1,000,000: every variable holds
    # at most two checks, a validation checks once per target only where the namespace-wide right (a
    # variable) is missing, and a messageExpression checks at most two targets.
    spec = policy(AUTHOR_RIGHTS)["spec"]
    for variable in spec["variables"]:
        assert variable["expression"].count(".check(") <= 2, variable["name"]
    for validation in spec["validations"]:
        text = validation["expression"]
        assert text.count(".check(") <= 1, text
        if ".check(" in text:
            assert "variables.may" in text, "per-name checks only as the fallback of a namespace-wide right"
        # A message names the first of at most two targets it checks (a failing messageExpression
        # would leave only the static message).
        assert validation.get("messageExpression", "").count(".check(") <= 2, validation["message"]


# -- author rights -------------------------------------------------------------------------------


def test_each_namespace_wide_right_is_a_variable_true_exactly_when_granted() -> None:
    # The per-name fallback would hide a wrong verb or resource here; the API server's cost would not.
    vap = policy(AUTHOR_RIGHTS)
    names = [v["name"] for v in vap["spec"]["variables"] if v["name"].startswith("may")]
    assert len(names) == len(ALL_RIGHTS)
    for name in names:
        granted = [
            rule
            for rule in ALL_RIGHTS
            if Admission(
                vap, obj=every_target_kind(), rules={rule}, user=USER, operation="CREATE", old=None, subresource=""
            ).variables[name]
        ]
        assert len(granted) == 1, f"variables.{name} is true for {granted}"


def test_an_author_with_every_right_is_admitted() -> None:
    verdict = admit(policy(AUTHOR_RIGHTS), obj=every_target_kind(), rules=ALL_RIGHTS)
    assert verdict.matched
    assert verdict.admitted, verdict.refusals


@pytest.mark.parametrize("missing", list(ALL_RIGHTS), ids=lambda r: f"{r.verb}-{r.resource}-{r.subresource}")
def test_an_author_missing_one_right_is_refused_with_a_message_naming_it(missing: Rule) -> None:
    verdict = admit(policy(AUTHOR_RIGHTS), obj=every_target_kind(), rules=set(ALL_RIGHTS) - {missing})
    assert len(verdict.refusals) == 1, verdict.refusals
    [message] = verdict.refusals
    for words in ALL_RIGHTS[missing]:
        assert words in message, message
    assert USER in message
    assert f"namespace {NS}" in message


def test_an_author_without_any_right_is_refused_by_every_rights_check() -> None:
    vap = policy(AUTHOR_RIGHTS)
    verdict = admit(vap, obj=every_target_kind(), rules=())
    # Every validation but the phase count and the template one refuses; restarts and scales report
    # their first target.
    assert len(verdict.refusals) == len(vap["spec"]["validations"]) - 2, verdict.refusals
    assert not any(m.startswith("expression failed") for m in verdict.refusals)


def test_the_runbook_example_is_admitted_for_an_author_with_the_rights_it_needs() -> None:
    verdict = admit(policy(AUTHOR_RIGHTS), obj=runbook(), rules=rights_for_runbook())
    assert verdict.admitted, verdict.refusals


def test_the_runbook_example_is_refused_for_a_namespace_viewer() -> None:
    viewer = {Rule(group, resource, verb) for group, resource, verb in [("", "configmaps", "get")]}
    verdict = admit(policy(AUTHOR_RIGHTS), obj=runbook(), rules=viewer)
    assert any("action 'api-circuit-breaker-and-coalescing'" in m and "verb patch" in m for m in verdict.refusals)
    assert any("action 'scale-api'" in m and "deployments/scale" in m for m in verdict.refusals)
    assert any("action 'warm-cache'" in m and "CronJob 'cache-warming'" in m for m in verdict.refusals)
    assert any(
        "notifications.webhook.secretRef" in m and "Secret 'platform-team-webhook'" in m for m in verdict.refusals
    )


DEPLOYMENT_SCALE_API = Rule("apps", "deployments", "patch", name="api", subresource="scale")


def rights_for_every_target_by_name() -> set[Rule]:
    return {
        Rule("", "configmaps", "patch", name="flags"),
        Rule("", "configmaps", "get", name="flags"),
        Rule("apps", "deployments", "patch", name="api"),
        Rule("apps", "statefulsets", "patch", name="cache"),
        Rule("apps", "daemonsets", "patch", name="agent"),
        DEPLOYMENT_SCALE_API,
        Rule("apps", "statefulsets", "patch", name="cache", subresource="scale"),
        Rule("autoscaling", "horizontalpodautoscalers", "patch"),
        Rule("batch", "cronjobs", "get", name="warmer"),
        Rule("batch", "jobs", "create"),
        Rule("", "secrets", "get", name="prom-token"),
        Rule("", "secrets", "get", name="prom-ca"),
        Rule("", "secrets", "get", name="platform-team-webhook"),
    }


def test_rights_on_the_named_objects_alone_are_enough() -> None:
    verdict = admit(policy(AUTHOR_RIGHTS), obj=every_target_kind(), rules=rights_for_every_target_by_name())
    assert verdict.admitted, verdict.refusals


CONFIGMAP_PATCH = Rule("", "configmaps", "patch")
DEPLOYMENT_SCALE = Rule("apps", "deployments", "patch", subresource="scale")


@pytest.mark.parametrize(
    ("removed", "granted", "words"),
    [
        (CONFIGMAP_PATCH, Rule("", "configmaps", "patch", name="other"), "ConfigMap 'flags'"),
        (CONFIGMAP_PATCH, Rule("", "configmaps", "patch", namespace="other-team"), "ConfigMap 'flags'"),
        (DEPLOYMENT_SCALE, replace(DEPLOYMENT_SCALE, name="other"), "Deployment 'api'"),
        (DEPLOYMENT_SCALE, Rule("apps", "deployments", "patch", name="api"), "deployments/scale"),  # not the scale
        (Rule("batch", "cronjobs", "get"), Rule("batch", "cronjobs", "get", name="other"), "CronJob 'warmer'"),
        (Rule("", "secrets", "get"), Rule("", "secrets", "get", name="prom-ca"), "Secret 'prom-token'"),
    ],
)
def test_a_right_on_another_object_or_namespace_does_not_count(removed: Rule, granted: Rule, words: str) -> None:
    verdict = admit(policy(AUTHOR_RIGHTS), obj=every_target_kind(), rules=(set(ALL_RIGHTS) - {removed}) | {granted})
    assert any(words in m for m in verdict.refusals), verdict.refusals


def test_the_hpa_right_may_be_update_instead_of_patch() -> None:
    rules = set(ALL_RIGHTS) - {Rule("autoscaling", "horizontalpodautoscalers", "patch")}
    rules.add(Rule("autoscaling", "horizontalpodautoscalers", "update"))
    assert admit(policy(AUTHOR_RIGHTS), obj=every_target_kind(), rules=rules).admitted


def test_actions_in_every_phase_are_checked() -> None:
    obj = every_target_kind()
    template = copy.deepcopy(obj["spec"]["phases"][0])
    obj["spec"]["phases"] = []
    for i in range(20):
        phase = copy.deepcopy(template)
        phase["name"] = f"p{i}"
        for action in phase["actions"]:
            action["name"] = f"{action['name']}-{i}"
        obj["spec"]["phases"].append(phase)
    obj["spec"]["phases"][19]["actions"][0]["configMap"]["name"] = "secret-flags"
    rules = (set(ALL_RIGHTS) - {Rule("", "configmaps", "patch")}) | {Rule("", "configmaps", "patch", name="flags")}
    verdict = admit(policy(AUTHOR_RIGHTS), obj=obj, rules=rules)
    # Past the first two actions a message names the right only.
    assert verdict.refusals == [
        f"{USER} may not patch every ConfigMap the policy names in namespace {NS} (configmaps, verb patch)"
    ]
    rules.add(Rule("", "configmaps", "patch", name="secret-flags"))
    assert admit(policy(AUTHOR_RIGHTS), obj=obj, rules=rules).admitted, "the last phase's action was the refused one"


def test_more_phases_than_the_policy_can_check_are_refused() -> None:
    obj = every_target_kind()
    obj["spec"]["phases"] = [dict(obj["spec"]["phases"][0], name=f"p{i}") for i in range(21)]
    verdict = admit(policy(AUTHOR_RIGHTS), obj=obj, rules=ALL_RIGHTS)
    assert any("at most 20 phases" in m for m in verdict.refusals)


def test_an_update_that_changes_the_spec_is_checked_against_the_updater() -> None:
    old = runbook()
    new = copy.deepcopy(old)
    new["spec"]["phases"][0]["actions"][2]["scale"]["name"] = "payments"
    verdict = admit(policy(AUTHOR_RIGHTS), obj=new, old=old, operation="UPDATE", rules=())
    assert verdict.matched
    assert not verdict.admitted


def test_an_update_that_leaves_the_spec_alone_is_not_checked() -> None:
    # kopf adds its finalizer and annotations with the operator's own identity.
    old = runbook()
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = ["stampede.aurum.io/rollback"]
    verdict = admit(policy(AUTHOR_RIGHTS), obj=new, old=old, operation="UPDATE", rules=(), user=OPERATOR)
    assert not verdict.matched
    assert not verdict.checks


def test_a_policy_without_targets_of_a_kind_needs_no_right_for_it() -> None:
    obj = runbook()
    obj["spec"]["phases"] = [
        {"name": "only", "actions": [{"name": "flags", "configMap": {"name": "flags", "data": {"A": "1"}}}]}
    ]
    del obj["spec"]["notifications"]
    rules = {Rule("", "configmaps", "patch"), Rule("", "configmaps", "get")}
    verdict = admit(policy(AUTHOR_RIGHTS), obj=obj, rules=rules)
    assert verdict.admitted, verdict.refusals


# -- status writer -------------------------------------------------------------------------------


def test_only_the_operator_may_write_a_policys_status() -> None:
    vap = policy(STATUS_WRITER)
    obj = runbook()
    obj["status"] = {"applied": [{"kind": "Deployment", "name": "../../kube-system/deployments/coredns"}]}
    assert admit(vap, obj=obj, old=runbook(), operation="UPDATE", user=OPERATOR, subresource="status").admitted
    verdict = admit(vap, obj=obj, old=runbook(), operation="UPDATE", user="namespace-admin", subresource="status")
    [message] = verdict.refusals
    assert "namespace-admin may not write the status of StampedePolicy aurum-dev/aurum-cache" in message


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_status_writer_is_the_service_account_each_overlay_runs_the_operator_as(overlay: str) -> None:
    [deployment] = [o for o in render(overlay) if o["kind"] == "Deployment"]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    namespace = deployment["metadata"]["namespace"]
    vap = rendered(overlay, "ValidatingAdmissionPolicy", STATUS_WRITER)
    operator = f"system:serviceaccount:{namespace}:{account}"
    obj = runbook()
    obj["metadata"]["namespace"] = namespace if overlay == "namespaced" else NS
    assert admit(vap, obj=obj, old=obj, operation="UPDATE", user=operator, subresource="status").admitted
    other = "system:serviceaccount:elsewhere:stampede-operator"
    assert not admit(vap, obj=obj, old=obj, operation="UPDATE", user=other, subresource="status").admitted
    if overlay == "cluster":
        # Cluster mode: a ServiceAccount named like the operator in the policy's namespace is not it.
        local = f"system:serviceaccount:{NS}:stampede-operator"
        assert not admit(vap, obj=obj, old=obj, operation="UPDATE", user=local, subresource="status").admitted


# -- policies rendered from templates ----------------------------------------------------------


def templated(**own: Any) -> dict[str, Any]:
    """A policy of examples/many-services.yaml: its phases and Secrets come from the template."""
    docs = [d for d in yaml.safe_load_all((ROOT / "examples" / "many-services.yaml").read_text()) if d]
    [policy_] = [d for d in docs if d["kind"] == "StampedePolicy" and d["metadata"]["name"] == "checkout"]
    policy_ = copy.deepcopy(policy_)
    policy_["metadata"]["namespace"] = NS
    policy_["spec"].update(own)
    return policy_


def test_a_templated_policy_is_admitted_for_an_author_with_every_right_namespace_wide() -> None:
    verdict = admit(policy(AUTHOR_RIGHTS), obj=templated(), rules=ALL_RIGHTS)
    assert verdict.admitted, verdict.refusals


@pytest.mark.parametrize("missing", list(ALL_RIGHTS), ids=lambda r: f"{r.verb}-{r.resource}-{r.subresource}")
def test_a_templated_policy_needs_every_right_its_template_may_use(missing: Rule) -> None:
    verdict = admit(policy(AUTHOR_RIGHTS), obj=templated(), rules=set(ALL_RIGHTS) - {missing})
    [message] = verdict.refusals
    right = f"{missing.verb} {missing.resource}" + (f"/{missing.subresource}" if missing.subresource else "")
    assert message.startswith(f"spec.templateRef: {USER} may not {right} in namespace {NS}"), message


def test_a_templated_policy_with_its_own_phases_and_secrets_is_checked_like_any_policy() -> None:
    own = every_target_kind()["spec"]
    obj = templated(phases=own["phases"], prometheus=own["prometheus"], notifications=own["notifications"])
    assert admit(policy(AUTHOR_RIGHTS), obj=obj, rules=rights_for_every_target_by_name()).admitted
    verdict = admit(policy(AUTHOR_RIGHTS), obj=obj, rules=rights_for_every_target_by_name() - {DEPLOYMENT_SCALE_API})
    assert any("action 'scale-api'" in m for m in verdict.refusals), verdict.refusals


# -- templates -----------------------------------------------------------------------------------


def template(kind: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((ROOT / "examples" / "many-services.yaml").read_text()) if d]
    [cluster_template] = [d for d in docs if d["kind"] == "ClusterStampedePolicyTemplate"]
    obj = copy.deepcopy(cluster_template)
    obj["kind"] = kind
    if kind == "StampedePolicyTemplate":
        obj["metadata"]["namespace"] = NS
    return obj


def test_template_author_rights_match_both_template_kinds() -> None:
    [rule] = policy(TEMPLATE_AUTHOR)["spec"]["matchConstraints"]["resourceRules"]
    plurals = set()
    for path in (ROOT / "crds").glob("*templates.stampede.aurum.io.yaml"):
        crd = yaml.safe_load(path.read_text())
        assert rule["apiGroups"] == [crd["spec"]["group"]]
        plurals.add(crd["spec"]["names"]["plural"])
    assert set(rule["resources"]) == plurals == {"stampedepolicytemplates", "clusterstampedepolicytemplates"}


def test_a_namespace_template_needs_every_right_namespace_wide() -> None:
    vap = policy(TEMPLATE_AUTHOR)
    assert admit(vap, obj=template("StampedePolicyTemplate"), rules=ALL_RIGHTS).admitted
    for missing in ALL_RIGHTS:
        verdict = admit(vap, obj=template("StampedePolicyTemplate"), rules=set(ALL_RIGHTS) - {missing})
        [message] = verdict.refusals
        right = f"{missing.verb} {missing.resource}" + (f"/{missing.subresource}" if missing.subresource else "")
        assert message.startswith(f"{USER} may not {right} in namespace {NS}, "), message
        assert "StampedePolicyTemplate cache-stampede-runbook" in message


def test_a_cluster_template_needs_every_right_in_every_namespace() -> None:
    vap = policy(TEMPLATE_AUTHOR)
    obj = template("ClusterStampedePolicyTemplate")
    verdict = admit(vap, obj=obj, rules=ALL_RIGHTS)  # rights in one namespace only
    [message] = verdict.refusals
    assert message.startswith(f"{USER} may not patch configmaps in every namespace"), message
    assert "(11 such rights missing)" in message
    cluster_wide = {replace(rule, namespace="") for rule in ALL_RIGHTS}
    assert admit(vap, obj=obj, rules=cluster_wide).admitted


def test_a_template_update_that_leaves_the_spec_alone_is_not_checked() -> None:
    old = template("ClusterStampedePolicyTemplate")
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"team": "platform"}
    assert not admit(policy(TEMPLATE_AUTHOR), obj=new, old=old, operation="UPDATE").matched
