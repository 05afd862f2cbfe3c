"""Run the scenario's playbook against the converged machines with bad inputs: it must
fail in the preflight, with the numbers or the variable in the message, before any host
changes. And a --check --diff run on the converged machines must be clean."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import PROJECT, SCENARIO, inventory_file, psql

testinfra_hosts = ["data-db"]


def playbook(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    return subprocess.run(
        ["ansible-playbook", "-i", inventory_file(), str(SCENARIO / "converge.yml"), *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def recap(stdout: str) -> dict[str, dict[str, int]]:
    hosts = {}
    for host, counters in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", stdout, re.M):
        hosts[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counters)}
    return hosts


def show(host, name: str) -> str:
    return psql(host, f"SHOW {name}")


def assert_nothing_changed(result):
    counts = recap(result.stdout)
    assert counts, result.stdout[-2000:]
    assert all(c["changed"] == 0 for c in counts.values()), counts


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["-e", "postgresql_max_connections=20"],
            [
                r"PostgreSQL connection budget exceeded: \d+ connections needed"
                r" > postgresql_max_connections 20",
                r"data-app: \d+ workers \(auto from \d+ vCPU/\d+ MB\)"
                r" x \(app_db_pool_size 5 \+ app_db_max_overflow 5\)",
                r"\+ postgresql_superuser_reserved_connections 3"
                r" \+ postgresql_monitoring_connections 3",
                r"raise postgresql_max_connections to at least \d+",
            ],
        ),
        (["-e", "redis_maxmemory_policy=sometimes"], [r"redis_maxmemory_policy", r"sometimes"]),
        (
            ["-e", "app_db_pool_size=-1"],
            [r"data-app: app_db_pool_size must be an integer >= 1, got -1"],
        ),
        (["-e", "postgresql_max_connections=lots"], [r"postgresql_max_connections", r"int"]),
    ],
    ids=["budget", "redis-policy", "negative-pool", "wrong-type"],
)
def test_bad_input_fails_before_any_change(host, extra, expected):
    before = show(host, "max_connections")
    result = playbook(*extra)
    output = re.sub(r"\s+", " ", result.stdout + result.stderr)
    assert result.returncode != 0, output[-2000:]
    for pattern in expected:
        assert re.search(pattern, output), (pattern, output[-3000:])
    assert_nothing_changed(result)
    assert show(host, "max_connections") == before


def postmaster_pid(host) -> str:
    return host.check_output("systemctl show -p MainPID --value postgresql@15-main")


def test_changed_settings_are_applied_and_restored(host):
    """The role skips settings already in place: a real difference must still be applied
    (a restart only when the setting needs one), and a setting dropped is reset."""
    before = {name: show(host, name) for name in ("work_mem", "max_wal_senders")}
    pid = postmaster_pid(host)

    changed = playbook("-e", '{"postgresql_settings": {"work_mem": "7MB"}}')
    assert changed.returncode == 0, changed.stdout[-3000:]
    assert show(host, "work_mem") == "7MB"
    assert postmaster_pid(host) == pid, "work_mem needs a reload, not a restart"

    changed = playbook("-e", '{"postgresql_settings": {"max_wal_senders": 7}}')
    assert changed.returncode == 0, changed.stdout[-3000:]
    assert show(host, "max_wal_senders") == "7"
    assert show(host, "work_mem") == before["work_mem"]
    assert postmaster_pid(host) != pid, "max_wal_senders needs a restart"

    restored = playbook()
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert {name: show(host, name) for name in before} == before


def test_check_mode_on_converged_hosts_is_clean():
    result = playbook("--check", "--diff")
    assert result.returncode == 0, result.stdout[-3000:]
    counts = recap(result.stdout)
    assert all(c["failed"] == 0 for c in counts.values()), counts
    assert_nothing_changed(result)
