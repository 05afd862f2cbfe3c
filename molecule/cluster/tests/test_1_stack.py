"""The converged cluster: one release everywhere, HTTPS through the lb, firewalls by
tier, and a clean check mode."""

import httpx
from conftest import APP_HOSTS, DB, LB, MON, address, machine, playbook, release_of

testinfra_hosts = [LB]


def test_every_app_host_serves_the_same_release():
    releases = {release_of(h) for h in APP_HOSTS}
    assert len(releases) == 1 and "" not in releases


def test_api_through_nginx_over_https(lb_url):
    with httpx.Client(verify=False, http2=False, timeout=10) as client:
        ready = client.get(f"{lb_url}/health/ready")
        assert ready.status_code == 200, ready.text
        plain = httpx.get(f"http://{address(LB)}/version", timeout=10)
        assert plain.status_code in (301, 308)
        assert plain.headers["location"].startswith("https://")


def test_app_port_closed_outside_lb_and_monitoring():
    probe = "python3 -c \"import socket; socket.create_connection(('{}', 8000), timeout=2)\""
    for src, allowed in ((LB, True), (MON, True), (DB, False)):
        rc = machine(src).run(probe.format(address(APP_HOSTS[0]))).rc
        assert (rc == 0) is allowed, src


def test_check_mode_on_the_converged_cluster_is_clean():
    """The edge and the monitoring host, which read every other host's facts and
    addresses (upstreams, scrape targets). The app, db and cache hosts' check mode on a
    converged layout like this one runs in the data scenario, for CI's time (200 s here)."""
    proc = playbook("site.yml", "--check", "--diff", "--limit", "lb:monitoring")
    assert proc.returncode == 0, proc.stdout[-4000:]
    recap = proc.stdout[proc.stdout.rindex("PLAY RECAP") :]
    assert recap.count("changed=0") == 2 and "failed=0" in recap, recap
