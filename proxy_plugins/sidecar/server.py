"""The sidecar process: a bare ASGI app on uvicorn (httptools, uvloop) that Envoy calls.

Why bare ASGI and HTTP rather than gRPC or a framework: the measurements in
`shared/reference/stack-measurements.md` put a grpc.aio check at ~610 us of CPU against ~70 us over
HTTP, and a framework's routing and middleware would add to the hot path for three fixed routes.

Routes: `/authz/<original path>` (Envoy ext_authz), `GET /healthz`, `GET /metrics` (Prometheus),
`POST /internal/invalidate` (control plane: keys revoked or configuration changed, apply now),
`POST /internal/finish` and `POST /internal/renew` (adapter: requests ended; requests still running
keep their slots). Beside
it, on the log port, Envoy's access log of every request that ended (ended.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hmac
import logging
from typing import Any

import msgspec
import uvicorn

from core.asgi import Receive, Send, serve_lifespan
from core.contract import SIDECAR_REFUSAL_503, Header
from core.datadir import owner_only
from core.db import make_engine
from core.errors import ApiError, error_json
from core.jsonbody import decode
from core.kept import KeptReader
from core.migrations import exit_unless_current
from core.nonces import DatabaseNonces
from core.secrets import load_secrets
from core.settings import Settings, SettingsError, load_settings
from core.snapshot import KeyCache, Snapshot, current_version, load_key, load_snapshot
from core.telemetry import CONTENT_TYPE, configure, exposition
from proxy_plugins.sidecar import telemetry
from proxy_plugins.sidecar.authz import Checker, CheckRequest, Decision
from proxy_plugins.sidecar.ended import Endings, LogListener
from proxy_plugins.sidecar.events import RateLimitEvents
from proxy_plugins.sidecar.hold import Holds
from proxy_plugins.sidecar.idempotency_gate import Gate
from proxy_plugins.sidecar.ratelimit import Bucket, LimitStore, MemoryStore
from proxy_plugins.sidecar.ratelimit_redis import RedisStore

log = logging.getLogger("nx.sidecar")

Scope = dict[str, Any]


INVALIDATE_CHANNEL = "nx:invalidate"
_CHECK_HEADERS = {name.encode(): name for name in (
    "x-request-id", "authorization", Header.CLIENT_IP, "openai-project", "idempotency-key",
    Header.SIG_TIMESTAMP, Header.SIG_NONCE, Header.SIG_SIGNATURE)}
"""Request headers the check reads, by their raw (lower-case) name as the server hands them over."""


_INTERNAL = Header.INTERNAL.encode()
_BAD_INTERNAL_BODY = Decision(status=400, headers=[("content-type", "application/json")],
                              body=error_json("invalid_json", "Malformed internal request body."))


class Invalidate(msgspec.Struct):
    key_ids: list[str] = msgspec.field(default_factory=list)
    config: bool = False


class Finish(msgspec.Struct):
    """Sent by the adapter when a request ends: the buckets it was admitted with (`x-nx-rl`)."""

    request_id: str
    buckets: list[Bucket]
    actual_tokens: int | None = None


class Running(msgspec.Struct):
    """Sent by the adapter every few seconds for each request it is still running: renew its slots."""

    request_id: str
    buckets: list[Bucket]


class Sidecar:
    def __init__(self, settings: Settings, log_port: int | None = None) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        secrets = load_secrets(settings)
        self.internal_token = secrets.internal_token
        self.cache = KeyCache(settings.key_cache_ttl_seconds)
        self._snapshot: Snapshot | None = None
        self.holds = Holds(self.engine, settings.hold_grace_seconds)
        self.reader = KeptReader(self.engine)  # the version poll's connection
        self.limits: LimitStore = MemoryStore()
        if settings.redis_url:
            self.limits = RedisStore(settings.redis_url)
        self.nonces = DatabaseNonces(self.engine)
        self.checker = Checker(secrets.key_pepper, secrets.internal_token, self.cache,
                               self.snapshot, lambda h: load_key(self.engine, h), self.limits, self.nonces,
                               Gate(self.engine), self.holds, RateLimitEvents(self.engine))
        self._poller: asyncio.Task[None] | None = None
        self._subscriber: asyncio.Task[None] | None = None
        self.endings = Endings(self.limits, self.engine)
        self.access_log = LogListener(self.endings, settings.sidecar_host,
                                      settings.sidecar_log_port if log_port is None else log_port)
        telemetry.COUNTERS.read = self.counters

    def snapshot(self) -> Snapshot:
        assert self._snapshot is not None, "snapshot is loaded at startup"
        return self._snapshot

    async def start(self) -> None:
        self._snapshot = await load_snapshot(self.engine)
        # Everything loaded so far (modules, engine, snapshot) lives as long as the process: out of
        # the collector's generations, a full collection no longer walks it (measured ~10 us/check).
        gc.freeze()
        await self.access_log.start()
        self._poller = asyncio.create_task(self._poll())
        if isinstance(self.limits, RedisStore):
            self._subscriber = asyncio.create_task(self._subscribe(self.limits))

    async def _subscribe(self, store: RedisStore) -> None:
        """Revocations and config changes from any control-plane replica reach every sidecar replica
        within one Redis round trip; if Redis is down, the key-cache TTL still bounds staleness."""
        while True:
            try:
                async with store.client.pubsub() as pubsub:
                    await pubsub.subscribe(INVALIDATE_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            await self._apply(msgspec.json.decode(message["data"], type=Invalidate))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("invalidation channel lost (%s); reconnecting", exc)
                await asyncio.sleep(1.0)

    async def _apply(self, request: Invalidate) -> None:
        self.cache.evict_keys(set(request.key_ids))
        if request.config:
            self._snapshot = await load_snapshot(self.engine)
            self.cache.clear()

    async def stop(self) -> None:
        await self.access_log.stop()
        for task in (self._poller, self._subscriber):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.holds.close()
        await self.nonces.close()
        await self.reader.close()
        if isinstance(self.limits, RedisStore):
            await self.limits.close()
        await self.engine.dispose()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                if await self.reader.read(current_version) != self.snapshot().version:
                    self._snapshot = await load_snapshot(self.engine)
                    self.cache.clear()
            except Exception:  # a database hiccup must not kill the sidecar; keep the last snapshot
                log.exception("snapshot refresh failed")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        body = await _read_body(receive)
        if path.startswith("/authz/"):
            # Decode only the headers the check reads (of the dozen or so Envoy sends).
            wanted: dict[str, str] = {}
            for name, value in scope["headers"]:
                field = _CHECK_HEADERS.get(name)
                if field is not None:
                    wanted[field] = value.decode("latin-1")
            original = path[len("/authz"):]
            if scope.get("query_string"):
                original += "?" + scope["query_string"].decode("latin-1")
            get = wanted.get
            begun = telemetry.begin(get("x-request-id", ""), scope["headers"], original)
            decision = await self.checker.check(CheckRequest(
                request_id=get("x-request-id", ""), method=scope["method"], path=original,
                authorization=get("authorization"), client_ip=get(Header.CLIENT_IP, ""),
                project=get("openai-project"), body=body, idempotency_key=get("idempotency-key"),
                signature=(get(Header.SIG_TIMESTAMP, ""), get(Header.SIG_NONCE, ""), get(Header.SIG_SIGNATURE, ""))))
            telemetry.observe(original, decision, begun)
            if decision.status == 503:  # Envoy would take a 5xx for our failure (core/contract.py)
                decision = Decision(status=SIDECAR_REFUSAL_503, headers=decision.headers, body=decision.body)
            await _respond(send, decision)
        elif path == "/metrics":
            await _respond(send, Decision(status=200, headers=[("content-type", CONTENT_TYPE)], body=exposition()))
        elif path == "/healthz":
            await _respond(send, Decision(status=200, headers=[("content-type", "application/json")],
                                          body=b'{"status":"ok"}'))
        elif path == "/internal/invalidate" and scope["method"] == "POST":
            await self._invalidate(scope, body, send)
        elif path == "/internal/finish" and scope["method"] == "POST":
            await self._finish(scope, body, send)
        elif path == "/internal/renew" and scope["method"] == "POST":
            await self._renew(scope, body, send)
        else:
            await _respond(send, Decision(status=404, headers=[], body=b""))

    def counters(self) -> dict[str, int]:
        """What /metrics reads from the sidecar's parts (telemetry.Counters)."""
        return {"nx_ratelimit_store_failures": self.limits.failures if isinstance(self.limits, RedisStore) else 0,
                "nx_ended_requests": self.endings.seen, "nx_ended_holds_released": self.endings.released_holds}

    def _internal(self, scope: Scope) -> bool:
        token = dict(scope["headers"]).get(_INTERNAL, b"")
        return hmac.compare_digest(token, self.internal_token.encode())

    async def _finish(self, scope: Scope, body: bytes, send: Send) -> None:
        if not self._internal(scope):
            await _respond(send, Decision(status=403, headers=[], body=b""))
            return
        # One report, or a batch of them (the adapter batches under load): one store call for all.
        try:
            requests = decode(body, type=Finish | list[Finish])
        except (ApiError, msgspec.DecodeError):
            await _respond(send, _BAD_INTERNAL_BODY)
            return
        await self.limits.finish([(r.request_id, r.buckets, r.actual_tokens)
                                  for r in (requests if isinstance(requests, list) else [requests])])
        await _respond(send, Decision(status=204, headers=[], body=b""))

    async def _renew(self, scope: Scope, body: bytes, send: Send) -> None:
        if not self._internal(scope):
            await _respond(send, Decision(status=403, headers=[], body=b""))
            return
        try:
            running = decode(body, type=list[Running])
        except (ApiError, msgspec.DecodeError):
            await _respond(send, _BAD_INTERNAL_BODY)
            return
        await self.limits.renew([(r.request_id, r.buckets) for r in running])
        await _respond(send, Decision(status=204, headers=[], body=b""))

    async def _invalidate(self, scope: Scope, body: bytes, send: Send) -> None:
        if not self._internal(scope):
            await _respond(send, Decision(status=403, headers=[], body=b""))
            return
        try:
            request = decode(body or b"{}", type=Invalidate)
        except (ApiError, msgspec.DecodeError):
            await _respond(send, _BAD_INTERNAL_BODY)
            return
        await self._apply(request)
        await _respond(send, Decision(status=204, headers=[], body=b""))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await serve_lifespan(receive, send, self.start, self.stop)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Send, decision: Decision) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in decision.headers]
    headers.append((b"content-length", str(len(decision.body)).encode()))
    await send({"type": "http.response.start", "status": decision.status, "headers": headers})
    await send({"type": "http.response.body", "body": decision.body})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="nx sidecar (Envoy ext_authz)")
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--log-port", type=int, default=None,
                        help="where Envoy's access log arrives (default: NX_SIDECAR_LOG_PORT)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"nx sidecar: {exc}") from None
    owner_only()  # the database, its WAL and anything else it creates: owner-only
    exit_unless_current(settings.effective_database_url, "sidecar")  # not on a schema it was not built for
    configure("sidecar", settings)  # JSON logs, traces when NX_OTEL_ENDPOINT is set (core/telemetry)
    uvicorn.run(Sidecar(settings, args.log_port), host=settings.sidecar_host, port=args.port or settings.sidecar_port,
                loop="uvloop", http="httptools", lifespan="on", access_log=False, proxy_headers=False,
                log_level="warning", log_config=None, timeout_graceful_shutdown=10)


if __name__ == "__main__":
    main()
