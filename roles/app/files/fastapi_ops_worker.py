"""Gunicorn worker of fastapi_ops.stack: uvicorn-worker's UvicornWorker, with hand-over
and drain, so that stopping a worker never fails a request.

Installed next to the role's gunicorn.conf.py, which sets `worker_class` to
`DrainingUvicornWorker`.

Hand-over. On a reload (SIGHUP) Gunicorn forks the new workers and stops the old ones
at once: for as long as the new ones take to import the app and start, nobody accepts
and requests queue. An old worker told to stop while younger workers of its master are
still starting keeps serving until they are ready (each worker marks itself ready in
`worker_tmp_dir` once its server is up), at most `timeout` seconds.

Drain. When a worker stops (service stop, reload, `max_requests` recycling), Uvicorn
closes every idle keep-alive connection at once. A reverse proxy may be writing the next
request into such a connection at that very moment: the request meets a closed socket,
the proxy logs "Connection reset by peer", answers 502 to a POST and counts a failure
against the member. This worker never closes an idle connection while the peer may use
it:

- a request in progress is answered and its connection closed (`Connection: close`);
- an idle connection is left open: its next response carries `Connection: close`, or the
  peer closes it first after its own idle timeout (Nginx's upstream `keepalive_timeout`,
  which the role keeps below `keepalive`), or Uvicorn's keep-alive timer does;
- the listening sockets are closed first, so new connections go to the other workers
  (or, with systemd socket activation, wait in the backlog for the next master).

The drain is bounded by Gunicorn's `graceful_timeout`. A worker whose master died
(kill -9) drains the same way instead of serving on as an orphan.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

try:  # the protocol Uvicorn's "auto" picks: httptools when installed, else h11
    import httptools  # noqa: F401  # pylint: disable=unused-import
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpProtocol
except ImportError:  # pragma: no cover - depends on the app's dependencies
    from uvicorn.protocols.http.h11_impl import H11Protocol as _HttpProtocol

# Set by the first connection told to shut down; one worker process, one flag.
_draining = False


class DrainingHttpProtocol(_HttpProtocol):  # type: ignore[misc, valid-type]
    def shutdown(self) -> None:
        global _draining
        _draining = True
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return  # idle: see the module docstring
        super().shutdown()  # in progress: Connection: close after this response


def close_when_draining(app: Any) -> Any:
    """ASGI wrapper: once the worker drains, every response closes its connection."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_closing(message: Any) -> None:
            if _draining and message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, send_closing)

    return wrapped


def _start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


class _ReadyMarks:
    """One file per ready worker, holding its start time (a reused pid is not ready)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory or tempfile.gettempdir()

    def _path(self, pid: int) -> str:
        return os.path.join(self.directory, f"fastapi-ops-ready.{pid}")

    def mark(self) -> None:
        with open(self._path(os.getpid()), "w", encoding="ascii") as handle:
            handle.write(str(_start_time(os.getpid())))

    def unmark(self) -> None:
        try:
            os.unlink(self._path(os.getpid()))
        except OSError:
            pass

    def ready(self, pid: int) -> bool:
        try:
            with open(self._path(pid), encoding="ascii") as handle:
                return handle.read() == str(_start_time(pid))
        except OSError:
            return False

    def starting_successors(self) -> list[int]:
        """Workers of this worker's master started after it and not ready yet."""
        me = os.getpid()
        mine = _start_time(me) or 0
        return [
            pid
            for pid in _children(os.getppid())
            if pid != me and (_start_time(pid) or 0) > mine and not self.ready(pid)
        ]


class HandoverServer(Server):
    """Uvicorn's server, marking itself ready and handing over before it stops."""

    def __init__(
        self, *args: Any, marks: _ReadyMarks, handover_limit: float, master: int, **kwargs: Any
    ):
        super().__init__(*args, **kwargs)
        self.marks, self.handover_limit = marks, handover_limit
        self.handover_until: float | None = None
        # The master that forked us, not os.getppid() now: a master killed while this
        # worker was still booting would leave it serving on as an orphan.
        self.master = master

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.marks.mark()

    async def shutdown(self, sockets: Any = None) -> None:
        self.marks.unmark()
        await super().shutdown(sockets=sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if (
            sig == signal.SIGTERM
            and not self.should_exit
            and self.handover_until is None
            and self.marks.starting_successors()
        ):
            # A reload: keep serving until the new workers are up (see on_tick).
            self.handover_until = time.monotonic() + self.handover_limit
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if os.getppid() != self.master:  # the master is gone: nobody would replace us
            self.should_exit = True
        if self.handover_until is not None and not self.should_exit:
            if time.monotonic() >= self.handover_until or not self.marks.starting_successors():
                self.should_exit = True
        return await super().on_tick(counter)


class DrainingUvicornWorker(UvicornWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.http = DrainingHttpProtocol
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = close_when_draining(self.wsgi)

    async def _serve(self) -> None:
        # UvicornWorker._serve with our server.
        self.config.app = self.wsgi
        server = HandoverServer(
            config=self.config,
            marks=_ReadyMarks(self.cfg.worker_tmp_dir),
            handover_limit=float(self.cfg.timeout),
            master=self.ppid,
        )
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
