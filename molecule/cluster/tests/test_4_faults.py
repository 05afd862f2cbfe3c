"""Faults under the mixed load of the drills, seen from the edge: a dependency outage,
a burst on a cheap route, kill -9 of every kind of server process, a reboot of every
kind of machine. Each prints what the client sent, what failed and how long recovery
took, and checks that every service came back by itself.

A dependency outage is an answer, not a dead member: while PostgreSQL is down the app
answers writes with 503 + Retry-After and readiness with 503 naming the database, reads
come from the caches, and Nginx never marks a member failed (no 502)."""

import base64
import calendar
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import (
    APP_HOSTS,
    CACHE,
    CONNECTIONS,
    DB,
    LB,
    MON,
    address,
    auth_headers,
    create_product,
    describe,
    figures,
    machine,
    mixed_targets,
    outside_window,
    playbook,
    record,
    under_load,
)

from tools.systemd import start

testinfra_hosts = [LB]
PG_UNIT = "postgresql@15-main"
OUTAGE = 13  # seconds, as in the report that opened the issue
UPSTREAM_TROUBLE = re.compile(
    r"no live upstreams|reset by peer|prematurely closed|temporarily disabled"
)


@pytest.fixture(scope="module")
def targets(lb_url, product_id, write_token):
    return mixed_targets(lb_url, product_id, write_token)


