"""`make prometheus` installs Debian's package without killing anything it did not start.

It used to run `pkill -x prometheus` after the install, which killed every Prometheus on the machine,
including one the user runs. The recipe is run for real here with apt-get, sudo and systemctl replaced
by recorders on PATH, so what it would do to the system is observed, not guessed from its text.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
if [ "$(basename "$0")" = apt-get ] && [ "$1" = install ]; then
  if [ -x "{policy}" ] && "{policy}" prometheus start; then echo "service could start" >> "{log}";
  else echo "service start refused" >> "{log}"; fi
fi
exit 0
"""


def _make_prometheus(tmp_path: Path, *, existing_policy_rc_d: bool = False) -> tuple[list[str], Path]:
    if shutil.which("make") is None:
        pytest.fail("make is needed to test the Makefile")
    fakes = tmp_path / "bin"
    fakes.mkdir()
    log = tmp_path / "calls.log"
    log.touch()
    policy = tmp_path / "policy-rc.d"
    if existing_policy_rc_d:
        policy.write_text("#!/bin/sh\nexit 0\n")
        policy.chmod(0o755)
    for name in ("apt-get", "systemctl", "pkill", "killall", "kill"):
        (fakes / name).write_text(RECORDER.format(log=log, policy=policy))
        (fakes / name).chmod(0o755)
    (fakes / "sudo").write_text('#!/bin/sh\nexec "$@"\n')  # when the tests do not run as root
    (fakes / "sudo").chmod(0o755)
    env = os.environ | {"PATH": f"{fakes}:/usr/bin:/bin"}
    result = subprocess.run(
        ["make", "-C", str(ROOT), "prometheus", "PROMETHEUS_BIN=no-such-prometheus-here", f"POLICY_RC_D={policy}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return log.read_text().splitlines(), policy


def test_installing_prometheus_kills_no_process() -> None:
    text = (ROOT / "Makefile").read_text()
    assert "pkill" not in text
    assert "killall" not in text


def test_installing_prometheus_keeps_debians_service_from_starting_and_disables_only_its_unit(
    tmp_path: Path,
) -> None:
    calls, policy = _make_prometheus(tmp_path)
    assert "service start refused" in calls
    assert "systemctl disable --now prometheus.service" in calls
    assert not [call for call in calls if call.split()[0] in ("pkill", "killall", "kill")]
    assert not policy.exists(), "the temporary policy-rc.d must be removed after the install"


def test_an_existing_policy_rc_d_is_left_as_the_user_wrote_it(tmp_path: Path) -> None:
    calls, policy = _make_prometheus(tmp_path, existing_policy_rc_d=True)
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"
    assert "systemctl disable --now prometheus.service" in calls
