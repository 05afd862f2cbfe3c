"""The shipped Gunicorn config: env-driven values, and metrics across 2 real workers."""

from __future__ import annotations

import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.auth import WRITE_SCOPE, mint
from app.config import DEFAULT_APP_NAME
from tests.conftest import SECRET, free_port

BIN = Path(sys.executable).parent
ROUTE = 'route="/api/v1/products/{product_id}"'


def _conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> dict[str, object]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_module("app.gunicorn_conf")


def test_config_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("GUNICORN_", "LISTEN_")) or name == "WEB_CONCURRENCY":
            monkeypatch.delenv(name)
    conf = _conf(monkeypatch, tmp_path)
    assert conf["bind"] == ["127.0.0.1:8000"]
    assert conf["worker_class"] == "uvicorn_worker.UvicornWorker"
    assert conf["worker_tmp_dir"] == "/dev/shm"
    assert conf["preload_app"] is False
    assert conf["keepalive"] == 75
    assert conf["workers"] == len(os.sched_getaffinity(0))
    assert conf["control_socket_disable"] is True
    assert callable(conf["child_exit"])


def test_config_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = _conf(
        monkeypatch,
        tmp_path,
        GUNICORN_BIND="unix:/run/app/app.sock, 10.0.0.5:8000",
        WEB_CONCURRENCY="3",
        GUNICORN_TIMEOUT="45",
        GUNICORN_MAX_REQUESTS="500",
        GUNICORN_FORWARDED_ALLOW_IPS="10.0.0.1,10.0.0.2",
    )
    assert conf["bind"] == ["unix:/run/app/app.sock", "10.0.0.5:8000"]
    assert (conf["workers"], conf["timeout"], conf["max_requests"]) == (3, 45, 500)
    assert conf["forwarded_allow_ips"] == "10.0.0.1,10.0.0.2"


def test_fd_bind_dropped_when_systemd_passes_sockets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Gunicorn adopts LISTEN_FDS itself; fd://3 on top makes it adopt fd 3 twice (EBADF).
    env = {"GUNICORN_BIND": "fd://3", "LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())}
    assert _conf(monkeypatch, tmp_path, **env)["bind"] == []
    env["LISTEN_PID"] = "1"  # meant for another process: keep the explicit fd
    assert _conf(monkeypatch, tmp_path, **env)["bind"] == ["fd://3"]


def test_bad_integer_fails_with_the_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="GUNICORN_TIMEOUT"):
        _conf(monkeypatch, tmp_path, GUNICORN_TIMEOUT="soon")


def _env(database_url: str, prefix: str, metrics_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "LISTEN_"))}
    env.update(
        DATABASE_URL=database_url,
        ENVIRONMENT="production",
        SECRET_KEY=SECRET,
        CACHE_PREFIX=prefix,
        WEB_CONCURRENCY="2",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        GUNICORN_MAX_REQUESTS="0",
    )
    env.update(extra)
    return env


