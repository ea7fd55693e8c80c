"""Settlement that cannot be lost, and holds that live as long as their streams (issue 12, 4-6).

Every adapter process runs two loops beside its requests:
- **leases** (`hold_renew_seconds`): the holds of the streams it is serving (journal.live) get
  `expires_at` moved to now + their backend's timeout + `hold_grace_seconds`, in one UPDATE per
  distinct timeout. A stream's timeout applies between chunks, so without this a long stream
  outlived its hold and was served free (finding 4). The worker's expiry remains the last resort
  for holds whose adapter is gone; the late settlement below charges what such a request served.
- **the settler** (`journal_settle_seconds`, and once at start): charges every request that was
  served and not settled, at the hold's price card, exactly once (settling is idempotent by
  request id: a hold settles once, `hold_already_resolved` means it already has):
  * this process's own, whose settlement the database refused when the stream ended (finding 5:
    the stream went out while the database was unreachable; it is charged when it returns);
  * those in the journal files of adapter processes that died (finding 6: kill -9 mid-stream): a
    file whose `flock` can be taken has no living writer. Its requests are charged what their
    last `S` line says was sent, and the file is removed once all are settled.
  Both settle with `late=True`: a hold that expired meanwhile is still charged (promotional credit
  and wallet as far as they reach, the rest to the receivable).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from core import ledger
from core.db import now_ms, write_tx
from core.served import GLOB, Unsettled, read_unsettled
from proxy_plugins.adapter.journal import Journal

__all__ = ["Settler"]

log = logging.getLogger("nx.adapter.settler")


class Settler:
    def __init__(self, engine: AsyncEngine, journal: Journal, *, grace_s: float, renew_s: float,
                 settle_s: float) -> None:
        self.engine, self.journal = engine, journal
        self.grace_ms, self.renew_s, self.settle_s = int(grace_s * 1000), renew_s, settle_s
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._every(self.renew_s, self.renew)),
                       asyncio.create_task(self._every(self.settle_s, self.settle, at_once=True))]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _every(self, seconds: float, job: object, at_once: bool = False) -> None:
        assert callable(job)
        if not at_once:
            await asyncio.sleep(seconds)
        while True:
            try:
                await job()
            except Exception:  # the database is down: next time
                log.warning("%s failed; retrying in %.1fs", getattr(job, "__name__", "job"), seconds, exc_info=True)
            await asyncio.sleep(seconds)

    async def renew(self) -> None:
        """Extend the holds of the streams being served now."""
        by_timeout: dict[int, list[str]] = {}
        for u in self.journal.live.values():
            by_timeout.setdefault(u.timeout_ms, []).append(u.request_id)
        if not by_timeout:
            return
        now = now_ms()
        async with write_tx(self.engine) as conn:
            for timeout_ms, ids in sorted(by_timeout.items()):
                await ledger.renew_holds(conn, sorted(ids), now + timeout_ms + self.grace_ms)

    async def settle(self) -> None:
        if self.journal.pending:
            settled = await self._settle(list(self.journal.pending.values()))
            for request_id in settled:
                self.journal.done(request_id)
        for path in sorted(self.journal.directory.glob(GLOB)):
            if path != self.journal.path:
                await self._settle_file(path)

    async def _settle_file(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return  # another adapter's settler finished it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # its adapter is alive (or another settler is at it)
            with os.fdopen(os.dup(fd), "rb") as f:
                unsettled = read_unsettled(f.read())
            settled = await self._settle(list(unsettled.values())) if unsettled else set()
            if settled >= set(unsettled):
                path.unlink(missing_ok=True)
            else:
                log.warning("journal %s: %d requests left to settle", path.name, len(set(unsettled) - settled))
        finally:
            os.close(fd)

    async def _settle(self, items: list[Unsettled]) -> set[str]:
        """Settle in one transaction; returns the request ids that need nothing more (charged now
        or before). Raises when the database cannot be reached: all of them stay for next time."""
        async with write_tx(self.engine) as conn:
            results = await ledger.settle_many(conn, [(u.request_id, _usage(u)) for u in items], late=True)
        for u, result in zip(items, results, strict=True):
            if isinstance(result, ledger.LedgerError):
                # Settled already (its adapter's commit ran after all), released, or unknown.
                log.info("journal: %s needs no settlement (%s)", u.request_id, result.code)
            else:
                log.warning("journal: settled %s after the fact: %d output tokens, %d nano-dollars (%d owed)",
                            u.request_id, u.output_tokens, result.charged, result.receivable)
        return {u.request_id for u in items}


def _usage(u: Unsettled) -> ledger.Usage:
    f = u.usage()
    return ledger.Usage(status=f.status, input_tokens=f.input_tokens, cached_tokens=f.cached_tokens,
                        output_tokens=f.output_tokens)
