#!/usr/bin/python
"""Ansible module fastapi_ops.stack.deploy_lock."""
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION/EXAMPLES/RETURN come before imports)

from __future__ import annotations

DOCUMENTATION = r"""
module: deploy_lock
short_description: One run at a time per inventory - take, wait for, release or break a lock file
version_added: 0.2.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - Keeps a lock file on one host of the inventory (the collection's playbooks use the
    first app host, else the first db host), so that two controllers running playbooks
    against the same servers see each other.
  - V(present) takes the lock for O(run_id), or keeps it when that run holds it already
    (a playbook imported by another). A lock held by another run is waited for up to
    O(wait) seconds, then the task fails naming the holder, since when and with which
    playbook.
  - A lock whose run is provably gone is taken over - its O(holder) controller is the
    one in this O(holder), and its process is not among O(live_pids). A lock left by a
    controller that cannot be asked is only called probably stale after O(stale_after)
    seconds; V(broken) removes it.
  - V(absent) releases the lock if O(run_id) holds it and leaves another run's alone.
  - Reads and writes happen under an exclusive C(flock) on a guard file beside the lock,
    and the lock file is replaced atomically.
  - Check mode reports what would happen and writes nothing.
options:
  path:
    description: The lock file. Its directory is made when missing.
    type: path
    default: /var/lib/fastapi-ops/deploy.lock
  state:
    description:
      - V(present) takes the lock, V(absent) releases this run's lock, V(broken) removes
        the lock whoever holds it.
    type: str
    choices: [present, absent, broken]
    default: present
  run_id:
    description: What identifies this run. Required with O(state=present) or O(state=absent).
    type: str
  holder:
    description:
      - Who takes the lock, stored in it and shown to the runs it refuses, for example
        C(user), C(controller) (host name), C(pid) (of C(ansible-playbook)) and C(playbook).
    type: dict
    default: {}
  live_pids:
    description:
      - The C(ansible-playbook) processes alive on O(holder)'s C(controller). A lock taken
        from that controller by a process not in this list is taken over.
    type: list
    elements: int
    default: []
  wait:
    description: Seconds to wait for a lock held by another run before failing.
    type: int
    default: 0
  poll:
    description: Seconds between two looks at a held lock while waiting.
    type: float
    default: 2.0
  stale_after:
    description:
      - Age in seconds from which a lock that cannot be proven gone is called probably
        stale in the failure message. Such a lock is never taken over by age alone.
    type: int
    default: 7200
"""

EXAMPLES = r"""
- name: Take the deploy lock, waiting up to 10 minutes for another run
  fastapi_ops.stack.deploy_lock:
    run_id: "{{ run_id }}"
    holder: {user: alice, controller: ci-7, pid: 4242, playbook: deploy.yml}
    live_pids: [4242]
    wait: 600

- name: Release it at the end of the run
  fastapi_ops.stack.deploy_lock:
    run_id: "{{ run_id }}"
    state: absent

- name: Break a lock whose controller died
  fastapi_ops.stack.deploy_lock:
    state: broken
"""

RETURN = r"""
lock:
  description: The lock after the task (empty when there is none).
  returned: always
  type: dict
  sample: {run_id: 9f2c, since: 1764950400.5, holder: {user: alice, playbook: deploy.yml}}
previous:
  description: The lock this task replaced or removed, if another run held it.
  returned: always
  type: dict
took_over:
  description: Whether the lock of a run that is gone was taken over.
  returned: always
  type: bool
waited:
  description: Seconds spent waiting for another run's lock.
  returned: always
  type: float
"""

import fcntl
import json
import os
import tempfile
import time
from contextlib import contextmanager

from ansible.module_utils.basic import AnsibleModule


