"""Edge scenario: the nginx role on edge-lb in front of edge-app and edge-app2.

Real clients: edge-app runs curl/openssl/wrk against the lb's address; the lb itself is
the non-exempt client for the rate-limit tests (edge-app is exempt, for wrk).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import testinfra

SCENARIO = Path(__file__).resolve().parent.parent
PROJECT = SCENARIO.parent.parent
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
NAME = "edge.lab.test"


def _host(name: str):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=INVENTORY)


@pytest.fixture(scope="module")
def lb():
    return _host("edge-lb")


@pytest.fixture(scope="module")
def client():
    return _host("edge-app")


@pytest.fixture(scope="module")
def app2():
    return _host("edge-app2")


@pytest.fixture(scope="module")
def lb_addr(lb) -> str:
    return lb.ansible.get_variables()["ansible_host"]


def curl(host, lb_addr: str, path: str, *args: str, scheme: str = "https") -> tuple[int, dict, str]:
    """One request from `host` to the lb; returns (status, lower-case headers, body)."""
    port = 443 if scheme == "https" else 80
    cmd = [
        "curl",
        "-sk",
        "--max-time",
        "10",
        "--resolve",
        f"{NAME}:{port}:{lb_addr}",
        "-D",
        "/dev/stderr",
    ]
    cmd += list(args) + [f"{scheme}://{NAME}{path}"]
    out = host.run(shlex.join(cmd))
    assert out.rc == 0, out.stderr
    lines = out.stderr.replace("\r", "").split("\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers, out.stdout


def start_upstream(*hosts) -> None:
    """Start the stand-in upstream and wait until it answers on its port."""
    for h in hosts:
        h.run("systemctl start edge-upstream")
        addr = h.ansible.get_variables()["ansible_host"]
        for _unused in range(50):
            if h.run(f"curl -s -o /dev/null --max-time 1 http://{addr}:8000/nostore").rc == 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"edge-upstream on {h} did not come back")


def uniq() -> str:
    return uuid.uuid4().hex[:12]


def ansible_playbook(playbook: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ANSIBLE_CONFIG=str(PROJECT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    return subprocess.run(
        ["ansible-playbook", "-i", INVENTORY, str(SCENARIO / playbook), *extra],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# --- service, config, hardening ----------------------------------------------------------


def test_nginx_running_with_checked_tree(lb):
    assert lb.service("nginx").is_running
    assert lb.service("nginx").is_enabled
    assert lb.run("nginx -t").rc == 0
    # What runs is what was staged and checked.
    for rel in (
        "nginx.conf",
        "fastapi_ops/site.conf",
        "fastapi_ops/upstream.conf",
        "fastapi_ops/http.conf",
    ):
        assert (
            lb.file(f"/etc/nginx/{rel}").sha256sum
            == lb.file(f"/var/lib/fastapi-ops/nginx-staging/{rel}").sha256sum
        )
    assert not lb.file("/etc/nginx/sites-enabled/default").exists


def test_tls_key_is_private(lb):
    key = lb.file("/etc/nginx/tls/server.key")
    assert key.user == "root" and key.mode == 0o600


def test_hardening_drop_in_applied(lb):
    out = lb.check_output("systemd-analyze security nginx.service --no-pager | tail -1")
    score = float(re.search(r"level for nginx.service: ([0-9.]+)", out).group(1))
    print(f"systemd-analyze security nginx.service: {score}")
    assert score < 5.0, out
    assert lb.check_output("systemctl show -p ProtectSystem --value nginx") == "strict"


# --- TLS ---------------------------------------------------------------------------------


def _handshake(client, lb_addr: str, *args: str):
    # SECLEVEL=0 makes the *client* offer old protocols: a failure is the server's refusal.
    cmd = (
        f"echo | openssl s_client -connect {lb_addr}:443 -servername {NAME}"
        f" -cipher 'ALL:@SECLEVEL=0' {' '.join(args)}"
    )
    return client.run(cmd + " 2>&1")


@pytest.mark.parametrize("proto", ["-tls1", "-tls1_1"])
def test_old_tls_refused(client, lb_addr, proto):
    out = _handshake(client, lb_addr, proto)
    assert out.rc != 0
    assert "protocol version" in out.stdout or "no protocols available" not in out.stdout, (
        out.stdout
    )
    assert "Cipher is (NONE)" in out.stdout or "New, (NONE)" in out.stdout, out.stdout


@pytest.mark.parametrize(("proto", "expect"), [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_modern_tls_accepted(client, lb_addr, proto, expect):
    out = _handshake(client, lb_addr, proto)
    assert out.rc == 0, out.stdout
    assert f"Protocol  : {expect}" in out.stdout or f"New, {expect}" in out.stdout, out.stdout


def test_only_ecdhe_aead_suites(client, lb_addr):
    offered = client.check_output("openssl ciphers -tls1_2 'ALL:@SECLEVEL=0'").split(":")
    assert len(offered) > 30  # the client really tries many, weak ones included
    # One handshake per TLS 1.2 suite the client knows, in one shell loop on the client.
    script = (
        "for c in $(openssl ciphers -tls1_2 'ALL:@SECLEVEL=0' | tr ':' ' '); do "
        f"echo | timeout 5 openssl s_client -connect {lb_addr}:443 -tls1_2"
        ' -cipher "$c:@SECLEVEL=0" '
        ">/dev/null 2>&1 && echo $c; done; true"
    )
    accepted = client.check_output(script).split()
    assert accepted, "no TLS 1.2 suite accepted"
    for cipher in accepted:
        assert cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), accepted


def test_http2_negotiated(client, lb_addr):
    out = client.check_output(
        f"curl -sk --http2 -o /dev/null -w '%{{http_version}}'"
        f" --resolve {NAME}:443:{lb_addr} https://{NAME}/nostore"
    )
    assert out.split()[0] == "2"


def test_http_redirects_to_https(client, lb_addr):
    status, headers, _unused = curl(client, lb_addr, "/some/path?x=1", scheme="http")
    assert status == 301
    assert headers["location"] == f"https://{NAME}/some/path?x=1"


def test_acme_challenge_path_not_redirected(client, lb_addr):
    status, _unused, _unused = curl(
        client, lb_addr, "/.well-known/acme-challenge/missing", scheme="http"
    )
    assert status == 404


# --- names: only the served ones ---------------------------------------------------------

EVIL = "evil.example"


@pytest.mark.parametrize("unknown", ["host", "sni"])
def test_unknown_name_gets_421_and_is_never_reflected(client, lb_addr, unknown):
    if unknown == "host":  # a served name in SNI, another in Host
        target = ["--resolve", f"{NAME}:443:{lb_addr}", "-H", f"Host: {EVIL}", f"https://{NAME}/x"]
    else:  # an unknown SNI too: the catch-all, with the same certificate, finishes the handshake
        target = ["--resolve", f"{EVIL}:443:{lb_addr}", f"https://{EVIL}/x"]
    out = client.run(shlex.join(["curl", "-sk", "--max-time", "10", "-D", "-", *target]))
    assert out.rc == 0, out.stderr
    head, _unused, body = out.stdout.replace("\r", "").partition("\n\n")
    assert head.split()[1] == "421", out.stdout
    assert EVIL not in head.lower() and EVIL not in body, out.stdout


@pytest.mark.parametrize("path", ["/x", "/.well-known/acme-challenge/missing"])
def test_unknown_name_on_http_gets_no_answer(client, lb_addr, path):
    out = client.run(f"curl -s -i --max-time 10 -H 'Host: {EVIL}' http://{lb_addr}{path}")
    # 444: Nginx closes the connection without writing a byte (curl 52: empty reply).
    assert out.rc == 52 and out.stdout == "", (out.rc, out.stdout)


def test_lb_address_served_over_https_without_sni(client, lb_addr):
    out = client.check_output(
        f"curl -sk -o /dev/null -w '%{{http_code}}' https://{lb_addr}/nostore?{uniq()}"
    )
    assert out == "200"


def test_http_redirect_by_address_goes_to_the_first_name(client, lb_addr):
    out = client.check_output(
        f"curl -s -o /dev/null -w '%{{http_code}} %{{redirect_url}}'"
        f" 'http://{lb_addr}/some/path?x=1'"
    )
    assert out == f"301 https://{NAME}/some/path?x=1"


# --- headers -----------------------------------------------------------------------------

SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "frame-ancestors 'none'",
    "referrer-policy": "strict-origin-when-cross-origin",
}


@pytest.fixture(scope="module")
def static_file(lb):
    lb.run(
        "printf 'hello static\\n' > /var/www/fastapi_ops/static/hello.txt"
        " && chmod 0644 /var/www/fastapi_ops/static/hello.txt"
    )
    return "/static/hello.txt"


@pytest.mark.parametrize(
    "path", ["/api/v1/products/1", "/nostore", "/metrics", "/upload/x", "STATIC", "/static/missing"]
)
def test_security_headers_on_every_location(client, lb_addr, static_file, path):
    path = static_file if path == "STATIC" else path
    status, headers, _unused = curl(client, lb_addr, path)
    assert status in (200, 403, 404), (path, status)
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, (path, name, headers)
    assert "x-xss-protection" not in headers
    assert headers["server"] == "nginx"  # server_tokens off: no version
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])


def test_static_served_by_nginx(client, lb_addr, static_file):
    status, headers, body = curl(client, lb_addr, static_file)
    assert status == 200 and body == "hello static\n"
    assert "max-age=604800" in headers["cache-control"]


# --- proxying ----------------------------------------------------------------------------


def test_upstream_sees_forwarded_headers_and_request_id(client, lb_addr):
    client_addr = client.ansible.get_variables()["ansible_host"]
    _unused, headers, body = curl(
        client, lb_addr, f"/nostore?{uniq()}", "-H", "X-Request-ID: edge-test.42"
    )
    doc = json.loads(body)
    assert doc["x_request_id"] == "edge-test.42" and headers["x-request-id"] == "edge-test.42"
    assert doc["x_forwarded_for"] == client_addr and doc["x_forwarded_proto"] == "https"
    # A malformed id is replaced by Nginx's own.
    _unused, headers, body = curl(
        client, lb_addr, f"/nostore?{uniq()}", "-H", "X-Request-ID: <script>"
    )
    assert re.fullmatch(r"[0-9a-f]{32}", json.loads(body)["x_request_id"])


def test_keepalive_to_upstream_and_websocket_upgrade_map(client, lb_addr):
    peers = set()
    for _unused in range(12):
        doc = json.loads(curl(client, lb_addr, f"/nostore?{uniq()}")[2])
        assert doc["connection"] is None  # no constant "Connection: upgrade"
        peers.add((doc["host"], doc["peer_port"]))
    # 2 app hosts x at most 2 workers: connections are reused, not one per request.
    assert len(peers) <= 6, peers
    doc = json.loads(
        curl(
            client,
            lb_addr,
            f"/nostore?{uniq()}",
            "--http1.1",
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
        )[2]
    )
    assert doc["upgrade"] == "websocket" and doc["connection"].lower() == "upgrade"


def test_metrics_closed_to_the_public(client, lb_addr, lb):
    assert curl(client, lb_addr, "/metrics")[0] == 403
    # Allowed from localhost (allow-list), by a served name (127.0.0.1 is not one).
    out = lb.check_output(
        f"curl -sk -o /dev/null -w '%{{http_code}}' --resolve {NAME}:443:127.0.0.1"
        f" https://{NAME}/metrics"
    )
    assert out == "200"


def test_body_size_limit_per_location(client, lb_addr):
    client.run("head -c 2000000 /dev/zero > /tmp/edge-2mb")
    status, _unused, _unused = curl(client, lb_addr, "/upload/x", "--data-binary", "@/tmp/edge-2mb")
    assert status == 413
    assert curl(client, lb_addr, "/upload/x", "--data-binary", "small")[0] == 200
    # Elsewhere the default, what an API needs: 128k.
    client.run("head -c 200000 /dev/zero > /tmp/edge-200k")
    assert curl(client, lb_addr, "/x", "--data-binary", "@/tmp/edge-200k")[0] == 413


# --- upstream: balancing, passive health, drain ------------------------------------------


def _hosts_seen(client, lb_addr, n=16) -> list[str]:
    return [
        json.loads(curl(client, lb_addr, f"/nostore?{uniq()}")[2])["host"] for _unused in range(n)
    ]


def test_both_members_serve(client, lb_addr):
    assert set(_hosts_seen(client, lb_addr)) == {"edge-app", "edge-app2"}


def test_drain_with_tasks_from_upstream(client, lb, lb_addr):
    start = time.monotonic()
    res = ansible_playbook("drain.yml", "-e", '{"edge_drain": ["edge-app2"]}')
    drain_seconds = time.monotonic() - start
    try:
        assert res.returncode == 0, res.stdout[-3000:]
        assert (
            "down;  # edge-app2" in lb.file("/etc/nginx/fastapi_ops/upstream.conf").content_string
        )
        assert set(_hosts_seen(client, lb_addr)) == {"edge-app"}
        print(f"drain playbook wall time: {drain_seconds:.1f}s")
    finally:
        res = ansible_playbook("drain.yml")
    assert res.returncode == 0, res.stdout[-3000:]
    assert (
        "down"
        not in lb.file("/etc/nginx/fastapi_ops/upstream.conf")
        .content_string.split("upstream")[-1]
        .split("keepalive")[0]
    )
    assert set(_hosts_seen(client, lb_addr)) == {"edge-app", "edge-app2"}


def test_draining_every_member_is_refused(lb):
    before = lb.file("/etc/nginx/fastapi_ops/upstream.conf").sha256sum
    res = ansible_playbook("drain.yml", "-e", '{"edge_drain": ["edge-app", "edge-app2"]}')
    assert res.returncode != 0
    assert "Refusing to drain every member" in res.stdout
    assert lb.file("/etc/nginx/fastapi_ops/upstream.conf").sha256sum == before


def test_an_answer_never_marks_a_member_failed(client, lb, lb_addr):
    """A 503 from the app ("my database is down") is an answer: it reaches the client as
    it is, is not retried on the other member and never takes a member out, however
    many come (max_fails is 3)."""
    log_before = len(lb.file("/var/log/nginx/error.log").content_string)
    answers = [curl(client, lb_addr, f"/nostore?status=503&{uniq()}") for _unused in range(12)]
    assert [status for status, _unused, _unused in answers] == [503] * 12, (
        "Nginx replaced the app's 503"
    )
    assert all(headers.get("retry-after") == "5" for _unused, headers, _unused in answers)
    assert set(_hosts_seen(client, lb_addr)) == {"edge-app", "edge-app2"}
    new_log = lb.file("/var/log/nginx/error.log").content_string[log_before:]
    assert "temporarily disabled" not in new_log and "no live upstreams" not in new_log, new_log


def test_failed_member_is_skipped(client, app2, lb_addr):
    app2.run("systemctl stop edge-upstream")
    try:
        codes = [curl(client, lb_addr, f"/nostore?{uniq()}")[0] for _unused in range(10)]
        assert codes == [200] * 10  # proxy_next_upstream retried the GETs on edge-app
    finally:
        start_upstream(app2)


# --- maintenance -------------------------------------------------------------------------
# edge-app2 is on the allow-list (converge.yml), edge-app and the lb are not.

MAINTENANCE_FLAGS = (
    "/etc/nginx/fastapi_ops/maintenance",
    "/etc/nginx/fastapi_ops/maintenance-closed",
)


def maintenance(switch: str) -> None:
    """playbooks/maintenance.yml -e maintenance=on|off, as a user runs it."""
    res = ansible_playbook(
        str(PROJECT / "playbooks" / "maintenance.yml"), "-e", f"maintenance={switch}"
    )
    assert res.returncode == 0, res.stdout[-3000:]


def test_maintenance_answers_503_but_to_the_allow_list_and_health_checks(client, app2, lb, lb_addr):
    maintenance("on")
    try:
        status, headers, body = curl(client, lb_addr, f"/nostore?{uniq()}")
        assert (status, headers.get("retry-after")) == (503, "60"), (status, headers)
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {"detail": "maintenance"}
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value, (name, headers)
        # Any method gets the page (an error_page to a static file would otherwise be a 405).
        status, _unused, body = curl(client, lb_addr, "/upload/x", "--data-binary", "x")
        assert (status, json.loads(body)) == (503, {"detail": "maintenance"})
        # A browser gets the HTML page.
        status, headers, body = curl(
            client, lb_addr, "/", "-H", "Accept: text/html,application/xhtml+xml,*/*;q=0.8"
        )
        assert (status, headers.get("retry-after")) == (503, "60")
        assert headers["content-type"].startswith("text/html")
        assert "<h1>Down for maintenance</h1>" in body
        # Health checks reach the app from anywhere.
        status, _unused, body = curl(client, lb_addr, f"/health/ready?{uniq()}")
        assert status == 200 and json.loads(body)["path"] == "/health/ready"
        # The allowed source reaches the app, and the app's own 503 passes as it is.
        status, _unused, body = curl(app2, lb_addr, f"/nostore?{uniq()}")
        assert status == 200 and json.loads(body)["path"] == "/nostore"
        status, headers, body = curl(app2, lb_addr, f"/nostore?status=503&{uniq()}")
        assert (status, headers.get("retry-after")) == (503, "5")
        assert json.loads(body)["path"] == "/nostore"
        # As restore.yml switches it (the app stopped): no exemption at all.
        res = ansible_playbook("maintenance_closed.yml")
        assert res.returncode == 0, res.stdout[-3000:]
        status, _unused, body = curl(app2, lb_addr, f"/nostore?{uniq()}")
        assert (status, json.loads(body)) == (503, {"detail": "maintenance"})
        assert curl(client, lb_addr, f"/health/ready?{uniq()}")[0] == 503
        # Back to the exempt maintenance: the closed flag goes.
        maintenance("on")
        assert curl(app2, lb_addr, f"/nostore?{uniq()}")[0] == 200
    finally:
        maintenance("off")
    assert not any(lb.file(f).exists for f in MAINTENANCE_FLAGS)
    assert curl(client, lb_addr, f"/nostore?{uniq()}")[0] == 200
    assert curl(app2, lb_addr, f"/nostore?{uniq()}")[0] == 200


# Counts wrk's answers by kind: the app's (2xx), the maintenance 503, anything else.
ANSWERS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok, maintenance, other = 0, 0, 0 end
function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1
  elseif status == 503 and body:find('"detail":"maintenance"', 1, true) then
    maintenance = maintenance + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  local n = {ok = 0, maintenance = 0, other = 0}
  for _, t in ipairs(threads) do
    for k in pairs(n) do n[k] = n[k] + t:get(k) end
  end
  local e = summary.errors
  io.write(string.format(
    "answers sent=%d ok=%d maintenance=%d other=%d socket_errors=%d seconds=%.1f\\n",
    summary.requests, n.ok, n.maintenance, n.other,
    e.connect + e.read + e.write + e.timeout, summary.duration / 1e6))
end
"""


