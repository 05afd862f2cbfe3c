"""Tuning effect: the role's PostgreSQL settings (PGTune values) versus Debian's defaults
on the app's uncached DB read, and Redis with the role's settings versus Redis defaults
(redis-benchmark on the lab).

PostgreSQL: the role writes its settings with ALTER SYSTEM (postgresql.auto.conf). The
"defaults" case keeps only the role's base settings (listening, port, password
encryption, connection budget, logging) and drops the tuned ones, then restarts; the
cases alternate (tuned, defaults, tuned, defaults...) and each is a wrk run of
GET /api/v1/products/{fresh id} through HTTPS Nginx with an Authorization header (no
proxy cache, Redis miss, DB read) - case d of bench/stack.py.

Redis: redis-benchmark from the app machine against the role's server and against a
second redis-server started with no config file at all (Redis' built-in defaults) on a
spare port, same clients/requests/tests.

Usage: .venv/bin/python bench/tuning.py [--duration 10] [--connections 32] [--rounds 2]
Machines: bench-tedge (lb, app), bench-tdata (db, cache), torn down on exit.
Figures: bench/out/tuning.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import benchlib
from benchlib import FreshReads, Lab, log, ratio, table
from stack import NO_CACHE, https_json

MACHINES = {"bench-tedge": "lb,app", "bench-tdata": "db,cache"}
AUTO_CONF = "/var/lib/postgresql/15/main/postgresql.auto.conf"
BASE_KEYS = (
    "listen_addresses|port|password_encryption|max_connections|superuser_reserved_connections"
    "|log_connections|log_disconnections|log_lock_waits|log_min_duration_statement"
)
REDIS_TESTS = "set,get,incr,lpush,lpop"


def pg_mode(lab: Lab, tuned: bool) -> None:
    """Restarts PostgreSQL with the role's settings or with only its base settings."""
    keep = f"[ -e {AUTO_CONF}.bench-tuned ] || cp -p {AUTO_CONF} {AUTO_CONF}.bench-tuned; "
    if tuned:
        cmd = keep + f"cp -p {AUTO_CONF}.bench-tuned {AUTO_CONF}"
    else:
        cmd = keep + f"grep -E '^(#|({BASE_KEYS}) )' {AUTO_CONF}.bench-tuned > {AUTO_CONF}"
    lab.ssh(
        "bench-tdata",
        f"{cmd} && systemctl restart postgresql@15-main"
        " && runuser -u postgres -- sh -c 'cd /tmp && psql -Atc \"SHOW shared_buffers\"'",
    )
    time.sleep(2)


