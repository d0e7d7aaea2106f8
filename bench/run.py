"""Run every benchmark in bench/ (bench_*.py) and print their tables: ``python bench/run.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    failed = 0
    only = sys.argv[1:]
    for script in sorted(Path(__file__).parent.glob("bench_*.py")):
        if only and script.stem.removeprefix("bench_") not in only:
            continue
        print(f"\n== {script.name}", flush=True)
        failed |= subprocess.call([sys.executable, str(script)])
    return failed


if __name__ == "__main__":
    sys.exit(main())
