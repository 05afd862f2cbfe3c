"""What TLS to PostgreSQL and to Redis costs the app: the uncached DB read and the Redis hit
through the stack, and a new PostgreSQL connection, as site.yml deploys them (verify-full,
rediss://) and in plaintext.

The lab is converged with postgresql_hba_contype=host and redis_plaintext, which take both,
so the modes only differ in the app's environment: `tls` as deployed, `redis plain` (Redis
on its plain-text port, PostgreSQL still verify-full), `plain` (both). The modes alternate
in rounds; before each, the app reloads with the mode (new workers, new pools) and the db
host is asked which of the app's sessions are encrypted and on which Redis port they are,
so a case never measures the other mode. Two cases, each a wrk run through HTTPS Nginx with
an Authorization header (no proxy cache): `miss` is GET /api/v1/products/{fresh id}, a
Redis miss and a DB read (case d of bench/stack.py); `hit` reads one product again and
again, a Redis hit (case c). Then, on the app machine, N new PostgreSQL connections one
after the other (connect, SELECT 1, close) in each PGSSLMODE with the release's asyncpg:
what the pool pays for each connection it opens.

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
from benchlib import FreshReads, Lab, log, ratio, table, wrk
from stack import NO_CACHE, https_json

MACHINES = {"bench-sedge": "lb,app", "bench-sdata": "db,cache"}
APP = "fastapi-ops-app"
ENV_FILE = f"/etc/{APP}/{APP}.env"
PYTHON = f"/srv/{APP}/current/venv/bin/python"
# The app's environment in each mode, made from the deployed file (kept as ENV_FILE.bench):
# PGSSLMODE, and REDIS_URL moved to the plain-text port without the CA.
PG_PLAIN = r's/^PGSSLMODE=.*/PGSSLMODE="disable"/'
REDIS_PLAIN = r'/^REDIS_URL=/{s#rediss://#redis://#;s#:6380/#:6379/#;s#?ssl_ca_certs=[^"]*##}'
MODES = {"tls": [], "redis plain": [REDIS_PLAIN], "plain": [PG_PLAIN, REDIS_PLAIN]}
# What the db host must see of the app's sessions in each mode: pg_stat_ssl's `ssl`, and
# the Redis port they connect to.
EXPECTED = {"tls": ({"t"}, {"6380"}), "redis plain": ({"t"}, {"6379"}), "plain": ({"f"}, {"6379"})}
PGSSLMODES = {"tls": "verify-full", "plain": "disable"}
# redis-cli on the db host, over TLS, with the role's password (REDISCLI_AUTH).
REDIS_CLI = (
    "REDISCLI_AUTH=$(cat /etc/redis/admin.password) redis-cli -e --tls"
    " --cacert /etc/redis/tls/ca.crt -p 6380"
)
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
    """The app reloaded with this mode's environment (its EnvironmentFile, re-read on
    reload), made from the deployed one."""
    edits = " ".join(f"-e {shlex.quote(e)}" for e in MODES[mode] or [""])
    lab.ssh(
        "bench-sedge",
        f"[ -f {ENV_FILE}.bench ] || cp -p {ENV_FILE} {ENV_FILE}.bench;"
        f" sed {edits} {ENV_FILE}.bench > {ENV_FILE} && systemctl reload {APP} && sleep 3",
    )


def redis_clients_user(lab: Lab) -> None:
    """A Redis user that may list the clients (the role's own login may not), with the
    role's password, in memory only: the role's ACL file does not have it."""
    lab.ssh(
        "bench-sdata",
        f"{REDIS_CLI} --user fastapi-ops ACL SETUSER bench-clients on"
        ' ">$(cat /etc/redis/admin.password)" -@all "+client|list"',
    )


def app_sessions(lab: Lab) -> tuple[set[str], set[str]]:
    """pg_stat_ssl's `ssl` of the app role's sessions, and the local ports of the app
    user's Redis connections (CLIENT LIST's laddr), on the db host."""
    pg = lab.ssh(
        "bench-sdata",
        'cd /tmp && runuser -u postgres -- psql -AtX -d app -c "SELECT DISTINCT s.ssl'
        " FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'app'\"",
    )
    clients = lab.ssh("bench-sdata", f"{REDIS_CLI} --user bench-clients CLIENT LIST")
    fields = [
        dict(f.split("=", 1) for f in line.split() if "=" in f) for line in clients.splitlines()
    ]
    ports = {f["laddr"].rsplit(":", 1)[1] for f in fields if f.get("user") == "app"}
    return set(pg.split()), ports


def connects(lab: Lab, mode: str, n: int) -> dict[str, float]:
    """Median and p95 (ms) of n new connections from the app machine, as the app's user
    with the app's environment (its URL, PGSSLROOTCERT) and this PGSSLMODE."""
    out = lab.ssh(
        "bench-sedge",
        f"systemd-run --quiet --wait --pipe --collect --uid={APP} --gid={APP}"
        f" -p EnvironmentFile={ENV_FILE} {PYTHON} -c {shlex.quote(CONNECTS)}"
        f" {n} {PGSSLMODES[mode]}",
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
        lab.playbook(
            "playbooks/site.yml",
            "-e",
            "postgresql_hba_contype=host",
            "-e",
            '{"redis_plaintext": true}',
            logname="site",
        )
        lb = f"https://{lab.addresses['bench-sedge']}"
        _status, _headers, body = https_json(
            f"{lb}/api/v1/products",
            {"sku": f"TLS-{time.time_ns()}", "name": "Bench", "category": "bench", "price": "1"},
            lab.write_headers("bench-db-tls"),
        )
        pid = json.loads(body)["id"]
        product = f"{lb}/api/v1/products/{pid}"
        redis_clients_user(lab)
        fresh = FreshReads(lab, "bench-sdata", product, pid)
        runs: dict[str, dict[str, list[dict]]] = {m: {"miss": [], "hit": []} for m in MODES}
        for rnd in range(args.rounds):
            for mode in MODES:
                app_mode(lab, mode)
                for case in ("miss", "hit"):
                    for dur, keep in ((2, False), (d, True)):
                        if case == "miss":
                            r = fresh.wrk(dur, c, NO_CACHE)
                        else:
                            r = wrk(product, dur, c, headers=NO_CACHE)
                        if keep:
                            runs[mode][case].append(r)
                            log(f"round {rnd + 1} {mode} {case}: {r['rps']:.0f} req/s")
                seen = app_sessions(lab)
                if seen != EXPECTED[mode]:
                    raise SystemExit(f"{mode}: the app's sessions are (PG ssl, Redis port) {seen}")
        new_connections = {m: connects(lab, m, args.connects) for m in PGSSLMODES}
        app_mode(lab, "tls")  # as deployed

    med = {
        m: {
            case: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
            for case, rs in cases.items()
        }
        for m, cases in runs.items()
    }
    failed = sum(
        r["non_2xx"] + r["socket_errors"] for cs in runs.values() for rs in cs.values() for r in rs
    )
    ratios = {
        case: {
            "tls/plain": ratio(med["tls"][case]["rps"], med["plain"][case]["rps"]),
            "tls/redis plain": ratio(med["tls"][case]["rps"], med["redis plain"][case]["rps"]),
            "per round tls/plain": [
                ratio(t["rps"], p["rps"])
                for t, p in zip(runs["tls"][case], runs["plain"][case], strict=True)
            ],
        }
        for case in ("miss", "hit")
    }
    print(
        f"Through the stack, wrk -t2 -c{c} -d{d}s, median of {args.rounds} alternating rounds;"
        f" pooled connections; {failed} non-2xx or socket errors in all runs"
    )
    print(
        table(
            ["mode", "case", "req/s", "p50 ms", "p99 ms"],
            [
                [m, case, v["rps"], v["p50_ms"], v["p99_ms"]]
                for m, cases in med.items()
                for case, v in cases.items()
            ],
        )
    )
    for case, rs in ratios.items():
        rounds = " ".join(f"{x:.2f}" for x in rs["per round tls/plain"])
        print(
            f"{case}: tls/plain req/s {rs['tls/plain']:.2f} (rounds {rounds}),"
            f" tls/redis plain {rs['tls/redis plain']:.2f}"
        )
    print(
        f"New PostgreSQL connection (connect, SELECT 1, close), {args.connects} one after the other"
    )
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
            "reads": {"median": med, "runs": runs},
            "ratios": ratios,
            "failed": failed,
            "new_connection": new_connections,
        },
    )


if __name__ == "__main__":
    main()
