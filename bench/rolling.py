#!/usr/bin/env python3
"""Rolling deploy under load: requests, failures and p99 during `playbooks/deploy.yml`
versus steady state, and the deploy's wall time.

The lab: one lb, two app machines, db + cache on one machine; site.yml converges it.
HTTPS load through Nginx (tools.loadgen, C keep-alive connections split over the URLs)
on a product read, /version and /health/ready: first STEADY seconds of steady state,
then the same load for the whole `deploy.yml -e app_build=bench-N` (a new release on
every app host, one batch at a time: drain, switch, health gate, undrain). Failures are
noted with their time; the deploy log has task start times (profile_tasks) to match.

Usage: .venv/bin/python bench/rolling.py [--connections 32] [--steady 15]
Machines: bench-rlb, bench-rapp1, bench-rapp2, bench-rdb (torn down on exit).
Figures: bench/out/rolling.json
"""

from __future__ import annotations

import argparse
import json
import ssl
import time
import urllib.request
from urllib.parse import urlsplit

import benchlib
from benchlib import Lab, log, table

from tools.loadgen import CLOSED_UNDER_US, Load, Result


class TimedLoad(Load):
    """tools.loadgen's Load, one URL per instance, that also notes when each failure and
    each retry happened (wall clock), to place them against the deploy's task times."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failure_times: list[str] = []
        self.retry_times: list[str] = []

    async def _worker(self, client, n, deadline):  # Load._worker, plus the times
        import httpx

        r = self.result
        while not self._stop.is_set() and time.monotonic() < deadline:
            t0 = time.perf_counter()
            r.sent += 1
            try:
                try:
                    resp = await client.get(self.urls[0])
                except CLOSED_UNDER_US as exc:
                    # As tools.loadgen: one retry of the idempotent GET when the server
                    # closed a reused keep-alive connection under us (RFC 9110 9.2.2).
                    r.retried += 1
                    self.retry_times.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}")
                    resp = await client.get(self.urls[0])
                r.statuses[resp.status_code] += 1
                r.latencies_ms.append((time.perf_counter() - t0) * 1000)
                if resp.status_code >= 500:
                    self.failure_times.append(f"{time.strftime('%H:%M:%S')} {resp.status_code}")
            except httpx.HTTPError as exc:
                r.failures += 1
                r.errors[type(exc).__name__] += 1
                self.failure_times.append(f"{time.strftime('%H:%M:%S')} {type(exc).__name__}")


def start_loads(urls: list[str], connections: int, duration: float) -> list[TimedLoad]:
    per_url = max(1, connections // len(urls))
    return [TimedLoad([u], connections=per_url, duration=duration).start() for u in urls]


def stop_loads(loads: list[TimedLoad], wait: bool = False) -> dict:
    """Joins (or stops) the loads; the combined summary plus one per URL."""
    total = Result()
    per_url = {}
    failure_times: list[str] = []
    retry_times: list[str] = []
    for load in loads:
        if wait:
            load._thread.join()
        r = load.stop()
        total.sent += r.sent
        total.failures += r.failures
        total.retried += r.retried
        total.statuses.update(r.statuses)
        total.errors.update(r.errors)
        total.latencies_ms += r.latencies_ms
        total.elapsed = max(total.elapsed, r.elapsed)
        per_url[urlsplit(load.urls[0]).path] = r.summary()
        failure_times += load.failure_times
        retry_times += load.retry_times
    return {
        **total.summary(),
        "per_url": per_url,
        "failure_times": sorted(failure_times),
        "retry_times": sorted(retry_times),
    }


MACHINES = {"bench-rlb": "lb", "bench-rapp1": "app", "bench-rapp2": "app", "bench-rdb": "db,cache"}


def create_product(base: str) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the lab's self-signed cert
    body = {"sku": "ROLL-1", "name": "Rolling", "category": "bench", "price": "1.00"}
    req = urllib.request.Request(
        f"{base}/api/v1/products",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        return int(json.loads(resp.read())["id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--steady", type=int, default=15)
    args = parser.parse_args()

    with Lab("rolling", MACHINES) as lab:
        lab.playbook("playbooks/site.yml", logname="site")
        base = f"https://{lab.addresses['bench-rlb']}"
        pid = create_product(base)
        urls = [f"{base}/api/v1/products/{pid}", f"{base}/version", f"{base}/health/ready"]

        steady_r = stop_loads(start_loads(urls, args.connections, args.steady), wait=True)

        build = f"bench-{int(time.time())}"
        loads = start_loads(urls, args.connections, 600)
        time.sleep(1)
        t0 = time.monotonic()
        wall = lab.playbook(
            "playbooks/deploy.yml",
            "-e",
            f"app_build={build}",
            logname="deploy",
            # Task start times in the log, to place any failure against a step.
            env={"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"},
        )
        time.sleep(1)
        during_r = stop_loads(loads)
        total = time.monotonic() - t0
        releases = {
            m: lab.ssh(m, "readlink /srv/fastapi-ops-app/current").strip()
            for m in ("bench-rapp1", "bench-rapp2")
        }
        log(f"releases after the deploy: {releases}")

    rows = []
    for name, r in (("steady state", steady_r), ("during deploy.yml", during_r)):
        rows.append(
            [
                name,
                r["sent"],
                r["failures"],
                r["server_errors"],
                r["retried"],
                r["rps"],
                r["p50_ms"],
                r["p99_ms"],
            ]
        )
    p99_ratio = round(during_r["p99_ms"] / steady_r["p99_ms"], 2) if steady_r["p99_ms"] else 0
    print(
        f"Rolling deploy under load: 2 app hosts, serial 1, {args.connections} HTTPS connections "
        f"through Nginx; deploy.yml wall time {wall:.1f}s"
    )
    print(
        table(
            ["phase", "requests", "failures", "5xx", "retried", "req/s", "p50 ms", "p99 ms"], rows
        )
    )
    print(
        f"p99 during/steady: {p99_ratio:.2f}; failed requests during the deploy: "
        f"{during_r['failures'] + during_r['server_errors']} (target 0)"
    )
    benchlib.write_json(
        "rolling",
        {
            "command": "python bench/rolling.py"
            f" --connections {args.connections} --steady {args.steady}",
            "urls": [u.replace(base, "") for u in urls],
            "deploy_wall_s": round(wall, 1),
            "load_window_s": round(total, 1),
            "steady": steady_r,
            "during_deploy": during_r,
            "p99_during_over_steady": p99_ratio,
            "releases_after": releases,
        },
    )
    print(
        table(
            ["url", "phase", "requests", "failed", "retried", "p50 ms", "p99 ms"],
            [
                [
                    u,
                    phase,
                    r["sent"],
                    r["failures"] + r["server_errors"],
                    r["retried"],
                    r["p50_ms"],
                    r["p99_ms"],
                ]
                for phase, res in (("steady", steady_r), ("deploy", during_r))
                for u, r in res["per_url"].items()
            ],
        )
    )
    if during_r["retry_times"]:
        print("retries at:", ", ".join(during_r["retry_times"]))
    if during_r["failure_times"]:
        print(
            "failures at:",
            ", ".join(during_r["failure_times"]),
            "(see bench/out/rolling/deploy.log)",
        )
    if during_r["failures"] or during_r["server_errors"]:
        raise SystemExit("failed requests during the rolling deploy")


if __name__ == "__main__":
    main()
