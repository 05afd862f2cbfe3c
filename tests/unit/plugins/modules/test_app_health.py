"""app_health against in-process HTTP servers on 127.0.0.1 and on a unix socket."""

from __future__ import annotations

import json
import os
import socketserver
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ansible_collections.fastapi_ops.stack.plugins.modules import app_health


class App:
    """Scripted app: /health/ready answers 503 for the first `unready` calls."""

    def __init__(self) -> None:
        self.unready = 0
        self.calls = 0
        self.release = "1.2.0+b3"
        self.checks = {"database": "ok", "redis": {"status": "ok"}}
        self.host_headers: list[str] = []


def make_handler(app: App) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def address_string(self) -> str:  # unix sockets have no (host, port)
            return "test"

        def _send(self, status: int, body: object, ctype: str = "application/json") -> None:
            data = (json.dumps(body) if ctype == "application/json" else body).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Release", app.release)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            app.host_headers.append(self.headers.get("Host", ""))
            if self.path == "/health/ready":
                app.calls += 1
                if app.calls <= app.unready:
                    return self._send(503, {"status": "starting", "checks": {"database": "down"}})
                return self._send(200, {"status": "ready", "checks": app.checks})
            if self.path == "/version":
                return self._send(200, {"release": app.release, "git": "abc"})
            if self.path == "/text":
                return self._send(200, "plain ok", "text/plain")
            if self.path == "/auth":
                ok = self.headers.get("Authorization") == "Bearer t0ken"
                return self._send(200 if ok else 401, {"auth": ok})
            return self._send(404, {"detail": "Not Found"})

    return Handler


@pytest.fixture
def app():
    return App()


@pytest.fixture
def tcp_url(app):
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(app))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def unix_socket(app):
    path = os.path.join(tempfile.mkdtemp(prefix="app-health-"), "app.sock")
    server = UnixHTTPServer(path, make_handler(app))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path
    server.shutdown()
    server.server_close()
    os.unlink(path)


def test_healthy_first_try(run_module, tcp_url):
    res = run_module(app_health.main, {"url": tcp_url + "/health/ready"})
    assert not res.failed
    assert res["changed"] is False
    assert res["status"] == 200
    assert res["attempts"] == 1
    assert res["body"]["status"] == "ready"
    assert res["elapsed"] >= 0


def test_says_what_it_proved(run_module, tcp_url):
    res = run_module(app_health.main, {"url": tcp_url + "/health/ready"})
    assert res["proved"] == [f"GET {tcp_url}/health/ready answered 200"]


def test_service_process_is_checked_before_the_url(run_module, tcp_url, app):
    # No such unit (or no systemd at all): never healthy, and the URL is not asked.
    args = {"url": tcp_url + "/health/ready", "retries": 1, "delay": 0}
    res = run_module(
        app_health.main, {**args, "service": "no-such-app.service", "service_cwd": "/"}
    )
    assert res.failed
    assert "no-such-app.service has no main process" in res["reason"]
    assert app.calls == 0
    res = run_module(app_health.main, {**args, "service": "x.service"})
    assert res.failed and "required together" in res["msg"]


def test_retries_until_healthy(run_module, tcp_url, app):
    app.unready = 3
    res = run_module(
        app_health.main,
        {"url": tcp_url + "/health/ready", "retries": 5, "delay": 0.05, "checks_ok": ["database"]},
    )
    assert not res.failed, res
    assert res["attempts"] == 4
    assert app.calls == 4


def test_fails_with_last_response_and_reason(run_module, tcp_url, app):
    app.unready = 100
    res = run_module(app_health.main, {"url": tcp_url + "/health/ready", "retries": 2, "delay": 0})
    assert res.failed
    assert res["changed"] is False
    assert res["attempts"] == 3
    assert res["status"] == 503
    assert res["body"] == {"status": "starting", "checks": {"database": "down"}}
    assert "status 503" in res["reason"]
    assert "not healthy after 3 attempts" in res["msg"]