def _wait_ready(base: str, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc is None or proc.poll() is None, "gunicorn exited during start-up"
        try:
            if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("gunicorn did not become ready")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def gunicorn(database_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # must be wiped at start
    port = free_port()
    env = _env(
        database_url, f"{redis_prefix}:gunicorn", metrics_dir, GUNICORN_BIND=f"127.0.0.1:{port}"
    )
    proc = subprocess.Popen(
        [BIN / "gunicorn", "-c", "python:app.gunicorn_conf", "app.main:app"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, proc)
        yield base, metrics_dir
    finally:
        _stop(proc)


def _sample(metrics: str, pattern: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if re.match(pattern, line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _spread(base: str, path: str, metrics_dir: Path, files: str, minimum: int) -> int:
    """GET `path` on fresh connections, 8 at a time, until both workers have answered
    (seen by their metric files) and at least `minimum` requests went out; return how
    many. A loaded machine can hand a short run of requests to one worker only."""
    limits = httpx.Limits(max_keepalive_connections=0)
    sent = 0
    with httpx.Client(base_url=base, limits=limits) as http, ThreadPoolExecutor(8) as pool:
        while sent < 2000:
            statuses = list(pool.map(lambda _: http.get(path).status_code, range(40)))
            assert statuses == [200] * len(statuses)
            sent += len(statuses)
            if sent >= minimum and len(list(metrics_dir.glob(files))) >= 2:
                break
    return sent


def test_metrics_count_every_request_across_two_workers(gunicorn, clean_db) -> None:  # type: ignore[no-untyped-def]
    base, metrics_dir = gunicorn
    assert not (metrics_dir / "counter_999999.db").exists()
    token = mint(SECRET, DEFAULT_APP_NAME, "tests", [WRITE_SCOPE], ttl=60)
    pid = httpx.post(
        f"{base}/api/v1/products",
        json={"sku": "G-1", "name": "g", "category": "c", "price": 1},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["id"]
    # One read first fills the cache; the concurrent ones after it are hits.
    assert httpx.get(f"{base}/api/v1/products/{pid}").status_code == 200
    n = 1 + _spread(base, f"/api/v1/products/{pid}", metrics_dir, "counter_*.db", 120)

    pids = {p.name.split("_")[-1] for p in metrics_dir.glob("counter_*.db")}
    assert len(pids) == 2, f"requests did not reach both workers: {pids}"

    metrics = httpx.get(f"{base}/metrics").text
    assert _sample(metrics, rf'http_requests_total\{{method="GET",{ROUTE},status="200"\}}') == n
    assert _sample(metrics, rf'http_request_duration_seconds_count\{{method="GET",{ROUTE}\}}') == n
    # Millisecond buckets exist.
    assert 'le="0.001"' in metrics and 'le="0.005"' in metrics
    hits = _sample(metrics, r'app_cache_hits_total\{cache="product"\}')
    misses = _sample(metrics, r'app_cache_misses_total\{cache="product"\}')
    assert hits + misses == n and 1 <= misses <= 2  # at most one miss per worker
    assert _sample(metrics, r"app_db_pool_size ") == 10  # 2 workers x DB_POOL_SIZE 5
    assert "http_requests_in_flight" in metrics


def test_dead_worker_counts_survive_and_gauges_are_dropped(gunicorn) -> None:  # type: ignore[no-untyped-def]
    base, metrics_dir = gunicorn
    n = _spread(base, "/version", metrics_dir, "gauge_livesum_*.db", 40)
    live = sorted(metrics_dir.glob("gauge_livesum_*.db"))
    assert len(live) == 2
    victim = int(live[0].stem.rsplit("_", 1)[1])
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while live[0].exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not live[0].exists(), "child_exit did not mark the dead worker"
    _wait_ready(base, None)  # the surviving/replacement worker serves
    metrics = httpx.get(f"{base}/metrics").text
    assert (
        _sample(metrics, r'http_requests_total\{method="GET",route="/version",status="200"\}') == n
    )


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="needs systemd")
@pytest.mark.parametrize("bind", ["fd://3", "127.0.0.1:1"])
def test_systemd_socket_activation(database_url, redis_prefix, tmp_path, bind) -> None:  # type: ignore[no-untyped-def]
    """systemd passes the socket as fd 3 (LISTEN_FDS/LISTEN_PID); any bind is ignored."""
    metrics_dir = tmp_path / "metrics"
    port = free_port()
    env = _env(database_url, f"{redis_prefix}:sa", metrics_dir, GUNICORN_BIND=bind)
    names = [
        "DATABASE_URL",
        "ENVIRONMENT",
        "SECRET_KEY",
        "CACHE_PREFIX",
        "WEB_CONCURRENCY",
        "PROMETHEUS_MULTIPROC_DIR",
        "GUNICORN_BIND",
        "PATH",
    ]
    cmd = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}"]
    for name in names:
        cmd += ["-E", name]
    cmd += [str(BIN / "gunicorn"), "-c", "python:app.gunicorn_conf", "app.main:app"]
    metrics_dir.mkdir()
    # cwd elsewhere: gunicorn puts its cwd first on sys.path (see README).
    proc = subprocess.Popen(
        cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # The first connection makes systemd-socket-activate exec gunicorn; refused until
        # systemd-socket-activate listens (slow to start on a busy machine).
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=30)
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert response.status_code == 200
        for _request in range(5):
            assert httpx.get(f"http://127.0.0.1:{port}/version").status_code == 200
    finally:
        _stop(proc)
