"""The adapter's ASGI app: verify that Envoy sent the request, build the context, run the handler.

Bare ASGI on uvicorn (httptools, uvloop) like the sidecar: three fixed routes do not need a
framework's routing and middleware on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hmac
import logging
import time
from typing import Any

import msgspec

from core import idempotency, ledger
from core.asgi import serve_lifespan
from core.contract import Header, parse_hold_price
from core.db import make_engine, write_tx
from core.errors import ApiError, error_json
from core.jsonbody import decode, too_deep
from core.kept import KeptReader
from core.routeplan import decode_plan
from core.secrets import load_secrets
from core.settings import Settings
from core.snapshot import PriceRecord, Snapshot, current_version, load_snapshot
from core.telemetry import CONTENT_TYPE, exposition
from proxy_plugins.adapter import chat, embeddings, responses, telemetry
from proxy_plugins.adapter.attempts import Router
from proxy_plugins.adapter.backends import Backends
from proxy_plugins.adapter.balance import Balancer
from proxy_plugins.adapter.commit import Committer
from proxy_plugins.adapter.context import RequestContext
from proxy_plugins.adapter.exchange import Exchange, Receive, Send
from proxy_plugins.adapter.finish import Finisher
from proxy_plugins.adapter.health import Health
from proxy_plugins.adapter.idempotent_replay import serve_replay
from proxy_plugins.adapter.journal import Journal
from proxy_plugins.adapter.meter import Meter
from proxy_plugins.adapter.responses_worker import BackgroundResponses
from proxy_plugins.adapter.services import Handler, Services
from proxy_plugins.adapter.settler import Settler

__all__ = ["ROUTES", "Adapter"]

log = logging.getLogger("nx.adapter")

# The sidecar's answer headers as the server hands them over (raw lower-case bytes).
_H_INTERNAL, _H_IDEM_REPLAY = Header.INTERNAL.encode(), Header.IDEM_REPLAY.encode()
_H_RATE_LIMIT = Header.RATE_LIMIT.encode()
_H_ORG, _H_PROJECT, _H_KEY = Header.ORG.encode(), Header.PROJECT.encode(), Header.KEY.encode()
_H_MODEL, _H_BACKEND, _H_IDEM = Header.MODEL.encode(), Header.BACKEND.encode(), Header.IDEM.encode()
_H_HOLD_PRICE, _H_HOLD_OUTPUT = Header.HOLD_PRICE.encode(), Header.HOLD_OUTPUT.encode()
_H_PLAN = Header.PLAN.encode()

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
        secrets = load_secrets(settings)
        token = secrets.internal_token
        self.internal_token = token.encode()
        self.pepper = secrets.key_pepper
        self.finisher = Finisher(settings.sidecar_url, token)
        self._snapshot: Snapshot | None = None
        self.svc = Services(settings=settings, engine=make_engine(settings),
                            backends=Backends(tenant_backends=settings.local_backend_ids),
                            snapshot=self.snapshot)
        self.committer = Committer(self.svc.engine)
        # What streams have sent, on disk before it is sent; settled by any adapter if this one
        # dies or the database refuses (journal.py, settler.py).
        self.journal = Journal(settings.data_path / "journal", settings.journal_fsync_ms)
        self.settler = Settler(self.svc.engine, self.journal, grace_s=settings.hold_grace_seconds,
                               renew_s=settings.hold_renew_seconds, settle_s=settings.journal_settle_seconds)
        self._poller: asyncio.Task[None] | None = None
        # Background responses are inference too: every adapter process claims queued ones under
        # a lease (responses_worker.py), so they run where the backends and the metering live.
        # The version poll and the background jobs' probe share one kept connection (core/kept.py).
        self.reader = KeptReader(self.svc.engine)
        self.background = BackgroundResponses(self.svc.engine, tenant_backends=settings.local_backend_ids,
                                              hold_grace_ms=int(settings.hold_grace_seconds * 1000),
                                              reader=self.reader)
        self._background: asyncio.Task[None] | None = None
        # Route groups: target health (shared through Redis when configured) and balancing.
        self.health = Health(settings.route_eject_after, settings.route_eject_seconds, redis=_redis(settings))
        self.router = Router(Balancer(self.health))
        telemetry.CIRCUITS.read = self.health.view  # nx_routing_circuit_state (core/telemetry)

    def snapshot(self) -> Snapshot:
        assert self._snapshot is not None, "snapshot is loaded at startup"
        return self._snapshot

    async def start(self) -> None:
        self._snapshot = await load_snapshot(self.svc.engine)
        # What is loaded by now (modules, engine, snapshot) lives as long as the process: frozen out
        # of the collector's generations, a full collection no longer walks it (as in the sidecar).
        gc.freeze()
        self._poller = asyncio.create_task(self._poll())
        self.journal.open()
        self.settler.start()
        self._background = asyncio.create_task(self._run_background())
        self.health.start()

    async def stop(self) -> None:
        for task in (self._poller, self._background):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.background.aclose()  # abandoned runs are re-claimed when their lease expires
        await self.health.stop()
        await self.settler.stop()
        await self.journal.close()
        await self.svc.backends.aclose()
        await self.finisher.aclose()
        await self.committer.close()
        await self.reader.close()
        await self.svc.engine.dispose()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                if await self.reader.read(current_version) != self.snapshot().version:
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
        if path == "/metrics":  # Prometheus (core/telemetry); this port is never on the edge
            await _metrics(send)
            return
        # Raw bytes, decoded only for the few names read below: decoding every header Envoy
        # forwards was the largest single cost of the adapter's own request path.
        headers: dict[bytes, bytes] = dict(scope["headers"])
        if not hmac.compare_digest(headers.get(_H_INTERNAL, b""), self.internal_token):
            # Only Envoy, after the sidecar's check, may call this port.
            await _plain(send, 403, error_json("internal_auth_failed", "Not called through the edge."))
            return
        if path == "/internal/route-health":  # this process's view of route targets (health.py)
            await _plain(send, 200, msgspec.json.encode({"object": "list", "data": self.health.view()}))
            return
        replay = headers.get(_H_IDEM_REPLAY)
        if replay is not None:
            await serve_replay(self.svc.engine, self.pepper, replay.decode("latin-1"), send)
            return
        handler = self.routes.get(path)
        if handler is None or scope["method"] != "POST":
            await _plain(send, 404, error_json("not_found", f"Unknown path {scope['method']} {path}."))
            return
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")
        tokens = 0
        self.finisher.running(request_id, headers.get(_H_RATE_LIMIT))
        try:
            body = await _read_body(receive, self.settings.max_body_bytes)
            if body is None:
                await self._abandon(headers, request_id)
                await _plain(send, 413, error_json("request_too_large", "Request body is too large."))
                return
            ctx = await self._context(headers, request_id, body)
            if isinstance(ctx, ApiError):
                await self._abandon(headers, request_id)
                await _plain(send, ctx.status, error_json(ctx.code, ctx.message, ctx.param),
                             [(b"x-request-id", request_id.encode("latin-1"))])
                return
            if ctx.hold_price is not None:
                ctx.meter.journal = self.journal.entry(ctx, body)
            with telemetry.request(ctx, handler, headers):  # span, log fields (core/telemetry)
                await self._serve(handler, ctx, body, receive, send)
            tokens = ctx.usage.total_tokens
        finally:
            self.finisher.report(request_id, _text(headers, _H_RATE_LIMIT), tokens)

    async def _abandon(self, headers: dict[bytes, bytes], request_id: str) -> None:
        """The request is refused before any backend call: free its hold and Idempotency-Key now
        rather than when the worker expires them."""
        hold, record = _text(headers, _H_HOLD_PRICE), _text(headers, _H_IDEM)
        if not hold and not record:
            return
        try:
            async with write_tx(self.svc.engine) as conn:
                if hold:
                    await ledger.release_hold(conn, request_id)
                if record:
                    await idempotency.release(conn, record)
        except Exception:  # the worker's expiry still frees them
            log.exception("request %s: could not release its hold", request_id)

    async def _context(self, headers: dict[bytes, bytes], request_id: str,
                       body: bytes) -> RequestContext | ApiError:
        model_id, backend_id = _text(headers, _H_MODEL) or "", _text(headers, _H_BACKEND) or ""
        snap = self.snapshot()
        routed = _plan(_text(headers, _H_PLAN))
        planned_at = routed.pop("version", 0)
        # A plan made on a newer configuration than this process's (a route just changed; this
        # process polls every second) would run under a stale route policy.
        if model_id not in snap.models or backend_id not in snap.backends or planned_at > snap.version:
            # The sidecar may have seen a configuration change a moment before this process.
            self._snapshot = snap = await load_snapshot(self.svc.engine)
        model, backend = snap.models.get(model_id), snap.backends.get(backend_id)
        if model is None or model.status == "disabled":
            return ApiError("model_not_found", f"The model '{model_id}' does not exist.", "model")
        if backend is None or model.status == "unavailable":
            return ApiError("model_unavailable", f"The model '{model_id}' is unavailable right now.", "model")
        try:
            requested = decode(body, type=_ModelName).model or model.id
        except ApiError as exc:
            return exc
        except msgspec.DecodeError:  # ValidationError included: the sidecar already read `model`
            return ApiError("invalid_json", "We could not parse the JSON body of your request.")
        return RequestContext(
            request_id=request_id, org_id=_text(headers, _H_ORG) or "",
            project_id=_text(headers, _H_PROJECT) or "", key_id=_text(headers, _H_KEY) or "",
            requested_model=requested, model=model, backend=backend, received_ns=time.monotonic_ns(),
            hold_price=_hold_price(_text(headers, _H_HOLD_PRICE)),
            meter=Meter(_held_output(_text(headers, _H_HOLD_OUTPUT))),
            idempotency_record=_text(headers, _H_IDEM), cache_control=_text(headers, b"cache-control") or "",
            **routed)

    async def _serve(self, handler: Handler, ctx: RequestContext, body: bytes, receive: Receive,
                     send: Send) -> None:
        """Run the handler in the server's own task; one watcher task cancels it if the client
        leaves (which closes the upstream call: the backend stops generating for nobody). A
        second task for the handler and `asyncio.wait` over both cost more than the rest of this
        module's per-request work."""
        exchange = Exchange(ctx, send, telemetry.observed(self.committer, handler))
        current = asyncio.current_task()
        assert current is not None, "ASGI apps run in a task"
        watcher = asyncio.create_task(_watch(receive, exchange, current))
        try:
            await self._run(handler, ctx, body, exchange)
        except asyncio.CancelledError:
            # Only the watcher's own cancellation is absorbed; a server shutdown's propagates.
            if not exchange.disconnected or current.uncancel() > 0:
                raise
            log.info("request %s: client disconnected; upstream call aborted", ctx.request_id)
        finally:
            watcher.cancel()

    async def _run(self, handler: Handler, ctx: RequestContext, body: bytes, exchange: Exchange) -> None:
        failed: int | None = None  # a stream's failure status, for its usage record
        try:
            if ctx.plan is None:
                await handler(self.svc, ctx, body, exchange)
            else:
                await self.router.run(handler, self.svc, ctx, body, exchange, self.snapshot())
        except ApiError as exc:
            if not exchange.started:
                await exchange.error(exc)
            else:
                failed = exc.status
                log.warning("request %s failed after the answer started: %s", ctx.request_id, exc.message)
        except RecursionError:
            # Client JSON nested just below the parser's limit, which a later step (re-encoding it
            # for the backend, one stack frame deeper) reaches: the body's fault, not the server's.
            log.warning("request %s: body nested too deeply to process", ctx.request_id)
            if not exchange.started:
                await exchange.error(too_deep())
        except Exception:
            failed = 500
            log.exception("request %s: unhandled error", ctx.request_id)
            if not exchange.started:
                await exchange.error(ApiError("internal_error", "The server had an error processing "
                                              f"your request (request id {ctx.request_id})."))
        finally:
            if exchange.started and not exchange.finished:
                await exchange.finish(status=None if exchange.disconnected else failed)

    async def _run_background(self, every_s: float = 0.25) -> None:
        while True:
            try:
                await self.background()
            except Exception:
                log.exception("background responses tick failed")
            await asyncio.sleep(every_s)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await serve_lifespan(receive, send, self.start, self.stop)


