"""Tell the sidecar that requests ended, so its rate limiter frees their concurrency slots and
replaces their token estimates with the real counts (`POST /internal/finish`).

The sidecar hands its buckets over in `x-nx-rl` (set after its check; clients cannot send
`x-nx-*`, Envoy strips them). Reports go out in the background after the answers, batched: one
HTTP call carries every report that accumulated while the previous call was in flight, so under
load this costs the sidecar a fraction of a round trip per request. A lost report only holds a
slot until the limiter's lease expires.

A concurrency slot is a short lease (`SLOT_LEASE_MS`): while a request runs (a long stream, a
JSON request whose client left), this process renews the slots of all its running requests in one
call every `SLOT_RENEW_MS` (`POST /internal/renew`). If this process dies, nothing renews them and
they free themselves within a lease, unless Envoy's access log released them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec

from core.contract import SLOT_RENEW_MS, Header
from proxy_plugins.adapter import http1

__all__ = ["Finisher"]

log = logging.getLogger("nx.adapter")

MAX_BATCH = 500


class Finisher:
    def __init__(self, sidecar_url: str, internal_token: str) -> None:
        self._url = sidecar_url
        self._headers = {Header.INTERNAL: internal_token, "content-type": "application/json"}
        self._pool: http1.Pool | None = None  # made on first use: it needs the running loop
        self._queue: list[dict[str, Any]] = []
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._running: dict[str, bytes] = {}
        """Requests this process is running that hold a concurrency slot -> their `x-nx-rl`."""
        self._renewer: asyncio.Task[None] | None = None

    def running(self, request_id: str, buckets_header: bytes | None) -> None:
        """A request started: keep its concurrency slots renewed until `report`."""
        if buckets_header is None or b'"concurrent"' not in buckets_header:
            return
        self._running[request_id] = buckets_header
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        while self._running:
            await asyncio.sleep(SLOT_RENEW_MS / 1000)
            batch = [{"request_id": rid, "buckets": msgspec.Raw(rl)} for rid, rl in self._running.items()]
            for start in range(0, len(batch), MAX_BATCH):
                await self._send(batch[start:start + MAX_BATCH], "/internal/renew")

    def report(self, request_id: str, buckets_header: str | None, actual_tokens: int) -> None:
        self._running.pop(request_id, None)
        if not buckets_header:
            return
        try:
            buckets: Any = msgspec.json.decode(buckets_header)
        except msgspec.DecodeError:
            log.error("request %s: malformed x-nx-rl header", request_id)
            return
        self._queue.append({"request_id": request_id, "buckets": buckets, "actual_tokens": actual_tokens})
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._run())
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                await self._send(batch)

    async def _send(self, batch: list[dict[str, Any]], path: str = "/internal/finish") -> None:
        if self._pool is None:
            self._pool = http1.Pool(self._url, connect_timeout=2.0, read_timeout=2.0, max_connections=4,
                                    max_idle=4, headers=self._headers)
        try:
            async with asyncio.timeout(2.0):
                reply = await self._pool.request("POST", path, msgspec.json.encode(batch))
                try:
                    await reply.read()
                finally:
                    reply.close()
            if reply.status >= 300:
                log.warning("sidecar refused %d reports to %s (%s)", len(batch), path, reply.status)
        except (http1.HttpError, TimeoutError, OSError) as exc:
            log.warning("%d reports to %s failed: %r", len(batch), path, exc)

    async def aclose(self) -> None:
        for _ in range(200):  # flush what is queued (shutdown), at most about two seconds
            if not self._queue:
                break
            await asyncio.sleep(0.01)
        for task in (self._sender, self._renewer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._pool is not None:
            await self._pool.aclose()
