"""Which policy holds a target: the one small annotation the operator leaves on what it changed.

`stampede.aurum.io/applied-by: <policy>` is written with (or before) a change and removed with the last
rollback of that policy's changes to the object. It is what a second policy sees as a conflict, and
what an undo or a re-apply requires on the target itself: status alone never makes the operator write
to an object.

In the stricter mode (`STAMPEDE_REQUIRE_TARGET_OPT_IN`, for clusters without the admission policies) the
object's owner opts in too: `stampede.aurum.io/allowed-policies: "aurum-cache,other"` (or `*`) on each
object a policy names is required before the operator writes to it; `Actuators` checks it here.

Crash safety no longer lives on the target. The originals of a change are recorded first in the
policy's `status.journal` (see `handlers/runner.py`), so no annotation grows with the values a policy
overrides. A target still carrying the older ledger annotation has it removed by the next rollback.
"""

from __future__ import annotations

from collections.abc import Callable

from ..api.status import AppliedChange
from .kube import JSON

APPLIED_BY = "stampede.aurum.io/applied-by"
ALLOWED_POLICIES = "stampede.aurum.io/allowed-policies"
"""Set by the target's owner: the comma-separated policies (or `*`, any policy of the namespace) that may
write to it when `STAMPEDE_REQUIRE_TARGET_OPT_IN` is on."""
LEGACY_LEDGER = "stampede.aurum.io/originals"
"""The per-target ledger of earlier versions (originals and applied values); removed, never written."""

Intend = Callable[[AppliedChange], str | None]
"""Records a change in the policy's journal before its target is written; returns why it could not."""


def meta(obj: JSON) -> JSON:
    found: JSON = obj.get("metadata") or {}
    return found


def annotations_of(obj: JSON) -> dict[str, str]:
    return dict(meta(obj).get("annotations") or {})


class Ownership:
    """The `applied-by` mark of one policy."""

    def __init__(self, policy: str) -> None:
        self.policy = policy

    def owner(self, obj: JSON) -> str | None:
        """Another policy holding this object, if any."""
        owner = annotations_of(obj).get(APPLIED_BY)
        return owner if owner and owner != self.policy else None

    def holds(self, obj: JSON) -> bool:
        """Whether this policy's mark is on the object."""
        return annotations_of(obj).get(APPLIED_BY) == self.policy

    def mark(self) -> JSON:
        """Annotations patch marking the object as held by this policy."""
        return {APPLIED_BY: self.policy}

    def release(self, obj: JSON) -> JSON | None:
        """Annotations patch removing the mark (and an older ledger); None when there is nothing to remove."""
        present = annotations_of(obj)
        patch: JSON = {key: None for key in (APPLIED_BY, LEGACY_LEDGER) if key in present}
        return patch or None


def opted_in(obj: JSON, *, policy: str) -> bool:
    """Whether the object's `allowed-policies` annotation names `policy` (or is `*`)."""
    names = {part.strip() for part in annotations_of(obj).get(ALLOWED_POLICIES, "").split(",")}
    return policy in names or "*" in names


def not_opted_in(policy: str) -> str:
    """Why a write is refused in the stricter mode (a clause after the object's kind and name)."""
    return (
        f"does not allow policy {policy}: its annotation {ALLOWED_POLICIES} must name it "
        "(STAMPEDE_REQUIRE_TARGET_OPT_IN is on); nothing written"
    )


def not_held(change: AppliedChange, *, policy: str) -> str:
    """Why an undo or a re-apply is refused: the target does not carry this policy's mark."""
    return (
        f"{change.kind} {change.name} is not marked {APPLIED_BY}={policy}: "
        "status alone never makes the operator write to an object"
    )


__all__ = [
    "ALLOWED_POLICIES",
    "APPLIED_BY",
    "LEGACY_LEDGER",
    "Intend",
    "Ownership",
    "annotations_of",
    "meta",
    "not_held",
    "not_opted_in",
    "opted_in",
]
