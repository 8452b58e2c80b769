"""Standard Kubernetes status conditions, with `lastTransitionTime` kept when nothing flipped.

Rewriting a condition with a fresh timestamp on every poll would make every status write look
like a change; this keeps writes to real transitions.
"""

from __future__ import annotations

from datetime import datetime

from ..api.status import ConditionStatus, StatusCondition


def set_condition(
    conditions: list[StatusCondition],
    *,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[StatusCondition]:
    """Return the list with `type_` set; the transition time moves only when the status flips."""
    wanted = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    out: list[StatusCondition] = []
    found = False
    for condition in conditions:
        if condition.type != type_:
            out.append(condition)
            continue
        found = True
        since = condition.last_transition_time if condition.status == wanted else now
        out.append(
            StatusCondition(
                type=type_,
                status=wanted,
                reason=reason,
                message=message,
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    if not found:
        out.append(
            StatusCondition(
                type=type_,
                status=wanted,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return out


def condition_is(conditions: list[StatusCondition], type_: str) -> bool | None:
    """True/False for a set condition, None when absent or Unknown."""
    for condition in conditions:
        if condition.type == type_:
            if condition.status == ConditionStatus.UNKNOWN:
                return None
            return condition.status == ConditionStatus.TRUE
    return None
