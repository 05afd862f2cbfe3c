"""Bounded HTTP load from the controller to one lab address (stdlib only).

`connections` threads each keep one HTTP/1.1 keep-alive connection and send GET requests
back to back until stopped (or `max_seconds` passes). A request fails when it raises or
answers anything but 200. No retries: a request lost on a connection the server closed
counts as a failure, except in the case HTTP clients retry (RFC 9112 section 9.3.1,
urllib3's default for idempotent methods): the connection was closed or reset before any
byte of a response came back, typically a keep-alive connection closed by a stopping
worker. Such a GET is retried once on a new connection and counted in `retried`; a
failure of the retry counts as failed. Refused connections, timeouts and non-200 fail.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    max_latency: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def retry(self) -> None:
        with self.lock:
            self.retried += 1

    def record(self, ok: bool, error: str | None, latency: float) -> None:
        with self.lock:
            self.sent += 1
            self.max_latency = max(self.max_latency, latency)
            if not ok:
                self.failed += 1
                key = error or "unknown"
                self.errors[key] = self.errors.get(key, 0) + 1


class Load:
    def __init__(
        self, host: str, port: int, path: str, connections: int = 32, max_seconds: float = 240
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.connections, self.max_seconds = connections, max_seconds
        self.result = LoadResult()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _once(self, conn: http.client.HTTPConnection) -> http.client.HTTPResponse:
        conn.request("GET", self.path)
        response = conn.getresponse()
        response.read()
        return response

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            start = time.monotonic()
            try:
                try:
                    response = self._once(conn)
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    # Closed before any response byte: retry once on a new connection.
                    self.result.retry()
                    conn.close()
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                    response = self._once(conn)
                ok = response.status == 200
                error = None if ok else f"HTTP {response.status}"
                self.result.record(ok, error, time.monotonic() - start)
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self.result.record(False, type(exc).__name__, time.monotonic() - start)
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Load:
        for _ in range(self.connections):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
