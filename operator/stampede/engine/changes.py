"""Pure arithmetic of changes: what to write to a target and how to take it back exactly.

Actuators fetch the current object and write; these functions decide what. Keeping them pure
lets property tests prove that rollback is the exact inverse of apply, for ConfigMaps and for
replica counts alike, and lets the in-memory actuator of `stampede simulate` share them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def plan_configmap(
    current: Mapping[str, str], wanted: Mapping[str, str]
) -> tuple[dict[str, str | None], dict[str, str]]:
    """The originals to record (None = key absent) and the values to set, for keys that differ."""
    original: dict[str, str | None] = {}
    applied: dict[str, str] = {}
    for key, value in wanted.items():
        if current.get(key) != value:
            original[key] = current.get(key)
            applied[key] = value
    return original, applied


def configmap_apply_patch(applied: Mapping[str, str]) -> dict[str, str | None]:
    """The merge patch of `data` that applies the change."""
    return dict(applied)


def configmap_rollback(
    current: Mapping[str, str],
    original: Mapping[str, str | None],
    applied: Mapping[str, str],
) -> tuple[dict[str, str | None], list[str]]:
    """The merge patch of `data` that restores originals, and the keys skipped.

    Only keys that still hold the value this policy set are restored (`None` removes a key that did
    not exist); a key changed by someone else since is left alone and reported as skipped.
    """
    patch: dict[str, str | None] = {}
    skipped: list[str] = []
    for key, value in applied.items():
        if current.get(key) != value:
            skipped.append(key)
            continue
        patch[key] = original.get(key)
    return patch, skipped


def apply_merge_patch(data: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    """What a JSON merge patch does to a flat string map (None deletes)."""
    out = dict(data)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def scale_target(*, current: int, wanted: int, cap: int) -> int | None:
    """Replicas to set when scaling up to `wanted` (capped); None when no change is needed.

    Never scales down: a workload already at or above the target is left alone.
    """
    target = min(wanted, cap)
    if current >= target:
        return None
    return target


def plan_scale(
    *, field: str, current: int | None, wanted: int, cap: int
) -> tuple[dict[str, str | None], dict[str, str]]:
    """The originals to record and the count to set when scaling `field` up to `wanted` (capped).

    `current` None means the field is absent (the API server reads it as 1); it is recorded as None so a
    rollback removes it again. Nothing to record when no change is needed.
    """
    target = scale_target(current=current if current is not None else 1, wanted=wanted, cap=cap)
    if target is None:
        return {}, {}
    return {field: str(current) if current is not None else None}, {field: str(target)}


def scale_rollback(
    current: Mapping[str, int | None],
    original: Mapping[str, str | None],
    applied: Mapping[str, str],
) -> tuple[dict[str, int | None], list[str]]:
    """The counts that restore originals (None: remove the field), and the fields skipped.

    As for ConfigMaps, only a field that still holds the count this policy set is restored; one scaled
    by someone else since is left alone and reported as skipped.
    """
    patch: dict[str, int | None] = {}
    skipped: list[str] = []
    for field, value in applied.items():
        if str(current.get(field)) != value:
            skipped.append(field)
            continue
        before = original.get(field)
        patch[field] = int(before) if before is not None else None
    return patch, skipped


def apply_scale_patch(counts: Mapping[str, int | None], patch: Mapping[str, int | str | None]) -> dict[str, int | None]:
    """What a merge patch of replica fields does to the counts (None removes the field)."""
    out = dict(counts)
    for field, value in patch.items():
        out[field] = int(value) if value is not None else None
    return out


def label_value(text: str) -> str:
    """A label-safe form of a name: names may be 253 characters, label values only 63."""
    if len(text) <= 63:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[:54].rstrip('.-')}-{digest}"


def job_name(cronjob: str, *, policy: str, incident: str) -> str:
    """One deterministic Job name per (policy, incident): a restarted operator finds, not duplicates, it.

    At most 63 characters (a Job's name is also its pods' `job-name` label value), and a valid DNS-1123
    name: the CronJob's name is cut so that no `.` or `-` ends up before the suffix.
    """
    digest = hashlib.sha256(f"{policy}/{incident}".encode()).hexdigest()[:8]
    return f"{cronjob[: 63 - 13].rstrip('.-')}-stp-{digest}"