def test_switching_maintenance_under_load_drops_no_request(client, lb, lb_addr):
    """wrk never retries: every request it sends must come back 2xx or the maintenance
    503 while the site is switched on and off, by the playbook and then quickly by hand."""
    client.run(f"printf %s {shlex.quote(ANSWERS_LUA)} > /tmp/edge-answers.lua")
    # Bounded at 60 s; stopped (SIGINT: wrk prints its figures) once the switching is done.
    # The stand-in upstream is slow under load: a 10 s timeout, not wrk's 2 s.
    client.check_output(
        "systemd-run --unit=edge-maintenance-wrk --collect sh -c %s",
        "exec wrk -t1 -c8 -d60s --timeout 10s -s /tmp/edge-answers.lua"
        f" https://{lb_addr}/nostore > /tmp/edge-maintenance-wrk.txt 2>&1",
    )
    try:
        time.sleep(1)
        maintenance("on")
        time.sleep(1)
        maintenance("off")
        # Ten more switches, 0.3 s apart, by the flag file the playbook writes.
        lb.check_output(
            "for i in 1 2 3 4 5; do touch %s; sleep 0.3; rm %s; sleep 0.3; done",
            MAINTENANCE_FLAGS[0],
            MAINTENANCE_FLAGS[0],
        )
        time.sleep(1)
    finally:
        client.run("systemctl kill -s INT edge-maintenance-wrk")
        while client.run("systemctl is-active -q edge-maintenance-wrk").rc == 0:
            time.sleep(0.2)
    out = client.check_output("cat /tmp/edge-maintenance-wrk.txt")
    print(f"wrk -t1 -c8 /nostore from edge-app, maintenance switched 12 times:\n{out}")
    figures = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)", out.split("answers ")[-1])}
    assert figures["other"] == 0 and figures["socket_errors"] == 0, out
    assert figures["ok"] > 0 and figures["maintenance"] > 0, out
    assert figures["ok"] + figures["maintenance"] == figures["sent"], out


