"""Exporters over HTTPS (issue 18): the values the node_exporter, postgresql and prometheus
roles share (the TLS default, the monitoring TLS files' paths) kept equal. The scrape
configuration's schemes are checked in test_prometheus_scrape_config.py."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CA = "/etc/prometheus/tls/ca.crt"


# --- what the three roles must agree on ----------------------------------------------


def load(role: str, kind: str) -> dict:
    return yaml.safe_load((REPO / "roles" / role / kind / "main.yml").read_text()) or {}


@pytest.mark.parametrize(
    ("owner", "name"),
    [("node_exporter", "node_exporter_tls"), ("postgresql", "postgresql_exporter_tls")],
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


def test_the_monitoring_tls_paths_are_the_same_in_the_three_roles():
    node = load("node_exporter", "vars")
    pg = load("postgresql", "vars")
    prom = load("prometheus", "vars")
    assert _resolved(node, "__node_exporter_tls_cert") == pg["__postgresql_exporter_tls_cert"]
    assert _resolved(node, "__node_exporter_tls_key") == pg["__postgresql_exporter_tls_key"]
    assert _resolved(node, "__node_exporter_tls_ca_cert") == prom["__prometheus_exporters_ca_cert"]
    assert prom["__prometheus_exporters_ca_cert"] == CA
