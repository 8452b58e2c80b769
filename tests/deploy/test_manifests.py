"""The install manifests in deploy/: they build, they validate, and their RBAC fits the code.

Kubernetes version: built-in kinds are validated with kubernetes-validate against the 1.31 API
(strict: unknown fields fail), the oldest release the manifests target. Kinds it does not know
are checked as follows: kopf's peering objects and StampedePolicies against the openAPIV3Schema
of their CRDs (rendered from the same overlay); the prometheus-operator's ServiceMonitor and
PrometheusRule by their required fields only (their CRDs are not in this repository).

No API server runs here, so RBAC is checked by replaying the operator's actuators against a
recording fake API and matching every request to the rendered ClusterRole / Role.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
from datetime import UTC, datetime
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.deploy.rendering import DEPLOY, ROOT, needs_kubectl, of_kind, only, render, render_user_overlay
from tests.harness.patches import merge_patch

K8S_VERSION = "1.31"
OVERLAYS = ("cluster", "namespaced")
WATCHED = {"cluster": None, "namespaced": "aurum-dev"}
OPERATOR_NAMESPACE = {"cluster": "stampede-system", "namespaced": "aurum-dev"}
CUSTOM_KINDS = {"KopfPeering", "ClusterKopfPeering", "ServiceMonitor", "PrometheusRule", "StampedePolicy"}

pytestmark = needs_kubectl


def objects(overlay: str, kind: str) -> list[dict[str, Any]]:
    return of_kind(render(overlay), kind)


def one(overlay: str, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [obj for obj in objects(overlay, kind) if name is None or obj["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def monitoring(overlay: str = "cluster") -> tuple[dict[str, Any], ...]:
    """The overlay with the opt-in monitoring component, as a user enables it.

    Over the namespaced overlay, the user's overlay names its namespace (docs/install.md): components
    added there are placed by that `namespace:` too.
    """
    extra = f"namespace: {WATCHED[overlay]}\n" if WATCHED[overlay] else ""
    return render_user_overlay(overlay, components=("monitoring",), extra=extra)


def crd_schema(overlay: str, kind: str) -> dict[str, Any]:
    for crd in objects(overlay, "CustomResourceDefinition"):
        if crd["spec"]["names"]["kind"] == kind:
            schema: dict[str, Any] = openapi_to_jsonschema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
            return schema
    raise AssertionError(f"{overlay}: no CRD for {kind}")


def openapi_to_jsonschema(schema: Any) -> Any:
    """Structural-schema extensions are not JSON Schema; drop them (they only relax validation)."""
    if isinstance(schema, dict):
        return {k: openapi_to_jsonschema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if isinstance(schema, list):
        return [openapi_to_jsonschema(v) for v in schema]
    return schema


# -- build and validate -------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_with_the_expected_objects(overlay: str) -> None:
    kinds = sorted({obj["kind"] for obj in render(overlay)})
    expected = {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "NetworkPolicy",
    }
    assert expected <= set(kinds)
    # Monitoring is opt-in (it needs the prometheus-operator's CRDs); the namespaced overlay runs in the
    # team's existing namespace, whose labels are not ours to set.
    assert not {"ServiceMonitor", "PrometheusRule"} & set(kinds)
    assert ("Namespace" in kinds) == (overlay == "cluster")
    for obj in render(overlay):
        if "namespace" in obj["metadata"]:
            assert obj["metadata"]["namespace"] == OPERATOR_NAMESPACE[overlay], obj["metadata"]
    crds = {crd["metadata"]["name"] for crd in objects(overlay, "CustomResourceDefinition")}
    assert crds == {
        "stampedepolicies.stampede.aurum.io",
        "stampedeincidents.stampede.aurum.io",
        "stampedepolicytemplates.stampede.aurum.io",
        "clusterstampedepolicytemplates.stampede.aurum.io",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }
    # No peering object: kubectl could not create it in the run that creates its CRD; the operator does.
    assert not {"KopfPeering", "ClusterKopfPeering"} & set(kinds)
    if overlay == "cluster":
        assert {"ClusterRole", "ClusterRoleBinding"} <= set(kinds)
        # One namespaced Role only: the journal Secrets in the operator's own namespace.
        assert [r["metadata"]["name"] for r in objects(overlay, "Role")] == ["stampede-operator-journal"]
    else:
        assert {"Role", "RoleBinding"} <= set(kinds)
        assert not {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"} & set(kinds), (
            "namespaced mode must not grant anything cluster-wide"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_objects_validate_strictly(overlay: str) -> None:
    checked = 0
    for obj in render(overlay):
        if obj["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_custom_objects_validate_against_their_schemas(overlay: str) -> None:
    seen = set()
    for obj in monitoring(overlay):
        kind = obj["kind"]
        if kind not in CUSTOM_KINDS:
            continue
        seen.add(kind)
        if kind in {"KopfPeering", "ClusterKopfPeering"}:
            assert obj["apiVersion"] == "kopf.dev/v1"
            jsonschema.validate(obj, crd_schema(overlay, kind))
            assert obj["metadata"]["name"] == "stampede-operator", "the CLI's default --peering name"
            assert ("namespace" in obj["metadata"]) == (kind == "KopfPeering")
        elif kind == "ServiceMonitor":
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            spec = obj["spec"]
            assert spec["selector"]["matchLabels"] == one(overlay, "Service")["spec"]["selector"]
            assert "namespaceSelector" not in spec, "the Service is in the ServiceMonitor's own namespace"
            assert obj["metadata"]["namespace"] == OPERATOR_NAMESPACE[overlay]
            ports = {p["name"] for p in one(overlay, "Service")["spec"]["ports"]}
            assert [e["port"] for e in spec["endpoints"]] == ["metrics"]
            assert "metrics" in ports
        elif kind == "PrometheusRule":
            assert obj["apiVersion"] == "monitoring.coreos.com/v1"
            for group in obj["spec"]["groups"]:
                assert group["name"]
                assert group["rules"]
                for rule in group["rules"]:
                    assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
                    assert rule["alert"]
                    assert rule["expr"]
                    assert rule["labels"]["severity"]
                    assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))
        else:  # pragma: no cover - no policy is shipped in deploy/
            jsonschema.validate(obj, crd_schema(overlay, kind))
    assert seen >= {"ServiceMonitor", "PrometheusRule"}


def test_stampede_crd_copy_is_identical_to_crds_dir() -> None:
    source = (ROOT / "crds" / "stampedepolicies.stampede.aurum.io.yaml").read_bytes()
    copy_ = (DEPLOY / "base" / "crds" / "stampedepolicies.stampede.aurum.io.yaml").read_bytes()
    assert copy_ == source, "deploy/base/crds/ is stale: run deploy/sync-crds.sh after `make crds`"


def test_stampede_crd_is_accepted_and_validates_the_examples() -> None:
    crd = one("cluster", "CustomResourceDefinition", "stampedepolicies.stampede.aurum.io")
    kubernetes_validate.validate(crd, K8S_VERSION, strict=True)
    annotations = crd["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/sync-wave"] == "-1"
    assert "Delete=false" in annotations["argocd.argoproj.io/sync-options"]
    schema = crd_schema("cluster", "StampedePolicy")
    examples = [
        doc
        for path in sorted((ROOT / "examples").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "StampedePolicy"
    ]
    assert examples
    for policy in examples:
        jsonschema.validate(policy, schema)


# -- the Deployment ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployment_is_hardened(overlay: str) -> None:
    deployment = one(overlay, "Deployment", "stampede-operator")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    [container] = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert isinstance(sc["runAsUser"], int)
    assert sc["runAsUser"] > 0
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert container["image"] == "ghcr.io/aurum/stampede-operator:0.1.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    # Readiness is the peering watch's (handlers/peering.py), served next to /metrics.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9102, "healthz": 8080}
    assert one(overlay, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    env = one(overlay, "ConfigMap", container["envFrom"][0]["configMapRef"]["name"])
    assert set(env["data"]) == {
        "STAMPEDE_PROMETHEUS_URL",
        "STAMPEDE_ALLOWED_PROMETHEUS_URLS",
        "STAMPEDE_ALLOWED_WEBHOOK_URLS",
        "STAMPEDE_REQUIRE_TARGET_OPT_IN",
        "STAMPEDE_MAX_REPLICAS",
    }
    # What the shipped ConfigMap says loads with the operator's own settings model, as shipped.
    from stampede.settings import Settings

    shipped = Settings.model_validate({key.removeprefix("STAMPEDE_").lower(): v for key, v in env["data"].items()})
    assert shipped.require_target_opt_in is False
    assert shipped.allowed_webhook_urls == ()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_command_is_a_valid_stampede_run(overlay: str) -> None:
    """The args parse with the real CLI; the mode matches the RBAC and the peering object."""
    from stampede.cli import run

    container = one(overlay, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container, "the image's ENTRYPOINT (stampede run) must be used"
    args = container["args"]
    ctx = run.make_context("run", list(args))
    params = ctx.params
    assert params["priority"] is None, "each replica must draw its own random peering priority"
    assert params["liveness"] == "http://0.0.0.0:8080/healthz"
    assert params["metrics_port"] == 9102
    assert not params["standalone"]
    assert params["peering_name"] == "stampede-operator"
    if WATCHED[overlay] is None:
        assert params["all_namespaces"]
        assert not params["namespaces"]
    else:
        # The kubelet expands $(POD_NAMESPACE) from the downward API: the operator watches its own namespace.
        assert params["namespaces"] == ("$(POD_NAMESPACE)",)
        assert not params["all_namespaces"]
        [env] = [e for e in container["env"] if e["name"] == "POD_NAMESPACE"]
        assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        assert one(overlay, "Deployment")["metadata"]["namespace"] == WATCHED[overlay]


# -- RBAC -------------------------------------------------------------------------------------


class RecordingKube:
    """Just enough of an API server for the actuators: objects by path, merge patches, creates."""

    def __init__(self, namespace: str, *, hpa_for: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        self.calls: list[tuple[str, str]] = []
        self.namespace = namespace
        self.objects: dict[str, dict[str, Any]] = {}
        self.hpa_for = list(hpa_for)

    def _default(self, path: str) -> dict[str, Any]:
        parts = path.strip("/").split("/")
        plural, name = parts[-2], parts[-1]
        meta = {"name": name, "namespace": self.namespace, "resourceVersion": "1", "uid": f"uid-{name}"}
        # Every target has opted in to every policy, so the stricter mode's reads are replayed too.
        meta["annotations"] = {"stampede.aurum.io/allowed-policies": "*"}
        if plural == "configmaps":
            return {"metadata": meta, "data": {"EXISTING": "1"}}
        if plural in ("deployments", "statefulsets", "daemonsets"):
            return {"metadata": meta, "spec": {"replicas": 2}}
        if plural == "horizontalpodautoscalers":
            return {"metadata": meta, "spec": {"minReplicas": 2, "maxReplicas": 100}}
        if plural == "cronjobs":
            return {"metadata": meta, "spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}}}
        if plural == "secrets":
            labelled = {**meta, "labels": {"stampede.aurum.io/credentials": "true"}}
            return {"metadata": labelled, "data": {"url": base64.b64encode(b"https://hooks.example/x").decode()}}
        return {"metadata": {**meta, "generation": 1}, "spec": {}}

    def get(self, path: str, *, query: Any = None) -> dict[str, Any]:
        self.calls.append(("GET", path))
        if path.endswith("/horizontalpodautoscalers"):
            return {
                "items": [
                    {
                        "metadata": {"name": f"{name}-hpa", "resourceVersion": "1"},
                        "spec": {"scaleTargetRef": {"kind": kind, "name": name}, "minReplicas": 2, "maxReplicas": 100},
                    }
                    for kind, name in self.hpa_for
                ]
            }
        return copy.deepcopy(self.objects.setdefault(path, self._default(path)))

    def merge(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("PATCH", path))
        if path.endswith("/scale"):
            main = path.rsplit("/", 1)[0]
            self.objects[main] = merge_patch(self.objects.setdefault(main, self._default(main)), patch)
        else:
            self.objects[path] = merge_patch(self.objects.setdefault(path, self._default(path)), patch)
        return copy.deepcopy(self.objects[path.removesuffix("/scale")])

    def json_patch(self, path: str, ops: list[dict[str, Any]]) -> dict[str, Any]:  # pragma: no cover
        self.calls.append(("PATCH", path))
        return {}

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        from stampede.actuators.kube import KubeError

        self.calls.append(("POST", path))
        named = f"{path}/{body['metadata']['name']}"
        if named in self.objects:
            raise KubeError(409, "already exists")
        self.objects[named] = copy.deepcopy(body)
        return body

    def delete(self, path: str) -> dict[str, Any]:
        return self.request("DELETE", path)

    def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("PUT", path))
        self.objects[path] = copy.deepcopy(body)
        return body

    def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        self.calls.append((method, path))
        self.objects.pop(path, None)
        return {}


def _requests(calls: list[tuple[str, str]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource[/subresource], verb) of each recorded request."""
    out = set()
    for method, path in calls:
        parts = path.strip("/").split("/")
        group = "" if parts[0] == "api" else parts[1]
        rest = parts[parts.index("namespaces") + 2 :]
        resource = rest[0] + (f"/{rest[2]}" if len(rest) > 2 else "")
        verb = {
            "GET": "get" if len(rest) > 1 else "list",
            "PATCH": "patch",
            "POST": "create",
            "PUT": "update",
            "DELETE": "delete",
            "WATCH": "watch",
        }[method]
        out.add((group, resource, verb))
    return out


