"""Rolling deploy under load: requests, failures and p99 during `playbooks/deploy.yml`
versus steady state, and the deploy's wall time, for several deploys in a row.

The lab: one lb, two app machines, db + cache on one machine; site.yml converges it.
HTTPS load through Nginx (tools.loadgen, C keep-alive connections, no retries: a
client that never retries) on a product read that bypasses the proxy cache, /version,
/health/ready and product creation: first STEADY seconds of steady state, then the
same load for the whole of each `deploy.yml -e app_build=bench-N` (a new release on
every app host, one batch at a time: drain, switch, health gate, undrain). Failures are
noted with their time; the deploy log has task start times (profile_tasks) to match.

Usage: .venv/bin/python bench/rolling.py [--connections 32] [--steady 15] [--runs 3]
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

from tools.loadgen import Load, Target, new_product

MACHINES = {"bench-rlb": "lb", "bench-rapp1": "app", "bench-rapp2": "app", "bench-rdb": "db,cache"}


def create_product(base: str, write: dict[str, str]) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the lab's self-signed cert
    body = {"sku": "ROLL-1", "name": "Rolling", "category": "bench", "price": "1.00"}
    req = urllib.request.Request(
        f"{base}/api/v1/products",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **write},
    )
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        return int(json.loads(resp.read())["id"])


def targets(base: str, pid: int, write: dict[str, str]) -> list[Target]:
    # Credentials bypass Nginx's cache; the app ignores them on reads.
    uncached = {"Authorization": "Bearer bench"}
    return [
        Target(f"{base}/api/v1/products/{pid}", headers=uncached, name="read"),
        Target(f"{base}/version", name="version"),
        Target(f"{base}/health/ready", name="ready"),
        Target(f"{base}/api/v1/products", "POST", new_product, headers=write, name="write"),
    ]


def phase(load: Load) -> dict:
    r = load.result
    return {
        **r.summary(),
        "per_target": {name: t.summary() for name, t in load.by_target.items()},
        "failure_times": [time.strftime("%H:%M:%S", time.localtime(t)) for t in r.failure_times],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--steady", type=int, default=15)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    runs = []
    with Lab("rolling", MACHINES) as lab:
        lab.playbook("playbooks/site.yml", logname="site")
        base = f"https://{lab.addresses['bench-rlb']}"
        write = lab.write_headers("bench-rolling")
        mix = targets(base, create_product(base, write), write)
        steady_load = Load(mix, args.connections, args.steady).start()
        steady_load.wait()
        steady = phase(steady_load)
        for n in range(1, args.runs + 1):
            build = f"bench-{int(time.time())}"
            load = Load(mix, args.connections, 600).start()
            time.sleep(1)
            wall = lab.playbook(
                "playbooks/deploy.yml",
                "-e",
                f"app_build={build}",
                logname=f"deploy-{n}",
                # Task start times in the log, to place any failure against a step.
                env={"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks"},
            )
            time.sleep(1)
            load.stop()
            runs.append({"run": n, "deploy_wall_s": round(wall, 1), **phase(load)})
            log(f"deploy {n}: {wall:.1f}s, sent {load.result.sent}, failed {load.result.bad}")

    rows = [["steady state", steady["sent"], steady["failed"], steady["rps"], steady["p50_ms"],
             steady["p99_ms"], ""]]  # fmt: skip
    rows += [
        [f"deploy {r['run']}", r["sent"], r["failed"], r["rps"], r["p50_ms"], r["p99_ms"],
         r["deploy_wall_s"]]
        for r in runs
    ]  # fmt: skip
    print(
        f"Rolling deploy under load: 2 app hosts, serial 1, {args.connections} HTTPS connections "
        "through Nginx, no retries (GET read/version/ready + POST)"
    )
    print(table(["phase", "requests", "failed", "req/s", "p50 ms", "p99 ms", "deploy s"], rows))
    for r in runs:
        if r["failure_times"]:
            print(f"deploy {r['run']} failures at:", ", ".join(r["failure_times"][:50]))
    benchlib.write_json(
        "rolling",
        {
            "command": "python bench/rolling.py"
            f" --connections {args.connections} --steady {args.steady} --runs {args.runs}",
            "steady": steady,
            "deploys": runs,
        },
    )
    if any(r["failed"] for r in runs):
        raise SystemExit("failed requests during a rolling deploy")


if __name__ == "__main__":
    main()
