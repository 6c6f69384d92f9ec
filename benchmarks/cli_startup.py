"""Start-up time of the ``rnnkit`` command: median wall time of a few light commands.

    python benchmarks/cli_startup.py [--repeat 7]

Each command runs in a fresh interpreter (as a user's shell runs it). ``rnnkit --help`` and
``rnnkit tasks`` import neither torch nor Lightning; ``train TASK --help`` imports the task classes.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = [["--help"], ["tasks"], ["tasks", "--task", "forecast"], ["train", "forecast", "--help"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    base = [sys.executable, "-c", "import sys"]
    floor = statistics.median(_time(base) for _ in range(args.repeat))
    print(f"{'command':38s} {'median s':>9s} {'x python':>9s}")
    print(f"{'python -c pass (the floor)':38s} {floor:9.3f} {1.0:9.1f}")
    for argv in COMMANDS:
        cmd = [sys.executable, "-m", "rnnkit.cli", *argv]
        t = statistics.median(_time(cmd) for _ in range(args.repeat))
        print(f"{'rnnkit ' + ' '.join(argv):38s} {t:9.3f} {t / floor:9.1f}")


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
