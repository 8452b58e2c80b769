"""Journal Secrets against the strict harness: where a ConfigMap change's originals live, and when they are trusted.

The originals are read with the operator's rights; the policy's author may not be able to read them, so
they go to a Secret in the operator's namespace, and the change's record (status, events) carries digests.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from stampede.actuators.journals import ACTION, CONFIGMAP, JOURNAL_OF, journal_name
from stampede.actuators.kube import JSON, Kube, path
from stampede.actuators.targets import Actuators, Target
from stampede.api.spec import Action
from stampede.api.status import AppliedChange
from stampede.engine.digests import digest
from tests.harness.server import HarnessThread

NS = "shop"
OPERATOR_NS = JOURNAL_NS = "stampede-system"
POLICY = "cache-guard"
TARGET = Target(namespace=NS, policy=POLICY)
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2025, 1, 1, 12, 30, tzinfo=UTC)
MARKER = "ORIGINAL-ONLY-THE-OPERATOR-MAY-READ"
WRITE_VERBS = {"create", "update", "patch", "delete"}


def configmap(data: dict[str, str]) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cache-config", "namespace": NS},
        "data": data,
    }


def action(data: dict[str, str], *, name: str = "warm-cache") -> Action:
    return Action.model_validate({"name": name, "configMap": {"name": "cache-config", "data": data}})


def secret_path(action_name: str = "warm-cache") -> str:
    return path("Secret", OPERATOR_NS, journal_name(namespace=NS, policy=POLICY, action=action_name))


def writes(h: HarnessThread, since: int = 0, **filters: Any) -> list[Any]:
    return [r for r in h.log.entries(since=since, **filters) if r.verb in WRITE_VERBS]


def applied(act: Actuators, data: dict[str, str], *, intend: Any = None) -> AppliedChange:
    outcome = act.apply(TARGET, action(data), incident="20250101-120000", now=T0, dry_run=False, intend=intend)
    assert outcome.ok, outcome.message
    assert outcome.change is not None
    assert MARKER not in outcome.message
    return outcome.change


def test_originals_go_to_a_secret_in_the_operator_namespace_before_the_target_and_status_keeps_digests(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap({"ttl": MARKER, "mode": "normal"})])
    seen: list[list[tuple[str, str | None]]] = []

    def intend(change: AppliedChange) -> str | None:
        seen.append([(r.resource, r.namespace) for r in writes(h)])
        return None

    change = applied(act, {"ttl": "600", "coalesce": "true"}, intend=intend)

    assert seen == [[("secrets", OPERATOR_NS)]], "the Secret is written before the intent, the target after it"
    assert change.original == {"ttl": digest(MARKER), "coalesce": None}
    assert MARKER not in str(change.model_dump(mode="json", by_alias=True))
    secret = kube.get(secret_path())
    assert secret["type"] == "Opaque"
    assert base64.b64decode(secret["data"]["ttl"]).decode() == MARKER
    assert set(secret["data"]) == {"ttl"}, "an absent key has no original to keep"
    notes = secret["metadata"]["annotations"]
    assert (notes[JOURNAL_OF], notes[ACTION], notes[CONFIGMAP]) == (f"{NS}/{POLICY}", "warm-cache", "cache-config")
    assert [r.namespace for r in writes(h, resource="secrets")] == [OPERATOR_NS], "never in the policy's namespace"


def test_a_rollback_restores_the_verified_originals_byte_for_byte_and_deletes_the_secret(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    original = MARKER + " ünïcödé\n" * 3
    h.apply([configmap({"ttl": original, "mode": "normal"})])
    change = applied(act, {"ttl": "600", "coalesce": "true"})

    outcome = act.undo(TARGET, change, now=T1, dry_run=False)

    assert (outcome.ok, outcome.reason) == (True, "ActionRolledBack"), outcome.message
    assert MARKER not in outcome.message
    assert digest(original)[:19] in outcome.message, "the event names the original by its short digest"
    assert kube.get(path("ConfigMap", NS, "cache-config"))["data"] == {"ttl": original, "mode": "normal"}
    assert [(r.verb, r.status) for r in writes(h, resource="secrets")][-1] == ("delete", 200)


@pytest.mark.parametrize("tamper", ["forged", "missing", "not-base64"])
def test_a_forged_or_missing_journal_secret_is_refused_and_nothing_is_written(
    h: HarnessThread, kube: Kube, act: Actuators, tamper: str
) -> None:
    h.apply([configmap({"ttl": MARKER})])
    change = applied(act, {"ttl": "600"})
    if tamper == "missing":
        kube.delete(secret_path())
    else:
        value = base64.b64encode(b"evil").decode() if tamper == "forged" else "%%%"
        secret = kube.get(secret_path())
        kube.replace(secret_path(), {**secret, "data": {"ttl": value}})
    mark = h.log.last_id

    outcome = act.undo(TARGET, change, now=T1, dry_run=False)

    assert (outcome.ok, outcome.reason) == (False, "ActionFailed"), "the change stays held, retried at the next poll"
    assert journal_name(namespace=NS, policy=POLICY, action="warm-cache") in outcome.message
    assert "nothing was written" in outcome.message
    assert writes(h, since=mark) == []
    assert kube.get(path("ConfigMap", NS, "cache-config"))["data"] == {"ttl": "600"}


def test_a_status_entry_pointing_at_another_value_is_refused_even_with_a_genuine_secret(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap({"ttl": MARKER})])
    change = applied(act, {"ttl": "600"})
    planted = change.model_copy(update={"original": {"ttl": digest("something the attacker wants")}})
    mark = h.log.last_id

    outcome = act.undo(TARGET, planted, now=T1, dry_run=False)

    assert (outcome.ok, outcome.reason) == (False, "ActionFailed")
    assert writes(h, since=mark) == []


def test_a_dry_run_keeps_no_secret_and_names_no_original(h: HarnessThread, act: Actuators) -> None:
    h.apply([configmap({"ttl": MARKER})])
    outcome = act.apply(TARGET, action({"ttl": "600"}), incident="i", now=T0, dry_run=True)
    assert outcome.ok and outcome.change is not None
    assert outcome.change.original == {"ttl": digest(MARKER)}
    would = act.undo(TARGET, outcome.change, now=T1, dry_run=True)
    assert MARKER not in outcome.message + would.message
    assert writes(h) == []


def test_an_original_near_the_configmap_limit_round_trips(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    big = MARKER + "x" * (900 * 1024)
    h.apply([configmap({"blob": big})])
    change = applied(act, {"blob": "small"})
    assert len(str(change.model_dump(mode="json"))) < 2048, "status keeps a digest, not the value"
    outcome = act.undo(TARGET, change, now=T1, dry_run=False)
    assert outcome.ok, outcome.message
    assert kube.get(path("ConfigMap", NS, "cache-config"))["data"] == {"blob": big}


def test_the_configmap_gone_takes_its_journal_secret_with_it(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([configmap({"ttl": MARKER})])
    change = applied(act, {"ttl": "600"})
    kube.delete(path("ConfigMap", NS, "cache-config"))
    outcome = act.undo(TARGET, change, now=T1, dry_run=False)
    assert outcome.ok, outcome.message
    assert [r.verb for r in writes(h, resource="secrets")][-1] == "delete"


def test_a_change_whose_record_was_lost_takes_its_originals_from_the_journal_secret_and_rolls_back_exactly(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    # Killed twice around a restart, the operator can lose the record of a change that landed: the ConfigMap
    # has the action's values and the policy's mark, and the engine plans the action again. The originals
    # must come from the journal Secret that first apply kept, never from the values now there.
    h.apply([configmap({"ttl": MARKER, "mode": "normal"})])
    first = applied(act, {"ttl": "600", "coalesce": "true"})
    mark = h.log.last_id

    again = applied(act, {"ttl": "600", "coalesce": "true"})

    assert again.original == first.original == {"ttl": digest(MARKER), "coalesce": None}
    assert again.applied == {"ttl": "600", "coalesce": "true"}
    assert writes(h, since=mark) == [], "the values are there already: nothing is written again"
    undone = act.undo(TARGET, again, now=T1, dry_run=False)
    assert undone.ok, undone.message
    cm = kube.get(path("ConfigMap", NS, "cache-config"))
    assert cm["data"] == {"ttl": MARKER, "mode": "normal"}
    assert not (cm["metadata"].get("annotations") or {}), "the mark goes with the rollback"


def test_without_its_journal_secret_a_marked_configmap_records_nothing_it_cannot_roll_back(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap({"ttl": MARKER})])
    applied(act, {"ttl": "600"})
    kube.delete(secret_path())

    again = applied(act, {"ttl": "600"})

    assert again.applied == {}, "with no originals to be had, the change records no value it would restore wrongly"
