"""Stack throughput on the lab: the deployed stack (lb + app + db + cache) vs a naive
`uvicorn app.main:app`, and vs the guide's own recipe, as ratios of one run.

Cases, all `wrk -t2 -cC -dDs` from this host, GET of one product (JSON) unless noted:
  a  Nginx serving a static file of the product JSON's size over HTTPS (the ceiling)
  b  /api/v1/products/{id} through HTTPS Nginx, proxy-cache hit
  c  the same with an Authorization header (bypasses Nginx's cache): Redis hit in the app
  d  the same, but every request reads a product not read before (wrk script
     benchlib/fresh_ids.lua over seeded rows): Redis miss, DB read, Redis fill
  e  a single `uvicorn app.main:app` with defaults on the app machine, its own port, no
     Nginx, CACHE_ENABLED=false (what a naive deployment gives)
  f  the guide's recipe (bench/benchlib/guide.py): its Nginx proxy settings with
     `Connection "upgrade"` on every request, Gunicorn 2 x cores + 1 workers, its pool
     sizes, reached with the same Authorization header as c
  g  GET /version through HTTPS Nginx: an uncached, no-store answer without data
  w  POST /api/v1/products through HTTPS Nginx, a new product per request
     (benchlib/creates.lua), with a write token: a PostgreSQL commit and a cache
     invalidation in Redis
  x  the same POST against the naive uvicorn of e
  y  w with PostgreSQL's synchronous_commit off for the run (ALTER SYSTEM, reload, then
     reset): what waiting for the WAL flush costs a write here

Each measured run also records the CPU time each lab machine (its process tree on this
host), wrk and the whole host spent on it, per request: on 2 shared cores, a case's
throughput is bounded by the CPU all its parts spend on one request.

All of them stay up side by side and the cases run in interleaved rounds (every case,
then again); the table shows each case's median, and each ratio round by round, because
the 2 shared cores make single figures noisy.

Usage: .venv/bin/python bench/stack.py [--duration 10] [--connections 32] [--rounds 3]
                                       [--no-guide]
Machines: bench-lb, bench-app, bench-db, bench-cache (torn down on exit).
Figures: bench/out/stack.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import benchlib
from benchlib import CpuMeter, FreshReads, Lab, log, ratio, table, wrk

MACHINES = {"bench-lb": "lb", "bench-app": "app", "bench-db": "db", "bench-cache": "cache"}
APP = "fastapi-ops-app"
ENV_FILE = f"/etc/{APP}/{APP}.env"
CURRENT = f"/srv/{APP}/current"
NAIVE_ENV_FILE = f"/etc/{APP}/bench-naive.env"
NAIVE_PORT = 8100
# Any Authorization header makes the role's Nginx neither read nor fill its cache; the
# app ignores it on reads.
NO_CACHE = {"Authorization": "Bearer bench"}
CREATES = str(Path(__file__).parent / "benchlib" / "creates.lua")


def synchronous_commit(lab: Lab, value: str | None) -> None:
    """Set PostgreSQL's synchronous_commit for every session (None: back to the role's
    setting), by ALTER SYSTEM and a reload: pooled connections take it at once."""
    setting = f"SET synchronous_commit = {value}" if value else "RESET synchronous_commit"
    lab.ssh(
        "bench-db",
        f'runuser -u postgres -- psql -qAt -c "ALTER SYSTEM {setting}"'
        ' -c "SELECT pg_reload_conf()"',
    )


def https_json(url: str, body: dict | None = None, headers: dict | None = None) -> tuple:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, headers={"content-type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(req, context=benchlib.lab_tls(), timeout=10) as resp:
        return resp.status, dict(resp.headers), resp.read()


def start_naive(lab: Lab) -> None:
    """`uvicorn app.main:app` with its defaults (1 process), from the release venv, as the
    app's user, with the same environment, on a spare port opened for this host only."""
    lab.ssh(
        "bench-app",
        # Gunicorn's settings (WEB_CONCURRENCY, read by uvicorn too) left out of its copy
        # of the environment file: uvicorn's defaults, one process.
        f"grep -v -E '^(WEB_CONCURRENCY|GUNICORN_[A-Z_]+)=' {ENV_FILE} > {NAIVE_ENV_FILE}"
        f" && chgrp {APP} {NAIVE_ENV_FILE} && chmod 0640 {NAIVE_ENV_FILE} && "
        f"systemd-run --unit=bench-uvicorn --uid={APP} --gid={APP} -p WorkingDirectory={CURRENT}"
        f" -p EnvironmentFile={NAIVE_ENV_FILE} -p EnvironmentFile={CURRENT}/release.env"
        f" -E CACHE_ENABLED=false -p UnsetEnvironment=PROMETHEUS_MULTIPROC_DIR"
        f" {CURRENT}/venv/bin/uvicorn app.main:app --host 0.0.0.0 --port {NAIVE_PORT}"
        " && nft insert rule inet fastapi_ops input ip saddr 198.18.0.1"
        f" tcp dport {NAIVE_PORT} accept",
    )
    base = f"http://{lab.addresses['bench-app']}:{NAIVE_PORT}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health/live", timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(
        "naive uvicorn did not start: "
        + lab.ssh("bench-app", "journalctl -u bench-uvicorn -n 20", check=False)
    )


