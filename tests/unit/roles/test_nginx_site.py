"""The nginx role's configuration tree rendered with its real templates (as the role stages
it) and checked with `nginx -t`: which names are served, what the catch-all servers answer
to any other Host, the limit on writes and who passes during maintenance.

Renders roles/nginx/templates with the venv's ansible-playbook on localhost (connection
local, nothing but files in a temporary directory is written); nginx comes from Debian's
`nginx` package (tools/bootstrap-host installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
ROLE = REPO / "roles" / "nginx"

PLAYBOOK = """
- name: Render the configuration tree
  hosts: lb1
  gather_facts: false
  connection: local
  tasks:
    - name: The role's defaults and internal variables
      ansible.builtin.include_vars:
        file: "{{ item }}"
      loop: ["%(role)s/defaults/main.yml", "%(role)s/vars/main.yml"]
    # One module run for every file (a template task per file takes seconds each).
    - name: Render every managed file into one JSON document (path -> text)
      ansible.builtin.copy:
        content: "{{ dict(__nginx_managed_files | zip(texts)) | to_json }}"
        dest: "{{ out }}"
        mode: "0644"
      vars:
        sources: >-
          {{ __nginx_managed_files | map('regex_replace', '^', '%(role)s/templates/')
             | map('regex_replace', '$', '.j2') }}
        texts: "{{ query('ansible.builtin.template', *sources) }}"
