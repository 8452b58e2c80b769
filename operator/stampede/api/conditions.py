"""The condition grammar `"<signal> <op> <number>"` used by severities and recovery.

Kept as plain strings in the spec (readable in `kubectl get -o yaml` and Argo CD diffs) and parsed
once here, so the engine compares numbers and never re-parses text.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, WithJsonSchema

SIGNAL_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
_NUMBER = r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?"
# Whitespace spelled out as RE2's `\s` means it: Python's `\s` also takes Unicode spaces and `\v`, which the
# API server (matching the CRD pattern with RE2) refuses, and `stampede lint` must refuse what it refuses.
_WS = r"[\t\n\f\r ]"
CONDITION_PATTERN = rf"^{_WS}*[A-Za-z_][A-Za-z0-9_]{{0,62}}{_WS}*(<=|>=|==|!=|<|>){_WS}*{_NUMBER}{_WS}*$"
_CONDITION = re.compile(
    rf"{_WS}*(?P<signal>[A-Za-z_][A-Za-z0-9_]{{0,62}}){_WS}*(?P<op><=|>=|==|!=|<|>){_WS}*(?P<number>{_NUMBER}){_WS}*"
)

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Condition:
    """One parsed comparison of a signal against a threshold."""

    signal: str
    op: str
    threshold: float
    text: str

    def holds(self, value: float | None) -> bool:
        """True only for a known, finite reading that satisfies the comparison: unknown never holds."""
        if value is None or math.isnan(value) or math.isinf(value):
            return False
        return _OPERATORS[self.op](value, self.threshold)


def parse_condition(text: Any) -> Condition:
    """Parse one condition; raise ValueError naming the text and the expected form."""
    match = _CONDITION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"invalid condition {text!r}: expected '<signal> <op> <number>' with op one of "
            "< <= > >= == != (e.g. 'hitRate < 0.5')"
        )
    threshold = float(match["number"])
    if math.isinf(threshold) or math.isnan(threshold):
        raise ValueError(f"invalid condition {text!r}: the threshold must be a finite number")
    return Condition(signal=match["signal"], op=match["op"], threshold=threshold, text=text.strip(" \t\n\f\r"))


def _check(text: str) -> str:
    return parse_condition(text).text


ConditionText = Annotated[
    str,
    AfterValidator(_check),
    WithJsonSchema({"type": "string", "pattern": CONDITION_PATTERN}),
]
