"""A small pooled HTTP/1.1 client on `asyncio.Protocol` + `httptools` (llhttp), for the adapter's
calls to model backends and its finish reports to the sidecar.

Why not httpx or aiohttp: per backend call httpx cost 0.5-0.85 ms of CPU (client layers, httpcore,
anyio), aiohttp 0.08-0.12 ms, this 0.03-0.06 ms (`python -m bench.backend_client`; in the adapter
process the switch from httpx saved about 1.5 ms per request: docs/benchmarks.md "Backend client").
It does only what the adapter needs: one origin per `Pool`, one request at a time per connection
(no pipelining), keep-alive reuse, request bodies given whole, responses read whole (`read`) or
chunk by chunk as they arrive (`chunks`), http and https (the `ssl` module).

Timeouts: `connect_timeout` bounds the TCP (and TLS) connect and the wait for a free connection
when `max_connections` are busy; `read_timeout` bounds the wait for the first byte and every gap
between bytes. A total deadline is the caller's (`asyncio.timeout`).

Reuse: a connection goes back to the pool only when its response was read to the end and both sides
keep it alive; anything else (`close()` before the end, an error, a cancellation) aborts the socket at
once. An idle connection the server closed is seen by the event loop (EOF) and skipped when taking
one. A request is never retried once written: these are POSTs a backend may bill for.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
import zlib
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

__all__ = ["ConnectError", "HttpError", "Pool", "PoolTimeout", "ReadTimeout", "RemoteProtocolError",
           "Response"]

_HIGH_WATER = 256 * 1024  # buffered body bytes at which the socket stops being read (back pressure)


class HttpError(Exception):
    """Base of this module's errors; messages never carry request headers (credentials)."""


class ConnectError(HttpError):
    """The backend could not be reached: refused, unresolvable, TLS failure or connect timeout."""


class PoolTimeout(ConnectError):
    """Every allowed connection stayed busy for `connect_timeout`."""


class ReadTimeout(HttpError):
    """No byte arrived for `read_timeout`."""


class RemoteProtocolError(HttpError):
    """The connection was closed or reset mid-response, or the response was malformed."""


@functools.cache  # built once: loading the CA store costs milliseconds
def _default_ssl() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Conn(asyncio.Protocol):
    """One connection and the parser state of the response in flight on it."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.counted = True  # holds one of the pool's `max_connections` slots until closed
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.in_use = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.interim = False  # a 1xx response, skipped
        self.complete = False
        self.keep_alive = False
        self.error: HttpError | None = None
        self.body: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.decoder: zlib._Decompress | None = None
        self.waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass

    def data_received(self, data: bytes) -> None:
        if not self.in_use or self.complete:  # bytes nobody asked for: the connection is unusable
            self.keep_alive = False
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(RemoteProtocolError("the backend switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(RemoteProtocolError(f"malformed response from the backend: {exc}"))
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._drop(self)
        if self.in_use and not self.complete and self.error is None:
            if exc is None and self.headers_done and self._until_eof():
                self.complete = True  # a body delimited by the connection's end (no length, not chunked)
            else:
                self.error = RemoteProtocolError("the backend closed the connection mid-response")
        self._wake()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 200:  # 100 Continue, 103 Early Hints: the real response follows
            self.interim, self.headers = True, {}
            return
        self.headers_done = True
        coding = self.headers.get("content-encoding", "").strip().lower()
        if coding in ("gzip", "x-gzip", "deflate"):  # not asked for (identity is), but decoded if sent
            self.decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected

    def on_body(self, body: bytes) -> None:
        if self.decoder is not None:
            body = self.decoder.decompress(body)
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.interim:  # the 1xx ended; the parser goes on to the real response
            self.interim = False
            return
        if self.decoder is not None:
            self.body.append(self.decoder.flush())
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()

    # used by Pool and Response
    def _until_eof(self) -> bool:
        return "content-length" not in self.headers and "chunked" not in \
            self.headers.get("transfer-encoding", "").lower() and self.status not in (204, 304)

    def _fail(self, error: HttpError) -> None:
        self.error = self.error or error
        self.abort()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _timed_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(ReadTimeout("the backend sent nothing within the read timeout"))

    async def wait(self) -> None:
        """Until bytes arrive, the response ends or fails; `ReadTimeout` after `read_timeout`.
        A timer handle instead of `asyncio.timeout` (cheaper; this runs once per chunk)."""
        loop = self.pool.loop
        waiter = self.waiter = loop.create_future()
        timer = loop.call_later(self.pool.read_timeout, self._timed_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self.waiter = None

    def take_body(self) -> bytes:
        data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data

    def abort(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()  # connection_lost follows from the event loop


class Response:
    """A response whose head has arrived; its body is read with `read()` or `chunks()`. `close()`
    (always, e.g. in `finally`) returns the connection to the pool only if the body was read to the end."""

    def __init__(self, conn: _Conn) -> None:
        self._conn: _Conn | None = conn
        self.status = conn.status
        self.headers = conn.headers

    async def read(self) -> bytes:
        conn = self._live()
        parts: list[bytes] = []
        while True:
            if conn.body:  # taken as it comes, so that back pressure never stalls a whole read
                parts.append(conn.take_body())
            if conn.complete:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            if conn.error is not None:
                raise conn.error
            await conn.wait()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive, whatever has accumulated since the last step in one piece."""
        conn = self._live()
        while True:
            if conn.body:
                data = conn.take_body()
                if data:
                    yield data
            elif conn.complete:
                return
            elif conn.error is not None:
                raise conn.error
            else:
                await conn.wait()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.pool._release(conn)

    def _live(self) -> _Conn:
        if self._conn is None:
            raise RuntimeError("the response is closed")
        return self._conn


