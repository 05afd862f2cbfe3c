"""Secret rotation under the mixed load of the drills (playbooks/rotate-secrets.yml): the
app's database password, its Redis password and its signing key change while a client
that never retries reads and writes through Nginx; 0 failed requests. Then what each
server accepts: PostgreSQL the new password only, Redis both until the finishing run,
the app tokens of the old key until the finishing run drops it, and of the new key.

Runs last: it changes the lab's secrets, and gives the lab its own back at the end (the
lab's values again, the rotated ones still accepted as the previous ones), so that the
session's write token and the inventory's passwords work for whatever runs after it."""

import json
import os
import secrets
import tempfile
from contextlib import contextmanager

import httpx
import pytest
from conftest import (
    APP_HOSTS,
    CACHE,
    DB,
    INVENTORY,
    LB,
    address,
    assert_no_failures,
    auth_headers,
    figures,
    machine,
    mixed_targets,
    new_product,
    playbook,
    record,
    token_for,
    under_load,
)

testinfra_hosts = [LB]
ENV_FILE = "/etc/fastapi-ops-app/fastapi-ops-app.env"
APP_PYTHON = "/srv/fastapi-ops-app/current/venv/bin/python"
# Opens one connection as the app's role, from an app host (pg_hba lets only those in),
# with the release's asyncpg; the password comes from the environment.
CONNECT = (
    "import asyncio, os, asyncpg\n"
    "async def main():\n"
    "    c = await asyncpg.connect(host=os.environ['DB_HOST'], user='app', database='app',\n"
    "                              password=os.environ['DB_PASSWORD'], timeout=5)\n"
    "    print(await c.fetchval('SELECT 1'))\n"
    "    await c.close()\n"
    "asyncio.run(main())\n"
)


def lab_secrets():
    """The inventory's own values (inventories/lab/group_vars/all.yml)."""
    variables = machine(APP_HOSTS[0]).backend.get_variables()
    return {
        name: variables[name]
        for name in ("postgresql_app_password", "redis_app_password", "app_secret_key")
    }


@contextmanager
def extra_vars_file(values):
    """The secrets as an extra-vars file only this user can read, removed afterwards."""
    fd, path = tempfile.mkstemp(prefix="rotate-secrets-", suffix=".json")  # 0600
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(values, out)
        os.chmod(path, 0o600)
        yield path
    finally:
        os.unlink(path)


def rotate(current, previous=None):
    """Run the rotation with these values, and the previous ones as the *_previous (a
    finishing run without them)."""
    values = dict(current)
    previous = previous or {}
    values["app_database_password_previous"] = previous.get("postgresql_app_password", "")
    values["redis_app_password_previous"] = previous.get("redis_app_password", "")
    values["app_secret_keys_previous"] = (
        [previous["app_secret_key"]] if "app_secret_key" in previous else []
    )
    with extra_vars_file(values) as path:
        return playbook("rotate-secrets.yml", "-e", f"@{path}")


def db_accepts(password):
    """Whether PostgreSQL lets the app's role in with this password (False: refused for it)."""
    run = machine(APP_HOSTS[0]).run(
        "DB_HOST=%s DB_PASSWORD=%s %s -c %s", address(DB), password, APP_PYTHON, CONNECT
    )
    if run.rc == 0:
        return True
    assert "InvalidPasswordError" in run.stderr, run.stderr[-2000:]
    return False


def redis_accepts(password):
    run = machine(CACHE).run(
        "REDISCLI_AUTH=%s redis-cli -e --tls --cacert /etc/redis/tls/ca.crt -p 6380"
        " --user app PING",
        password,
    )
    return run.rc == 0 and run.stdout.strip() == "PONG"


def write_status(lb_url, token):
    with httpx.Client(verify=False, timeout=10) as client:
        resp = client.post(
            f"{lb_url}/api/v1/products", json=new_product(), headers=auth_headers(token)
        )
        return resp.status_code


def main_pids():
    return {
        h: machine(h).check_output("systemctl show -p MainPID --value fastapi-ops-app")
        for h in APP_HOSTS
    }


def assert_ok(proc):
    assert proc.returncode == 0, proc.stdout[-4000:]


@pytest.fixture(scope="module")
def rotated():
    """New values for the three secrets; afterwards the lab's own are given back (the
    rotated ones stay accepted as the previous ones: a finishing run is not needed here)."""
    new = {
        "postgresql_app_password": "rot-db-" + secrets.token_urlsafe(24),
        "redis_app_password": "rot-redis-" + secrets.token_urlsafe(24),
        "app_secret_key": "rot-key-" + secrets.token_urlsafe(36),
    }
    yield new
    assert_ok(rotate(lab_secrets(), previous=new))


def test_secret_rotation_under_load_fails_no_request(lb_url, product_id, write_token, rotated):
    old = lab_secrets()
    pids = main_pids()
    targets = mixed_targets(lb_url, product_id, write_token)

    # A new password without its previous one is refused before anything changes.
    refused = rotate(rotated)
    assert refused.returncode != 0
    assert "would be refused between two steps" in refused.stdout, refused.stdout[-3000:]
    assert db_accepts(old["postgresql_app_password"]) and redis_accepts(old["redis_app_password"])

    proc, load, wall = under_load(targets, lambda: rotate(rotated, previous=old))
    record("secret_rotation", **figures(load, wall))
    assert_ok(proc)
    assert_no_failures(load)
    # Reloaded, never restarted.
    assert main_pids() == pids

    # PostgreSQL: the new password only. Redis: both, until the finishing run.
    assert db_accepts(rotated["postgresql_app_password"])
    assert not db_accepts(old["postgresql_app_password"])
    assert redis_accepts(rotated["redis_app_password"]) and redis_accepts(old["redis_app_password"])
    # Tokens: the old key's still write (grace), and the new key's.
    new_token = token_for(INVENTORY, "rotation-drill", ttl=3600)
    assert write_status(lb_url, write_token) == 201
    assert write_status(lb_url, new_token) == 201

    # The finishing run, under load with the new key's token (the old one stops working).
    targets = mixed_targets(lb_url, product_id, new_token)
    proc, load, wall = under_load(targets, lambda: rotate(rotated))
    record("secret_rotation_finish", **figures(load, wall))
    assert_ok(proc)
    assert_no_failures(load)
    assert main_pids() == pids

    assert not redis_accepts(old["redis_app_password"])
    assert redis_accepts(rotated["redis_app_password"])
    assert write_status(lb_url, write_token) == 401
    assert write_status(lb_url, new_token) == 201
    for host in APP_HOSTS:
        env = machine(host).check_output("cat %s", ENV_FILE)
        assert "DATABASE_PASSWORD_PREVIOUS" not in env
        assert old["app_secret_key"] not in env and old["redis_app_password"] not in env
