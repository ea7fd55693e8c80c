"""The adapter's ASGI app: verify that Envoy sent the request, build the context, run the handler.

Bare ASGI on uvicorn (httptools, uvloop) like the sidecar: three fixed routes do not need a
framework's routing and middleware on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from typing import Any

import msgspec

from control_plane import idempotency, ledger
from control_plane.db import make_engine, write_tx
from control_plane.domain.bootstrap import load_secrets
from control_plane.errors import ApiError, error_json
from control_plane.settings import Settings
from proxy_plugins.adapter import chat, embeddings, responses
from proxy_plugins.adapter.backends import Backends
from proxy_plugins.adapter.commit import Committer
from proxy_plugins.adapter.context import RequestContext
from proxy_plugins.adapter.exchange import Exchange, Receive, Send
from proxy_plugins.adapter.finish import Finisher
from proxy_plugins.adapter.replay import serve_replay
from proxy_plugins.adapter.services import Handler, Services
from proxy_plugins.asgi import serve_lifespan
from proxy_plugins.snapshot import PriceRecord, Snapshot, current_version, load_snapshot

__all__ = ["ROUTES", "Adapter"]

log = logging.getLogger("nx.adapter")

ROUTES: dict[str, Handler] = {
    "/v1/chat/completions": chat.handle,
    "/v1/embeddings": embeddings.handle,
    "/v1/responses": responses.handle,
}


class _ModelName(msgspec.Struct):
    model: str = ""


class Adapter:
    def __init__(self, settings: Settings, routes: dict[str, Handler] | None = None) -> None:
        self.settings = settings
        self.routes = ROUTES if routes is None else routes
        token = load_secrets(settings).internal_token
        self.internal_token = token.encode()
        self.finisher = Finisher(settings.sidecar_url, token)
        self._snapshot: Snapshot | None = None
        self.svc = Services(settings=settings, engine=make_engine(settings), backends=Backends(),
                            snapshot=self.snapshot)
        self.committer = Committer(self.svc.engine)
        self._poller: asyncio.Task[None] | None = None

    def snapshot(self) -> Snapshot:
        assert self._snapshot is not None, "snapshot is loaded at startup"
        return self._snapshot

    async def start(self) -> None:
        self._snapshot = await load_snapshot(self.svc.engine)
        self._poller = asyncio.create_task(self._poll())

    async def stop(self) -> None:
        if self._poller:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        await self.svc.backends.aclose()
        await self.finisher.aclose()
        await self.committer.close()
        await self.svc.engine.dispose()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                if await current_version(self.svc.engine) != self.snapshot().version:
                    self._snapshot = await load_snapshot(self.svc.engine)
            except Exception:  # keep serving from the last snapshot through a database hiccup
                log.exception("snapshot refresh failed")

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        if path == "/healthz":
            await _plain(send, 200, b'{"status":"ok"}')
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if not hmac.compare_digest(headers.get("x-nx-internal", "").encode(), self.internal_token):
            # Only Envoy, after the sidecar's check, may call this port.
            await _plain(send, 403, error_json("internal_auth_failed", "Not called through the edge."))
            return
        if "x-nx-idem-replay" in headers:
            await serve_replay(self.svc.engine, headers["x-nx-idem-replay"], send)
            return
        handler = self.routes.get(path)
        if handler is None or scope["method"] != "POST":
            await _plain(send, 404, error_json("not_found", f"Unknown path {scope['method']} {path}."))
            return
        tokens = 0
        try:
            body = await _read_body(receive, self.settings.max_body_bytes)
            if body is None:
                await self._abandon(headers)
                await _plain(send, 413, error_json("request_too_large", "Request body is too large."))
                return
            ctx = await self._context(headers, body)
            if isinstance(ctx, ApiError):
                await self._abandon(headers)
                await _plain(send, ctx.status, error_json(ctx.code, ctx.message, ctx.param),
                             [(b"x-request-id", headers.get("x-request-id", "").encode("latin-1"))])
                return
            await self._serve(handler, ctx, body, receive, send)
            tokens = ctx.usage.total_tokens
        finally:
            self.finisher.report(headers.get("x-request-id", ""), headers.get("x-nx-rl"), tokens)

    async def _abandon(self, headers: dict[str, str]) -> None:
        """The request is refused before any backend call: free its hold and Idempotency-Key now
        rather than when the worker expires them."""
        hold, record = headers.get("x-nx-hold-price"), headers.get("x-nx-idem")
        if not hold and not record:
            return
        try:
            async with write_tx(self.svc.engine) as conn:
                if hold:
                    await ledger.release_hold(conn, headers.get("x-request-id", ""))
                if record:
                    await idempotency.release(conn, record)
        except Exception:  # the worker's expiry still frees them
            log.exception("request %s: could not release its hold", headers.get("x-request-id"))

    async def _context(self, headers: dict[str, str], body: bytes) -> RequestContext | ApiError:
        model_id, backend_id = headers.get("x-nx-model", ""), headers.get("x-nx-backend", "")
        snap = self.snapshot()
        if model_id not in snap.models or backend_id not in snap.backends:
            # The sidecar may have seen a configuration change a moment before this process.
            self._snapshot = snap = await load_snapshot(self.svc.engine)
        model, backend = snap.models.get(model_id), snap.backends.get(backend_id)
        if model is None or model.status == "disabled":
            return ApiError("model_not_found", f"The model '{model_id}' does not exist.", "model")
        if backend is None or model.status == "unavailable":
            return ApiError("model_unavailable", f"The model '{model_id}' is unavailable right now.", "model")
        try:
            requested = msgspec.json.decode(body, type=_ModelName).model or model.id
        except (msgspec.DecodeError, msgspec.ValidationError):
            return ApiError("invalid_json", "We could not parse the JSON body of your request.")
        return RequestContext(
            request_id=headers.get("x-request-id", ""), org_id=headers.get("x-nx-org", ""),
            project_id=headers.get("x-nx-project", ""), key_id=headers.get("x-nx-key", ""),
            requested_model=requested, model=model, backend=backend, received_ns=time.monotonic_ns(),
            hold_price=_hold_price(headers.get("x-nx-hold-price")),
            idempotency_record=headers.get("x-nx-idem"), cache_control=headers.get("cache-control", ""))

    async def _serve(self, handler: Handler, ctx: RequestContext, body: bytes, receive: Receive,
                     send: Send) -> None:
        exchange = Exchange(ctx, send, self.committer)
        task = asyncio.create_task(self._run(handler, ctx, body, exchange))
        watcher = asyncio.create_task(_disconnected(receive))
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            watcher.cancel()
            return
        exchange.disconnected = True
        if not exchange.detached:
            task.cancel()  # closes the upstream call: the backend stops generating for nobody
            log.info("request %s: client disconnected; upstream call aborted", ctx.request_id)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _run(self, handler: Handler, ctx: RequestContext, body: bytes, exchange: Exchange) -> None:
        try:
            await handler(self.svc, ctx, body, exchange)
        except ApiError as exc:
            if not exchange.started:
                await exchange.error(exc)
            else:
                log.warning("request %s failed after the answer started: %s", ctx.request_id, exc.message)
        except Exception:
            log.exception("request %s: unhandled error", ctx.request_id)
            if not exchange.started:
                await exchange.error(ApiError("internal_error", "The server had an error processing "
                                              f"your request (request id {ctx.request_id})."))
        finally:
            if exchange.started and not exchange.finished:
                await exchange.finish()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await serve_lifespan(receive, send, self.start, self.stop)


def _hold_price(value: str | None) -> PriceRecord | None:
    """`version,input,cached,output` as the sidecar's hold set it (proxy_plugins/hold.py)."""
    if not value:
        return None
    version, inp, cached, out = (int(x) for x in value.split(","))
    return PriceRecord(version, inp, cached, out)


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _plain(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