# --- cache -------------------------------------------------------------------------------


def test_second_get_is_a_hit(client, lb_addr):
    path = f"/api/v1/products/{uniq()}"
    assert curl(client, lb_addr, path)[1]["x-cache-status"] == "MISS"
    status, headers, _unused = curl(client, lb_addr, path)
    assert status == 200 and headers["x-cache-status"] == "HIT"
    # HEAD is answered from the same entry.
    assert curl(client, lb_addr, path, "-I")[1]["x-cache-status"] == "HIT"


@pytest.mark.parametrize(
    "credential", [("-H", "Authorization: Bearer secret"), ("-H", "Cookie: session=abc")]
)
def test_credentials_never_hit_nor_poison(client, lb_addr, credential):
    path = f"/api/v1/products/{uniq()}"
    # With credentials first: bypass, and the response is not stored.
    status, headers, body = curl(client, lb_addr, path, *credential)
    assert headers["x-cache-status"] == "BYPASS"
    # Anonymous: a MISS (nothing stored by the credentialed request), then a HIT.
    status, headers, body = curl(client, lb_addr, path)
    assert headers["x-cache-status"] == "MISS"
    assert json.loads(body)["authorization"] is False and json.loads(body)["cookie"] is None
    assert curl(client, lb_addr, path)[1]["x-cache-status"] == "HIT"
    # Credentials on a cached URL still go to the app.
    status, headers, body = curl(client, lb_addr, path, *credential)
    assert headers["x-cache-status"] == "BYPASS"
    doc = json.loads(body)
    assert doc["authorization"] or doc["cookie"] == "session=abc"


