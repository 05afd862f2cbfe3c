"""Action plugin fastapi_ops.stack.wheelhouse: runs on the controller only.

The documentation is in plugins/modules/wheelhouse.py."""

from __future__ import annotations

import sys
from pathlib import Path

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible_collections.fastapi_ops.stack.plugins.plugin_utils import wheelhouse

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "source": {"type": "path"},
    "wheel": {"type": "path"},
    "cache_dir": {"type": "path", "required": True},
    "python_version": {"type": "str", "required": True},
    "platforms": {"type": "list", "elements": "str", "required": True},
    "extra_requirements": {"type": "list", "elements": "str", "default": []},
    "python": {"type": "path"},
    "build": {"type": "str", "default": ""},
    "release_id": {"type": "str", "default": ""},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(
            argument_spec=ARGUMENT_SPEC,
            mutually_exclusive=[["source", "wheel"]],
            required_one_of=[["source", "wheel"]],
        )
        try:
            built = wheelhouse.ensure(
                name=args["name"],
                cache_dir=Path(args["cache_dir"]),
                target=wheelhouse.Target(args["python_version"], tuple(args["platforms"])),
                python=args["python"] or sys.executable,
                source=Path(args["source"]) if args["source"] else None,
                wheel=Path(args["wheel"]) if args["wheel"] else None,
                extra_requirements=tuple(args["extra_requirements"]),
            )
        except wheelhouse.WheelhouseError as exc:
            raise AnsibleActionFail(str(exc)) from None
        # A local cache, not managed state: built in check mode too, so --check shows
        # the real release.
        result.update(
            built.as_dict(),
            release_id=args["release_id"] or built.release_id(args["build"]),
            changed=built.built,
        )
        return result
