"""The app role's settings for the app's authentication and readiness details, from its own
defaults and vars to the EnvironmentFile (read as systemd and the Gunicorn settings read
it), its checks of previous secret keys, and the entry point `token` (with stand-ins for
systemd-run and the app's token command: no systemd here)."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path

import pytest
from test_app_env_file import gunicorn_reads, systemd_reads

ROLE = Path(__file__).resolve().parents[3] / "roles" / "app"
KEY = "k" * 32
# A previous key with what JSON and the EnvironmentFile must both carry through.
PREVIOUS_KEYS = ['old key, with "quotes", $HOME and \\ 0123456789', "o" * 32]


def run_role(
    run_tasks, tasks: list[dict], extra_vars: dict, *args: str, groups: dict | None = None
):
    """Run tasks on localhost (10.0.0.5) in an inventory with an lb (IPv4) and a monitoring
    host (IPv6), and these further groups ({name: {host: variables}}), that are never
    contacted; return the CompletedProcess."""
    return run_tasks(
        tasks,
        extra_vars,
        *args,
        host_vars={"private_address": "10.0.0.5"},
        groups={
            "lb": {"lb1": {"private_address": "10.0.0.2"}},
            "monitoring": {"mon1": {"ansible_host": "2001:db8::9"}},
            **(groups or {}),
        },
    )


def role_tasks(entry_point: str, **kwargs) -> dict:
    return {
        "ansible.builtin.include_role": {
            "name": "fastapi_ops.stack.app",
            "tasks_from": entry_point,
            **kwargs,
        }
    }


def render_env(
    run_tasks, tmp_path: Path, groups: dict | None = None, **extra_vars
) -> dict[str, str]:
    """The role's EnvironmentFile for these variables, as systemd and Gunicorn read it."""
    out = tmp_path / "app.env"
    tasks = [
        # assert_env computes the environment from the role's defaults and vars (public:
        # kept for the template, which the role renders with them).
        role_tasks("assert_env", public=True),
        {"ansible.builtin.template": {"src": str(ROLE / "templates/app.env.j2"), "dest": str(out)}},
    ]
    result = run_role(run_tasks, tasks, extra_vars, groups=groups)
    assert result.returncode == 0, result.stdout + result.stderr
    env = systemd_reads(out)
    assert gunicorn_reads(out) == env
    return env


def test_previous_keys_and_detail_networks_reach_the_app_as_json(run_tasks, tmp_path):
    env = render_env(run_tasks, tmp_path, app_secret_keys_previous=PREVIOUS_KEYS)
    assert json.loads(env["SECRET_KEYS_PREVIOUS"]) == PREVIOUS_KEYS
    networks = json.loads(env["HEALTH_DETAIL_NETWORKS"])
    # Loopback, this host, the lb and the monitoring host: what may reach app_port.
    assert networks == ["127.0.0.0/8", "::1/128", "10.0.0.5/32", "10.0.0.2/32", "2001:db8::9/128"]
    for network in networks:
        ipaddress.ip_network(network)  # strict: each is a network address with its prefix
    assert "PUBLIC_BASE_URL" not in env  # empty: the app keeps its own default


def test_empty_previous_keys_a_set_list_of_networks_and_a_public_url(run_tasks, tmp_path):
    env = render_env(
        run_tasks,
        tmp_path,
        app_health_detail_networks=["192.0.2.0/24"],
        app_public_base_url="https://shop.example",
    )
    assert json.loads(env["SECRET_KEYS_PREVIOUS"]) == []
    assert json.loads(env["HEALTH_DETAIL_NETWORKS"]) == ["192.0.2.0/24"]
    assert env["PUBLIC_BASE_URL"] == "https://shop.example"


def test_an_app_map_without_the_new_names_gets_none_of_them(run_tasks, tmp_path):
    env = render_env(
        run_tasks,
        tmp_path,
        app_env_map={"SECRET_KEY": "secret_key", "BASE_URL": "public_base_url"},
        app_secret_key=KEY,
    )
    assert env == {"SECRET_KEY": KEY}  # public_base_url is empty: not written


DB_GROUP = {"db": {"db1": {"private_address": "10.0.0.7"}}}
CA_FILE = "/etc/fastapi-ops-app/postgresql-ca.crt"


def test_an_app_checks_the_postgresql_role_s_certificate_with_libpq_s_variables(
    run_tasks, tmp_path
):
    env = render_env(run_tasks, tmp_path, groups=DB_GROUP)
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == CA_FILE
    assert "10.0.0.7" in env["DATABASE_URL"]  # the address the certificate names


def test_no_tls_variables_without_the_postgresql_role_s_tls(run_tasks, tmp_path):
    without_tls = {"db": {"db1": {"private_address": "10.0.0.7", "postgresql_tls": False}}}
    env = render_env(run_tasks, tmp_path, groups=without_tls)
    assert "PGSSLMODE" not in env and "PGSSLROOTCERT" not in env
    (tmp_path / "no-db").mkdir()
    env = render_env(run_tasks, tmp_path / "no-db")  # an outside database: the driver's default
    assert "PGSSLMODE" not in env and "PGSSLROOTCERT" not in env


def test_a_mode_without_a_certificate_check_gets_no_ca(run_tasks, tmp_path):
    env = render_env(run_tasks, tmp_path, groups=DB_GROUP, app_database_sslmode="require")
    assert env["PGSSLMODE"] == "require"
    assert "PGSSLROOTCERT" not in env


