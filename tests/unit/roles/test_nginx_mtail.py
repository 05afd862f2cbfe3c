"""The nginx role's mtail program against lines in the role's own access-log format.

The lines are built from log_format fastapi_ops_json in http.conf.j2 (so a change of the
format that the program no longer matches fails here), JSON-escaped like escape=json,
and read by the real mtail (`--one_shot`). mtail comes from Debian's `mtail` package.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROLE = Path(__file__).resolve().parents[3] / "roles" / "nginx"
PROGRAM = ROLE / "files" / "mtail" / "nginx.mtail"
HTTP_CONF = ROLE / "templates" / "fastapi_ops" / "http.conf.j2"

# Values of a proxied request; a test case overrides some.
BASE = {
    "time_iso8601": "2025-01-01T10:00:00+00:00",
    "fastapi_ops_request_id": "0123456789abcdef0123456789abcdef",
    "fastapi_ops_app": "shop",
    "remote_addr": "198.18.0.9",
    "host": "lb.example",
    "request_method": "GET",
    "request_uri": "/api/v1/products",
    "server_protocol": "HTTP/2.0",
    "status": "200",
    "body_bytes_sent": "512",
    "request_time": "0.003",
    "upstream_addr": "198.18.0.3:8000",
    "upstream_status": "200",
    "upstream_response_time": "0.003",
    "upstream_connect_time": "0.000",
    "upstream_cache_status": "MISS",
    "ssl_protocol": "TLSv1.3",
    "http_referer": "",
    "http_user_agent": "curl/7.88.1",
}


def mtail() -> str:
    path = shutil.which("mtail")
    if path is None:  # a missing tool is a failure, not a skip
        pytest.fail("mtail not found: apt-get install mtail (Debian) on the controller")
    return path


def log_format() -> str:
    text = HTTP_CONF.read_text()
    block = re.search(r"log_format fastapi_ops_json escape=json (.*?);\n", text, re.S).group(1)
    return "".join(re.findall(r"'([^']*)'", block))


def line(**values: str) -> str:
    v = BASE | values

    def sub(m: re.Match) -> str:
        assert m.group(1) in v, f"no sample value for ${m.group(1)}: add it to BASE"
        return json.dumps(v[m.group(1)])[1:-1]  # escape=json

    out = re.sub(r"\$(\w+)", sub, log_format())
    json.loads(out)  # the format is JSON
    return out


def run(tmp_path: Path, lines: list[str]) -> dict[str, float]:
    progs = tmp_path / "progs"
    progs.mkdir()
    shutil.copy(PROGRAM, progs / PROGRAM.name)
    log = tmp_path / "access.log"
    log.write_text("".join(f"{x}\n" for x in lines))
    result = subprocess.run(
        [mtail(), "--one_shot", "--one_shot_format=prometheus", "--logtostderr",
         "--progs", str(progs), "--logs", str(log)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    samples = {}
    for row in result.stdout.splitlines():
        if row and not row.startswith("#"):
            name, value = row.rsplit(" ", 1)
            samples[re.sub(r',?prog="[^"]*"', "", name).replace("{,", "{")] = float(value)
    return samples


def test_requests_by_app_status_method(tmp_path):
    s = run(
        tmp_path,
        [
            line(),
            line(),
            line(request_method="POST", status="502", request_time="0.120"),
            line(request_method="BREW", status="405"),  # unknown method: one series, OTHER
            line(fastapi_ops_app="", status="301"),  # not an app's request: not counted
            line(fastapi_ops_app="admin", status="429", request_time="0.000"),
        ],
    )
    requests = {k: v for k, v in s.items() if k.startswith("nginx_http_requests_total")}
    assert requests == {
        'nginx_http_requests_total{app="shop",method="GET",status="200"}': 2,
        'nginx_http_requests_total{app="shop",method="POST",status="502"}': 1,
        'nginx_http_requests_total{app="shop",method="OTHER",status="405"}': 1,
        'nginx_http_requests_total{app="admin",method="GET",status="429"}': 1,
    }


def test_duration_histogram_resolves_milliseconds(tmp_path):
    s = run(
        tmp_path,
        [line(request_time="0.001"), line(request_time="0.004"), line(request_time="2.000")],
    )
    b = 'nginx_http_request_duration_seconds_bucket{app="shop",le="%s"}'
    assert s[b % "0.001"] == 1
    assert s[b % "0.0025"] == 1
    assert s[b % "0.005"] == 2
    assert s[b % "1"] == 2
    assert s[b % "2.5"] == 3
    assert s['nginx_http_request_duration_seconds_count{app="shop"}'] == 3
    assert s['nginx_http_request_duration_seconds_sum{app="shop"}'] == pytest.approx(2.005)


def test_client_supplied_text_cannot_fake_fields(tmp_path):
    fake = '","status":500,"request_time":9.999,"method":"DELETE","'
    s = run(
        tmp_path,
        [line(request_uri="/x?" + fake, http_user_agent=fake, http_referer='\\"' + fake)],
    )
    requests = {k: v for k, v in s.items() if k.startswith("nginx_http_requests_total")}
    assert requests == {'nginx_http_requests_total{app="shop",method="GET",status="200"}': 1}
    assert s['nginx_http_request_duration_seconds_sum{app="shop"}'] == pytest.approx(0.003)
