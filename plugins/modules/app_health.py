#!/usr/bin/python
"""Ansible module fastapi_ops.stack.app_health."""
# ruff: noqa: E402  (Ansible convention: DOCUMENTATION/EXAMPLES/RETURN come before imports)

from __future__ import annotations

DOCUMENTATION = r"""
module: app_health
short_description: Wait until an HTTP(S) endpoint or a unix socket answers healthy
version_added: 0.1.0
author: fastapi_ops.stack maintainers (@fastapi-ops)
description:
  - Polls a health URL, over TCP or a unix socket, until the response is healthy, then
    returns it. Healthy means all of the configured checks pass; by default only the
    status code.
  - Checks, in order, are O(service_cwd), O(status_code), O(json_equals), O(checks_ok),
    O(expect_headers) and O(expect_release).
  - O(expect_release) proves that a given release answers, for example after a rolling
    upgrade. It is compared with a field of the JSON body of O(release_url) (for example
    the app's C(/version)), or, with O(release_header), with a response header such as
    C(X-Release).
  - For an app without a release endpoint, O(service) and O(service_cwd) prove the
    release by its process instead - the main process of the systemd service runs in
    the release's directory (a C(WorkingDirectory) through a C(current) link resolves
    when the process starts) - and the health URL proves that it answers.
  - Read-only; never reports C(changed). Uses only the Python standard library.
options:
  url:
    description:
      - URL to poll. With O(unix_socket), only its path, query and host name (sent as the
        C(Host) header) are used, for example V(http://localhost/health/ready).
    type: str
    required: true
  unix_socket:
    description: Path of a unix stream socket to connect to instead of the URL's host.
    type: path
  method:
    description: HTTP method.
    type: str
    default: GET
  headers:
    description: Request headers.
    type: dict
    default: {}
  status_code:
    description: Status codes that count as healthy.
    type: list
    elements: int
    default: [200]
  json_equals:
    description:
      - Fields the JSON body must have, with their exact values. A key may be a dotted
        path into nested objects, for example C(checks.database).
    type: dict
    default: {}
  checks_ok:
    description:
      - Names of dependency checks that must be ok. Each name C(n) requires
        C(body.checks.n) to be the string C(ok), or an object whose C(status) is C(ok)
        (the shape of the reference app's C(/health/ready)).
    type: list
    elements: str
    default: []
  expect_headers:
    description: Response headers (case-insensitive names) that must have these values.
    type: dict
    default: {}
  expect_release:
    description: Release that must answer, for example V(1.2.0+b3).
    type: str
  release_url:
    description:
      - URL whose JSON body holds the release (fetched the same way, through
        O(unix_socket) if set), for example V(http://localhost/version).
      - Defaults to O(url).
    type: str
  release_field:
    description: Dotted path of the release in the JSON body of O(release_url).
    type: str
    default: release
  release_header:
    description:
      - Read the release from this response header of O(url) (for example V(X-Release))
        instead of a JSON field of O(release_url).
    type: str
  service:
    description: Systemd service whose main process O(service_cwd) checks.
    type: str
  service_cwd:
    description:
      - Directory the main process of O(service) must run in (compared after resolving
        links), for example the release directory. Requires O(service).
    type: path
  retries:
    description: Further attempts after the first one fails (total attempts = retries + 1).
    type: int
    default: 30
  delay:
    description: Seconds between attempts.
    type: float
    default: 2
  timeout:
    description: Seconds each request may take (connect and read).
    type: float
    default: 5
  validate_certs:
    description: Verify the server's TLS certificate for V(https) URLs.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Read-only; polls in check mode too.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - The module runs on the target, so V(localhost) URLs and unix sockets are the target's.
"""

