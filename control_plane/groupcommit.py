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

On SQLite a whole batch runs in ONE worker-thread hop, on a synchronous pysqlite connection
presented to the (async) domain code through `_SyncAsAsync`: aiosqlite would hop threads on every
cursor call, dozens per settlement. PostgreSQL (asyncpg, no threads) uses the async engine as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection, Engine, NestedTransaction
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_plane.db import make_sync_sqlite_engine, write_tx

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("nx.groupcommit")


class _AsyncNested:
    def __init__(self, tx: NestedTransaction) -> None:
        self._tx = tx

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, _exc: BaseException | None,
                        _tb: TracebackType | None) -> None:
        if kind is None:
            self._tx.commit()
        else:
            self._tx.rollback()


class _SyncAsAsync:
    """The slice of AsyncConnection the hot-path domain code uses, over a synchronous connection.
    Its coroutines never suspend, so a batch runs to completion inside the worker thread."""

    def __init__(self, sync: Connection) -> None:
        self._sync = sync
        self.dialect = sync.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self._sync.execute(statement, parameters)

    def begin_nested(self) -> _AsyncNested:
        return _AsyncNested(self._sync.begin_nested())


class GroupCommit(Generic[T, R]):
    def __init__(self, engine: AsyncEngine, work: Callable[[AsyncConnection, T], Awaitable[R]],
                 *, max_batch: int = 256, order: Callable[[T], str] | None = None) -> None:
        self.engine = engine
        self.work = work
        self.max_batch = max_batch
        self.order = order
        """Sort key applied within a batch so concurrent batches take row locks in one order."""
        self._sync: Engine | None = make_sync_sqlite_engine(engine) if engine.dialect.name == "sqlite" else None
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
        if self._sync is not None:
            self._sync.dispose()

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
        items = [item for item, _ in batch]
        try:
            if self._sync is not None:
                outcomes = await asyncio.to_thread(self._run_in_thread, items)
            else:
                async with write_tx(self.engine) as conn:
                    outcomes = await self._items(conn, items)
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

    async def _items(self, conn: AsyncConnection, items: list[T]) -> list[R | BaseException]:
        outcomes: list[R | BaseException] = []
        for item in items:
            try:
                async with conn.begin_nested():
                    outcomes.append(await self.work(conn, item))
            except Exception as exc:  # this item only; its savepoint was rolled back
                outcomes.append(exc)
        return outcomes

    def _run_in_thread(self, items: list[T]) -> list[R | BaseException]:
        assert self._sync is not None
        loop = asyncio.new_event_loop()
        try:
            with self._sync.connect() as sync:
                sync = sync.execution_options(sqlite_begin="IMMEDIATE")
                with sync.begin():
                    return loop.run_until_complete(self._items(cast(AsyncConnection, _SyncAsAsync(sync)), items))
        finally:
            loop.close()
