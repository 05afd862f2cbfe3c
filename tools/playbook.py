"""Run one of the collection's playbooks as a user does: the venv's ansible-playbook, the
project's ansible.cfg, plain output for the tests to read."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_playbook(
    name: str, inventory: str | Path, *args: str, timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    """`ansible-playbook -i INVENTORY playbooks/NAME ARGS` from the project root."""
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
    }
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            str(ROOT / "playbooks" / name),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
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
