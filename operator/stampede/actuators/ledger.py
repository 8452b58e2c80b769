"""The ledger on a changed object: which policy holds it, and the true originals of each change.

Every change is written together with a ledger entry on its target, in the same request where the
API allows it. The status is written after the change, so if the operator dies in between, the next
apply (or adoption) finds the entry and records the true originals instead of the values it set
itself: a crash never turns a change into one that cannot be rolled back. The ledger and the
`applied-by` annotation go away with the last rollback.

Kept behind this small interface (`find`, `patch`, `holds`, `owner`) so that another store of the
same facts (a journal in status) can replace the annotation without touching the target kinds.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..api.kinds import ChangeKind
from ..api.status import AppliedChange, Timestamp, WorkloadStatusRef
from .kube import JSON

APPLIED_BY = "stampede.aurum.io/applied-by"
LEDGER = "stampede.aurum.io/originals"


def ledger_key(policy: str, action: str) -> str:
    """The one key of a change in the ledger: an object may carry changes of several actions."""
    return f"{policy}/{action}"


class LedgerEntry(BaseModel):
    """One change as the ledger records it (the wire form is part of what a restarted operator reads)."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    incident: str = ""
    applied_at: Timestamp | None = Field(default=None, alias="appliedAt")
    original: dict[str, str | None] = Field(default_factory=dict)
    applied: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of(cls, change: AppliedChange) -> LedgerEntry:
        return cls(
            incident=change.incident, applied_at=change.applied_at, original=change.original, applied=change.applied
        )

    def change(
        self,
        *,
        action: str,
        kind: ChangeKind,
        name: str,
        now: datetime,
        restart: list[WorkloadStatusRef] | None = None,
    ) -> AppliedChange:
        """The status record of this entry (for a change made but never recorded)."""
        return AppliedChange(
            action=action,
            kind=kind,
            name=name,
            incident=self.incident,
            applied_at=self.applied_at or now,
            original=dict(self.original),
            applied=dict(self.applied),
            restart=restart or [],
        )

    def wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def meta(obj: JSON) -> JSON:
    found: JSON = obj.get("metadata") or {}
    return found


def annotations_of(obj: JSON) -> dict[str, str]:
    return dict(meta(obj).get("annotations") or {})


def _entries(obj: JSON) -> dict[str, Any]:
    try:
        data = json.loads(annotations_of(obj).get(LEDGER, "{}"))
    except ValueError:
        data = {}
    return data if isinstance(data, dict) else {}


class Ledger:
    """The ledger of one policy on the objects it changes."""

    def __init__(self, policy: str) -> None:
        self.policy = policy

    def find(self, obj: JSON, action: str) -> LedgerEntry | None:
        """The entry of an action's change on this object; None when there is none (or it is unreadable)."""
        raw = _entries(obj).get(ledger_key(self.policy, action))
        if not isinstance(raw, dict):
            return None
        try:
            return LedgerEntry.model_validate(raw)
        except ValidationError:
            # An unreadable time must not lose the originals; the caller's `now` stands in for it.
            try:
                return LedgerEntry.model_validate({**raw, "appliedAt": None})
            except ValidationError:
                return None

    def owner(self, obj: JSON) -> str | None:
        """Another policy holding this object, if any."""
        owner = annotations_of(obj).get(APPLIED_BY)
        return owner if owner and owner != self.policy else None

    def holds(self, obj: JSON, action: str, entry: LedgerEntry) -> bool:
        """Whether the object already records exactly this entry, under this policy."""
        return self.find(obj, action) == entry and annotations_of(obj).get(APPLIED_BY) == self.policy

    def patch(self, obj: JSON, action: str, entry: LedgerEntry | None) -> JSON:
        """Annotations patch adding (or, with None, removing) one entry; applied-by goes with the last one."""
        entries = _entries(obj)
        key = ledger_key(self.policy, action)
        if entry is None:
            entries.pop(key, None)
        else:
            entries[key] = entry.wire()
        if entries:
            return {APPLIED_BY: self.policy, LEDGER: json.dumps(entries, sort_keys=True, separators=(",", ":"))}
        return {APPLIED_BY: None, LEDGER: None}

    def has(self, obj: JSON, action: str) -> bool:
        return ledger_key(self.policy, action) in _entries(obj)


__all__ = ["APPLIED_BY", "LEDGER", "Ledger", "LedgerEntry", "annotations_of", "ledger_key", "meta"]
