"""What importing one lmstrix module costs: modules loaded and cumulative import time.

Each module is imported in a fresh interpreter with ``-X importtime``; the figure is the
cumulative time of the top-level import that pulled it in, best of ``--runs``.

    python bench/import_cost.py                      # the default set
    python bench/import_cost.py lmstrix.domain.scheduler lmstrix.core.inference_manager
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

DEFAULT = (
    "lmstrix",
    "lmstrix.domain.scheduler",
    "lmstrix.domain.context_search",
    "lmstrix.domain.model",
    "lmstrix.api.client",
    "lmstrix.jobs.service",
    "lmstrix.core.inference_manager",
    "lmstrix.cli",
)
LINE = re.compile(r"^import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def measure(module: str) -> tuple[int, float]:
    """(modules imported, cumulative microseconds of the top-level imports) for ``module``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        # Any value of PYTHONDONTWRITEBYTECODE, even "0", stops .pyc files being written; without
        # it the first run compiles them and the best of the runs is a warm import.
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )
    count, total = 0, 0
    for line in proc.stderr.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        count += 1
        if len(m.group(3)) == 1:  # a top-level import: its cumulative time covers its children
            total += int(m.group(2))
    return count, total / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(DEFAULT))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"{'module':34} {'modules loaded':>15} {'import ms (best)':>17}")
    for module in args.modules:
        runs = [measure(module) for _ in range(args.runs)]
        count = runs[0][0]
        best = min(ms for _, ms in runs)
        print(f"{module:34} {count:>15} {best:>17.1f}")


if __name__ == "__main__":
    main()
