"""Worker memory of the reference app over a long mixed load, `max_requests` recycling off.

Gunicorn with the role's worker class (roles/app/files/fastapi_ops_worker.py), 2 workers,
`--max-requests 0`, against the host's PostgreSQL and Redis on 127.0.0.1:

  gunicorn -k fastapi_ops_worker.DrainingUvicornWorker -w 2 --max-requests 0 app.main:app

wrk (loopback only, bounded by --minutes) drives a mixed load; per 100 requests of a wrk
thread, interleaved: 40 cache hits (GET /api/v1/products/1), 20 cache misses (GET of a
seeded product not read in the last CACHE_TTL_PRODUCT seconds), 5 list pages 2..1000
(misses), 5 list page 1 (a hit until the next create), 5 creates (POST, unique sku, with
a products:write token),
15 unknown products (404 after a DB read), 5 unknown paths (404, no route), 5
GET /health/ready; and every 1000th request is GET /metrics.

Every --interval seconds it samples the RSS of the master and of each worker (and PSS,
USS = private pages, from /proc/PID/smaps_rollup), and the requests each worker has
served, read from the app's Prometheus multiprocess files (http_requests_total of that
worker's pid), so sampling sends no request. The table shows the samples; the growth is
a least-squares fit of memory against requests served, after a warm-up (the first
--warmup fraction of the run is excluded), per 100 000 requests.

Creates and drops its own database, uses its own Redis key prefix (deleted at the end),
kills every process it starts.

Usage: .venv/bin/python bench/app_memory.py [--minutes 10] [--requests N] [--interval 5]
                                            [--connections 16] [--threads 2] [--warmup 0.1]
       --requests N stops the load after N requests served (--minutes still bounds it).
Env:   BENCH_ADMIN_DATABASE_URL (postgresql://postgres:postgres@127.0.0.1:5432/postgres),
       BENCH_REDIS_URL (redis://127.0.0.1:6379/0).
Figures: bench/out/app_memory.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import redis
from app_baseline import ADMIN, REDIS, free_port, local_write_headers, migrated_database
from benchlib import http_ok, log, stop, table, wait_for, write_json
from prometheus_client.mmap_dict import MmapedDict

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORKER_MODULE_DIR = REPO / "roles" / "app" / "files"
WORKERS = 2
SEEDED = 50_000
# Item reads walk SEEDED ids; with this TTL (the app's default is 300 s) an id is read
# again only after its entry expired, so those reads stay misses at any plausible rate.
PRODUCT_TTL = 60
METRICS_EVERY = 1000
MIB = 1024 * 1024
TABLE_ROWS = 21

LUA = r"""
-- Mixed load of bench/app_memory.py. Args: TAG FIRST_ID LAST_ID THREADS METRICS_EVERY;
-- the creates' Authorization header in BENCH_AUTHORIZATION (kept out of the command line).
local MIX = {
  {"hit", 40}, {"item", 20}, {"page", 5}, {"list", 5}, {"create", 5},
  {"missing", 15}, {"unmatched", 5}, {"ready", 5},
}
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
function init(args)
  tag = args[1]
  first = tonumber(args[2])
  last = tonumber(args[3])
  nthreads = tonumber(args[4])
  metrics_every = tonumber(args[5])
  kinds = {}
  counts = {}
  for _, entry in ipairs(MIX) do
    counts[entry[1]] = 0
    for _ = 1, entry[2] do kinds[#kinds + 1] = entry[1] end
  end
  math.randomseed(1000 + tid)
  for i = #kinds, 2, -1 do
    local j = math.random(i)
    kinds[i], kinds[j] = kinds[j], kinds[i]
  end
  n = 0
  write_headers = {
    ["Content-Type"] = "application/json", ["Authorization"] = os.getenv("BENCH_AUTHORIZATION"),
  }
end
function request()
  n = n + 1
  if n % metrics_every == 0 then
    return wrk.format("GET", "/metrics")
  end
  local kind = kinds[(n % #kinds) + 1]
  local k = counts[kind] * nthreads + tid
  counts[kind] = counts[kind] + 1
  if kind == "hit" then
    return wrk.format("GET", "/api/v1/products/" .. first)
  elseif kind == "item" then
    return wrk.format("GET", "/api/v1/products/" .. (first + 1 + k % (last - first)))
  elseif kind == "page" then
    return wrk.format("GET", "/api/v1/products?page=" .. (2 + k % 999))
  elseif kind == "list" then
    return wrk.format("GET", "/api/v1/products")
  elseif kind == "create" then
    local body = string.format(
      '{"sku":"mem-%s-%d","name":"memory bench","category":"bench","price":"1.00"}', tag, k)
    return wrk.format("POST", "/api/v1/products", write_headers, body)
  elseif kind == "missing" then
    return wrk.format("GET", "/api/v1/products/" .. (1000000000000 + k))
  elseif kind == "unmatched" then
    return wrk.format("GET", "/no/such/path/" .. k)
  end
  return wrk.format("GET", "/health/ready")
end
"""


async def seed(db_url: str, count: int) -> tuple[int, int]:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute(
            "INSERT INTO products (sku, name, category, price, stock) "
            "SELECT 'seed-' || g, 'seeded product ' || g, 'cat-' || (g % 10), 1.00, g % 100 "
            "FROM generate_series(1, $1::int) AS g",
            count,
        )
        await conn.execute("ANALYZE products")
        row = await conn.fetchrow("SELECT min(id), max(id) FROM products")
        return int(row[0]), int(row[1])
    finally:
        await conn.close()


async def db_connections(name: str) -> int:
    conn = await asyncpg.connect(ADMIN)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name)
        )
    finally:
        await conn.close()


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return sorted(int(p) for p in text.split())
    except OSError:
        pass
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def memory(pid: int) -> dict[str, float] | None:
    """MiB: rss, anon (RssAnon), hwm (peak RSS); pss and uss when smaps_rollup exists;
    fds: open file descriptors (sockets included)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kib: dict[str, int] = {}
    for line in status.splitlines():
        key, _sep, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "VmHWM"):
            kib[key] = int(rest.split()[0])
    out = {
        "rss": kib.get("VmRSS", 0) / 1024,
        "anon": kib.get("RssAnon", 0) / 1024,
        "hwm": kib.get("VmHWM", 0) / 1024,
    }
    try:
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        pass
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return out
    fields = dict(re.findall(r"^(\w+):\s+(\d+) kB", rollup, re.M))
    out["pss"] = int(fields.get("Pss", 0)) / 1024
    out["uss"] = (int(fields.get("Private_Clean", 0)) + int(fields.get("Private_Dirty", 0))) / 1024
    return out


def metric_values(metrics_dir: Path, pid: int) -> list[tuple[str, dict[str, str], float]]:
    """(sample name, labels, value) of a worker's counters, read from its mmap file."""
    path = metrics_dir / f"counter_{pid}.db"
    if not path.exists():
        return []
    values = []
    for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
        _metric, name, labels, _help = json.loads(key)
        values.append((name, labels, value))
    return values


def served(metrics_dir: Path, pid: int) -> int:
    values = metric_values(metrics_dir, pid)
    return int(sum(v for name, _labels, v in values if name == "http_requests_total"))


def series_count(metrics_dir: Path) -> int:
    """Distinct (sample, labels) keys over every worker's files: label cardinality."""
    keys = set()
    for path in metrics_dir.glob("*.db"):
        for key, _value, _ts, _pos in MmapedDict.read_all_values_from_file(str(path)):
            keys.add(key)
    return len(keys)


def wait_live(base: str, proc: subprocess.Popen[bytes]) -> list[int]:
    """Waits until every worker is up; returns the worker pids."""

    def ready() -> bool:
        return http_ok(f"{base}/health/ready", timeout=2) and len(children(proc.pid)) == WORKERS

    wait_for(proc, ready, "gunicorn with all its workers", timeout=60, every=0.2)
    time.sleep(2)  # the other worker's lifespan (pools) may still be starting
    return children(proc.pid)


def kill_leftovers(pids: set[int]) -> None:
    """Workers of ours that outlived their master (only pids this run saw)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def delete_prefix(prefix: str) -> int:
    client = redis.Redis.from_url(REDIS)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.delete(*batch)
                batch = []
        if batch:
            deleted += client.delete(*batch)
        return deleted
    finally:
        client.close()


def redis_memory() -> float:
    client = redis.Redis.from_url(REDIS)
    try:
        return float(client.info("memory")["used_memory"]) / MIB
    finally:
        client.close()


def parse_wrk(out: str) -> dict[str, Any]:
    def find(pattern: str) -> str | None:
        match = re.search(pattern, out, re.M)
        return match.group(1) if match else None

    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(find(r"(\d+) requests in") or 0),
        "rps": float(find(r"Requests/sec:\s+([\d.]+)") or 0),
        "p50": find(r"^\s+50%\s+(\S+)"),
        "p99": find(r"^\s+99%\s+(\S+)"),
        "non_2xx_3xx": int(find(r"Non-2xx or 3xx responses: (\d+)") or 0),
        "socket_errors": dict(
            zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True)
        )
        if sock
        else {},
    }


def fit(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs."""
    if len(xs) < 3:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


def growth(
    points: list[tuple[float, int, dict[str, float]]], warm_t: float, half_t: float
) -> dict[str, Any]:
    """points: (t, requests, memory) of one process; growth after t >= warm_t, and the
    slope over the second half of the run alone (t >= half_t): a process still warming up
    flattens there, a leak does not."""
    window = [p for p in points if p[0] >= warm_t]
    if len(window) < 3:
        return {"samples": len(window)}
    xs = [float(p[1]) for p in window]
    half = [p for p in window if p[0] >= half_t]
    first, last = window[0], window[-1]
    result: dict[str, Any] = {
        "samples": len(window),
        "t_from": round(first[0], 1),
        "t_to": round(last[0], 1),
        "requests": last[1] - first[1],
    }
    for field in ("rss", "uss", "pss", "anon"):
        if field not in first[2]:
            continue
        ys = [p[2][field] for p in window]
        slope = fit(xs, ys)
        half_slope = fit([float(p[1]) for p in half], [p[2][field] for p in half])
        result[field] = {
            "from_mib": round(first[2][field], 2),
            "to_mib": round(last[2][field], 2),
            "delta_mib": round(last[2][field] - first[2][field], 2),
            "max_mib": round(max(ys), 2),
            "per_100k_mib": None if slope is None else round(slope * 100_000, 3),
            "second_half_per_100k_mib": None
            if half_slope is None
            else round(half_slope * 100_000, 3),
        }
    if "fds" in first[2]:
        result["fds"] = [int(first[2]["fds"]), int(last[2]["fds"])]
    return result


def server_env(db_url: str, prefix: str, metrics_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GUNICORN_CMD_ARGS", "WEB_CONCURRENCY")}
    env.update(
        {
            "PYTHONPATH": str(WORKER_MODULE_DIR),
            "DATABASE_URL": db_url,
            "REDIS_URL": REDIS,
            "SECRET_KEY": uuid.uuid4().hex * 2,
            "ENVIRONMENT": "production",
            "CACHE_PREFIX": prefix,
            "CACHE_TTL_PRODUCT": str(PRODUCT_TTL),
            "LOG_LEVEL": "WARNING",  # access lines at INFO would measure logging
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
    )
    return env


def start_gunicorn(
    env: dict[str, str], port: int, workdir: Path, logfile: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        str(BIN / "gunicorn"),
        "-k",
        "fastapi_ops_worker.DrainingUvicornWorker",
        "-w",
        str(WORKERS),
        "--max-requests",
        "0",
        "-b",
        f"127.0.0.1:{port}",
        # Gunicorn >= 25 opens a control socket in $HOME by default; keep it in ours.
        "--control-socket",
        str(workdir / "gunicorn.ctl"),
        "app.main:app",
    ]
    with open(logfile, "wb") as fh:
        return subprocess.Popen(cmd, env=env, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT)


def run(args: argparse.Namespace, db_url: str, workdir: Path) -> dict[str, Any]:
    db_name = db_url.rsplit("/", 1)[1]
    first_id, last_id = asyncio.run(seed(db_url, SEEDED))
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    script = workdir / "mixed.lua"
    script.write_text(LUA)
    logfile = workdir / "gunicorn.log"
    port = free_port()
    prefix = f"bench-mem-{uuid.uuid4().hex[:8]}"
    tag = uuid.uuid4().hex[:8]
    base = f"http://127.0.0.1:{port}"
    seen: set[int] = set()
    samples: list[dict[str, Any]] = []
    duration = round(args.minutes * 60)

    env = server_env(db_url, prefix, metrics_dir)
    # Valid for the whole run: --minutes bounds it, an hour more for start and samples.
    write = local_write_headers(env, "bench-app-memory", ttl=duration + 3600)
    server = start_gunicorn(env, port, workdir, logfile)
    load: subprocess.Popen[str] | None = None
    try:
        workers = wait_live(base, server)
        seen.update(workers)
        log(f"gunicorn {server.pid}, workers {workers}, {SEEDED} products seeded")

        def sample(t: float) -> dict[str, Any]:
            pids = children(server.pid)
            seen.update(pids)
            procs = {}
            for pid in pids:
                mem = memory(pid)
                if mem is not None:
                    procs[str(pid)] = {**mem, "requests": served(metrics_dir, pid)}
            master = memory(server.pid) or {}
            return {
                "t": round(t, 1),
                # Every worker of the run: a replaced worker's counter file stays.
                "requests": sum(served(metrics_dir, pid) for pid in seen),
                "workers": procs,
                "master": master,
                "series": series_count(metrics_dir),
                "db_connections": asyncio.run(db_connections(db_name)),
                "redis_mib": round(redis_memory(), 2),
            }

        samples.append(sample(0.0))
        cmd = [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            f"{base}/",
            "--",
            tag,
            str(first_id),
            str(last_id),
            str(args.threads),
            str(METRICS_EVERY),
        ]
        t0 = time.monotonic()
        load = subprocess.Popen(
            cmd,
            env={**os.environ, "BENCH_AUTHORIZATION": write["Authorization"]},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        next_sample = args.interval
        next_log = 60.0
        stopped_at_count = False
        while load.poll() is None:
            now = time.monotonic() - t0
            if now > duration + 60:
                raise SystemExit("wrk did not stop on time")
            if now < next_sample:
                time.sleep(min(0.2, next_sample - now))
                continue
            next_sample += args.interval
            row = sample(now)
            samples.append(row)
            if server.poll() is not None:
                raise SystemExit(f"gunicorn exited during the run (see {logfile})")
            if now >= next_log:
                next_log += 60
                rss = " ".join(f"{w['rss']:.1f}" for w in row["workers"].values())
                log(f"{now:6.0f}s {row['requests']:>9} requests, worker RSS MiB {rss}")
            if args.requests and row["requests"] >= args.requests and not stopped_at_count:
                stopped_at_count = True
                load.send_signal(signal.SIGINT)  # wrk prints its summary and exits
        out, err = load.communicate()
        if load.returncode != 0:
            raise SystemExit(f"wrk failed ({load.returncode}): {err.strip()[-500:]}")
        elapsed = time.monotonic() - t0
        time.sleep(1)  # the last responses' counters
        samples.append(sample(elapsed))
        status: dict[str, int] = {}
        cache: dict[str, int] = {}
        for pid in sorted(seen):
            for name, labels, value in metric_values(metrics_dir, pid):
                if name == "http_requests_total":
                    key = f"{labels['method']} {labels['route']} {labels['status']}"
                    status[key] = status.get(key, 0) + int(value)
                elif name in ("app_cache_hits_total", "app_cache_misses_total"):
                    key = f"{labels['cache']} {name.split('_')[2]}"
                    cache[key] = cache.get(key, 0) + int(value)
        restarts = sorted(seen - set(workers))
        return {
            "samples": samples,
            "wrk": parse_wrk(out),
            "wrk_command": cmd,
            "elapsed_s": round(elapsed, 1),
            "responses": dict(sorted(status.items())),
            "cache": dict(sorted(cache.items())),
            "worker_pids": workers,
            "new_worker_pids": restarts,
            "master_pid": server.pid,
            "seeded": [first_id, last_id],
            "log_lines": sum(1 for _line in open(logfile, "rb")),
            "log_tail": logfile.read_text(errors="replace").splitlines()[-10:],
            # The master's lines about its workers: boots, timeouts, kills.
            "gunicorn_events": [
                line
                for line in logfile.read_text(errors="replace").splitlines()
                if re.search(r"Booting worker|WORKER TIMEOUT|was sent|\[(CRITICAL|ERROR)\]", line)
            ][:50],
        }
    finally:
        if load is not None:
            stop(load, 10, signal.SIGINT)
        stop(server, 40)
        kill_leftovers(seen)
        log(f"redis: deleted {delete_prefix(prefix)} keys of {prefix}")


def report(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    samples = result["samples"]
    end_t = samples[-1]["t"]
    warm_t = end_t * args.warmup
    pids = [str(p) for p in result["worker_pids"]] + [str(p) for p in result["new_worker_pids"]]
    names = {pid: f"w{i + 1}" for i, pid in enumerate(pids)}

    headers = ["time", "requests"]
    for pid in pids:
        headers += [f"{names[pid]} RSS", f"{names[pid]} USS", f"{names[pid]} fds"]
    headers += ["master RSS", "series", "db conns", "redis"]
    step = max(1, round((len(samples) - 1) / (TABLE_ROWS - 1)))
    shown = samples[::step]
    if shown[-1] is not samples[-1]:
        shown.append(samples[-1])
    rows = []
    for s in shown:
        t = int(s["t"])
        when = "end" if s is samples[-1] else f"{t // 60}:{t % 60:02d}"
        row: list[object] = [when, s["requests"]]
        for pid in pids:
            w = s["workers"].get(pid)
            cells = [f"{w['rss']:.1f}", f"{w.get('uss', 0):.1f}", w.get("fds", "-")] if w else []
            row += cells or ["-", "-", "-"]
        row += [
            f"{s['master'].get('rss', 0):.1f}",
            s["series"],
            s["db_connections"],
            f"{s['redis_mib']:.1f}",
        ]
        rows.append(row)

    growths: dict[str, Any] = {}
    for pid in pids:
        points = [
            (s["t"], int(s["workers"][pid]["requests"]), s["workers"][pid])
            for s in samples
            if pid in s["workers"]
        ]
        whole = pid in samples[0]["workers"] and pid in samples[-1]["workers"]
        growths[names[pid]] = {
            "pid": int(pid),
            "whole_run": whole,  # False: replaced, or a replacement; its figures are partial
            **growth(points, warm_t, end_t / 2),
        }
    master = [(s["t"], int(s["requests"]), s["master"]) for s in samples if s["master"]]
    growths["master"] = {"pid": result["master_pid"], **growth(master, warm_t, end_t / 2)}

    wrk_out = result["wrk"]
    print(
        f"Gunicorn -k fastapi_ops_worker.DrainingUvicornWorker -w {WORKERS} --max-requests 0, "
        f"wrk -t{args.threads} -c{args.connections}, mixed load, {result['elapsed_s']:.0f} s, "
        f"{wrk_out['requests']} requests ({wrk_out['rps']:.0f} req/s, p50 {wrk_out['p50']}, "
        f"p99 {wrk_out['p99']}), sampled every {args.interval} s"
    )
    print("MB = MiB; USS = private pages (smaps_rollup); fds = open descriptors; series =")
    print("metric series in the multiprocess files; db conns = sessions on the bench database")
    print("(both workers); redis = Redis used_memory (the whole server)\n")
    print(table(headers, rows))
    print(
        f"\nGrowth after the warm-up (t >= {warm_t:.0f} s), least-squares fit of memory "
        f"against requests served (workers: their own; master: all); 2nd half: the same "
        f"fit from t >= {end_t / 2:.0f} s only"
    )
    g_headers = [
        "process",
        "requests",
        "RSS from",
        "RSS to",
        "dRSS",
        "RSS/100k",
        "USS/100k",
        "anon/100k",
        "2nd half RSS/100k",
        "peak RSS",
        "fds",
    ]
    g_rows = []
    for name, g in growths.items():
        if "rss" not in g:
            g_rows.append([name, g.get("requests", "-"), *["-"] * 9])
            continue

        def per(field: str, key: str = "per_100k_mib", g: dict[str, Any] = g) -> str:
            value = g.get(field, {}).get(key)
            return "-" if value is None else f"{value:+.3f}"

        g_rows.append(
            [
                name,
                g["requests"],
                f"{g['rss']['from_mib']:.1f}",
                f"{g['rss']['to_mib']:.1f}",
                f"{g['rss']['delta_mib']:+.1f}",
                per("rss"),
                per("uss"),
                per("anon"),
                per("rss", "second_half_per_100k_mib"),
                f"{g['rss']['max_mib']:.1f}",
                "{}->{}".format(*g["fds"]) if "fds" in g else "-",
            ]
        )
    print(table(g_headers, g_rows))
    print("\nResponses (method route status: count, from the app's counters):")
    for key, count in result["responses"].items():
        print(f"  {key}: {count}")
    print("Cache: " + ", ".join(f"{k} {v}" for k, v in result["cache"].items()))
    errors = wrk_out["socket_errors"]
    if result["new_worker_pids"]:
        print(
            f"WARNING: workers replaced during the run (see the Gunicorn log lines in the "
            f"JSON): {result['new_worker_pids']}; their growth figures are not comparable"
        )
    if any(errors.values()):
        print(f"wrk socket errors: {errors}")
    return growths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=0, help="stop after N (0: no limit)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=0.1, help="fraction of the run excluded")
    args = parser.parse_args()

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    with migrated_database("bench_mem") as db_url:
        with tempfile.TemporaryDirectory(prefix="app-memory-") as workdir:
            result = run(args, db_url, Path(workdir))
        growths = report(result, args)
        write_json(
            "app_memory",
            {
                "args": vars(args),
                "workers": WORKERS,
                "seeded_products": SEEDED,
                "cache_ttl_product": PRODUCT_TTL,
                "metrics_every": METRICS_EVERY,
                "growth": growths,
                **result,
            },
        )


if __name__ == "__main__":
    main()
