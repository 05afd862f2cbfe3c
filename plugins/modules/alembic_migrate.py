#!/usr/bin/python
"""Ansible module fastapi_ops.stack.alembic_migrate."""
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION/EXAMPLES/RETURN come before imports)

from __future__ import annotations

DOCUMENTATION = r"""
module: alembic_migrate
short_description: Run Alembic migrations of a release under a PostgreSQL advisory lock
version_added: 0.1.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - Upgrades (or downgrades) the database of a release with Alembic, running the
    project's own C(env.py) with the release's virtualenv interpreter and the app's
    environment (for example C(DATABASE_URL)).
  - A small helper script is copied to the target and run as
    C(<venv>/bin/python helper.py). It uses only what the release already has
    (C(alembic), C(sqlalchemy) and the app's PostgreSQL driver, sync or async such as
    C(asyncpg)); the module itself needs nothing beyond the Python standard library.
  - Before reading or changing anything the helper takes a session-level
    C(pg_advisory_lock) on a key derived from O(lock_name), on its own connection, and
    holds it until Alembic is done, so two hosts (or two runs) never migrate at once.
    A second run waits up to O(lock_timeout) seconds and then sees the migrated
    database (and reports no change).
  - Each migration runs in its own transaction (Alembic's C(transaction_per_migration),
    forced on unless O(transaction_per_migration=false)), so a failing migration leaves
    the database at the last revision that succeeded.
  - C(changed) is true only when the database revision moved.
  - Passwords in URLs are masked in every message and returned value.
  - With O(command), any other migration command runs under the same lock instead.
options:
  project_path:
    description:
      - Directory of the Alembic project (the release directory). Alembic runs with this
        as its working directory, so relative C(script_location) and
        C(prepend_sys_path) entries in the ini file resolve as on the command line.
    type: path
    required: true
  config:
    description: Path of C(alembic.ini); relative paths are relative to O(project_path).
    type: path
    default: alembic.ini
  venv:
    description:
      - Virtualenv of the release; its C(bin/python) runs Alembic.
      - Mutually exclusive with O(executable).
    type: path
  executable:
    description:
      - Python interpreter that has Alembic and the app's DB driver installed.
      - Defaults to C(<venv>/bin/python), else the interpreter running this module.
    type: path
  environment:
    description:
      - Environment variables for Alembic and C(env.py), such as C(DATABASE_URL). A list or
        a dictionary is passed as JSON.
      - Secret values are masked in all output (as with C(no_log)) - the values of
        variables whose name contains C(PASS), C(SECRET), C(TOKEN), C(KEY), C(URL), C(DSN)
        or C(CREDENTIAL), every value of 8 characters or more, and passwords inside URLs.
        Short harmless values such as C(1) stay readable. Still set C(no_log) on the task
        when the environment holds secrets, so the controller does not print them.
    type: dict
    default: {}
  url_env:
    description:
      - Name of the environment variable holding the SQLAlchemy URL used for the lock
        connection. When unset or empty, C(sqlalchemy.url) of the ini file is used.
      - C(env.py) decides which URL the migrations themselves use; point both at the
        same database.
    type: str
    default: DATABASE_URL
  state:
    description:
      - V(upgraded) applies migrations up to O(revision).
      - V(downgraded) reverts migrations down to O(revision) (which must then be given
        explicitly, for example a revision id or V(base)).
    type: str
    choices: [upgraded, downgraded]
    default: upgraded
  revision:
    description:
      - Target revision. V(head) (or V(heads)), V(base), a revision id or a branch label.
      - Relative targets (V(+1), V(-1)) are refused because they are not idempotent.
    type: str
    default: head
  lock_name:
    description: Name the advisory-lock key is derived from (SHA-256, first 64 bits).
    type: str
    default: fastapi_ops.stack.alembic_migrate
  lock_timeout:
    description: Seconds to wait for the advisory lock; V(0) waits forever.
    type: int
    default: 600
  command:
    description:
      - Run this command (an argv list) instead of Alembic - another migration tool, or
        Alembic driven by the app's own script - with the same advisory lock,
        O(environment) and working directory O(project_path).
      - The lock is taken with the URL in the O(url_env) variable of O(environment).
      - The module cannot tell what such a command changed, so C(changed) is true whenever
        it ran; check mode takes the lock and does not run it.
      - O(config), O(state) and O(revision) are ignored.
    type: list
    elements: str
    default: []
  transaction_per_migration:
    description:
      - Run each migration in its own transaction, whatever C(env.py) configures.
      - With V(false) C(env.py) decides; PostgreSQL then rolls a failed run back to the
        revision it started from.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports the pending revisions (and takes the lock to read them) without applying.
  diff_mode:
    support: full
    details: Before and after revision.
  platform:
    platforms: posix
notes:
  - Runs on the target. Needs network access from the target to PostgreSQL.
  - The lock does not block the app; it only serialises migrators.
requirements:
  - On the target, in the interpreter that runs Alembic, C(alembic) >= 1.7, C(sqlalchemy)
    >= 1.4 and the database driver of the URL.
"""

