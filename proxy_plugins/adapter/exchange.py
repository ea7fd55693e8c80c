"""One client exchange: a JSON answer or an SSE stream, always with the metadata headers.

A handler either calls `json(...)` once, or `start_stream()`, then `event(...)` as upstream events
arrive (each one goes out at once: no buffering), then `finish()`. Raising `ApiError` before the
answer started becomes an error JSON with the metadata headers (app.py); after a stream started,
the handler reports failure inside the stream, in its protocol's own way.

A client disconnect cancels the handler task (app.py), which closes the upstream call, and the
stream is settled for what it produced (status 499). A handler that must outlive its client sets
`detached = True`: a JSON answer does, before it calls the backend, so an abandoned request still
runs to its end, is charged what the backend produced, resolves its hold then (not at expiry) and
is stored under its Idempotency-Key for the client's retry; nothing is sent to the departed client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from core.errors import ApiError, error_json
from proxy_plugins.adapter.context import RequestContext
from proxy_plugins.adapter.journal import Entry
from proxy_plugins.adapter.metering import metadata_headers

__all__ = ["DONE", "Exchange", "Receive", "Send", "error_headers", "sse", "stream_error"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

_JSON = (b"content-type", b"application/json")
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no")]


DONE = b"data: [DONE]\n\n"

log = logging.getLogger("nx.adapter")


def sse(obj: Any) -> bytes:
    """One data-only SSE event (Chat Completions framing)."""
    return b"data: " + msgspec.json.encode(obj) + b"\n\n"


def stream_error(error: ApiError) -> bytes:
    """An error inside a started stream: `data: {"error": {...}}`, which both SDKs raise on."""
    return sse(msgspec.to_builtins(error.body()))


def error_headers(error: ApiError) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]


Commit = Callable[[RequestContext, int, bytes, Callable[[], list[tuple[bytes, bytes]]]],
                  Awaitable[list[tuple[bytes, bytes]]]]


async def _no_commit(_ctx: RequestContext, _status: int, _body: bytes,
                     headers: Callable[[], list[tuple[bytes, bytes]]]) -> list[tuple[bytes, bytes]]:
    return headers()


class Exchange:
    """`commit` (commit.py) runs before the final bytes of every answer: the charge is durable, and
    the answer stored under its Idempotency-Key, before the client can see the end of it."""

    def __init__(self, ctx: RequestContext, send: Send, commit: Commit = _no_commit) -> None:
        self.ctx = ctx
        self._send = send
        self._commit = commit
        self.started = False
        self.finished = False
        self.detached = False
        self.disconnected = False
        self.sent = False
        """The final bytes are being sent: a disconnect after this is the answer's normal end."""
        self.on_start: Callable[[int], None] | None = None
        """Called with the status when the answer starts (its first byte): the attempt loop
        (attempts.py) records the answering attempt then, before the headers are rendered."""
        self._stream_head: list[tuple[bytes, bytes]] = []
        self._stream_body: list[bytes] = []

    async def json(self, body: bytes, status: int = 200,
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """The whole answer at once; metadata headers rendered after the charge is settled."""
        self._claim(status)
        # Settled exactly once: a client that leaves while the commit is queued cancels this task,
        # but the queued commit still runs, so the caller's clean-up must not settle again.
        self.finished = True
        try:
            out = await self._commit(self.ctx, status, body, lambda: [
                _JSON, (b"content-length", str(len(body)).encode()), *metadata_headers(self.ctx),
                *(headers or [])])
        except Exception:
            log.exception("request %s: could not settle; the answer is withheld", self.ctx.request_id)
            status, body = 503, error_json("billing_unavailable", "The answer could not be billed, so it "
                                           "is withheld; nothing was charged. Please retry.")
            out = [_JSON, (b"content-length", str(len(body)).encode())]
        entry = self.ctx.meter.journal
        if isinstance(entry, Entry):
            entry.done()  # delivered and settled, or withheld: either way nothing is owed later
        if self.disconnected:
            return
        await self._send({"type": "http.response.start", "status": status, "headers": out})
        self.sent = True
        await self._send({"type": "http.response.body", "body": body})

    async def error(self, error: ApiError) -> None:
        await self.json(msgspec.json.encode(error.body()), error.status, error_headers(error))

    async def start_stream(self, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self._claim(200)
        out = [*_SSE, *metadata_headers(self.ctx, final=False), *(headers or [])]
        self._stream_head = out
        await self._send({"type": "http.response.start", "status": 200, "headers": out})

    async def event(self, data: bytes) -> None:
        """Send already-framed SSE bytes (`data: ...\\n\\n`, possibly several events)."""
        if self.ctx.first_byte_ns is None:
            self.ctx.first_byte_ns = time.monotonic_ns()
        if self.ctx.idempotency_record is not None:
            self._stream_body.append(data)  # a repeat of this request gets the whole stream back
        if self.disconnected:
            return
        await self._send({"type": "http.response.body", "body": data, "more_body": True})

    async def finish(self, data: bytes = b"", status: int | None = None) -> None:
        """End the stream; the charge for what was produced (a cut or a disconnect included)
        commits first, and only then do the final bytes go out. `status` is what the usage record
        says: the failure's status for a stream that failed after it started, 499 (client closed
        the request) for a client that left, else 200."""
        if self.finished:
            return
        self.finished = True
        if status is None:
            status = 499 if self.disconnected else 200
        entry = self.ctx.meter.journal
        try:
            await self.ctx.complete_usage()
            await self._commit(self.ctx, status, b"".join(self._stream_body) + data, lambda: self._stream_head)
        except Exception:
            log.exception("request %s: could not settle the stream; the settler will", self.ctx.request_id)
            if isinstance(entry, Entry):
                # What was sent is journaled: it is charged once billing is back (settler.py).
                entry.failed(status)
            data = stream_error(ApiError("billing_unavailable", "The end of this answer could not be billed "
                                         "now; it is incomplete, and what was delivered will be charged when "
                                         "billing is back."))
        else:
            if isinstance(entry, Entry):
                entry.done()
        if not self.disconnected:
            self.sent = True
            await self._send({"type": "http.response.body", "body": data, "more_body": False})

    def _claim(self, status: int) -> None:
        if self.started:
            raise RuntimeError("the answer has already started")
        self.started = True
        if self.on_start is not None:
            self.on_start(status)
