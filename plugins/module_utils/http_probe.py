"""Small stdlib HTTP(S) client that can also talk over a unix socket (used by app_health)."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_BODY_BYTES = 1024 * 1024


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTPConnection over an AF_UNIX stream socket (Host header still from the URL)."""

    def __init__(self, socket_path: str, host: str = "localhost", timeout: float = 5.0) -> None:
        super().__init__(host, timeout=timeout)
        self.socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    text: str = ""
    json: Any = None
    is_json: bool = False

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    @property
    def body(self) -> Any:
        return self.json if self.is_json else self.text


def _connection(
    url: str, unix_socket: str | None, timeout: float, validate_certs: bool
) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = parts.hostname or "localhost"
    if unix_socket:
        return UnixHTTPConnection(unix_socket, parts.netloc or host, timeout), target
    if parts.scheme == "https":
        context = ssl.create_default_context()
        if not validate_certs:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=context)
        return conn, target
    return http.client.HTTPConnection(host, parts.port, timeout=timeout), target


def request(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    unix_socket: str | None = None,
    timeout: float = 5.0,
    validate_certs: bool = True,
) -> Response:
    """Send one request; raise OSError/http.client.HTTPException on transport errors."""
    conn, target = _connection(url, unix_socket, timeout, validate_certs)
    try:
        conn.request(method, target, headers=dict(headers or {}))
        raw = conn.getresponse()
        data = raw.read(MAX_BODY_BYTES)
        response = Response(
            status=raw.status,
            reason=raw.reason,
            headers=dict(raw.getheaders()),
            text=data.decode("utf-8", errors="replace"),
        )
    finally:
        conn.close()
    try:
        response.json = json.loads(response.text)
        response.is_json = True
    except ValueError:
        pass
    return response
