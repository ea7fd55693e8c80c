"""A small real HTTP receiver on 127.0.0.1 for webhook tests (asyncio streams, HTTP/1.1, one request
per connection). `reply(n, request)` decides the answer to the n-th request (1-based) and may await,
e.g. an asyncio.Event, to hold a response open."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


Handler = Callable[[int, Received], Awaitable[Reply]]


async def _ok(_: int, __: Received) -> Reply:
    return Reply()


class Receiver:
    def __init__(self, reply: Handler = _ok) -> None:
        self.reply = reply
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.arrived = asyncio.Condition()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hook"

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    async def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        async with self.arrived:
            await asyncio.wait_for(self.arrived.wait_for(lambda: len(self.received) >= count), timeout)
        return self.received

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            pairs = (ln.partition(":") for ln in lines[1:] if ln)
            headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Received(method, path, headers, body)
            async with self.arrived:
                self.received.append(request)
                n = len(self.received)
                self.arrived.notify_all()
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                reply = await self.reply(n, request)
            finally:
                self.in_flight -= 1
            extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            writer.write(f"HTTP/1.1 {reply.status} X\r\ncontent-length: {len(reply.body)}\r\n"
                         f"connection: close\r\n{extra}\r\n".encode() + reply.body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
