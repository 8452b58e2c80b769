"""`stampede lint` (the models) and the API server (the CRD) give the same verdict on field syntax.

A policy lint passes but the server refuses cannot be applied; one the server stores but the
operator's models refuse never runs. Each case below mutates one field of the production policy
and asks both: the models (`StampedePolicyDocument`, what `stampede lint` and the operator use) and
the emulated API server's CRD admission (pruning, defaulting, schema and CEL, as a real server).
The models see what the server would store (after pruning), because unknown fields are a separate
matter: the server prunes them silently and lint reports them.

Semantic rules the CRD cannot express (a signal that is not declared, phases whose `after` goes
backwards) are the models' alone and are listed as such, so a new divergence fails here.
"""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from stampede.api.crd import open_api_schema
from stampede.api.spec import StampedePolicyDocument
from tests.harness import schemas

REPO = pathlib.Path(__file__).resolve().parents[2]
PRODUCTION = yaml.safe_load((REPO / "examples" / "aurum-cache-stampede.yaml").read_text(encoding="utf-8"))
CORPUS = sorted((REPO / "tests" / "lint-corpus").glob("*.yaml"))
#: Corpus files the models refuse for reasons no OpenAPI schema or constant-cost CEL rule can state.
MODELS_ONLY = {"after-decreasing", "duplicate-action-names", "poll-interval-too-short", "undeclared-signal"}
#: Field cases the models refuse and the CRD cannot: keys of a ConfigMap's `data` map. A structural schema
#: cannot constrain map keys, and a CEL rule over every key of an unbounded map exceeds the API server's
#: cost budget (see api/crd.py), so the operator and lint refuse what a server would store.
MODELS_STRICTER = {
    "configmap-key-dot",
    "configmap-key-double-dot",
    "configmap-key-leading-double-dot",
    "configmap-key-slash",
}

Obj = dict[str, Any]
Edit = Callable[[Obj], None]


def server_accepts(obj: Obj) -> tuple[bool, Obj]:
    stored, errors = schemas.admit_custom_resource(copy.deepcopy(obj), open_api_schema())
    return not errors, stored


def models_accept(obj: Obj) -> bool:
    try:
        StampedePolicyDocument.model_validate(obj)
    except ValidationError:
        return False
    return True


def verdicts(obj: Obj) -> tuple[bool, bool]:
    accepted, stored = server_accepts(obj)
    # What the models see is what the operator reads back: the stored (pruned, defaulted) object.
    return accepted, models_accept(stored if accepted else obj)


def setting(path: str, value: Any) -> Edit:
    def edit(obj: Obj) -> None:
        node: Any = obj
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(leaf)] = value
        else:
            node[leaf] = value

    return edit


def cm_key(key: str) -> Edit:
    def edit(obj: Obj) -> None:
        obj["spec"]["phases"][0]["actions"][0]["configMap"]["data"] = {key: "v"}

    return edit


CASES: dict[str, Edit] = {
    "duration": setting("spec.pollInterval", "30s"),
    "duration-fraction": setting("spec.pollInterval", "1.5m"),
    "duration-space-inside": setting("spec.pollInterval", "1 m"),
    "duration-leading-space": setting("spec.pollInterval", " 30s"),
    "duration-trailing-newline": setting("spec.pollInterval", "30s\n"),
    "duration-no-break-space": setting("spec.pollInterval", "30s\u00a0"),
    "duration-ideographic-space": setting("spec.pollInterval", "\u300030s"),
    "duration-arabic-digit": setting("spec.pollInterval", "\u0663s"),
    "duration-number": setting("spec.pollInterval", 30),
    "condition": setting("spec.recovery.all", ["hitRate > 0.9"]),
    "condition-ascii-spaces": setting("spec.recovery.all", ["  hitRate\t>\t0.9 "]),
    "condition-trailing-newline": setting("spec.recovery.all", ["hitRate > 0.9\n"]),
    "condition-no-break-space": setting("spec.recovery.all", ["hitRate\u00a0> 0.9"]),
    "condition-vertical-tab": setting("spec.recovery.all", ["hitRate >\v0.9"]),
    "condition-bad-operator": setting("spec.recovery.all", ["hitRate => 0.9"]),
    "mode": setting("spec.mode", "DryRun"),
    "mode-unknown": setting("spec.mode", "Sometimes"),
    "mode-lowercase": setting("spec.mode", "enforce"),
    "configmap-name-dots": setting("spec.phases.0.actions.0.configMap.name", "a.b-c"),
    "configmap-name-double-dot": setting("spec.phases.0.actions.0.configMap.name", "a..b"),
    "configmap-name-dot-dash": setting("spec.phases.0.actions.0.configMap.name", "a.-b"),
    "configmap-name-upper": setting("spec.phases.0.actions.0.configMap.name", "Api"),
    "configmap-key": cm_key("A_b-c.d"),
    "configmap-key-leading-dot": cm_key(".env"),
    "configmap-key-dot": cm_key("."),
    "configmap-key-double-dot": cm_key(".."),
    "configmap-key-leading-double-dot": cm_key("..data"),
    "configmap-key-slash": cm_key("a/b"),
    "replicas-zero": setting("spec.phases.0.actions.3.scale.replicas", 0),
    "replicas-string": setting("spec.phases.0.actions.3.scale.replicas", "10"),
    "scale-kind-unknown": setting("spec.phases.0.actions.3.scale.kind", "ReplicaSet"),
    "phase-name-too-long": setting("spec.phases.0.name", "p" * 64),
    "severity-level-unknown": setting("spec.severities.0.level", "P9"),
    "suspend-string": setting("spec.suspend", "true"),
    "suspend": setting("spec.suspend", True),
}


def test_the_production_policy_is_accepted_by_both() -> None:
    assert verdicts(PRODUCTION) == (True, True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_models_and_the_server_agree_on_one_field(case: str) -> None:
    obj = copy.deepcopy(PRODUCTION)
    CASES[case](obj)
    server, models = verdicts(obj)
    if case in MODELS_STRICTER:
        assert (server, models) == (True, False)
    else:
        assert server == models, f"{case}: the server {'accepts' if server else 'refuses'}, the models do not"


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.stem)
def test_the_models_and_the_server_agree_on_the_lint_corpus(path: pathlib.Path) -> None:
    obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    server, models = verdicts(obj)
    if path.stem in MODELS_ONLY:
        assert (server, models) == (True, False)
    else:
        assert server == models, f"{path.stem}: server {server}, models {models}"


def test_unknown_fields_are_pruned_by_the_server_and_refused_by_the_models() -> None:
    obj = copy.deepcopy(PRODUCTION)
    obj["spec"]["recovery"]["within"] = "5m"
    accepted, stored = server_accepts(obj)
    assert accepted
    assert "within" not in stored["spec"]["recovery"]
    assert not models_accept(obj)
