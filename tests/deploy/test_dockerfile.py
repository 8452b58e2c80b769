"""The Dockerfile, checked without a Docker engine: its instructions are parsed and the builder
stage's recipe is replayed (same build context, same package build) into a throwaway venv without
pip or setuptools, whose console script must run `stampede run --help`. requirements.lock, which the
builder installs with --require-hashes, must agree with pyproject.toml's runtime dependencies."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.ci import unavailable

ROOT = Path(__file__).resolve().parents[2]
VENV = "/opt/venv"
LOCK = ROOT / "requirements.lock"


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
    defaults: dict[str, str] = {}
    for instruction in instructions:
        if instruction.keyword == "ARG" and not stages:
            # A global ARG (before the first FROM) may only parametrise FROM lines: its default is the image.
            name, _, default = instruction.args.partition("=")
            defaults[name.strip()] = default.strip()
            continue
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            if words and words[0].startswith("${") and words[0].endswith("}"):
                words[0] = defaults[words[0][2:-1]]
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


def test_both_stages_take_the_base_image_from_one_build_argument_so_a_digest_pins_both() -> None:
    froms = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")]
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def _steps(stage: Stage) -> list[str]:
    """The builder's shell commands in order, one per `&&`-joined step."""
    return [step.strip() for run in stage.all("RUN") for step in run.args.split("&&")]


def test_builder_installs_the_locked_dependencies_by_hash_then_the_package_alone(stages: list[Stage]) -> None:
    steps = _steps(stages[0])
    assert f"python -m venv {VENV}" in steps
    locked = f"{VENV}/bin/pip install --require-hashes --no-deps -r {LOCK.name}"
    package = f"{VENV}/bin/pip install --no-deps --no-build-isolation --no-index ."
    assert locked in steps
    assert package in steps
    assert steps.index(locked) < steps.index(package)
    installs = [s for s in steps if " install " in s]
    assert installs == [locked, package], "every install is either hash-checked or of the package alone"
    [copy_lock] = [c for c in stages[0].all("COPY") if LOCK.name in c.args.split()]
    [install_lock] = [r for r in stages[0].all("RUN") if locked in r.args]
    assert copy_lock.line < install_lock.line


def test_builder_removes_pip_and_setuptools_from_the_venv_after_its_last_use(stages: list[Stage]) -> None:
    steps = _steps(stages[0])
    [uninstall] = [s for s in steps if " uninstall " in s]
    assert uninstall.startswith(f"{VENV}/bin/pip uninstall --yes ")
    assert {"pip", "setuptools", "wheel"} <= set(uninstall.split()[3:])
    after = steps[steps.index(uninstall) + 1 :]
    assert not [s for s in after if "pip" in s], "nothing may use pip after it is gone"
    assert f"{VENV}/bin/stampede --version" in after, "the console script must still run without them"


def _lock() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {normalized name: (version, hashes)}; every entry must be `name==version`."""
    entries: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for raw in LOCK.read_text().splitlines():
        line = raw.strip().rstrip("\\").strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("--hash="):
            algorithm, _, digest = line.removeprefix("--hash=").partition(":")
            assert algorithm == "sha256" and len(digest) == 64, raw
            entries[current][1].append(digest)
            continue
        assert not line.startswith("-"), f"{LOCK.name}: unexpected option {line!r} (index URLs stay out of it)"
        name, _, version = line.partition("==")
        assert version, f"{LOCK.name}: {line!r} is not pinned with =="
        current = canonicalize_name(name)
        entries[current] = (version, [])
    return entries


def _direct_in_lock() -> set[str]:
    """Names pip-compile marks as coming from pyproject's [project] dependencies."""
    direct, current = set(), ""
    for line in LOCK.read_text().splitlines():
        if line and not line[0].isspace() and "==" in line:
            current = canonicalize_name(line.split("==")[0])
        elif line.strip().lstrip("#").strip().removeprefix("via ").strip() == "stampede-operator (pyproject.toml)":
            direct.add(current)
    return direct


def test_lock_pins_every_package_with_hashes() -> None:
    lock = _lock()
    assert lock
    for name, (version, hashes) in lock.items():
        assert hashes, f"{name}=={version} has no hash"
    # pip-compile --all-build-deps: what --no-build-isolation builds the package with.
    assert {"setuptools", "wheel"} <= set(lock)


def test_lock_is_in_sync_with_pyprojects_runtime_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {canonicalize_name(Requirement(d).name): Requirement(d) for d in project["dependencies"]}
    lock = _lock()
    missing = set(wanted) - set(lock)
    assert not missing, f"run `make lock`: {sorted(missing)} are in pyproject.toml but not in {LOCK.name}"
    stale = _direct_in_lock() - set(wanted)
    assert not stale, f"run `make lock`: {sorted(stale)} are no longer dependencies in pyproject.toml"
    assert _direct_in_lock() == set(wanted)
    for name, requirement in wanted.items():
        assert requirement.specifier.contains(lock[name][0], prereleases=True), (
            f"run `make lock`: {LOCK.name} has {name}=={lock[name][0]}, pyproject.toml wants {requirement}"
        )
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for requirement in map(Requirement, build):
        assert requirement.specifier.contains(lock[canonicalize_name(requirement.name)][0])


def test_every_dependency_has_an_upper_bound_and_pre_1_0_ones_are_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]:
        requirement = Requirement(text)
        operators = {spec.operator for spec in requirement.specifier}
        assert operators & {"==", "<", "<=", "~="}, f"{text}: no upper bound"
        if "==" not in operators:
            lower = [Version(s.version) for s in requirement.specifier if s.operator in {">=", "~=", ">"}]
            assert lower, f"{text}: a lower bound too"
            assert all(v.major >= 1 for v in lower), f"{text}: pre-1.0, pin it with =="


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
    for kept in (
        "requirements.lock",
        "pyproject.toml",
        "README.md",
        "operator/stampede/cli.py",
        "operator/stampede/py.typed",
    ):
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
    # The image's venv has no pip, setuptools or wheel: nothing of stampede may import them at run time
    # (pkg_resources is the usual culprit). This venv's purelib has them, so look at what gets imported.
    imported = subprocess.run(
        [
            str(python),
            "-c",
            "import pkgutil, sys, stampede\n"
            "for m in pkgutil.walk_packages(stampede.__path__, 'stampede.'): __import__(m.name)\n"
            "print(sorted({n.split('.')[0] for n in sys.modules} & {'pip', 'setuptools', 'pkg_resources', 'wheel'}))",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]", f"removed from the image but imported: {imported.stdout}"
    out = subprocess.run([str(script), "run", "--help"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for option in ("--namespace", "--all-namespaces", "--standalone", "--metrics-port", "--liveness", "--priority"):
        assert option in out.stdout
