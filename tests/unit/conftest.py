"""Make ansible_collections.fastapi_ops.stack and the checkout's tools/ (tools.dashboards)
importable from the checkout."""

from __future__ import annotations

import json
import os
import subprocess
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


@pytest.fixture
def ansible_playbook(tmp_path):
    """Run the venv's ansible-playbook with the checkout's ansible.cfg (its temporary files
    under tmp_path) on an inventory and a playbook; return the CompletedProcess."""

    def run(inventory: Path, playbook: Path, *args: str) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(tmp_path / ".ansible-tmp"),
        }
        return subprocess.run(
            [
                str(Path(sys.executable).parent / "ansible-playbook"),
                "-i",
                str(inventory),
                str(playbook),
                *args,
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=300,
            check=False,
        )

    return run


@pytest.fixture
def run_tasks(tmp_path, ansible_playbook):
    """Run these tasks on localhost (connection local, with `host_vars`) with these extra
    variables (passed as JSON, so any string arrives as it is) and ansible-playbook
    arguments; `groups` ({name: {host: variables}}) adds groups to the inventory, whose
    other hosts are never contacted (a group may hold localhost). Returns the
    CompletedProcess (output in .stdout)."""

    def run(
        tasks: list[dict],
        extra_vars: dict,
        *args: str,
        groups: dict[str, dict] | None = None,
        host_vars: dict | None = None,
    ) -> subprocess.CompletedProcess:
        play = [{"name": "Unit test", "hosts": "localhost", "gather_facts": False, "tasks": tasks}]
        (tmp_path / "play.yml").write_text(json.dumps(play))
        (tmp_path / "vars.json").write_text(json.dumps(extra_vars))
        local = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            **(host_vars or {}),
        }
        children = {name: {"hosts": hosts} for name, hosts in (groups or {}).items()}
        (tmp_path / "hosts.json").write_text(
            json.dumps({"all": {"hosts": {"localhost": local}, "children": children}})
        )
        return ansible_playbook(
            tmp_path / "hosts.json",
            tmp_path / "play.yml",
            "-e",
            f"@{tmp_path / 'vars.json'}",
            *args,
        )

    return run


def add_release(app_root: Path, name: str, installed: bool = True, revision: str | None = None):
    """A release directory as the app role leaves it: its virtualenv (complete once
    installed.txt is written) and the database revision its migrations reached."""
    path = app_root / "releases" / name
    (path / "venv").mkdir(parents=True)
    if installed:
        (path / "venv" / "installed.txt").write_text("app==0.1\n")
    if revision:
        (path / ".revision").write_text(revision + "\n")
