"""`stampede run --selector`: serve a label-selected share of the policies, for several operators side by side.

One operator process tops out somewhere (docs/scaling.md); past that, several operator Deployments each
serve their own share. By namespace, that is `-n`. Within namespaces, it is a label selector on the
policies, mapped onto kopf's `labels=` filter of every policy handler (the poll daemon, the deletion
rollback, the deletion watch), so an operator never polls, acts on or rolls back a policy outside its
share. Shares must not overlap: two operators whose selectors both match a policy would both act on it.

kopf filters on the client: every operator still receives every policy's watch events (cheap: it drops
them), but it starts a daemon, reads Prometheus and writes status only for its own.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import kopf

from ..api import GROUP, PLURAL

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

LabelFilter = Mapping[str, Any]


class SelectorError(ValueError):
    """A selector that is not `KEY=VALUE`, `KEY!=VALUE`, `KEY` or `!KEY` (comma-separated)."""


def parse_selector(text: str) -> dict[str, Any]:
    """kopf's `labels=` filter for a kubectl-style equality selector: `shard=a,tier!=batch,canary,!legacy`."""
    labels: dict[str, Any] = {}
    for raw in text.split(","):
        term = raw.strip().replace("==", "=", 1)
        if not term:
            raise SelectorError(f"empty term in selector {text!r}")
        if "!=" in term:
            key, _, value = term.partition("!=")
            labels[_key(key, text)] = _differs_from(_value(value, text))
        elif "=" in term:
            key, _, value = term.partition("=")
            labels[_key(key, text)] = _value(value, text)
        elif term.startswith("!"):
            labels[_key(term[1:], text)] = kopf.ABSENT
        else:
            labels[_key(term, text)] = kopf.PRESENT
    return labels


def _differs_from(unwanted: str) -> Any:
    # kopf calls a callable label filter with the label's value (None when absent) and the cause's kwargs.
    def differs(value: str | None, /, **_: Any) -> bool:
        return value != unwanted

    return differs


def _key(key: str, text: str) -> str:
    key = key.strip()
    if not _KEY.match(key) or len(key.rpartition("/")[2]) > 63:
        raise SelectorError(f"{key!r} in selector {text!r} is not a label key")
    return key


def _value(value: str, text: str) -> str:
    value = value.strip()
    if not _VALUE.match(value) or len(value) > 63:
        raise SelectorError(f"{value!r} in selector {text!r} is not a label value")
    return value


def select(labels: LabelFilter, registry: Any = None) -> int:
    """Restrict every StampedePolicy handler to policies matching `labels`; returns how many were restricted."""
    registry = registry or kopf.get_default_registry()
    restricted = 0
    # pinned kopf==1.45.2: the registry has no public way to change a registered handler's filters
    for sub in (registry._spawning, registry._changing, registry._watching):
        replaced = []
        for handler in sub._handlers:
            selector = handler.selector
            if selector is not None and selector.group == GROUP and PLURAL in (selector.plural, selector.any_name):
                handler = dataclasses.replace(handler, labels={**(handler.labels or {}), **labels})
                restricted += 1
            replaced.append(handler)
        sub._handlers[:] = replaced
    return restricted


__all__ = ["SelectorError", "parse_selector", "select"]
