"""Events the sidecar records: `request.rate_limited`, at most one per key per limit per minute.

A flood of refused requests must not become a flood of database writes: an in-memory set drops
repeats within the minute on this replica, and the outbox's dedup key drops them across replicas.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import write_tx
from core.events.catalog import RequestRateLimited
from core.events.outbox import record_event
from core.snapshot import KeyRecord
from proxy_plugins.sidecar.ratelimit import WINDOW_MS, Denial, retry_after_seconds

__all__ = ["RateLimitEvents"]

log = logging.getLogger("nx.sidecar.events")
_LIMIT_NAME = {"requests": "requests", "tokens": "tokens", "concurrent": "concurrency"}


class RateLimitEvents:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._seen: set[str] = set()
        self._minute = 0

    async def __call__(self, key: KeyRecord, project: str, req: object, denial: Denial,
                       model: str | None) -> None:
        minute = int(time.time() // 60)
        if minute != self._minute:
            self._seen.clear()
            self._minute = minute
        b = denial.bucket
        dedup = f"rate_limited:{key.id}:{b.scope}:{b.kind}:{minute}"
        if dedup in self._seen:
            return
        self._seen.add(dedup)
        data = RequestRateLimited(
            request_id=getattr(req, "request_id", ""), key_id=key.id, project_id=project or None,
            limit=_LIMIT_NAME[b.kind], limit_value=b.limit,  # type: ignore[arg-type]
            window_seconds=WINDOW_MS // 1000, retry_after_seconds=retry_after_seconds(denial.retry_after_ms),
            path=getattr(req, "path", ""), model=model)
        try:
            async with write_tx(self.engine) as conn:
                await record_event(conn, key.org_id, "request.rate_limited", data, project_id=project or None,
                                   dedup_key=dedup)
        except Exception:  # an event must never turn a 429 into a 500
            log.exception("could not record request.rate_limited")
