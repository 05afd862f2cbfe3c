"""Shared helpers for the cluster scenario: the controller drives playbooks and load.

Host names come from the inventory's groups, so the tests also run against any lab
with the same shape (MOLECULE_INVENTORY_FILE=... pytest molecule/cluster/tests)."""

import json
import os
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))  # tools.*

from tools.api_token import auth_headers, token_for  # noqa: E402
from tools.loadgen import DRILL_RATE, Load, Target, new_product  # noqa: E402
from tools.playbook import run_playbook  # noqa: E402

INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
_RUNNER = AnsibleRunner(INVENTORY)


def group(name):
    return sorted(_RUNNER.get_hosts(name))


LB = group("lb")[0]
APP_HOSTS = group("app")
DB = group("db")[0]
CACHE = group("cache")[0]
MON = group("monitoring")[0]
REPORT = ROOT / ".cache" / "cluster-drills.json"
# A client that never retries, on keep-alive connections, with GETs and POSTs.
CONNECTIONS = 32
# The writes' token outlives the scenario (CI gives it 60 minutes).
WRITE_TOKEN_TTL = 4 * 3600


def machine(name):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=INVENTORY)


def address(name):
    return machine(name).ansible.get_variables()["ansible_host"]


def playbook(name, *args, timeout=1200):
    """Run one of the collection's playbooks against the cluster, as a user would."""
    return run_playbook(name, INVENTORY, *args, timeout=timeout)


def release_of(app_host):
    """The release an app host serves, asked from the lb (the app port is closed to us)."""
    out = machine(LB).check_output(f"curl -sf --max-time 5 http://{address(app_host)}:8000/version")
    return json.loads(out)["release"]


def record(name, **figures):
    """Keep the drill figures for the issue note and bench/RESULTS.md, and print them."""
    REPORT.parent.mkdir(exist_ok=True)
    data = json.loads(REPORT.read_text()) if REPORT.exists() else {}
    data[name] = figures
    REPORT.write_text(json.dumps(data, indent=2))
    print(f"\n{name}: {json.dumps(figures)}")


@pytest.fixture(scope="session")
def lb_url():
    return f"https://{address(LB)}"


@pytest.fixture(scope="session")
def write_token():
    """The token the drills' writes send (scope products:write), minted on the first app host."""
    return token_for(INVENTORY, "cluster-drills", ttl=WRITE_TOKEN_TTL)


@pytest.fixture(scope="session")
def product_id(lb_url, write_token):
    """A product created through the lb, read by the load."""
    return create_product(lb_url, write_token)


def create_product(lb_url, write_token):
    with httpx.Client(verify=False, timeout=10) as client:
        resp = client.post(
            f"{lb_url}/api/v1/products",
            json={
                "sku": f"drill-{uuid.uuid4().hex[:8]}",
                "name": "Drill",
                "price": "9.99",
                "category": "drills",
            },
            headers=auth_headers(write_token),
        )
        assert resp.status_code == 201, resp.text
        return resp.json()["id"]


def mixed_targets(lb_url, product_id, write_token):
    """Uncached reads (an Authorization header bypasses Nginx's cache; the app ignores it
    on reads), cacheable reads, a cheap route and writes (with the token)."""
    uncached = {"Authorization": "Bearer drill"}
    return [
        Target(f"{lb_url}/api/v1/products/{product_id}", headers=uncached, name="read"),
        Target(f"{lb_url}/api/v1/products?page=1", name="cached read"),
        Target(f"{lb_url}/version", name="version"),
        Target(
            f"{lb_url}/api/v1/products",
            "POST",
            new_product,
            headers=auth_headers(write_token),
            name="write",
        ),
    ]


def under_load(targets, run, settle=2.0, timeout=10.0):
    """Load before, during and after `run()`; returns (run's result, load, wall time).
    `timeout`: how long the client waits for an answer before it counts a failure."""
    load = Load(targets, connections=CONNECTIONS, duration=900, rate=DRILL_RATE, timeout=timeout)
    outcome, wall = load.around(run, settle)
    return outcome, load, wall


def figures(load, wall, **extra):
    r = load.result
    per_target = {name: t.summary()["statuses"] for name, t in load.by_target.items()}
    return dict(
        wall_s=round(wall, 1),
        sent=r.sent,
        failed=r.bad,
        connection_errors=r.failures,
        non_2xx=r.non_2xx,
        errors=dict(r.errors),
        rps=r.summary()["rps"],
        p99_ms=r.summary()["p99_ms"],
        per_target=per_target,
        **extra,
    )


def outside_window(load, start_monotonic, end_monotonic, margin=2.0):
    """Bad requests outside [start, end + margin] (monotonic times, compared in wall time)."""
    if end_monotonic is None:
        return load.result.bad
    offset = time.time() - time.monotonic()
    start, end = start_monotonic + offset, end_monotonic + offset + margin
    return sum(1 for t in load.result.failure_times if not start <= t <= end)


def nginx_errors(lines=8):
    """The lb's last Nginx errors, for a failure message (what Nginx saw of the upstreams)."""
    return machine(LB).run(f"tail -n {lines} /var/log/nginx/error.log").stdout.strip()


def describe(load):
    """A failure message whose first line says what each target got (CI shows the head)."""
    per_target = {name: t.summary()["statuses"] for name, t in load.by_target.items()}
    return f"{load.result.bad} failed: {per_target} {load.result.summary()}\n{nginx_errors()}"


def assert_no_failures(load):
    assert load.result.sent > 100, load.result.summary()
    if load.result.bad:
        pytest.fail(describe(load))
    for name, r in load.by_target.items():
        assert r.sent > 0, f"{name} was never sent: {load.result.summary()}"
