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

All of them stay up side by side and the cases run in interleaved rounds (a b c d e f,
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

import benchlib
from benchlib import FreshReads, Lab, log, ratio, table, wrk

MACHINES = {"bench-lb": "lb", "bench-app": "app", "bench-db": "db", "bench-cache": "cache"}
APP = "fastapi-ops-app"
ENV_FILE = f"/etc/{APP}/{APP}.env"
CURRENT = f"/srv/{APP}/current"
NAIVE_ENV_FILE = f"/etc/{APP}/bench-naive.env"
NAIVE_PORT = 8100
# Any Authorization header makes the role's Nginx neither read nor fill its cache; the
# app ignores it on reads.
NO_CACHE = {"Authorization": "Bearer bench"}


def https_json(url: str, body: dict | None = None, headers: dict | None = None) -> tuple:
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # the lab's self-signed cert
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, headers={"content-type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
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

        cases = {
            "a": (f"{lb}/static/product.json", None),
            "b": (product, None),
            "c": (product, NO_CACHE),
            "d": (product, NO_CACHE),  # with fresh ids, below
            "e": (naive, None),
        }
        if guide_url:
            cases["f"] = (guide_url, NO_CACHE)
        runs: dict[str, list[dict]] = {k: [] for k in cases}
        try:
            for rnd in range(args.rounds):
                for k, (url, headers) in cases.items():
                    if k == "d":
                        fresh.wrk(2, c, headers)  # warm-up
                        r = fresh.wrk(d, c, headers)
                    else:
                        wrk(url, 2, c, headers=headers)  # warm-up: pools, caches, TLS
                        r = wrk(url, d, c, headers=headers)
                    if r["non_2xx"] or r["socket_errors"]:
                        log(
                            f"WARNING case {k}: {r['non_2xx']} non-2xx,"
                            f" {r['socket_errors']} socket errors"
                        )
                    log(f"round {rnd + 1} case {k}: {r['rps']:.0f} req/s p99 {r['p99_ms']:.1f} ms")
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
    }
    results = {
        k: {
            "rps": median([r["rps"] for r in rs]),
            "p50_ms": median([r["p50_ms"] for r in rs]),
            "p99_ms": median([r["p99_ms"] for r in rs]),
            "errors": sum(r["non_2xx"] + r["socket_errors"] for r in rs),
            "rounds": rs,
        }
        for k, rs in runs.items()
    }
    rows = [
        [k, labels[k], r["rps"], r["p50_ms"], r["p99_ms"], r["errors"]] for k, r in results.items()
    ]
    rps = {k: r["rps"] for k, r in results.items()}
    ratios = {
        "b/a": ratio(rps["b"], rps["a"]),
        "c/e": ratio(rps["c"], rps["e"]),
        "d/e": ratio(rps["d"], rps["e"]),
    }
    if "f" in rps:
        ratios["c/f"] = ratio(rps["c"], rps["f"])
    ratios["p99 c/e"] = ratio(results["c"]["p99_ms"], results["e"]["p99_ms"])
    # The same ratios round by round: how much of a ratio is the shared machine's noise.
    per_round = {
        name: [ratio(runs[x][i]["rps"], runs[y][i]["rps"]) for i in range(args.rounds)]
        for name, (x, y) in {"b/a": "ba", "c/e": "ce", "d/e": "de", "c/f": "cf"}.items()
        if x in runs and y in runs
    }
    targets = {"b/a": ">= 0.8", "c/e": ">= 1.8", "c/f": ">= 1.2", "p99 c/e": "<= 1.5"}
    print(
        f"Stack throughput: GET /api/v1/products/{{id}} ({size} B JSON), wrk -t2 -c{c} -d{d}s "
        f"from the lab host, median of {args.rounds} interleaved rounds"
    )
    print(table(["case", "what", "req/s", "p50 ms", "p99 ms", "errors"], rows))
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
