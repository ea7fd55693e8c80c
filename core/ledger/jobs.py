"""The worker's ledger job: release holds whose request never settled (its process died)."""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import now_ms, write_tx
from core.ledger.holds import expire_holds

__all__ = ["ExpireHoldsJob"]

log = logging.getLogger("nx.worker.ledger")


class ExpireHoldsJob:
    """Each tick releases expired holds in batches of `batch` until none is left."""

    def __init__(self, engine: AsyncEngine, batch: int = 500) -> None:
        self.engine, self.batch = engine, batch

    async def __call__(self) -> None:
        while True:
            # Read first: on most ticks nothing has expired, and the write lock is the hot path's.
            async with self.engine.connect() as conn:
                due = (await conn.execute(text(
                    "SELECT 1 FROM ledger_holds WHERE status = 'open' AND expires_at <= :now LIMIT 1"),
                    {"now": now_ms()})).first()
            if due is None:
                return
            async with write_tx(self.engine) as conn:
                released = await expire_holds(conn, limit=self.batch)
            if released:
                log.info("released %d expired holds", released)
            if released < self.batch:
                return
