"""Make ansible_collections.fastapi_ops.stack and the checkout's tools/ (tools.dashboards)
importable from the checkout."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "collections"
for path in (COLLECTIONS, REPO):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


class ModuleResult(dict):
    @property
    def failed(self) -> bool:
        return bool(self.get("failed"))


@pytest.fixture
def run_module(capsys):
    """Run a module's main() in-process the way AnsibleModule sees it; return its result.

    ansible-core 2.19 reads arguments through ansible.module_utils.testing.patch_module_args
    (setting basic._ANSIBLE_ARGS alone no longer carries the serialization profile).
    """

    def run(main, args, check_mode=False, diff=False):
        full = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)
        capsys.readouterr()
        with patch_module_args(full), pytest.raises(SystemExit):
            main()
        out = capsys.readouterr().out
        return ModuleResult(json.loads(out))

    return run