def stop_naive(lab: Lab) -> None:
    lab.ssh(
        "bench-app",
        "systemctl stop bench-uvicorn; systemctl reset-failed bench-uvicorn;"
        f" rm -f {NAIVE_ENV_FILE}",
        check=False,
    )
    lab.ssh(
        "bench-app",
        "h=$(nft -a list chain inet fastapi_ops input | sed -n 's/.*dport "
        f"{NAIVE_PORT} accept # handle \\([0-9]*\\)/\\1/p'); "
        '[ -z "$h" ] || nft delete rule inet fastapi_ops input handle $h',
        check=False,
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-guide", action="store_true", help="leave case f out")
    args = parser.parse_args()
    d, c = args.duration, args.connections

    with Lab("stack", MACHINES) as lab:
        converge = lab.playbook("playbooks/site.yml", logname="site")
        lb = f"https://{lab.addresses['bench-lb']}"
        _status, _headers, body = https_json(
            f"{lb}/api/v1/products",
            {
                "sku": f"BENCH-{time.time_ns()}",
                "name": "Bench product",
                "category": "bench",
                "price": "9.99",
            },
            lab.write_headers("bench-stack"),
        )
        pid = json.loads(body)["id"]
        product = f"{lb}/api/v1/products/{pid}"
        _status, _headers, body = https_json(product)
        size = len(body)
        lab.ssh(
            "bench-lb",
            f"head -c {size} /dev/zero | tr '\\0' x > /var/www/fastapi_ops/static/product.json"
            " && chmod 0644 /var/www/fastapi_ops/static/product.json",
        )
        fresh = FreshReads(lab, "bench-db", product, pid)  # case d
        start_naive(lab)
        naive = f"http://{lab.addresses['bench-app']}:{NAIVE_PORT}/api/v1/products/{pid}"
        guide_url = None
        if not args.no_guide:
            from benchlib import guide

            guide_url = f"{guide.apply(lab)}/api/v1/products/{pid}"
        time.sleep(5)  # workers import the app
        headers_seen = {
            "b": https_json(product)[1].get("X-Cache-Status"),
            "c": https_json(product, headers=NO_CACHE)[1].get("X-Cache-Status"),
        }
        log(f"product {pid}: {size} bytes, X-Cache-Status {headers_seen}")

        write = lab.write_headers("bench-writes")
        creates = f"{lb}/api/v1/products"
        naive_creates = f"http://{lab.addresses['bench-app']}:{NAIVE_PORT}/api/v1/products"

        def get(url: str, headers: dict | None = None) -> Callable[[int, str], dict]:
            return lambda seconds, _tag: wrk(url, seconds, c, headers=headers)

        def post(url: str) -> Callable[[int, str], dict]:
            # Every request creates a product with a SKU of its own (creates.lua).
            return lambda seconds, tag: wrk(
                url, seconds, c, headers=write, script=CREATES, script_args=[tag]
            )

        cases: dict[str, Callable[[int, str], dict]] = {
            "a": get(f"{lb}/static/product.json"),
            "b": get(product),
            "c": get(product, NO_CACHE),
            "d": lambda seconds, _tag: fresh.wrk(seconds, c, NO_CACHE),
            "e": get(naive),
            "g": get(f"{lb}/version"),
            "w": post(creates),
            "x": post(naive_creates),
            "y": post(creates),  # with synchronous_commit off, below
        }
        if guide_url:
            cases["f"] = get(guide_url, NO_CACHE)
        runs: dict[str, list[dict]] = {k: [] for k in cases}
        try:
            for rnd in range(args.rounds):
                for k, run in cases.items():
                    if k == "y":
                        synchronous_commit(lab, "off")
                    try:
                        run(2, f"warm-{k}{rnd}-{time.time_ns()}")  # pools, caches, TLS
                        with CpuMeter(list(MACHINES)) as cpu:
                            r = run(d, f"{k}{rnd}-{time.time_ns()}")
                    finally:
                        if k == "y":
                            synchronous_commit(lab, None)
                    r["cpu_ms_per_request"] = {
                        name: round(1000 * sec / max(r["requests"], 1), 3)
                        for name, sec in cpu.seconds.items()
                        if name != "wall"
                    }
                    r["host_cores_busy"] = round(cpu.seconds["host busy"] / cpu.seconds["wall"], 2)
                    if r["non_2xx"] or r["socket_errors"]:
                        log(
                            f"WARNING case {k}: {r['non_2xx']} non-2xx,"
                            f" {r['socket_errors']} socket errors"
                        )
                    log(
                        f"round {rnd + 1} case {k}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f}"
                        f" p99 {r['p99_ms']:.1f} ms, {r['host_cores_busy']} cores busy"
                    )
                    runs[k].append(r)
        finally:
            stop_naive(lab)
            if guide_url:
                guide.remove(lab)

    labels = {
        "a": "static file via HTTPS Nginx",
        "b": "Nginx proxy-cache hit",
        "c": "uncached via Nginx, Redis hit",
        "d": "uncached via Nginx, Redis miss + DB read",
        "e": "naive uvicorn, DB read",
        "f": "guide recipe via its Nginx, Redis hit",
        "g": "GET /version via Nginx (no-store)",
        "w": "POST (create) via Nginx",
        "x": "naive uvicorn, POST (create)",
        "y": "w with synchronous_commit off",
    }
    results = {
        k: {
            "rps": median([r["rps"] for r in rs]),
            "p50_ms": median([r["p50_ms"] for r in rs]),
            "p99_ms": median([r["p99_ms"] for r in rs]),
            "errors": sum(r["non_2xx"] + r["socket_errors"] for r in rs),
            "cpu_ms_per_request": {
                name: median([r["cpu_ms_per_request"][name] for r in rs])
                for name in rs[0]["cpu_ms_per_request"]
            },
            "rounds": rs,
        }
        for k, rs in runs.items()
    }
    rows = [
        [
            k,
            labels[k],
            r["rps"],
            r["p50_ms"],
            r["p99_ms"],
            ratio(r["p99_ms"], r["p50_ms"]),
            r["errors"],
        ]
        for k, r in results.items()
    ]
    # CPU milliseconds per request, by machine: on 2 shared cores, what bounds a case.
    cpu_columns = [*MACHINES, "wrk", "host busy"]
    cpu_rows = [
        [k, *(f"{r['cpu_ms_per_request'].get(m, 0.0):.2f}" for m in cpu_columns)]
        for k, r in results.items()
    ]
    # Ratios of medians, and the same ratio round by round: how much of a ratio is the
    # shared machine's noise.
    pairs = {"b/a": "ba", "c/e": "ce", "d/e": "de", "w/x": "wx", "c/f": "cf", "y/w": "yw"}
    ratios = {
        name: ratio(results[x]["rps"], results[y]["rps"])
        for name, (x, y) in pairs.items()
        if x in results and y in results
    }
    ratios["p99 c/e"] = ratio(results["c"]["p99_ms"], results["e"]["p99_ms"])
    per_round = {
        name: [ratio(runs[x][i]["rps"], runs[y][i]["rps"]) for i in range(args.rounds)]
        for name, (x, y) in pairs.items()
        if x in runs and y in runs
    }
    targets = {
        "b/a": ">= 0.8",
        "c/e": ">= 1.8",
        "d/e": ">= 1.8",
        "w/x": ">= 1.8",
        "c/f": ">= 1.2",
        "p99 c/e": "<= 1.5",
    }
    print(
        f"Stack throughput: GET /api/v1/products/{{id}} ({size} B JSON) unless noted,"
        f" wrk -t2 -c{c} -d{d}s from the lab host, median of {args.rounds} interleaved rounds"
    )
    print(table(["case", "what", "req/s", "p50 ms", "p99 ms", "p99/p50", "errors"], rows))
    print("CPU ms per request (medians), by machine, the load generator and the whole host:")
    print(table(["case", *(m.removeprefix("bench-") for m in cpu_columns)], cpu_rows))
    print(
        table(
            ["ratio", "median", "per round", "target"],
            [
                [
                    k,
                    f"{v:.2f}",
                    " ".join(f"{x:.2f}" for x in per_round.get(k, [])),
                    targets.get(k, ""),
                ]
                for k, v in ratios.items()
            ],
        )
    )
    benchlib.write_json(
        "stack",
        {
            "command": "python bench/stack.py"
            f" --duration {d} --connections {c} --rounds {args.rounds}",
            "site_converge_s": round(converge, 1),
            "product_bytes": size,
            "x_cache_status": headers_seen,
            "cases": {k: {"what": labels[k], **r} for k, r in results.items()},
            "ratios": ratios,
            "ratios_per_round": per_round,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