def test_no_store_not_cached(client, lb_addr):
    path = f"/nostore?{uniq()}"
    for _unused in range(3):
        assert curl(client, lb_addr, path)[1]["x-cache-status"] == "MISS"


def test_response_without_cache_headers_not_cached(client, lb_addr):
    path = f"/nocache-headers?{uniq()}"
    for _unused in range(2):
        assert curl(client, lb_addr, path)[1]["x-cache-status"] == "MISS"


def test_stale_served_when_upstream_down(client, app2, lb_addr):
    path = f"/short?{uniq()}"
    assert curl(client, lb_addr, path)[1]["x-cache-status"] == "MISS"
    assert curl(client, lb_addr, path)[1]["x-cache-status"] == "HIT"
    for h in (client, app2):
        h.run("systemctl stop edge-upstream")
    try:
        time.sleep(2.2)  # max-age=1 has expired
        status, headers, body = curl(client, lb_addr, path)
        assert status == 200
        assert headers["x-cache-status"] in ("STALE", "UPDATING")
        assert json.loads(body)["path"] == "/short"
        # An uncached URL has nothing to fall back on.
        assert curl(client, lb_addr, f"/nostore?{uniq()}")[0] == 502
    finally:
        start_upstream(client, app2)


# --- limits ------------------------------------------------------------------------------