EXAMPLES = r"""
- name: Wait for the new release to be ready behind its socket
  fastapi_ops.stack.app_health:
    url: http://localhost/health/ready
    unix_socket: /run/shop/gunicorn.sock
    json_equals:
      status: ok
    checks_ok: [database, redis]
    expect_release: "{{ app_release_id }}"
    release_url: http://localhost/version
    retries: 30
    delay: 1

- name: The public endpoint answers through Nginx with the new release header
  fastapi_ops.stack.app_health:
    url: "https://{{ inventory_hostname }}/health/live"
    validate_certs: false
    expect_headers:
      X-Release: "{{ app_release_id }}"
  delegate_to: localhost
"""

RETURN = r"""
status:
  description: HTTP status of the last response (null if none was received).
  returned: always
  type: int
  sample: 200
body:
  description: Body of the last response, parsed as JSON when it is JSON.
  returned: always
  type: raw
  sample: {status: ok, checks: {database: ok, redis: ok}}
headers:
  description: Headers of the last response.
  returned: always
  type: dict
release:
  description: Release read from O(release_url) or O(release_header), when checked.
  returned: when expect_release is set
  type: str
  sample: 1.2.0+b3
elapsed:
  description: Seconds spent polling.
  returned: always
  type: float
attempts:
  description: Number of attempts made.
  returned: always
  type: int
proved:
  description: What the healthy answer proved, one sentence each.
  returned: success
  type: list
  elements: str
  sample:
    - main process 812 of shop.service runs in /srv/shop/releases/1.2.0+b3
    - GET http://localhost/health/ready answered 200
reason:
  description: Why the last attempt was not healthy (on failure).
  returned: failure
  type: str
"""

import http.client
import os
import subprocess
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fastapi_ops.stack.plugins.module_utils.http_probe import (
    Response,
    request,
)

ARGUMENT_SPEC: dict[str, Any] = {
    "url": {"type": "str", "required": True},
    "unix_socket": {"type": "path"},
    "method": {"type": "str", "default": "GET"},
    "headers": {"type": "dict", "default": {}},
    "status_code": {"type": "list", "elements": "int", "default": [200]},
    "json_equals": {"type": "dict", "default": {}},
    "checks_ok": {"type": "list", "elements": "str", "default": []},
    "expect_headers": {"type": "dict", "default": {}},
    "expect_release": {"type": "str"},
    "release_url": {"type": "str"},
    "release_field": {"type": "str", "default": "release"},
    "release_header": {"type": "str"},
    "service": {"type": "str"},
    "service_cwd": {"type": "path"},
    "retries": {"type": "int", "default": 30},
    "delay": {"type": "float", "default": 2},
    "timeout": {"type": "float", "default": 5},
    "validate_certs": {"type": "bool", "default": True},
}

_MISSING = object()