def redis_benchmark(lab: Lab, host: str, port: int, auth: str) -> dict[str, float]:
    """From the app machine (the app's own path to Redis, allowed by the firewall)."""
    proc = lab.ssh(
        "bench-tedge",
        f"redis-benchmark -h {host} -p {port} {auth} -c 50 -n 100000 -t {REDIS_TESTS} --csv 2>&1"
        "; echo exit=$?",
        check=False,
    )
    log(f"redis-benchmark {host}:{port}: {proc.strip()[-300:]}")
    rows = {}
    for line in proc.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) > 1 and cells[0].isupper():
            rows[cells[0]] = float(cells[1])
    if not rows:
        raise SystemExit(f"redis-benchmark gave no figures: {proc[-500:]}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    d, c = args.duration, args.connections

    with Lab("tuning", MACHINES) as lab:
        lab.playbook("playbooks/site.yml", logname="site")
        lb = f"https://{lab.addresses['bench-tedge']}"
        _status, _headers, body = https_json(
            f"{lb}/api/v1/products",
            {"sku": f"TUNE-{time.time_ns()}", "name": "Bench", "category": "bench", "price": "1"},
            lab.write_headers("bench-tuning"),
        )
        pid = json.loads(body)["id"]
        fresh = FreshReads(lab, "bench-tdata", f"{lb}/api/v1/products/{pid}", pid)
        pg: dict[str, list[dict]] = {"tuned": [], "defaults": []}
        try:
            for rnd in range(args.rounds):
                for mode in ("tuned", "defaults"):
                    pg_mode(lab, mode == "tuned")  # a restart before every case
                    for dur, keep in ((2, False), (d, True)):
                        r = fresh.wrk(dur, c, NO_CACHE)
                        if keep:
                            pg[mode].append(r)
                            log(f"round {rnd + 1} postgres {mode}: {r['rps']:.0f} req/s")
        finally:
            pg_mode(lab, tuned=True)

        addr = lab.addresses["bench-tdata"]
        lab.ssh("bench-tedge", "DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-tools")
        # redis-benchmark's own key names are outside the app user's key prefix: a user of
        # the benchmark's, in memory only (the role's aclfile does not change), as the role's
        # admin login.
        lab.ssh(
            "bench-tdata",
            "REDISCLI_AUTH=$(cat /etc/redis/admin.password) redis-cli"
            " --tls --cacert /etc/redis/tls/ca.crt -p 6380 --user fastapi-ops"
            " ACL SETUSER bench on '>bench-redis-password' '~*' '+@all'",
        )
        # Both servers over TLS (redis_tls), with the role's certificate, checked by the CA
        # the app role installed on the edge: the comparison is of the tuning alone.
        tls = "--tls --cacert /etc/fastapi-ops-app/redis-ca.crt"
        role_redis = redis_benchmark(lab, addr, 6380, f"{tls} --user bench -a bench-redis-password")
        lab.ssh(
            "bench-tdata",
            "systemd-run --unit=bench-redis-defaults -p User=redis -p WorkingDirectory=/tmp"
            f" /usr/bin/redis-server --port 0 --tls-port 6390 --bind {addr} --protected-mode no"
            " --tls-cert-file /etc/redis/tls/server.crt --tls-key-file /etc/redis/tls/server.key"
            " --tls-ca-cert-file /etc/redis/tls/ca.crt --tls-auth-clients no"
            f" && nft insert rule inet fastapi_ops input ip saddr {lab.addresses['bench-tedge']}"
            " tcp dport 6390 accept && sleep 1",
        )
        try:
            default_redis = redis_benchmark(lab, addr, 6390, tls)
        finally:
            lab.ssh("bench-tdata", "systemctl stop bench-redis-defaults", check=False)

    med = {
        m: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
        for m, rs in pg.items()
    }
    print(
        f"PostgreSQL: DB read through the stack (Redis miss), wrk -t2 -c{c} -d{d}s, "
        f"median of {args.rounds} alternating rounds"
    )
    print(
        table(
            ["settings", "req/s", "p50 ms", "p99 ms"],
            [[m, v["rps"], v["p50_ms"], v["p99_ms"]] for m, v in med.items()],
        )
    )
    print(f"tuned/defaults req/s: {ratio(med['tuned']['rps'], med['defaults']['rps']):.2f}")
    print("Redis: redis-benchmark -c 50 -n 100000 from the app machine, requests/s")
    print(
        table(
            ["test", "role", "defaults", "role/defaults"],
            [
                [
                    t,
                    role_redis[t],
                    default_redis.get(t, 0.0),
                    f"{ratio(role_redis[t], default_redis.get(t, 0.0)):.2f}",
                ]
                for t in role_redis
            ],
        )
    )
    benchlib.write_json(
        "tuning",
        {
            "command": "python bench/tuning.py"
            f" --duration {d} --connections {c} --rounds {args.rounds}",
            "postgres": {
                "median": med,
                "runs": pg,
                "tuned_over_defaults": ratio(med["tuned"]["rps"], med["defaults"]["rps"]),
            },
            "redis": {"role": role_redis, "defaults": default_redis},
        },
    )


if __name__ == "__main__":
    main()
