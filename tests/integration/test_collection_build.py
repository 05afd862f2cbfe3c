"""`ansible-galaxy collection build` makes a tarball that holds only what a collection user
needs (galaxy.yml's build_ignore), that installs, and whose roles and plugins resolve by
FQCN without this checkout on any path."""

import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks/main.yml").exists())
PLUGINS = sorted(
    (kind, p.stem)
    for kind, folder in (("module", "modules"), ("filter", "filter"), ("lookup", "lookup"))
    for p in (ROOT / "plugins" / folder).glob("*.py")
    if p.stem != "__init__"
)
# The top-level entries of the tarball: the collection's content, its user documentation,
# the example inventories and the reference app's source (the app role builds it by
# default), and the two files ansible-galaxy writes. Nothing of the checkout's development
# (molecule, tests, tools, bench, the lab, the controller's pyproject, dot files).
TOP_LEVEL = {
    "CHANGELOG.md",
    "FILES.json",
    "MANIFEST.json",
    "README.md",
    "app",
    "docs",
    "inventories",
    "meta",
    "playbooks",
    "plugins",
    "roles",
}
# No path of the tarball has one of these parts, at any depth.
DEV_PARTS = {"tests", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".git"}


def run(cmd, cwd, env):
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def clean_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("build")
    env = clean_env()
    run(["ansible-galaxy", "collection", "build", "--output-path", str(tmp), str(ROOT)], tmp, env)
    return next(tmp.glob("fastapi_ops-stack-*.tar.gz"))


@pytest.fixture(scope="module")
def tarball_paths(tarball):
    with tarfile.open(tarball) as tar:
        return [m.name.removeprefix("./").rstrip("/") for m in tar.getmembers()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory, tarball):
    tmp = tmp_path_factory.mktemp("collection")
    env = clean_env()
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


def test_tarball_top_level_is_what_a_user_needs(tarball_paths):
    assert {p.split("/")[0] for p in tarball_paths if p} == TOP_LEVEL


def test_tarball_holds_no_dev_paths(tarball_paths):
    dev = [
        p
        for p in tarball_paths
        if DEV_PARTS & set(p.split("/"))
        or any(part.endswith(".egg-info") for part in p.split("/"))
        or p.endswith(".pyc")
    ]
    assert not dev, dev


def test_tarball_ships_the_reference_app_without_its_tests(tarball_paths):
    # app_source_dir defaults to {{ role_path }}/../../app: the installed collection builds it.
    for path in ("app/pyproject.toml", "app/README.md", "app/app/main.py", "app/app/alembic.ini"):
        assert path in tarball_paths, path
    assert "inventories/example/hosts.yml" in tarball_paths
    assert not [p for p in tarball_paths if p.startswith("inventories/lab")]


def test_installed_collection_has_no_dev_files(installed):
    tmp, _env = installed
    root = tmp / "collections/ansible_collections/fastapi_ops/stack"
    assert (root / "roles/common/tasks/main.yml").exists()
    for dev in (".venv", "molecule", "collections", "tools", "tests", "bench", ".git"):
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


def test_role_default_reads_the_installed_roles(installed):
    """The lookup finds the roles beside its own plugin folder in an installed collection."""
    tmp, env = installed
    out = run(
        [
            "ansible",
            "localhost",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "msg=port-{{ lookup('fastapi_ops.stack.role_default', 'app_port', role='app') }}",
        ],
        tmp,
        env,
    )
    app_port = yaml.safe_load((ROOT / "roles/app/defaults/main.yml").read_text())["app_port"]
    assert f"port-{app_port}" in out, out
