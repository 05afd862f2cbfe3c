"""Drills on the converged cluster, each under bounded HTTPS load through Nginx:
rolling deploy, rollback, failed rollout, reboot of an app machine.

The tests run in file order and each starts from the state the previous one left."""

import json
import re
import shutil
import time
import uuid

import httpx
import pytest
from conftest import APP_HOSTS, ROOT, address, machine, playbook, release_of

from tools.loadgen import Load

testinfra_hosts = ["cl-lb"]
CONNECTIONS = 50
REPORT = ROOT / ".cache" / "cluster-drills.json"


def record(name, **figures):
    """Keep the drill figures for the issue note and bench/RESULTS.md."""
    REPORT.parent.mkdir(exist_ok=True)
    data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    data[name] = figures
    REPORT.write_text(json.dumps(data, indent=2))
    print(name, figures)


@pytest.fixture(scope="module")
def urls(lb_url):
    """A product created through the lb; the load reads it (cacheable) and /version."""
    sku = f"drill-{uuid.uuid4().hex[:8]}"
    with httpx.Client(verify=False, timeout=10) as client:
        resp = client.post(
            f"{lb_url}/api/v1/products",
            json={"sku": sku, "name": "Drill", "price": "9.99", "category": "drills"},
        )
        assert resp.status_code == 201, resp.text
        pid = resp.json()["id"]
    return [f"{lb_url}/api/v1/products/{pid}", f"{lb_url}/version"]


def under_load(urls, run):
    load = Load(urls, connections=CONNECTIONS, duration=900).start()
    time.sleep(2)  # steady state before the change
    started = time.monotonic()
    proc = run()
    wall = time.monotonic() - started
    time.sleep(2)
    result = load.stop()
    return proc, result, wall


def drained(app_host):
    """Whether the lb's upstream marks this app host down."""
    upstream = machine("cl-lb").check_output("cat /etc/nginx/fastapi_ops/upstream.conf")
    member = re.search(rf"^\s*server {re.escape(address(app_host))}:8000 .*$", upstream, re.M)
    assert member, upstream
    return " down;" in member.group(0)


def assert_no_failures(result):
    summary = result.summary()
    assert result.sent > 100, summary
    assert result.failures == 0 and result.server_errors == 0, summary
    assert result.statuses.get(200, 0) > 0, summary


def test_rolling_deploy_has_zero_failed_requests(urls):
    before = release_of("cl-app1")
    proc, result, wall = under_load(urls, lambda: playbook("deploy.yml", "-e", "app_build=drill1"))
    assert proc.returncode == 0, proc.stdout[-4000:]
    record("rolling_deploy", wall_s=round(wall, 1), **result.summary())
    assert_no_failures(result)
    for host in APP_HOSTS:
        assert release_of(host).endswith("+drill1") and release_of(host) != before


def test_rollback_has_zero_failed_requests(urls):
    proc, result, wall = under_load(urls, lambda: playbook("rollback.yml"))
    assert proc.returncode == 0, proc.stdout[-4000:]
    record("rollback", wall_s=round(wall, 1), **result.summary())
    assert_no_failures(result)
    for host in APP_HOSTS:
        assert not release_of(host).endswith("+drill1")


@pytest.fixture
def broken_source(tmp_path):
    """The reference app with an import-time crash: a release that must not roll out."""
    src = tmp_path / "app"
    shutil.copytree(
        ROOT / "app", src, ignore=shutil.ignore_patterns("tests", "*.egg-info", "__pycache__")
    )
    main = src / "app" / "main.py"
    main.write_text(main.read_text() + '\nraise RuntimeError("drill: a broken release")\n')
    return src


def test_failed_rollout_stops_on_first_batch_and_rollback_restores(urls, broken_source):
    old = {h: release_of(h) for h in APP_HOSTS}
    proc, result, wall = under_load(
        urls,
        lambda: playbook(
            "deploy.yml",
            "-e",
            f"app_source_dir={broken_source}",
            "-e",
            "app_build=broken",
            "-e",
            "app_health_retries=5",
        ),
    )
    record("failed_rollout", wall_s=round(wall, 1), **result.summary())
    assert proc.returncode != 0, "the broken release was rolled out"
    assert_no_failures(result)
    # The second app host was never touched and still serves the old release.
    assert release_of("cl-app2") == old["cl-app2"]
    assert drained("cl-app1") and not drained("cl-app2")

    proc, result, wall = under_load(urls, lambda: playbook("rollback.yml", "--limit", "cl-app1"))
    record("rollback_after_failed_rollout", wall_s=round(wall, 1), **result.summary())
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert_no_failures(result)
    assert release_of("cl-app1") == old["cl-app1"]
    assert not drained("cl-app1")


def test_reboot_of_an_app_machine_under_load(urls):
    app2 = machine("cl-app2")
    started_before = app2.check_output("ps -o lstart= -p 1")

    def reboot_and_wait():
        app2.run("systemctl reboot")
        deadline = time.monotonic() + 180
        rebooted = False
        while time.monotonic() < deadline:
            time.sleep(2)
            if not rebooted:  # first see it go down and come up with a new PID 1
                try:
                    probe = app2.run("ps -o lstart= -p 1")
                except Exception:  # unreachable while it reboots
                    continue
                rebooted = probe.rc == 0 and probe.stdout.strip() != started_before
                continue
            try:
                if release_of("cl-app2"):
                    return True
            except AssertionError:
                continue
        return False

    came_back, result, wall = under_load(urls, reboot_and_wait)
    record("reboot_app2", wall_s=round(wall, 1), **result.summary())
    assert came_back, "cl-app2 did not come back within 180 s"
    assert app2.check_output("ps -o lstart= -p 1") != started_before, "no reboot happened"
    assert_no_failures(result)
    for unit in (
        "fastapi-ops-app.socket",
        "fastapi-ops-app.service",
        "nftables.service",
        "prometheus-node-exporter.service",
    ):
        svc = app2.service(unit)
        assert svc.is_enabled and svc.is_running, unit
