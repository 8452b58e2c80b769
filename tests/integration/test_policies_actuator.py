"""Writes to StampedePolicy objects against the emulated API server: minimal status patches, only our own
finalizer, and Secret reads that say what is missing."""

from __future__ import annotations

import base64
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from stampede.actuators.kube import JSON, Kube, KubeError
from stampede.actuators.policies import CREDENTIALS_LABEL, FINALIZER, Policies, merge_diff, policy_path
from stampede.api import API_VERSION
from tests.harness.server import HarnessThread
from tests.support.kube import harness_with_namespace, make_kube

pytestmark = pytest.mark.timeout(60)

NS = "shop"
NAME = "cache-policy"
OTHER_FINALIZER = "example.com/keep-me"
WRITE_VERBS = ("create", "update", "patch", "delete")


class SpyKube(Kube):
    """The real client, remembering every merge patch body it sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[str, JSON]] = []

    def merge(self, path: str, patch: JSON) -> JSON:
        self.sent.append((path, patch))
        return super().merge(path, patch)


@pytest.fixture
def h(tmp_path: pathlib.Path) -> Iterator[HarnessThread]:
    with harness_with_namespace(tmp_path, NS) as harness:
        yield harness


@pytest.fixture
def kube(h: HarnessThread) -> SpyKube:
    spy = make_kube(h, SpyKube)
    assert isinstance(spy, SpyKube)
    return spy


@pytest.fixture
def policies(kube: SpyKube) -> Policies:
    return Policies(kube)


def seed_policy(h: HarnessThread, *, finalizers: list[str] | None = None) -> None:
    meta: JSON = {"name": NAME, "namespace": NS}
    if finalizers is not None:
        meta["finalizers"] = finalizers
    h.apply(
        [
            {
                "apiVersion": API_VERSION,
                "kind": "StampedePolicy",
                "metadata": meta,
                # A spec the CRD accepts: the emulated API server validates custom resources as a real one does.
                "spec": {
                    "mode": "Enforce",
                    "signals": [{"name": "hitRate", "query": "vector(1)"}],
                    "severities": [{"level": "P1", "any": ["hitRate < 0.5"], "for": "1m"}],
                    "recovery": {"all": ["hitRate > 0.9"], "for": "1m"},
                    "phases": [
                        {
                            "name": "now",
                            "actions": [
                                {"name": "scale", "scale": {"kind": "Deployment", "name": "api", "replicas": 2}}
                            ],
                        }
                    ],
                },
            }
        ]
    )


def writes(h: HarnessThread, since: int = 0) -> list[Any]:
    return [r for r in h.log.entries(since=since) if r.verb in WRITE_VERBS]


STATUS: JSON = {
    "state": "Incident",
    "severity": "P1",
    "incident": {
        "id": "20250101-120000",
        "startedAt": "2025-01-01T12:00:00Z",
        "severity": "P1",
        "phase": "immediate",
        "recoveringSince": "2025-01-01T12:10:00Z",
    },
    "signals": [{"name": "hitRate", "value": "0.4"}],
    "applied": [
        {
            "action": "warm",
            "kind": "ConfigMap",
            "name": "c",
            "appliedAt": "2025-01-01T12:00:00Z",
            "original": {"ttl": "60"},
            "absent": ["new"],
            "applied": {"ttl": "600", "new": "1"},
        }
    ],
}


def test_write_status_sends_a_minimal_merge_patch_with_removed_nested_keys_as_null(
    h: HarnessThread, kube: SpyKube, policies: Policies
) -> None:
    seed_policy(h)
    assert policies.write_status(NS, NAME, old={}, new=STATUS) is not None
    kube.sent.clear()
    new = {
        **STATUS,
        "incident": {k: v for k, v in STATUS["incident"].items() if k != "recoveringSince"},
        "signals": [{"name": "hitRate", "value": "0.95"}],
    }

    result = policies.write_status(NS, NAME, old=STATUS, new=new)

    assert kube.sent == [
        (
            policy_path(NS, NAME, "status"),
            {"status": {"incident": {"recoveringSince": None}, "signals": [{"name": "hitRate", "value": "0.95"}]}},
        )
    ]
    assert result is not None
    stored = kube.get(policy_path(NS, NAME))
    assert stored["status"] == new
    assert "recoveringSince" not in stored["status"]["incident"]
    assert stored["spec"]["mode"] == "Enforce", "the status subresource never touches the spec"
    patch = h.log.entries(verb="patch")[-1]
    assert (patch.subresource, patch.field_manager, patch.content_type) == (
        "status",
        "stampede-operator",
        "application/merge-patch+json",
    )


def test_write_status_removing_a_top_level_key_keeps_the_absent_marks(
    h: HarnessThread, kube: SpyKube, policies: Policies
) -> None:
    seed_policy(h)
    policies.write_status(NS, NAME, old={}, new=STATUS)
    idle = {"state": "Idle", "signals": STATUS["signals"], "applied": STATUS["applied"]}

    policies.write_status(NS, NAME, old=STATUS, new=idle)

    assert kube.sent[-1][1] == {"status": {"state": "Idle", "severity": None, "incident": None}}
    stored = kube.get(policy_path(NS, NAME))["status"]
    assert stored == idle
    assert (stored["applied"][0]["original"], stored["applied"][0]["absent"]) == ({"ttl": "60"}, ["new"])


def test_write_status_returns_none_and_sends_nothing_when_unchanged(
    h: HarnessThread, kube: SpyKube, policies: Policies
) -> None:
    seed_policy(h)
    policies.write_status(NS, NAME, old={}, new=STATUS)
    mark = h.log.last_id
    kube.sent.clear()

    assert policies.write_status(NS, NAME, old=STATUS, new={**STATUS}) is None

    assert kube.sent == []
    assert h.log.entries(since=mark) == []


def test_merge_diff_is_an_rfc7386_patch_from_old_to_new() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2], "gone": "x"}
    new = {"a": 1, "b": {"c": 2, "d": 4, "e": 5}, "l": [1], "fresh": {"k": "v"}}
    assert merge_diff(old, new) == {"b": {"d": 4, "e": 5}, "l": [1], "gone": None, "fresh": {"k": "v"}}
    assert merge_diff(old, old) == {}
    assert merge_diff({"b": {"c": 1}}, {"b": "flat"}) == {"b": "flat"}


def test_set_finalizer_adds_only_its_own_and_keeps_others(h: HarnessThread, kube: SpyKube, policies: Policies) -> None:
    seed_policy(h, finalizers=[OTHER_FINALIZER])

    policies.set_finalizer(NS, NAME, present=True)
    assert kube.get(policy_path(NS, NAME))["metadata"]["finalizers"] == [OTHER_FINALIZER, FINALIZER]
    mark = h.log.last_id
    policies.set_finalizer(NS, NAME, present=True)
    assert writes(h, since=mark) == [], "already present: no write"

    policies.set_finalizer(NS, NAME, present=False)
    assert kube.get(policy_path(NS, NAME))["metadata"]["finalizers"] == [OTHER_FINALIZER]
    mark = h.log.last_id
    policies.set_finalizer(NS, NAME, present=False)
    assert writes(h, since=mark) == [], "already absent: no write"


def test_set_finalizer_removes_the_last_finalizer_entirely(h: HarnessThread, kube: SpyKube, policies: Policies) -> None:
    seed_policy(h)
    policies.set_finalizer(NS, NAME, present=True)
    assert kube.get(policy_path(NS, NAME))["metadata"]["finalizers"] == [FINALIZER]

    policies.set_finalizer(NS, NAME, present=False)

    assert not kube.get(policy_path(NS, NAME))["metadata"].get("finalizers")


def test_set_finalizer_never_loses_a_finalizer_added_concurrently(
    h: HarnessThread, kube: SpyKube, policies: Policies
) -> None:
    seed_policy(h)
    original_get = kube.get

    def racing_get(path: str, **kwargs: Any) -> JSON:
        result = original_get(path, **kwargs)
        kube.get = original_get  # type: ignore[method-assign]
        Kube.merge(kube, policy_path(NS, NAME), {"metadata": {"finalizers": [OTHER_FINALIZER]}})
        return result

    kube.get = racing_get  # type: ignore[method-assign]
    # The first write conflicts (409) and is retried at once with a fresh read that sees the other finalizer.
    policies.set_finalizer(NS, NAME, present=True)
    assert kube.get(policy_path(NS, NAME))["metadata"]["finalizers"] == [OTHER_FINALIZER, FINALIZER]


def test_set_finalizer_on_a_deleting_policy_removes_it_and_the_policy_goes_away(
    h: HarnessThread, kube: SpyKube, policies: Policies
) -> None:
    seed_policy(h)
    policies.set_finalizer(NS, NAME, present=True)
    kube.request("DELETE", policy_path(NS, NAME))
    assert kube.get(policy_path(NS, NAME))["metadata"]["deletionTimestamp"]

    policies.set_finalizer(NS, NAME, present=False)

    with pytest.raises(KubeError) as error:
        kube.get(policy_path(NS, NAME))
    assert error.value.not_found


def _secret(name: str, data: dict[str, str], *, labels: dict[str, str] | None = None) -> dict[str, object]:
    meta: dict[str, object] = {"name": name, "namespace": NS}
    if labels is not None:
        meta["labels"] = labels
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": encoded}


LABELLED = {CREDENTIALS_LABEL: "true"}


def test_read_secret_decodes_base64_from_a_secret_labelled_for_the_operator(
    h: HarnessThread, policies: Policies
) -> None:
    token = "s3cr3t-töken\n"
    h.apply([_secret("prom", {"token": token}, labels=LABELLED)])

    assert policies.read_secret(NS, "prom", "token") == token


def test_a_secret_without_the_credentials_label_is_not_read(h: HarnessThread, policies: Policies) -> None:
    h.apply([_secret("other", {"token": "x"}), _secret("wrong", {"token": "x"}, labels={CREDENTIALS_LABEL: "yes"})])

    for name in ("other", "wrong"):
        with pytest.raises(KubeError) as error:
            policies.read_secret(NS, name, "token")
        assert error.value.not_found


def test_missing_unlabelled_and_keyless_secrets_read_alike_so_a_policy_cannot_probe(
    h: HarnessThread, policies: Policies
) -> None:
    h.apply([_secret("plain", {"token": "x"}), _secret("marked", {"token": "x"}, labels=LABELLED)])

    messages = []
    for name, key in [("absent", "token"), ("plain", "token"), ("marked", "password")]:
        with pytest.raises(KubeError) as error:
            policies.read_secret(NS, name, key)
        assert error.value.not_found
        messages.append(error.value.message.replace(name, "NAME").replace(repr(key), "KEY"))
    assert len(set(messages)) == 1, messages
    assert CREDENTIALS_LABEL in messages[0]
