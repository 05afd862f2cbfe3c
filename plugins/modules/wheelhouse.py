#!/usr/bin/python
"""Documentation of the action plugin fastapi_ops.stack.wheelhouse (plugins/action)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: wheelhouse
short_description: Build (or reuse) the offline wheelhouse of an app release on the controller
version_added: 0.2.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - An action plugin that runs on the controller only. It turns an app source tree (or a
    wheel) into a wheelhouse - the app's wheel and a wheel of every dependency for the
    targets' Python and platform, packed in one tar - so that targets install offline.
  - A source tree is built with the app's own build backend - an sdist first (the
    project's include/exclude rules apply, package data stays), then the wheel from that
    sdist, like an installer would (C(python -m build)).
  - The fingerprint is a hash of what the sdist (or the given wheel) contains. The
    wheelhouse is cached under O(cache_dir) by fingerprint, target and extra
    requirements, so an unchanged app reuses it, and a new release id is made only when
    what the project ships changes.
  - Dependencies are downloaded with C(pip download --only-binary=:all:) for the target,
    then the requirements whose markers the target needs (pip evaluates markers for the
    controller's interpreter) are added until nothing is missing.
options:
  name:
    description: Name of the app, a folder of O(cache_dir).
    type: str
    required: true
  source:
    description: Source tree of the app (with a C(pyproject.toml)).
    type: path
  wheel:
    description: A prebuilt wheel of the app, instead of O(source).
    type: path
  cache_dir:
    description: Where wheelhouses are built and kept.
    type: path
    required: true
  python_version:
    description:
      - Full Python version of the targets, for example C(3.11.2) (markers such as
        C(python_full_version < "3.11.3") depend on it).
    type: str
    required: true
  platforms:
    description: Platform tags of the targets, as C(pip download --platform) takes them.
    type: list
    elements: str
    required: true
  extra_requirements:
    description: Requirement specifiers installed with the app.
    type: list
    elements: str
    default: []
  python:
    description:
      - Python on the controller with C(pip) and C(build).
      - Defaults to the interpreter running Ansible.
    type: path
  build:
    description:
      - Build label of the release id C(<version>+<build>). Empty, a hash of what the
        app ships (the fingerprint's first 10 hex digits), so a code change is a new
        release and a rerun is not.
    type: str
    default: ""
  release_id:
    description: The release id given outright, instead of C(<version>+<build>).
    type: str
    default: ""
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: The wheelhouse is a controller-side cache; it is built in check mode too.
  diff_mode:
    support: none
    details: Nothing on the targets changes.
  platform:
    platforms: posix
    details:
      - Runs on the controller only; O(python_version) and O(platforms) describe the targets.
notes:
  - Needs network access from the controller to the package index, unless cached.
  - Dependencies must exist as wheels for the target; a sdist-only dependency fails
    the build with pip's message.
requirements:
  - On the controller, C(build) and C(pip).
"""

EXAMPLES = r"""
- name: Build or reuse the wheelhouse of the app
  fastapi_ops.stack.wheelhouse:
    name: shop
    source: "{{ playbook_dir }}/../shop"
    cache_dir: "~/.cache/fastapi_ops.stack/wheelhouse"
    python_version: "3.11.2"
    platforms: [manylinux_2_36_x86_64, manylinux_2_17_x86_64, linux_x86_64]
  delegate_to: localhost
  run_once: true
  register: wheelhouse
"""

RETURN = r"""
path:
  description: Directory of the wheelhouse.
  type: str
  returned: success
archive:
  description:
    - The tar to copy to the targets - every wheel under C(wheels/) and, for a source
      build, the files of the sdist under C(source/) (an C(alembic.ini) beside the
      package, scripts), for the release's migrations and commands.
  type: str
  returned: success
wheel:
  description: File name of the app's wheel.
  type: str
  returned: success
  sample: shop-1.2.0-py3-none-any.whl
package:
  description: Distribution name of the app (normalised).
  type: str
  returned: success
version:
  description: Version of the app.
  type: str
  returned: success
fingerprint:
  description: sha256 of what the app's sdist (or wheel) contains.
  type: str
  returned: success
built:
  description: Whether this run built the wheelhouse (false when it was reused).
  type: bool
  returned: success
release_id:
  description: The release id, O(release_id) or C(<version>+<build>).
  type: str
  returned: success
  sample: 1.2.0+3f2a1c9d0b
source:
  description: Whether the archive holds the sdist's files under C(source/) (a source build).
  type: bool
  returned: success
"""
