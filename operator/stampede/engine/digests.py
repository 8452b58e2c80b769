"""Digests of the ConfigMap values a policy replaces: what status and events show instead of the values.

A policy's author may be able to write a policy naming a ConfigMap without being able to read it. The
operator reads the originals with its own rights, so they must not come back to the author through
the policy's status, its events or its incident records (issue 17). A digest proves exactness (the
operator restores only a value whose digest status recorded) and reveals nothing readable. The values
themselves are kept in a journal Secret in the operator's namespace (`actuators/journals.py`).

Wire form in status: `sha256:` followed by the 64 lowercase hex digits of the SHA-256 of the value's
UTF-8 bytes. Sentences print the first 12 hex digits (`sha256:0123456789ab`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

PREFIX = "sha256:"
SHORT = 12
"""Hex digits a sentence prints: enough to tell two values apart by eye, and to match a full digest."""
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def digest(value: str) -> str:
    """`sha256:<64 hex>` of the value's UTF-8 bytes."""
    return PREFIX + hashlib.sha256(value.encode()).hexdigest()


def is_digest(value: str | None) -> bool:
    return value is not None and _DIGEST.fullmatch(value) is not None


def digested(values: Mapping[str, str | None]) -> dict[str, str | None]:
    """The values as status keeps them: a digest per value, None (an absent key) as it is."""
    return {key: None if value is None else digest(value) for key, value in values.items()}


def shown(value: str) -> str:
    """How a sentence prints a recorded value: a digest cut to its first hex digits, anything else as it is."""
    return value[: len(PREFIX) + SHORT] if is_digest(value) else value


def matches(recorded: str | None, value: str | None) -> bool:
    """Whether a value is the one status recorded (by digest; a plain record from before digests, as it is)."""
    if recorded is None or value is None:
        return recorded is value
    return recorded == digest(value) if is_digest(recorded) else recorded == value


__all__ = ["PREFIX", "SHORT", "digest", "digested", "is_digest", "matches", "shown"]
