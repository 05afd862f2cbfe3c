"""From the network: the app machine gets in with the app credentials and nothing more;
a machine outside app/monitoring finds every data port closed."""

from __future__ import annotations

import shlex

import pytest

# These tests drive the other machines themselves; run them once.
testinfra_hosts = ["data-db"]

PROBE = (
    "python3 -c 'import socket,sys; s=socket.socket(); s.settimeout(3); "
    "sys.exit(s.connect_ex((sys.argv[1], int(sys.argv[2]))))' {ip} {port}"
)


def reachable(machine, ip: str, port: int) -> bool:
    return machine.run(PROBE.format(ip=ip, port=port)).rc == 0


def psql(
    machine,
    ip: str,
    user: str,
    password: str,
    db: str = "app",
    sql: str = "SELECT current_user",
    tls: str = "sslmode=prefer",
):
    dsn = f"host={ip} dbname={db} user={user} {tls} connect_timeout=5"
    return machine.run(
        f"PGPASSWORD={shlex.quote(password)} psql -AtX {shlex.quote(dsn)} -c {shlex.quote(sql)}"
    )


# Redis speaks TLS only, on 6380; the app host checks it against the CA the app role installed.
REDIS_TLS = "-p 6380 --tls --cacert /etc/fastapi-ops-app/redis-ca.crt"


def redis(
    machine, ip: str, user: str | None, password: str | None, *args: str, tls: str = REDIS_TLS
):
    auth = f"REDISCLI_AUTH={shlex.quote(password)} " if password else ""
    user_opt = f"--user {shlex.quote(user)} " if user else ""
    command = " ".join(shlex.quote(a) for a in args)
    return machine.run(
        f"{auth}timeout 10 redis-cli --no-auth-warning -h {ip} {tls} {user_opt}{command}"
    )


def test_app_credentials_reach_postgres(app, db_address, secrets):
    result = psql(app, db_address, "app", secrets["pg"])
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == "app"
    # The owner can create objects in its database (migrations).
    result = psql(
        app,
        db_address,
        "app",
        secrets["pg"],
        sql="CREATE TABLE IF NOT EXISTS t_probe (id int); SELECT 1",
    )
    assert result.rc == 0, result.stderr


def test_wrong_password_refused_by_postgres(app, db_address):
    result = psql(app, db_address, "app", "not-the-password")
    assert result.rc != 0
    assert "password authentication failed" in result.stderr


@pytest.fixture(scope="module")
def ca_file(db, app):
    """The PostgreSQL CA's certificate, copied from the CA host (the app role does the same)."""
    pem = db.check_output("cat /etc/postgresql/tls/ca.crt")
    app.check_output("install -d -m 0755 /tmp/pg-ca && echo %s > /tmp/pg-ca/ca.crt", pem)
    yield "/tmp/pg-ca/ca.crt"
    app.run("rm -rf /tmp/pg-ca")


def test_app_connection_is_tls_with_a_certificate_the_ca_signed_for_the_address(
    app, db_address, secrets, ca_file
):
    sql = "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    result = psql(
        app,
        db_address,
        "app",
        secrets["pg"],
        sql=sql,
        tls=f"sslmode=verify-full sslrootcert={ca_file}",
    )
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() in ("t|TLSv1.3", "t|TLSv1.2"), result.stdout


def test_a_certificate_for_another_name_is_refused_by_the_client(app, db_address, secrets, ca_file):
    # The same server under a name its certificate does not carry: verify-full refuses it.
    tls = f"sslmode=verify-full sslrootcert={ca_file} hostaddr={db_address}"
    result = psql(app, "db.invalid", "app", secrets["pg"], tls=tls)
    assert result.rc != 0
    assert 'does not match host name "db.invalid"' in result.stderr, result.stderr


def test_plaintext_is_refused_even_with_the_right_password(app, db_address, secrets):
    result = psql(app, db_address, "app", secrets["pg"], tls="sslmode=disable")
    assert result.rc != 0
    assert "no encryption" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("user", "database"),
    [("postgres", "postgres"), ("app", "postgres"), ("prometheus", "postgres")],
)
def test_no_other_role_or_database_from_the_network(app, db_address, secrets, user, database):
    result = psql(app, db_address, user, secrets["pg"], db=database)
    assert result.rc != 0
    assert "no pg_hba.conf entry" in result.stderr


def test_app_credentials_reach_redis(app, db_address, secrets):
    assert (
        redis(
            app, db_address, "app", secrets["redis"], "SET", "app:probe:k", "v", "EX", "60"
        ).stdout.strip()
        == "OK"
    )
    assert (
        redis(app, db_address, "app", secrets["redis"], "GET", "app:probe:k").stdout.strip() == "v"
    )
    script = (
        "if redis.call('get', KEYS[1]) == ARGV[1] then "
        "return redis.call('del', KEYS[1]) end return 0"
    )
    assert (
        redis(
            app, db_address, "app", secrets["redis"], "EVAL", script, "1", "app:probe:k", "v"
        ).stdout.strip()
        == "1"
    )


def test_app_keys_only_under_its_prefix(app, db_address, secrets):
    for command in (["SET", "other:k", "v"], ["GET", "other:k"], ["EVAL", "return 1", "1", "x"]):
        result = redis(app, db_address, "app", secrets["redis"], *command)
        assert "NOPERM" in result.stdout + result.stderr, command


@pytest.mark.parametrize(
    "command",
    [
        ["FLUSHALL"],
        ["FLUSHDB"],
        ["CONFIG", "GET", "*"],
        ["DEBUG", "SLEEP", "0"],
        ["KEYS", "*"],
        ["SHUTDOWN"],
        ["ACL", "LIST"],
    ],
)
def test_dangerous_commands_refused_to_the_app(app, db_address, secrets, command):
    result = redis(app, db_address, "app", secrets["redis"], *command)
    # NOPERM from the ACL; DEBUG is refused even earlier (enable-debug-command no).
    assert "NOPERM" in result.stdout + result.stderr or "DEBUG command not allowed" in result.stdout


def test_wrong_password_refused_by_redis(app, db_address):
    result = redis(app, db_address, "app", "not-the-password", "PING")
    assert "WRONGPASS" in result.stdout + result.stderr


def test_redis_refuses_plain_text_and_an_unknown_ca(app, db_address, secrets):
    assert not reachable(app, db_address, 6379)  # the plain-text port is closed
    plain = redis(app, db_address, "app", secrets["redis"], "PING", tls="-p 6380")
    assert "PONG" not in plain.stdout
    # A CA that did not sign the server's certificate: the handshake fails.
    other_ca = redis(
        app,
        db_address,
        "app",
        secrets["redis"],
        "PING",
        tls="-p 6380 --tls --cacert /etc/ssl/certs/ca-certificates.crt",
    )
    assert "PONG" not in other_ca.stdout
    assert "certificate verify failed" in other_ca.stdout + other_ca.stderr


def test_default_user_refused_by_redis(app, db_address):
    result = redis(app, db_address, None, None, "GET", "app:probe:k")
    assert "NOAUTH" in result.stdout + result.stderr


@pytest.mark.parametrize("port", [9187, 9121])
def test_exporters_closed_to_the_app(app, db_address, port):
    assert reachable(app, db_address, 5432)  # the probe itself works from there
    assert not reachable(app, db_address, port)


@pytest.mark.parametrize("port", [5432, 6379, 6380, 9187, 9121])
def test_data_ports_closed_to_other_machines(out, db_address, port):
    assert reachable(out, db_address, 22)  # the probe itself works (SSH is open to it)
    assert not reachable(out, db_address, port)