def operator_requests(namespace: str) -> set[tuple[str, str, str]]:
    """Every request the operator's actuators and policy writes make, by replaying them."""
    from stampede.actuators.kube import _GROUPS, path
    from stampede.actuators.policies import Policies
    from stampede.actuators.targets import Actuators, Target
    from stampede.api.spec import Action, PolicySpec

    example = yaml.safe_load((ROOT / "examples" / "aurum-cache-stampede.yaml").read_text())
    actions = [action for phase in PolicySpec.model_validate(example["spec"]).phases for action in phase.actions]
    actions += [
        Action.model_validate(
            {
                "name": "every-restart",
                "configMap": {
                    "name": "cfg",
                    "data": {"K": "v"},
                    "restart": [
                        {"kind": "Deployment", "name": "d"},
                        {"kind": "StatefulSet", "name": "s"},
                        {"kind": "DaemonSet", "name": "ds"},
                    ],
                },
            }
        ),
        Action.model_validate({"name": "override-existing", "configMap": {"name": "cfg2", "data": {"EXISTING": "2"}}}),
        Action.model_validate({"name": "scale-sts", "scale": {"kind": "StatefulSet", "name": "db", "replicas": 5}}),
    ]
    now = datetime(2025, 1, 1, tzinfo=UTC)
    target = Target(namespace=namespace, policy="aurum-cache")
    calls: list[tuple[str, str]] = []
    scale_targets = [(a.scale.kind.value, a.scale.name) for a in actions if a.scale is not None]
    # Scale actions without and with an HPA on the workload; without and with STAMPEDE_REQUIRE_TARGET_OPT_IN.
    for hpa_for, strict in itertools.product(([], scale_targets), (False, True)):
        kube = RecordingKube(namespace, hpa_for=hpa_for)
        actuators = Actuators(  # type: ignore[arg-type]
            kube, max_replicas=50, journal_namespace=namespace, require_opt_in=strict
        )
        changes = []
        for action in actions:
            outcome = actuators.apply(target, action, incident="inc-1", now=now, dry_run=False)
            assert outcome.ok, outcome.message
            assert outcome.change is not None
            changes.append(outcome.change)
        for change in changes:
            assert actuators.reverted(target, change) is not None
            if change.kind.reversible:  # held targets are watched (actuators/watching.py): LIST by name, WATCH
                kube.calls += [("GET", path(change.kind, namespace)), ("WATCH", path(change.kind, namespace))]
            if change.kind != "Job" and change.applied:  # what the runner re-applies after a revert
                actuators.reapply(target, change, now=now)
        # A later change of the same action replaces its journal Secret (create answers 409, then PUT).
        override = next(c for c in changes if c.action == "override-existing")
        actuators.journals.write(
            namespace=namespace,
            policy="aurum-cache",
            action=override.action,
            configmap="cfg",
            originals={"EXISTING": "1"},
        )
        for change in reversed(changes):
            outcome = actuators.undo(target, change, now=now, dry_run=False)
            assert outcome.ok, outcome.message
        calls += kube.calls
    kube = RecordingKube(namespace)
    policies = Policies(kube)  # type: ignore[arg-type]
    policies.read(namespace, "aurum-cache")
    policies.write_status(namespace, "aurum-cache", old={}, new={"state": "Incident"})
    policies.set_finalizer(namespace, "aurum-cache", present=True)
    policies.set_finalizer(namespace, "aurum-cache", present=False)
    policies.read_secret(namespace, "platform-team-webhook", "url")
    calls += kube.calls
    calls += _record_calls(namespace, now)
    requests = _requests(calls)
    touched = {resource.split("/")[0] for _, resource, _ in requests}
    assert {plural for _, plural in _GROUPS.values()} <= touched, "a kind in kube._GROUPS is not exercised here"
    return requests


