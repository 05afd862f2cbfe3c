"""playbooks/lock.yml, lock_release.yml and unlock.yml as real ansible-playbook runs on
localhost: a run that holds the lock while a second one is refused, waits, or takes over
the lock of a run that was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.playbook import ROOT, run_playbook, start_playbook

PLAYBOOKS = ROOT / "playbooks"


@pytest.fixture
def lab(tmp_path):
    """An inventory of one local host in group app, a lock file under tmp_path, and a
    playbook that takes the lock, waits until a flag file exists, and releases it."""
    lock = tmp_path / "deploy.lock"
    flag = tmp_path / "go"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    app:\n      hosts:\n        web1:\n"
        "          ansible_connection: local\n"
        f"          ansible_python_interpreter: {sys.executable}\n"
    )
    playbook = tmp_path / "holds.yml"
    playbook.write_text(
        f"- import_playbook: {PLAYBOOKS}/lock.yml\n"
        "  vars: {deploy_lock_playbook: holds.yml}\n"
        "- hosts: app\n  gather_facts: false\n  tasks:\n"
        f"    - ansible.builtin.wait_for: {{path: {flag}, timeout: 120}}\n"
        f"- import_playbook: {PLAYBOOKS}/lock_release.yml\n"
    )
    extra = ("-e", f"deploy_lock_path={lock}")

    class Lab:
        path, go = lock, flag

        def start(self, *args: str) -> subprocess.Popen:
            proc = start_playbook(playbook, inventory, *extra, *args, start_new_session=True)
            started = time.monotonic()
            while not lock.exists():
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() - started < 60, "the lock was never taken"
                time.sleep(0.2)
            return proc

        def run(self, *args: str, name: str | Path = playbook) -> subprocess.CompletedProcess:
            """holds.yml, or one of the collection's playbooks by its name."""
            return run_playbook(name, inventory, *extra, *args, timeout=180)

        def holder(self) -> dict:
            return json.loads(lock.read_text())["holder"]

    yield Lab()
    flag.touch()


def test_a_second_run_is_refused_naming_the_first_then_the_first_releases(lab):
    first = lab.start()
    holder = lab.holder()
    assert holder["playbook"] == "holds.yml" and holder["pid"] == first.pid, holder
    second = lab.run()
    assert second.returncode != 0
    for shown in ("Another run holds the deploy lock", "holds.yml", f"pid {first.pid}"):
        assert shown in second.stdout, second.stdout[-3000:]
    assert lab.holder()["pid"] == first.pid
    lab.go.touch()
    assert first.wait(timeout=60) == 0, first.stdout.read()
    assert not lab.path.exists(), "the first run did not release its lock"


def test_lock_wait_waits_for_the_holder(lab):
    first = lab.start()
    lab.go.touch()  # the first run ends soon; the second waits for it
    second = lab.run("-e", "lock_wait=60")
    assert second.returncode == 0, second.stdout[-3000:]
    assert first.wait(timeout=60) == 0


def test_the_lock_of_a_killed_run_of_this_controller_is_taken_over(lab):
    first = lab.start()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    assert lab.path.exists(), "the killed run's lock should still be there"
    lab.go.touch()
    second = lab.run()
    assert second.returncode == 0, second.stdout[-3000:]
    assert not lab.path.exists()


def test_unlock_breaks_the_lock_of_a_controller_that_died(lab):
    lab.path.write_text(
        json.dumps(
            {
                "run_id": "gone:4242:1",
                "since": time.time() - 3 * 3600,
                "holder": {
                    "user": "ci",
                    "controller": "gone",
                    "pid": 4242,
                    "playbook": "deploy.yml",
                },
            }
        )
    )
    refused = lab.run()
    assert refused.returncode != 0 and "probably stale" in refused.stdout, refused.stdout[-3000:]
    broken = lab.run(name="unlock.yml")
    assert broken.returncode == 0 and "Broke the lock of run gone:4242:1" in broken.stdout
    assert not lab.path.exists()


def test_check_mode_takes_no_lock(lab):
    lab.go.touch()
    checked = lab.run("--check")
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert not lab.path.exists()
