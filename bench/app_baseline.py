"""Baseline of the reference app: Gunicorn (shipped config) vs a single `uvicorn app.main:app`.

Measures GET /api/v1/products/{id} with wrk, cache hit (CACHE_ENABLED=true) and cache
miss (CACHE_ENABLED=false), against the host's PostgreSQL and Redis on 127.0.0.1.
Creates and drops its own database; kills every process it starts.

Usage: .venv/bin/python bench/app_baseline.py [--duration 10] [--connections 32]
Env:   BENCH_ADMIN_DATABASE_URL (postgresql://postgres:postgres@127.0.0.1:5432/postgres),
       BENCH_REDIS_URL (redis://127.0.0.1:6379/0), WEB_CONCURRENCY (config default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from benchlib import auth_headers, http_ok, stop, wait_for

BIN = Path(sys.executable).parent
ADMIN = os.environ.get(
    "BENCH_ADMIN_DATABASE_URL", "postgresql://postgres:postgres@127.0.0.1:5432/postgres"
)
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def migrated_database(prefix: str) -> Iterator[str]:
    """A fresh database with the app's migrations applied, dropped on exit: its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        db_url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
        subprocess.run(
            [str(BIN / "fastapi-ops-app-migrate")],
            env={**os.environ, "DATABASE_URL": db_url},
            check=True,
            capture_output=True,
        )
        yield db_url
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def local_write_headers(env: dict[str, str], subject: str, ttl: int) -> dict[str, str]:
    """Headers of the writes to an app started here with `env`: a products:write token of
    the app's own command, which reads the same SECRET_KEY and APP_NAME. (The app is not
    imported here: the checkout's app/ folder, on sys.path, shadows the package.)"""
    proc = subprocess.run(
        [
            str(BIN / "fastapi-ops-app-token"),
            f"--subject={subject}",
            "--scope=products:write",
            f"--ttl={ttl}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"fastapi-ops-app-token failed: {proc.stderr.strip()}")
    return auth_headers(proc.stdout.strip())


def wait_live(base: str, proc: subprocess.Popen[bytes]) -> None:
    wait_for(proc, lambda: http_ok(f"{base}/health/live"), "server", timeout=30, every=0.1)


def wrk(url: str, duration: int, connections: int) -> tuple[float, str, str]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{errors.group(1)} non-2xx responses from {url}")
    return rps, p50, p99


def run_case(
    server: str, cache: bool, db_url: str, duration: int, connections: int, workdir: Path
) -> tuple[float, str, str]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "ENVIRONMENT": "production",
        "SECRET_KEY": uuid.uuid4().hex * 2,
        "REDIS_URL": REDIS,
        "CACHE_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "CACHE_ENABLED": str(cache).lower(),
        "LOG_LEVEL": "WARNING",  # access lines at INFO would measure the terminal
        "GUNICORN_BIND": f"127.0.0.1:{port}",
    }
    if server == "gunicorn":
        cmd = [str(BIN / "gunicorn"), "-c", "python:app.gunicorn_conf", "app.main:app"]
    else:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        cmd = [str(BIN / "uvicorn"), "app.main:app", "--port", str(port)]
    proc = subprocess.Popen(
        cmd, env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_live(base, proc)
        request = urllib.request.Request(
            f"{base}/api/v1/products",
            data=b'{"sku":"B-1","name":"bench","category":"bench","price":"1.00"}',
            headers={
                "content-type": "application/json",
                **local_write_headers(env, "bench-app-baseline", ttl=600),
            },
        )
        try:
            with urllib.request.urlopen(request):
                pass
        except urllib.error.HTTPError as exc:  # 409: seeded by an earlier case
            if exc.code != 409:
                raise
        url = f"{base}/api/v1/products/1"
        wrk(url, 2, connections)  # warm-up: pools filled, cache primed
        return wrk(url, duration, connections)
    finally:
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    with migrated_database("bench_app") as db_url:
        rows = []
        with tempfile.TemporaryDirectory() as workdir:
            for server in ("gunicorn", "uvicorn"):
                for cache in (True, False):
                    rps, p50, p99 = run_case(
                        server, cache, db_url, args.duration, args.connections, Path(workdir)
                    )
                    rows.append((server, "hit" if cache else "miss", rps, p50, p99))
        workers = os.environ.get("WEB_CONCURRENCY") or str(len(os.sched_getaffinity(0)))
        print(
            f"GET /api/v1/products/1, wrk -t2 -c{args.connections} -d{args.duration}s, "
            f"gunicorn workers={workers}, uvicorn: 1 process, defaults"
        )
        print(f"{'server':<10}{'cache':<7}{'req/s':>10}{'p50':>10}{'p99':>10}")
        for server, cache_mode, rps, p50, p99 in rows:
            print(f"{server:<10}{cache_mode:<7}{rps:>10.0f}{p50:>10}{p99:>10}")


if __name__ == "__main__":
    main()
