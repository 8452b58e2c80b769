"""Change arithmetic: what an action writes to its target and what the rollback writes back."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stampede.engine.changes import (
    apply_merge_patch,
    configmap_apply_patch,
    configmap_rollback,
    job_name,
    plan_configmap,
    plan_scale,
    scale_rollback,
    scale_target,
)


@pytest.mark.parametrize(
    ("current", "wanted", "cap", "expected"),
    [
        (2, 10, 50, 10),
        (10, 10, 50, None),
        (12, 10, 50, None),
        (2, 80, 50, 50),
        (50, 80, 50, None),
        (60, 80, 50, None),
    ],
)
def test_scale_target_scales_up_to_the_wanted_replicas_within_the_cap(
    current: int, wanted: int, cap: int, expected: int | None
) -> None:
    assert scale_target(current=current, wanted=wanted, cap=cap) == expected


@settings(max_examples=200, deadline=None)
@given(current=st.integers(0, 200), wanted=st.integers(1, 200), cap=st.integers(1, 200))
def test_scale_target_never_scales_down_and_never_exceeds_the_cap(current: int, wanted: int, cap: int) -> None:
    target = scale_target(current=current, wanted=wanted, cap=cap)
    if target is None:
        assert current >= min(wanted, cap)
    else:
        assert current < target <= cap
        assert target == min(wanted, cap)


def test_plan_configmap_records_none_for_keys_that_did_not_exist() -> None:
    original, applied = plan_configmap({"KEEP": "1"}, {"NEW": "on", "KEEP": "2"})
    assert original == {"NEW": None, "KEEP": "1"}
    assert applied == {"NEW": "on", "KEEP": "2"}


def test_plan_configmap_leaves_out_keys_that_already_hold_the_wanted_value() -> None:
    original, applied = plan_configmap({"SAME": "x", "OTHER": "y"}, {"SAME": "x", "CHANGED": "z"})
    assert original == {"CHANGED": None}
    assert applied == {"CHANGED": "z"}


def test_plan_configmap_treats_an_empty_value_as_present() -> None:
    original, applied = plan_configmap({"EMPTY": ""}, {"EMPTY": "set"})
    assert original == {"EMPTY": ""}
    assert applied == {"EMPTY": "set"}


def test_rollback_removes_keys_that_did_not_exist_before() -> None:
    current = {"KEEP": "1"}
    original, applied = plan_configmap(current, {"NEW": "on", "KEEP": "2"})
    changed = apply_merge_patch(current, configmap_apply_patch(applied))
    patch, skipped = configmap_rollback(changed, original, applied)
    assert patch == {"NEW": None, "KEEP": "1"}
    assert skipped == []
    assert apply_merge_patch(changed, patch) == current


def test_rollback_skips_a_key_someone_else_changed_since_and_keeps_their_value() -> None:
    original, applied = plan_configmap({"A": "1", "B": "1"}, {"A": "2", "B": "2"})
    edited = {"A": "2", "B": "human"}
    patch, skipped = configmap_rollback(edited, original, applied)
    assert skipped == ["B"]
    assert apply_merge_patch(edited, patch) == {"A": "1", "B": "human"}


def test_rollback_skips_a_key_someone_else_deleted_since() -> None:
    original, applied = plan_configmap({}, {"A": "2"})
    patch, skipped = configmap_rollback({}, original, applied)
    assert (patch, skipped) == ({}, ["A"])


def test_a_merge_patch_null_deletes_and_a_missing_key_is_no_error() -> None:
    assert apply_merge_patch({"A": "1", "B": "2"}, {"A": None, "C": None, "B": "3"}) == {"B": "3"}


def test_plan_scale_records_an_absent_count_as_none_and_raises_it_from_the_default_of_one() -> None:
    assert plan_scale(field="minReplicas", current=None, wanted=4, cap=10) == (
        {"minReplicas": None},
        {"minReplicas": "4"},
    )
    assert plan_scale(field="replicas", current=0, wanted=4, cap=3) == ({"replicas": "0"}, {"replicas": "3"})
    assert plan_scale(field="replicas", current=None, wanted=1, cap=10) == ({}, {})


def test_scale_rollback_removes_a_count_that_did_not_exist_and_restores_one_that_did() -> None:
    assert scale_rollback({"minReplicas": 4}, {"minReplicas": None}, {"minReplicas": "4"}) == (
        {"minReplicas": None},
        [],
    )
    assert scale_rollback({"replicas": 6}, {"replicas": "2"}, {"replicas": "6"}) == ({"replicas": 2}, [])


def test_scale_rollback_leaves_a_count_someone_else_changed_since() -> None:
    assert scale_rollback({"replicas": 9}, {"replicas": "2"}, {"replicas": "6"}) == ({}, ["replicas"])
    assert scale_rollback({"replicas": None}, {"replicas": "2"}, {"replicas": "6"}) == ({}, ["replicas"])


DNS_1123_LABEL_VALUE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@pytest.mark.parametrize(
    "cronjob",
    [
        "warmer",
        "a" * 49 + ".b",  # 51 characters, the `.` right at the cut
        "a" * 50 + ".bc",  # 53: the cut falls just after the `.`... and before it
        "a" * 49 + "-." + "c",  # a `-` and a `.` at the cut
        "cache." * 8 + "warm",  # 52 characters with dots throughout
    ],
)
def test_job_names_are_valid_dns_names_of_at_most_63_characters_whatever_the_cronjob_name(cronjob: str) -> None:
    name = job_name(cronjob, policy="p", incident="20260101-000000")
    assert len(name) <= 63
    assert DNS_1123_LABEL_VALUE.match(name), name
    assert ".-" not in name and "-." not in name  # each dot-separated label starts and ends alphanumeric


def test_job_names_differ_per_incident_and_repeat_for_the_same_incident() -> None:
    first = job_name("warmer", policy="p", incident="a")
    assert first == job_name("warmer", policy="p", incident="a")
    assert first != job_name("warmer", policy="p", incident="b")
