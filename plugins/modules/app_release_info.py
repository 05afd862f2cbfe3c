#!/usr/bin/python
"""Ansible module fastapi_ops.stack.app_release_info."""
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION/EXAMPLES/RETURN come before imports)

from __future__ import annotations

DOCUMENTATION = r"""
module: app_release_info
short_description: The releases an app host keeps, serves and served, and its deploy log
version_added: 0.2.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - Reads what the C(fastapi_ops.stack.app) role keeps under O(app_root) - the release
    directories, C(releases.json) (current, previous and attempted release, when each
    release went live, the deploy log) and the database revision each release's
    migrations reached (C(.revision), written where the migrations ran) - and returns it.
  - Changes nothing. C(playbooks/releases.yml) prints it; C(playbooks/rollback.yml)
    checks with it that every app host keeps the release named by C(rollback_to).
options:
  app_root:
    description: The app's root directory (C(app_root) of the app role).
    type: path
    required: true
  deploys:
    description: How many of the newest deploy log entries to return.
    type: int
    default: 10
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Read the kept releases
  fastapi_ops.stack.app_release_info:
    app_root: /srv/fastapi-ops-app
  register: releases

- name: Show them
  ansible.builtin.debug:
    msg: "{{ releases.releases | map(attribute='release') }} (serving {{ releases.current }})"
"""

RETURN = r"""
current:
  description: The release that serves (C(current) points at it), null before the first deploy.
  returned: always
  type: str
  sample: 0.3.0+b42
previous:
  description: The release C(rollback.yml) goes back to without C(rollback_to).
  returned: always
  type: str
attempted:
  description: The release the last run tried to switch to.
  returned: always
  type: str
releases:
  description:
    - The releases kept on the host, oldest activation first (never activated ones first).
    - C(release), C(activated) (ISO time it last went live, or null), C(revision) (the
      database revision its migrations reached, or null when they ran elsewhere or not
      with Alembic), C(installed) (its virtualenv is complete, so it can be switched to),
      C(current) and C(previous).
  returned: always
  type: list
  elements: dict
deploys:
  description:
    - The newest O(deploys) entries of the deploy log, oldest first - C(at), C(by),
      C(action) (deploy or rollback), C(from), C(to) and C(result) (ok or failed).
  returned: always
  type: list
  elements: dict
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def release_info(app_root: str, deploys: int) -> dict:
    releases_dir = os.path.join(app_root, "releases")
    state = json.loads(read_text(os.path.join(app_root, "releases.json")) or "{}")
    activated = {h["release"]: h.get("activated") for h in state.get("history", [])}
    on_disk = sorted(os.listdir(releases_dir)) if os.path.isdir(releases_dir) else []
    kept = [
        {
            "release": r,
            "activated": activated.get(r),
            "revision": read_text(os.path.join(releases_dir, r, ".revision")) or None,
            "installed": os.path.exists(os.path.join(releases_dir, r, "venv", "installed.txt")),
            "current": r == state.get("current"),
            "previous": r == state.get("previous"),
        }
        for r in on_disk
        if os.path.isdir(os.path.join(releases_dir, r))
    ]
    # ISO times of one clock sort as strings; the never activated come first.
    kept.sort(key=lambda k: (k["activated"] or "", k["release"]))
    return {
        "current": state.get("current"),
        "previous": state.get("previous"),
        "attempted": state.get("attempted"),
        "releases": kept,
        "deploys": state.get("deploys", [])[-deploys:] if deploys else [],
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "app_root": {"type": "path", "required": True},
            "deploys": {"type": "int", "default": 10},
        },
        supports_check_mode=True,
    )
    if module.params["deploys"] < 0:
        module.fail_json(msg="deploys must be 0 or more")
    try:
        info = release_info(module.params["app_root"], module.params["deploys"])
    except (OSError, ValueError) as error:
        module.fail_json(msg=f"cannot read the releases under {module.params['app_root']}: {error}")
    module.exit_json(changed=False, **info)


if __name__ == "__main__":
    main()
