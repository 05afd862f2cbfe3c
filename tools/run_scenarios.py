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
# Molecule logs each action as it ends ("INFO  cluster ➜ converge: Executed: ..."); its
# closing summary repeats them without the level.
DURATION = re.compile(r"^([\d.]+)s (?:call|setup|teardown) *(\S*)$")
ACTION_DONE = re.compile(r"^(?:INFO|WARNING|ERROR)\s+\S+ ➜ (\w+): Executed")


def run(scenario: str) -> tuple[str, int, float]:
    log = LOGS / f"molecule-{scenario}.log"
    started = mark = time.monotonic()
    steps = []  # where the scenario's time went: "converge 310s"
    with (
        log.open("w", buffering=1) as out,  # line by line: `tail -f` follows it
        subprocess.Popen(
            ["molecule", "test", "-s", scenario],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as proc,
    ):
        for line in proc.stdout:
            out.write(line)
            done = ACTION_DONE.search(ANSI.sub("", line))
            if done:
                now = time.monotonic()
                steps.append(f"{done[1]} {now - mark:.0f}s")
                mark = now
        rc = proc.wait()
    took = time.monotonic() - started
    print(f"==> molecule {scenario}: {took:.0f}s (exit {rc}): {', '.join(steps)}", flush=True)
    print("\n".join(f"    {line}" for line in slow_tests(log)), flush=True)
    if rc:
        print("\n".join(f"    {line}" for line in failure_report(log)), flush=True)
    return scenario, rc, took


def slow_tests(log: Path, at_least: float = 30) -> list[str]:
    """pytest's --durations lines of the verify step that took at least `at_least` s (the
    test's name, which Molecule wraps at 80 columns, joined again)."""
    lines = [
        ANSI.sub("", line).strip(" │") for line in log.read_text(errors="replace").splitlines()
    ]
    slow = []
    for i, line in enumerate(lines):
        found = DURATION.match(line)
        if found and float(found[1]) >= at_least:
            name = found[2]
            for more in lines[i + 1 : i + 4]:
                if DURATION.match(more) or more.startswith("=") or not more:
                    break
                name += more
            slow.append(f"{found[1]}s {name}")
    return slow


def failure_report(log: Path) -> list[str]:
    """What failed: Ansible's fatal lines, pytest's failures, then the log's tail."""
    # Molecule frames its output in a box and colours it: strip both before matching.
    lines = [
        ANSI.sub("", line).lstrip(" │") for line in log.read_text(errors="replace").splitlines()
    ]
    marks = ("fatal:", "FAILED ", "E   ", "failed: [")
    picked = []
    for i, line in enumerate(lines):
        if line.startswith(marks) and "RETRYING" not in line:
            picked.append(line[:600])
            if line.startswith(("fatal:", "failed: [")):  # the result follows, one key a line
                picked += [f"  {more[:300]}" for more in lines[i + 1 : i + 13]]
    picked = picked[-60:]
    return picked + ["..."] + lines[-8:]


def lane(scenarios: list[str]) -> list[tuple[str, int, float]]:
    # Scenarios are independent (own machines), so one failure does not stop the lane.
    return [run(scenario) for scenario in scenarios]


def main() -> int:
    LOGS.mkdir(exist_ok=True)
    lanes = [spec.split() for spec in sys.argv[1:] if spec.split()]
    with ThreadPoolExecutor(max_workers=len(lanes)) as pool:
        results = [r for rs in pool.map(lane, lanes) for r in rs]
    failed = [name for name, rc, _took in results if rc]
    summary = ["== molecule scenarios"]
    for name, rc, took in results:
        summary.append(f"   {name:<12} {took:6.0f}s  {'ok' if rc == 0 else 'FAILED'}")
    summary.append(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    for name in failed:  # again, so that the end of a long CI log shows them
        summary += [f"== {name} failed:"] + failure_report(LOGS / f"molecule-{name}.log")
    print("\n".join(summary))
    # `make test` prints this once more after the lint and unit output.
    (LOGS / "molecule-summary.log").write_text("\n".join(summary) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