def _text(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return None if value is None else value.decode("latin-1")


def _plan(value: str | None) -> dict[str, Any]:
    if not value:
        return {}
    tiers, latency, version = decode_plan(value)
    return {"plan": tiers, "plan_by_latency": latency, "version": version}


def _redis(settings: Settings) -> Any:
    if not settings.redis_url:
        return None
    import redis.asyncio as aioredis

    return aioredis.from_url(settings.redis_url)


def _held_output(value: str | None) -> int:
    """`x-nx-hold-output`: the output tokens the sidecar's hold covers (0: none known)."""
    return int(value) if value and value.isdigit() else 0


@functools.lru_cache(maxsize=256)
def _hold_price(value: str | None) -> PriceRecord | None:
    """`x-nx-hold-price` as the sidecar's hold set it (core/contract.py's format). Cached:
    nearly every request carries one of a handful of price cards (PriceRecord is frozen)."""
    if not value:
        return None
    return parse_hold_price(value)


async def _watch(receive: Receive, exchange: Exchange, task: asyncio.Task[Any]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    if exchange.sent:
        return  # uvicorn also reports `http.disconnect` once the whole answer went out
    exchange.disconnected = True
    if not exchange.detached:
        task.cancel()


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    message = await receive()
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        return None
    if not message.get("more_body"):
        return body  # the usual case: Envoy forwards a buffered body in one message
    chunks = [body]
    size = len(body)
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


async def _metrics(send: Send) -> None:
    body = exposition()
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
