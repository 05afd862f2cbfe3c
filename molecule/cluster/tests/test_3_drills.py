"""Drills on the converged cluster, each under a mixed HTTPS load through Nginx (reads
that bypass the proxy cache, cached reads, /version, writes) from a client that never
retries: rolling deploy with hooks (while a second deploy is refused by the deploy lock),
a deploy of every app host at once, a rollback two releases back, a config-only change
(Gunicorn reload), drain and undrain of one member, a rollout stopped by a failing hook,
a failed rollout: each must give 0 connection errors and 0 non-2xx answers. The deploy
log, releases.yml and the deploy annotation in Prometheus are checked; a stale deploy
lock is named and broken. Then a reboot of an app machine, bounded like any machine fault.

The tests run in file order and each starts from the state the previous one left."""

import calendar
import json
import re
import shutil
import subprocess
import time
from urllib.parse import urlencode

import pytest
from conftest import (
    APP_HOSTS,
    CONNECTIONS,
    INVENTORY,
    LB,
    MON,
    ROOT,
    address,
    assert_no_failures,
    describe,
    figures,
    machine,
    mixed_targets,
    outside_window,
    playbook,
    record,
    release_of,
    under_load,
)

from tools.playbook import start_playbook

testinfra_hosts = [LB]
DRAIN_FILE = "/etc/nftables.d/00-drain-fastapi-ops-app.nft"
DEPLOY_LOCK = "/var/lib/fastapi-ops/deploy.lock"
HOOKS = ROOT / "molecule" / "cluster" / "hooks"
HOOKS_LOG = "/var/tmp/deploy-hooks.log"
STATE = "/srv/fastapi-ops-app/releases.json"
DASHBOARD = ROOT / "roles" / "grafana" / "files" / "dashboards" / "edge-red.json"


@pytest.fixture(scope="module")
def targets(lb_url, product_id, write_token):
    return mixed_targets(lb_url, product_id, write_token)


def drained(app_host):
    """Whether the app host refuses new connections from the lbs (app-side drain)."""
    return machine(app_host).file(DRAIN_FILE).exists


def main_pid(host):
    return machine(host).check_output("systemctl show -p MainPID --value fastapi-ops-app")


def worker_pids(host) -> list[int]:
    """The Gunicorn master's children: its workers."""
    out = machine(host).check_output(f"pgrep -P {main_pid(host)} || true")
    return [int(pid) for pid in out.split()]


def nginx_reloads():
    """Nginx master's reload count so far (a reload closes clients' idle connections)."""
    log = machine(LB).run("journalctl -u nginx -o cat --no-pager | grep -c 'Reloaded' || true")
    return int(log.stdout.strip() or 0)


def assert_ok(proc):
    assert proc.returncode == 0, proc.stdout[-4000:]


def deploy_lock():
    """The deploy lock (playbooks/lock.yml keeps it on the first app host) and its host."""
    for host in APP_HOSTS:
        out = machine(host).run(f"cat {DEPLOY_LOCK}")
        if out.rc == 0:
            return host, json.loads(out.stdout)
    return None, None


def test_rolling_deploy_has_zero_failed_requests(targets):
    """A second deploy.yml started while the first runs is refused, naming the first. The
    first runs hooks: before the switch each host sees itself drained, after the health
    gate it serves the new release."""
    before, reloads = release_of(APP_HOSTS[0]), nginx_reloads()
    seen = {}
    for host in APP_HOSTS:
        machine(host).run(f"rm -f {HOOKS_LOG}")
    hooks = {
        "deploy_hooks_before_switch": [str(HOOKS / "before_switch.yml")],
        "deploy_hooks_after_gate": [str(HOOKS / "after_gate.yml")],
    }

    def deploy_and_a_second_one():
        first = start_playbook(
            "deploy.yml", INVENTORY, "-e", "app_build=drill1", "-e", json.dumps(hooks)
        )
        deadline = time.monotonic() + 300
        while deploy_lock()[1] is None:
            assert first.poll() is None and time.monotonic() < deadline, "no lock was taken"
            time.sleep(1)
        seen["lock"] = deploy_lock()[1]
        seen["second"] = playbook("deploy.yml", "-e", "app_build=drill2")
        out, _unused = first.communicate(timeout=1200)
        seen["first_pid"] = first.pid
        return subprocess.CompletedProcess(first.args, first.returncode, out, "")

    proc, load, wall = under_load(targets, deploy_and_a_second_one)
    assert_ok(proc)
    second = seen["second"]
    refusal = re.search(r"Another run holds the deploy lock[^\n\"]*", second.stdout)
    print(f"\nsecond deploy.yml, on the lock held by the first: {refusal and refusal[0]}")
    assert second.returncode != 0 and refusal, second.stdout[-3000:]
    assert seen["lock"]["holder"]["pid"] == seen["first_pid"], seen["lock"]
    for named in (f"pid {seen['first_pid']}", "running deploy.yml", "since"):
        assert named in refusal[0], (named, refusal[0])
    assert deploy_lock() == (None, None), "the deploy did not release its lock"
    record("rolling_deploy", **figures(load, wall))
    assert_no_failures(load)
    release = release_of(APP_HOSTS[0])
    for host in APP_HOSTS:
        assert release_of(host).endswith("+drill1") and release_of(host) != before
        assert not drained(host)
        log = machine(host).file(HOOKS_LOG).content_string.splitlines()
        print(f"{host} hooks: {log}")
        assert log == [
            f"before_switch {release} drained=True",
            f"after_gate {release} serving={release}",
        ]
    assert nginx_reloads() == reloads, "a deploy reloaded Nginx"


