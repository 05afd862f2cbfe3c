#!/usr/bin/env python3
"""Rolling deploy under load: requests, failures and p99 during `playbooks/deploy.yml`
versus steady state, and the deploy's wall time.

The lab: one lb, two app machines, db + cache on one machine; site.yml converges it.
HTTPS load through Nginx (tools.loadgen, C keep-alive connections) on a product read,
/version and /health/ready: first STEADY seconds of steady state, then the same load
for the whole `deploy.yml -e app_build=bench-N` (a new release on every app host, one
batch at a time: drain, switch, health gate, undrain).

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

import benchlib
from benchlib import Lab, log, table

from tools.loadgen import Load

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

        steady = Load(urls, connections=args.connections, duration=args.steady).start()
        steady._thread.join()
        steady_r = steady.result.summary()

        build = f"bench-{int(time.time())}"
        load = Load(urls, connections=args.connections, duration=600).start()
        time.sleep(1)
        t0 = time.monotonic()
        wall = lab.playbook("playbooks/deploy.yml", "-e", f"app_build={build}", logname="deploy")
        time.sleep(1)
        during_r = load.stop().summary()
        total = time.monotonic() - t0
        releases = {
            m: lab.ssh(m, "readlink /srv/fastapi-ops-app/current").strip()
            for m in ("bench-rapp1", "bench-rapp2")
        }
        log(f"releases after the deploy: {releases}")

    rows = []
    for name, r in (("steady state", steady_r), ("during deploy.yml", during_r)):
        rows.append(
            [name, r["sent"], r["failures"], r["server_errors"], r["rps"], r["p50_ms"], r["p99_ms"]]
        )
    p99_ratio = round(during_r["p99_ms"] / steady_r["p99_ms"], 2) if steady_r["p99_ms"] else 0
    print(
        f"Rolling deploy under load: 2 app hosts, serial 1, {args.connections} HTTPS connections "
        f"through Nginx; deploy.yml wall time {wall:.1f}s"
    )
    print(table(["phase", "requests", "failures", "5xx", "req/s", "p50 ms", "p99 ms"], rows))
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
    if during_r["failures"] or during_r["server_errors"]:
        raise SystemExit("failed requests during the rolling deploy")


if __name__ == "__main__":
    main()
