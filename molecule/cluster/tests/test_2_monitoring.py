"""Live checks of the monitoring tier of the converged cluster, run on the monitoring host.

Targets, firewall, alert rules, retention, dashboards' metric names against a live scrape,
the app's request counter against traffic sent, the edge metrics (mtail on the lb) against
requests sent through Nginx, the health probe, the certificate expiry metric, Grafana's
provisioning, and Redis going down.

They run before the drills (file order): the drills' restarts, kills and reboots would
leave resets and gaps in the counters and targets checked here. The scenario's
group_vars/monitoring.yml scrapes every 5 s and watches prepare.yml's test certificate.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import quote

import yaml
from conftest import APP_HOSTS, CACHE, LB, MON, ROOT, address, group, machine

from tools import dashboards

testinfra_hosts = [MON]

RULES_DIR = ROOT / "roles" / "prometheus" / "files" / "rules"
DASHBOARDS_DIR = ROOT / "roles" / "grafana" / "files" / "dashboards"
ALL_HOSTS = group("all")
APP_PORT = 8000  # the app role's default, as in conftest.release_of

# Tier job -> (inventory group, port); the node job covers every host.
EXPORTERS = {
    "postgres": ("db", 9187),
    "redis": ("cache", 9121),
    "nginx": ("lb", 9113),
    "nginx_log": ("lb", 3903),  # mtail
}

# Exporters on HTTPS with a certificate of the monitoring CA (node_exporter_tls,
# postgresql_exporter_tls, redis_exporter_tls, nginx_exporter_tls: on, the inventory has a
# monitoring host); the CA's certificate on the monitoring host (the CA host) is what
# Prometheus checks them against. mtail serves plain HTTP.
TLS_JOBS = {"node", "postgres", "redis", "nginx"}
TLS_PORTS = {9100} | {port for job, (_group, port) in EXPORTERS.items() if job in TLS_JOBS}
MONITORING_CA = "/etc/prometheus/tls/ca.crt"


def curl_url(url: str) -> str:
    """curl's options and URL for a GET from the monitoring host, HTTPS checked against the CA."""
    return f"--cacert {MONITORING_CA} '{url}'" if url.startswith("https://") else f"'{url}'"


# Rule files whose metrics this scenario cannot export: no pgBackRest (molecule/backup
# checks backup.yml live), one db host so no Patroni and no etcd (molecule/patroni checks
# their names live).
RULES_ELSEWHERE = {"backup.yml", "patroni.yml", "etcd.yml"}
# Dashboard metrics of the same services (the postgres dashboard's Patroni cluster row).
METRICS_ELSEWHERE = ("patroni_", "etcd_")


def api(host, path: str) -> dict:
    url = f"http://{address(MON)}:9090{path}"
    out = host.check_output(f"curl -sS --max-time 10 '{url}'")
    doc = json.loads(out)
    assert doc["status"] == "success", doc
    return doc["data"]


def query(host, promql: str) -> list:
    return api(host, "/api/v1/query?query=" + quote(promql, safe=""))["result"]


def expected_targets() -> set[tuple[str, str]]:
    want = {("node", h) for h in ALL_HOSTS} | {("prometheus", MON)}
    want |= {("app", h) for h in APP_HOSTS}
    want |= {("app_probe", h) for h in APP_HOSTS}
    for job, (name, _unused) in EXPORTERS.items():
        want |= {(job, h) for h in group(name)}
    return want


def test_node_exporter_everywhere_on_private_address_hardened():
    for name in ALL_HOSTS:
        h = machine(name)
        assert h.service("prometheus-node-exporter").is_running
        assert h.socket(f"tcp://{address(name)}:9100").is_listening
        assert not h.socket("tcp://0.0.0.0:9100").is_listening
        out = h.check_output(
            "systemd-analyze security prometheus-node-exporter.service 2>&1 | tail -1"
        )
        exposure = float(re.search(r"level for \S+: ([\d.]+)", out).group(1))
        print(f"{name}: systemd-analyze security prometheus-node-exporter.service: {exposure}")
        assert exposure <= 2.0, out


