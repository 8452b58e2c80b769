"""`stampede run --selector`: kubectl's equality selectors turned into kopf's `labels=` filters."""

from __future__ import annotations

import kopf
import pytest

from stampede.handlers.selection import SelectorError, parse_selector


def matches(selector: str, labels: dict[str, str]) -> bool:
    """What kopf does with a `labels=` filter (kopf/_core/intents/registries.py `_matches_metadata`)."""
    for key, wanted in parse_selector(selector).items():
        if wanted is kopf.PRESENT:
            ok = key in labels
        elif wanted is kopf.ABSENT:
            ok = key not in labels
        elif callable(wanted):
            ok = wanted(labels.get(key))
        else:
            ok = labels.get(key) == wanted
        if not ok:
            return False
    return True


def test_equality_inequality_presence_and_absence_combine_with_and() -> None:
    assert matches("shard=a", {"shard": "a"})
    assert not matches("shard=a", {"shard": "b"}) and not matches("shard=a", {})
    assert matches("shard==a", {"shard": "a"})
    assert matches("tier!=batch", {"tier": "web"}) and matches("tier!=batch", {})
    assert not matches("tier!=batch", {"tier": "batch"})
    assert matches("canary", {"canary": ""}) and not matches("canary", {})
    assert matches("!legacy", {}) and not matches("!legacy", {"legacy": "yes"})
    assert matches("shard=a, tier!=batch", {"shard": "a", "tier": "web"})
    assert not matches("shard=a,tier!=batch", {"shard": "a", "tier": "batch"})
    assert matches("example.com/shard=a", {"example.com/shard": "a"})


def test_two_disjoint_selectors_never_both_match() -> None:
    for labels in ({"shard": "a"}, {"shard": "b"}, {}, {"shard": "c"}):
        assert not (matches("shard=a", labels) and matches("shard!=a", labels))


@pytest.mark.parametrize("bad", ["", "shard=a,", "=a", "shard=a b", "sh ard", "shard in (a,b)", "a=" + "x" * 64])
def test_anything_else_is_refused_with_the_selector_named(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(bad)
