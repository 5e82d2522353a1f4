"""Fail when the suite's branch coverage of the engine or of the blocks drops below its floor.

Reads the JSON report of ``pytest --cov=invgraph --cov-branch --cov-report=json:FILE``
(coverage.py's format) and prints, per group of files, the branches and lines covered.

Usage: ``python .ci/coverage_floor.py coverage.json``
"""

from __future__ import annotations

import fnmatch
import json
import sys

FLOORS = {  # group: (files, the least fraction of their branches the suite must cover)
    "engine": ("invgraph/framework/*", 0.90),
    "blocks": ("invgraph/modules/*", 0.90),
    "package": ("invgraph/*", 0.90),
}


def main(path: str) -> int:
    with open(path) as file:
        files = json.load(file)["files"]
    failed = []
    for group, (pattern, floor) in FLOORS.items():
        keys = ("covered_branches", "num_branches", "covered_lines", "num_statements")
        totals = dict.fromkeys(keys, 0)
        for name, report in files.items():
            relative = name[name.rindex("invgraph/") :] if "invgraph/" in name else name
            if fnmatch.fnmatch(relative, pattern):
                for key in keys:
                    totals[key] += report["summary"][key]
        branches = totals["covered_branches"] / max(totals["num_branches"], 1)
        lines = totals["covered_lines"] / max(totals["num_statements"], 1)
        verdict = "ok" if branches >= floor else "BELOW THE FLOOR"
        print(
            f"{group:8} branches {branches:6.1%} (floor {floor:.0%}), lines {lines:6.1%}: {verdict}"
        )
        if branches < floor:
            failed.append(group)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
