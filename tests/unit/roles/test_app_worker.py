"""The app role's Gunicorn worker (roles/app/files/fastapi_ops_worker.py), in a real Gunicorn.

A worker that stops (SIGHUP reload, max_requests recycling, SIGTERM) must answer the
next request of an idle keep-alive connection with `Connection: close` instead of
closing the connection under the client, and must not close idle connections itself.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
WORKER_DIR = REPO / "roles" / "app" / "files"
GUNICORN = Path(sys.executable).parent / "gunicorn"

APP = """
import asyncio, os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":  # an app that takes a while to start, as real ones do
        await receive()
        await asyncio.sleep(float(os.environ.get("START_SECONDS", "0")))
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = str(__import__("os").getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[callable]:
    procs: list[subprocess.Popen] = []

    def start(
        *extra: str, worker: str = "fastapi_ops_worker.DrainingUvicornWorker", start_seconds=0
    ) -> tuple:
        (tmp_path / "tinyapp.py").write_text(APP)
        port = free_port()
        env = dict(
            os.environ, PYTHONPATH=f"{WORKER_DIR}:{tmp_path}", START_SECONDS=str(start_seconds)
        )
        proc = subprocess.Popen(
            [str(GUNICORN), "-k", worker, "-b", f"127.0.0.1:{port}", "--keep-alive", "30",
             "--graceful-timeout", "20", "--worker-tmp-dir", str(tmp_path), *extra,
             "tinyapp:app"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        procs.append(proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    if request(sock)[0] == 200:
                        return proc, port
            except OSError:
                time.sleep(0.1)
        raise AssertionError("gunicorn did not start")

    yield start
    for proc in procs:  # the whole group: workers outlive a killed master for a moment
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def request(sock: socket.socket) -> tuple[int, dict[str, str], str]:
    """One GET on a kept-alive socket; (status, headers, body), or status 0 if the
    connection was closed or reset under us."""
    try:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return 0, {}, ""
            data += chunk
    except OSError:
        return 0, {}, ""
    head, _sep, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers["content-length"]):
        body += sock.recv(4096)
    return int(lines[0].split()[1]), headers, body.decode()


def worker_pids(master: int) -> set[int]:
    # pgrep exits 1 when the master has no children: an empty set, not an error
    out = subprocess.run(
        ["pgrep", "-P", str(master)], capture_output=True, text=True, check=False
    ).stdout
    return {int(pid) for pid in out.split()}


def running(pid: int) -> bool:
    """Alive and not a zombie: whoever adopts an orphan may be slow to reap it."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("stop", ["hup", "term"])
def test_idle_connection_gets_its_next_answer_with_connection_close(gunicorn, stop: str) -> None:
    proc, port = gunicorn("-w", "1")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    status, headers, old_pid = request(sock)
    assert status == 200 and headers.get("connection") != "close"
    proc.send_signal(signal.SIGHUP if stop == "hup" else signal.SIGTERM)
    time.sleep(1.0)  # the old worker is draining now
    assert int(old_pid) in worker_pids(proc.pid), "the worker closed its idle connection and left"
    status, headers, pid = request(sock)
    assert (status, pid) == (200, old_pid), "the request on the idle connection was not answered"
    assert headers.get("connection") == "close"
    assert sock.recv(1) == b"", "the connection stayed open after Connection: close"
    sock.close()


def test_drained_worker_leaves_once_its_connections_are_gone(gunicorn) -> None:
    proc, port = gunicorn("-w", "1")
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    _status, _headers, old_pid = request(sock)
    proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    fresh = socket.create_connection(("127.0.0.1", port), timeout=10)
    status, _headers, new_pid = request(fresh)
    assert status == 200 and new_pid != old_pid, "a new connection reached the draining worker"
    sock.close()  # the client's idle timeout, as Nginx's keepalive_timeout would
    deadline = time.monotonic() + 5
    while int(old_pid) in worker_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert int(old_pid) not in worker_pids(proc.pid)
    fresh.close()


def test_no_request_fails_while_workers_recycle_and_reload(gunicorn) -> None:
    """Clients that never retry, on keep-alive connections, while every worker is
    recycled by max_requests and the master reloads twice: 0 errors."""
    proc, port = gunicorn("-w", "2", "--max-requests", "300", "--max-requests-jitter", "50")
    sent, failed, stop = [0], [0], threading.Event()

    def client() -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        while not stop.is_set():
            status, headers, _pid = request(sock)
            sent[0] += 1
            if status != 200:
                failed[0] += 1
            if status != 200 or headers.get("connection") == "close":
                sock.close()
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.close()

    threads = [threading.Thread(target=client) for _client in range(8)]
    for t in threads:
        t.start()
    for _reload in range(2):
        time.sleep(2)
        proc.send_signal(signal.SIGHUP)
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join()
    print(f"recycle+reload: sent={sent[0]} failed={failed[0]}")
    assert sent[0] > 1000 and failed[0] == 0


def test_reload_hands_over_to_started_workers(gunicorn) -> None:
    """The new workers need 2 s to start: the old ones serve meanwhile, so no request
    waits for them (without the hand-over every request queues for about 2 s)."""
    proc, port = gunicorn("-w", "2", start_seconds=2)
    latencies, stop = [], threading.Event()

    def client() -> None:
        while not stop.is_set():
            started = time.monotonic()
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                status, _headers, _pid = request(sock)
            assert status == 200
            latencies.append(time.monotonic() - started)

    threads = [threading.Thread(target=client) for _client in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    old = worker_pids(proc.pid)
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while worker_pids(proc.pid) & old and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert not worker_pids(proc.pid) & old, "the old workers did not leave"
    print(f"reload with a 2 s start: {len(latencies)} requests, max {max(latencies):.2f} s")
    assert max(latencies) < 1.0


def test_workers_of_a_killed_master_drain_and_leave(gunicorn) -> None:
    proc, port = gunicorn("-w", "2")
    workers = worker_pids(proc.pid)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    assert request(sock)[0] == 200
    proc.kill()  # kill -9 of the master
    proc.wait()
    time.sleep(0.5)  # a worker looks at its parent every tick (0.1 s)
    status, headers, _pid = request(sock)  # the orphan answers, and closes
    assert status == 200 and headers.get("connection") == "close"
    sock.close()
    # Generous: lint and two Molecule lanes share the CPU in CI.
    deadline = time.monotonic() + 20
    alive = workers
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in workers if running(pid)}
        time.sleep(0.1)
    assert not alive, "orphaned workers kept running"


def test_a_worker_still_booting_when_its_master_is_killed_leaves(tmp_path: Path) -> None:
    """The master dies while its worker boots (post_worker_init holds it 2 s): once
    booted, the worker sees it is an orphan and leaves instead of serving on."""
    (tmp_path / "tinyapp.py").write_text(APP)
    (tmp_path / "hold.py").write_text(
        "import time\n\ndef post_worker_init(worker):\n    time.sleep(2)\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{WORKER_DIR}:{tmp_path}")
    proc = subprocess.Popen(
        [str(GUNICORN), "-k", "fastapi_ops_worker.DrainingUvicornWorker",
         "-c", str(tmp_path / "hold.py"), "-b", f"127.0.0.1:{free_port()}", "-w", "1",
         "--worker-tmp-dir", str(tmp_path), "tinyapp:app"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not worker_pids(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = worker_pids(proc.pid)
        assert workers, "gunicorn forked no worker"
        proc.kill()  # during the worker's 2 s in post_worker_init
        proc.wait()
        deadline = time.monotonic() + 20
        while any(running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(running(pid) for pid in workers), "the orphaned worker kept serving"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