def test_every_target_is_up(host):
    want = expected_targets()
    deadline = time.monotonic() + 90
    while True:
        active = api(host, "/api/v1/targets?state=active")["activeTargets"]
        got = {(t["labels"]["job"], t["labels"]["instance"]): t for t in active}
        down = {k: (t["health"], t["lastError"]) for k, t in got.items() if t["health"] != "up"}
        if set(got) == want and not down or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert set(got) == want
    assert down == {}


def test_exporters_serve_https_that_prometheus_verifies(host):
    """node_exporter on every host and the Postgres, Redis and Nginx exporters are scraped
    over HTTPS and up (Prometheus checks their certificates against the monitoring CA, the
    target's address against the IP SAN); plain HTTP is refused; HTTPS verifies with the
    CA, not without."""
    want = {("node", h) for h in ALL_HOSTS}
    want |= {
        (job, h) for job, (name, _port) in EXPORTERS.items() if job in TLS_JOBS for h in group(name)
    }
    deadline = time.monotonic() + 60
    while True:
        active = api(host, "/api/v1/targets?state=active")["activeTargets"]
        got = {
            (t["labels"]["job"], t["labels"]["instance"]): (
                t["health"],
                t["scrapeUrl"],
                t["lastError"],
            )
            for t in active
            if t["labels"]["job"] in TLS_JOBS
        }
        bad = {k: v for k, v in got.items() if v[0] != "up" or not v[1].startswith("https://")}
        if set(got) == want and not bad or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert set(got) == want
    assert bad == {}
    # Each exporter on a host of its group: plain HTTP is answered 400, not served; HTTPS is
    # verified with the monitoring CA (and the address as name), refused without it. The
    # line that starts its metrics shows that it is up.
    served = {
        "node": (group("db")[0], 9100, "node_exporter_build_info{"),
        "postgres": (group("db")[0], 9187, "pg_up 1"),
        "redis": (group("cache")[0], 9121, "redis_up 1"),
        "nginx": (group("lb")[0], 9113, "nginx_up 1"),
    }
    assert set(served) == TLS_JOBS
    for name, port, line in served.values():
        at = address(name)
        out = host.check_output(
            f"curl -sS --max-time 5 -w '\\n%{{http_code}}' http://{at}:{port}/metrics"
        )
        body, code = out.rsplit("\n", 1)
        assert code == "400" and "HTTP request to an HTTPS server" in body, out
        metrics = host.check_output(
            f"curl -sSf --max-time 5 {curl_url(f'https://{at}:{port}/metrics')}"
        )
        assert any(m.startswith(line) for m in metrics.splitlines()), (name, port)
        unverified = host.run(f"curl -sS -o /dev/null --max-time 5 https://{at}:{port}/metrics")
        assert unverified.rc == 60, unverified.stderr  # curl: peer certificate cannot be verified


def test_instance_labels_are_inventory_hostnames(host):
    # From the active targets: series of Debian's default config (localhost:9090), scraped
    # before the role's config was loaded, may still be in the TSDB.
    active = api(host, "/api/v1/targets?state=active")["activeTargets"]
    assert {t["labels"]["instance"] for t in active} == set(ALL_HOSTS)


