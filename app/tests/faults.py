"""A TCP proxy in front of the host's real PostgreSQL or Redis, with switchable faults.

The app under test talks to the proxy; the test flips its mode:

- ``up``: forward bytes both ways.
- ``down``: stop listening (new connects are refused) and reset every open connection,
  as a stopped or restarted server does.
- ``blackhole``: accept new connects but answer nothing, and stop forwarding on open
  connections (bytes vanish), as an unreachable host or a partition does. Leaving the
  blackhole resets what it held.
- ``reject(sqlstate, message)`` (PostgreSQL only): answer every new connection's startup
  with a FATAL ErrorResponse, as a server that is starting up (57P03) does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

_SSL_REQUEST = 80877103  # PostgreSQL's SSLRequest code; answered "N" (no TLS).


@dataclass(eq=False)
class _Link:
    """One client connection and, once forwarding, its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    frozen: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # Linger 0: close() sends RST, as a dead server's kernel does.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        for task in self.tasks:
            task.cancel()

    def close(self) -> None:
        # A normal end (one side closed): FIN, after what is buffered.
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode = "up"
        self.connects = 0  # client connections accepted, in any mode
        self._reject: tuple[str, str] | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    def url(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    async def start(self) -> FaultProxy:
        await self._listen()
        return self

    async def close(self) -> None:
        await self._stop_listening()
        self._reset_all()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    async def up(self) -> None:
        self._reset_all(frozen_only=True)
        self.mode, self._reject = "up", None
        await self._listen()

    async def down(self) -> None:
        self.mode = "down"
        await self._stop_listening()
        self._reset_all()

    async def blackhole(self) -> None:
        self.mode = "blackhole"
        await self._listen()
        for link in self._links:
            link.frozen = True

    async def reject(self, sqlstate: str, message: str) -> None:
        self._reset_all()
        self.mode, self._reject = "reject", (sqlstate, message)
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            # Same port every time, so the app's URL stays valid across down/up.
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )
            self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _reset_all(self, frozen_only: bool = False) -> None:
        for link in list(self._links):
            if link.frozen or not frozen_only:
                link.reset()
                self._links.discard(link)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connects += 1
        link = _Link(writer, frozen=self.mode == "blackhole")
        self._links.add(link)
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        try:
            if link.frozen:
                await self._swallow(reader)
            elif self._reject is not None:
                await self._answer_startup_with_error(reader, writer, *self._reject)
            else:
                await self._forward(link, reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the link was reset, or the proxy is closing
        finally:
            self._links.discard(link)
            link.close()

    async def _forward(self, link: _Link, reader: asyncio.StreamReader) -> None:
        up_reader, link.upstream = await asyncio.open_connection(*self.target)
        link.tasks = [
            asyncio.create_task(self._pipe(link, reader, link.upstream)),
            asyncio.create_task(self._pipe(link, up_reader, link.client)),
        ]
        await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)

    @staticmethod
    async def _pipe(
        link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                if link.frozen:
                    continue  # blackholed: the bytes vanish
                writer.write(data)
                await writer.drain()

    @staticmethod
    async def _swallow(reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass

    @staticmethod
    async def _answer_startup_with_error(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sqlstate: str, message: str
    ) -> None:
        while True:
            length, code = struct.unpack("!ii", await reader.readexactly(8))
            if code != _SSL_REQUEST:
                break
            writer.write(b"N")
        await reader.readexactly(length - 8)  # the rest of the StartupMessage
        fields = b"".join(
            tag + value.encode() + b"\0"
            for tag, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", sqlstate), (b"M", message))
        )
        body = fields + b"\0"
        writer.write(b"E" + struct.pack("!i", len(body) + 4) + body)
        await writer.drain()