def lookup(data: Any, path: str) -> Any:
    """Value at a dotted path in nested dicts, or _MISSING."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return _MISSING
        data = data[part]
    return data


def body_problems(response: Response, params: dict[str, Any]) -> list[str]:
    """Reasons the response is not healthy (empty list when it is)."""
    if response.status not in params["status_code"]:
        return [f"status {response.status}, expected one of {params['status_code']}"]
    problems = []
    needs_json = params["json_equals"] or params["checks_ok"]
    if needs_json and not isinstance(response.json, dict):
        return ["body is not a JSON object"]
    for path, expected in params["json_equals"].items():
        actual = lookup(response.json, path)
        if actual is _MISSING:
            problems.append(f"body has no field {path!r}")
        elif actual != expected:
            problems.append(f"body.{path} is {actual!r}, expected {expected!r}")
    for name in params["checks_ok"]:
        checks = response.json.get("checks")
        value = checks.get(name, _MISSING) if isinstance(checks, dict) else _MISSING
        if isinstance(value, dict):
            value = value.get("status", _MISSING)
        if value != "ok":
            shown = "missing" if value is _MISSING else repr(value)
            problems.append(f"check {name!r} is {shown}, expected 'ok'")
    for name, expected in params["expect_headers"].items():
        actual = response.header(name)
        if actual != str(expected):
            problems.append(f"header {name} is {actual!r}, expected {str(expected)!r}")
    return problems


class Prober:
    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.last: Response | None = None
        self.release: str | None = None
        self.pid: str | None = None

    def _get(self, url: str, method: str = "GET") -> Response:
        p = self.params
        return request(
            url,
            method=method,
            headers={str(k): str(v) for k, v in p["headers"].items()},
            unix_socket=p["unix_socket"],
            timeout=p["timeout"],
            validate_certs=p["validate_certs"],
        )

    def attempt(self) -> str | None:
        """One probe; returns the reason it is unhealthy, or None when healthy."""
        p = self.params
        if p["service"]:
            problem = self._process_problem()
            if problem:
                return problem
        try:
            self.last = self._get(p["url"], p["method"])
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return f"request failed: {type(exc).__name__}: {exc}"
        problems = body_problems(self.last, p)
        if not problems and p["expect_release"] is not None:
            problems = self._release_problems()
        return "; ".join(problems) or None

    def _process_problem(self) -> str | None:
        p = self.params
        show = ["systemctl", "show", "--property=MainPID", "--value", p["service"]]
        proc = subprocess.run(show, capture_output=True, text=True, check=False)
        self.pid = proc.stdout.strip()
        if proc.returncode != 0 or self.pid in ("", "0"):
            return f"{p['service']} has no main process"
        try:
            cwd = os.path.realpath(f"/proc/{self.pid}/cwd", strict=True)
        except OSError as exc:
            return f"cannot read the directory of process {self.pid}: {exc}"
        if cwd != os.path.realpath(p["service_cwd"]):
            expected = p["service_cwd"]
            return f"main process {self.pid} of {p['service']} runs in {cwd}, expected {expected}"
        return None

    def proved(self) -> list[str]:
        p = self.params
        found = []
        if p["service"]:
            found.append(f"main process {self.pid} of {p['service']} runs in {p['service_cwd']}")
        found.append(f"{p['method']} {p['url']} answered {self.last.status if self.last else None}")
        if p["expect_release"] is not None:
            found.append(f"release {self.release} answers")
        return found

    def _release_problems(self) -> list[str]:
        p = self.params
        expected = p["expect_release"]
        if p["release_header"]:
            self.release = self.last.header(p["release_header"]) if self.last else None
            source = f"header {p['release_header']}"
        else:
            url = p["release_url"] or p["url"]
            try:
                response = self.last if url == p["url"] else self._get(url)
            except (OSError, http.client.HTTPException, ValueError) as exc:
                return [f"release request failed: {type(exc).__name__}: {exc}"]
            value = lookup(response.json, p["release_field"])
            self.release = None if value is _MISSING else str(value)
            source = f"{url} field {p['release_field']!r}"
        if self.release != expected:
            return [f"release from {source} is {self.release!r}, expected {expected!r}"]
        return []


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    if params["retries"] < 0 or params["delay"] < 0 or params["timeout"] <= 0:
        module.fail_json(msg="retries and delay must be >= 0, timeout > 0")
    if bool(params["service"]) != bool(params["service_cwd"]):
        module.fail_json(msg="parameters are required together: service, service_cwd")
    prober = Prober(params)
    started = time.monotonic()
    attempts = 0
    reason: str | None = "not attempted"
    while attempts <= params["retries"]:
        attempts += 1
        reason = prober.attempt()
        if reason is None:
            break
        if attempts <= params["retries"]:
            time.sleep(params["delay"])
    last = prober.last
    result: dict[str, Any] = {
        "changed": False,
        "status": last.status if last else None,
        "body": last.body if last else None,
        "headers": last.headers if last else {},
        "elapsed": round(time.monotonic() - started, 3),
        "attempts": attempts,
        "url": params["url"],
    }
    if params["expect_release"] is not None:
        result["release"] = prober.release
    if reason is not None:
        where = f" (via {params['unix_socket']})" if params["unix_socket"] else ""
        module.fail_json(
            msg=f"{params['url']}{where} not healthy after {attempts} attempts: {reason}",
            reason=reason,
            **result,
        )
    module.exit_json(proved=prober.proved(), **result)


if __name__ == "__main__":
    main()
