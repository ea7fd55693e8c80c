"""Tell the sidecar that a request ended, so its rate limiter frees the concurrency slot and
replaces the token estimate with the real count (`POST /internal/finish`).

The sidecar hands its buckets over in `x-nx-rl` (set after its check; clients cannot send
`x-nx-*`, Envoy strips them). The report goes out in the background after the answer: it never
delays a client, and a lost report only holds a slot until the limiter's lease expires.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import msgspec

__all__ = ["Finisher"]

log = logging.getLogger("nx.adapter")


class Finisher:
    def __init__(self, sidecar_url: str, internal_token: str) -> None:
        self._client = httpx.AsyncClient(base_url=sidecar_url, timeout=2.0, trust_env=False,
                                         headers={"x-nx-internal": internal_token})
        self._pending: set[asyncio.Task[None]] = set()

    def report(self, request_id: str, buckets_header: str | None, actual_tokens: int) -> None:
        if not buckets_header:
            return
        try:
            buckets: Any = msgspec.json.decode(buckets_header)
        except msgspec.DecodeError:
            log.error("request %s: malformed x-nx-rl header", request_id)
            return
        body = msgspec.json.encode({"request_id": request_id, "buckets": buckets, "actual_tokens": actual_tokens})
        task = asyncio.create_task(self._send(request_id, body))
        self._pending.add(task)  # a reference, or the task may be collected before it runs
        task.add_done_callback(self._pending.discard)

    async def _send(self, request_id: str, body: bytes) -> None:
        try:
            reply = await self._client.post("/internal/finish", content=body,
                                            headers={"content-type": "application/json"})
            if reply.status_code >= 300:
                log.warning("request %s: sidecar refused the finish report (%s)", request_id, reply.status_code)
        except httpx.HTTPError as exc:
            log.warning("request %s: finish report failed: %r", request_id, exc)

    async def aclose(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=2.0)
        await self._client.aclose()