def _burst(host, lb_addr, n=60) -> list[str]:
    url = f"https://{NAME}/nostore"
    parts = [
        "curl",
        "-sk",
        "--http1.1",
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        str(n),
    ]
    parts += ["--resolve", f"{NAME}:443:{lb_addr}", "-w", "%{http_code}\\n"]
    for i in range(n):
        parts += ["-o", "/dev/null", f"{url}?b={i}"]
    return host.check_output(" ".join(shlex.quote(p) for p in parts)).split()


def test_burst_above_rate_gets_429(lb, lb_addr):
    time.sleep(2.5)  # let the bucket drain from earlier tests (10 r/s)
    codes = _burst(lb, lb_addr)  # from the lb's own address: not exempt
    ok, limited = codes.count("200"), codes.count("429")
    assert ok + limited == 60, codes
    assert limited > 0, codes
    assert 15 <= ok <= 35, codes  # burst 20 (+ the rate's refill), limit_conn 20


def test_exempt_client_not_limited(client, lb_addr):
    codes = _burst(client, lb_addr)
    assert codes.count("200") == 60, codes


def _writes_with_reads(host, lb_addr, writes: int, reads: int) -> dict[str, list[str]]:
    """Status codes by method of `writes` POSTs and then `reads` GETs, sent in parallel
    (16 at a time: below limit_conn 20) from host."""
    each = ["-k", "--http1.1", "--resolve", f"{NAME}:443:{lb_addr}"]
    each += ["-w", "%{method} %{http_code}\\n"]
    parts = ["curl", "-s", "--parallel", "--parallel-immediate", "--parallel-max", "16"]
    parts += [*each, "--data", "x"]
    for i in range(writes):
        parts += ["-o", "/dev/null", f"https://{NAME}/nostore?w={i}"]
    if reads:
        parts += ["--next", *each]  # the same options, without --data: GETs
    for i in range(reads):
        parts += ["-o", "/dev/null", f"https://{NAME}/nostore?r={i}"]
    codes: dict[str, list[str]] = {"POST": [], "GET": []}
    for line in host.check_output(shlex.join(parts)).splitlines():
        method, code = line.split()
        codes[method].append(code)
    assert (len(codes["POST"]), len(codes["GET"])) == (writes, reads), codes
    return codes


