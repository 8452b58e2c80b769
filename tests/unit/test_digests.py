"""Digests stand for a ConfigMap's originals in status, events and records; the values stay with the operator."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from stampede.actuators.journals import journal_name
from stampede.actuators.memory import MemoryActuator, MemoryTargets
from stampede.api.kinds import ChangeKind
from stampede.api.spec import Action
from stampede.api.status import AppliedChange, PolicyStatus
from stampede.engine import journal, outcomes, records
from stampede.engine.digests import digest, digested, is_digest, matches, shown

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SECRET = "s3cr3t-original"


def test_a_digest_is_sha256_of_the_utf8_bytes_in_its_wire_form() -> None:
    value = "ünï\ncode"
    assert digest(value) == "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    assert is_digest(digest(value))
    assert not is_digest("sha256:ABC") and not is_digest(None) and not is_digest("60")


def test_absent_keys_stay_absent_and_every_present_value_becomes_its_digest() -> None:
    assert digested({"ttl": "60", "new": None}) == {"ttl": digest("60"), "new": None}


def test_a_sentence_prints_a_short_digest_and_plain_values_as_they_are() -> None:
    assert shown(digest("60")) == digest("60")[:19]
    assert shown("5") == "5"


def test_a_value_matches_its_digest_or_a_plain_record_from_before_digests() -> None:
    assert matches(digest("60"), "60")
    assert not matches(digest("60"), "61")
    assert matches("60", "60"), "a status written before digests"
    assert matches(None, None) and not matches(None, "60") and not matches(digest("60"), None)


def test_journal_names_are_dns_labels_fixed_in_length_and_distinct_per_policy_and_action() -> None:
    name = journal_name(namespace="shop", policy="p", action="a")
    assert name.startswith("stampede-journal-") and len(name) == 57
    assert name == journal_name(namespace="shop", policy="p", action="a")
    others = {
        journal_name(namespace="shop", policy="p", action="b"),
        journal_name(namespace="shop2", policy="p", action="a"),
    }
    assert name not in others and len(others) == 2


def change(original: dict[str, str | None], applied: dict[str, str]) -> AppliedChange:
    return AppliedChange(
        action="banner", kind=ChangeKind.CONFIG_MAP, name="cfg", applied_at=T0, original=original, applied=applied
    )


def test_events_and_records_name_originals_by_digest_never_by_value() -> None:
    recorded = change({"ttl": digest(SECRET), "new": None}, {"ttl": "600", "new": "x"})
    messages = [
        outcomes.would_roll_back(recorded).message,
        outcomes.rolled_back(recorded, restored=recorded.original).message,
        records.describe_change(recorded, after="restored"),
    ]
    for message in messages:
        assert SECRET not in message
        assert shown(digest(SECRET)) in message
        assert "new=(absent)" in message or "new: (absent)" in message


def test_status_bound_counts_digests_not_originals_so_a_900_kib_original_fits() -> None:
    big = "o" * (900 * 1024)
    entry = change({"blob": digest(big)}, {"blob": "small"})
    assert journal.too_large(PolicyStatus(), [entry]) is None
    huge = change({"blob": digest(big)}, {"blob": "n" * (journal.STATUS_VALUES_LIMIT + 1)})
    problem = journal.too_large(PolicyStatus(), [huge])
    assert problem is not None and "key blob" in problem and "nothing was changed" in problem


def test_the_memory_actuator_keeps_originals_aside_and_refuses_a_record_it_did_not_make() -> None:
    targets = MemoryTargets(configmaps={"cfg": {"ttl": SECRET}})
    actuator = MemoryActuator(policy="p", max_replicas=10, targets=targets)
    action = Action.model_validate({"name": "banner", "configMap": {"name": "cfg", "data": {"ttl": "600"}}})
    outcome = actuator.apply(action, incident="i", now=T0, dry_run=False)
    assert outcome.change is not None
    assert outcome.change.original == {"ttl": digest(SECRET)}
    assert SECRET not in outcome.message

    planted = outcome.change.model_copy(update={"original": {"ttl": digest("other")}})
    refused = actuator.undo(planted, now=T0, dry_run=False)
    assert (refused.ok, refused.reason) == (False, "ActionFailed")
    assert targets.configmaps["cfg"] == {"ttl": "600"}

    undone = actuator.undo(outcome.change, now=T0, dry_run=False)
    assert undone.ok, undone.message
    assert targets.configmaps["cfg"] == {"ttl": SECRET}
    assert SECRET not in undone.message
    assert targets.journals == {}


def test_kubectl_stampede_describe_prints_a_configmap_original_as_its_short_digest() -> None:
    from stampede.plugin.views import _change_rows

    change = {"action": "banner", "kind": "ConfigMap", "name": "cfg", "original": {"k": digest(SECRET)}}
    table = _change_rows([{**change, "applied": {"k": "v", "new": "x"}}], incident="")
    (row,) = table.rows
    assert row[2] == f"k: {shown(digest(SECRET))} → v; new: ∅ → x"
