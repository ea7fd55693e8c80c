"""The simulator's ASGI app: auth, routing, recording, timing, errors and cuts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from tests.simulator import wire
from tests.simulator.directives import Directives, parse

__all__ = ["Simulator", "Record"]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
_encode = msgspec.json.encode


class Record(msgspec.Struct, kw_only=True):
    seq: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: str
    status: int = 0
    frames_sent: int = 0
    completed: bool = False
    disconnected: bool = False
    cut: bool = False


class _Cut(Exception):
    """Raised inside the app to make uvicorn drop the connection mid-response."""


class Simulator:
    def __init__(self, api_key: str, anthropic_key: str, model_names: list[str] | None = None,
                 max_records: int = 10_000) -> None:
        self.api_key = api_key
        self.anthropic_key = anthropic_key
        self.model_names = model_names or ["sim-chat", "sim-embed"]
        self.records: list[Record] = []
        self.max_records = max_records
        self._seq = itertools.count(1)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path, method = scope["path"], scope["method"]
        raw = await _read(receive)
        if path.startswith("/_sim/"):
            await self._control(method, path, scope.get("query_string", b"").decode(), send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body = msgspec.json.decode(raw) if raw else {}
        except msgspec.DecodeError:
            body = None
        record = Record(seq=next(self._seq), method=method, path=path, headers=headers, body=body,
                        raw=raw.decode("utf-8", "replace"))
        if len(self.records) >= self.max_records:
            del self.records[: self.max_records // 2]
        self.records.append(record)
        watcher = asyncio.create_task(_watch(receive, record))
        try:
            model = body.get("model") if isinstance(body, dict) else None
            await self._answer(record, headers, body, parse(raw, model if isinstance(model, str) else None), send)
        except _Cut:
            record.cut = True
            raise
        finally:
            watcher.cancel()

    async def _answer(self, record: Record, headers: dict[str, str], body: Any, d: Directives,
                      send: Send) -> None:
        anthropic = record.path == "/v1/messages"
        presented = headers.get("x-api-key", "") if anthropic else \
            headers.get("authorization", "").removeprefix("Bearer ")
        if d.first_byte_ms:
            await asyncio.sleep(d.first_byte_ms / 1000)
        reply: wire.Reply | wire.Stream
        if presented != (self.anthropic_key if anthropic else self.api_key):
            reply = _error(anthropic, 401, "authentication_error", f"Incorrect API key provided: {presented}")
        elif anthropic and headers.get("anthropic-version") != "2023-06-01":
            reply = _error(True, 400, "invalid_request_error", "anthropic-version header is required")
        elif not isinstance(body, dict):
            reply = _error(anthropic, 400, "invalid_request_error", "We could not parse the JSON body.")
        elif d.status:
            message = d.message or f"Simulated status {d.status}"
            if d.echo_key:
                message += f" (key: {presented})"
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(d.status, "api_error")
            reply = _error(anthropic, d.status, kind, message)
            if d.retry_after:
                reply.headers = {"retry-after": d.retry_after}
        else:
            reply = self._route(record.method, record.path, body, d)
        if isinstance(reply, wire.Reply):
            record.status = reply.status
            data = _encode(reply.body)
            await send({"type": "http.response.start", "status": reply.status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                *((k.encode(), v.encode()) for k, v in reply.headers.items())]})
            await send({"type": "http.response.body", "body": data})
            record.completed = True
            return
        record.status = 200
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for frame in reply.frames:
            if record.disconnected:
                return
            if d.cut_after is not None and record.frames_sent >= d.cut_after:
                raise _Cut()
            await send({"type": "http.response.body", "body": frame, "more_body": True})
            record.frames_sent += 1
            if d.chunk_ms:
                await asyncio.sleep(d.chunk_ms / 1000)
        await send({"type": "http.response.body", "body": b""})
        record.completed = not record.disconnected

    def _route(self, method: str, path: str, body: dict[str, Any], d: Directives) -> wire.Reply | wire.Stream:
        if method == "POST" and path == "/v1/chat/completions":
            return wire.chat(body, d)
        if method == "POST" and path == "/v1/embeddings":
            return wire.embeddings(body, d)
        if method == "POST" and path == "/v1/responses":
            return wire.responses(body, d)
        if method == "POST" and path == "/v1/responses/input_tokens":
            return wire.input_tokens(body)
        if method == "POST" and path == "/v1/messages/count_tokens":
            return wire.count_tokens(body)
        if method == "POST" and path == "/v1/messages":
            return wire.anthropic_messages(body, d)
        if method == "GET" and path == "/v1/models":
            return wire.models(self.model_names)
        return _error(False, 404, "invalid_request_error", f"Unknown path {method} {path}")

    async def _control(self, method: str, path: str, query: str, send: Send) -> None:
        if path == "/_sim/requests" and method == "DELETE":
            self.records.clear()
            found: Any = {"deleted": True}
        elif path == "/_sim/requests":
            needle = query.partition("contains=")[2].split("&")[0]
            from urllib.parse import unquote

            needle = unquote(needle)
            found = [r for r in self.records if needle in r.raw]
        else:
            found = {"status": "ok"}
        data = _encode(found)
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})


def _error(anthropic: bool, status: int, kind: str, message: str) -> wire.Reply:
    if anthropic:
        return wire.Reply(status, {"type": "error", "error": {"type": kind, "message": message}})
    code = {401: "invalid_api_key", 429: "rate_limit_exceeded", 404: "model_not_found"}.get(status)
    return wire.Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})


async def _read(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _watch(receive: Receive, record: Record) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        while (await receive())["type"] != "http.disconnect":
            pass
        record.disconnected = True
