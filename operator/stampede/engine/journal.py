"""How much of the values a policy overrides its status may keep, and the sentence when that is exceeded.

A change's originals live in the policy's status (first in `journal`, then in `applied`), never on the
target, so the target's annotations do not grow with them. The policy object itself is bounded (etcd
keeps objects up to 1.5 MiB, spec included), so the values kept in status are bounded too: a change
that would exceed the bound is refused before anything is written, with a message naming the key.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..api.status import AppliedChange, PolicyStatus

STATUS_VALUES_LIMIT = 640 * 1024
"""Bytes of original and applied values a policy's status keeps at most, all changes together."""


def values_size(changes: Iterable[AppliedChange]) -> int:
    """UTF-8 bytes of the keys and values the changes keep."""
    total = 0
    for change in changes:
        for key, value in (*change.original.items(), *change.applied.items()):
            total += len(key.encode()) + len((value or "").encode())
    return total


def too_large(status: PolicyStatus, journal: list[AppliedChange]) -> str | None:
    """Why the journal cannot be kept beside what status holds; None when it fits."""
    pending = {c.action for c in journal}
    held = [c for c in status.applied if c.action not in pending]
    size = values_size([*held, *journal])
    if size <= STATUS_VALUES_LIMIT:
        return None
    newest = journal[-1]
    key = max(
        newest.applied,
        key=lambda k: len(newest.applied[k].encode()) + len((newest.original.get(k) or "").encode()),
        default="",
    )
    return (
        f"the original and new values of key {key} of {newest.kind} {newest.name} cannot be kept for an exact "
        f"rollback: the policy's status keeps at most {STATUS_VALUES_LIMIT // 1024} KiB of values "
        f"({size // 1024} KiB needed); nothing was changed"
    )


__all__ = ["STATUS_VALUES_LIMIT", "too_large", "values_size"]
