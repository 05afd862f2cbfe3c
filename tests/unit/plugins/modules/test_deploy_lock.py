"""deploy_lock on a lock file in a temporary directory, with threads as the other runs."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest
from ansible_collections.fastapi_ops.stack.plugins.modules import deploy_lock

ALICE = {"user": "alice", "controller": "ctl-a", "pid": 101, "playbook": "deploy.yml"}
BOB = {"user": "bob", "controller": "ctl-b", "pid": 202, "playbook": "site.yml"}


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "locks" / "deploy.lock")


def take(run_module, path, run_id, holder, **extra):
    return run_module(deploy_lock.main, {"path": path, "run_id": run_id, "holder": holder, **extra})


def on_disk(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def test_a_free_lock_is_taken_and_kept_by_its_own_run(run_module, path):
    first = take(run_module, path, "run-a", ALICE, live_pids=[101])
    assert first["changed"] and not first.get("failed")
    assert on_disk(path)["holder"] == ALICE and on_disk(path)["run_id"] == "run-a"
    # A playbook imported by another takes it again: the same run, nothing changes.
    again = take(run_module, path, "run-a", ALICE, live_pids=[101])
    assert not again["changed"] and again["lock"]["since"] == first["lock"]["since"]


def test_another_run_is_refused_naming_the_holder_and_nothing_changes(run_module, path):
    take(run_module, path, "run-a", ALICE, live_pids=[101])
    refused = take(run_module, path, "run-b", BOB, live_pids=[202])
    assert refused["failed"] and not refused["changed"]
    for shown in ("alice", "ctl-a", "pid 101", "run run-a", "deploy.yml", "since", "lock_wait"):
        assert shown in refused["msg"], (shown, refused["msg"])
    assert "probably stale" not in refused["msg"]
    assert on_disk(path)["run_id"] == "run-a"


def test_a_run_waits_for_the_lock_to_be_released(run_module, path):
    take(run_module, path, "run-a", ALICE, live_pids=[101])

    def release_soon():
        time.sleep(1.0)
        with deploy_lock.guarded(path):
            os.remove(path)

    threading.Thread(target=release_soon).start()
    got = take(run_module, path, "run-b", BOB, wait=10, poll=0.2)
    assert got["changed"] and not got.get("failed")
    assert 0.8 <= got["waited"] < 5, got
    assert on_disk(path)["run_id"] == "run-b"


def test_a_wait_that_ends_fails_after_about_that_long(run_module, path):
    take(run_module, path, "run-a", ALICE, live_pids=[101])
    started = time.monotonic()
    refused = take(run_module, path, "run-b", BOB, wait=1, poll=0.3)
    assert refused["failed"] and 0.5 <= time.monotonic() - started < 3
    assert "Waited" in refused["msg"]


def test_the_lock_of_a_dead_process_of_the_same_controller_is_taken_over(run_module, path):
    take(run_module, path, "run-a", ALICE, live_pids=[101])
    # ctl-a again, later: pid 101 has exited (a cancelled or failed run).
    successor = {**ALICE, "pid": 555}
    got = take(run_module, path, "run-c", successor, live_pids=[555])
    assert got["took_over"] and got["changed"]
    assert got["previous"]["run_id"] == "run-a"
    assert on_disk(path)["holder"]["pid"] == 555


def test_the_lock_of_another_controller_is_never_taken_over_and_called_stale_by_age(
    run_module, path
):
    take(run_module, path, "run-a", ALICE, live_pids=[101])
    lock = on_disk(path)
    lock["since"] -= 3 * 3600
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(lock, handle)
    refused = take(run_module, path, "run-b", BOB, live_pids=[])
    assert refused["failed"] and not refused["took_over"]
    assert "probably stale" in refused["msg"] and "playbooks/unlock.yml" in refused["msg"]


def test_release_removes_only_the_runs_own_lock(run_module, path):
    take(run_module, path, "run-a", ALICE, live_pids=[101])
    other = run_module(deploy_lock.main, {"path": path, "run_id": "run-b", "state": "absent"})
    assert not other["changed"] and on_disk(path)["run_id"] == "run-a"
    own = run_module(deploy_lock.main, {"path": path, "run_id": "run-a", "state": "absent"})
    assert own["changed"]
    with pytest.raises(FileNotFoundError):
        on_disk(path)


def test_broken_removes_whoever_holds_it_and_says_whom(run_module, path):
    take(run_module, path, "run-a", ALICE, live_pids=[101])
    broken = run_module(deploy_lock.main, {"path": path, "state": "broken"})
    assert broken["changed"] and broken["previous"]["holder"] == ALICE
    assert not run_module(deploy_lock.main, {"path": path, "state": "broken"})["changed"]


def test_check_mode_reports_and_writes_nothing(run_module, path):
    got = run_module(
        deploy_lock.main, {"path": path, "run_id": "run-a", "holder": ALICE}, check_mode=True
    )
    assert got["changed"]
    assert not os.path.exists(os.path.dirname(path)), "check mode made the directory"


def test_an_unreadable_lock_still_holds(run_module, path):
    take(run_module, path, "run-a", ALICE)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("{torn")
    refused = take(run_module, path, "run-b", BOB)
    assert refused["failed"] and "run unreadable" in refused["msg"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"state": "present"}, "run_id"),
        ({"state": "absent"}, "run_id"),
        ({"run_id": "x", "wait": -1}, "wait must be 0 or more"),
        ({"run_id": "x", "poll": 0}, "poll and stale_after above 0"),
    ],
)
def test_bad_parameters_are_refused(run_module, path, args, message):
    res = run_module(deploy_lock.main, {"path": path, **args})
    assert res["failed"] and message in res["msg"]
