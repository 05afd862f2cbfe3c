"""The redis role's move of a running single node to TLS without a restart
(tasks/listeners.yml, roles/redis/README.md): a throwaway redis-server in plain text takes
its TLS port beside the plain one, then closes the plain one, at run time, logging in
through what its redis.conf offered before each run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import redis
import yaml

# `server` is a fixture: imported so that pytest finds it here.
from test_secret_rotation import b64, free_port, need, server  # noqa: F401  # pylint: disable=unused-import

ADMIN_PASSWORD = "admin-password-0123456789"
ROLE_VARS = yaml.safe_load((Path(__file__).parents[3] / "roles/redis/vars/main.yml").read_text())


def certificates(directory: Path) -> Path:
    """A CA and a certificate it signs for 127.0.0.1, as the role's tls.yml makes them."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=CA")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=node")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    )
    return directory


def acl_file(directory: Path) -> Path:
    """The role's own login with its rights; `test` checks the data."""
    acl = directory / "users.acl"
    acl.write_text(
        "user default off\n"
        f"user fastapi-ops on >{ADMIN_PASSWORD} {ROLE_VARS['__redis_admin_acl']}\n"
        "user test on >test ~* +@all\n"
    )
    return acl


def run_listeners(run_tasks, tls: Path, before: str, **settings) -> None:
    """The role's tasks/listeners.yml on the throwaway server, whose redis.conf was `before`."""
    values = {
        "redis_tls": True,
        "__redis_config_before": b64(before),
        "__redis_admin_password": b64(ADMIN_PASSWORD),
        "__redis_server_cert": str(tls / "server.crt"),
        "__redis_server_key": str(tls / "server.key"),
        "__redis_ca_cert": str(tls / "ca.crt"),
        **settings,
    }
    task = {
        "ansible.builtin.include_role": {
            "name": "fastapi_ops.stack.redis",
            "tasks_from": "listeners",
        }
    }
    result = run_tasks([task], values)
    assert result.returncode == 0, result.stdout + result.stderr


def answers(port: int, ca: Path | None = None) -> bool:
    tls = {"ssl": True, "ssl_ca_certs": str(ca)} if ca else {}
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        username="fastapi-ops",
        password=ADMIN_PASSWORD,
        socket_timeout=2,
        **tls,
    )
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def test_a_running_node_moves_to_tls_without_a_restart(run_tasks, tmp_path, server):  # noqa: F811
    need("redis-cli")
    tls = certificates(tmp_path)
    acl = acl_file(tmp_path)
    plain = server(
        "--aclfile",
        str(acl),
        "--save",
        "",
        "--appendonly",
        "no",
        "--enable-protected-configs",
        "no",
    )
    tls_port = free_port()
    client = redis.Redis(host="127.0.0.1", port=plain, username="test", password="test")
    client.set("kept", "1")
    server_id = client.info("server")["run_id"]

    # First run of the move: the TLS port opens beside the plain one (logged in through it).
    run_listeners(
        run_tasks,
        tls,
        f"port {plain}\n",
        redis_port=plain,
        redis_tls_port=tls_port,
        redis_plaintext=True,
    )
    assert answers(plain) and answers(tls_port, tls / "ca.crt")
    # Second run: the plain port closes (logged in through the TLS one).
    run_listeners(
        run_tasks,
        tls,
        f"port {plain}\ntls-port {tls_port}\n",
        redis_port=plain,
        redis_tls_port=tls_port,
        redis_plaintext=False,
    )
    assert not answers(plain) and answers(tls_port, tls / "ca.crt")
    # The same server all along: its data and run id are kept.
    after = redis.Redis(
        host="127.0.0.1",
        port=tls_port,
        username="test",
        password="test",
        ssl=True,
        ssl_ca_certs=str(tls / "ca.crt"),
    )
    assert after.get("kept") == b"1" and after.info("server")["run_id"] == server_id


def test_a_running_node_moves_back_to_plain_text_without_a_restart(run_tasks, tmp_path, server):  # noqa: F811
    """redis_tls: false again: the plain port opens as the TLS one closes, in one CONFIG SET
    sent through the TLS port."""
    tls = certificates(tmp_path)
    acl = acl_file(tmp_path)
    plain, tls_port = free_port(), free_port()
    port = server(
        "--aclfile",
        str(acl),
        "--save",
        "",
        "--appendonly",
        "no",
        "--tls-port",
        str(tls_port),
        "--tls-cert-file",
        str(tls / "server.crt"),
        "--tls-key-file",
        str(tls / "server.key"),
        "--tls-ca-cert-file",
        str(tls / "ca.crt"),
        "--tls-auth-clients",
        "no",
    )
    run_listeners(
        run_tasks,
        tls,
        f"port {port}\ntls-port {tls_port}\n",
        redis_tls=False,
        redis_port=plain,
        redis_tls_port=tls_port,
    )
    assert answers(plain) and not answers(tls_port, tls / "ca.crt")
