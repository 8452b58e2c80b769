"""The operator's NetworkPolicy lets through what it needs on real clusters, and nothing else.

The rendered policy (base alone, and with each deploy/components/networkpolicy-* component, as a user adds
them) is validated strictly against the Kubernetes API, then evaluated: a small model of NetworkPolicy
egress semantics (peers are ORed, a peer's namespace and pod selectors are ANDed, an empty `to` or
`ports` matches everything, ipBlock matches addresses outside the cluster's pods) answers whether one
connection is allowed. The destinations are the ones the issue named: kube-dns, NodeLocal DNSCache's
169.254.20.10, OpenShift's openshift-dns, Prometheus on 9090, Thanos 10902, Mimir 8080,
VictoriaMetrics 8428, the API server, and the internet. Ingress is evaluated the same way (a `from` peer
instead of a `to` peer): /metrics only from the monitoring namespace (issue 17), widened by the
networkpolicy-metrics-* components or the patch docs/install.md shows. The node's own traffic (the
kubelet's probes), which NetworkPolicy always admits, is not modelled.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.deploy.rendering import DEPLOY, needs_kubectl, only, render, render_user_overlay

pytestmark = needs_kubectl

COMPONENTS = sorted(path.name for path in (DEPLOY / "components").glob("networkpolicy-*"))
INGRESS_COMPONENTS = [name for name in COMPONENTS if name.startswith("networkpolicy-metrics-")]
"""Components that widen who may scrape /metrics; every other one adds an egress rule."""
EGRESS_COMPONENTS = [name for name in COMPONENTS if name not in INGRESS_COMPONENTS]


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Address:
    ip: str


def _selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    assert set(selector) <= {"matchLabels"}, "only matchLabels is modelled"
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def _peer_matches(peer: dict[str, Any], dest: Pod | Address, *, own_namespace: str) -> bool:
    if "ipBlock" in peer:
        if not isinstance(dest, Address):
            return False
        ip = ipaddress.ip_address(dest.ip)
        block = peer["ipBlock"]
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if not isinstance(dest, Pod):
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": dest.namespace}
        in_namespace = _selects(peer["namespaceSelector"], namespace_labels)
    else:
        in_namespace = dest.namespace == own_namespace
    return in_namespace and _selects(peer.get("podSelector"), dest.labels)


def admitted(policy: dict[str, Any], source: Pod | Address, port: int, protocol: str = "TCP") -> bool:
    """Whether the policy lets `source` open this connection to the operator pod."""
    own = policy["metadata"]["namespace"]
    for rule in policy["spec"].get("ingress", []):
        peers = rule.get("from")
        if peers and not any(_peer_matches(peer, source, own_namespace=own) for peer in peers):
            continue
        ports = rule.get("ports")
        if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports):
            continue
        return True
    return False


def allowed(policy: dict[str, Any], dest: Pod | Address, port: int, protocol: str = "TCP") -> bool:
    """Whether the policy lets the operator pod open this connection."""
    own = policy["metadata"]["namespace"]
    for rule in policy["spec"].get("egress", []):
        peers = rule.get("to")
        if peers and not any(_peer_matches(peer, dest, own_namespace=own) for peer in peers):
            continue
        ports = rule.get("ports")
        if ports and not any(p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports):
            continue
        return True
    return False


KUBE_DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
NODELOCAL_DNS = Address("169.254.20.10")
OPENSHIFT_DNS = Pod("openshift-dns", {"dns.operator.openshift.io/daemonset-dns": "default"})
PROMETHEUS = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
API_SERVER = Address("10.0.0.1")
PUBLIC_API_SERVER = Address("34.120.1.2")
SLACK = Address("3.120.0.10")
METADATA = Address("169.254.169.254")


def policy_with(*components: str, overlay: str = "cluster") -> dict[str, Any]:
    rendered = render_user_overlay(overlay, components=components) if components else render(overlay)
    policy = only(rendered, "NetworkPolicy")
    kubernetes_validate.validate(policy, "1.31", strict=True)
    return policy


def test_the_components_cover_the_clusters_the_issue_named() -> None:
    assert set(COMPONENTS) >= {
        "networkpolicy-dns-nodelocal",
        "networkpolicy-dns-openshift",
        "networkpolicy-prometheus-thanos",
        "networkpolicy-prometheus-mimir",
        "networkpolicy-prometheus-victoriametrics",
        "networkpolicy-notifications",
    }


@pytest.mark.parametrize("overlay", ["cluster", "namespaced"])
def test_by_default_dns_prometheus_and_the_api_server_are_reachable(overlay: str) -> None:
    policy = policy_with(overlay=overlay)
    assert allowed(policy, KUBE_DNS, 53, "UDP")
    assert allowed(policy, KUBE_DNS, 53, "TCP")
    assert allowed(policy, PROMETHEUS, 9090)
    assert allowed(policy, API_SERVER, 443)
    assert allowed(policy, API_SERVER, 6443)


def test_by_default_nothing_else_is_reachable() -> None:
    policy = policy_with()
    assert not allowed(policy, SLACK, 443), "egress on 443 must not be open to the internet"
    assert not allowed(policy, PUBLIC_API_SERVER, 6443)
    assert not allowed(policy, METADATA, 80)
    assert not allowed(policy, Address("8.8.8.8"), 53, "UDP")
    assert not allowed(policy, NODELOCAL_DNS, 53, "UDP")
    assert not allowed(policy, OPENSHIFT_DNS, 5353, "UDP")
    assert not allowed(policy, PROMETHEUS, 22)
    for port in (10902, 8080, 8428):
        assert not allowed(policy, PROMETHEUS, port)


def test_nodelocal_dnscache_is_reachable_with_its_component() -> None:
    policy = policy_with("networkpolicy-dns-nodelocal")
    assert allowed(policy, NODELOCAL_DNS, 53, "UDP")
    assert allowed(policy, NODELOCAL_DNS, 53, "TCP")
    assert not allowed(policy, Address("169.254.20.11"), 53, "UDP")


def test_openshift_dns_is_reachable_on_its_pod_port_with_its_component() -> None:
    policy = policy_with("networkpolicy-dns-openshift")
    assert allowed(policy, OPENSHIFT_DNS, 5353, "UDP")
    assert allowed(policy, OPENSHIFT_DNS, 5353, "TCP")
    assert not allowed(policy, Pod("openshift-dns", {"app": "other"}), 5353, "UDP")


@pytest.mark.parametrize(
    ("component", "port"),
    [
        ("networkpolicy-prometheus-thanos", 10902),
        ("networkpolicy-prometheus-mimir", 8080),
        ("networkpolicy-prometheus-victoriametrics", 8428),
    ],
)
def test_each_prometheus_flavour_is_reachable_on_its_port_with_its_component(component: str, port: int) -> None:
    policy = policy_with(component)
    assert allowed(policy, PROMETHEUS, port)
    assert allowed(policy, PROMETHEUS, 9090)
    assert not allowed(policy, Address("52.1.2.3"), port), "in-cluster pods only"


def test_notifications_reach_public_https_but_not_the_clusters_private_ranges() -> None:
    policy = policy_with("networkpolicy-notifications")
    assert allowed(policy, SLACK, 443)
    assert not allowed(policy, SLACK, 80)
    assert not allowed(policy, METADATA, 443)


def test_a_public_api_server_is_reachable_with_its_component() -> None:
    assert allowed(policy_with("networkpolicy-apiserver-public"), PUBLIC_API_SERVER, 443)


def test_every_component_combines_with_the_others_in_one_policy() -> None:
    policy = policy_with(*COMPONENTS)
    for dest, port, protocol in [
        (KUBE_DNS, 53, "UDP"),
        (NODELOCAL_DNS, 53, "UDP"),
        (OPENSHIFT_DNS, 5353, "UDP"),
        (PROMETHEUS, 9090, "TCP"),
        (PROMETHEUS, 10902, "TCP"),
        (PROMETHEUS, 8080, "TCP"),
        (PROMETHEUS, 8428, "TCP"),
        (SLACK, 443, "TCP"),
    ]:
        assert allowed(policy, dest, port, protocol), (dest, port)
    assert len(policy["spec"]["egress"]) == len(policy_with()["spec"]["egress"]) + len(EGRESS_COMPONENTS)
    assert admitted(policy, PROMETHEUS, 9102)
    assert admitted(policy, OPENSHIFT_PROMETHEUS, 9102)
    assert not admitted(policy, TENANT_POD, 9102)


@pytest.mark.parametrize("component", EGRESS_COMPONENTS)
def test_each_egress_component_adds_one_rule_and_leaves_ingress_alone(component: str) -> None:
    base, with_component = policy_with(), policy_with(component)
    assert with_component["spec"]["ingress"] == base["spec"]["ingress"]
    assert with_component["spec"]["egress"][: len(base["spec"]["egress"])] == base["spec"]["egress"]
    assert len(with_component["spec"]["egress"]) == len(base["spec"]["egress"]) + 1


TENANT_POD = Pod("aurum-dev", {"app": "curious"})
OPERATOR_NEIGHBOUR = Pod("stampede-system", {"app.kubernetes.io/name": "prometheus"})
OPENSHIFT_PROMETHEUS = Pod("openshift-user-workload-monitoring", {"app.kubernetes.io/name": "prometheus"})
OPENSHIFT_PLATFORM = Pod("openshift-monitoring", {"app.kubernetes.io/name": "prometheus"})
OUTSIDE = Address("203.0.113.7")
OBSERVABILITY_PATCH = """
patches:
  - target: {kind: NetworkPolicy, name: stampede-operator}
    patch: |-
      - op: replace
        path: /spec/ingress/0/from
        value: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: observability}}}]