class Pool:
    """Keep-alive connections to one origin (`scheme://host:port`); `base_url`'s path prefixes every
    request's path. Use from one event loop."""

    def __init__(self, base_url: str, *, connect_timeout: float, read_timeout: float,
                 max_connections: int = 1000, max_idle: int = 200, keepalive_expiry: float = 30.0,
                 headers: dict[str, str] | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("the base URL must be http:// or https:// with a host")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.ssl = (ssl_context or _default_ssl()) if url.scheme == "https" else None
        self.prefix = url.path.rstrip("/") + "/"
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = self.port == (443 if self.ssl else 80)
        fixed = {"host": host if default else f"{host}:{self.port}", "accept-encoding": "identity",
                 "user-agent": "nx-adapter", **(headers or {})}
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self.max_connections, self.max_idle, self.keepalive_expiry = max_connections, max_idle, keepalive_expiry
        self.loop = asyncio.get_running_loop()
        self._idle: collections.deque[_Conn] = collections.deque()
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> Response:
        """Send the request and wait for the response's head (1xx skipped). The caller must
        `close()` the response."""
        conn = await self._acquire()
        try:
            extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items()) if headers else ""
            head = (f"{method} {self.prefix}{path.lstrip('/')} HTTP/1.1\r\n{self._fixed}{extra}"
                    f"content-length: {len(body)}\r\n\r\n").encode("latin-1")
            assert conn.transport is not None
            if len(body) <= 65536:
                conn.transport.write(head + body)  # one send for the usual small JSON body
            else:
                conn.transport.write(head)
                conn.transport.write(body)
            while not conn.headers_done:
                if conn.error is not None:
                    raise conn.error
                if conn.closed:  # closed before any response (the error is set by connection_lost)
                    raise RemoteProtocolError("the backend closed the connection")
                await conn.wait()
        except BaseException:  # a timeout, a cancellation, a cut: never reuse a half-used connection
            self._release(conn)
            raise
        return Response(conn)

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop().abort()

    async def _acquire(self) -> _Conn:
        deadline = self.loop.time() + self.connect_timeout
        while True:
            now = self.loop.time()
            while self._idle:  # most recently used first: the likeliest to be still open
                conn = self._idle.pop()
                if conn.closed or conn.transport is None or conn.transport.is_closing() \
                        or now - conn.idle_since > self.keepalive_expiry:
                    conn.abort()
                    continue
                conn.in_use = True
                return conn
            if self._open < self.max_connections:
                return await self._connect()
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            remaining = deadline - self.loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(waiter, remaining)
            except BaseException as exc:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken as we gave up: pass the free connection on
                if isinstance(exc, TimeoutError):
                    raise PoolTimeout("no free connection to the backend within the connect timeout") from None
                raise

    async def _connect(self) -> _Conn:
        conn = _Conn(self)
        self._open += 1
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self.loop.create_connection(lambda: conn, self.host, self.port, ssl=self.ssl,
                                                  server_hostname=self.host if self.ssl else None)
        except BaseException as exc:
            self._drop(conn)
            conn.abort()
            if isinstance(exc, OSError | TimeoutError):  # refused, unreachable, DNS, TLS, timed out
                raise ConnectError(f"cannot connect to the backend: {type(exc).__name__}: {exc}") from None
            raise
        conn.in_use = True
        return conn

    def _release(self, conn: _Conn) -> None:
        """Back to the idle list if the response was whole and both sides keep it alive, else closed."""
        if not conn.in_use:
            return
        if conn.complete and conn.keep_alive and conn.error is None and not conn.closed:
            if conn.paused and conn.transport is not None:
                conn.transport.resume_reading()  # paused by a body nobody read: the next reply needs it
            conn._reset()
            conn.idle_since = self.loop.time()
            self._idle.append(conn)
            if len(self._idle) > self.max_idle:
                self._idle.popleft().abort()
            self._wake_one()
        else:
            conn.in_use = False
            conn.abort()

    def _drop(self, conn: _Conn) -> None:
        if conn.counted:
            conn.counted = False
            self._open -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
