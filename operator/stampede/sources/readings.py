"""What a signal read is worth: a number, or unknown with a reason and a kind; never a silent 0.

An outage, a typo in PromQL or an empty vector must never be mistaken for 0: a dashboard reading 0 connections
during an outage is exactly how a stampede goes unnoticed. This module holds the `Reading` and the pure
classification of what Prometheus's HTTP API answers (result shapes, error bodies). It knows the Prometheus
*protocol*, not any client library: how a particular library reports failures is `client.py`'s business, which
hands the status and body it recovered to `reading_from_error_response` here.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

TEXT_LIMIT: Final = 200
"""About how many characters of a server's (or library's) words a reading keeps: they end up in status,
conditions, events and terminals, where a hostile Prometheus must not be able to write much, or anything active."""
MESSAGE_LIMIT: Final = 400
"""A whole reason: ours (URLs, Secret names) around at most TEXT_LIMIT characters of theirs."""

# ANSI/ECMA-48 sequences (CSI, OSC up to its terminator, other two-character escapes, 8-bit CSI): whole
# sequences go, so no printable remnant such as "[31m" is left behind.
_ESCAPE_SEQUENCE: Final = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]|\x9b[0-?]*[ -/]*[@-~]"
)


def inert(text: str, *, limit: int = TEXT_LIMIT) -> str:
    """Text from outside made bounded and inert: escape sequences and control characters removed (line
    breaks and tabs become spaces, invisible format characters such as bidi overrides go), whitespace
    collapsed, and cut to `limit` characters with an ellipsis."""
    text = _ESCAPE_SEQUENCE.sub("", text)
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp"):
            kept.append(" ")
        elif category not in ("Cf", "Cs", "Co"):
            kept.append(char)
    text = " ".join("".join(kept).split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def printable(text: str) -> str:
    """`text` fit for a terminal: escape sequences and control characters removed except line breaks and
    tabs; unlike `inert` it keeps the layout and length (the CLI prints whole tables and problem lists)."""
    text = _ESCAPE_SEQUENCE.sub("", text)
    return "".join(
        char
        for char in text
        if char in "\n\t" or unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
    )


class ReadingKind(StrEnum):
    """Machine-readable reasons for an unknown reading: a metric label and the start of a status `error`.

    A StrEnum, so a kind compares equal to (and serialises as) its plain string.
    """

    CONNECTION = "connection"
    TIMEOUT = "timeout"
    HTTP_4XX = "http_4xx"
    HTTP_5XX = "http_5xx"
    EMPTY = "empty"
    MULTIPLE_SERIES = "multiple_series"
    NAN = "nan"
    INVALID_RESPONSE = "invalid_response"
    CREDENTIALS = "credentials"
    """Never produced by the source: the caller could not resolve the endpoint's Secrets, so nothing was sent."""


@dataclass(frozen=True)
class Reading:
    """A number, or unknown (value None) with the reason; unknown is never 0.

    The reason is made `inert` here, the one boundary every message passes, whoever wrote it; the server's
    own words in it were cut to TEXT_LIMIT where they entered (`_error_text`, client.py).
    """

    value: float | None
    error: str | None = None
    kind: ReadingKind | None = None

    def __post_init__(self) -> None:
        if self.error is not None:
            object.__setattr__(self, "error", inert(self.error, limit=MESSAGE_LIMIT))

    @property
    def known(self) -> bool:
        return self.value is not None

    @property
    def summary(self) -> str | None:
        """`[kind] reason` for an unknown reading, as a signal's status `error` shows it; None for a number.

        The kind leads so that a reader (and a `kubectl get -o jsonpath` filter) can tell an outage from a
        PromQL mistake without parsing prose.
        """
        if self.value is not None:
            return None
        return f"[{self.kind or ReadingKind.INVALID_RESPONSE}] {self.error or 'no value'}"

    @classmethod
    def unknown(cls, kind: ReadingKind, error: str) -> Reading:
        return cls(value=None, error=error, kind=kind)

    def scrubbed(self, secrets: Sequence[str]) -> Reading:
        """Last line of defence: whatever a server or library put into the message, secrets do not leave.

        The message is already cut and cleaned by then, so the text a server sent is scrubbed earlier too,
        with `without_secrets`, before it is cut (a secret cut in half would no longer match).
        """
        if self.error is None or not secrets:
            return self
        return Reading(value=self.value, error=without_secrets(self.error, secrets), kind=self.kind)


