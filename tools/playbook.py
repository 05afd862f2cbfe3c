"""Run one of the collection's playbooks as a user does: the venv's ansible-playbook, the
project's ansible.cfg, plain output for the tests to read."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _command(name: str | Path, inventory: str | Path, args: tuple[str, ...]) -> dict:
    """subprocess arguments of `ansible-playbook -i INVENTORY playbooks/NAME ARGS` (an
    absolute NAME is a playbook elsewhere), run from the project root."""
    return {
        "args": [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            str(ROOT / "playbooks" / name),
            *args,
        ],
        "cwd": ROOT,
        "env": {
            **os.environ,
            "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
        },
        "text": True,
    }


def run_playbook(
    name: str | Path, inventory: str | Path, *args: str, timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    """Run it to the end: its exit code and output."""
    return subprocess.run(
        **_command(name, inventory, args), capture_output=True, timeout=timeout, check=False
    )


def start_playbook(
    name: str | Path, inventory: str | Path, *args: str, **popen: object
) -> subprocess.Popen[str]:
    """Start it in the background (its output on `stdout`, stderr included)."""
    return subprocess.Popen(
        **_command(name, inventory, args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **popen,  # type: ignore[arg-type]
    )


TASK_HEADER = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(.+)\] \**$")
CHANGED = re.compile(r"^changed: \[([^\]\s]+)")


def changed_tasks(stdout: str) -> dict[str, set[str]]:
    """The tasks (and handlers) a run reported changed, with the hosts they changed on,
    from ansible-playbook's default output."""
    changed: dict[str, set[str]] = {}
    task = ""
    for line in stdout.splitlines():
        if header := TASK_HEADER.match(line):
            task = header[1]
        elif found := CHANGED.match(line):
            changed.setdefault(task, set()).add(found[1])
    return changed
