"""What TLS to PostgreSQL costs the app: the uncached DB read through the stack, and a new
connection, with the app's verify-full (as site.yml deploys it) and in plaintext.

The lab is converged with postgresql_hba_contype=host, which takes both, so the cases only
differ in the app's PGSSLMODE: verify-full (the role's CA, ECDSA P-384 certificates) or
disable. The cases alternate (tls, plain, tls, plain...); before each, the app reloads with
the mode (new workers, new pools) and the db host is asked which of the app's sessions are
encrypted, so a case never measures the other mode. Each case is a wrk run of GET
/api/v1/products/{fresh id} through HTTPS Nginx with an Authorization header (no proxy
cache, Redis miss, DB read): case d of bench/stack.py. Then, on the app machine, N new
connections one after the other (connect, SELECT 1, close) in each mode with the release's
asyncpg: what the pool pays for each connection it opens.

Usage: .venv/bin/python bench/db_tls.py [--duration 10] [--connections 32] [--rounds 2]
                                        [--connects 200]
Machines: bench-sedge (lb, app), bench-sdata (db, cache), torn down on exit.
Figures: bench/out/db_tls.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time

import benchlib
from benchlib import FreshReads, Lab, log, ratio, table
from stack import NO_CACHE, https_json

MACHINES = {"bench-sedge": "lb,app", "bench-sdata": "db,cache"}
APP = "fastapi-ops-app"
ENV_FILE = f"/etc/{APP}/{APP}.env"
PYTHON = f"/srv/{APP}/current/venv/bin/python"
MODES = {"tls": "verify-full", "plain": "disable"}
# New connections one after the other (argv: count, PGSSLMODE); prints the median and p95
# in ms. asyncpg reads PGSSLMODE and PGSSLROOTCERT as the app does.
CONNECTS = """
import asyncio, os, statistics, sys, time, asyncpg
os.environ['PGSSLMODE'] = sys.argv[2]
async def main(n):
    url = os.environ['DATABASE_URL'].replace('+asyncpg', '')
    took = []
    for _ in range(n):
        t0 = time.perf_counter()
        c = await asyncpg.connect(url)
        await c.fetchval('SELECT 1')
        await c.close()
        took.append((time.perf_counter() - t0) * 1000)
    took.sort()
    print(statistics.median(took), took[int(len(took) * 0.95)])
asyncio.run(main(int(sys.argv[1])))
"""


def app_mode(lab: Lab, mode: str) -> None:
    """The app reloaded with this PGSSLMODE (its EnvironmentFile, re-read on reload)."""
    lab.ssh(
        "bench-sedge",
        f"sed -i 's/^PGSSLMODE=.*/PGSSLMODE=\"{MODES[mode]}\"/' {ENV_FILE}"
        f" && systemctl reload {APP} && sleep 3",
    )


def app_sessions_encrypted(lab: Lab) -> set[str]:
    """pg_stat_ssl's `ssl` of the app role's sessions on the db host."""
    out = lab.ssh(
        "bench-sdata",
        'cd /tmp && runuser -u postgres -- psql -AtX -d app -c "SELECT DISTINCT s.ssl'
        " FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'app'\"",
    )
    return set(out.split())


def connects(lab: Lab, mode: str, n: int) -> dict[str, float]:
    """Median and p95 (ms) of n new connections from the app machine, as the app's user
    with the app's environment (its URL, PGSSLROOTCERT) and this PGSSLMODE."""
    out = lab.ssh(
        "bench-sedge",
        f"systemd-run --quiet --wait --pipe --collect --uid={APP} --gid={APP}"
        f" -p EnvironmentFile={ENV_FILE} {PYTHON} -c {shlex.quote(CONNECTS)} {n} {MODES[mode]}",
    )
    median, p95 = (float(x) for x in out.split())
    return {"median_ms": round(median, 2), "p95_ms": round(p95, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connects", type=int, default=200)
    args = parser.parse_args()
    d, c = args.duration, args.connections

    with Lab("db_tls", MACHINES) as lab:
        lab.playbook("playbooks/site.yml", "-e", "postgresql_hba_contype=host", logname="site")
        lb = f"https://{lab.addresses['bench-sedge']}"
        _status, _headers, body = https_json(
            f"{lb}/api/v1/products",
            {"sku": f"TLS-{time.time_ns()}", "name": "Bench", "category": "bench", "price": "1"},
            lab.write_headers("bench-db-tls"),
        )
        pid = json.loads(body)["id"]
        fresh = FreshReads(lab, "bench-sdata", f"{lb}/api/v1/products/{pid}", pid)
        reads: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for rnd in range(args.rounds):
            for mode in MODES:
                app_mode(lab, mode)
                for dur, keep in ((2, False), (d, True)):
                    r = fresh.wrk(dur, c, NO_CACHE)
                    if keep:
                        reads[mode].append(r)
                        log(f"round {rnd + 1} {mode}: {r['rps']:.0f} req/s")
                encrypted = app_sessions_encrypted(lab)
                if encrypted != {"t" if mode == "tls" else "f"}:
                    raise SystemExit(f"{mode}: the app's sessions have ssl={encrypted}")
        new_connections = {mode: connects(lab, mode, args.connects) for mode in MODES}
        app_mode(lab, "tls")  # as deployed

    med = {
        m: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
        for m, rs in reads.items()
    }
    print(
        f"DB read through the stack (Redis miss), wrk -t2 -c{c} -d{d}s, "
        f"median of {args.rounds} alternating rounds; pooled connections"
    )
    print(
        table(
            ["app to PostgreSQL", "req/s", "p50 ms", "p99 ms"],
            [[m, v["rps"], v["p50_ms"], v["p99_ms"]] for m, v in med.items()],
        )
    )
    print(f"tls/plain req/s: {ratio(med['tls']['rps'], med['plain']['rps']):.2f}")
    print(f"New connection (connect, SELECT 1, close), {args.connects} one after the other")
    print(
        table(
            ["app to PostgreSQL", "median ms", "p95 ms"],
            [[m, v["median_ms"], v["p95_ms"]] for m, v in new_connections.items()],
        )
    )
    benchlib.write_json(
        "db_tls",
        {
            "command": "python bench/db_tls.py --duration"
            f" {d} --connections {c} --rounds {args.rounds} --connects {args.connects}",
            "reads": {"median": med, "runs": reads},
            "tls_over_plain_rps": ratio(med["tls"]["rps"], med["plain"]["rps"]),
            "new_connection": new_connections,
        },
    )


if __name__ == "__main__":
    main()