def without_secrets(text: str, secrets: Sequence[str]) -> str:
    """`text` with every occurrence of each secret replaced by `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def _sample_value(raw: object, *, what: str) -> Reading:
    """Turns one `[timestamp, "value"]` pair into a Reading, refusing NaN and infinities."""
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        return Reading.unknown(ReadingKind.INVALID_RESPONSE, f"Prometheus returned a malformed {what}.")
    try:
        number = float(raw[1])
    except (TypeError, ValueError):
        return Reading.unknown(
            ReadingKind.INVALID_RESPONSE,
            f"Prometheus returned a non-numeric {what} value {str(raw[1])[:60]!r}.",
        )
    if math.isnan(number) or math.isinf(number):
        # NaN/Inf usually mean a division by zero (e.g. an idle rate); they are no basis for a decision.
        return Reading.unknown(ReadingKind.NAN, f"The query evaluated to {raw[1]}, which is not a usable number.")
    return Reading(value=number)


NOT_A_LIST: Final = Reading.unknown(ReadingKind.INVALID_RESPONSE, "Prometheus returned a result that is not a list.")


def reading_from_result(result: object, result_type: str | None = None) -> Reading:
    """Interprets the `data.result` part of an instant-query answer.

    Clients may hand back only `data.result` and drop `resultType`, so when it is not given the type is
    recognised by shape: a scalar is `[ts, "v"]`, a vector is a list of `{metric, value}`.
    """
    if result_type == "string":
        return Reading.unknown(ReadingKind.INVALID_RESPONSE, "The query returned a string, not a number.")
    if result_type == "scalar" or (
        result_type is None and isinstance(result, list) and len(result) == 2 and not isinstance(result[0], dict)
    ):
        return _sample_value(result, what="scalar")
    if not isinstance(result, list):
        return NOT_A_LIST
    if not result:
        return Reading.unknown(ReadingKind.EMPTY, "The query returned no series (empty vector).")
    if len(result) > 1:
        return Reading.unknown(
            ReadingKind.MULTIPLE_SERIES,
            f"The query returned {len(result)} series; aggregate it (e.g. with sum or max) to a single one.",
        )
    series = result[0]
    if not isinstance(series, dict):
        return Reading.unknown(ReadingKind.INVALID_RESPONSE, "Prometheus returned a malformed series.")
    if result_type == "matrix" or "values" in series:
        return Reading.unknown(
            ReadingKind.INVALID_RESPONSE, "The query returned a range vector; an instant vector is required."
        )
    return _sample_value(series.get("value"), what="sample")


def readings_at_steps(result: object, stamps: Sequence[float]) -> list[tuple[datetime, Reading]]:
    """Spreads a range query's matrix result over the step timestamps the caller asked for.

    A step without a sample is unknown ("empty"), a step where several series have samples is unknown
    ("multiple_series").
    """
    if not isinstance(result, list):
        return [(datetime.fromtimestamp(ts, UTC), NOT_A_LIST) for ts in stamps]
    # Millisecond keys: Prometheus's float timestamps and ours agree to the millisecond, not bit for bit.
    by_stamp: dict[int, list[object]] = {}
    for series in result:
        values = series.get("values") if isinstance(series, dict) else None
        if not isinstance(values, list):
            continue
        for pair in values:
            if isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], int | float):
                by_stamp.setdefault(round(float(pair[0]) * 1000), []).append(pair)
    readings: list[tuple[datetime, Reading]] = []
    for ts in stamps:
        samples = by_stamp.get(round(ts * 1000), [])
        if not samples:
            reading = Reading.unknown(ReadingKind.EMPTY, "No series had a sample at this step.")
        elif len(samples) > 1:
            reading = Reading.unknown(
                ReadingKind.MULTIPLE_SERIES,
                f"{len(samples)} series had a sample at this step; aggregate the query to a single series.",
            )
        else:
            reading = _sample_value(samples[0], what="sample")
        readings.append((datetime.fromtimestamp(ts, UTC), reading))
    return readings


def _error_text(body: bytes) -> tuple[str | None, str]:
    """Prometheus's own (errorType, error) from an error body, or the start of whatever else came back
    (a proxy's HTML page, for instance)."""
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        error_type = payload.get("errorType")
        return (inert(error_type, limit=40) if isinstance(error_type, str) else None), inert(payload["error"])
    return None, inert(body.decode("utf-8", errors="replace"))


def reading_from_error_response(status: int, body: bytes) -> Reading:
    """Interprets a non-200 answer, keeping Prometheus's own error text (e.g. "parse error: ...")."""
    error_type, text = _error_text(body)
    detail = f": {text}" if text else "."
    if error_type == "timeout":
        # Prometheus gave up evaluating within its query timeout; to the caller that is a timeout.
        return Reading.unknown(ReadingKind.TIMEOUT, f"Prometheus timed out evaluating the query{detail}")
    label = f"HTTP {status}" + (f" {error_type}" if error_type else "")
    if 400 <= status < 500:
        return Reading.unknown(ReadingKind.HTTP_4XX, f"Prometheus rejected the query ({label}){detail}")
    if 500 <= status < 600:
        return Reading.unknown(ReadingKind.HTTP_5XX, f"Prometheus failed to answer ({label}){detail}")
    return Reading.unknown(ReadingKind.INVALID_RESPONSE, f"Prometheus answered with unexpected {label}{detail}")


__all__ = [
    "MESSAGE_LIMIT",
    "NOT_A_LIST",
    "TEXT_LIMIT",
    "Reading",
    "ReadingKind",
    "inert",
    "printable",
    "reading_from_error_response",
    "reading_from_result",
    "readings_at_steps",
    "without_secrets",
]
