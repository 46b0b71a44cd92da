"""Run the whole hostile catalogue and print the counts by outcome class (``cd tests && python -m hostile.report``).

Options: ``--only OWNER`` (prefix) restricts the entries; ``--show CLASS`` prints the cases of that class.
"""

from __future__ import annotations

import argparse
import collections
import time

from hostile.framework import Runner, case_ids, load_catalogue


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="")
    parser.add_argument("--show", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=60.0)
    options = parser.parse_args()
    entries, edges = load_catalogue()
    cases = [c for c in case_ids(entries) if c[0].startswith(options.only)]
    cases += [("edge", name) for name in sorted(edges) if name.startswith(options.only) or not options.only]
    runner = Runner(timeout=options.timeout)
    counts = collections.Counter()
    shown = []
    start = time.time()
    for case in cases:
        outcome, detail = runner.run(case)
        counts[outcome] += 1
        if outcome in options.show or "all" in options.show and outcome not in ("clear", "edge-ok"):
            shown.append((case, outcome, detail))
    runner.close()
    for case, outcome, detail in shown:
        label = case[1] if case[0] == "edge" else f"{case[0]} {case[1]}={case[2][0]}"
        print(f"[{outcome}] {label}: {detail[:500]}")
    print(f"{len(entries)} entries, {len(cases)} cases in {time.time() - start:.0f} s")
    for outcome, count in counts.most_common():
        print(f"  {outcome:14s} {count}")


if __name__ == "__main__":
    main()
