"""Run the scenario's playbook against the converged machines with bad inputs: it must
fail in the preflight, with the numbers or the variable in the message, before any host
changes. And a --check --diff run on the converged machines must be clean.

The cross-role rules (the PostgreSQL connection budget) are checked by
playbooks/preflight.yml only, which site.yml and deploy.yml import: it runs here against
the scenario's machines, with the role defaults and with explicit values."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import PROJECT, SCENARIO, inventory_file, psql

testinfra_hosts = ["data-db"]


def playbook(*args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    path = path or str(SCENARIO / "converge.yml")
    return subprocess.run(
        ["ansible-playbook", "-i", inventory_file(), path, *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def preflight(*args: str) -> subprocess.CompletedProcess[str]:
    """playbooks/preflight.yml, the cross-tier checks site.yml and deploy.yml run first."""
    return playbook(*args, path=str(PROJECT / "playbooks" / "preflight.yml"))


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


def assert_refused_unchanged(host, run, extra, expected):
    """`run(*extra)` fails with every `expected` pattern in its output, and changes nothing."""
    before = show(host, "max_connections")
    result = run(*extra)
    output = re.sub(r"\s+", " ", result.stdout + result.stderr)
    assert result.returncode != 0, output[-2000:]
    for pattern in expected:
        assert re.search(pattern, output), (pattern, output[-3000:])
    assert_nothing_changed(result)
    assert show(host, "max_connections") == before


BUDGET = (
    r"data-db: Connection budget fits: (?P<needed>\d+) of postgresql_max_connections {max}\."
    r" App hosts \(1\): data-app: (?P<workers>\d+) workers \(auto from \d+ vCPU/\d+ MB\)"
    r" x \(app_db_pool_size 5 \+ app_db_max_overflow 5\) = (?P<app>\d+);"
    r" app total (?P=app) \+ postgresql_superuser_reserved_connections 3"
    r" \+ postgresql_monitoring_connections 3 = (?P=needed)\."
)


@pytest.mark.parametrize(
    ("extra", "max_connections"),
    [([], 100), (["-e", "postgresql_max_connections=150"], 150)],
    ids=["role-defaults", "explicit-max-connections"],
)
def test_budget_fits(host, extra, max_connections):
    """Without postgresql_max_connections in the inventory the postgresql role's default
    (100) is checked; given, its value. The app side comes from the app role's defaults
    (pool 5 + overflow 5, workers auto from data-app's facts), the monitoring and reserved
    connections from the postgresql role's (3 and 3)."""
    before = show(host, "max_connections")
    result = preflight(*extra)
    output = re.sub(r"\s+", " ", result.stdout + result.stderr)
    assert result.returncode == 0, output[-3000:]
    match = re.search(BUDGET.format(max=max_connections), output)
    assert match, output[-3000:]
    workers, needed = int(match["workers"]), int(match["needed"])
    assert int(match["app"]) == workers * (5 + 5)
    assert needed == workers * (5 + 5) + 3 + 3 <= max_connections
    assert_nothing_changed(result)
    assert show(host, "max_connections") == before


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["-e", "postgresql_max_connections=20"],
            [
                r"data-db: PostgreSQL connection budget exceeded: \d+ connections needed"
                r" > postgresql_max_connections 20",
                r"data-app: \d+ workers \(auto from \d+ vCPU/\d+ MB\)"
                r" x \(app_db_pool_size 5 \+ app_db_max_overflow 5\)",
                r"\+ postgresql_superuser_reserved_connections 3"
                r" \+ postgresql_monitoring_connections 3",
                r"raise postgresql_max_connections to at least \d+",
            ],
        ),
        (
            ["-e", "app_db_pool_size=-1"],
            [r"data-app: app_db_pool_size must be an integer >= 1, got -1"],
        ),
        (
            ["-e", "app_workers=many"],
            [r"data-app: app_workers must be auto or an integer >= 1, got many"],
        ),
    ],
    ids=["budget", "negative-pool", "workers-not-integer"],
)
def test_budget_fails_before_any_change(host, extra, expected):
    assert_refused_unchanged(host, preflight, extra, expected)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["-e", "redis_maxmemory_policy=sometimes"], [r"redis_maxmemory_policy", r"sometimes"]),
        (["-e", "postgresql_max_connections=lots"], [r"postgresql_max_connections", r"int"]),
    ],
    ids=["redis-policy", "wrong-type"],
)
def test_bad_input_fails_before_any_change(host, extra, expected):
    assert_refused_unchanged(host, playbook, extra, expected)


def postmaster_pid(host) -> str:
    return host.check_output("systemctl show -p MainPID --value postgresql@15-main")


def test_changed_settings_are_applied_and_restored(host):
    """The role skips settings already in place: a real difference must still be applied
    (a restart only when the setting needs one), and a setting dropped is reset. The runs
    are converge.yml's PostgreSQL play alone (tests/postgresql.yml), all they change."""
    before = {name: show(host, name) for name in ("work_mem", "max_wal_senders")}
    pid = postmaster_pid(host)
    play = str(SCENARIO / "tests" / "postgresql.yml")

    changed = playbook("-e", '{"postgresql_settings": {"work_mem": "7MB"}}', path=play)
    assert changed.returncode == 0, changed.stdout[-3000:]
    assert show(host, "work_mem") == "7MB"
    assert postmaster_pid(host) == pid, "work_mem needs a reload, not a restart"

    changed = playbook("-e", '{"postgresql_settings": {"max_wal_senders": 7}}', path=play)
    assert changed.returncode == 0, changed.stdout[-3000:]
    assert show(host, "max_wal_senders") == "7"
    assert show(host, "work_mem") == before["work_mem"]
    assert postmaster_pid(host) != pid, "max_wal_senders needs a restart"

    restored = playbook(path=play)
    assert restored.returncode == 0, restored.stdout[-3000:]
    assert {name: show(host, name) for name in before} == before


def test_check_mode_on_converged_hosts_is_clean():
    result = playbook("--check", "--diff")
    assert result.returncode == 0, result.stdout[-3000:]
    counts = recap(result.stdout)
    assert all(c["failed"] == 0 for c in counts.values()), counts
    assert_nothing_changed(result)
