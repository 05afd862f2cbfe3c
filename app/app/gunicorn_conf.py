"""Gunicorn settings, every value from the environment.

Use: gunicorn -c python:app.gunicorn_conf app.main:app
(or `-c /path/to/app/gunicorn.conf.py` from a source checkout).

This module runs in the master before any worker is forked, so it must stay cheap and
must not import prometheus_client before PROMETHEUS_MULTIPROC_DIR is decided.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not an integer") from None


def _systemd_fds() -> int:
    """Sockets systemd handed to this process (socket activation), 0 if none."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return 0
    return _int("LISTEN_FDS", 0)


def _binds() -> list[str]:
    binds = _env("GUNICORN_BIND", "127.0.0.1:8000").replace(",", " ").split()
    if _systemd_fds():
        # Gunicorn adopts every LISTEN_FDS socket itself and then ignores TCP/unix
        # binds; an explicit fd:// entry would be adopted a second time.
        binds = [b for b in binds if not b.startswith("fd://")]
    return binds


def _default_workers() -> int:
    # Async workers: one per core is the rule (2×cores+1 is for sync workers).
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


bind = _binds()
workers = _int("WEB_CONCURRENCY", _default_workers())
worker_class = _env("GUNICORN_WORKER_CLASS", "uvicorn_worker.UvicornWorker")
# Heartbeat files on tmpfs: a slow disk would get healthy workers killed.
worker_tmp_dir = _env("GUNICORN_WORKER_TMP_DIR", "/dev/shm")
timeout = _int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Must exceed the reverse proxy's upstream keepalive_timeout (Nginx: 60 s), else 502s.
keepalive = _int("GUNICORN_KEEPALIVE", 75)
max_requests = _int("GUNICORN_MAX_REQUESTS", 10000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 1000)
backlog = _int("GUNICORN_BACKLOG", 2048)
forwarded_allow_ips = _env("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")
loglevel = _env("GUNICORN_LOG_LEVEL", _env("LOG_LEVEL", "info")).lower()
proc_name = _env("GUNICORN_PROC_NAME", "fastapi-ops-app")
# gunicornc control socket: off unless a path is given (the default lives in $HOME,
# which a hardened unit may not have, and two instances would share it).
control_socket = _env("GUNICORN_CONTROL_SOCKET", "/dev/null")
control_socket_disable = "GUNICORN_CONTROL_SOCKET" not in os.environ
# The app logs one JSON access line per request itself.
accesslog = None
errorlog = "-"
# Never: the app must open its DB/Redis pools in each worker, after the fork.
preload_app = False
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "app.log.JsonFormatter"}},
    "handlers": {
        "error_console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        },
    },
    # Gunicorn shallow-merges this over its defaults: root must be restated.
    "root": {"level": loglevel.upper(), "handlers": ["error_console"]},
    "loggers": {
        "gunicorn.error": {
            "level": loglevel.upper(),
            "handlers": ["error_console"],
            "propagate": False,
        },
    },
}

# Multiprocess metrics: every worker writes here, /metrics merges the files.
_own_metrics_dir = False
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
        prefix="fastapi-ops-app-metrics-", dir=worker_tmp_dir
    )
    _own_metrics_dir = True
metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server: Any) -> None:
    # Files of a previous run would add its counters to ours.
    os.makedirs(metrics_dir, exist_ok=True)
    for name in os.listdir(metrics_dir):
        if name.endswith(".db"):
            os.unlink(os.path.join(metrics_dir, name))


def child_exit(server: Any, worker: Any) -> None:
    # Runs in the master: drop the dead worker's live gauges (in-flight, pool).
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, metrics_dir)


def on_exit(server: Any) -> None:
    if _own_metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
