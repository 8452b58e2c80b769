"""Pure arithmetic of changes: what to write to a target and how to take it back exactly.

Actuators fetch the current object and write; these functions decide what. Keeping them pure
lets property tests prove that rollback is the exact inverse of apply for any ConfigMap.
"""

from __future__ import annotations

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