class ReadyProbe:
    """Polls /health/ready through the lb, as a client sees it: (time, status). Its body
    says nothing more there (the controller is outside the app's HEALTH_DETAIL_NETWORKS):
    failing_checks() asks which checks fail."""

    def __init__(self, lb_url):
        self.url, self.seen, self._stop = f"{lb_url}/health/ready", [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with httpx.Client(verify=False, timeout=5) as client:
            while not self._stop.is_set():
                sent = time.time()  # when the question was asked, not answered
                try:
                    self.seen.append((sent, client.get(self.url).status_code))
                except httpx.HTTPError:
                    self.seen.append((sent, 0))
                time.sleep(0.25)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def statuses(self, start, end):
        return {s for t, s in self.seen if start <= t <= end}

    def first_ok_after(self, t0):
        return next((t for t, s in self.seen if t >= t0 and s == 200), None)


def failing_checks():
    """The checks each app host's readiness names as failing, asked from the lb: it is
    inside the app's HEALTH_DETAIL_NETWORKS, which gives it the whole body."""
    return {
        host: json.loads(
            machine(LB).check_output(
                f"curl -s --max-time 5 http://{address(host)}:8000/health/ready"
            )
        ).get("failing")
        for host in APP_HOSTS
    }


def lb_error_log_since(offset):
    return machine(LB).run(f"tail -c +{offset + 1} /var/log/nginx/error.log").stdout


def lb_error_log_size():
    return int(machine(LB).check_output("stat -c %s /var/log/nginx/error.log"))


def redis_errors(since):
    """The app's "redis unavailable" log lines since `since` (epoch), per app host."""
    return {
        host: machine(host)
        .run(
            f"journalctl -u fastapi-ops-app -o cat --no-pager --since @{int(since)} "
            "| grep 'redis unavailable' | tail -n 3"
        )
        .stdout.strip()
        for host in APP_HOSTS
    }


def last_bad_after(result, t0):
    return max((t for t in result.failure_times if t >= t0), default=None)


def outage(host, unit, lb_url, targets):
    """Stop a dependency for OUTAGE seconds under load; return the figures."""
    log_at = lb_error_log_size()
    with ReadyProbe(lb_url) as probe:

        def run():
            machine(host).check_output(f"systemctl stop {unit}")
            down = time.time()
            time.sleep(OUTAGE / 2)
            failing = failing_checks()
            time.sleep(max(0.0, down + OUTAGE - time.time()))
            restarting = time.time()  # the service may answer before `start` returns
            start(machine(host), unit)
            return down, restarting, time.time(), failing

        (down, restarting, up, failing), load, wall = under_load(targets, run)
        time.sleep(3)  # the probe sees the recovery
    during = probe.statuses(down + 2, restarting)
    ready_back = probe.first_ok_after(up)
    writes = load.by_target["write"]
    figs = figures(
        load,
        wall,
        outage_s=round(up - down, 1),
        ready_during=sorted(during),
        failing_during=failing,
        ready_back_after_s=round(ready_back - up, 1) if ready_back else None,
        writes_back_after_s=round((last_bad_after(writes, up) or up) - up, 1),
    )
    return figs, load, probe, (down, up), lb_error_log_since(log_at)


def test_postgresql_down_is_a_503_not_a_502(lb_url, write_token):
    # A product new to the caches: its entry (5 min) outlives the outage. An older one's
    # may expire while PostgreSQL is down, and the reads of it are then 503s (as a cache
    # miss is in the kill -9 drill).
    targets = mixed_targets(lb_url, create_product(lb_url, write_token), write_token)
    figs, load, probe, (down, up), errors = outage(DB, PG_UNIT, lb_url, targets)
    record("postgresql_down", **figs)
    by = load.by_target
    # Reads from the caches, and routes that never touch the database, stay 200. A read
    # that fails went to the database: its Redis call failed (the app logs why).
    for name in ("read", "cached read", "version"):
        assert set(by[name].statuses) == {200}, (name, dict(by[name].statuses), redis_errors(down))
    # Writes: the app's own 503 with Retry-After, never a 500 or a 502.
    assert set(by["write"].statuses) <= {201, 503} and by["write"].statuses[503] > 0, figs
    assert load.result.failures == 0, figs
    # Readiness names the database; Nginx passed the 503 on (no 502 while the app is up).
    assert figs["ready_during"] == [503], figs
    assert figs["failing_during"] == {h: ["database"] for h in APP_HOSTS}, figs
    assert figs["ready_back_after_s"] is not None and figs["ready_back_after_s"] <= 5, figs
    assert figs["writes_back_after_s"] <= 5, figs
    assert not UPSTREAM_TROUBLE.search(errors), errors[-2000:]


def test_write_during_outage_says_when_to_retry(lb_url, write_token):
    machine(DB).check_output(f"systemctl stop {PG_UNIT}")
    try:
        resp = httpx.post(
            f"{lb_url}/api/v1/products",
            json={"sku": "outage-1", "name": "x", "price": "1.00", "category": "drills"},
            headers=auth_headers(write_token),
            verify=False,
            timeout=10,
        )
    finally:
        start(machine(DB), PG_UNIT)
    assert resp.status_code == 503 and int(resp.headers["retry-after"]) > 0, resp.text
    assert "database" in resp.text and "Error" not in resp.text, resp.text


# Alerting: PostgreSQL down reaches a person. Alertmanager on the monitoring host sends to
# a webhook receiver the test runs there (group_vars/monitoring.yml: alertmanager_receivers,
# short `for:`, group_wait and group_interval for the lab).
HOOK_UNIT = "lab-webhook"
HOOK_PORT = 9099
HOOK_FILE = "/var/tmp/lab-webhook.jsonl"
HOOK_SCRIPT = "/usr/local/lib/lab-webhook.py"
RECEIVER = Path(__file__).with_name("webhook_receiver.py")
RUNBOOK = (
    "https://example.invalid/fastapi_ops/stack/blob/main/roles/prometheus/README.md#postgresdown"
)
SILENCE_AUTHOR = "fastapi_ops.stack maintenance"  # roles/alertmanager/vars/main.yml
ALERTMANAGER_ALONE = Path(__file__).parents[1] / "alertmanager.yml"


def am(path):
    """Alertmanager's API v2, asked on the monitoring host (9093 is open to it only)."""
    url = f"http://{address(MON)}:9093/api/v2/{path}"
    return json.loads(machine(MON).check_output(f"curl -sf --max-time 5 '{url}'"))


def epoch(rfc3339):
    return calendar.timegm(time.strptime(rfc3339[:19], "%Y-%m-%dT%H:%M:%S"))


def notifications(since):
    """What the receiver got since `since` (epoch), oldest first."""
    out = machine(MON).run(f"cat {HOOK_FILE} 2>/dev/null").stdout
    return [n for n in map(json.loads, out.splitlines()) if n["received"] >= since]


def mentions(n, alertname, since, instance=None):
    """The alerts of notification n with this name (and instance) that started after since."""
    return [
        a
        for a in n["body"]["alerts"]
        if a["labels"].get("alertname") == alertname
        and instance in (None, a["labels"].get("instance"))
        and epoch(a["startsAt"]) >= int(since)
    ]


def pg_notifications(since, status):
    return [
        n
        for n in notifications(since)
        if n["body"]["status"] == status and mentions(n, "PostgresDown", since, DB)
    ]


def pg_alerts():
    """PostgresDown of the db host in Alertmanager (firing: resolved ones are not listed)."""
    return [
        a
        for a in am("alerts")
        if a["labels"]["alertname"] == "PostgresDown" and a["labels"]["instance"] == DB
    ]


def no_postgres_alert():
    """The drills before this one stopped PostgreSQL too, and PostgresDown keeps firing for
    15 s after (keep_firing_for): start from none, or this fault merges into that alert
    (same startsAt, notified before this fault)."""
    assert wait_for(lambda: not pg_alerts(), 60), pg_alerts()
    time.sleep(5)  # one more evaluation: nothing pending either


def wait_for(what, timeout, step=1.0):
    deadline = time.monotonic() + timeout
    while (found := what()) in (None, [], False) and time.monotonic() < deadline:
        time.sleep(step)
    return found


@pytest.fixture(scope="module")
def webhook():
    """The receiver on the monitoring host, a transient unit, stopped at the end."""
    mon = machine(MON)
    script = base64.b64encode(RECEIVER.read_bytes()).decode()
    mon.check_output(f"echo {script} | base64 -d > {HOOK_SCRIPT} && rm -f {HOOK_FILE}")
    mon.check_output(
        f"systemd-run --unit={HOOK_UNIT} --collect "
        f"python3 {HOOK_SCRIPT} 127.0.0.1 {HOOK_PORT} {HOOK_FILE}"
    )
    assert wait_for(lambda: mon.socket(f"tcp://127.0.0.1:{HOOK_PORT}").is_listening, 10)
    yield
    mon.run(f"systemctl stop {HOOK_UNIT}; rm -f {HOOK_SCRIPT}")


def test_postgresql_down_notifies_once_with_the_runbook_and_inhibits_readiness(webhook):
    db = machine(DB)

    def readiness_inhibited():
        alerts = [a for a in am("alerts") if a["labels"]["alertname"] == "AppHealthProbeFailing"]
        inhibited = {a["labels"]["instance"] for a in alerts if a["status"]["inhibitedBy"]}
        return alerts if inhibited == set(APP_HOSTS) else None

    no_postgres_alert()
    down = time.time()
    db.check_output(f"systemctl stop {PG_UNIT}")
    try:
        fired = wait_for(lambda: pg_notifications(down, "firing"), 90)
        inhibited = wait_for(readiness_inhibited, max(5.0, down + 60 - time.time()))
    finally:
        restarted = time.time()
        start(db, PG_UNIT)
    resolved = wait_for(lambda: pg_notifications(down, "resolved"), 90)
    time.sleep(6)  # a duplicate would come at the next group_interval (5 s in the lab)
    got = notifications(down)
    firing, resolved = pg_notifications(down, "firing"), pg_notifications(down, "resolved")
    record(
        "alerting_postgresql_down",
        fault_to_notification_s=round(fired[0]["received"] - down, 1) if fired else None,
        restart_to_resolved_s=round(resolved[0]["received"] - restarted, 1) if resolved else None,
        notifications=len(got),
        postgres_down_firing=len(firing),
        postgres_down_resolved=len(resolved),
        readiness_alerts_inhibited=len(inhibited or []),
        readiness_notified=sum(len(mentions(n, "AppHealthProbeFailing", down)) for n in got),
    )
    assert len(firing) == 1 and len(resolved) == 1, got
    body = firing[0]["body"]
    assert body["groupLabels"] == {"alertname": "PostgresDown", "tier": "db"}, body
    assert [a["annotations"]["runbook_url"] for a in body["alerts"]] == [RUNBOOK], body
    # The app's readiness alert fired (both app hosts) and was inhibited, never sent.
    assert inhibited, am("alerts")
    assert not any(mentions(n, "AppHealthProbeFailing", down) for n in got), got


def test_the_maintenance_silence_suppresses_it(webhook):
    db = machine(DB)
    on = playbook("maintenance.yml", "-e", "maintenance=on")
    assert on.returncode == 0, on.stdout[-3000:]
    silences = [
        s["id"]
        for s in am("silences")
        if s["createdBy"] == SILENCE_AUTHOR and s["status"]["state"] == "active"
    ]
    assert len(silences) == 1, am("silences")

    no_postgres_alert()
    down = time.time()
    db.check_output(f"systemctl stop {PG_UNIT}")
    try:
        silenced = wait_for(lambda: [a for a in pg_alerts() if a["status"]["silencedBy"]], 90)
        time.sleep(4)  # group_wait (2 s in the lab) and more: it would have been sent
    finally:
        start(db, PG_UNIT)
    cleared = wait_for(lambda: not pg_alerts(), 90)
    off = playbook("maintenance.yml", "-e", "maintenance=off")
    assert off.returncode == 0, off.stdout[-3000:]
    left = [s for s in am("silences") if s["id"] in silences]
    sent = [n for n in notifications(down) if mentions(n, "PostgresDown", down)]
    record(
        "alerting_maintenance_silence",
        silenced=len(silenced or []),
        notified=len(sent),
        silence_state_after_off=[s["status"]["state"] for s in left],
    )
    assert silenced and silenced[0]["status"]["silencedBy"] == silences, pg_alerts()
    assert cleared, pg_alerts()
    assert sent == [], sent
    assert [s["status"]["state"] for s in left] == ["expired"], left


def test_amtool_rejects_a_broken_config_and_the_live_one_stays():
    mon = machine(MON)
    live = "/etc/prometheus/alertmanager.yml"
    before = mon.check_output(f"sha256sum {live}")
    # A route to a receiver that does not exist: amtool says no...
    broken = mon.run(
        f"sed 's/receiver: lab-webhook/receiver: nosuch/' {live} > /tmp/broken.yml"
        " && amtool check-config /tmp/broken.yml; rc=$?; rm -f /tmp/broken.yml; exit $rc"
    )
    assert broken.rc != 0 and "nosuch" in broken.stdout + broken.stderr, broken.stdout
    # ...and so does the role, before anything is written (template validate:).
    run = playbook(
        ALERTMANAGER_ALONE,
        "-e",
        json.dumps({"alertmanager_routes": [{"receiver": "nosuch", "severity": ["critical"]}]}),
        timeout=300,
    )
    fatal = run.stdout.find("fatal: [")
    assert run.returncode != 0 and fatal > 0, run.stdout[-3000:]
    task = run.stdout[run.stdout.rfind("TASK [", 0, fatal) : fatal]
    assert "amtool check-config" in task, run.stdout[-3000:]
    assert mon.check_output(f"sha256sum {live}") == before
    assert mon.run(f"curl -sf --max-time 5 http://{address(MON)}:9093/-/ready").rc == 0


def test_redis_down_reads_from_postgresql(lb_url, targets):
    figs, load, probe, _unused, errors = outage(CACHE, "redis-server", lb_url, targets)
    record("redis_down", **figs)
    assert load.result.bad == 0, figs
    assert figs["ready_during"] == [503], figs
    assert figs["failing_during"] == {h: ["redis"] for h in APP_HOSTS}, figs
    assert figs["ready_back_after_s"] is not None and figs["ready_back_after_s"] <= 5, figs
    assert not UPSTREAM_TROUBLE.search(errors), errors[-2000:]


def wrk(url, seconds=8, connections=32):
    """wrk never retries; its timeout is the load generator's (10 s), not its 2 s default."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "--latency", url],
        capture_output=True, text=True, timeout=seconds + 30, check=False
    ).stdout  # fmt: skip
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    kinds = (
        dict(zip(("connect", "read", "write", "timeout"), map(int, socket.groups()), strict=True))
        if socket
        else {}
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {
        "sent": requests,
        "non_2xx": non_2xx,
        "socket_errors": sum(kinds.values()),
        "socket_error_kinds": kinds,
        "rps": rps,
    }


def test_burst_on_a_cheap_route_fails_nothing(lb_url):
    log_at = lb_error_log_size()
    result = wrk(f"{lb_url}/version")
    errors = lb_error_log_since(log_at)
    record("burst_version", **result)
    assert result["sent"] > 1000 and result["non_2xx"] == 0 and result["socket_errors"] == 0, result
    assert not UPSTREAM_TROUBLE.search(errors), errors[-2000:]


def test_nginx_reload_costs_at_most_one_request_per_client_connection(targets):
    """A change of the edge (site.yml on an lb) needs a reload: old workers close their
    idle client keep-alive connections, and a client that never retries can lose the
    request it sent on one at that moment. Measured, and bounded by the connections."""
    _unused, load, wall = under_load(
        targets, lambda: machine(LB).check_output("systemctl reload nginx")
    )
    record("nginx_reload", **figures(load, wall))
    assert load.result.sent > 100 and load.result.non_2xx == 0, load.result.summary()
    assert load.result.failures <= CONNECTIONS, load.result.summary()


def wait_active(host, unit, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if machine(host).run(f"systemctl is-active {unit}").stdout.strip() == "active":
                return time.monotonic()
        except Exception:  # the machine is rebooting
            pass
        time.sleep(0.5)
    return None


@pytest.mark.parametrize(
    "host, unit, main",
    [
        (APP_HOSTS[0], "fastapi-ops-app", "gunicorn master"),
        (DB, PG_UNIT, "postmaster"),
        (CACHE, "redis-server", "redis-server"),
        (LB, "nginx", "nginx master"),
    ],
    ids=["gunicorn-master", "postmaster", "redis", "nginx-master"],
)
def test_kill_9_of_a_main_process_comes_back_by_itself(lb_url, targets, host, unit, main):
    pid = machine(host).check_output(f"systemctl show -p MainPID --value {unit}")
    assert int(pid) > 0

    def kill():
        # The outage starts when the kill is sent: requests in flight on the process fail
        # while the SSH command that sent it is still returning.
        killed = time.monotonic()
        machine(host).check_output(f"kill -9 {pid}")
        time.sleep(1)
        back = wait_active(host, unit)
        new = machine(host).check_output(f"systemctl show -p MainPID --value {unit}")
        return killed, back, new

    (killed, back, new_pid), load, wall = under_load(targets, kill, settle=3)
    window = outside_window(load, killed, back)
    record(
        f"kill9_{unit}",
        **figures(load, wall, back_after_s=round(back - killed, 1) if back else None),
        bad_outside_the_outage=window,
    )
    if back is None or new_pid in ("0", pid):
        journal = machine(host).run(f"journalctl -u {unit} -n 15 -o cat --no-pager").stdout
        pytest.fail(f"{unit} did not come back (MainPID {pid} -> {new_pid}):\n{journal}")
    # Restart after 0.5-2 s, then start-up: PostgreSQL's crash recovery replays the WAL
    # the load wrote, which took 7.5 s in one CI run and 10.2 s in another (two scenarios
    # on the 2 cores at once). The bound says "by itself, in bounded time".
    assert back - killed <= 20, f"{unit} took {back - killed:.1f} s to come back"
    # Failures only while the process was down (and what was in flight on it).
    assert window == 0, load.result.summary()
    if unit in (PG_UNIT, "redis-server"):  # a dependency: the app answers, never a 502
        assert load.result.failures == 0, load.result.summary()
        # A read that misses the caches while PostgreSQL recovers gets the app's 503.
        answers = {code for r in load.by_target.values() for code in r.statuses}
        assert answers <= {200, 201, 503}, load.result.summary()


@pytest.mark.parametrize("host", [LB, DB, CACHE, MON], ids=["lb", "db", "cache", "monitoring"])
def test_reboot_comes_back_by_itself(lb_url, targets, host):
    units = {
        LB: ["nginx", "prometheus-nginx-exporter"],
        DB: [PG_UNIT, "prometheus-postgres-exporter"],
        CACHE: ["redis-server", "prometheus-redis-exporter"],
        MON: ["prometheus"],
    }[host] + ["nftables", "prometheus-node-exporter"]
    boot = machine(host).check_output("ps -o lstart= -p 1")
    rebooted_at = None

    def reboot():
        nonlocal rebooted_at
        rebooted_at = time.monotonic()
        machine(host).run("systemctl reboot")
        started = time.monotonic()
        time.sleep(3)
        deadline = started + 180
        while time.monotonic() < deadline:
            try:
                if machine(host).check_output("ps -o lstart= -p 1") != boot and all(
                    wait_active(host, u, timeout=2) for u in units
                ):
                    return time.monotonic() - started
            except Exception:
                pass
            time.sleep(1)
        return None

    back_after, load, wall = under_load(targets, reboot, settle=3)
    record(
        f"reboot_{host}", **figures(load, wall, back_after_s=back_after and round(back_after, 1))
    )
    assert back_after is not None, f"{host} or one of {units} did not come back"
    if host in (DB, CACHE, MON):  # degraded, never down: the app answers, never a 502
        assert load.result.failures == 0, describe(load)
        if host == DB:  # what needs PostgreSQL, a write or a read missing the caches, waits
            answers = {code for r in load.by_target.values() for code in r.statuses}
            assert answers <= {200, 201, 503}, describe(load)
            assert load.by_target["version"].non_2xx == 0, describe(load)
        else:  # PostgreSQL serves the reads; only a write that needs the lock may wait
            non_write = sum(r.non_2xx for name, r in load.by_target.items() if name != "write")
            assert non_write == 0, describe(load)
    address(host)  # still reachable
