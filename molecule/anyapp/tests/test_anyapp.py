"""Scenario anyapp: a real app nobody on the team wrote (full-stack-fastapi-template 0.9.0's
backend, vendored unmodified) deployed by playbooks/site.yml on one machine.

Through Nginx over HTTPS, verified against the machine's own certificate: the health
route, a login as the seeded superuser, a write and its read-back; the release holds the
app's data files; Gunicorn with Uvicorn workers in the role's unit; a deploy and a
rollback with the collection's playbooks under load, 0 failed; Prometheus quiet.

The tests run in file order: the drills change the release, Prometheus is read last."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import testinfra
import yaml
from testinfra.utils.ansible_runner import AnsibleRunner

SCENARIO = Path(__file__).resolve().parents[1]
ROOT = SCENARIO.parents[1]
sys.path.insert(0, str(ROOT))  # tools.loadgen

from tools.loadgen import DRILL_RATE, Load, Target  # noqa: E402
from tools.playbook import run_playbook  # noqa: E402

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
MACHINE = sorted(AnsibleRunner(INVENTORY).get_hosts("app"))[0]
APP_VARS = yaml.safe_load((SCENARIO / "group_vars" / "all.yml").read_text())
NAME = APP_VARS["app_name"]
APP_ROOT = f"/srv/{NAME}"
HEALTH = APP_VARS["app_health_path"]
SITE_PACKAGES = f"{APP_ROOT}/current/venv/lib/python3.11/site-packages"
VENDORED = ROOT / "tests/third_party/full-stack-fastapi-template/backend"
CONNECTIONS = 16

testinfra_hosts = [f"ansible://{MACHINE}"]


def machine():
    return testinfra.get_host(f"ansible://{MACHINE}", ansible_inventory=INVENTORY)


ADDRESS = machine().ansible.get_variables()["ansible_host"]
BASE = f"https://{ADDRESS}"


def request(client: httpx.Client, method: str, path: str, **kwargs) -> httpx.Response:
    """A request to the machine's address, its certificate checked for the machine's name."""
    return client.request(
        method,
        f"{BASE}{path}",
        headers={"Host": MACHINE, **kwargs.pop("headers", {})},
        extensions={"sni_hostname": MACHINE},
        **kwargs,
    )


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    """HTTPS client that trusts only the certificate Nginx serves on the machine."""
    pem = machine().file("/etc/nginx/tls/selfsigned.crt").content_string
    cafile = tmp_path_factory.mktemp("tls") / "lab.pem"
    cafile.write_text(pem)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cafile)), timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def token(client) -> str:
    resp = request(
        client,
        "POST",
        "/api/v1/login/access-token",
        data={
            "username": APP_VARS["app_env_extra"]["FIRST_SUPERUSER"],
            "password": APP_VARS["app_env_extra"]["FIRST_SUPERUSER_PASSWORD"],
        },
    )
    assert resp.status_code == 200, f"login of the seeded superuser: {resp.status_code} {resp.text}"
    body = resp.json()
    assert body["token_type"] == "bearer" and body["access_token"], body
    return body["access_token"]


@pytest.fixture(scope="module")
def item(client, token) -> dict:
    resp = request(
        client,
        "POST",
        "/api/v1/items/",
        json={"title": "anyapp", "description": "written through Nginx by molecule/anyapp"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200, f"POST /api/v1/items/: {resp.status_code} {resp.text}"
    return resp.json()


def state() -> dict:
    return json.loads(machine().file(f"{APP_ROOT}/releases.json").content_string)


def main_pid() -> int:
    return int(machine().check_output(f"systemctl show -p MainPID --value {NAME}.service"))


def serving_release() -> str:
    """The release directory the service's main process runs in (its working directory)."""
    return machine().check_output(f"readlink /proc/{main_pid()}/cwd")


def worker_pids() -> list[int]:
    return [int(p) for p in machine().check_output(f"pgrep -P {main_pid()} || true").split()]


def playbook(name: str, *args: str) -> subprocess.CompletedProcess:
    """One of the collection's playbooks against the scenario's inventory, as a user runs it."""
    return run_playbook(name, INVENTORY, *args)


def under_load(targets: list[Target], run, settle: float = 2.0):
    """Load before, during and after `run()`: (its result, the load, its wall time)."""
    # One app host: a restart queues requests in the socket for the old workers' drain
    # (up to Nginx's 5 s upstream keep-alive) plus this app's start (about 5 s on the lab's
    # 2 busy cores). The client waits 30 s, half of Nginx's proxy_read_timeout; the
    # slowest answer is printed (max_ms).
    load = Load(targets, connections=CONNECTIONS, duration=900, timeout=30, rate=DRILL_RATE)
    outcome, wall = load.around(run, settle)
    return outcome, load, wall