EXAMPLES = r"""
- name: Migrate the database to the release's head (one host at a time, any number of hosts)
  fastapi_ops.stack.alembic_migrate:
    project_path: /srv/shop/releases/1.2.0+b3
    venv: /srv/shop/releases/1.2.0+b3/.venv
    environment:
      DATABASE_URL: "postgresql+asyncpg://shop:{{ app_db_password }}@10.0.0.5/shop"
  register: migration

- name: Show what a deploy would apply
  fastapi_ops.stack.alembic_migrate:
    project_path: "{{ app_release_dir }}"
    venv: "{{ app_release_dir }}/.venv"
    environment: "{{ app_environment }}"
  check_mode: true
  register: pending

- name: Roll the schema back to the previous release's revision
  fastapi_ops.stack.alembic_migrate:
    project_path: "{{ app_release_dir }}"
    venv: "{{ app_release_dir }}/.venv"
    environment: "{{ app_environment }}"
    state: downgraded
    revision: "{{ app_previous_revision }}"
"""

RETURN = r"""
from_revision:
  description: Revision before the run (heads joined by C(,) if several), null if none.
  returned: success or failure after the database was reached
  type: str
  sample: 3f2a1c9d0b7e
to_revision:
  description:
    - Revision after the run. In check mode, the revision a real run would reach.
    - On failure, the last revision that succeeded (where the database now is).
  returned: success or failure after the database was reached
  type: str
  sample: 9c1e2b3a4d5f
applied:
  description: Revision ids applied (or reverted) by this run, in order; empty in check mode.
  returned: always
  type: list
  elements: str
  sample: [7b2d9e0c1a3f, 9c1e2b3a4d5f]
pending:
  description: Migrations that were to run, in order, with their message.
  returned: success or failure after the database was reached
  type: list
  elements: dict
  sample: [{revision: 9c1e2b3a4d5f, down_revision: [7b2d9e0c1a3f], description: add price}]
lock_key:
  description: The pg_advisory_lock key used.
  returned: success or failure after the database was reached
  type: int
  sample: -3745187592004816563
lock_waited:
  description: Seconds spent waiting for the advisory lock.
  returned: success or failure after the database was reached
  type: float
  sample: 0.0
error:
  description: Alembic's error text (passwords masked).
  returned: failure
  type: str
stderr:
  description: Output of Alembic and env.py logging (passwords masked).
  returned: always
  type: str
output:
  description: Output of O(command), its last 20 000 characters (passwords masked).
  returned: when O(command) ran
  type: str
"""

import inspect
import json
import os
import re
import sys
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fastapi_ops.stack.plugins.module_utils import alembic_helper
from ansible_collections.fastapi_ops.stack.plugins.module_utils.masking import (
    mask_data,
    url_passwords,
)

ARGUMENT_SPEC: dict[str, Any] = {
    "project_path": {"type": "path", "required": True},
    "config": {"type": "path", "default": "alembic.ini"},
    "venv": {"type": "path"},
    "executable": {"type": "path"},
    # Not no_log as a whole (that would mask short values such as "1" inside revision ids);
    # secret-looking values are registered as no_log values in _protect_environment().
    "environment": {"type": "dict", "default": {}, "no_log": False},
    "url_env": {"type": "str", "default": "DATABASE_URL"},
    "state": {"type": "str", "choices": ["upgraded", "downgraded"], "default": "upgraded"},
    "revision": {"type": "str", "default": "head"},
    "lock_name": {"type": "str", "default": "fastapi_ops.stack.alembic_migrate"},
    "lock_timeout": {"type": "int", "default": 600},
    "command": {"type": "list", "elements": "str", "default": []},
    "transaction_per_migration": {"type": "bool", "default": True},
}


def _python(params: dict[str, Any]) -> str:
    if params["executable"]:
        return params["executable"]
    if params["venv"]:
        return os.path.join(params["venv"], "bin", "python")
    return sys.executable


def _joined(heads: list[str] | None) -> str | None:
    return ",".join(heads) if heads else None


_SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|KEY|URL|DSN|CREDENTIAL", re.IGNORECASE)


def _environment_text(module: AnsibleModule) -> dict[str, str]:
    """The environment as text: a list or a dict as JSON (as the app role writes them)."""
    return {
        str(k): json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        for k, v in module.params["environment"].items()
    }


def _protect_environment(module: AnsibleModule) -> list[str]:
    """Register secret-looking environment values as no_log values; return URL passwords."""
    values = _environment_text(module)
    for name, value in values.items():
        if value and (_SECRET_NAME.search(name) or len(value) >= 8):
            module.no_log_values.add(value)
    passwords = url_passwords(list(values.values()))
    module.no_log_values.update(passwords)
    return passwords