def check_inputs(run_tasks, **extra_vars):
    base = {
        "app_secret_key": KEY,
        "postgresql_app_password": "p" * 16,
        "redis_app_password": "r" * 16,
    }
    return run_role(run_tasks, [role_tasks("assert")], base | extra_vars)


@pytest.mark.parametrize("environment", ["production", "staging"])
def test_a_short_previous_key_is_refused_without_being_shown(run_tasks, environment):
    short = "old-but-short-key"
    result = check_inputs(
        run_tasks,
        app_environment=environment,
        app_secret_keys_previous=["o" * 32, short],
    )
    assert result.returncode != 0
    assert "app_secret_keys_previous need 32+ characters" in result.stdout, result.stdout
    assert short not in result.stdout + result.stderr


def test_previous_keys_may_be_short_in_a_lab_environment(run_tasks):
    result = check_inputs(run_tasks, app_environment="testing", app_secret_keys_previous=["x"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_token_entry_point_needs_a_subject(run_tasks):
    result = run_role(run_tasks, [role_tasks("token")], {})
    assert result.returncode != 0
    assert "missing required arguments: app_token_subject" in result.stdout, result.stdout


def test_the_token_entry_point_says_when_the_app_is_not_deployed(run_tasks, tmp_path):
    result = run_role(
        run_tasks,
        [role_tasks("token")],
        {"app_token_subject": "ci", "app_root": str(tmp_path / "srv")},
    )
    assert result.returncode != 0
    assert "the app is not deployed here" in result.stdout, result.stdout


FAKE_SYSTEMD_RUN = """#!{python}
# systemd-run's stand-in: runs the command after `--` with the variables of the
# EnvironmentFile (double-quoted, as the role writes them).
import os, sys
args = sys.argv[1:]
options, command = args[: args.index("--")], args[args.index("--") + 1 :]
env = dict(os.environ)
for option in options:
    if option.startswith("--property=EnvironmentFile="):
        for line in open(option.split("=", 2)[2]):
            name, _, value = line.strip().partition("=")
            env[name] = value.strip('"')
os.execve(command[0], command, env)
"""
FAKE_TOKEN_COMMAND = """#!{python}
# fastapi-ops-app-token's stand-in: a "token" that shows what the command was given.
import os, sys
if not os.environ.get("SECRET_KEY"):
    sys.exit("SECRET_KEY is not set")
print(os.environ["SECRET_KEY"], os.environ["APP_NAME"], *sys.argv[1:])
"""


def mint(run_tasks, tmp_path: Path, monkeypatch, env_file: str, *args: str):
    """The entry point `token` in check mode with the stand-ins, app_token written to
    tmp_path/token; returns the CompletedProcess."""
    bin_dir, app_root = tmp_path / "bin", tmp_path / "srv"
    command = app_root / "current" / "venv" / "bin" / "fastapi-ops-app-token"
    for path, text in ((bin_dir / "systemd-run", FAKE_SYSTEMD_RUN), (command, FAKE_TOKEN_COMMAND)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(python=sys.executable))
        path.chmod(0o755)
    (tmp_path / "app.env").write_text(env_file)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    tasks = [
        role_tasks("token"),
        {
            "ansible.builtin.copy": {"content": "{{ app_token }}", "dest": str(tmp_path / "token")},
            "check_mode": False,
            "no_log": True,
        },
    ]
    extra_vars = {
        "app_token_subject": "ci",
        "app_token_ttl": 600,
        "app_token_scopes": ["products:write", "products:admin"],
        "app_root": str(app_root),
        "__app_env_file": str(tmp_path / "app.env"),
    }
    return run_role(run_tasks, tasks, extra_vars, "--check", *args)


def test_the_token_entry_point_mints_with_the_services_environment(
    run_tasks, tmp_path, monkeypatch
):
    env_file = '# written by the role\nSECRET_KEY="s3cret-signing-key"\nAPP_NAME="shop"\n'
    result = mint(run_tasks, tmp_path, monkeypatch, env_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "token").read_text() == (
        "s3cret-signing-key shop --subject=ci --ttl=600"
        " --scope=products:write --scope=products:admin"
    )
    assert "s3cret-signing-key" not in result.stdout + result.stderr


def test_the_token_entry_point_shows_the_commands_message(run_tasks, tmp_path, monkeypatch):
    result = mint(run_tasks, tmp_path, monkeypatch, 'APP_NAME="shop"\n')
    assert result.returncode != 0
    assert "fastapi-ops-app-token failed on localhost (exit 1): SECRET_KEY is not set" in (
        result.stdout
    ), result.stdout


def test_a_certificate_check_without_a_ca_is_refused(run_tasks):
    result = check_inputs(run_tasks, app_database_sslmode="verify-full")
    assert result.returncode != 0
    assert "app_database_sslmode verify-full checks the server's certificate" in result.stdout, (
        result.stdout
    )
    result = check_inputs(run_tasks, app_database_sslmode="verify-full", app_database_ssl_ca="PEM")
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_unknown_ssl_mode_is_refused(run_tasks):
    # Argument validation, before the role's first task.
    tasks = [{"ansible.builtin.setup": {"gather_subset": ["min"]}}, role_tasks("main")]
    result = run_role(run_tasks, tasks, {"app_database_sslmode": "verify"})
    assert result.returncode != 0
    assert "Validating arguments against arg spec" in result.stdout
    assert "value of app_database_sslmode must be one of" in result.stdout, result.stdout
    assert "app_database_sslmode" in result.stdout and "verify-full" in result.stdout, result.stdout