def test_writes_beyond_their_burst_get_429_reads_pass(lb, lb_addr):
    """Writes have their own, stricter limit (2 r/s, burst 10); the GETs sent with them
    are not counted there (the api zone's burst of 20 takes them and the 11 writes)."""
    time.sleep(5.5)  # let the buckets drain (writes: 10 at 2 r/s)
    codes = _writes_with_reads(lb, lb_addr, writes=20, reads=6)  # the lb: not exempt
    ok, limited = codes["POST"].count("200"), codes["POST"].count("429")
    assert ok + limited == 20, codes
    assert 11 <= ok <= 15, codes  # burst 10 + the first, nodelay (+ the rate's refill)
    assert codes["GET"] == ["200"] * 6, codes


def test_exempt_client_writes_not_limited(client, lb_addr):
    codes = _writes_with_reads(client, lb_addr, writes=20, reads=0)
    assert codes["POST"] == ["200"] * 20, codes


# --- exporter ----------------------------------------------------------------------------


def test_stub_status_local_and_exporter(lb, lb_addr, client):
    assert "Active connections" in lb.check_output("curl -s http://127.0.0.1:8080/stub_status")
    metrics = lb.check_output(f"curl -s http://{lb_addr}:9113/metrics")
    assert "nginx_up 1" in metrics
    assert "nginx_connections_accepted" in metrics
    # Not a monitoring host: the firewall drops it.
    assert client.run(f"curl -s --max-time 3 http://{lb_addr}:9113/metrics").rc != 0


