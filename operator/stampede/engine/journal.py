"""How much of the values a policy sets its status may keep, and the sentence when that is exceeded.

A change's record lives in the policy's status (first in `journal`, then in `applied`), never on the
target, so the target's annotations do not grow with it. The original values of a ConfigMap change are
not in status at all: status keeps a 71-byte digest per key, the values a journal Secret per change in
the operator's namespace (`actuators/journals.py`), so how large a value a policy may override is
bounded only by the ConfigMap itself. The values a policy *sets* are kept in status for drift checks and
exact rollback. They are in the policy's spec too, and spec and status share one object, which etcd
keeps up to 1.5 MiB: so the values status keeps are bounded, and a change that would exceed the bound
is refused before anything is written, with a message naming the key.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..api.status import AppliedChange, PolicyStatus

STATUS_VALUES_LIMIT = 640 * 1024
"""Bytes of keys, set values and recorded originals (digests) a policy's status keeps at most, all changes together."""


def values_size(changes: Iterable[AppliedChange]) -> int:
    """UTF-8 bytes of the keys and values the changes keep (a ConfigMap's originals as digests)."""
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
    key = max(newest.applied, key=lambda k: len(newest.applied[k].encode()), default="")
    return (
        f"the new value of key {key} of {newest.kind} {newest.name} cannot be kept for drift checks and an exact "
        f"rollback: the policy's status keeps at most {STATUS_VALUES_LIMIT // 1024} KiB of the values it sets "
        f"({size // 1024} KiB needed); nothing was changed"
    )


__all__ = ["STATUS_VALUES_LIMIT", "too_large", "values_size"]