def _validate(module: AnsibleModule) -> None:
    params = module.params
    revision = params["revision"]
    if revision.startswith(("+", "-")) or ":" in revision:
        module.fail_json(msg=f"revision {revision!r}: relative targets and ranges are refused")
    if params["state"] == "downgraded" and revision in ("head", "heads"):
        module.fail_json(msg="state=downgraded needs an explicit revision (an id or 'base')")
    if params["venv"] and params["executable"]:
        module.fail_json(msg="parameters are mutually exclusive: venv|executable")
    python = _python(params)
    if not os.access(python, os.X_OK):
        module.fail_json(msg=f"interpreter {python} not found or not executable")
    if not os.path.isdir(params["project_path"]):
        module.fail_json(msg=f"project_path {params['project_path']} is not a directory")


def run_helper(module: AnsibleModule, request: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Write the helper and its request to the module's tmpdir, run it, read its result."""
    tmpdir = module.tmpdir
    helper = os.path.join(tmpdir, "alembic_helper.py")
    request_path = os.path.join(tmpdir, "alembic_request.json")
    result_path = os.path.join(tmpdir, "alembic_result.json")
    with open(helper, "w", encoding="utf-8") as handle:
        handle.write(inspect.getsource(alembic_helper))
    with open(request_path, "w", encoding="utf-8") as handle:
        json.dump(request, handle)
    rc, out, err = module.run_command(
        [_python(module.params), helper, request_path, result_path],
        cwd=module.params["project_path"],
        environ_update=_environment_text(module),
    )
    output = (out + err).strip()
    if rc != 0 or not os.path.exists(result_path):
        return {"ok": False, "error": f"alembic helper exited with {rc}"}, output
    with open(result_path, encoding="utf-8") as handle:
        return json.load(handle), output


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    secrets = _protect_environment(module)
    _validate(module)
    params = module.params
    config = params["config"]
    if not os.path.isabs(config):
        config = os.path.join(params["project_path"], config)
    request = {
        "config": config,
        "state": params["state"],
        "revision": params["revision"],
        "check": module.check_mode,
        "url_env": params["url_env"],
        "lock_name": params["lock_name"],
        "lock_timeout": params["lock_timeout"],
        "transaction_per_migration": params["transaction_per_migration"],
        "command": params["command"],
    }
    started = time.monotonic()
    result, output = run_helper(module, request)
    result, output = mask_data(result, secrets), mask_data(output, secrets)
    if params["command"]:
        _exit_command(module, result, output, started)

    pending = result.get("pending", [])
    before = _joined(result.get("from_heads"))
    if module.check_mode and result.get("ok"):
        after = _target_after(params["state"], pending, before)
        applied: list[str] = []
    else:
        after = _joined(result.get("after_heads"))
        applied = [step["revision"] for step in result.get("applied", [])]
    facts: dict[str, Any] = {
        "changed": before != after,
        "from_revision": before,
        "to_revision": after,
        "applied": applied,
        "pending": pending,
        "lock_key": result.get("lock_key"),
        "lock_waited": result.get("lock_waited"),
        "elapsed": round(time.monotonic() - started, 3),
        "stderr": output,
    }
    if module._diff:
        facts["diff"] = {"before": f"revision: {before}\n", "after": f"revision: {after}\n"}
    if not result.get("ok"):
        error = result.get("error") or "alembic failed"
        where = f" (database left at revision {after})" if "after_heads" in result else ""
        module.fail_json(
            msg=f"alembic {params['state']} to {params['revision']} failed{where}: {error}",
            error=error,
            traceback=result.get("traceback", ""),
            **{k: v for k, v in facts.items() if k != "diff"},
        )
    module.exit_json(**facts)


def _exit_command(
    module: AnsibleModule, result: dict[str, Any], output: str, started: float
) -> None:
    facts: dict[str, Any] = {
        "changed": bool(result.get("ran")),
        "applied": [],
        "lock_key": result.get("lock_key"),
        "lock_waited": result.get("lock_waited"),
        "elapsed": round(time.monotonic() - started, 3),
        "output": result.get("output", ""),
        "stderr": output,
    }
    if not result.get("ok"):
        error = result.get("error") or "the migration command failed"
        module.fail_json(msg=f"migration command failed: {error}", error=error, **facts)
    module.exit_json(**facts)


def _target_after(state: str, pending: list[dict[str, Any]], before: str | None) -> str | None:
    """Revision a real run would reach: the last pending step (its parent for downgrades)."""
    if not pending:
        return before
    if state == "upgraded":
        return pending[-1]["revision"]
    return _joined(pending[-1]["down_revision"])


if __name__ == "__main__":
    main()