def deploys(host):
    return json.loads(machine(host).file(STATE).content_string)["deploys"]


def annotations(start, end):
    """The edge dashboard's deploy annotations between two times, asked from Prometheus."""
    expr = json.loads(DASHBOARD.read_text())["annotations"]["list"][0]["expr"]
    query = urlencode({"query": expr, "start": start, "end": end, "step": 15})
    url = f"http://{address(MON)}:9090/api/v1/query_range?{query}"
    return json.loads(machine(MON).check_output(f"curl -sS --max-time 10 '{url}'"))["data"][
        "result"
    ]


def test_the_deploy_is_logged_and_drawn_on_the_dashboards():
    """Each host's deploy log names the drill's deploy; Prometheus answers the dashboards'
    annotation query with the release and the time it went live on the first host."""
    release = release_of(APP_HOSTS[0])
    for host in APP_HOSTS:
        last = deploys(host)[-1]
        print(f"\n{host} deploy log: {last}")
        assert (last["action"], last["to"], last["result"]) == ("deploy", release, "ok")
        assert last["from"] != release and last["by"].startswith("root@")
    logged = calendar.timegm(time.strptime(deploys(APP_HOSTS[0])[-1]["at"], "%Y-%m-%dT%H:%M:%SZ"))
    deadline = time.monotonic() + 60  # a scrape of node_exporter after the switch
    while not (
        drawn := [
            a for a in annotations(logged - 600, time.time()) if a["metric"]["release"] == release
        ]
    ):
        assert time.monotonic() < deadline, "no deploy annotation in Prometheus"
        time.sleep(5)
    at = float(drawn[0]["values"][-1][1]) / 1000
    print(f"annotation: {drawn[0]['metric']} at {at:.0f}, logged at {logged}")
    assert drawn[0]["metric"]["action"] == "deploy" and logged - 120 <= at <= logged + 1


def test_a_deploy_of_every_app_host_at_once_has_zero_failed_requests(targets):
    """deploy_serial=100%: nobody to drain to, the systemd sockets queue the connections
    across the restarts. The release after drill1, for the rollback two releases back.

    Requests wait for one restart: the old workers' drain (up to Nginx's upstream
    keepalive_timeout, 5 s) and the new workers' start. With another scenario on the 2
    CPUs the start alone took 9 s in CI, so this client waits 30 s, as a browser would,
    where the other drills' client gives up after 10 s; the slowest answer is printed."""
    deploy = ["deploy.yml", "-e", "app_build=drill2", "-e", "deploy_serial=100%"]
    proc, load, wall = under_load(targets, lambda: playbook(*deploy), timeout=30.0)
    assert_ok(proc)
    slowest_ms = round(max(load.result.latencies_ms), 1)
    record("deploy_all_at_once", **figures(load, wall, slowest_ms=slowest_ms))
    assert_no_failures(load)
    for host in APP_HOSTS:
        assert release_of(host).endswith("+drill2") and not drained(host)
        assert deploys(host)[-1]["to"] == release_of(host)


def test_rollback_two_releases_back_has_zero_failed_requests(targets):
    """Back past drill1 to the converged release; a release no host keeps is refused first."""
    history = json.loads(machine(APP_HOSTS[0]).file(STATE).content_string)["history"]
    two_back = [h["release"] for h in history][-3]
    assert not two_back.endswith(("+drill1", "+drill2"))

    refused = playbook("rollback.yml", "-e", "rollback_to=0.0.0+nowhere")
    print(f"\nrollback_to a release nobody keeps: exit {refused.returncode}")
    assert refused.returncode != 0 and "does not keep release 0.0.0+nowhere" in refused.stdout
    assert all(release_of(h).endswith("+drill2") for h in APP_HOSTS)

    rollback = ["rollback.yml", "-e", f"rollback_to={two_back}"]
    proc, load, wall = under_load(targets, lambda: playbook(*rollback))
    assert_ok(proc)
    record("rollback_two_back", **figures(load, wall))
    assert_no_failures(load)
    for host in APP_HOSTS:
        assert release_of(host) == two_back
        last = deploys(host)[-1]
        assert (last["action"], last["from"], last["to"]) == (
            "rollback",
            history[-1]["release"],
            two_back,
        )


