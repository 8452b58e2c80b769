"""Print a cosmic-ray session's mutation score and every survivor with its diff.

cosmic-ray's own `cr-report` counts operator-filtered (skipped) mutants as killed; the score here
counts only mutants that were tested: killed / (killed + survived). A timeout or an incompetent
mutant (one that cannot even be imported) counts as killed, as cosmic-ray counts it.

`--reset-survivors` forgets the survivors' results, so `KEEP=1 make mutate` tests only them again
after tests were added.
"""

from __future__ import annotations

import argparse
import sqlite3
from collections import Counter

from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("session")
    parser.add_argument("--reset-survivors", action="store_true")
    parser.add_argument("--no-diff", action="store_true")
    args = parser.parse_args()
    if args.reset_survivors:
        with sqlite3.connect(args.session) as db:
            gone = db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'").rowcount
        print(f"forgot {gone} survivor result(s)")
        return
    outcomes: Counter[str] = Counter()
    survivors = []
    with use_db(args.session, WorkDB.Mode.open) as db:
        pending = sum(1 for _ in db.pending_work_items)
        for item, result in db.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                outcomes["skipped"] += 1
            elif result.test_outcome == TestOutcome.SURVIVED:
                outcomes["survived"] += 1
                survivors.append((item, result))
            else:
                outcomes["killed"] += 1
    tested = outcomes["killed"] + outcomes["survived"]
    score = 100.0 * outcomes["killed"] / tested if tested else 0.0
    for item, result in sorted(
        survivors, key=lambda s: (str(s[0].mutations[0].module_path), s[0].mutations[0].start_pos)
    ):
        for m in item.mutations:
            print(f"SURVIVED {m.module_path}:{m.start_pos[0]} {m.operator_name}")
        if not args.no_diff and result.diff:
            print(
                "\n".join(
                    line
                    for line in result.diff.splitlines()
                    if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
                )
            )
    print(
        f"score {score:.1f} %: {outcomes['killed']} killed, {outcomes['survived']} survived, "
        f"{outcomes['skipped']} filtered out, {pending} pending"
    )


if __name__ == "__main__":
    main()
