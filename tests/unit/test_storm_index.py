"""The storm breaker's kopf index over every policy is registered only when the breaker is on.

A kopf index over the policies makes kopf's startup quadratic in their number (bench/scale.py --profile), so
importing the handlers must not register it; `stampede run` asks for it when STAMPEDE_MAX_CONCURRENT_INCIDENTS
is set. Run in a fresh interpreter: kopf's default registry is process-global.
"""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import json, kopf
from stampede.handlers import operator
registry = kopf.get_default_registry()
ids = lambda: sorted(str(h.id) for h in registry._indexing.get_all_handlers())
before = ids()
operator.serve_storm_index()
operator.serve_storm_index()
print(json.dumps({"before": before, "after": ids()}))
"""


def test_importing_the_handlers_does_not_index_the_policies_and_serving_the_index_adds_it_once() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    ids = json.loads(out.strip().splitlines()[-1])
    assert "stampede_open_incidents" not in ids["before"]
    assert ids["after"].count("stampede_open_incidents") == 1
