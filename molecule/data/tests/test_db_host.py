"""State of the db+cache machine: services, sockets, tuned settings, auth rules, logs."""

from __future__ import annotations

import re
import sys

import pytest
from conftest import PROJECT, psql

testinfra_hosts = ["data-db"]

UNITS = [
    "postgresql@15-main",
    "redis-server",
    "prometheus-postgres-exporter",
    "prometheus-redis-exporter",
]


# Redis speaks TLS only, on 6380, with a certificate of the deployment's Redis CA.
REDIS_CLI = "redis-cli -p 6380 --tls --cacert /etc/redis/tls/ca.crt"


def redis_exporter_cli(host, *args: str):
    """redis-cli as the exporter's ACL user (the default user is disabled)."""
    cmd = (
        "REDISCLI_AUTH=$(cat /etc/redis/exporter.password) "
        f"{REDIS_CLI} --user exporter --no-auth-warning " + " ".join(args)
    )
    return host.run(cmd)


@pytest.mark.parametrize("unit", UNITS)
def test_unit_active_and_enabled(host, unit):
    service = host.service(unit)
    assert service.is_running
    assert service.is_enabled


def listeners(host) -> dict[int, set[str]]:
    result: dict[int, set[str]] = {}
    for line in host.check_output("ss -Htln").splitlines():
        local = line.split()[3]
        address, port = local.rsplit(":", 1)
        result.setdefault(int(port), set()).add(address.strip("[]"))
    return result


def test_listen_only_private_and_localhost(host):
    private = host.backend.get_variables()["ansible_host"]
    by_port = listeners(host)
    assert by_port[5432] == {private, "127.0.0.1"}
    assert by_port[6380] <= {private, "127.0.0.1", "::1"} and private in by_port[6380]
    assert 6379 not in by_port  # no plain-text Redis
    assert by_port[9187] == {private}
    assert by_port[9121] == {private}


def _pg_tune():
    # The filter imports the collection's plugin_utils: load it as the collection it is.
    sys.path.insert(0, str(PROJECT / "collections"))
    from ansible_collections.fastapi_ops.stack.plugins.filter import pg_tune

    return pg_tune.pg_tune


