"""private_address: the rule every role uses to find a peer."""

import subprocess
from pathlib import Path

from ansible_collections.fastapi_ops.stack.plugins.filter.private_address import private_address

ROOT = Path(__file__).resolve().parents[4]


def test_prefers_private_address_then_ansible_host_then_name():
    hostvars = {
        "a": {"private_address": "10.0.0.1", "ansible_host": "203.0.113.1"},
        "b": {"ansible_host": "10.0.0.2"},
        "c": {},
    }
    assert private_address("a", hostvars) == "10.0.0.1"
    assert private_address("b", hostvars) == "10.0.0.2"
    assert private_address("c", hostvars) == "c"
    assert private_address("unknown", hostvars) == "unknown"


def test_works_on_real_hostvars(tmp_path):
    """Through Ansible's own HostVars (lazy, templated), as the roles call it."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    lb:\n      hosts:\n"
        "        lb1: {ansible_host: 203.0.113.9, private_address: '{{ \"10.0.0.\" ~ 9 }}'}\n"
        "        lb2: {ansible_host: 10.0.0.8}\n"
    )
    proc = subprocess.run(
        [
            "ansible",
            "-i",
            str(inventory),
            "localhost",
            "-m",
            "debug",
            "-a",
            "msg={{ groups['lb'] | map('fastapi_ops.stack.private_address', hostvars)"
            " | join(',') }}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "10.0.0.9,10.0.0.8" in proc.stdout