def test_json_assertions(run_module, tcp_url, app):
    args = {
        "url": tcp_url + "/health/ready",
        "json_equals": {"status": "ready", "checks.database": "ok"},
        "checks_ok": ["database", "redis"],
        "retries": 0,
    }
    assert not run_module(app_health.main, args).failed
    app.checks = {"database": "ok", "redis": {"status": "down"}}
    res = run_module(app_health.main, args)
    assert res.failed
    assert res["reason"] == "check 'redis' is 'down', expected 'ok'"
    res = run_module(app_health.main, dict(args, checks_ok=["cache"]))
    assert "check 'cache' is missing" in res["reason"]
    res = run_module(app_health.main, dict(args, checks_ok=[], json_equals={"status": "live"}))
    assert res["reason"] == "body.status is 'ready', expected 'live'"


def test_json_assertion_on_non_json_body(run_module, tcp_url):
    res = run_module(
        app_health.main, {"url": tcp_url + "/text", "json_equals": {"a": 1}, "retries": 0}
    )
    assert res.failed
    assert res["body"] == "plain ok"
    assert res["reason"] == "body is not a JSON object"


def test_status_code_list_and_headers(run_module, tcp_url):
    url = tcp_url + "/auth"
    assert run_module(app_health.main, {"url": url, "retries": 0}).failed
    assert not run_module(app_health.main, {"url": url, "status_code": [401], "retries": 0}).failed
    res = run_module(
        app_health.main,
        {"url": url, "headers": {"Authorization": "Bearer t0ken"}, "retries": 0},
    )
    assert not res.failed
    assert res["body"] == {"auth": True}


def test_release_from_version_url(run_module, tcp_url, app):
    args = {
        "url": tcp_url + "/health/ready",
        "release_url": tcp_url + "/version",
        "expect_release": "1.2.0+b3",
        "retries": 0,
    }
    res = run_module(app_health.main, args)
    assert not res.failed
    assert res["release"] == "1.2.0+b3"
    app.release = "1.1.0+b1"
    res = run_module(app_health.main, dict(args, retries=1, delay=0))
    assert res.failed
    assert res["release"] == "1.1.0+b1"
    assert "expected '1.2.0+b3'" in res["reason"]


def test_release_from_header_and_expect_headers(run_module, tcp_url):
    base = {"url": tcp_url + "/health/ready", "retries": 0}
    res = run_module(
        app_health.main, dict(base, expect_release="1.2.0+b3", release_header="X-Release")
    )
    assert not res.failed and res["release"] == "1.2.0+b3"
    res = run_module(app_health.main, dict(base, expect_headers={"x-release": "2.0.0"}))
    assert res.failed
    assert res["reason"] == "header x-release is '1.2.0+b3', expected '2.0.0'"


def test_unix_socket(run_module, unix_socket, app):
    app.unready = 1
    res = run_module(
        app_health.main,
        {
            "url": "http://shop.internal/health/ready",
            "unix_socket": unix_socket,
            "release_url": "http://shop.internal/version",
            "expect_release": "1.2.0+b3",
            "retries": 3,
            "delay": 0.05,
        },
    )
    assert not res.failed, res
    assert res["attempts"] == 2
    assert res["body"]["status"] == "ready"
    assert app.host_headers[0] == "shop.internal"


def test_connection_refused_and_check_mode(run_module, tmp_path):
    res = run_module(
        app_health.main,
        {
            "url": "http://x/health",
            "unix_socket": str(tmp_path / "none.sock"),
            "retries": 1,
            "delay": 0,
        },
        check_mode=True,
    )
    assert res.failed
    assert res["status"] is None
    assert res["attempts"] == 2
    assert "request failed" in res["reason"]


def test_check_mode_polls_too(run_module, tcp_url):
    res = run_module(app_health.main, {"url": tcp_url + "/health/ready"}, check_mode=True)
    assert not res.failed and res["status"] == 200 and res["changed"] is False


def test_timeout_is_a_failure_reason(run_module):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the TCP handshake, never answers
    try:
        port = listener.getsockname()[1]
        res = run_module(
            app_health.main,
            {"url": f"http://127.0.0.1:{port}/", "timeout": 0.2, "retries": 0},
        )
    finally:
        listener.close()
    assert res.failed
    assert "timed out" in res["reason"]