def _record_calls(namespace: str, now: datetime) -> list[tuple[str, str]]:
    """The StampedeIncident writes: read after a restart, create, status patches, pruning beyond historyLimit."""
    from stampede.actuators.kube import path
    from stampede.actuators.records import Records
    from stampede.api.incident import IncidentRecordStatus, RecordState
    from stampede.api.spec import Severity

    kube = RecordingKube(namespace)
    kube.objects[path("StampedeIncident", namespace)] = {
        "items": [
            {
                "metadata": {"name": f"aurum-cache-{i}"},
                "spec": {"policy": "aurum-cache", "incident": str(i)},
                "status": {"state": "Closed", "closedAt": f"2025-01-0{i}T00:00:00Z"},
            }
            for i in (1, 2)
        ]
    }
    records = Records(kube)  # type: ignore[arg-type]
    status = IncidentRecordStatus(policy="aurum-cache", severity=Severity.P1, started_at=now, first_breach_at=now)
    records.read(namespace, "aurum-cache", "3")
    records.create(namespace, policy="aurum-cache", policy_uid="uid", incident="3", status=status)
    records.write_status(
        namespace, "aurum-cache-3", old=status.wire(), new={**status.wire(), "state": RecordState.CLOSED.value}
    )
    assert records.prune(namespace, "aurum-cache", keep=1) == ["aurum-cache-1"]
    return kube.calls


