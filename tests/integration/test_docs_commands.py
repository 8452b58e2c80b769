"""Every shell command in docs/ that can run on this machine is run, so the docs cannot go stale.

The issue that asked for this found a remote base pinned to a tag that does not exist, a manifest
described by a shell it no longer had, and `simulate --from -7d` (the documented example) failing.
So:
- `stampede lint` / `stampede simulate` / `stampede crd` run for real, against the session's real
  Prometheus (tests/support) in place of `http://prometheus:9090`;
- `kubectl kustomize` runs; `kubectl apply -k` / `delete -k` render what they would apply;
- `kubectl get ... -o jsonpath=...` on a StampedePolicy is evaluated by kubectl's own JSONPath engine
  against a policy whose status the engine produced mid-incident, and must print something;
- other `kubectl` commands need a cluster: their repository paths must exist, and their verb must be
  one this test knows needs a cluster, so a new kind of command fails here until it is classified;
- every YAML block that is a kustomization (or a fragment of one: `components:`, `patches:`,
  `images:`) is rendered as a user's overlay with `github.com/aurum/stampede-operator//` pointing at
  this checkout.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import PrometheusFixture
from tests.unit.policies import HEALTHY, P2_READINGS, Simulation, at, open_incident, runbook_spec

pytestmark = [pytest.mark.prometheus]

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))
BIN = Path(sys.executable).parent
DOC_PROMETHEUS = "http://prometheus:9090"
REMOTE = "github.com/aurum/stampede-operator//"
# Verbs that need a live cluster; anything else in a docs command must be runnable here.
CLUSTER_VERBS = {
    "get",
    "describe",
    "wait",
    "logs",
    "rollout",
    "create",
    "patch",
    "delete",
    "apply",
    "label",
    "annotate",
}


@dataclass(frozen=True)
class Command:
    doc: str
    text: str

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    def __str__(self) -> str:
        return f"{self.doc}: {self.text}"


def _blocks(language: str) -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for match in re.finditer(rf"^ *```{language}\n(.*?)^ *```", path.read_text(), re.M | re.S):
            out.append((path.name, match[1]))
    return out


def _commands() -> list[Command]:
    commands = []
    for doc, block in _blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.strip().startswith("#"):
                commands.append(Command(doc, line.strip()))
    return commands


COMMANDS = _commands()


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    program = BIN / argv[0]
    assert program.exists(), f"{argv[0]} is not installed in the venv"
    return subprocess.run([str(program), *argv[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120, **kwargs)


def _repo_paths(argv: list[str]) -> list[str]:
    """Files and directories of this repository a kubectl command names (`-k DIR`, `-f FILE`, ...)."""
    paths = []
    for i, arg in enumerate(argv):
        if arg.startswith("--patch-file=") or arg.startswith("--filename="):
            paths.append(arg.split("=", 1)[1])
        elif arg in ("-k", "-f", "--patch-file", "--filename", "kustomize") and i + 1 < len(argv):
            paths.append(argv[i + 1])
    return [path for path in paths if not path.startswith(("-", "http", "github.com"))]


def test_the_docs_hold_commands_of_every_kind_this_test_runs() -> None:
    heads = {(c.argv[0], c.argv[1]) for c in COMMANDS}
    assert {("stampede", "lint"), ("stampede", "simulate"), ("kubectl", "kustomize")} <= heads


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.argv[:2] == ["stampede", "lint"]], ids=str)
def test_documented_lint_commands_run(command: Command, prometheus: PrometheusFixture) -> None:
    argv = [arg.replace(DOC_PROMETHEUS, prometheus.url) for arg in command.argv]
    result = _run(argv)
    if "--prometheus" in argv and result.returncode == 1:
        # The example's queries name the user's metrics, which this Prometheus does not have: only
        # "would be unknown" is acceptable, never a usage or validation problem.
        # `warning:` lines are lint's advice (restarts that may feed the stampede), never a problem.
        lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: ")]
        assert lines, result.stderr
        assert all("would be unknown" in line for line in lines), result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert "OK" in result.stdout


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.argv[:2] == ["stampede", "simulate"]], ids=str)
def test_documented_simulate_commands_run(command: Command, prometheus: PrometheusFixture) -> None:
    argv = [arg.replace(DOC_PROMETHEUS, prometheus.url) for arg in command.argv]
    result = _run(argv)
    # 3: the replay ran, but the example's signals have no history here; 1 or 2 would be a docs error.
    assert result.returncode in (0, 3), result.stderr
    if result.returncode == 3:
        assert "had unknown signals" in result.stderr
    if "json" in argv:
        assert set(json.loads(result.stdout)) >= {"incidents", "events", "summary"}


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.argv[0] == "kubectl"], ids=str)
def test_documented_kubectl_commands_render_or_name_existing_files(command: Command, tmp_path: Path) -> None:
    argv = command.argv
    for path in _repo_paths(argv):
        assert (ROOT / path).exists(), f"{command}: {path} does not exist"
    verb = next(arg for arg in argv[1:] if not arg.startswith("-") and arg not in _flag_values(argv))
    if verb == "kustomize" or (verb in ("apply", "delete") and "-k" in argv):
        target = argv[argv.index("-k") + 1] if "-k" in argv else argv[-1]
        result = _run(["kubectl", "kustomize", target])
        assert result.returncode == 0, result.stderr
        assert "kind: Deployment" in result.stdout
        return
    assert verb in CLUSTER_VERBS, f"{command}: classify this command (runnable here, or needs a cluster)"
    jsonpath = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("jsonpath=")), None)
    if verb == "get" and "stp" in argv and jsonpath is not None:
        path = tmp_path / "policy.json"
        path.write_text(json.dumps(_policy_mid_incident()))
        result = _run(
            ["kubectl", "annotate", "--local", "-f", str(path), "docs=1", "-o", f"jsonpath={jsonpath}"],
            env={"KUBECONFIG": str(tmp_path / "none"), "PATH": ""},
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip(), f"{command}: prints nothing for a policy mid-incident"


def _flag_values(argv: list[str]) -> set[str]:
    """Values of `-n NS`-style flags, so the namespace is not taken for the verb."""
    return {argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in ("-n", "--namespace", "-o", "-l", "-f")}


def _policy_mid_incident() -> dict[str, Any]:
    """The runbook example with the status the engine writes in its second incident (history, applied...)."""
    sim = Simulation(runbook_spec())
    start = open_incident(sim, P2_READINGS)
    t = start + 15
    while sim.status.incident is not None:
        sim.poll(at(t), HEALTHY)
        t += 15
    open_incident(sim, P2_READINGS, start=t)
    example = yaml.safe_load((ROOT / "examples" / "aurum-cache-stampede.yaml").read_text())
    example["status"] = sim.status.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dict(example)


def _kustomization_blocks() -> list[tuple[str, str]]:
    """YAML blocks whose top-level keys are all kustomization fields (parsed in the test, so bad YAML fails it)."""
    keys = {"resources", "components", "patches", "images", "configMapGenerator", "namespace"}
    out = []
    for doc, block in _blocks("yaml"):
        top = set(re.findall(r"^([A-Za-z]+):", block, re.M))
        if top and top <= keys:
            out.append((doc, block))
    return out


KUSTOMIZATIONS = _kustomization_blocks()


def test_the_docs_hold_kustomization_snippets() -> None:
    assert len(KUSTOMIZATIONS) >= 5


@pytest.mark.parametrize(
    "block", [k for _, k in KUSTOMIZATIONS], ids=[f"{d}-{i}" for i, (d, _) in enumerate(KUSTOMIZATIONS)]
)
def test_documented_kustomizations_render_as_a_users_overlay(block: str) -> None:
    snippet = yaml.safe_load(block)
    assert isinstance(snippet, dict)
    with tempfile.TemporaryDirectory() as tmp:
        here = Path(tmp)
        document = json.loads(json.dumps(snippet).replace(REMOTE, os.path.relpath(ROOT, here) + "/"))

        def local(ref: str) -> str:
            assert "?ref=" not in ref or ref.endswith("?ref=main"), f"{ref}: no such tag; use ?ref=main or a commit"
            return ref.split("?ref=")[0]

        document["resources"] = [local(r) for r in document.get("resources", [])] or [
            os.path.relpath(ROOT / "deploy" / "overlays" / "cluster", here)
        ]
        if "components" in document:
            document["components"] = [local(c) for c in document["components"]]
        (here / "kustomization.yaml").write_text(yaml.safe_dump(document))
        result = subprocess.run(
            [str(BIN / "kubectl"), "kustomize", str(here)], capture_output=True, text=True, timeout=60, check=False
        )
    assert result.returncode == 0, result.stderr
    assert "kind: Deployment" in result.stdout
