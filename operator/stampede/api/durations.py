"""Go-style durations (`500ms`, `15s`, `1h30m`), the way Kubernetes and Prometheus users write them.

Policies are YAML written by people, so durations stay strings on the wire; the models turn them
into `timedelta` once, at validation, and print them back in the shortest Go form.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

#: Anchored pattern also used as the CRD's `pattern`, so `kubectl apply` rejects what it can.
DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ms|h|m|s))+)$"

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# The text must match exactly as the API server's RE2 matches the CRD pattern: no stripping of (Unicode)
# whitespace, and `fullmatch` because Python's `$` would also accept a trailing newline.
_FULL = re.compile(DURATION_PATTERN, re.ASCII)
MAX_DURATION = timedelta(days=365)


def parse_duration(text: str) -> timedelta:
    """Parse a Go duration; raise ValueError naming the bad text."""
    if not isinstance(text, str) or not _FULL.fullmatch(text):
        raise ValueError(f"invalid duration {text!r}: use Go-style units such as 500ms, 15s, 5m or 1h30m")
    if text == "0":
        return timedelta(0)
    seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))
    if seconds > MAX_DURATION.total_seconds():
        # Durations are added to timestamps; a year is far beyond any runbook and keeps that arithmetic safe.
        raise ValueError(f"duration {text!r} is longer than the maximum {format_duration(MAX_DURATION)}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Shortest Go-style text for a duration (`90s` → `1m30s`)."""
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    sign = "-" if millis < 0 else ""
    millis = abs(millis)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    seconds, millis = divmod(millis, 1000)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if seconds and millis:
        out += f"{seconds}.{millis:03d}".rstrip("0") + "s"
    elif seconds:
        out += f"{seconds}s"
    elif millis:
        out += f"{millis}ms"
    return sign + out


def _coerce(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]
