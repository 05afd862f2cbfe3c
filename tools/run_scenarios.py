"""Run Molecule scenarios in parallel lanes (each lane in order) and print each one's time.

    python tools/run_scenarios.py "cluster" "common data edge"

Scenarios wait on apt, SSH and booting machines more than on the CPU, and each uses its
own lab machines, so two lanes finish well before one. A failed scenario's failures and
log tail are printed; the full logs are in .cache/molecule-NAME.log.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LOGS = Path(".cache")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(scenario: str) -> tuple[str, int, float]:
    log = LOGS / f"molecule-{scenario}.log"
    started = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.call(
            ["molecule", "test", "-s", scenario], stdout=out, stderr=subprocess.STDOUT
        )
    took = time.monotonic() - started
    print(f"==> molecule {scenario}: {took:.0f}s (exit {rc})", flush=True)
    if rc:
        print("\n".join(f"    {line}" for line in failure_report(log)), flush=True)
    return scenario, rc, took


def failure_report(log: Path) -> list[str]:
    """What failed: Ansible's fatal lines, pytest's failures, then the log's tail."""
    # Molecule frames its output in a box and colours it: strip both before matching.
    lines = [
        ANSI.sub("", line).lstrip(" │") for line in log.read_text(errors="replace").splitlines()
    ]
    marks = ("fatal:", "FAILED ", "ERROR ", "E   ", "failed: [", "AssertionError")
    picked = [line[:400] for line in lines if line.startswith(marks)][-80:]
    return picked + ["..."] + lines[-30:]


def lane(scenarios: list[str]) -> list[tuple[str, int, float]]:
    # Scenarios are independent (own machines), so one failure does not stop the lane.
    return [run(scenario) for scenario in scenarios]


def main() -> int:
    LOGS.mkdir(exist_ok=True)
    lanes = [spec.split() for spec in sys.argv[1:] if spec.split()]
    with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
        results = [r for rs in pool.map(lane, lanes) for r in rs]
    failed = [name for name, rc, _took in results if rc]
    print("== molecule scenarios")
    for name, rc, took in results:
        print(f"   {name:<12} {took:6.0f}s  {'ok' if rc == 0 else 'FAILED'}")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