# --- a broken configuration never goes live ----------------------------------------------


def test_broken_value_stops_at_nginx_t_and_live_config_keeps_serving(lb, client, lb_addr):
    staged = "/var/lib/fastapi-ops/nginx-staging"
    live_before = lb.file("/etc/nginx/fastapi_ops/http.conf").sha256sum
    lb.run(f"cp -a {staged} /root/staging.bak")
    try:
        res = ansible_playbook("broken.yml")
        assert res.returncode != 0
        assert "Check the whole staged configuration with nginx -t" in res.stdout
        assert "client_max_body_size" in res.stdout  # nginx -t names the bad directive
        assert lb.file("/etc/nginx/fastapi_ops/http.conf").sha256sum == live_before
        assert lb.run("nginx -t").rc == 0  # a restart would still work
        assert curl(client, lb_addr, f"/nostore?{uniq()}")[0] == 200
    finally:
        lb.run(f"rm -rf {staged} && mv /root/staging.bak {staged}")


# --- benchmark: cached GET vs a static file of the same size -----------------------------


def _wrk(client, url: str, seconds: int) -> tuple[float, str]:
    out = client.check_output(f"wrk -t2 -c32 -d{seconds}s --latency {url}")
    assert "Non-2xx" not in out, out
    return float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)), out