@contextmanager
def guarded(path: str, check: bool = False):
    """An exclusive flock on PATH.guard for one read-modify-write of the lock (check
    mode only reads, and makes neither the directory nor the guard)."""
    if check:
        yield
        return
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    fd = os.open(path + ".guard", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_lock(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            lock = json.load(handle)
    except FileNotFoundError:
        return {}
    except ValueError:
        # A torn or hand-edited file: held by nobody we can name, still a lock.
        return {"run_id": "unreadable", "since": os.stat(path).st_mtime, "holder": {}}
    return lock if isinstance(lock, dict) else {"run_id": "unreadable", "holder": {}}


def write_lock(path: str, lock: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".deploy-lock.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(lock, handle, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def is_gone(lock: dict, holder: dict, live_pids: list[int]) -> bool:
    """The lock's run is provably gone: taken from this controller by a dead process."""
    theirs = lock.get("holder") or {}
    try:
        pid = int(theirs.get("pid"))
    except (TypeError, ValueError):
        return False
    return (
        bool(holder.get("controller"))
        and theirs.get("controller") == holder.get("controller")
        and pid > 0
        and pid not in live_pids
    )


def describe(lock: dict, now: float, stale_after: int) -> str:
    holder = lock.get("holder") or {}
    since = lock.get("since")
    age = f"{int(now - since)} s" if isinstance(since, (int, float)) else "an unknown time"
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
        if isinstance(since, (int, float))
        else "?"
    )
    text = (
        f"held by {holder.get('user', '?')} on {holder.get('controller', '?')}"
        f" (ansible-playbook pid {holder.get('pid', '?')}, run {lock.get('run_id', '?')}),"
        f" running {holder.get('playbook', '?')} since {when} ({age} ago)"
    )
    if isinstance(since, (int, float)) and now - since >= stale_after:
        text += f"; older than {stale_after} s, so probably stale"
    return text


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/var/lib/fastapi-ops/deploy.lock"},
            "state": {
                "type": "str",
                "default": "present",
                "choices": ["present", "absent", "broken"],
            },
            "run_id": {"type": "str"},
            "holder": {"type": "dict", "default": {}},
            "live_pids": {"type": "list", "elements": "int", "default": []},
            "wait": {"type": "int", "default": 0},
            "poll": {"type": "float", "default": 2.0},
            "stale_after": {"type": "int", "default": 7200},
        },
        required_if=[("state", "present", ["run_id"]), ("state", "absent", ["run_id"])],
        supports_check_mode=True,
    )
    p = module.params
    if p["wait"] < 0 or p["poll"] <= 0 or p["stale_after"] <= 0:
        module.fail_json(msg="wait must be 0 or more, poll and stale_after above 0")
    path, run_id, check = p["path"], p["run_id"], module.check_mode
    result = {"changed": False, "lock": {}, "previous": {}, "took_over": False, "waited": 0.0}

    if p["state"] in ("absent", "broken"):
        with guarded(path, check):
            lock = read_lock(path)
            ours = lock.get("run_id") == run_id
            if lock and (ours or p["state"] == "broken"):
                result.update(changed=True, previous={} if ours else lock)
                if not check:
                    os.remove(path)
            else:
                result["lock"] = lock
        module.exit_json(**result)

    started = time.monotonic()
    while True:
        with guarded(path, check):
            lock, now = read_lock(path), time.time()
            gone = bool(lock) and is_gone(lock, p["holder"], p["live_pids"])
            ours = bool(lock) and lock.get("run_id") == run_id
            if not lock or ours or gone:
                mine = lock if ours else {"run_id": run_id, "since": now, "holder": p["holder"]}
                result.update(
                    lock=mine,
                    changed=not ours,
                    previous=lock if gone else {},
                    took_over=gone,
                    waited=round(time.monotonic() - started, 1),
                )
                if not ours and not check:
                    write_lock(path, mine)
                module.exit_json(**result)
        if time.monotonic() - started + p["poll"] > p["wait"]:
            break
        time.sleep(p["poll"])

    waited = round(time.monotonic() - started, 1)
    module.fail_json(
        msg=(
            f"Another run holds the deploy lock ({path}): {describe(lock, now, p['stale_after'])}."
            f" Waited {waited} s. Wait longer with -e lock_wait=SECONDS; if that run is gone"
            " (its controller died), break the lock with"
            " `ansible-playbook -i INVENTORY playbooks/unlock.yml`. Nothing was changed."
        ),
        lock=lock,
        waited=waited,
        **{k: v for k, v in result.items() if k not in ("lock", "waited")},
    )


if __name__ == "__main__":
    main()
