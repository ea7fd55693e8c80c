"""Group commit: many requests' small writes share one database transaction.

One transaction per request caps a process at a few hundred requests per second (SQLite has one
writer; every commit is an fsync-bound round trip), so the hot path's durable writes (money holds
in the sidecar, settlements in the adapter) go through a `GroupCommit`. Each caller still gets its
own result only after the transaction holding its write has committed: durability per request is
unchanged, only the commits are shared.

Batching is natural, not timed: while one transaction runs, new work queues up, and the next
transaction takes all of it (up to `max_batch`). At low load a batch is one item and nothing waits;
under load batches grow exactly as much as the database is slower than the arrivals.

Each item runs inside its own SAVEPOINT, so one item's refusal (insufficient funds) rolls back only
that item; an error of the transaction itself fails every item of the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_plane.db import write_tx

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("nx.groupcommit")


class GroupCommit(Generic[T, R]):
    def __init__(self, engine: AsyncEngine, work: Callable[[AsyncConnection, T], Awaitable[R]],
                 *, max_batch: int = 256, order: Callable[[T], str] | None = None) -> None:
        self.engine = engine
        self.work = work
        self.max_batch = max_batch
        self.order = order
        """Sort key applied within a batch so concurrent batches take row locks in one order."""
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        """Run `work(conn, item)` in a shared transaction; return its result once committed."""
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wakeup.set()
        return await future

    async def close(self, drain_seconds: float = 10.0) -> None:
        """Flush what is queued (shutdown: pending writes are committed, not dropped), then stop."""
        deadline = asyncio.get_running_loop().time() + drain_seconds
        while self._queue and self._runner is not None and not self._runner.done():
            if asyncio.get_running_loop().time() > deadline:
                log.error("group commit closed with %d items still queued", len(self._queue))
                break
            await asyncio.sleep(0.01)
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        if self.order is not None:
            batch = sorted(batch, key=lambda pair: self.order(pair[0]))  # type: ignore[misc]
        outcomes: list[R | BaseException] = []
        try:
            async with write_tx(self.engine) as conn:
                for item, _ in batch:
                    try:
                        async with conn.begin_nested():
                            outcomes.append(await self.work(conn, item))
                    except Exception as exc:  # this item only; its savepoint was rolled back
                        outcomes.append(exc)
        except Exception as exc:
            log.exception("group commit of %d items failed", len(batch))
            outcomes = [exc] * len(batch)
        self.batches += 1
        self.items += len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
