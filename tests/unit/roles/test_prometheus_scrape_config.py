"""The prometheus role's scrape configuration rendered from small inventories (jobs
`patroni` and `etcd`: which hosts, which ports, instance = inventory hostname), checked
with `promtool check config`, and the fallbacks it uses kept equal to their owners'
defaults.

Renders roles/prometheus/templates/prometheus.yml.j2 with the venv's ansible-playbook on
localhost (connection local, nothing but a file in a temporary directory is written).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
ROLE = REPO / "roles" / "prometheus"

PLAYBOOK = """
- name: Render the scrape configuration
  hosts: mon
  gather_facts: false
  connection: local
  tasks:
    - name: The role's defaults and internal variables
      ansible.builtin.include_vars:
        file: "{{ item }}"
      loop: ["%(role)s/defaults/main.yml", "%(role)s/vars/main.yml"]
    - name: Render
      ansible.builtin.template:
        src: "%(role)s/templates/prometheus.yml.j2"
        dest: "{{ out }}"
        mode: "0644"
"""


@pytest.fixture
def render(tmp_path: Path, ansible_playbook):
    """prometheus.yml for an inventory of these groups (host mon = monitoring)."""
    return lambda groups, hostvars=None: _render(tmp_path, ansible_playbook, groups, hostvars)


def _render(tmp_path: Path, ansible_playbook, groups: dict, hostvars: dict | None) -> dict:
    hostvars = hostvars or {}
    hosts = sorted({h for members in groups.values() for h in members} | {"mon"})
    addresses = {h: f"198.18.9.{i}" for i, h in enumerate(hosts, start=10)}
    inventory = {
        "all": {
            "hosts": {
                h: {"ansible_host": addresses[h], "ansible_python_interpreter": sys.executable}
                | hostvars.get(h, {})
                for h in hosts
            },
            "children": {
                g: {"hosts": {h: {} for h in members}}
                for g, members in {"monitoring": ["mon"], **groups}.items()
            },
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "render.yml").write_text(PLAYBOOK % {"role": ROLE})
    out = tmp_path / "prometheus.yml"
    result = ansible_playbook(tmp_path / "hosts.yml", tmp_path / "render.yml", "-e", f"out={out}")
    assert result.returncode == 0, result.stdout + result.stderr
    promtool = shutil.which("promtool")
    if promtool is None:  # a missing tool is a failure, not a skip
        pytest.fail("promtool not found: apt-get install prometheus (Debian) on the controller")
    check = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    config = yaml.safe_load(out.read_text())
    config["_addresses"] = addresses
    return config


def job(config: dict, name: str) -> list[tuple[str, str]] | None:
    """(instance, target) pairs of a job, None when the job is absent."""
    for j in config["scrape_configs"]:
        if j["job_name"] == name:
            assert "metrics_path" not in j
            return [
                (sc["labels"]["instance"], t) for sc in j["static_configs"] for t in sc["targets"]
            ]
    return None


def test_three_db_hosts_are_a_patroni_cluster_with_etcd_on_them(render):
    c = render({"db": ["db3", "db1", "db2"]})
    a = c["_addresses"]
    assert job(c, "patroni") == [(h, f"{a[h]}:8008") for h in ("db1", "db2", "db3")]
    assert job(c, "etcd") == [(h, f"{a[h]}:2381") for h in ("db1", "db2", "db3")]
    assert job(c, "postgres") == [(h, f"{a[h]}:9187") for h in ("db1", "db2", "db3")]


def test_one_db_host_is_plain_postgresql(render):
    c = render({"db": ["db1"]})
    assert job(c, "patroni") is None
    assert job(c, "etcd") is None
    assert job(c, "postgres") is not None


def test_host_ports_and_an_etcd_group(render):
    c = render(
        {"db": ["db1", "db2", "db3"], "etcd": ["dcs2", "dcs1", "dcs3"]},
        {
            "db2": {"patroni_restapi_port": 8018},
            "db3": {"postgresql_patroni": False},
            "dcs3": {"etcd_metrics_port": 12381, "private_address": "10.9.0.3"},
        },
    )
    a = c["_addresses"]
    assert job(c, "patroni") == [("db1", f"{a['db1']}:8008"), ("db2", f"{a['db2']}:8018")]
    assert job(c, "etcd") == [
        ("dcs1", f"{a['dcs1']}:2381"),
        ("dcs2", f"{a['dcs2']}:2381"),
        ("dcs3", "10.9.0.3:12381"),
    ]


def test_patroni_switched_off_everywhere(render):
    off = {"postgresql_patroni": False}
    c = render({"db": ["db1", "db2", "db3"]}, {h: off for h in ("db1", "db2", "db3")})
    assert job(c, "patroni") is None
    assert job(c, "etcd") is None


def test_patroni_on_a_single_db_host_when_asked(render):
    c = render({"db": ["db1"]}, {"db1": {"postgresql_patroni": True}})
    assert [pair[0] for pair in job(c, "patroni")] == ["db1"]
    assert [pair[0] for pair in job(c, "etcd")] == ["db1"]


# --- the fallbacks equal their owners' defaults --------------------------------------


def defaults(role: str) -> dict:
    path = REPO / "roles" / role / "defaults" / "main.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


@pytest.mark.parametrize(
    ("owner", "name", "mine"),
    [
        ("patroni", "patroni_restapi_port", "prometheus_patroni_port"),
        ("etcd", "etcd_metrics_port", "prometheus_etcd_port"),
        ("alertmanager", "alertmanager_port", "prometheus_alertmanager_port"),
    ],
)
def test_port_fallbacks_read_the_owners_defaults(owner: str, name: str, mine: str):
    """The fallback port is the owner role's default, read with role_default (one copy)."""
    assert defaults(owner)[name]
    ours = defaults("prometheus")[mine]
    assert f"'{name}'" in ours and f"role='{owner}'" in ours and "role_default" in ours


