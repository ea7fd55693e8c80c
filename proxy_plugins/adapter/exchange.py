"""One client exchange: a JSON answer or an SSE stream, always with the metadata headers.

A handler either calls `json(...)` once, or `start_stream()`, then `event(...)` as upstream events
arrive (each one goes out at once: no buffering), then `finish()`. Raising `ApiError` before the
answer started becomes an error JSON with the metadata headers (app.py); after a stream started,
the handler reports failure inside the stream, in its protocol's own way.

A client disconnect cancels the handler task (app.py), which closes the upstream call. A handler
that must outlive its client (e.g. a stored response being recorded) sets `detached = True`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from control_plane.errors import ApiError
from proxy_plugins.adapter.context import RequestContext
from proxy_plugins.adapter.metering import metadata_headers

__all__ = ["DONE", "Exchange", "Send", "Receive", "error_headers", "sse", "stream_error"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

_JSON = (b"content-type", b"application/json")
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no")]


DONE = b"data: [DONE]\n\n"


def sse(obj: Any) -> bytes:
    """One data-only SSE event (Chat Completions framing)."""
    return b"data: " + msgspec.json.encode(obj) + b"\n\n"


def stream_error(error: ApiError) -> bytes:
    """An error inside a started stream: `data: {"error": {...}}`, which both SDKs raise on."""
    return sse(msgspec.to_builtins(error.body()))


def error_headers(error: ApiError) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]


class Exchange:
    def __init__(self, ctx: RequestContext, send: Send) -> None:
        self.ctx = ctx
        self._send = send
        self.started = False
        self.finished = False
        self.detached = False
        self.disconnected = False

    async def json(self, body: bytes, status: int = 200,
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """The whole answer at once; metadata headers from `ctx` as it is now."""
        self._claim()
        out = [_JSON, (b"content-length", str(len(body)).encode()), *metadata_headers(self.ctx),
               *(headers or [])]
        await self._send({"type": "http.response.start", "status": status, "headers": out})
        await self._send({"type": "http.response.body", "body": body})
        self.finished = True

    async def error(self, error: ApiError) -> None:
        await self.json(msgspec.json.encode(error.body()), error.status, error_headers(error))

    async def start_stream(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self._claim()
        out = [*_SSE, *metadata_headers(self.ctx, final=False), *(headers or [])]
        await self._send({"type": "http.response.start", "status": 200, "headers": out})

    async def event(self, data: bytes) -> None:
        """Send already-framed SSE bytes (`data: ...\\n\\n`, possibly several events)."""
        if self.disconnected:
            return
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self, data: bytes = b"") -> None:
        if not self.finished and not self.disconnected:
            await self._send({"type": "http.response.body", "body": data, "more_body": False})
        self.finished = True

    def _claim(self) -> None:
        if self.started:
            raise RuntimeError("the answer has already started")
        self.started = True