def report(name: str, load: Load, wall: float) -> None:
    r = load.result.summary()
    per_target = {n: t.summary()["statuses"] for n, t in load.by_target.items()}
    print(
        f"\n{name}: sent={r['sent']} failed={r['failed']} "
        f"(connection errors {r['connection_errors']}, non-2xx {r['non_2xx']}) "
        f"seconds={wall:.1f} rps={r['rps']} p99_ms={r['p99_ms']} "
        f"max_ms={max(load.result.latencies_ms, default=0):.0f} per target {per_target}"
    )


def assert_no_failures(load: Load) -> None:
    assert load.result.sent > 100, load.result.summary()
    for name, r in load.by_target.items():
        assert r.sent > 0, f"{name} was never sent"
    assert load.result.bad == 0, (
        f"{load.result.bad} failed: {load.result.summary()} "
        f"{ {n: t.summary()['statuses'] for n, t in load.by_target.items()} }"
    )


# --- (a) health through Nginx over HTTPS ------------------------------------------------


def test_health_route_through_nginx_over_https(client):
    resp = request(client, "GET", HEALTH)
    print(f"\nGET {HEALTH} -> {resp.status_code} {resp.text!r} ({resp.http_version})")
    assert resp.status_code == 200, resp.text
    assert resp.json() is True


def test_plain_http_redirects_to_https():
    resp = httpx.get(f"http://{ADDRESS}{HEALTH}", headers={"Host": MACHINE}, timeout=10)
    assert resp.status_code in (301, 308), resp.status_code
    assert resp.headers["location"].startswith("https://")


# --- (b) the seed ran: the superuser logs in, writes, reads back -----------------------