# What kopf itself does (kopf 1.45 source: reactor/observation.py, engines/peering.py, clients/events.py).
KOPF_COMMON = {
    ("stampede.aurum.io", "stampedepolicies", "list"),
    ("stampede.aurum.io", "stampedepolicies", "watch"),
    ("stampede.aurum.io", "stampedepolicies", "patch"),
    ("", "events", "create"),
}
# Plus `create` of the peering object: the operator's own bootstrap (handlers/peering.py).
KOPF_MODE = {
    "cluster": {("kopf.dev", "clusterkopfpeerings", v) for v in ("list", "watch", "patch", "create")}
    | {("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("list", "watch")}
    # handlers/templates.py: kopf indices over both template kinds (cluster templates only with -A)
    | {
        ("stampede.aurum.io", p, v)
        for p in ("stampedepolicytemplates", "clusterstampedepolicytemplates")
        for v in ("list", "watch")
    },
    "namespaced": {("kopf.dev", "kopfpeerings", v) for v in ("list", "watch", "patch", "create")}
    | {("stampede.aurum.io", "stampedepolicytemplates", v) for v in ("list", "watch")},
}


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        assert "*" not in rule["verbs"], "no wildcards"
        assert "*" not in rule["resources"], "no wildcards"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_covers_every_call_and_nothing_more(overlay: str) -> None:
    namespace = WATCHED[overlay] or "any-namespace"
    needed = operator_requests(namespace) | KOPF_COMMON | KOPF_MODE[overlay]
    secrets = {("", "secrets", "get")}
    if overlay == "cluster":
        main = granted(one(overlay, "ClusterRole", "stampede-operator")["rules"])
        secret_reader = granted(one(overlay, "ClusterRole", "stampede-operator-secret-reader")["rules"])
        assert secret_reader == secrets, "Secrets come from a separate, per-namespace bound ClusterRole"
        journal = one(overlay, "Role", "stampede-operator-journal")
        assert journal["metadata"]["namespace"] == OPERATOR_NAMESPACE[overlay], "journal Secrets: own namespace only"
        assert granted(journal["rules"]) == {("", "secrets", v) for v in ("get", "create", "update", "delete")}
        journal_binding = one(overlay, "RoleBinding", "stampede-operator-journal")
        assert journal_binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": journal["metadata"]["name"],
        }
        have = main | secret_reader | granted(journal["rules"])
        binding = one(overlay, "ClusterRoleBinding")
        assert binding["roleRef"]["name"] == "stampede-operator"
    else:
        role = one(overlay, "Role")
        assert role["metadata"]["namespace"] == namespace
        have = granted(role["rules"])
        binding = one(overlay, "RoleBinding")
        assert binding["metadata"]["namespace"] == namespace
        assert binding["roleRef"]["kind"] == "Role"
    subjects = binding["subjects"]
    assert subjects == [
        {"kind": "ServiceAccount", "name": "stampede-operator", "namespace": OPERATOR_NAMESPACE[overlay]}
    ]
    assert needed - have == set(), f"{overlay}: missing permissions"
    assert have - needed == set(), f"{overlay}: permissions no code path uses"


def test_every_rbac_rule_has_a_justification_comment() -> None:
    files = [p for p in DEPLOY.rglob("*.yaml") if re.search(r"^kind: (Cluster)?Role$", p.read_text(), re.M)]
    assert len(files) >= 2
    for path in files:
        lines = path.read_text().splitlines()
        rules = [i for i, line in enumerate(lines) if re.match(r"\s*- apiGroups:", line)]
        assert rules, path
        for i in rules:
            above = next(line for line in reversed(lines[:i]) if line.strip())
            assert above.strip().startswith("#"), f"{path.relative_to(ROOT)}:{i + 1}: rule without a comment"


def test_secret_component_binds_the_secret_reader() -> None:
    binding = yaml.safe_load((DEPLOY / "components" / "secrets-clusterwide" / "clusterrolebinding.yaml").read_text())
    kubernetes_validate.validate(binding, K8S_VERSION, strict=True)
    assert binding["roleRef"]["name"] == "stampede-operator-secret-reader"


# -- monitoring -------------------------------------------------------------------------------


def _metric_names() -> set[str]:
    from stampede.handlers import metrics

    names = set()
    for metric in metrics.REGISTRY.collect():
        for sample in metric.samples:
            names.add(sample.name)
        names.add(metric.name)
        if metric.type == "counter":
            names.add(f"{metric.name}_total")
        if metric.type == "histogram":
            names |= {f"{metric.name}_{s}" for s in ("bucket", "count", "sum")}
    return names


def _used_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bstampede_[a-z_]+", text))


def test_alerts_and_dashboard_use_only_real_metrics() -> None:
    known = _metric_names()
    rule = only(monitoring(), "PrometheusRule")
    exprs = " ".join(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"])
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts == {
        "StampedeOperatorDown",
        "StampedePrometheusErrors",
        "StampedeActionFailures",
        "StampedeIncidentStuck",
    }
    dashboard_cm = only(monitoring(), "ConfigMap", "stampede-operator-dashboard")
    assert dashboard_cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(dashboard_cm["data"]["stampede-operator.json"])
    dash_exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = _used_metrics(exprs) | _used_metrics(dash_exprs)
    assert used - known == set(), "unknown metric names"
    for required in (
        "stampede_incident_active",
        "stampede_phase_info",
        "stampede_signal_value",
        "stampede_actions_total",
        "stampede_poll_duration_seconds_bucket",
    ):
        assert required in _used_metrics(dash_exprs)
    # The job label is the Service name (ServiceMonitor default): the down alert must use it.
    assert f'up{{job="{one("cluster", "Service")["metadata"]["name"]}"}}' in exprs
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_action_failure_alert_matches_the_result_labels_the_runner_emits() -> None:
    """results are the outcome reason lowercased for failures: ActionFailed -> actionfailed, Conflict -> conflict."""
    from stampede.api.kinds import ChangeKind
    from stampede.engine import outcomes
    from stampede.engine.outcomes import Step
    from stampede.executing import Done
    from stampede.handlers import metrics
    from stampede.handlers.reporting import count_outcomes

    failed = outcomes.failed(action="a", kind="ConfigMap", where="ns/cm", what="not found")
    held = outcomes.conflict(action="b", kind="ConfigMap", name="cm", owner="other")
    count_outcomes(
        "alert-labels", "p", [Done(Step.APPLY, a, ChangeKind.CONFIG_MAP, o) for a, o in (("a", failed), ("b", held))]
    )
    results = {labels[3] for labels in metrics.ACTIONS_TOTAL._metrics if labels[:2] == ("alert-labels", "p")}
    assert results == {"actionfailed", "conflict"}
    rule = only(monitoring(), "PrometheusRule")
    expr = next(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"] if r["alert"] == "StampedeActionFailures")
    matcher = re.search(r'result=~"([^"]+)"', expr)
    assert matcher, expr
    # Every failure label the runner emits alerts, and nothing else does.
    assert all(re.fullmatch(matcher[1], label) for label in results), (matcher[1], results)
    assert not re.fullmatch(matcher[1], "applied"), matcher[1]
