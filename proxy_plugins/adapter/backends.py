"""Calls to model backends: pooled HTTP clients, credentials, timeouts, SSE, error mapping.

Interface (what handlers use):

- `Backends.post(backend, path, payload, tenant) -> UpstreamReply`: one JSON call; a non-2xx status or a
  transport failure raises `ApiError` already mapped to the platform's codes (`map_status`).
- `async with Backends.stream(backend, path, payload, tenant) as events:` then `async for ev in events`:
  yields `SseEvent`s as the upstream sends them, nothing buffered. A non-2xx status raises before
  the first event; a cut or a stall mid-stream raises `ApiError` (`upstream_error`,
  `upstream_timeout`) from the iteration. Leaving the block (normally, on error or on
  cancellation after a client disconnect) closes the upstream connection at once.

`path` is relative to the backend's `base_url`, which ends in `/v1` by convention
(`chat/completions`, `embeddings`, `responses`, `messages`).

Why one `http1.Pool` per backend: each gets its own keep-alive connections and timeouts (connect;
read, which bounds the wait for the first byte and every gap between chunks; on `post` also a
total of `timeout_ms`), and a catalog change (new URL or timeout) makes a new pool while in-flight
calls finish on the old one. `http1` is a small asyncio + httptools client, several times cheaper
per request than httpx or aiohttp (docs/benchmarks.md, "Backend client").
Credentials: the value of the environment variable named by the backend's `api_key_env`, sent as
`Authorization: Bearer` (OpenAI protocols) or `x-api-key` (Anthropic). It is never logged, never
returned, and scrubbed from upstream error messages before they are relayed.

Tenant: calls to the platform's own local model servers (`NX_LOCAL_MODELS_BACKENDS`) carry the
organization they are for in `x-nx-tenant`, which their fair queue orders by (local_models/
fairqueue.py); no other backend is told anything about the platform's tenants.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

import msgspec

from core.contract import Header
from core.errors import ERRORS, ApiError
from core.snapshot import BackendRecord
from core.telemetry import tracing
from proxy_plugins.adapter import http1

__all__ = ["Backends", "SseEvent", "SseParser", "UpstreamFailure", "UpstreamReply", "map_status"]

log = logging.getLogger("nx.adapter")

ANTHROPIC_VERSION = "2023-06-01"
_MAX_ERROR_BODY = 64 * 1024
# Upstream statuses a client can act on keep their status; the rest become 502 (see map_status).
_KEPT = {400: "invalid_request_error", 404: "not_found", 409: "conflict", 413: "request_too_large",
         422: "unprocessable_entity", 429: "rate_limit_exceeded"}


class UpstreamFailure(ApiError):
    """A backend call that failed, as the client will see it (`code`), with what the attempt loop
    (attempts.py) decides a retry by: the upstream's status, or the transport failure's kind."""

    def __init__(self, code: str, message: str, param: str | None = None, *, upstream: int | None = None,
                 kind: str = "status", upstream_code: str | None = None, **headers: str) -> None:
        super().__init__(code, message, param, **headers)
        self.upstream = upstream
        self.upstream_code = upstream_code
        """The backend's own error code (e.g. `context_length_exceeded`), when it sent one."""
        self.kind = kind
        """`status` (the backend answered `upstream`), `connect`, `timeout`, `transport`, `config`."""


class SseEvent(msgspec.Struct, frozen=True):
    event: str | None
    data: bytes


class UpstreamReply(msgspec.Struct, frozen=True):
    status: int
    headers: dict[str, str]
    body: bytes


class SseParser:
    """Incremental `text/event-stream` parser: feed bytes as they arrive, get whole events."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buf += chunk
        if b"\r" in self._buf:
            self._buf = self._buf.replace(b"\r\n", b"\n")
        out: list[SseEvent] = []
        while (end := self._buf.find(b"\n\n")) >= 0:
            block, self._buf = self._buf[:end], self._buf[end + 2:]
            event: str | None = None
            data: list[bytes] = []
            for line in block.split(b"\n"):
                if line.startswith(b"data:"):
                    data.append(line[5:].removeprefix(b" "))
                elif line.startswith(b"event:"):
                    event = line[6:].strip().decode("utf-8", "replace")
            if data or event:
                out.append(SseEvent(event, b"\n".join(data)))
        return out


class _ErrorShape(msgspec.Struct):
    message: str | None = None
    code: str | int | None = None
    type: str | None = None
    param: str | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorShape | str | None = None


def _secret(backend: BackendRecord) -> str | None:
    return os.environ.get(backend.api_key_env) if backend.api_key_env else None


def _scrub(text: str, backend: BackendRecord) -> str:
    secret = _secret(backend)
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text[:2000]


def map_status(backend: BackendRecord, status: int, body: bytes, headers: dict[str, str]) -> ApiError:
    """An upstream error reply as the platform's error (OpenAI and Anthropic error bodies both
    keep `error.message`). The upstream's own message is kept, minus any credential."""
    detail = _ErrorShape()
    with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
        env = msgspec.json.decode(body[:_MAX_ERROR_BODY], type=_ErrorEnvelope)
        detail = env.error if isinstance(env.error, _ErrorShape) else _ErrorShape(message=env.error)
    message = _scrub(detail.message or f"The upstream backend answered with status {status}.", backend)
    if status in (401, 403, 402):
        # The platform's credential or account is at fault, not the client's: saying 401 would make
        # the SDK report the client's key as invalid.
        log.error("backend %s refused the platform's credentials or account (status %s): %s",
                  backend.id, status, message)
        return UpstreamFailure("upstream_error", "The upstream backend refused the platform's request; "
                               "the operator has been notified.", upstream=status)
    if status in _KEPT:
        code = detail.code if isinstance(detail.code, str) and detail.code in ERRORS \
            and ERRORS[detail.code].status == status else _KEPT[status]
        extra: dict[str, str] = {}
        if status == 429:
            for name in ("retry-after", "retry-after-ms"):
                if name in headers:
                    extra[name] = headers[name]
        return UpstreamFailure(code, message, detail.param, upstream=status, upstream_code=_code(detail), **extra)
    if 400 <= status < 500:
        return UpstreamFailure("invalid_request_error", message, detail.param, upstream=status,
                               upstream_code=_code(detail))
    return UpstreamFailure("upstream_error", f"The upstream backend failed (status {status}): {message}",
                           upstream=status)