def test_superuser_writes_and_reads_an_item(client, token, item):
    resp = request(
        client, "GET", f"/api/v1/items/{item['id']}", headers={"Authorization": f"Bearer {token}"}
    )
    print(f"\nitem {item['id']}: GET -> {resp.status_code}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["title"] == "anyapp" and resp.json()["id"] == item["id"]


def test_wrong_password_is_refused(client):
    resp = request(
        client,
        "POST",
        "/api/v1/login/access-token",
        data={"username": APP_VARS["app_env_extra"]["FIRST_SUPERUSER"], "password": "wrong"},
    )
    assert resp.status_code == 400, resp.text


# --- (c) the app's data files survived its build ----------------------------------------


def test_email_templates_are_in_the_release():
    installed = machine().file(f"{SITE_PACKAGES}/app/email-templates/build")
    shipped = sorted(p.name for p in (VENDORED / "app/email-templates/build").glob("*.html"))
    print(f"\nshipped by the app: {shipped}")
    assert shipped, "the vendored tree has no built templates"
    assert installed.is_directory, f"{installed.path} is missing"
    assert sorted(installed.listdir()) == shipped
    assert machine().file(f"{SITE_PACKAGES}/app/alembic/env.py").exists


# --- (f) the role's hardened Gunicorn unit with Uvicorn workers -------------------------


def test_gunicorn_master_with_uvicorn_workers():
    m = machine()
    cmdline = m.file(f"/proc/{main_pid()}/cmdline").content_string.replace("\0", " ")
    assert "/venv/bin/gunicorn" in cmdline and APP_VARS["app_asgi_app"] in cmdline, cmdline
    conf = m.file(f"/etc/{NAME}/gunicorn.conf.py").content_string
    assert "worker_class = _draining_worker()" in conf
    workers = int(next(ln for ln in conf.splitlines() if ln.startswith("workers = ")).split()[-1])
    deadline = time.monotonic() + 20
    while len(worker_pids()) != workers and time.monotonic() < deadline:
        time.sleep(1)
    pids = worker_pids()
    assert len(pids) == workers >= 1, (pids, workers)
    # An Uvicorn worker has loaded the event loop and HTTP parser a sync worker never does.
    for pid in pids:
        maps = m.check_output(f"cat /proc/{pid}/maps")
        loaded = [lib for lib in ("uvloop", "httptools") if f"/site-packages/{lib}/" in maps]
        assert loaded, f"worker {pid} has neither uvloop nor httptools loaded"
    print(f"\nmaster {main_pid()}: {cmdline.strip()}; {len(pids)} Uvicorn workers {pids}")


def test_unit_is_hardened():
    props = dict(
        line.split("=", 1)
        for line in machine()
        .check_output(
            f"systemctl show -p User -p NoNewPrivileges -p ProtectSystem -p PrivateTmp "
            f"-p CapabilityBoundingSet {NAME}.service"
        )
        .splitlines()
    )
    assert props["User"] == NAME, props
    assert props["NoNewPrivileges"] == "yes" and props["ProtectSystem"] == "strict", props
    assert props["PrivateTmp"] == "yes" and props["CapabilityBoundingSet"] == "", props
    score = machine().run(f"systemd-analyze security --no-pager {NAME}.service | tail -n 1")
    print(f"\n{score.stdout.strip()}")


# --- (d) deploy and rollback with the collection's playbooks, under load ----------------


@pytest.fixture(scope="module")
def targets(token, item) -> list[Target]:
    """The health route (cacheable) and a read that bypasses Nginx's cache (Authorization)."""
    return [
        Target(f"{BASE}{HEALTH}", name="health"),
        Target(
            f"{BASE}/api/v1/items/{item['id']}",
            headers={"Authorization": f"Bearer {token}"},
            name="read item",
        ),
    ]


@pytest.fixture(scope="module")
def releases() -> dict:
    """What the drills record: the release before the deploy and the deployed one."""
    return {}


def test_deploy_under_load_has_zero_failed_requests(targets, releases):
    before = state()["current"]
    releases["before"] = before
    proc, load, wall = under_load(targets, lambda: playbook("deploy.yml", "-e", "app_build=2"))
    report("deploy app_build=2", load, wall)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert_no_failures(load)
    current = state()["current"]
    releases["deployed"] = current
    assert current.endswith("+2") and current != before, (before, current)
    assert serving_release() == f"{APP_ROOT}/releases/{current}"


def test_rollback_under_load_has_zero_failed_requests(targets, releases):
    assert releases.get("before"), "the deploy drill did not run"
    proc, load, wall = under_load(targets, lambda: playbook("rollback.yml"))
    report("rollback", load, wall)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert_no_failures(load)
    assert state()["current"] == releases["before"], state()
    assert serving_release() == f"{APP_ROOT}/releases/{releases['before']}"


# --- (e) Prometheus: targets up, no app job, no alert firing ----------------------------

# Alerts whose `for:` must have had time to elapse for "none firing" to mean something:
# a target, a service or the app's health probe down.
DOWN_ALERTS = {"TargetDown", "PostgresDown", "NginxDown", "AppHealthProbeFailing"}


def prometheus(path: str) -> dict:
    out = machine().check_output(f"curl -sf --max-time 10 http://{ADDRESS}:9090{path}")
    body = json.loads(out)
    assert body["status"] == "success", body
    return body["data"]


def prometheus_uptime() -> float:
    promql = 'time() - process_start_time_seconds{job="prometheus"}'
    result = prometheus(f"/api/v1/query?query={quote(promql)}")
    return float(result["result"][0]["value"][1])


def test_prometheus_targets_up_and_no_alert_firing():
    rules = [r for g in prometheus("/api/v1/rules")["groups"] for r in g["rules"]]
    longest = max((r["duration"] for r in rules if r.get("name") in DOWN_ALERTS), default=0)
    wait = longest + 15 - prometheus_uptime()  # + a few evaluations
    print(f"\nlongest `for:` of {sorted(DOWN_ALERTS)}: {longest:.0f}s; waiting {max(wait, 0):.0f}s")
    assert wait < 300, f"Prometheus only started {prometheus_uptime():.0f}s ago"
    if wait > 0:
        time.sleep(wait)
    started = time.time()
    deadline = time.monotonic() + 30
    while True:  # every target scraped since now
        active = prometheus("/api/v1/targets?state=active")["activeTargets"]
        fresh = [t for t in active if _epoch(t["lastScrape"]) > started]
        if len(fresh) == len(active) or time.monotonic() > deadline:
            break
        time.sleep(2)
    summary = sorted((t["labels"]["job"], t["labels"].get("instance"), t["health"]) for t in active)
    print(f"targets: {summary}")
    assert active and len(fresh) == len(active), "targets not scraped within 30 s"
    assert not [t for t in active if t["labels"]["job"] == "app"], "an `app` job: no /metrics here"
    assert [t for t in active if t["health"] != "up"] == [], summary
    time.sleep(6)  # one more evaluation after those scrapes
    alerts = prometheus("/api/v1/alerts")["alerts"]
    print(f"alerts: {[(a['labels']['alertname'], a['state']) for a in alerts]}")
    assert [a["labels"] for a in alerts if a["state"] == "firing"] == []
    assert [a["labels"] for a in alerts if a["labels"]["alertname"] in DOWN_ALERTS] == []


def _epoch(rfc3339: str) -> float:
    """Prometheus's RFC 3339 timestamps (nanoseconds, Z) as epoch seconds."""
    head, _unused, frac = rfc3339.rstrip("Z").partition(".")
    whole = datetime.fromisoformat(head + "+00:00").timestamp()
    return whole + (float("0." + frac[:6]) if frac else 0.0)
