#!/usr/bin/env python3
"""Stand-in upstream for the edge scenario: JSON answers whose Cache-Control the test picks.

  /api/v1/products/<id>   Cache-Control: public, max-age=30
  /short                  Cache-Control: public, max-age=1   (stale-serving test)
  /nostore                Cache-Control: no-store
  /nocache-headers        no caching header at all
  /metrics                plain text
  ?cc=VALUE               overrides Cache-Control, ?pad=N adds N bytes to the body
  ?status=N               answers with status N (503: with Retry-After, as an app whose
                          database is down)

Every answer echoes what the upstream received: whether an Authorization header came,
Connection/Upgrade (keepalive and WebSocket map), X-Request-ID and X-Forwarded-*.
"""

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
STATE = {"n": 0}
HOST = socket.gethostname()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "edge-upstream"

    def _answer(self, head_only: bool) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        with LOCK:
            STATE["n"] += 1
            n = STATE["n"]
        cache_control = None
        ctype = "application/json"
        if url.path.startswith("/api/v1/products/"):
            cache_control = "public, max-age=30"
        elif url.path == "/short":
            cache_control = "public, max-age=1"
        elif url.path == "/nostore":
            cache_control = "no-store"
        if "cc" in query:
            cache_control = query["cc"][0]
        if url.path == "/metrics":
            ctype = "text/plain; version=0.0.4"
            body = f"edge_upstream_requests_total {n}\n".encode()
        else:
            doc = {
                "path": url.path,
                "n": n,
                "host": HOST,
                "authorization": "Authorization" in self.headers,
                "cookie": self.headers.get("Cookie"),
                "connection": self.headers.get("Connection"),
                "upgrade": self.headers.get("Upgrade"),
                "x_request_id": self.headers.get("X-Request-ID"),
                "x_forwarded_for": self.headers.get("X-Forwarded-For"),
                "x_forwarded_proto": self.headers.get("X-Forwarded-Proto"),
                "peer": self.client_address[0],
                "peer_port": self.client_address[1],
            }
            if "pad" in query:
                doc["pad"] = "x" * int(query["pad"][0])
            body = json.dumps(doc).encode()
        status = int(query.get("status", ["200"])[0])
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "5")
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if cache_control:
            self.send_header("Cache-Control", cache_control)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(True)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        self._answer(False)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(
        (os.environ.get("BIND", "0.0.0.0"), int(os.environ.get("PORT", "8000"))), Handler
    )
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
