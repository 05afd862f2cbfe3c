"""Firewall and argument validation, seen from the controller and across lab machines."""

import os
import subprocess
from pathlib import Path

import pytest
import testinfra

testinfra_hosts = ["common-a"]  # the tests below drive both machines themselves
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]


def machine(name):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=INVENTORY)


def address(host):
    return host.ansible.get_variables()["ansible_host"]


def can_connect(host, addr, port):
    probe = f"import socket; socket.create_connection(('{addr}', {port}), timeout=2)"
    return host.run(f'python3 -c "{probe}"').rc == 0


@pytest.fixture(scope="module")
def peers():
    """Listeners on 8080 (never opened) and 8081 (opened to group app) on both machines."""
    hosts = {n: machine(n) for n in ("common-a", "common-b")}
    for h in hosts.values():
        for port in (8080, 8081):
            h.run(f"systemctl stop probe-{port}")
            h.check_output(
                f"systemd-run --unit=probe-{port} --collect python3 -m http.server {port}"
            )
        h.check_output(
            "for i in $(seq 50); do ss -ltn | grep -q ':8081 ' && exit 0; sleep 0.1; done; exit 1"
        )
    yield hosts
    for h in hosts.values():
        h.run("systemctl stop probe-8080 probe-8081")


def test_firewall_drops_unopened_port_from_peer(peers):
    a, b = peers["common-a"], peers["common-b"]
    # Opened to group app only: common-a (app) reaches common-b:8081, not the other way.
    assert can_connect(a, address(b), 8081)
    assert not can_connect(b, address(a), 8081)
    # Never opened: dropped in both directions.
    assert not can_connect(a, address(b), 8080)
    assert not can_connect(b, address(a), 8080)
    # The listener is really there: the drop is the firewall's doing.
    assert can_connect(b, "127.0.0.1", 8080)


def test_ssh_only_from_the_controller_and_the_listed_sources(peers):
    a, b = peers["common-a"], peers["common-b"]
    # These tests reach both machines by SSH from the controller, which is never dropped.
    assert can_connect(a, address(b), 22)  # common-a is in common-b's list
    assert not can_connect(b, address(a), 22)  # common-a lists nobody
    assert can_connect(a, "127.0.0.1", 22)  # sshd is there: the drop is the firewall's


def test_wrong_type_fails_in_argument_validation(host):
    playbook = Path(__file__).parent.parent / "bad_vars.yml"
    before = host.check_output("md5sum /etc/nftables.conf")
    proc = subprocess.run(
        [
            "ansible-playbook",
            "-i",
            INVENTORY,
            str(playbook),
            "-e",
            '{"common_firewall_ssh_ports": "ssh"}',
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "common_firewall_ssh_ports" in out
    assert "Validating arguments against arg spec" in out
    assert "Install base packages" not in out  # failed before the first task
    assert host.check_output("md5sum /etc/nftables.conf") == before


def test_check_mode_on_converged_hosts_is_clean():
    playbook = Path(__file__).parent.parent / "converge.yml"
    proc = subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, str(playbook), "--check", "--diff"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    recap = proc.stdout[proc.stdout.rindex("PLAY RECAP") :]
    assert recap.count("changed=0") == 2 and "failed=0" in recap, recap
