"""Exporters over HTTPS (issue 18): the values the node_exporter, prometheus and exporter
roles (postgresql, redis, nginx) share (the TLS default, the monitoring TLS files' paths)
kept equal. The scrape configuration's schemes are checked in
test_prometheus_scrape_config.py."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CA = "/etc/prometheus/tls/ca.crt"


# The roles whose exporter serves the node_exporter role's certificate: (role, prefix of
# its vars, its TLS variable).
EXPORTERS = [
    ("postgresql", "__postgresql_exporter", "postgresql_exporter_tls"),
    ("redis", "__redis_exporter", "redis_exporter_tls"),
    ("nginx", "__nginx_exporter", "nginx_exporter_tls"),
]


# --- what the roles must agree on ------------------------------------------------------


def load(role: str, kind: str) -> dict:
    return yaml.safe_load((REPO / "roles" / role / kind / "main.yml").read_text()) or {}


@pytest.mark.parametrize(
    ("owner", "name"),
    [("node_exporter", "node_exporter_tls")] + [(role, tls) for role, _prefix, tls in EXPORTERS],
)
def test_prometheus_tls_fallback_equals_the_exporter_roles_default(owner: str, name: str):
    theirs = load(owner, "defaults")[name]
    ours = load("prometheus", "vars")["__prometheus_exporter_tls_default"]
    env = jinja2.Environment()
    for groups in ({}, {"monitoring": []}, {"monitoring": ["m1"]}, {"monitoring": ["m1", "m2"]}):
        got = [env.from_string(str(v)).render(groups=groups).strip() for v in (ours, theirs)]
        assert got[0] == got[1], f"{groups}: prometheus says {got[0]}, {owner} {got[1]}"


def _resolved(variables: dict, name: str) -> str:
    """A role variable whose value refers to others of the same file, rendered."""
    env = jinja2.Environment()
    value = variables[name]
    for _unused in range(5):
        value = env.from_string(str(value)).render(**variables)
    return value


@pytest.mark.parametrize(("role", "prefix"), [(role, prefix) for role, prefix, _tls in EXPORTERS])
def test_the_exporters_serve_the_node_exporter_roles_certificate(role: str, prefix: str):
    node = load("node_exporter", "vars")
    theirs = load(role, "vars")
    assert _resolved(node, "__node_exporter_tls_cert") == theirs[f"{prefix}_tls_cert"]
    assert _resolved(node, "__node_exporter_tls_key") == theirs[f"{prefix}_tls_key"]


def test_prometheus_checks_them_against_the_node_exporter_roles_ca():
    node = load("node_exporter", "vars")
    prom = load("prometheus", "vars")
    assert _resolved(node, "__node_exporter_tls_ca_cert") == prom["__prometheus_exporters_ca_cert"]
    assert prom["__prometheus_exporters_ca_cert"] == CA