def shown_for(stdout, host):
    """The lines releases.yml printed for one host."""
    block = stdout[stdout.find(f"ok: [{host}] =>") :]
    block = block[: block.find("\n}")]
    return [ln.strip().rstrip(",").strip('"') for ln in block.splitlines()[2:-1]]


def test_releases_playbook_lists_what_each_host_keeps(monkeypatch):
    monkeypatch.setenv("ANSIBLE_CALLBACK_RESULT_FORMAT", "json")  # one line per entry
    proc = playbook("releases.yml")
    assert_ok(proc)
    current = release_of(APP_HOSTS[0])
    for host in APP_HOSTS:
        lines = shown_for(proc.stdout, host)
        print(f"\n{host}:\n" + "\n".join(lines))
        tagged = {
            ln.split()[1]: ln
            for ln in lines
            if len(ln.split()) > 2 and ln.split()[2] == "activated"
        }
        assert (
            tagged["current"].startswith(current + " ")
            and "db revision unknown" not in tagged["current"]
        )
        assert tagged["previous"].split()[0].endswith("+drill2")
        assert lines[-1].endswith(f"rollback {deploys(host)[-1]['from']} -> {current}: ok")


def test_a_stale_deploy_lock_is_named_and_broken_by_unlock():
    """A lock left by a controller that died (another host name, three hours old): a run
    is refused at once, calling it probably stale; playbooks/unlock.yml breaks it."""
    # The first app host of the inventory (playbooks/vars/deploy_lock.yml): if it were
    # not the lock's, rollback.yml would not be refused below.
    host = APP_HOSTS[0]
    stale = {
        "run_id": "ci-gone:4242:1",
        "since": time.time() - 3 * 3600,
        "holder": {"user": "ci", "controller": "ci-gone", "pid": 4242, "playbook": "deploy.yml"},
    }
    machine(host).check_output(
        f"mkdir -p /var/lib/fastapi-ops && echo %s > {DEPLOY_LOCK}", json.dumps(stale)
    )
    refused = playbook("rollback.yml")
    assert refused.returncode != 0, refused.stdout[-3000:]
    for named in ("ci on ci-gone", "pid 4242", "probably stale", "playbooks/unlock.yml"):
        assert named in refused.stdout, (named, refused.stdout[-3000:])
    broken = playbook("unlock.yml")
    assert_ok(broken)
    assert "Broke the lock of run ci-gone:4242:1" in broken.stdout, broken.stdout[-3000:]
    assert deploy_lock() == (None, None)


def test_config_only_change_reloads_without_failures(targets):
    """A changed environment variable: site.yml reloads Gunicorn (HUP) on every app host
    at once, old workers drain, new ones serve."""
    pids = {h: main_pid(h) for h in APP_HOSTS}
    workers = {h: set(worker_pids(h)) for h in APP_HOSTS}
    extra = json.dumps({"app_env_extra": {"DRILL_MARKER": str(time.time())}})
    proc, load, wall = under_load(
        targets, lambda: playbook("site.yml", "--limit", "app", "-e", extra)
    )
    assert_ok(proc)
    record("config_reload", **figures(load, wall))
    assert_no_failures(load)
    for host in APP_HOSTS:
        # Reloaded, not restarted: same master, the new value in its environment.
        app = machine(host)
        assert main_pid(host) == pids[host]
        assert "DRILL_MARKER" in app.check_output("cat /etc/fastapi-ops-app/fastapi-ops-app.env")
        # The old workers leave once their requests are answered (graceful_timeout).
        deadline = time.monotonic() + 30
        while set(worker_pids(host)) & workers[host] and time.monotonic() < deadline:
            time.sleep(1)
        assert not set(worker_pids(host)) & workers[host], "workers were not replaced"


def test_drain_and_undrain_one_member(targets):
    host = APP_HOSTS[0]

    def drain_and_back():
        out = playbook("drain.yml", "--limit", host, "-e", "app_drain=true")
        assert_ok(out)
        assert drained(host)
        # Idle: the lb holds no connection to it any more, and none come.
        assert (
            machine(host)
            .run("ss -Htn state established '( sport = :8000 )'")
            .stdout.count(machine(LB).ansible.get_variables()["ansible_host"])
            == 0
        )
        time.sleep(5)
        return playbook("drain.yml", "--limit", host, "-e", "app_drain=false")

    proc, load, wall = under_load(targets, drain_and_back)
    assert_ok(proc)
    record("drain_undrain", **figures(load, wall))
    assert_no_failures(load)
    assert not drained(host)


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


