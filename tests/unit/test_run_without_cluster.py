"""`stampede run` without any way to reach a cluster exits at once with one clear line and code 2.

It used to print a 40-line traceback and retry kopf's startup every 60 s for ever. The command is run as
a real process (as a user runs it), with a timeout far above the time it needs, so a retry loop fails
the test instead of hanging it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stampede.cli import EXIT_NO_CLUSTER

STAMPEDE = Path(sys.executable).parent / "stampede"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KUBERNETES_", "KUBECONFIG"))}
    clean |= {"HOME": str(tmp_path), **env}
    return subprocess.run(
        [str(STAMPEDE), "run", "-A", "--metrics-port", "0"],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "kubeconfig",
    ["missing", "not-yaml", "no-context"],
)
def test_run_without_usable_credentials_exits_2_with_one_line(tmp_path: Path, kubeconfig: str) -> None:
    path = tmp_path / "kubeconfig"
    if kubeconfig == "not-yaml":
        path.write_text("{{{ not yaml")
    elif kubeconfig == "no-context":
        path.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    result = _run(tmp_path, KUBECONFIG=str(path))
    assert result.returncode == EXIT_NO_CLUSTER, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stampede run: no usable Kubernetes credentials")
    assert "Traceback" not in result.stderr


def test_run_without_kubeconfig_or_home_config_says_how_to_fix_it(tmp_path: Path) -> None:
    result = _run(tmp_path)
    assert result.returncode == EXIT_NO_CLUSTER
    assert "set KUBECONFIG" in result.stderr
