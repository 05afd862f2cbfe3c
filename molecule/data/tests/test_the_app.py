"""The app on data-app, against data-db's PostgreSQL (over TLS) and Redis.

The tests at the end deploy further releases (tests/redeploy.yml) and depend on the order
of this file: a release under load, then one more that removes the oldest. (A config
change reloaded without a restart is a drill of the cluster scenario.) This file runs
after test_preflight.py, whose check mode wants the converged release.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from conftest import SCENARIO, inventory_file, lab_host

sys.path.insert(0, str(Path(__file__).parents[3]))
from tools.api_token import token_for  # noqa: E402
from tools.loadgen import DRILL_RATE, Load  # noqa: E402
from tools.playbook import run_playbook  # noqa: E402

NAME = "fastapi-ops-app"
ROOT = f"/srv/{NAME}"
ENV_FILE = f"/etc/{NAME}/{NAME}.env"
GUNICORN_CONF = f"/etc/{NAME}/gunicorn.conf.py"
SOCK = f"/run/{NAME}.sock"

testinfra_hosts = ["data-app"]


def curl(host, path: str, unix: bool = True) -> tuple[int, str]:
    target = (
        f"--unix-socket {SOCK} http://localhost{path}"
        if unix
        else f"http://{address(host)}:8000{path}"
    )
    out = host.check_output(f"curl -s -o /dev/stdout -w '\\n%{{http_code}}' {target}")
    body, _unused, code = out.rpartition("\n")
    return int(code), body


def create_product(host, sku: str, token: str | None) -> int:
    """POST a product over the unix socket, with the token when given: the status."""
    payload = json.dumps({"sku": sku, "name": "load", "category": "test", "price": "1.00"})
    auth = f"-H 'Authorization: Bearer {token}' " if token else ""
    out = host.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}}' --unix-socket {SOCK} "
        f"-H 'Content-Type: application/json' {auth}-d '{payload}' http://localhost/api/v1/products"
    )
    return int(out)


@pytest.fixture(scope="module")
def write_token() -> str:
    """A products:write token from playbooks/token.yml (the role's entry point `token`)."""
    return token_for(inventory_file(), "data-scenario")


def address(host) -> str:
    return host.check_output("hostname -I").split()[0]


def gunicorn_setting(host, name: str) -> int:
    """An integer setting of the Gunicorn config file the role wrote."""
    text = host.file(GUNICORN_CONF).content_string
    return int(re.search(rf"^{name} = (\d+)$", text, re.MULTILINE).group(1))


def main_pid(host) -> int:
    return int(host.check_output(f"systemctl show -p MainPID --value {NAME}.service"))


def worker_pids(host) -> list[int]:
    out = host.check_output(f"pgrep -P {main_pid(host)} || true")
    return [int(p) for p in out.split()]


def state(host) -> dict:
    return json.loads(host.file(f"{ROOT}/releases.json").content_string)


def playbook(*extra: str) -> str:
    """tests/redeploy.yml (the app role alone) with extra vars: its output."""
    run = run_playbook(SCENARIO / "tests" / "redeploy.yml", inventory_file(), *extra, timeout=400)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return run.stdout


def test_units_active_and_enabled(host):
    for unit in (f"{NAME}.socket", f"{NAME}.service"):
        service = host.service(unit)
        assert service.is_running, unit
        assert service.is_enabled, unit


def test_socket_activation_owns_the_listeners(host):
    assert host.socket(f"tcp://{address(host)}:8000").is_listening
    assert host.socket(f"unix://{SOCK}").is_listening
    listeners = host.check_output(f"systemctl show -p Listen --value {NAME}.socket")
    assert f"{address(host)}:8000" in listeners and SOCK in listeners


def test_system_user_and_config_file(host):
    user = host.user(NAME)
    assert user.shell == "/usr/sbin/nologin"
    env_file = host.file(ENV_FILE)
    assert env_file.user == "root" and env_file.group == NAME and env_file.mode == 0o640
    assert host.file(f"{ROOT}/current").linked_to.startswith(f"{ROOT}/releases/")
    assert host.file(f"{ROOT}/current/venv").user == "root"


def test_worker_count_matches_configuration(host):
    configured = gunicorn_setting(host, "workers")
    assert configured >= 1
    deadline = time.time() + 20
    while len(worker_pids(host)) != configured and time.time() < deadline:
        time.sleep(1)
    assert len(worker_pids(host)) == configured


def test_workers_use_dev_shm_tmpfs(host):
    for pid in worker_pids(host):
        fds = host.check_output(f"ls -l /proc/{pid}/fd")
        assert "/dev/shm/wgunicorn-" in fds, pid
        mounts = host.check_output(f"grep ' /dev/shm ' /proc/{pid}/mountinfo")
        assert " - tmpfs " in mounts


def test_keepalive_longer_than_nginx(host):
    # Nginx's upstream keepalive_timeout is 5 s: Nginx, never the app, closes idle ones.
    assert gunicorn_setting(host, "keepalive") == 10 > 5


def test_ready_through_both_sockets(host):
    for unix in (True, False):
        code, body = curl(host, "/health/ready", unix=unix)
        assert code == 200, body
        assert json.loads(body)["checks"] == {"database": "ok", "redis": "ok"}


def test_version_is_the_current_release(host):
    code, body = curl(host, "/version")
    assert code == 200
    current = host.file(f"{ROOT}/current").linked_to.rsplit("/", 1)[1]
    assert json.loads(body)["release"] == current == state(host)["current"]


def test_migrations_at_head(host):
    heads = host.check_output(f"cd /tmp && {ROOT}/current/venv/bin/fastapi-ops-app-migrate heads")
    head = heads.split()[0]
    query = "SELECT version_num FROM alembic_version"
    db = lab_host("data-db").check_output(
        f"cd / && runuser -u postgres -- psql -d app -tAc '{query}'"
    )
    assert db.strip() == head


def test_systemd_analyze_security(host):
    out = host.check_output(f"systemd-analyze security --no-pager {NAME}.service")
    score = float(re.search(r"Overall exposure level for \S+: ([0-9.]+)", out).group(1))
    print(f"systemd-analyze security {NAME}.service: {score}")
    assert score <= 2.0


def test_firewall_dropin_limits_app_port(host):
    dropin = host.file(f"/etc/nftables.d/{NAME}.nft").content_string
    assert "8000" in dropin
    ruleset = host.check_output("nft list ruleset")
    assert "8000" in ruleset


def test_writes_need_the_token_of_the_token_entry_point(host, write_token):
    sku = f"TOKEN-{time.time_ns()}"
    assert create_product(host, sku, None) == 401
    assert create_product(host, sku, write_token) == 201


def test_new_release_under_load_fails_no_request(host, write_token):
    before = state(host)["current"]
    old_master = main_pid(host)
    code, body = curl(host, "/api/v1/products/1")
    if code == 404:
        assert create_product(host, "LOAD-1", write_token) == 201
    # A client that never retries, on 32 keep-alive connections.
    load = Load(
        [f"http://{address(host)}:8000/api/v1/products/1"],
        connections=32,
        duration=300,
        rate=DRILL_RATE,
    )
    load.start()
    time.sleep(2)
    playbook("-e", "app_build=test2")
    time.sleep(2)
    result = load.stop()
    print(f"load during redeploy: {json.dumps(result.summary())}")
    assert result.sent > 1000
    assert result.bad == 0, result.summary()
    after = state(host)
    assert after["current"] == "0.1.0+test2" and after["previous"] == before
    assert json.loads(curl(host, "/version")[1])["release"] == "0.1.0+test2"
    assert not host.file(f"/proc/{old_master}").exists, "old Gunicorn master still running"
    assert main_pid(host) != old_master


def test_third_release_removes_the_oldest(host):
    first = state(host)["history"][0]["release"]
    playbook("-e", "app_build=test3")
    releases = sorted(host.file(f"{ROOT}/releases").listdir())
    # app_keep_releases=1: the current and one more (the previous).
    assert releases == ["0.1.0+test2", "0.1.0+test3"], releases
    assert first not in releases
    assert state(host)["previous"] == "0.1.0+test2"