def test_a_failing_hook_stops_the_rollout_with_the_batch_drained(targets):
    first, second = APP_HOSTS
    old = {h: release_of(h) for h in APP_HOSTS}
    relative = playbook("deploy.yml", "-e", '{"deploy_hooks_after_gate": ["hooks/failing.yml"]}')
    assert relative.returncode != 0 and '"hooks/failing.yml" is not.' in relative.stdout

    hook = {"deploy_hooks_before_switch": [str(HOOKS / "failing.yml")]}
    deploy = ["deploy.yml", "-e", "app_build=drill1", "-e", json.dumps(hook)]
    proc, load, wall = under_load(targets, lambda: playbook(*deploy))
    record("failing_hook", **figures(load, wall))
    assert proc.returncode != 0 and "the hook refuses release" in proc.stdout
    assert_no_failures(load)
    # The first batch stays drained on the release it served (the lb cannot ask it, see
    # the state file); the second host was never touched.
    assert drained(first) and not drained(second)
    state = json.loads(machine(first).file(STATE).content_string)
    assert state["current"] == old[first] and release_of(second) == old[second]
    last = state["deploys"][-1]
    print(f"\n{first} deploy log: {last}")
    assert (last["result"], last["from"]) == ("failed", old[first])
    assert last["to"].endswith("+drill1")
    assert_ok(playbook("drain.yml", "--limit", first, "-e", "app_drain=false"))
    assert release_of(first) == old[first]


def test_failed_rollout_stops_on_first_batch_and_rollback_restores(targets, broken_source):
    first, second = APP_HOSTS
    old = {h: release_of(h) for h in APP_HOSTS}
    deploy = [
        "deploy.yml",
        "-e", f"app_source_dir={broken_source}",
        "-e", "app_build=broken",
        "-e", "app_health_retries=5",
    ]  # fmt: skip
    proc, load, wall = under_load(targets, lambda: playbook(*deploy))
    record("failed_rollout", **figures(load, wall))
    assert proc.returncode != 0, "the broken release was rolled out"
    assert_no_failures(load)
    # The second app host was never touched and still serves the old release.
    assert release_of(second) == old[second]
    assert drained(first) and not drained(second)

    proc, load, wall = under_load(targets, lambda: playbook("rollback.yml", "--limit", first))
    record("rollback_after_failed_rollout", **figures(load, wall))
    assert_ok(proc)
    assert_no_failures(load)
    assert release_of(first) == old[first]
    assert not drained(first)


def test_reboot_of_an_app_machine_under_load(targets):
    """The host drains itself at shutdown (its -drain unit refuses the lbs' new
    connections before the app stops) and Nginx sends everything to the other member.
    0 failed in every run here; what is asserted is the bound of a machine fault: no
    connection error, nothing failed outside the reboot, and at most what can be in
    flight on the host (one request per client connection)."""
    host = APP_HOSTS[-1]
    app = machine(host)
    started_before = app.check_output("ps -o lstart= -p 1")
    times = {}

    def reboot_and_wait():
        times["down"] = time.monotonic()
        app.run("systemctl reboot")
        deadline = time.monotonic() + 180
        rebooted = False
        while time.monotonic() < deadline:
            time.sleep(2)
            if not rebooted:  # first see it go down and come up with a new PID 1
                try:
                    probe = app.run("ps -o lstart= -p 1")
                except Exception:  # unreachable while it reboots
                    continue
                rebooted = probe.rc == 0 and probe.stdout.strip() != started_before
                continue
            try:
                if release_of(host):
                    times["up"] = time.monotonic()
                    return True
            except AssertionError:
                continue
        return False

    came_back, load, wall = under_load(targets, reboot_and_wait)
    window = outside_window(load, times["down"], times.get("up"))
    record("reboot_app", **figures(load, wall), bad_outside_the_reboot=window)
    assert came_back, f"{host} did not come back within 180 s"
    assert app.check_output("ps -o lstart= -p 1") != started_before, "no reboot happened"
    assert load.result.sent > 100, load.result.summary()
    assert load.result.failures == 0 and window == 0, describe(load)
    assert load.result.non_2xx <= CONNECTIONS, describe(load)
    for unit in (
        "fastapi-ops-app.socket",
        "fastapi-ops-app.service",
        "nftables.service",
        "prometheus-node-exporter.service",
    ):
        svc = app.service(unit)
        assert svc.is_enabled and svc.is_running, unit
