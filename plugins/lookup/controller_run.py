"""This ansible-playbook run on the controller: who, where, which process, which are alive."""
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION/EXAMPLES/RETURN come before imports)

from __future__ import annotations

DOCUMENTATION = r"""
name: controller_run
short_description: This ansible-playbook run - its controller, process and user
version_added: 0.2.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - Names the run for the deploy lock (module M(fastapi_ops.stack.deploy_lock)) - the
    controller's host name, the user, the process ID of C(ansible-playbook) and a run ID
    that is the same for every play of one run - and lists the C(ansible-playbook)
    processes alive on this controller, so that the lock of a run that was stopped or
    failed here can be told from one that is still going.
  - The process is the last of the unbroken chain of C(ansible-playbook) processes above
    this lookup (the worker that templates it, then the main process), so a playbook that
    runs another one with a task names the inner run.
options: {}
"""

EXAMPLES = r"""
- name: Who runs this
  ansible.builtin.debug:
    msg: "{{ lookup('fastapi_ops.stack.controller_run') }}"
"""

RETURN = r"""
_raw:
  description:
    - One mapping - C(run_id), C(controller), C(user), C(pid) and C(live_pids).
  type: list
  elements: dict
"""

import getpass
import os
import socket
from pathlib import Path

from ansible.plugins.lookup import LookupBase

PROC = Path("/proc")


def cmdline(pid: int, proc: Path = PROC) -> str:
    try:
        return (
            (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def parent(pid: int, proc: Path = PROC) -> int:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return 0
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return int(stat.rsplit(")", 1)[1].split()[1])


def started(pid: int, proc: Path = PROC) -> str:
    try:
        return (proc / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def is_playbook(pid: int, proc: Path = PROC) -> bool:
    return "ansible-playbook" in cmdline(pid, proc)


def playbook_pid(pid: int, proc: Path = PROC) -> int:
    """The outermost ansible-playbook process of the chain that begins at `pid` (0: none)."""
    found = 0
    while pid > 1 and is_playbook(pid, proc):
        found, pid = pid, parent(pid, proc)
    return found


def live_pids(proc: Path = PROC) -> list[int]:
    return sorted(
        int(entry.name)
        for entry in proc.iterdir()
        if entry.name.isdigit() and is_playbook(int(entry.name), proc)
    )


def controller_run(proc: Path = PROC) -> dict:
    pid = playbook_pid(os.getpid(), proc) or playbook_pid(os.getppid(), proc)
    controller = socket.gethostname()
    return {
        # The process's start time (clock ticks since boot) tells a reused pid apart.
        "run_id": f"{controller}:{pid}:{started(pid, proc)}",
        "controller": controller,
        "user": getpass.getuser(),
        "pid": pid,
        "live_pids": live_pids(proc),
    }


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        return [controller_run()]
