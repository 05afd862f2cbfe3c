"""Bounded HTTP(S) load for drills: N keep-alive connections request URLs in a loop
until a duration ends or `stop()` is called, and count every failure and 5xx.

    python -m tools.loadgen https://198.18.0.10/api/v1/products/1 -c 50 -d 30

Only for the lab and loopback: it refuses other addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

ALLOWED = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "198.18.0.0/15")]
MAX_DURATION = 900.0
CLOSED_UNDER_US = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@dataclass
class Result:
    sent: int = 0
    failures: int = 0  # connection errors, timeouts (after the one retry below)
    retried: int = 0  # GETs retried once after the server closed a reused connection
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    @property
    def bad(self) -> int:
        return self.failures + self.server_errors

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        return statistics.quantiles(self.latencies_ms, n=1000, method="inclusive")[
            min(998, int(q * 1000) - 1)
        ]

    def summary(self) -> dict:
        return {
            "sent": self.sent,
            "failures": self.failures,
            "retried": self.retried,
            "server_errors": self.server_errors,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors.most_common(5)),
            "rps": round(self.sent / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": round(self.percentile(0.50), 2),
            "p99_ms": round(self.percentile(0.99), 2),
            "elapsed_s": round(self.elapsed, 2),
        }


def check_target(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        addr = ipaddress.ip_address("127.0.0.1") if host == "localhost" else None
    if addr is None or not any(addr in net for net in ALLOWED):
        raise SystemExit(f"loadgen: {host} is not a lab or loopback address; refusing")


class Load:
    """Runs the load in a background thread so a test can deploy meanwhile."""

    def __init__(self, urls: list[str], connections: int = 32, duration: float = 60.0):
        for url in urls:
            check_target(url)
        self.urls, self.connections = urls, connections
        self.duration = min(duration, MAX_DURATION)
        self.result = Result()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> Result:
        self._stop.set()
        self._thread.join()
        return self.result

    async def _worker(self, client: httpx.AsyncClient, n: int, deadline: float) -> None:
        r = self.result
        i = n
        while not self._stop.is_set() and time.monotonic() < deadline:
            url = self.urls[i % len(self.urls)]
            i += 1
            t0 = time.perf_counter()
            r.sent += 1
            try:
                try:
                    resp = await client.get(url)
                except CLOSED_UNDER_US:
                    # A kept-alive connection closed as we reused it (Nginx closes idle
                    # client connections on reload): RFC 9110 9.2.2 lets a client retry an
                    # idempotent request, as browsers and urllib3 do. Once, and counted.
                    r.retried += 1
                    resp = await client.get(url)
                r.statuses[resp.status_code] += 1
                r.latencies_ms.append((time.perf_counter() - t0) * 1000)
            except httpx.HTTPError as exc:
                r.failures += 1
                r.errors[type(exc).__name__] += 1

    async def _run(self) -> None:
        limits = httpx.Limits(
            max_connections=self.connections, max_keepalive_connections=self.connections
        )
        start = time.monotonic()
        async with httpx.AsyncClient(verify=False, limits=limits, timeout=10.0) as client:
            await asyncio.gather(
                *(self._worker(client, n, start + self.duration) for n in range(self.connections))
            )
        self.result.elapsed = time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+")
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    args = parser.parse_args()
    load = Load(args.urls, args.connections, args.duration).start()
    load._thread.join()
    print(json.dumps(load.result.summary(), indent=2))


if __name__ == "__main__":
    main()
