"""`ansible-galaxy collection build` makes a tarball that installs, and whose roles and
plugins resolve by FQCN without this checkout on any path."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks/main.yml").exists())
PLUGINS = sorted(
    (kind, p.stem)
    for kind, folder in (("module", "modules"), ("filter", "filter"))
    for p in (ROOT / "plugins" / folder).glob("*.py")
    if p.stem != "__init__"
)


def run(cmd, cwd, env):
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collection")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    run(["ansible-galaxy", "collection", "build", "--output-path", str(tmp), str(ROOT)], tmp, env)
    tarball = next(tmp.glob("fastapi_ops-stack-*.tar.gz"))
    dest = tmp / "collections"
    run(
        [
            "ansible-galaxy",
            "collection",
            "install",
            "--offline",
            "--no-deps",
            "-p",
            str(dest),
            str(tarball),
        ],
        tmp,
        env,
    )
    # Only the installed copy: no ./collections symlink, no checkout on any path.
    (tmp / "ansible.cfg").write_text(f"[defaults]\ncollections_path = {dest}\n")
    env["ANSIBLE_CONFIG"] = str(tmp / "ansible.cfg")
    return tmp, env


def test_tarball_leaves_out_dev_files(installed):
    tmp, _env = installed
    root = tmp / "collections/ansible_collections/fastapi_ops/stack"
    assert (root / "roles/common/tasks/main.yml").exists()
    for dev in (".venv", "molecule", "collections", "tools", ".git"):
        assert not (root / dev).exists(), dev


@pytest.mark.parametrize("role", ROLES)
def test_role_resolves_by_fqcn(installed, role):
    tmp, env = installed
    playbook = tmp / f"use_{role}.yml"
    playbook.write_text(
        f"- hosts: localhost\n  gather_facts: false\n  roles:\n    - fastapi_ops.stack.{role}\n"
    )
    run(["ansible-playbook", "--syntax-check", str(playbook)], tmp, env)


@pytest.mark.parametrize(("kind", "name"), PLUGINS)
def test_plugin_documented_by_fqcn(installed, kind, name):
    tmp, env = installed
    out = run(["ansible-doc", "-t", kind, f"fastapi_ops.stack.{name}"], tmp, env)
    assert f"fastapi_ops.stack.{name}" in out
