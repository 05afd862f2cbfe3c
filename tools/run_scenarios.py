"""Run Molecule scenarios in parallel lanes (each lane in order) and print each one's time.

    python tools/run_scenarios.py "cluster" "common data edge"

Scenarios wait on apt, SSH and booting machines more than on the CPU, and each uses its
own lab machines, so two lanes finish well before one. A failed scenario's log tail is
printed; the full logs are in .cache/molecule-NAME.log.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

LOGS = Path(".cache")


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
        tail = log.read_text(errors="replace").splitlines()[-60:]
        print("\n".join(f"    {line}" for line in tail), flush=True)
    return scenario, rc, took


def lane(scenarios: list[str]) -> list[tuple[str, int, float]]:
    results = []
    for scenario in scenarios:
        results.append(run(scenario))
        if results[-1][1]:
            break  # the rest of this lane would run on a broken assumption
    return results


def main() -> int:
    LOGS.mkdir(exist_ok=True)
    lanes = [spec.split() for spec in sys.argv[1:] if spec.split()]
    with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
        results = [r for rs in pool.map(lane, lanes) for r in rs]
    wanted = sum(len(lane_) for lane_ in lanes)
    failed = [name for name, rc, _ in results if rc]
    print("== molecule scenarios")
    for name, rc, took in results:
        print(f"   {name:<12} {took:6.0f}s  {'ok' if rc == 0 else 'FAILED'}")
    print(f"{wanted - len(failed) - (wanted - len(results))} passed, {len(failed)} failed")
    return 1 if failed or len(results) < wanted else 0


if __name__ == "__main__":
    sys.exit(main())
