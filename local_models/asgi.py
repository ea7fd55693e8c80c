"""A minimal ASGI layer: routing, bounded body reading, disconnect watching, JSON and SSE responses.

Raw ASGI rather than a framework because the two things this server must get right live exactly
where frameworks hide them: noticing a client disconnect *while a handler is still waiting* (to
cancel a non-streaming generation, not only a stream) and choosing the status code of a stream
*after* the request is admitted to the queue (so a full queue is a real 503, not an error event
inside a 200 stream). Five routes do not need more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from local_models.errors import ApiError, error_bytes

__all__ = ["App", "JsonResponse", "Request", "Response", "Route", "StreamResponse"]

log = logging.getLogger("local_models")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# 2048 embedding inputs of a few KB each fit; anything bigger is not a request this server can serve.
MAX_BODY_BYTES = 32 * 1024 * 1024


@dataclass(slots=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-case names; a repeated header keeps its last value."""
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    _callbacks: list[Callable[[], None]] = field(default_factory=list)

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the client goes away (at once if it already has)."""
        if self.disconnected.is_set():
            callback()
        else:
            self._callbacks.append(callback)

    def _mark_disconnected(self) -> None:
        self.disconnected.set()
        for callback in self._callbacks:
            callback()
        self._callbacks.clear()

    def decode(self, type_: type[Any]) -> Any:
        try:
            return msgspec.json.decode(self.body, type=type_)
        except msgspec.ValidationError as exc:
            # msgspec names the offending field as "at `$.messages[0].role`": surface it as param.
            message = str(exc)
            param = message.rsplit("`$.", 1)[1].rstrip("`") if "`$." in message else None
            raise ApiError(400, f"Invalid request body: {message}", param=param) from exc
        except msgspec.DecodeError as exc:
            raise ApiError(400, f"Request body is not valid JSON: {exc}") from exc


@dataclass(frozen=True, slots=True)
class JsonResponse:
    body: bytes
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StreamResponse:
    """Server-sent events; each item of ``events`` is one already-encoded ``data:`` payload."""

    events: AsyncGenerator[bytes, None]


Response = JsonResponse | StreamResponse
Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    prefix: bool = False
    """Match ``path`` as a prefix (for ``/v1/models/{id}``)."""


class App:
    def __init__(
        self,
        routes: list[Route],
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._routes = routes
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self._on_startup is not None:
                        await self._on_startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._on_shutdown is not None:
                    await self._on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _route(self, method: str, path: str) -> Handler:
        path_known = False
        for route in self._routes:
            if path == route.path or (route.prefix and path.startswith(route.path)):
                path_known = True
                if route.method == method:
                    return route.handler
        if path_known:
            raise ApiError(405, f"Method {method} not allowed on {path}.")
        raise ApiError(404, f"No route {method} {path}.", code="unknown_url")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        request = Request(method=scope["method"], path=scope["path"], headers=headers)
        watcher: asyncio.Task[None] | None = None
        try:
            handler = self._route(request.method, request.path)
            request.body = await _read_body(receive)
            watcher = asyncio.create_task(_watch_disconnect(receive, request))
            response = await handler(request)
        except ApiError as exc:
            response = JsonResponse(error_bytes(exc), exc.status, tuple(exc.headers.items()))
        except _ClientGone:
            return
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = JsonResponse(
                error_bytes(ApiError(500, "Internal server error.", type="server_error")), 500
            )
        try:
            if isinstance(response, JsonResponse):
                await _send_json(send, response)
            else:
                await _send_stream(send, response, request)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher


class _ClientGone(Exception):
    pass


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"Request body larger than {MAX_BODY_BYTES} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _watch_disconnect(receive: Receive, request: Request) -> None:
    # After the body, the only message left for this request is http.disconnect.
    while (await receive())["type"] != "http.disconnect":
        pass
    request._mark_disconnected()


async def _send_json(send: Send, response: JsonResponse) -> None:
    headers = [(b"content-length", str(len(response.body)).encode())]
    if not any(k == "content-type" for k, _ in response.headers):  # /metrics sets its own
        headers.append((b"content-type", b"application/json"))
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _send_stream(send: Send, response: StreamResponse, request: Request) -> None:
    headers = [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    events = response.events
    try:
        async for payload in events:
            if request.disconnected.is_set():
                break
            await send(
                {"type": "http.response.body", "body": b"data: " + payload + b"\n\n", "more_body": True}
            )
        else:
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except OSError:  # the transport died under us: nothing more to tell anyone
        request._mark_disconnected()
    finally:
        # Closing the generator runs its finally blocks, which cancel the generation.
        await events.aclose()