def test_patroni_switch_fallback_equals_the_postgresql_roles_default():
    theirs = defaults("postgresql")["postgresql_patroni"]
    ours = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["__prometheus_patroni_default"]
    env = jinja2.Environment()
    for db in ([], ["db1"], ["db1", "db2"], ["db1", "db2", "db3"]):
        got = [
            str(env.from_string(str(v)).render(groups={"db": db})).strip().lower()
            for v in (ours, theirs)
        ]
        assert got[0] == got[1], f"db group {db}: prometheus says {got[0]}, postgresql {got[1]}"


def test_alerts_go_to_every_monitoring_hosts_alertmanager_with_a_tier(render):
    c = render({"monitoring": ["mon", "mon2"]}, {"mon2": {"alertmanager_port": 19093}})
    a = c["_addresses"]
    alerting = c["alerting"]
    targets = [
        t for am in alerting["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]
    ]
    assert targets == [f"{a['mon']}:9093", f"{a['mon2']}:19093"]
    relabel = alerting["alert_relabel_configs"]
    # Only alerts without a tier get one; the job's entries come before the names'.
    assert all(r["target_label"] == "tier" and r["regex"].startswith(";") for r in relabel)
    first_name = next(
        i for i, r in enumerate(relabel) if r["source_labels"] == ["tier", "alertname"]
    )
    assert all(r["source_labels"] == ["tier", "job"] for r in relabel[:first_name])
    db = [r for r in relabel if r["replacement"] == "db"]
    assert {r["regex"] for r in db} == {
        ";(postgres|patroni|etcd)",
        ";(Postgres.*|Patroni.*|Etcd.*|PgBackRest.*)",
    }


# --- exporters over HTTPS (node_exporter_tls, postgresql_exporter_tls, ...) -------------

CA = "/etc/prometheus/tls/ca.crt"


def scrape_job(config: dict, name: str) -> dict:
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == name]
    return job


def schemes(job: dict) -> dict[str, str]:
    """instance -> the scheme Prometheus uses for it (job's, else the target's __scheme__)."""
    return {
        sc["labels"]["instance"]: sc["labels"].get("__scheme__", job.get("scheme", "http"))
        for sc in job["static_configs"]
    }


TLS_JOBS = {
    "node": "node_exporter_tls",
    "postgres": "postgresql_exporter_tls",
    "redis": "redis_exporter_tls",
    "nginx": "nginx_exporter_tls",
}


def test_the_exporters_are_scraped_over_https_checked_against_the_ca(render):
    c = render({"db": ["db1"], "cache": ["cache1"], "lb": ["lb1"], "app": ["app1"]})
    for name in TLS_JOBS:
        job = scrape_job(c, name)
        assert job["scheme"] == "https"
        assert job["tls_config"] == {"ca_file": CA}
        # One scheme for the job: no per-target label left.
        assert all("__scheme__" not in sc["labels"] for sc in job["static_configs"])
    assert set(schemes(scrape_job(c, "node"))) == {"mon", "db1", "cache1", "lb1", "app1"}
    # The others stay plain HTTP (mtail, the app, Prometheus itself).
    for name in ("nginx_log", "app", "prometheus"):
        job = scrape_job(c, name)
        assert job.get("scheme", "http") == "http" and "tls_config" not in job, job
    probe = scrape_job(c, "app_probe")
    assert "tls_config" not in probe and probe.get("scheme", "http") == "http"


def test_a_host_that_keeps_plain_http_is_scraped_over_http_in_the_same_job(render):
    both = ["db1", "db2"]
    c = render(
        {"db": both, "cache": both, "lb": both},
        {"db2": {v: False for v in TLS_JOBS.values()}},
    )
    for name in TLS_JOBS:
        job = scrape_job(c, name)
        assert "scheme" not in job
        assert job["tls_config"] == {"ca_file": CA}
        got = schemes(job)
        assert got["db1"] == "https" and got["db2"] == "http", got


def test_tls_switched_off_everywhere_is_plain_http(render):
    off = {v: False for v in TLS_JOBS.values()}
    c = render({"db": ["db1"], "cache": ["db1"], "lb": ["db1"]}, {h: off for h in ("mon", "db1")})
    for name in TLS_JOBS:
        job = scrape_job(c, name)
        assert "scheme" not in job and "tls_config" not in job
        assert set(schemes(job).values()) == {"http"}
