"""Bounded HTTP(S) load for drills and benchmarks: N keep-alive connections send the
targets' requests in turn until a duration ends or `stop()` is called, and count every
connection error and every non-2xx answer. Without a rate they send as fast as the server
answers (benchmarks); drills give a rate, so that the load leaves the lab's CPUs to the
playbook it runs beside.

    python -m tools.loadgen https://198.18.0.10/api/v1/products/1 -c 50 -d 30
    TOKEN=$(python -m tools.api_token INVENTORY) python -m tools.loadgen \
        https://198.18.0.10/version --post https://198.18.0.10/api/v1/products

Writes need a token (`--token` or TOKEN, sent as `Authorization: Bearer`); a write the app
refuses (401, 403) counts as failed like any other non-2xx answer.

No retries by default: a client that never retries is what "zero failed requests" is
measured with. `retry=True` retries a GET once when the server closed a reused
keep-alive connection under it (as browsers and urllib3 do, RFC 9110 9.2.2); the retry
is counted in `retried`, and a figure that relies on it must say so.

Only for the lab and loopback: it refuses other addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import json
import os
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

import httpx

from tools.api_token import auth_headers

ALLOWED = [ipaddress.ip_network(n) for n in ("127.0.0.0/8", "::1/128", "198.18.0.0/15")]
MAX_DURATION = 900.0
T = TypeVar("T")
CLOSED_UNDER_US = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
MAX_FAILURE_TIMES = 10_000
# The drills' pace (requests a second): every request is still a client that never
# retries, and a gap of 20 ms in service is seen; unpaced, the load and the stack serving
# it took most of CI's two CPUs from the playbooks under test and the other scenarios.
DRILL_RATE = 50.0


@dataclass
class Target:
    """One request of the mix. `json` may be a callable, called for every request (a
    fresh body per POST)."""

    url: str
    method: str = "GET"
    json: object = None
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"{self.method} {urlsplit(self.url).path}"

    def body(self) -> object:
        return self.json() if callable(self.json) else self.json


def new_product() -> dict[str, str]:
    """A product body with a unique sku: POSTs that create a row each."""
    return {
        "sku": f"load-{uuid.uuid4().hex[:16]}",
        "name": "Load",
        "price": "1.00",
        "category": "load",
    }


@dataclass
class Result:
    sent: int = 0
    failures: int = 0  # connection errors and timeouts
    retried: int = 0  # only with retry=True
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    failure_times: list[float] = field(default_factory=list)  # time.time() of each bad one
    elapsed: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not 200 <= code < 300)

    @property
    def bad(self) -> int:
        """What a client that never retries saw fail: connection errors and non-2xx."""
        return self.failures + self.non_2xx

    def failed_between(self) -> tuple[float, float] | None:
        """Wall-clock time of the first and the last bad request, if any."""
        return (self.failure_times[0], self.failure_times[-1]) if self.failure_times else None

    def percentile(self, q: float) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else 0.0
        return statistics.quantiles(self.latencies_ms, n=1000, method="inclusive")[
            min(998, int(q * 1000) - 1)
        ]

    def summary(self) -> dict:
        return {
            "sent": self.sent,
            "failed": self.bad,
            "connection_errors": self.failures,
            "non_2xx": self.non_2xx,
            "retried": self.retried,
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
    """Runs the load in a background thread so a test can deploy meanwhile.

    `targets` are URLs (GET) or Target objects, sent round robin by every connection.
    Results are kept in total (`result`) and per target name (`by_target`)."""

    def __init__(
        self,
        targets: list[str | Target],
        connections: int = 32,
        duration: float = 60.0,
        retry: bool = False,
        timeout: float = 10.0,
        rate: float | None = None,
    ):
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be above 0 requests per second, not {rate}")
        self.targets = [t if isinstance(t, Target) else Target(t) for t in targets]
        for target in self.targets:
            check_target(target.url)
        self.connections, self.retry, self.timeout = connections, retry, timeout
        self.rate = rate
        self.duration = min(duration, MAX_DURATION)
        self.result = Result()
        self.by_target = {t.name: Result() for t in self.targets}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> Result:
        self._stop.set()
        self._thread.join()
        return self.result

    def around(self, run: Callable[[], T], settle: float = 2.0) -> tuple[T, float]:
        """Starts the load, calls `run()` after `settle` seconds of steady state and stops
        the load `settle` seconds after it returned: (its result, its wall time)."""
        self.start()
        time.sleep(settle)
        started = time.monotonic()
        outcome = run()
        wall = time.monotonic() - started
        time.sleep(settle)
        self.stop()
        return outcome, wall

    def wait(self) -> Result:
        self._thread.join()
        return self.result

    def _record(self, target: Target, status: int | None, error: str, started: float) -> None:
        latency = (time.perf_counter() - started) * 1000
        for r in (self.result, self.by_target[target.name]):
            r.sent += 1
            if status is None:
                r.failures += 1
                r.errors[error] += 1
            else:
                r.statuses[status] += 1
                r.latencies_ms.append(latency)
            if (status is None or not 200 <= status < 300) and (
                len(r.failure_times) < MAX_FAILURE_TIMES
            ):
                r.failure_times.append(time.time())

    async def _send(self, client: httpx.AsyncClient, target: Target) -> httpx.Response:
        return await client.request(
            target.method, target.url, json=target.body(), headers=target.headers
        )

    async def _worker(self, client: httpx.AsyncClient, n: int, deadline: float) -> None:
        order = itertools.islice(itertools.cycle(self.targets), n % len(self.targets), None)
        # With a rate, each connection sends once every `gap` seconds, the connections
        # spread over it; time lost to a slow answer is not made up with a burst.
        gap = self.connections / self.rate if self.rate else 0.0
        next_at = time.monotonic() + gap * n / self.connections
        for target in order:
            if gap:
                await asyncio.sleep(max(0.0, min(next_at, deadline) - time.monotonic()))
                next_at = max(next_at + gap, time.monotonic())
            if self._stop.is_set() or time.monotonic() >= deadline:
                return
            started = time.perf_counter()
            try:
                try:
                    resp = await self._send(client, target)
                except CLOSED_UNDER_US:
                    if not (self.retry and target.method == "GET"):
                        raise
                    self.result.retried += 1
                    self.by_target[target.name].retried += 1
                    resp = await self._send(client, target)
                self._record(target, resp.status_code, "", started)
            except httpx.HTTPError as exc:
                self._record(target, None, type(exc).__name__, started)

    async def _run(self) -> None:
        limits = httpx.Limits(
            max_connections=self.connections, max_keepalive_connections=self.connections
        )
        # retries=0: httpx never retries a request; only our explicit retry above does.
        transport = httpx.AsyncHTTPTransport(verify=False, limits=limits, retries=0)
        start = time.monotonic()
        async with httpx.AsyncClient(transport=transport, timeout=self.timeout) as client:
            await asyncio.gather(
                *(self._worker(client, n, start + self.duration) for n in range(self.connections))
            )
        elapsed = time.monotonic() - start
        for r in (self.result, *self.by_target.values()):
            r.elapsed = elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+", help="URLs to GET")
    parser.add_argument("--post", action="append", default=[], help="URL to POST products to")
    parser.add_argument("-c", "--connections", type=int, default=32)
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    parser.add_argument("-r", "--rate", type=float, help="requests per second (default: no limit)")
    parser.add_argument("--retry", action="store_true", help="retry a GET once (counted)")
    parser.add_argument(
        "--token", default=os.environ.get("TOKEN"), help="token of the POSTs (default: $TOKEN)"
    )
    args = parser.parse_args()
    if args.post and not args.token:
        parser.error("--post needs a token: --token or TOKEN (python -m tools.api_token INVENTORY)")
    targets: list[str | Target] = [*args.urls]
    targets += [
        Target(url, "POST", new_product, headers=auth_headers(args.token)) for url in args.post
    ]
    load = Load(targets, args.connections, args.duration, retry=args.retry, rate=args.rate).start()
    result = load.wait()
    per_target = {name: r.summary() for name, r in load.by_target.items()}
    print(json.dumps({"total": result.summary(), **per_target}, indent=2))


if __name__ == "__main__":
    main()
