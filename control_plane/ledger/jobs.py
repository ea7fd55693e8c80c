"""The worker's ledger job: release holds whose request never settled (its process died)."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.db import write_tx
from control_plane.ledger.holds import expire_holds

__all__ = ["ExpireHoldsJob"]

log = logging.getLogger("nx.worker.ledger")


class ExpireHoldsJob:
    """Each tick releases expired holds in batches of `batch` until none is left."""

    def __init__(self, engine: AsyncEngine, batch: int = 500) -> None:
        self.engine, self.batch = engine, batch

    async def __call__(self) -> None:
        while True:
            async with write_tx(self.engine) as conn:
                released = await expire_holds(conn, limit=self.batch)
            if released:
                log.info("released %d expired holds", released)
            if released < self.batch:
                return
