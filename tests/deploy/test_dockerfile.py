"""The Dockerfile, checked without a Docker engine: its instructions are parsed and the builder
stage's recipe is replayed (same build context, same `pip install .`) into a throwaway venv whose
console script must run `stampede run --help`."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.ci import unavailable

ROOT = Path(__file__).resolve().parents[2]
VENV = "/opt/venv"


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


KEYWORDS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "MAINTAINER",
}


def parse(text: str) -> list[Stage]:
    """Dockerfile instructions: comments and blank lines dropped, backslash continuations joined."""
    instructions: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        assert keyword.upper() in KEYWORDS, f"Dockerfile:{start}: unknown instruction {keyword!r}"
        assert keyword == keyword.upper(), f"Dockerfile:{start}: write instructions in upper case"
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, "Dockerfile ends inside a line continuation"
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"Dockerfile:{instruction.line}: FROM image [AS name]"
            stages.append(Stage(words[0], name, []))
        else:
            assert stages, f"Dockerfile:{instruction.line}: {instruction.keyword} before FROM"
            stages[-1].instructions.append(instruction)
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse((ROOT / "Dockerfile").read_text())


def test_two_stages_on_python_311_slim(stages: list[Stage]) -> None:
    assert [s.base for s in stages] == ["python:3.11-slim", "python:3.11-slim"]
    assert stages[0].name == "builder"


def test_builder_installs_the_package_into_the_venv(stages: list[Stage]) -> None:
    runs = " && ".join(i.args for i in stages[0].all("RUN"))
    assert f"python -m venv {VENV}" in runs
    assert f"{VENV}/bin/pip install ." in runs


def test_final_stage_copies_only_the_venv(stages: list[Stage]) -> None:
    final = stages[-1]
    copies = final.all("COPY") + final.all("ADD")
    assert [c.args for c in copies] == [f"--from=builder {VENV} {VENV}"]
    assert not final.all("RUN"), "the final stage installs nothing (no compilers, no apt)"
    text = " ".join(i.args for i in final.instructions)
    for tool in ("gcc", "build-essential", "apt-get", "pip install"):
        assert tool not in text


def test_final_stage_runs_as_a_numeric_non_root_user(stages: list[Stage]) -> None:
    [user] = stages[-1].all("USER")
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit()
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert stages[-1].instructions[-1].keyword in {"CMD", "ENTRYPOINT"}
    assert stages[-1].instructions.index(user) < len(stages[-1].instructions) - 2
    # The Deployment's securityContext must agree with the image.
    assert uid == "10001"


def test_entrypoint_is_the_venv_console_script(stages: list[Stage]) -> None:
    [entrypoint] = stages[-1].all("ENTRYPOINT")
    [cmd] = stages[-1].all("CMD")
    assert json.loads(entrypoint.args) == [f"{VENV}/bin/stampede", "run"]
    assert json.loads(cmd.args) == ["-A"]


def _ignored(patterns: list[str], path: str) -> bool:
    """.dockerignore semantics for the patterns used here: last matching pattern wins, `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        pattern = pattern.replace("**/", "*/") if "**/" in pattern else pattern
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerignore_keeps_the_context_to_the_sources() -> None:
    patterns = _dockerignore()
    for kept in ("pyproject.toml", "README.md", "operator/stampede/cli.py", "operator/stampede/py.typed"):
        assert not _ignored(patterns, kept), kept
    for dropped in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/unit/test_models.py",
        "operator/stampede/__pycache__/x.pyc",
        "operator/stampede_operator.egg-info/PKG-INFO",
        "bench/run.py",
        "deploy/base/kustomization.yaml",
    ):
        assert _ignored(patterns, dropped), dropped


def _build_context(stage: Stage, dest: Path) -> None:
    """Copy what the stage's COPY instructions take from the context, minus .dockerignore."""
    patterns = _dockerignore()
    for copy in stage.all("COPY"):
        *sources, _target = copy.args.split()
        for source in sources:
            src = ROOT / source
            assert src.exists(), f"Dockerfile:{copy.line}: {source} is not in the repository"
            files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if _ignored(patterns, relative):
                    continue
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)


_BUILD_DEPENDENCIES_FAILED = re.compile(r"install(ing)? build dependencies", re.IGNORECASE)
"""pip's words (pip 23: "pip subprocess to install build dependencies did not run successfully", pip 26:
"installing build dependencies did not run successfully") when the isolated build environment cannot be made."""


def _build_wheel(context: Path, wheels: Path) -> subprocess.CompletedProcess[str]:
    # `pip install .` builds a wheel in an isolated environment (setuptools from the configured index).
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(context)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _report_build_failure(stderr: str) -> None:
    """No index to fetch setuptools from is an unavailable environment; anything later is the project's fault."""
    if _BUILD_DEPENDENCIES_FAILED.search(stderr):
        unavailable(f"cannot install the build dependencies (no package index?): {stderr[-300:]}")
    pytest.fail(f"the wheel does not build from the Docker build context: {stderr[-1500:]}")


def test_a_broken_pyproject_fails_the_build_instead_of_passing_for_an_unavailable_environment(
    stages: list[Stage], tmp_path: Path
) -> None:
    context = tmp_path / "context"
    _build_context(stages[0], context)
    pyproject = context / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('license = "Apache-2.0"', "license = 5"))
    build = _build_wheel(context, tmp_path / "wheels")
    assert build.returncode != 0
    if _BUILD_DEPENDENCIES_FAILED.search(build.stderr):
        unavailable(f"cannot install the build dependencies (no package index?): {build.stderr[-300:]}")
    with pytest.raises(pytest.fail.Exception, match="does not build"):
        _report_build_failure(build.stderr)


def test_builder_recipe_yields_a_working_console_script(stages: list[Stage], tmp_path: Path) -> None:
    context = tmp_path / "context"
    _build_context(stages[0], context)
    assert not list(context.rglob("*.egg-info")), ".dockerignore lets a stale egg-info into the build"
    wheels = tmp_path / "wheels"
    build = _build_wheel(context, wheels)
    if build.returncode != 0:
        _report_build_failure(build.stderr)
    venv = tmp_path / "venv"
    base_python = Path(sys._base_executable)  # type: ignore[attr-defined]
    subprocess.run([str(base_python), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            *map(str, wheels.glob("*.whl")),
        ],
        check=True,
        timeout=120,
    )
    script = venv / "bin" / "stampede"
    assert script.read_text().splitlines()[0] == f"#!{python}"
    # The dependencies are not downloadable here: borrow them from this venv (PYTHONPATH does not
    # run .pth files, so this venv's editable stampede stays out of the way).
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    where = subprocess.run(
        [str(python), "-c", "import stampede; print(stampede.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv)
    out = subprocess.run([str(script), "run", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for option in ("--namespace", "--all-namespaces", "--standalone", "--metrics-port", "--liveness", "--priority"):
        assert option in out.stdout
