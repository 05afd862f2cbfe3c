"""Generate the grafana role's dashboards (roles/grafana/files/dashboards/*.json) and list
the metric names a dashboard's queries use.

    python -m tools.dashboards          # rewrite roles/grafana/files/dashboards/*.json
    python -m tools.dashboards --check  # exit 1 when the JSON is stale

The JSON is committed (the role copies it as is); tests compare it with this generator
and the metric names with a live scrape of the lab (molecule/cluster, test_2_monitoring.py).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "roles" / "grafana" / "files" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # provisioned with this uid
SCHEMA_VERSION = 39
RATE = "$__rate_interval"
# Every deploy and rollback, drawn at the time the release went live on its first host:
# the app role exports the serving release and its activation time (node_exporter's
# textfile collector), and Grafana takes the value as the annotation's time.
DEPLOYS = {
    "name": "Deploys",
    "datasource": DATASOURCE,
    "enable": True,
    "iconColor": "#8AB8FF",
    "expr": (
        "min by (app, release, previous, action) "
        "(fastapi_ops_app_release_activated_timestamp_seconds) * 1000"
    ),
    "step": "1m",
    "useValueForTime": True,
    "titleFormat": "{{action}} {{app}} {{release}}",
    "textFormat": "from {{previous}}",
    "tagKeys": "app,action",
}


def _target(expr: str, legend: str, ref: str) -> dict:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


def panel(
    title: str,
    exprs: list[tuple[str, str]],
    unit: str = "short",
    kind: str = "timeseries",
    width: int = 12,
    height: int = 8,
    description: str = "",
) -> dict:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},
        "targets": [_target(e, leg, chr(ord("A") + i)) for i, (e, leg) in enumerate(exprs)],
    }


def row(title: str) -> dict:
    """A row header across the grid (not collapsed: the panels after it are its own)."""
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
    }


def dashboard(
    uid: str,
    title: str,
    panels: list[dict],
    variables: list[dict] | None = None,
    tags: tuple[str, ...] = (),
    annotations: tuple[dict, ...] = (),
) -> dict:
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):  # lay panels out left to right, 24 columns
        p["id"] = i
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"].update(x=x, y=y)
        x, row_h = x + w, max(row_h, h)
    return {
        "uid": uid,
        "title": title,
        "tags": ["fastapi-ops", *tags],
        "timezone": "utc",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": variables or []},
        "annotations": {"list": list(annotations)},
        "panels": panels,
    }


def query_variable(name: str, query: str) -> dict:
    """A multi-value template variable (All by default) filled by a Prometheus query."""
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": query, "refId": name},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def instance_variable(metric: str, job: str) -> dict:
    return query_variable("instance", f'label_values({metric}{{job="{job}"}}, instance)')


def app_red() -> dict:
    sel = 'job="app", route!="/metrics"'
    return dashboard(
        "fastapi-ops-app",
        "App: requests, errors, duration",
        [
            panel(
                "Request rate by route",
                [(f"sum by (route) (rate(http_requests_total{{{sel}}}[{RATE}]))", "{{route}}")],
                unit="reqps",
            ),
            panel(
                "Responses by status",
                [(f"sum by (status) (rate(http_requests_total{{{sel}}}[{RATE}]))", "{{status}}")],
                unit="reqps",
            ),
            panel(
                "5xx ratio by route",
                [
                    (
                        f"sum by (route) "
                        f'(rate(http_requests_total{{{sel}, status=~"5.."}}[{RATE}]))'
                        f" / sum by (route) (rate(http_requests_total{{{sel}}}[{RATE}]))",
                        "{{route}}",
                    )
                ],
                unit="percentunit",
                description="Alert AppHighErrorRatio: above 5 % for 5 minutes.",
            ),
            panel(
                "Latency p99 by route",
                [
                    (
                        f"histogram_quantile(0.99, sum by (route, le) "
                        f"(rate(http_request_duration_seconds_bucket{{{sel}}}[{RATE}])))",
                        "{{route}}",
                    )
                ],
                unit="s",
                description="Alert AppHighLatencyP99: above 500 ms for 10 minutes.",
            ),
            panel(
                "Latency p50 / p90 / p99 (all routes)",
                [
                    (
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(http_request_duration_seconds_bucket{{{sel}}}[{RATE}])))",
                        f"p{int(q * 100)}",
                    )
                    for q in (0.5, 0.9, 0.99)
                ],
                unit="s",
            ),
            panel(
                "Requests in flight by host",
                [('sum by (instance) (http_requests_in_flight{job="app"})', "{{instance}}")],
            ),
            panel(
                "Database pool (sum over workers)",
                [
                    (
                        'sum by (instance) (app_db_pool_checked_out{job="app"})',
                        "{{instance}} in use",
                    ),
                    ('sum by (instance) (app_db_pool_size{job="app"})', "{{instance}} pool size"),
                    (
                        'sum by (instance) (app_db_pool_overflow{job="app"})',
                        "{{instance}} overflow",
                    ),
                ],
            ),
            panel(
                "Cache hit ratio",
                [
                    (
                        f'sum by (cache) (rate(app_cache_hits_total{{job="app"}}[{RATE}])) / ('
                        f'sum by (cache) (rate(app_cache_hits_total{{job="app"}}[{RATE}])) + '
                        f'sum by (cache) (rate(app_cache_misses_total{{job="app"}}[{RATE}])))',
                        "{{cache}}",
                    )
                ],
                unit="percentunit",
            ),
        ],
        tags=("app",),
        annotations=(DEPLOYS,),
    )


def app_variable() -> dict:
    return query_variable("app", "label_values(nginx_http_requests_total, app)")


def edge_red() -> dict:
    """Every app's RED signals from Nginx's access log (mtail) and the health probe:
    works for any app, whether or not it exports metrics itself."""
    sel = 'app=~"$app"'
    reqs = f"nginx_http_requests_total{{{sel}}}"
    buckets = f"nginx_http_request_duration_seconds_bucket{{{sel}}}"
    return dashboard(
        "fastapi-ops-edge",
        "Edge: requests, errors, duration per app (Nginx)",
        [
            panel(
                "Request rate by app",
                [(f"sum by (app) (rate({reqs}[{RATE}]))", "{{app}}")],
                unit="reqps",
            ),
            panel(
                "Responses by status",
                [(f"sum by (app, status) (rate({reqs}[{RATE}]))", "{{app}} {{status}}")],
                unit="reqps",
            ),
            panel(
                "5xx ratio by app",
                [
                    (
                        f"sum by (app) (rate(nginx_http_requests_total"
                        f'{{{sel}, status=~"5.."}}[{RATE}]))'
                        f" / sum by (app) (rate({reqs}[{RATE}]))",
                        "{{app}}",
                    )
                ],
                unit="percentunit",
                description="Alert EdgeHighErrorRatio: above 5 % for 5 minutes.",
            ),
            panel(
                "Latency p50 / p95 / p99 by app",
                [
                    (
                        f"histogram_quantile({q}, sum by (app, le) (rate({buckets}[{RATE}])))",
                        f"{{{{app}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
                unit="s",
                description="Alerts EdgeHighLatencyP95 (250 ms), EdgeHighLatencyP99 (1 s): 10 min.",
            ),
            panel(
                "Health probe by host",
                [('probe_success{job="app_probe"}', "{{instance}}")],
                kind="stat",
                description="1: the health route answered 2xx. AppHealthProbeFailing: 0 for 3 min.",
            ),
            panel(
                "Health probe duration by host",
                [('probe_duration_seconds{job="app_probe"}', "{{instance}}")],
                unit="s",
            ),
        ],
        [app_variable()],
        tags=("app", "nginx"),
        annotations=(DEPLOYS,),
    )


def hosts() -> dict:
    i = 'instance=~"$instance"'
    return dashboard(
        "fastapi-ops-hosts",
        "Hosts (node_exporter)",
        [
            panel(
                "Up", [(f'up{{job="node", {i}}}', "{{instance}}")], kind="stat", width=24, height=4
            ),
            panel(
                "CPU busy",
                [
                    (
                        f"1 - avg by (instance) "
                        f'(rate(node_cpu_seconds_total{{mode="idle", {i}}}[{RATE}]))',
                        "{{instance}}",
                    )
                ],
                unit="percentunit",
            ),
            panel("Load (1 min)", [(f"node_load1{{{i}}}", "{{instance}}")]),
            panel(
                "Memory available",
                [
                    (
                        f"node_memory_MemAvailable_bytes{{{i}}}"
                        f" / node_memory_MemTotal_bytes{{{i}}}",
                        "{{instance}}",
                    )
                ],
                unit="percentunit",
            ),
            panel(
                "Disk space free",
                [
                    (
                        f'node_filesystem_avail_bytes{{fstype!~"tmpfs|ramfs|squashfs|nsfs", {i}}}'
                        f" / node_filesystem_size_bytes"
                        f'{{fstype!~"tmpfs|ramfs|squashfs|nsfs", {i}}}',
                        "{{instance}} {{mountpoint}}",
                    )
                ],
                unit="percentunit",
                description="Alert DiskSpaceLow: below 10 %.",
            ),
            panel(
                "Network",
                [
                    (
                        f"sum by (instance) (rate(node_network_receive_bytes_total"
                        f'{{device!="lo", {i}}}[{RATE}]))',
                        "{{instance}} in",
                    ),
                    (
                        f"sum by (instance) (rate(node_network_transmit_bytes_total"
                        f'{{device!="lo", {i}}}[{RATE}]))',
                        "{{instance}} out",
                    ),
                ],
                unit="Bps",
            ),
            panel(
                "Failed systemd units",
                [
                    (
                        f'sum by (instance) (node_systemd_unit_state{{state="failed", {i}}})',
                        "{{instance}}",
                    )
                ],
            ),
            panel(
                "TLS certificate days left",
                [
                    (
                        f"(node_tls_certificate_not_after_seconds{{{i}}} - time()) / 86400",
                        "{{instance}} {{path}}",
                    )
                ],
                unit="d",
            ),
        ],
        [instance_variable("node_uname_info", "node")],
        tags=("hosts",),
    )


def postgres() -> dict:
    i = 'job="postgres", instance=~"$instance"'
    return dashboard(
        "fastapi-ops-postgres",
        "PostgreSQL",
        [
            panel("Up", [(f"pg_up{{{i}}}", "{{instance}}")], kind="stat", width=24, height=4),
            panel(
                "Connections by state",
                [
                    (
                        f"sum by (instance, state) (pg_stat_activity_count{{{i}}})",
                        "{{instance}} {{state}}",
                    ),
                    (f"max by (instance) (pg_settings_max_connections{{{i}}})", "{{instance}} max"),
                ],
            ),
            panel(
                "Transactions",
                [
                    (
                        f"sum by (instance) (rate(pg_stat_database_xact_commit{{{i}}}[{RATE}]))",
                        "{{instance}} commit",
                    ),
                    (
                        f"sum by (instance) (rate(pg_stat_database_xact_rollback{{{i}}}[{RATE}]))",
                        "{{instance}} rollback",
                    ),
                ],
                unit="ops",
            ),
            panel(
                "Buffer cache hit ratio",
                [
                    (
                        f"sum by (instance) (rate(pg_stat_database_blks_hit{{{i}}}[{RATE}])) / ("
                        f"sum by (instance) (rate(pg_stat_database_blks_hit{{{i}}}[{RATE}])) + "
                        f"sum by (instance) (rate(pg_stat_database_blks_read{{{i}}}[{RATE}])))",
                        "{{instance}}",
                    )
                ],
                unit="percentunit",
            ),
            panel(
                "Database size",
                [(f"pg_database_size_bytes{{{i}}}", "{{instance}} {{datname}}")],
                unit="bytes",
            ),
            panel(
                "Deadlocks",
                [
                    (
                        f"sum by (instance) (increase(pg_stat_database_deadlocks{{{i}}}[{RATE}]))",
                        "{{instance}}",
                    )
                ],
            ),
            *patroni_cluster(),
        ],
        [instance_variable("pg_up", "postgres")],
        tags=("postgres",),
    )


def patroni_cluster() -> list[dict]:
    """The postgres dashboard's row for a Patroni cluster (jobs patroni and etcd; empty
    without one). The etcd members need not be db hosts: not filtered by $instance."""
    i = 'job="patroni", instance=~"$instance"'
    e = 'job="etcd"'
    replica = (
        f"and on (instance, job, scope) patroni_replica{{{i}}} == 1 "
        f"and on (instance, job, scope) patroni_postgres_running{{{i}}} == 1"
    )
    primary = 'max by (job, scope) (patroni_xlog_location{job="patroni"})'
    return [
        row("Patroni cluster and etcd"),
        panel(
            "Leader per member",
            [
                (f"patroni_primary{{{i}}}", "{{instance}} ({{scope}})"),
            ],
            kind="stat",
            width=8,
            height=4,
            description="1: the member is the primary. Alert PatroniNoLeader: none for 30 s.",
        ),
        panel(
            "Members up (Patroni API, PostgreSQL)",
            [
                (f"up{{{i}}}", "{{instance}} Patroni"),
                (f"patroni_postgres_running{{{i}}}", "{{instance}} PostgreSQL"),
            ],
            kind="stat",
            width=8,
            height=4,
            description="Alert PatroniMemberDown: either is 0 for 1 minute.",
        ),
        panel(
            "etcd has leader",
            [(f"etcd_server_has_leader{{{e}}}", "{{instance}}")],
            kind="stat",
            width=8,
            height=4,
            description="Alerts EtcdNoLeader (0 for 1 min), EtcdInsufficientMembers (no majority).",
        ),
        panel(
            "Replication lag behind the primary",
            [
                (
                    f"{primary} - on (job, scope) group_right () "
                    f"(patroni_xlog_received_location{{{i}}} {replica})",
                    "{{instance}} received",
                ),
                (
                    f"{primary} - on (job, scope) group_right () "
                    f"(patroni_xlog_replayed_location{{{i}}} {replica})",
                    "{{instance}} replayed",
                ),
            ],
            unit="bytes",
            description="Alert PatroniReplicationLag: received lag above 16 MiB for 1 minute.",
        ),
        panel(
            "etcd leader changes",
            [
                (
                    f"increase(etcd_server_leader_changes_seen_total{{{e}}}[{RATE}])",
                    "{{instance}}",
                )
            ],
            description="Alert EtcdFrequentLeaderChanges: 4 or more in 15 minutes.",
        ),
    ]


def redis() -> dict:
    i = 'job="redis", instance=~"$instance"'
    return dashboard(
        "fastapi-ops-redis",
        "Redis",
        [
            panel("Up", [(f"redis_up{{{i}}}", "{{instance}}")], kind="stat", width=24, height=4),
            panel(
                "Memory used / maxmemory",
                [
                    (f"redis_memory_used_bytes{{{i}}}", "{{instance}} used"),
                    (f"redis_memory_max_bytes{{{i}}}", "{{instance}} maxmemory"),
                ],
                unit="bytes",
            ),
            panel(
                "Commands",
                [
                    (
                        f"sum by (instance) (rate(redis_commands_processed_total{{{i}}}[{RATE}]))",
                        "{{instance}}",
                    )
                ],
                unit="ops",
            ),
            panel(
                "Keyspace hit ratio",
                [
                    (
                        f"rate(redis_keyspace_hits_total{{{i}}}[{RATE}])"
                        f" / (rate(redis_keyspace_hits_total{{{i}}}[{RATE}])"
                        f" + rate(redis_keyspace_misses_total{{{i}}}[{RATE}]))",
                        "{{instance}}",
                    )
                ],
                unit="percentunit",
            ),
            panel(
                "Evicted and expired keys",
                [
                    (f"rate(redis_evicted_keys_total{{{i}}}[{RATE}])", "{{instance}} evicted"),
                    (f"rate(redis_expired_keys_total{{{i}}}[{RATE}])", "{{instance}} expired"),
                ],
                unit="ops",
            ),
            panel("Clients", [(f"redis_connected_clients{{{i}}}", "{{instance}}")]),
        ],
        [instance_variable("redis_up", "redis")],
        tags=("redis",),
    )


def nginx() -> dict:
    i = 'job="nginx", instance=~"$instance"'
    return dashboard(
        "fastapi-ops-nginx",
        "Nginx",
        [
            panel("Up", [(f"nginx_up{{{i}}}", "{{instance}}")], kind="stat", width=24, height=4),
            panel(
                "Requests",
                [(f"rate(nginx_http_requests_total{{{i}}}[{RATE}])", "{{instance}}")],
                unit="reqps",
            ),
            panel(
                "Connections",
                [
                    (f"nginx_connections_active{{{i}}}", "{{instance}} active"),
                    (f"nginx_connections_reading{{{i}}}", "{{instance}} reading"),
                    (f"nginx_connections_writing{{{i}}}", "{{instance}} writing"),
                    (f"nginx_connections_waiting{{{i}}}", "{{instance}} waiting"),
                ],
            ),
            panel(
                "Dropped connections (accepted - handled)",
                [
                    (
                        f"rate(nginx_connections_accepted{{{i}}}[{RATE}])"
                        f" - rate(nginx_connections_handled{{{i}}}[{RATE}])",
                        "{{instance}}",
                    )
                ],
            ),
        ],
        [instance_variable("nginx_up", "nginx")],
        tags=("nginx",),
    )


DASHBOARDS = {
    "app-red": app_red,
    "edge-red": edge_red,
    "hosts": hosts,
    "postgres": postgres,
    "redis": redis,
    "nginx": nginx,
}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name](), indent=2, sort_keys=True) + "\n"


# --- metric names in PromQL ---------------------------------------------------------

_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\w+")
_LABEL_VALUES = re.compile(r"label_values\(\s*([^,)]*)(?:,[^)]*)?\)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords, labels excluded)."""
    expr = _LABEL_VALUES.sub(r"\1", expr)
    expr = _STRING.sub('""', expr)
    expr = _GRAFANA_VAR.sub("1m", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges, subqueries
    expr = _GROUPING.sub("", expr)
    names = set()
    for m in _IDENT.finditer(expr):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def queries(dash: dict) -> Iterator[str]:
    """Every PromQL query of a dashboard: panel targets, query variables, annotations."""
    for p in dash.get("panels", []):
        for sub in [p, *p.get("panels", [])]:
            for t in sub.get("targets", []):
                if t.get("expr"):
                    yield t["expr"]
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            yield q["query"] if isinstance(q, dict) else q
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            yield a["expr"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the JSON files are stale")
    args = parser.parse_args()
    stale = []
    for name in DASHBOARDS:
        path = OUT / f"{name}.json"
        text = render(name)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_text(text)
    if args.check and stale:
        print("stale, run python -m tools.dashboards:", *stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
