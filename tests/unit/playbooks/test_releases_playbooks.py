"""playbooks/releases.yml and rollback.yml's check of rollback_to, as real ansible-playbook
runs on localhost against an app root laid out as the app role leaves it."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import add_release

from tools.playbook import run_playbook

STATE = {
    "current": "0.1+b3",
    "previous": "0.1+b2",
    "attempted": "0.1+b3",
    "history": [
        {"release": "0.1+b1", "activated": "2026-12-07T01:00:00"},
        {"release": "0.1+b2", "activated": "2026-12-07T02:00:00"},
        {"release": "0.1+b3", "activated": "2026-12-07T03:00:00"},
    ],
    "deploys": [
        {"at": "2026-12-07T03:00:05Z", "by": "alice@ci-7", "action": "deploy",
         "from": "0.1+b2", "to": "0.1+b3", "result": "ok"},
    ],
}  # fmt: skip


@pytest.fixture
def app_root(tmp_path):
    root = tmp_path / "srv"
    for release, revision in (("0.1+b1", "0001"), ("0.1+b2", None), ("0.1+b3", "0002")):
        add_release(root, release, revision=revision)
    (root / "releases.json").write_text(json.dumps(STATE))
    return root


@pytest.fixture
def inventory(tmp_path, app_root):
    path = tmp_path / "hosts.yml"
    path.write_text(
        "all:\n  children:\n    app:\n      hosts:\n        web1:\n"
        "          ansible_connection: local\n"
        f"          ansible_python_interpreter: {sys.executable}\n"
        f"          app_root: {app_root}\n"
    )
    return path


def test_releases_lists_each_kept_release_and_the_deploy_log(inventory, monkeypatch):
    monkeypatch.setenv("ANSIBLE_CALLBACK_RESULT_FORMAT", "json")  # one line per entry
    proc = run_playbook("releases.yml", inventory, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    print(proc.stdout[proc.stdout.find("ok: [web1] =>") :][:900])
    lines = [ln.strip().rstrip(",").strip('"') for ln in proc.stdout.splitlines()]
    rows = {ln.split()[0]: ln.split() for ln in lines if ln.startswith("0.1+")}
    assert rows["0.1+b3"][1:3] == ["current", "activated"] and rows["0.1+b3"][-1] == "0002"
    assert rows["0.1+b2"][1] == "previous" and rows["0.1+b2"][-1] == "unknown"
    assert rows["0.1+b1"][1] == "kept" and rows["0.1+b1"][-1] == "0001"
    assert "2026-12-07T03:00:05Z alice@ci-7 deploy 0.1+b2 -> 0.1+b3: ok" in lines


@pytest.mark.parametrize("release", ["0.1+b9", "../../etc"])
def test_rollback_to_a_release_not_kept_is_refused_before_the_lock(inventory, tmp_path, release):
    lock = tmp_path / "deploy.lock"
    proc = run_playbook(
        "rollback.yml", inventory, "-e", f"rollback_to={release}",
        "-e", f"deploy_lock_path={lock}", timeout=120,
    )  # fmt: skip
    out = " ".join(proc.stdout.split())
    assert proc.returncode != 0 and f"does not keep release {release}" in out, out[-2000:]
    assert "it keeps 0.1+b1, 0.1+b2, 0.1+b3. Nothing was changed" in out
    assert (
        not lock.exists() and json.loads((tmp_path / "srv" / "releases.json").read_text()) == STATE
    )


@pytest.mark.parametrize(
    ("hooks", "refusal"),
    [
        ('{"deploy_hooks_after_gate": ["hooks/smoke.yml"]}', '"hooks/smoke.yml" is not.'),
        ('{"deploy_hooks_before_switch": ["/nonexistent/x.yml"]}', '"/nonexistent/x.yml" is not.'),
        ('{"deploy_hooks_before_switch": "/etc/hostname"}', "are lists of task files."),
    ],
)
def test_deploy_refuses_hooks_that_are_not_task_files_before_the_lock(
    inventory, tmp_path, hooks, refusal
):
    lock = tmp_path / "deploy.lock"
    secrets = {
        "app_secret_key": "x" * 32,
        "postgresql_app_password": "p",
        "redis_app_password": "r",
    }
    proc = run_playbook(
        "deploy.yml", inventory, "-e", hooks, "-e", json.dumps(secrets),
        "-e", f"deploy_lock_path={lock}", timeout=120,
    )  # fmt: skip
    out = " ".join(proc.stdout.split())
    failed = out[out.find("Action failed: ") :]
    assert proc.returncode != 0 and f"{refusal} Nothing was changed." in failed, out[-2000:]
    assert "[ERROR]: Error rendering" not in out and not lock.exists()
