"""Shared helpers for the cluster scenario: the controller drives playbooks and load."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))  # tools.loadgen

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
APP_HOSTS = ["cl-app1", "cl-app2"]


def machine(name):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=INVENTORY)


def address(name):
    return machine(name).ansible.get_variables()["ansible_host"]


def playbook(name, *args, timeout=1200):
    """Run one of the collection's playbooks against the cluster, as a user would."""
    proc = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, str(ROOT / "playbooks" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    return proc


def release_of(app_host):
    """The release an app host serves, asked from the lb (the app port is closed to us)."""
    out = machine("cl-lb").check_output(
        f"curl -sf --max-time 5 http://{address(app_host)}:8000/version"
    )
    import json

    return json.loads(out)["release"]


@pytest.fixture(scope="session")
def lb_url():
    return f"https://{address('cl-lb')}"