"""
"""The patch docs/install.md gives for a Prometheus in another namespace (kept verbatim there)."""


@pytest.mark.parametrize("overlay", ["cluster", "namespaced"])
def test_by_default_metrics_are_reachable_from_the_monitoring_namespace_only(overlay: str) -> None:
    policy = policy_with(overlay=overlay)
    assert admitted(policy, PROMETHEUS, 9102)
    assert admitted(policy, Pod("monitoring", {"app": "anything"}), 9102)
    for source in (TENANT_POD, OPERATOR_NEIGHBOUR, OPENSHIFT_PROMETHEUS, OUTSIDE):
        assert not admitted(policy, source, 9102), source
    assert not admitted(policy, PROMETHEUS, 9103)
    assert not admitted(policy, PROMETHEUS, 9102, "UDP")


def test_the_liveness_port_stays_reachable_from_anywhere() -> None:
    policy = policy_with()
    for source in (PROMETHEUS, TENANT_POD, OUTSIDE):
        assert admitted(policy, source, 8080)
    assert len(policy["spec"]["ingress"]) == 2, "no other ingress than /metrics and /healthz"


def test_openshift_monitoring_may_scrape_with_its_component() -> None:
    policy = policy_with("networkpolicy-metrics-openshift")
    for source in (OPENSHIFT_PROMETHEUS, OPENSHIFT_PLATFORM, PROMETHEUS):
        assert admitted(policy, source, 9102), source
    assert not admitted(policy, TENANT_POD, 9102)
    base = policy_with()
    assert policy["spec"]["egress"] == base["spec"]["egress"]
    assert policy["spec"]["ingress"][1:] == base["spec"]["ingress"][1:]


def test_the_documented_patch_names_another_namespace_instead_of_monitoring() -> None:
    rendered = render_user_overlay("cluster", extra=OBSERVABILITY_PATCH)
    policy = only(rendered, "NetworkPolicy")
    kubernetes_validate.validate(policy, "1.31", strict=True)
    assert admitted(policy, Pod("observability", {"app": "vmagent"}), 9102)
    assert not admitted(policy, PROMETHEUS, 9102)
    assert not admitted(policy, TENANT_POD, 9102)
    assert OBSERVABILITY_PATCH.strip() in (DEPLOY.parent / "docs" / "install.md").read_text()


def test_the_evaluator_can_tell_allowed_from_denied() -> None:
    """The model itself, on a policy written for the purpose: it must be able to fail."""
    policy = {
        "metadata": {"namespace": "ns"},
        "spec": {"egress": [{"to": [{"podSelector": {"matchLabels": {"a": "b"}}}], "ports": [{"port": 1}]}]},
    }
    assert allowed(policy, Pod("ns", {"a": "b"}), 1)
    assert not allowed(policy, Pod("other", {"a": "b"}), 1)
    assert not allowed(policy, Pod("ns", {"a": "c"}), 1)
    assert not allowed(policy, Pod("ns", {"a": "b"}), 2)
    assert not allowed(policy, Pod("ns", {"a": "b"}), 1, "UDP")
    ingress = {"metadata": {"namespace": "ns"}, "spec": {"ingress": [{"from": [{"namespaceSelector": {}}]}]}}
    assert admitted(ingress, Pod("other"), 1)
    assert not admitted(ingress, Address("203.0.113.7"), 1)
