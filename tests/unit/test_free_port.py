"""Test ports are claimed machine-wide: two test processes never hand out the same port at once."""

from __future__ import annotations

import subprocess
import sys

from tests.support import prometheus

CLAIMER = """
import sys
from tests.support import prometheus
print(int(prometheus._claim(int(sys.argv[1]))), flush=True)
sys.stdin.readline()
"""


def _unused_port() -> int:
    port = 20000 + (hash(object()) % 10000)
    while (prometheus._CLAIMS / str(port)).exists():
        port += 1
    return port


def test_a_port_claimed_by_a_living_process_is_refused_and_freed_when_it_exits() -> None:
    port = _unused_port()
    other = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert other.stdout is not None and other.stdin is not None
    assert other.stdout.readline().strip() == "1"
    try:
        assert not prometheus._claim(port), "another living test process holds it"
    finally:
        other.stdin.write("\n")
        other.stdin.close()
        other.wait(timeout=30)
    assert prometheus._claim(port), "its claims went with it"


def test_a_claim_left_by_a_dead_process_is_taken_over() -> None:
    port = _unused_port()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    prometheus._CLAIMS.mkdir(exist_ok=True)
    (prometheus._CLAIMS / str(port)).write_text(dead.stdout.strip())
    assert prometheus._claim(port)