def test_alert_rules_loaded(host):
    loaded = {
        r["name"] for g in api(host, "/api/v1/rules?type=alert")["groups"] for r in g["rules"]
    }
    defined = {
        r["alert"]
        for f in RULES_DIR.glob("*.yml")
        for g in yaml.safe_load(f.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    assert defined and loaded == defined


def test_retention_and_listen_address(host):
    flags = api(host, "/api/v1/status/flags")
    assert flags["storage.tsdb.retention.time"] == "15d"
    assert flags["web.listen-address"] == f"{address(MON)}:9090"
    assert host.run("promtool check config /etc/prometheus/prometheus.yml").rc == 0


def _ports_of(name) -> list[int]:
    ports = [9100]
    ports += [port for grp, port in EXPORTERS.values() if name in group(grp)]
    if name in group("monitoring"):
        ports += [9090, 9093]  # Prometheus, Alertmanager
    return ports


def test_ports_closed_from_non_monitoring_hosts(host):
    outsider = next(h for h in ALL_HOSTS if h not in group("monitoring"))
    ports = [(name, port) for name in ALL_HOSTS if name != outsider for port in _ports_of(name)]
    # All at once from the outsider: each must time out (dropped), not be refused or answered.
    probes = " ".join(
        f"(curl -s -o /dev/null --max-time 3 http://{address(name)}:{port}/metrics;"
        f" echo {name}:{port}:$?) &"
        for name, port in ports
    )
    timed_out = machine(outsider).check_output(f"{probes} wait").split()
    assert sorted(timed_out) == sorted(f"{name}:{port}:28" for name, port in ports), timed_out
    # ...and open from the monitoring host.
    for name, port in ports:
        scheme = "https" if port in TLS_PORTS else "http"
        url = curl_url(f"{scheme}://{address(name)}:{port}/metrics")
        assert host.run(f"curl -sf -o /dev/null --max-time 5 {url}").rc == 0, url


def live_metric_names(host) -> set[str]:
    """Names Prometheus has stored plus every name a target declares (# TYPE) in a scrape."""
    names = set(api(host, "/api/v1/label/__name__/values"))
    for t in api(host, "/api/v1/targets?state=active")["activeTargets"]:
        text = host.check_output(f"curl -sS --max-time 10 {curl_url(t['scrapeUrl'])}")
        for m in re.finditer(r"^# TYPE (\S+) (\w+)", text, re.M):
            name, kind = m.groups()
            names.add(name)
            if kind in ("histogram", "summary"):
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def exercise_app(host) -> None:
    """Labelled counters appear on first use: read products twice (cache miss, then hit)."""
    for a in APP_HOSTS:
        for _unused in range(2):
            host.check_output(
                f"curl -sf --max-time 10 http://{address(a)}:{APP_PORT}/api/v1/products"
            )


def exercise_edge(host, n: int) -> None:
    """n GETs of /health/live through the lb's Nginx (HTTPS, self-signed), each 200."""
    out = host.check_output(
        f"for i in $(seq {n}); do curl -sk -o /dev/null -w '%{{http_code}}\\n' "
        f"--max-time 10 https://{address(LB)}/health/live; done"
    )
    assert out.split() == ["200"] * n, out


def _edge_count(host) -> float:
    r = query(
        host,
        f'sum(nginx_http_requests_total{{job="nginx_log", instance="{LB}", method="GET", '
        f'status="200"}})',
    )
    return float(r[0]["value"][1]) if r else 0.0


def test_requests_through_nginx_are_counted_per_app(host):
    """mtail reads the JSON access log: n requests through Nginx add n to the counter."""
    n = 10  # within the rate limit's burst (20): every one is a 200
    exercise_edge(host, 1)  # the series exists from its first request on
    deadline = time.monotonic() + 30
    while _edge_count(host) == 0:
        assert time.monotonic() < deadline, f"no nginx_http_requests_total from {LB}"
        time.sleep(2)
    time.sleep(6)  # the log is flushed every second, scraped every 5 s
    before = _edge_count(host)
    exercise_edge(host, n)
    deadline, after = time.monotonic() + 60, before
    while after - before < n and time.monotonic() < deadline:
        time.sleep(2)
        after = _edge_count(host)
    assert after - before == n, (LB, before, after)
    print(f"{LB}: nginx_http_requests_total GET 200 before={before} after={after}")
    # One app label per Nginx (nginx_app_name: the app hosts' app_name, here the app role's
    # default), and latency in the millisecond buckets.
    app_name = yaml.safe_load((ROOT / "roles/app/defaults/main.yml").read_text())["app_name"]
    apps = query(host, 'count by (app) (nginx_http_requests_total{job="nginx_log"})')
    assert [r["metric"]["app"] for r in apps] == [app_name]
    fast = query(host, 'sum(nginx_http_request_duration_seconds_bucket{job="nginx_log", le="0.1"})')
    assert fast and float(fast[0]["value"][1]) >= n


def test_app_health_probe_succeeds(host):
    deadline = time.monotonic() + 60
    while True:
        got = {
            r["metric"]["instance"]: r["value"][1]
            for r in query(host, 'probe_success{job="app_probe"}')
        }
        if got == {a: "1" for a in APP_HOSTS} or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert got == {a: "1" for a in APP_HOSTS}
    status = query(host, 'probe_http_status_code{job="app_probe"}')
    assert {r["value"][1] for r in status} == {"200"}


def test_blackbox_and_mtail_listen_where_they_should_hardened(host):
    checks = [
        (host, "prometheus-blackbox-exporter", "127.0.0.1:9115"),
        (machine(LB), "mtail", f"{address(LB)}:3903"),
        (host, "prometheus-alertmanager", f"{address(MON)}:9093"),
    ]
    for h, unit, listen in checks:
        assert h.service(unit).is_running and h.service(unit).is_enabled
        assert h.socket(f"tcp://{listen}").is_listening
        port = listen.rsplit(":", 1)[1]
        assert not h.socket(f"tcp://0.0.0.0:{port}").is_listening
        assert not h.socket(f"tcp://:::{port}").is_listening
        out = h.check_output(f"systemd-analyze security {unit}.service 2>&1 | tail -1")
        exposure = float(re.search(r"level for \S+: ([\d.]+)", out).group(1))
        print(f"systemd-analyze security {unit}.service: {exposure}")
        assert exposure <= 2.0, out


def test_dashboard_metric_names_are_exported(host):
    exercise_app(host)
    exercise_edge(host, 2)
    live = live_metric_names(host)
    missing = {}
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        used = set()
        for q in dashboards.queries(json.loads(path.read_text())):
            used |= dashboards.metric_names(q)
        used = {n for n in used if not n.startswith(METRICS_ELSEWHERE)}
        if used - live:
            missing[path.name] = sorted(used - live)
    assert missing == {}


def test_certificate_expiry_metric(host):
    pem = "/etc/ssl/lab/monitoring.pem"  # made by prepare.yml
    end = host.check_output(
        f'date -d "$(openssl x509 -in {pem} -noout -enddate | cut -d= -f2)" +%s'
    )
    result = query(host, f'node_tls_certificate_not_after_seconds{{path="{pem}"}}')
    assert result and int(float(result[0]["value"][1])) == int(end)


def test_grafana_provisioning(host):
    ini = host.file("/etc/grafana/grafana.ini")
    assert (ini.user, ini.group, ini.mode) == ("root", "grafana", 0o640)
    text = ini.content_string
    assert re.search(r"^\[auth\.anonymous\]\nenabled = false$", text, re.M)
    assert not re.search(r'^admin_password = """admin"""$', text, re.M)
    assert re.search(r"^allow_sign_up = false$", text, re.M)
    ds = json.loads(
        host.file("/etc/grafana/provisioning/datasources/fastapi-ops.yml").content_string
    )
    url = ds["datasources"][0]["url"]
    assert ds["datasources"][0]["uid"] == "prometheus"
    assert host.run(f"curl -sf --max-time 5 {url}/-/ready").rc == 0
    for path in DASHBOARDS_DIR.glob("*.json"):
        remote = host.file(f"/etc/grafana/dashboards/{path.name}")
        assert json.loads(remote.content_string) == json.loads(path.read_text())
    # The lab has no Grafana package: nothing pretends it runs.
    assert not host.package("grafana").is_installed
    assert not host.service("grafana-server").is_running


def _counter(host, route: str) -> float:
    r = query(host, f'sum(http_requests_total{{job="app", route="{route}"}})')
    return float(r[0]["value"][1]) if r else 0.0


LOAD = r"""
import http.client, sys, threading
hosts, port, path, n = sys.argv[1].split(","), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
ok = [0]; lock = threading.Lock()
def run(h, count):
    c = http.client.HTTPConnection(h, port, timeout=10)
    for _ in range(count):
        c.request("GET", path); r = c.getresponse(); r.read()
        if r.status == 200:
            with lock: ok[0] += 1
threads = [threading.Thread(target=run, args=(hosts[i % len(hosts)], n // 8)) for i in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
print(ok[0])
"""


def test_app_request_rate_matches_traffic(host):
    route, n = "/health/live", 2000
    targets = ",".join(address(a) for a in APP_HOSTS)
    host.run("cat > /tmp/load.py <<'EOF'\n" + LOAD + "\nEOF")
    # The series exists from its first request on: create it, and let a scrape see it,
    # so that the baseline and rate() have samples before the measured traffic.
    host.check_output(f"python3 /tmp/load.py {targets} {APP_PORT} {route} 8")
    deadline = time.monotonic() + 30
    while not query(host, f'http_requests_total{{job="app", route="{route}"}}'):
        assert time.monotonic() < deadline, "the app's counter never showed up in Prometheus"
        time.sleep(2)
    time.sleep(6)  # one more scrape (5 s in the lab) so rate() has two samples
    before = _counter(host, route)
    sent = int(host.check_output(f"python3 /tmp/load.py {targets} {APP_PORT} {route} {n}"))
    assert sent == n
    deadline, after = time.monotonic() + 60, before
    while time.monotonic() < deadline:
        time.sleep(5)
        after = _counter(host, route)
        if after - before >= n:
            break
    assert abs((after - before) - n) <= 0.01 * n, (before, after, n)
    print(f"app counter {route}: before={before} after={after} sent={n}")
    rate = query(host, f'sum(rate(http_requests_total{{job="app", route="{route}"}}[1m]))')
    assert rate and float(rate[0]["value"][1]) > 0
    # Several workers: the counter is the merge of every worker's file (multiprocess mode).
    unit = "fastapi-ops-app.service"
    workers = int(
        machine(APP_HOSTS[0]).check_output(
            f"pgrep -c -P $(systemctl show -p MainPID --value {unit})"
        )
    )
    assert workers >= 2, "the check is meant to sum over several Gunicorn workers"
    print(f"workers on {APP_HOSTS[0]}: {workers}")


def test_redis_down_shows_live(host):
    name = CACHE
    cache = machine(name)
    service = "redis-server"

    def redis_up() -> str:
        r = query(host, f'redis_up{{instance="{name}"}}')
        return r[0]["value"][1] if r else "absent"

    assert redis_up() == "1"
    cache.run(f"systemctl stop {service}")
    try:
        deadline = time.monotonic() + 60
        while redis_up() != "0" and time.monotonic() < deadline:
            time.sleep(2)
        assert redis_up() == "0"
        # The exporter itself stays up: the target is up, redis_up says Redis is not.
        assert query(host, f'up{{job="redis", instance="{name}"}}')[0]["value"][1] == "1"
    finally:
        cache.run(f"systemctl start {service}")
    deadline = time.monotonic() + 60
    while redis_up() != "1" and time.monotonic() < deadline:
        time.sleep(2)
    assert redis_up() == "1"


def test_alert_rule_metric_names_are_exported(host):
    live = live_metric_names(host)
    missing = {}
    for f in sorted(RULES_DIR.glob("*.yml")):
        if f.name in RULES_ELSEWHERE:
            continue
        for g in yaml.safe_load(f.read_text())["groups"]:
            for r in g["rules"]:
                # Recorded series (level:metric:operation) are made by the rules themselves.
                used = {n for n in dashboards.metric_names(r["expr"]) if ":" not in n}
                if used - live:
                    missing[r.get("alert", r.get("record"))] = sorted(used - live)
    assert missing == {}