def test_wrk_cached_get_vs_static(client, lb, lb_addr):
    seconds = int(os.environ.get("EDGE_WRK_SECONDS", "5"))
    path = "/api/v1/products/bench?cc=public,max-age=600&pad=600"
    status, headers, body = curl(client, lb_addr, path)
    status, headers, body = curl(client, lb_addr, path)
    assert headers["x-cache-status"] == "HIT"
    size = len(body.encode())
    lb.run(
        f"head -c {size} /dev/zero | tr '\\0' x > /var/www/fastapi_ops/static/bench.json"
        " && chmod 0644 /var/www/fastapi_ops/static/bench.json"
    )
    assert lb.file("/var/www/fastapi_ops/static/bench.json").size == size
    cached, cached_out = _wrk(client, f"'https://{lb_addr}{path}'", seconds)
    static, static_out = _wrk(client, f"https://{lb_addr}/static/bench.json", seconds)
    report = (
        f"wrk -t2 -c32 -d{seconds}s, body {size} bytes, from edge-app to edge-lb (HTTPS):\n"
        f"  cached GET  {path}: {cached:.0f} req/s\n"
        f"  static file /static/bench.json: {static:.0f} req/s\n"
        f"  ratio cached/static: {cached / static:.2f}\n"
    )
    print(report + cached_out + static_out)
    (PROJECT / ".cache").mkdir(exist_ok=True)
    (PROJECT / ".cache" / "edge-wrk.txt").write_text(report + cached_out + static_out)
    assert cached > 0 and static > 0