def test_show_equals_pg_tune_for_this_machine(host):
    facts = host.ansible("setup", "gather_subset=!all,!min,hardware", check=False)["ansible_facts"]
    expected = _pg_tune()(
        facts["ansible_memtotal_mb"],
        cpus=facts["ansible_processor_vcpus"],
        storage="ssd",
        max_connections=100,
        pg_version=15,
    )
    shown = {name: psql(host, f"SHOW {name}") for name in expected}
    assert shown == expected
    assert psql(host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"


def test_security_and_logging_settings(host):
    assert psql(host, "SHOW password_encryption") == "scram-sha-256"
    assert psql(host, "SHOW log_connections") == "on"
    assert psql(host, "SHOW log_disconnections") == "on"
    assert psql(host, "SHOW log_min_duration_statement") == "500ms"
    assert psql(host, "SHOW superuser_reserved_connections") == "3"


def test_hba_has_no_trust_and_only_the_app_hosts(host, app):
    app_address = app.backend.get_variables()["ansible_host"]
    rules = psql(
        host,
        "SELECT type, array_to_string(database, ','), array_to_string(user_name, ','), "
        "coalesce(address, ''), coalesce(netmask, ''), auth_method, coalesce(error, '') "
        "FROM pg_hba_file_rules ORDER BY line_number",
    ).splitlines()
    assert sorted(rules) == [
        f"hostssl|app|app|{app_address}|255.255.255.255|scram-sha-256|",
        "local|all|postgres|||peer|",
        "local|postgres|prometheus|||peer|",
    ]


def test_app_role_and_database(host):
    assert (
        psql(host, "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'app'")
        == "t"
    )
    assert (
        psql(
            host,
            "SELECT rolsuper OR rolcreatedb OR rolcreaterole FROM pg_roles WHERE rolname = 'app'",
        )
        == "f"
    )
    assert (
        psql(host, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'") == "app"
    )
    # PUBLIC lost CONNECT on the app database.
    assert psql(host, "SELECT has_database_privilege('prometheus', 'app', 'CONNECT')") == "f"


def test_exporter_role_is_pg_monitor_only(host):
    row = psql(
        host,
        "SELECT rolsuper, rolconnlimit, pg_has_role('prometheus', 'pg_monitor', 'member') "
        "FROM pg_roles WHERE rolname = 'prometheus'",
    )
    assert row == "f|3|t"


def test_become_user_works_without_acl(host):
    # The scenario leaves `acl` out on purpose: become_user postgres relies on pipelining.
    assert not host.package("acl").is_installed


@pytest.mark.parametrize(
    ("url", "up", "error"),
    [
        ("http://{ip}:9187/metrics", "pg_up 1", "pg_exporter_last_scrape_error 0"),
        ("http://{ip}:9121/metrics", "redis_up 1", 'redis_exporter_last_scrape_error{err=""} 0'),
    ],
)
def test_exporters_scrape_without_errors(host, url, up, error):
    ip = host.backend.get_variables()["ansible_host"]
    metrics = host.check_output("curl -sf --max-time 10 %s", url.format(ip=ip))
    assert up in metrics.splitlines()
    assert error in metrics.splitlines()


def test_redis_exporter_user_cannot_read_data(host):
    assert "NOPERM" in redis_exporter_cli(host, "GET", "somekey").stdout
    assert "NOPERM" in redis_exporter_cli(host, "FLUSHALL").stdout
    assert redis_exporter_cli(host, "PING").stdout.strip() == "PONG"


def test_redis_settings(host):
    def config(name: str) -> str:
        lines = redis_exporter_cli(host, "CONFIG", "GET", name).stdout.splitlines()
        assert lines[0] == name
        return lines[1]

    assert config("maxmemory-policy") == "allkeys-lru"
    assert config("protected-mode") == "yes"
    assert config("save") == ""
    assert config("appendonly") == "no"
    mem_kb = int(
        re.search(r"MemTotal:\s+(\d+)", host.file("/proc/meminfo").content_string).group(1)
    )
    assert int(config("maxmemory")) == (mem_kb // 1024 * 25 // 100) * 1024 * 1024
    somaxconn = int(host.file("/proc/sys/net/core/somaxconn").content_string)
    assert int(config("tcp-backlog")) <= somaxconn


def test_redis_default_user_disabled(host):
    result = host.run(f"{REDIS_CLI} --no-auth-warning PING")
    assert "NOAUTH" in result.stdout + result.stderr


def test_redis_log_has_no_unexpected_warning(host):
    invocation = host.check_output("systemctl show -p InvocationID --value redis-server")
    log = host.check_output("journalctl -o cat _SYSTEMD_INVOCATION_ID=%s", invocation)
    assert "Ready to accept connections" in log
    warnings = [line for line in log.splitlines() if re.search(r" # WARNING", line)]
    in_container = host.run("systemd-detect-virt --container").rc == 0
    # In a container the host kernel owns vm.overcommit_memory (skipped visibly by the role).
    allowed = ("Memory overcommit must be enabled",) if in_container else ()
    assert [w for w in warnings if not any(a in w for a in allowed)] == []


def test_secret_files_are_private(host):
    assert host.file("/etc/redis/redis.conf").mode == 0o640
    assert host.file("/etc/redis/exporter.password").mode == 0o600
    assert host.file("/etc/default/prometheus-redis-exporter").mode == 0o600
    assert "molecule-app-cache-secret" not in host.file("/etc/redis/redis.conf").content_string
    # The CA key stays root's; the server key is the server's alone.
    for path, user in (("ca.key", "root"), ("server.key", "postgres")):
        key = host.file(f"/etc/postgresql/tls/{path}")
        assert (key.user, key.mode) == (user, 0o600), path


def test_server_offers_tls_with_the_ca_s_certificate_for_its_address(host):
    assert psql(host, "SHOW ssl") == "on"
    assert psql(host, "SHOW ssl_cert_file") == "/etc/postgresql/tls/server.crt"
    address = host.backend.get_variables()["ansible_host"]
    # The chain and the address, as a client checks them.
    host.check_output(
        "cd /etc/postgresql/tls && openssl verify -CAfile ca.crt -verify_ip %s server.crt", address
    )


@pytest.mark.parametrize(
    ("unit", "limit"),
    [
        ("postgresql@15-main", 2.5),
        ("redis-server", 1.5),
        ("prometheus-postgres-exporter", 2.0),
        ("prometheus-redis-exporter", 2.0),
    ],
)
def test_hardening_score(host, unit, limit):
    out = host.check_output("systemd-analyze security %s | tail -n1", unit)
    score = float(re.search(r"level for \S+: (\d+\.\d+)", out).group(1))
    print(f"systemd-analyze security {unit}: {score}")
    assert score <= limit, out