def _code(detail: _ErrorShape) -> str | None:
    return detail.code if isinstance(detail.code, str) else detail.type


def _transport_error(backend: BackendRecord, exc: Exception) -> UpstreamFailure:
    if isinstance(exc, http1.ConnectError):  # refused, unresolvable, TLS, connect or pool timeout
        log.warning("backend %s unreachable: %s", backend.id, type(exc).__name__)
        return UpstreamFailure("upstream_unavailable", "The model backend is unavailable; please retry.",
                               kind="connect")
    if isinstance(exc, http1.ReadTimeout | TimeoutError):
        return UpstreamFailure("upstream_timeout", "The model backend did not answer in time.", kind="timeout")
    log.warning("backend %s transport failure: %r", backend.id, exc)
    return UpstreamFailure("upstream_error", "The connection to the model backend failed.", kind="transport")


TENANT_HEADER = Header.TENANT


class Backends:
    """Pooled HTTP clients keyed by backend; `aclose()` at shutdown."""

    def __init__(self, max_connections: int = 1000, tenant_backends: frozenset[str] = frozenset()) -> None:
        self._pools: dict[tuple[str, str, int, int], http1.Pool] = {}
        self._max_connections = max_connections
        self.tenant_backends = tenant_backends
        """Backend ids that are told the organization of each call (the local model servers)."""

    def pool(self, backend: BackendRecord) -> http1.Pool:
        key = (backend.id, backend.base_url, backend.timeout_ms, backend.connect_timeout_ms)
        pool = self._pools.get(key)
        if pool is None:
            pool = http1.Pool(backend.base_url, connect_timeout=backend.connect_timeout_ms / 1000,
                              read_timeout=backend.timeout_ms / 1000, max_connections=self._max_connections,
                              max_idle=200, keepalive_expiry=30)
            self._pools[key] = pool
        return pool

    def headers(self, backend: BackendRecord, stream: bool, tenant: str = "") -> dict[str, str]:
        headers = {"content-type": "application/json",
                   "accept": "text/event-stream" if stream else "application/json"}
        if tenant and backend.id in self.tenant_backends:
            headers[TENANT_HEADER] = tenant
        if backend.protocol == "anthropic":
            headers["anthropic-version"] = ANTHROPIC_VERSION
        if backend.api_key_env:
            secret = _secret(backend)
            if not secret:
                log.error("backend %s: environment variable %s is not set", backend.id, backend.api_key_env)
                raise UpstreamFailure("upstream_unavailable", "The model backend is not configured; "
                                      "the operator has been notified.", kind="config")
            if backend.protocol == "anthropic":
                headers["x-api-key"] = secret
            else:
                headers["authorization"] = f"Bearer {secret}"
        tracing.inject(headers)  # traceparent: the backend call joins the request's trace
        return headers

    async def post(self, backend: BackendRecord, path: str, payload: bytes, tenant: str = "") -> UpstreamReply:
        pool = self.pool(backend)
        headers = self.headers(backend, False, tenant)
        try:
            async with asyncio.timeout(backend.timeout_ms / 1000):
                resp = await pool.request("POST", path, payload, headers)
                try:
                    body = await resp.read()
                finally:
                    resp.close()
        except (http1.HttpError, TimeoutError) as exc:
            raise _transport_error(backend, exc) from None
        if resp.status >= 300:
            raise map_status(backend, resp.status, body, resp.headers)
        return UpstreamReply(resp.status, resp.headers, body)

    @contextlib.asynccontextmanager
    async def stream(self, backend: BackendRecord, path: str, payload: bytes,
                     tenant: str = "") -> AsyncIterator[AsyncIterator[SseEvent]]:
        pool = self.pool(backend)
        headers = self.headers(backend, True, tenant)
        try:
            resp = await pool.request("POST", path, payload, headers)
        except http1.HttpError as exc:
            raise _transport_error(backend, exc) from None
        try:
            if resp.status >= 300:
                try:
                    body = await resp.read()
                except http1.HttpError:
                    body = b""
                raise map_status(backend, resp.status, body, resp.headers)
            yield _events(backend, resp)
        finally:
            # Aborts the socket unless the response was read to its end (then it is kept alive).
            resp.close()

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()
        self._pools.clear()


async def _events(backend: BackendRecord, resp: http1.Response) -> AsyncIterator[SseEvent]:
    parser = SseParser()
    try:
        async for chunk in resp.chunks():
            for event in parser.feed(chunk):
                yield event
    except http1.ReadTimeout:
        raise ApiError("upstream_timeout", "The model backend stalled mid-stream.") from None
    except http1.HttpError as exc:
        log.warning("backend %s: stream cut: %r", backend.id, exc)
        raise ApiError("upstream_error", "The model backend's stream was cut off.") from None
