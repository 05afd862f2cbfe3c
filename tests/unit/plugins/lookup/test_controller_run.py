"""controller_run on a made-up /proc: which process is the run, which runs are alive."""

from __future__ import annotations

import pytest
from ansible_collections.fastapi_ops.stack.plugins.lookup.controller_run import (
    live_pids,
    playbook_pid,
)

# pid: (cmdline, parent). A shell ran `ansible-playbook site.yml`, whose worker ran a
# task that started another ansible-playbook (its own worker below it).
TREE = {
    1: ("/sbin/init", 0),
    50: ("-bash", 1),
    100: ("/usr/bin/python3 /venv/bin/ansible-playbook site.yml", 50),
    101: ("/usr/bin/python3 /venv/bin/ansible-playbook site.yml", 100),
    150: ("/usr/bin/python3 /root/.ansible/tmp/AnsiballZ_command.py", 101),
    200: ("/usr/bin/python3 /venv/bin/ansible-playbook --check site.yml", 150),
    201: ("/usr/bin/python3 /venv/bin/ansible-playbook --check site.yml", 200),
    300: ("/usr/bin/python3 -m pytest", 50),
}


@pytest.fixture
def proc(tmp_path):
    for pid, (cmdline, ppid) in TREE.items():
        d = tmp_path / str(pid)
        d.mkdir()
        (d / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
        # Fields after "(comm)": state, ppid, then 17 more, then starttime (the 22nd).
        rest = ["S", str(ppid)] + ["0"] * 17 + [str(1000 + pid)]
        (d / "stat").write_text(f"{pid} (a (b) c) {' '.join(rest)}\n")
    (tmp_path / "self").mkdir()  # not a pid: ignored
    return tmp_path


@pytest.mark.parametrize(("start", "run"), [(101, 100), (100, 100), (201, 200), (300, 0)])
def test_the_run_is_the_outer_end_of_the_chain_of_ansible_playbook_processes(proc, start, run):
    assert playbook_pid(start, proc) == run


def test_live_runs_are_every_ansible_playbook_process(proc):
    assert live_pids(proc) == [100, 101, 200, 201]
