"""What playbooks/rotate-secrets.yml changes, rendered by the roles and checked by the
servers themselves: the Redis aclfile and Sentinel's app user with the new and the previous
password (a throwaway redis-server and Sentinel accept both, then only the new one), the
redis role's runtime change of a running Sentinel, and the app's DATABASE_PASSWORD_PREVIOUS."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from test_app_settings import render_env

REPO = Path(__file__).resolve().parents[3]
REDIS = REPO / "roles" / "redis"
NEW, OLD = "new-redis-password-0123456789", "old-redis-password-0123456789"
SENTINEL_USER, SENTINEL_PASSWORD = "sentinel", "sentinel-password-0123456789"
ADMIN_PASSWORD = "admin-password-0123456789"


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        # Installed by .ci/host-services with the host's Redis: a failure, not a skip.
        pytest.fail(f"{binary} not found: apt-get install {binary}")
    return path


def b64(text: str) -> dict[str, str]:
    return {"content": base64.b64encode(text.encode()).decode()}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def redis_role_vars() -> list[dict]:
    """The redis role's defaults and vars, as a template task of the role sees them (the
    extra variables of the run still win)."""
    return [
        {"ansible.builtin.include_vars": {"file": str(REDIS / "defaults/main.yml")}},
        {"ansible.builtin.include_vars": {"file": str(REDIS / "vars/main.yml")}},
    ]


# The app's new password and the role's own logins, as its earlier tasks would set them.
ROLE_VARS = {
    # The throwaway servers speak plain text (the role's TLS is tested on the lab machines).
    "redis_tls": False,
    "redis_app_password": NEW,
    "__redis_exporter_password": b64("exporter-password"),
    "__redis_admin_password": b64(ADMIN_PASSWORD),
}


def render(run_tasks, tmp_path: Path, template: str, **extra_vars) -> str:
    out = tmp_path / template.removesuffix(".j2")
    tasks = [
        *redis_role_vars(),
        {
            "ansible.builtin.template": {
                "src": str(REDIS / "templates" / template),
                "dest": str(out),
            }
        },
    ]
    result = run_tasks(tasks, ROLE_VARS | extra_vars)
    assert result.returncode == 0, result.stdout + result.stderr
    return out.read_text()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(port: int, user: str, password: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [need("redis-cli"), "-e", "-h", "127.0.0.1", "-p", str(port), "--user", user, *command],
        env={**os.environ, "REDISCLI_AUTH": password},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def accepts(port: int, user: str, password: str) -> bool:
    return cli(port, user, password, "PING").stdout.strip() == "PONG"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., int]]:
    """Start a throwaway redis-server (or Sentinel) on a free port; stopped after the test."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> int:
        port = free_port()
        argv = [need("redis-server"), *args, "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(tmp_path), "--daemonize", "no", "--logfile", ""]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append(proc)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return port
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("previous", [OLD, ""], ids=["with-previous", "without"])
def test_the_aclfile_gives_the_app_user_both_passwords_during_a_rotation(
    run_tasks, tmp_path, server, previous
):
    acl = render(run_tasks, tmp_path, "users.acl.j2", redis_app_password_previous=previous)
    app_line = next(line for line in acl.splitlines() if line.startswith("user app "))
    hashes = [word[1:] for word in app_line.split() if word.startswith("#")]
    assert hashes == ([sha(NEW), sha(OLD)] if previous else [sha(NEW)])
    assert NEW not in acl and OLD not in acl  # hashes only
    # The role's own login (ACL LOAD) is in the file on every node now, a single one too.
    assert any(line.startswith("user fastapi-ops on ") for line in acl.splitlines())

    port = server("--aclfile", str(tmp_path / "users.acl"), "--save", "", "--appendonly", "no")
    assert accepts(port, "app", NEW)
    assert accepts(port, "app", OLD) == bool(previous)
    assert not accepts(port, "app", "wrong-password-0123456789")
    assert cli(port, "app", NEW, "SET", "app:rotation", "1").stdout.strip() == "OK"


def test_the_same_password_twice_is_written_once(run_tasks, tmp_path):
    acl = render(run_tasks, tmp_path, "users.acl.j2", redis_app_password_previous=NEW)
    app_line = next(line for line in acl.splitlines() if line.startswith("user app "))
    assert [w for w in app_line.split() if w.startswith("#")] == [f"#{sha(NEW)}"]


def test_a_single_node_loads_its_users_from_the_aclfile(run_tasks, tmp_path):
    conf = render(
        run_tasks,
        tmp_path,
        "redis.conf.j2",
        ansible_memtotal_mb=1024,
        redis_listen_address="127.0.0.1",
        ansible_managed="test",
    )
    assert "aclfile /etc/redis/users.acl" in conf
    assert not any(line.startswith("user ") for line in conf.splitlines())


def sentinel_conf(path: Path, app_hashes: list[str]) -> None:
    """A Sentinel's file as the role writes it once (the parts that matter here)."""
    path.write_text(
        "sentinel monitor fastapi-ops 127.0.0.1 1 2\n"
        "user default off resetpass resetkeys resetchannels -@all\n"
        f"user {SENTINEL_USER} on resetpass #{sha(SENTINEL_PASSWORD)} allchannels +@all\n"
        "user app on resetpass "
        + " ".join(f"#{h}" for h in app_hashes)
        + " resetchannels -@all +auth +hello +ping +sentinel|get-master-addr-by-name\n"
    )


def test_sentinel_conf_template_gives_the_app_user_both_passwords(run_tasks, tmp_path):
    conf = render(
        run_tasks,
        tmp_path,
        "sentinel.conf.j2",
        redis_app_password_previous=OLD,
        redis_listen_address="127.0.0.1",
        redis_sentinel_password=SENTINEL_PASSWORD,
        __redis_master_address="127.0.0.1",
        __redis_sentinel_hosts=["a", "b", "c"],
    )
    app_line = next(line for line in conf.splitlines() if line.startswith("user app "))
    assert f"#{sha(NEW)} #{sha(OLD)} " in app_line


def run_role(run_tasks, entry_point: str, **extra_vars):
    """Run an entry point (a tasks file) of the redis role; return the CompletedProcess."""
    tasks = [
        {
            "ansible.builtin.include_role": {
                "name": "fastapi_ops.stack.redis",
                "tasks_from": entry_point,
            }
        }
    ]
    result = run_tasks(tasks, ROLE_VARS | extra_vars)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def sentinel_passwords(run_tasks, port: int, **extra_vars):
    return run_role(
        run_tasks,
        "app_passwords",
        __redis_acl_port=port,
        __redis_acl_login_user=SENTINEL_USER,
        __redis_acl_login_password=SENTINEL_PASSWORD,
        __redis_acl_sentinel=True,
        **extra_vars,
    )


def test_a_running_sentinel_takes_the_new_passwords_without_a_restart(run_tasks, tmp_path, server):
    conf = tmp_path / "sentinel.conf"
    sentinel_conf(conf, [sha(OLD)])
    port = server(str(conf), "--sentinel")
    assert accepts(port, "app", OLD) and not accepts(port, "app", NEW)

    # The rotation: both passwords, kept in sentinel.conf at once (FLUSHCONFIG).
    result = sentinel_passwords(run_tasks, port, redis_app_password_previous=OLD)
    assert "changed=2" in result.stdout, result.stdout
    assert accepts(port, "app", OLD) and accepts(port, "app", NEW)
    app_line = next(line for line in conf.read_text().splitlines() if line.startswith("user app "))
    assert sha(NEW) in app_line and sha(OLD) in app_line
    # A rerun changes nothing.
    result = sentinel_passwords(run_tasks, port, redis_app_password_previous=OLD)
    assert "changed=0" in result.stdout, result.stdout

    # The finishing run: the new password alone.
    sentinel_passwords(run_tasks, port)
    assert accepts(port, "app", NEW) and not accepts(port, "app", OLD)
    assert sha(OLD) not in conf.read_text()
    assert NEW not in conf.read_text()


class AppClient:
    """One connection of the app's user, kept open: its id says whether it was dropped."""

    def __init__(self, port: int, password: str) -> None:
        self.client = redis.Redis(
            port=port, username="app", password=password, single_connection_client=True
        )
        self.first_id = self.client.client_id()

    def kept(self) -> bool:
        try:
            return bool(self.client.client_id() == self.first_id)
        except redis.ConnectionError:  # dropped, and its password is no longer accepted
            return False


def test_a_data_node_takes_a_new_app_password_without_dropping_a_connection(
    run_tasks, tmp_path, server
):
    (tmp_path / "render").mkdir()
    acl = tmp_path / "users.acl"
    acl.write_text(render(run_tasks, tmp_path / "render", "users.acl.j2", redis_app_password=OLD))
    port = server("--aclfile", str(acl), "--save", "", "--appendonly", "no")
    client = AppClient(port, OLD)
    where = {
        "__redis_acl_file": str(acl),
        "__redis_config_check": f"/bin/sh {REDIS / 'files' / 'redis-check-config'}",
        "redis_port": port,
    }

    # The rotation: the aclfile and the running server both take the two passwords, with
    # ACL SETUSER (ACL LOAD would drop every client).
    result = run_role(run_tasks, "acl", redis_app_password_previous=OLD, **where)
    assert "ACL LOAD" not in result.stdout, result.stdout
    assert accepts(port, "app", NEW) and accepts(port, "app", OLD)
    assert sha(NEW) in acl.read_text() and sha(OLD) in acl.read_text()
    assert client.kept()
    assert (
        "changed=0" in run_role(run_tasks, "acl", redis_app_password_previous=OLD, **where).stdout
    )

    # The finishing run: the new password alone; the open connection stays.
    run_role(run_tasks, "acl", **where)
    assert accepts(port, "app", NEW) and not accepts(port, "app", OLD)
    assert sha(OLD) not in acl.read_text()
    assert client.kept()

    # Any other change of the users is loaded whole (ACL LOAD): the clients reconnect.
    result = run_role(run_tasks, "acl", redis_exporter_user="metrics", **where)
    assert "ACL LOAD" in result.stdout, result.stdout
    assert accepts(port, "metrics", "exporter-password")
    assert not client.kept()


def test_the_previous_database_password_reaches_the_app_only_when_set(run_tasks, tmp_path):
    tricky = 'old "db" pass $HOME \\ `id` #x'
    env = render_env(run_tasks, tmp_path, app_database_password_previous=tricky)
    assert env["DATABASE_PASSWORD_PREVIOUS"] == tricky
    (tmp_path / "none").mkdir()
    assert "DATABASE_PASSWORD_PREVIOUS" not in render_env(run_tasks, tmp_path / "none")


def test_the_users_entry_point_rotates_a_running_node(run_tasks, tmp_path, server):
    """Entry point `users` (what playbooks/rotate-secrets.yml runs on a cache host), with
    the role's own files in a scratch directory."""
    (tmp_path / "render").mkdir()
    acl = tmp_path / "users.acl"
    acl.write_text(render(run_tasks, tmp_path / "render", "users.acl.j2", redis_app_password=OLD))
    (tmp_path / "admin.password").write_text(ADMIN_PASSWORD)
    (tmp_path / "exporter.password").write_text("exporter-password")
    port = server("--aclfile", str(acl), "--save", "", "--appendonly", "no")
    client = AppClient(port, OLD)
    tasks = [
        {"ansible.builtin.include_role": {"name": "fastapi_ops.stack.redis", "tasks_from": "users"}}
    ]

    def users(**extra_vars):
        values = {
            "redis_tls": False,
            "redis_app_password": NEW,
            "redis_port": port,
            "__redis_acl_file": str(acl),
            "__redis_admin_password_file": str(tmp_path / "admin.password"),
            "__redis_exporter_password_file": str(tmp_path / "exporter.password"),
            "__redis_config_check": f"/bin/sh {REDIS / 'files' / 'redis-check-config'}",
            **extra_vars,
        }
        result = run_tasks(tasks, values, groups={"cache": {"localhost": {}}})
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    users(redis_app_password_previous=OLD)
    assert accepts(port, "app", NEW) and accepts(port, "app", OLD)
    assert client.kept()
    assert "changed=0" in users(redis_app_password_previous=OLD).stdout

    # The running server lost the change (a run that stopped after writing the file): the
    # entry point compares the running server, not only the file.
    cli(port, "fastapi-ops", ADMIN_PASSWORD, "ACL", "SETUSER", "app", "resetpass", f"#{sha(OLD)}")
    assert not accepts(port, "app", NEW)
    users(redis_app_password_previous=OLD)
    assert accepts(port, "app", NEW)

    users()
    assert accepts(port, "app", NEW) and not accepts(port, "app", OLD)
    assert client.kept()