"""

ADDRESS = "198.18.9.10"
FACTS = {
    "ansible_host": ADDRESS,
    "private_address": "10.9.0.10",
    "ansible_default_ipv4": {"address": ADDRESS},
    "ansible_default_ipv6": {"address": "2001:db8::10"},
}


@pytest.fixture
def render(tmp_path: Path, ansible_playbook):
    """site.conf and http.conf of the tree rendered for these role variables and lb1 facts,
    once `nginx -t` passed on the whole tree."""

    def run(variables: dict | None = None, facts: dict | None = None) -> dict[str, str]:
        work = Path(tempfile.mkdtemp(dir=tmp_path))
        return _render(work, ansible_playbook, variables or {}, FACTS if facts is None else facts)

    return run


def _render(work: Path, ansible_playbook, variables: dict, facts: dict) -> dict[str, str]:
    nginx = shutil.which("nginx")
    if nginx is None:  # a missing tool is a failure, not a skip
        pytest.fail("nginx not found: apt-get install nginx (Debian) on the controller")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=lb1", "-days", "1",
         "-keyout", str(work / "server.key"), "-out", str(work / "server.crt")],
        capture_output=True, check=True,
    )  # fmt: skip
    inventory = {
        "all": {
            "hosts": {
                "lb1": {"ansible_python_interpreter": sys.executable, **facts},
                "app1": {"ansible_host": "198.18.9.11"},
            },
            "children": {"lb": {"hosts": {"lb1": {}}}, "app": {"hosts": {"app1": {}}}},
        }
    }
    (work / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (work / "render.yml").write_text(PLAYBOOK % {"role": ROLE})
    extra = {
        "out": str(work / "rendered.json"),
        "nginx_proxy_cache_path": str(work / "cache"),
        "__nginx_tls_active_certificate": str(work / "server.crt"),
        "__nginx_tls_active_key": str(work / "server.key"),
        "__nginx_tls_active_chain": "",
        **variables,
    }
    (work / "vars.json").write_text(json.dumps(extra))
    result = ansible_playbook(
        work / "hosts.yml", work / "render.yml", "-e", f"@{work / 'vars.json'}"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = work / "conf"
    for name, text in json.loads((work / "rendered.json").read_text()).items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    # As tasks/check.yml does on the host: the whole tree, relative includes next to -c.
    check = subprocess.run(
        [nginx, "-t", "-q", "-c", str(out / "nginx.conf")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    names = ("site.conf", "http.conf", "pages/maintenance.html", "pages/maintenance.json")
    return {name: (out / "fastapi_ops" / name).read_text() for name in names}


def blocks(text: str, keyword: str) -> list[tuple[str, str]]:
    """(arguments, body) of each `keyword arguments { body }` at the top level of text."""
    text = re.sub(r"(?m)(^|;)\s*#.*$", r"\1", text)  # comments (an apostrophe is no quote)
    found, depth, head, start, quote = [], 0, None, 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote and text[i - 1] != "\\" else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "{":
            if depth == 0:
                m = re.search(rf"(?:^|[;{{}}\n])\s*{keyword}\b([^;{{}}\n]*)$", text[:i])
                head, start = (m.group(1).strip(), i + 1) if m else (None, 0)
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0 and head is not None:
                found.append((head, text[start:i]))
                head = None
    return found


def directives(block: str, name: str) -> list[str]:
    """Arguments of every `name ...;` in block, nested blocks included."""
    return [m.group(1) for m in re.finditer(rf"(?m)^\s*{name}\s+([^;]*);", block)]


def servers(site: str) -> dict[tuple[int, bool], str]:
    """Server bodies by (port, default_server)."""
    by_listener: dict[tuple[int, bool], str] = {}
    for _unused, body in blocks(site, "server"):
        listens = directives(body, "listen")
        port = int(re.match(r"(?:\[::\]:)?(\d+)", listens[0]).group(1))
        default = "default_server" in listens[0]
        assert all(("default_server" in x) == default for x in listens), listens
        assert (port, default) not in by_listener, f"two servers on {port}"
        by_listener[(port, default)] = body
    return by_listener


def test_unknown_hosts_reach_catch_alls_that_never_serve_them(render):
    site = render({"nginx_server_names": ["shop.example", "www.shop.example"]})["site.conf"]
    by_listener = servers(site)
    assert sorted(by_listener) == [(80, False), (80, True), (443, False), (443, True)]
    # Catch-alls: a closed connection on HTTP, 421 on HTTPS, nothing else.
    for port, answer in ((80, "444"), (443, "421")):
        body = by_listener[(port, True)]
        assert directives(body, "server_name") == ["_"]
        assert directives(body, "return") == [answer]
        assert not blocks(body, "location")
    # One certificate, at http level, for both HTTPS servers (no ssl_reject_handshake).
    assert site.index("ssl_certificate ") < site.index("server {")
    assert "ssl_certificate" not in "".join(by_listener.values())
    assert directives(site, "ssl_reject_handshake") == []
    # The served names: the certificate's names, then the host's addresses, once each.
    names = "shop.example www.shop.example 198.18.9.10 10.9.0.10 [2001:db8::10]"
    assert directives(by_listener[(80, False)], "server_name") == [names]
    assert directives(by_listener[(443, False)], "server_name") == [names]
    # HTTP: ACME for the served names, else a redirect to the first one, never to $host.
    http = by_listener[(80, False)]
    assert [head for head, _unused in blocks(http, "location")] == [
        "^~ /.well-known/acme-challenge/",
        "/",
    ]
    assert directives(http, "return") == ["301 https://shop.example$request_uri"]
    assert "$host" not in "".join(directives(site, "return"))


@pytest.mark.parametrize(
    ("variables", "facts", "names"),
    [
        ({}, FACTS, "lb1 198.18.9.10 10.9.0.10 [2001:db8::10]"),
        ({"nginx_serve_host_addresses": False}, FACTS, "lb1"),
        ({}, {"ansible_host": ADDRESS, "private_address": ADDRESS}, "lb1 198.18.9.10"),  # no facts
    ],
)
def test_served_names(render, variables, facts, names):
    by_listener = servers(render(variables, facts)["site.conf"])
    for port in (80, 443):
        assert directives(by_listener[(port, False)], "server_name") == [names]
    assert directives(by_listener[(80, False)], "return") == ["301 https://lb1$request_uri"]


def test_writes_limited_per_client_in_every_app_location(render):
    conf = render(
        {
            "nginx_write_limit_rate": "5r/s",
            "nginx_write_limit_burst": 3,
            "nginx_limit_exempt_sources": ["198.18.0.1/32"],
            "nginx_locations": [
                {"path": "/", "limit_req_zone": "api", "limit_req_burst": 20},
                {"path": "/upload/", "client_max_body_size": "1m"},
            ],
        }
    )
    http = conf["http.conf"]
    # Keyed by client for every method but GET, HEAD and OPTIONS; exempt clients get "".
    (write_key,) = [
        body for head, body in blocks(http, "map") if head.startswith("$request_method")
    ]
    assert dict(re.findall(r"(?m)^\s*(\S+)\s+(\S+);", write_key)) == {
        "GET": '""',
        "HEAD": '""',
        "OPTIONS": '""',
        "default": "$fastapi_ops_limit_key",
    }
    (client_key,) = [body for head, body in blocks(http, "map") if "$fastapi_ops_limit_key" in head]
    assert dict(re.findall(r"(?m)^\s*(\S+)\s+(\S+);", client_key)) == {
        "1": '""',
        "default": "$binary_remote_addr",
    }
    (geo,) = [body for head, body in blocks(http, "geo") if head == "$fastapi_ops_limit_exempt"]
    assert "198.18.0.1/32 1;" in geo
    assert "$fastapi_ops_write_limit_key zone=fastapi_ops_write:10m rate=5r/s" in directives(
        http, "limit_req_zone"
    )
    assert directives(http, "limit_req_status") == ["429"]
    # Every app location, whatever its own limits; not /metrics nor static files.
    site = servers(conf["site.conf"])[(443, False)]
    limits = {head: directives(body, "limit_req") for head, body in blocks(site, "location")}
    write = "zone=fastapi_ops_write burst=3 nodelay"
    assert limits["/"] == ["zone=api burst=20 nodelay", write]
    assert limits["/upload/"] == [write]
    assert limits["= /metrics"] == [] and limits["^~ /static/"] == []


def test_the_cache_lock_is_off_unless_asked_for(render):
    """Nginx takes the lock on every miss, also for no-store answers, and its waiters poll
    every 500 ms: on by default, it made concurrent GET /version wait up to 5 s."""

    def locks(conf: dict[str, str]) -> dict[str, list[str]]:
        site = servers(conf["site.conf"])[(443, False)]
        return {
            head: directives(body, "proxy_cache_lock")
            + directives(body, "proxy_cache_lock_timeout")
            for head, body in blocks(site, "location")
            if directives(body, "proxy_cache")
        }

    two = [{"path": "/", "cache": True}, {"path": "/catalog/", "cache": True, "cache_lock": True}]
    assert locks(render({"nginx_locations": two})) == {"/": [], "/catalog/": ["on", "5s"]}
    everywhere = {
        "nginx_locations": two[:1] + [{"path": "/catalog/", "cache": True, "cache_lock": False}],
        "nginx_proxy_cache_lock": True,
        "nginx_proxy_cache_lock_timeout": "2s",
    }
    assert locks(render(everywhere)) == {"/": ["on", "2s"], "/catalog/": []}


def test_maintenance_lets_the_allow_list_and_health_checks_through(render):
    conf = render(
        {
            "nginx_maintenance_allowed_groups": ["app", "missing"],
            "nginx_maintenance_allowed_sources": ["203.0.113.0/24"],
            "nginx_maintenance_allowed_paths": ["/health/", "/status.json"],
            "nginx_maintenance_json": {"detail": "maintenance", "until": "12:00"},
        }
    )
    http = conf["http.conf"]
    (geo,) = [
        body
        for head, body in blocks(http, "geo")
        if "$fastapi_ops_maintenance_allowed_source" in head
    ]
    allowed = dict(re.findall(r"(?m)^\s*(\S+)\s+(\S+);", geo))
    assert allowed == {
        "default": "0",
        "127.0.0.0/8": "1",
        "::1": "1",
        "198.18.9.11": "1",  # app1, no private_address: its ansible_host
        "203.0.113.0/24": "1",
    }
    (paths,) = [body for head, body in blocks(http, "map") if head.startswith("$uri")]
    assert dict(re.findall(r"(?m)^\s*(\S+)\s+(\S+);", paths)) == {
        "default": "0",
        '"~^/health/"': "1",
        '"~^/status\\.json"': "1",  # a prefix, not a pattern
    }
    # The served site checks both flags before any location; the pages are internal.
    site = servers(conf["site.conf"])[(443, False)]
    assert "if (-f /etc/nginx/fastapi_ops/maintenance-closed)" in site
    assert directives(site, "error_page") == ["503 $fastapi_ops_maintenance_page"]
    (pages,) = [body for head, body in blocks(site, "location") if head == "^~ /.fastapi_ops/"]
    assert re.search(r"(?m)^\s*internal;", pages)
    assert directives(pages, "alias") == ["/etc/nginx/fastapi_ops/pages/"]
    # The app's 503s pass through.
    assert directives(conf["site.conf"] + conf["http.conf"], "proxy_intercept_errors") == []
    assert json.loads(conf["pages/maintenance.json"]) == {"detail": "maintenance", "until": "12:00"}
    assert "<h1>Down for maintenance</h1>" in conf["pages/maintenance.html"]
