"""The grafana role's dashboards: generated JSON is current, each is a well-formed Grafana
dashboard on the provisioned data source, and the PromQL metric-name extraction that the
live check (molecule/cluster/tests/test_2_monitoring.py) relies on is right.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tools import dashboards  # the checkout's tools/ is on sys.path (tests/unit/conftest.py)

REPO = Path(__file__).resolve().parents[3]
ROLE = REPO / "roles" / "grafana"
DASHBOARD_FILES = sorted((ROLE / "files" / "dashboards").glob("*.json"))


PANEL_TYPES = {"timeseries", "stat", "gauge", "table", "bargauge", "text", "row", "heatmap"}


def datasource_uid() -> str:
    return yaml.safe_load((ROLE / "vars" / "main.yml").read_text())["__grafana_datasource_uid"]


def test_the_dashboards_exist():
    assert {p.stem for p in DASHBOARD_FILES} == {
        "app-red",
        "edge-red",
        "hosts",
        "postgres",
        "redis",
        "nginx",
    }


@pytest.mark.parametrize("name", sorted(dashboards.DASHBOARDS))
def test_committed_json_is_the_generators_output(name: str):
    path = ROLE / "files" / "dashboards" / f"{name}.json"
    assert path.read_text() == dashboards.render(name), "stale: run python -m tools.dashboards"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_valid_grafana_dashboard(path: Path):
    dash = json.loads(path.read_text())
    uid = datasource_uid()
    assert isinstance(dash["title"], str) and dash["title"]
    assert 0 < len(dash["uid"]) <= 40
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 36
    assert "id" not in dash or dash["id"] is None  # provisioning assigns ids
    panels = dash["panels"]
    assert panels
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert p["type"] in PANEL_TYPES
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and 0 <= g["x"] and g["x"] + g["w"] <= 24
        if p["type"] == "row":  # a header across the grid; the panels below it are its own
            assert (g["x"], g["w"], g["h"]) == (0, 24, 1) and p["title"]
            assert p["collapsed"] is False and p["panels"] == [] and "targets" not in p
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": uid}
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs))
        for t in p["targets"]:
            assert t["datasource"]["uid"] == uid
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            assert t["expr"].count("{") == t["expr"].count("}"), t["expr"]
            assert dashboards.metric_names(t["expr"]), f"no metric in {t['expr']!r}"
    # No two panels overlap on the grid.
    cells = set()
    for p in panels:
        g = p["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine
    for v in dash["templating"]["list"]:
        assert v["datasource"]["uid"] == uid


def test_dashboard_uids_are_unique():
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARD_FILES]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (route) (rate(http_requests_total{job="app"}[$__rate_interval]))',
            {"http_requests_total"},
        ),
        (
            'histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{a=~"b|c"}[5m])))',
            {"x_bucket"},
        ),
        ("a / on (instance) group_left (le) b > bool 0.5", {"a", "b"}),
        ('label_values(node_uname_info{job="node"}, instance)', {"node_uname_info"}),
        ("label_values(nginx_http_requests_total, app)", {"nginx_http_requests_total"}),
        (
            'histogram_quantile(0.95, sum by (app, le) (rate(x_bucket{app=~"$app"}[5m])))',
            {"x_bucket"},
        ),
        (
            "(node_tls_certificate_not_after_seconds - time()) / 86400 < 1e3",
            {"node_tls_certificate_not_after_seconds"},
        ),
        ('up{job="node", instance=~"$instance"} == 0 and on() vector(1)', {"up"}),
        (
            "sum without (cpu) (rate(node_cpu_seconds_total[1m] offset 5m))",
            {"node_cpu_seconds_total"},
        ),
    ],
)
def test_metric_names(expr: str, names: set[str]):
    assert dashboards.metric_names(expr) == names


def deploy_metric_names() -> set[str]:
    """What the app role exports through node_exporter's textfile collector."""
    text = (REPO / "roles" / "app" / "templates" / "release.prom.j2").read_text()
    return set(re.findall(r"# TYPE (\w+) gauge", text))


def test_both_app_dashboards_draw_deploys_from_the_app_roles_metric():
    assert deploy_metric_names() == {"fastapi_ops_app_release_activated_timestamp_seconds"}
    for name in ("app-red", "edge-red"):
        dash = json.loads((ROLE / f"files/dashboards/{name}.json").read_text())
        (deploys,) = dash["annotations"]["list"]
        assert deploys["useValueForTime"] and deploys["datasource"] == dashboards.DATASOURCE
        assert dashboards.metric_names(deploys["expr"]) == deploy_metric_names()
        assert deploys["expr"] in dashboards.queries(dash)


def test_app_dashboard_uses_the_apps_metric_names():
    """Offline cross-check with app/app/metrics.py (the live check runs in molecule)."""
    source = (REPO / "app" / "app" / "metrics.py").read_text()
    used = set()
    for q in dashboards.queries(json.loads((ROLE / "files/dashboards/app-red.json").read_text())):
        used |= dashboards.metric_names(q)
    for name in used - deploy_metric_names():
        base = name.removesuffix("_bucket")
        assert f'"{base}"' in source, f"{name} is not defined in app/app/metrics.py"


# What the edge dashboard may use besides the mtail program's metrics: the blackbox
# exporter's http prober (the live check in the cluster scenario scrapes both).
BLACKBOX_METRICS = {"probe_success", "probe_duration_seconds", "probe_http_status_code"}


def mtail_metric_names() -> set[str]:
    """Metrics the nginx role's mtail program declares (histograms with their series)."""
    text = (REPO / "roles" / "nginx" / "files" / "mtail" / "nginx.mtail").read_text()
    names = set()
    for kind, name in re.findall(r"^(counter|gauge|histogram)\s+(\w+)", text, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def test_edge_dashboard_uses_only_edge_metrics():
    """Works for any app: nothing from the app's own /metrics, only Nginx's log, the probe
    and the app role's deploy metric."""
    assert {"nginx_http_requests_total", "nginx_http_request_duration_seconds_bucket"} <= (
        mtail_metric_names()
    )
    used = set()
    for q in dashboards.queries(json.loads((ROLE / "files/dashboards/edge-red.json").read_text())):
        used |= dashboards.metric_names(q)
    assert used and used <= mtail_metric_names() | BLACKBOX_METRICS | deploy_metric_names(), used


def test_patroni_row_uses_only_names_patroni_and_etcd_export():
    """The postgres dashboard's Patroni cluster row, checked offline against Patroni 3.0.2's
    and etcd 3.4.23's sources (the cluster scenario has no Patroni to scrape)."""
    doc = yaml.safe_load((REPO / "tests" / "unit" / "fixtures" / "ha_metrics.yml").read_text())
    dash = json.loads((ROLE / "files/dashboards/postgres.json").read_text())
    titles = [p["title"] for p in dash["panels"]]
    assert "Patroni cluster and etcd" in titles
    used = set()
    for q in dashboards.queries(dash):
        used |= {n for n in dashboards.metric_names(q) if n.startswith(("patroni_", "etcd_"))}
    assert {"patroni_primary", "etcd_server_has_leader"} <= used
    assert used - set(doc["patroni"]) - set(doc["etcd"]) == set()
