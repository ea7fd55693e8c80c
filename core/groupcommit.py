"""Group commit: many requests' small writes share one database transaction.

One transaction per request caps a process at a few hundred requests per second (SQLite has one
writer; every commit is an fsync-bound round trip), so the hot path's durable writes (money holds
in the sidecar, settlements in the adapter) go through a `GroupCommit`. Each caller still gets its
own result only after the transaction holding its write has committed: durability per request is
unchanged, only the commits are shared.

Batching is natural, not timed: while one transaction runs, new work queues up, and the next
transaction takes all of it (up to `max_batch`). At low load a batch is one item and nothing waits;
under load batches grow exactly as much as the database is slower than the arrivals.

A batch first runs every item in plain sequence. If one of them fails (a refusal: insufficient
funds), the transaction is rolled back and the batch runs again with each item inside its own
SAVEPOINT, so that item's refusal rolls back only that item; an error of the transaction itself
fails every item of the batch.

The batch's statements run on the driver itself (core/rawsql.py), not through
SQLAlchemy's per-statement layers. On SQLite a whole batch runs on one synchronous `sqlite3`
connection, on the event loop's thread (aiosqlite would hop threads on every cursor call, dozens
per settlement); on PostgreSQL on a pooled asyncpg connection, in an asyncpg transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.db import WriteLock, sqlite_connection, write_lock_path
from core.rawsql import AsyncpgConnection, SqliteConnection
from core.telemetry.metrics import group_latency, groupcommit_name, observe_batch

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("nx.groupcommit")


class GroupCommit(Generic[T, R]):
    def __init__(self, engine: AsyncEngine, work: Callable[[AsyncConnection, T], Awaitable[R]] | None = None,
                 *, work_many: Callable[[AsyncConnection, list[T]], Awaitable[list[R | BaseException]]] | None = None,
                 max_batch: int = 256, order: Callable[[T], str] | None = None) -> None:
        """`work` runs once per item; or `work_many` once per batch, returning one outcome per item
        (an exception value refuses that item, which must then have written nothing). Given both,
        `work_many` is the optimistic path (a set-based batch that raises when it is not plain) and
        `work` the per-item one the batch is rerun with, each item in its own savepoint."""
        if work is None and work_many is None:
            raise TypeError("give work, work_many or both")
        self.engine = engine
        self.work = work
        self.work_many = work_many
        self.max_batch = max_batch
        self.order = order
        """Sort key applied within a batch so concurrent batches take row locks in one order."""
        self._sqlite = sqlite_connection(engine) if engine.dialect.name == "sqlite" else None
        lock_path = write_lock_path(engine)
        self._lock = WriteLock(lock_path) if lock_path is not None else None
        self._pg: AsyncConnection | None = None
        """PostgreSQL: the connection this group commit keeps checked out (one batch at a time),
        so a batch pays no pool checkout and no pre-ping round trip."""
        self._facts: dict[tuple[Any, ...], Any] = {}
        """Rows that never change once written, kept across batches (`rawsql.facts_of`)."""
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0
        self.name = groupcommit_name(work or work_many)  # the metrics' label (core/telemetry)
        self._latency = group_latency(self.name)

    async def submit(self, item: T) -> R:
        """Run `work(conn, item)` in a shared transaction; return its result once committed."""
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._wakeup.set()
        with self._latency():  # wait for a batch + its transaction (core/telemetry)
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
        if self._sqlite is not None:
            self._sqlite.close()
        await self._discard_pg()
        if self._lock is not None:
            self._lock.close()

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
        started = time.perf_counter()
        try:
            if self._sqlite is not None:
                outcomes = await self._run_on_sqlite(self._sqlite, items)
            else:
                outcomes = await self._run_on_asyncpg(items)
        except Exception as exc:
            log.exception("group commit of %d items failed", len(batch))
            outcomes = [exc] * len(batch)
        observe_batch(self.name, len(batch), time.perf_counter() - started)
        self.batches += 1
        self.items += len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def _optimistic(self, conn: AsyncConnection, items: list[T]) -> list[R | BaseException] | None:
        """Every item without savepoints (two statements fewer each), or None if one of them
        failed: the caller then rolls the transaction back and runs `_isolated`. Refusals are
        rare on the hot path (an unaffordable request), so the common batch pays nothing for them."""
        if self.work_many is not None:
            try:
                return await self.work_many(conn, items)
            except Exception as exc:
                log.debug("batch of %d not plain (%s): rerun item by item", len(items), exc)
                return None
        outcomes: list[R | BaseException] = []
        for item in items:
            try:
                outcomes.append(await self._one(conn, item))
            except Exception:
                return None
        return outcomes

    async def _one(self, conn: AsyncConnection, item: T) -> R:
        if self.work is not None:
            return await self.work(conn, item)
        assert self.work_many is not None
        outcome = (await self.work_many(conn, [item]))[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _isolated(self, conn: AsyncConnection, items: list[T]) -> list[R | BaseException]:
        outcomes: list[R | BaseException] = []
        for item in items:
            try:
                async with conn.begin_nested():
                    outcomes.append(await self._one(conn, item))
            except Exception as exc:  # this item only; its savepoint was rolled back
                outcomes.append(exc)
        return outcomes

    async def _begin_on_asyncpg(self) -> tuple[Any, Any]:
        """The kept connection and its begun transaction. BEGIN doubles as the pool's pre-ping: if
        it fails (the server closed the connection since the last batch: restarted, or the
        connection was terminated), nothing was written, so the batch starts again on a fresh one."""
        for attempt in (1, 2):
            if self._pg is None:
                self._pg = await self.engine.connect()
            driver = (await self._pg.get_raw_connection()).driver_connection
            assert driver is not None
            try:
                tx = driver.transaction()  # raises at once if asyncpg already saw it closed
                await tx.start()
                return driver, tx
            except Exception:
                await self._discard_pg()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _discard_pg(self) -> None:
        conn, self._pg = self._pg, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.invalidate()
                await conn.close()

    async def _run_on_asyncpg(self, items: list[T]) -> list[R | BaseException]:
        driver, tx = await self._begin_on_asyncpg()
        try:
            raw = cast(AsyncConnection, AsyncpgConnection(driver, self._facts))
            try:
                outcomes = await self._optimistic(raw, items)
                if outcomes is None:
                    await tx.rollback()
                    tx = driver.transaction()
                    await tx.start()
                    outcomes = await self._isolated(raw, items)
            except BaseException:
                await tx.rollback()
                raise
            await tx.commit()
            return outcomes
        except BaseException:
            # The connection may be broken (server restarted, network): the next batch takes a
            # fresh one from the pool instead of failing on this one again.
            await self._discard_pg()
            raise

    async def _run_on_sqlite(self, db: sqlite3.Connection, items: list[T]) -> list[R | BaseException]:
        """The batch runs on the event loop's own thread: its statements take microseconds each,
        less than the two thread switches a worker thread would cost per batch."""
        lock = self._lock
        if lock is not None and not lock.try_acquire():
            # Another process is writing: wait for it in a thread, not on the loop.
            waiting = asyncio.ensure_future(asyncio.to_thread(lock.acquire))
            try:
                await asyncio.shield(waiting)
            except asyncio.CancelledError:  # shutting down: give the lock back once it is ours
                waiting.add_done_callback(lambda _: lock.release())
                raise
        try:
            raw = cast(AsyncConnection, SqliteConnection(db, self._facts))
            db.execute("BEGIN IMMEDIATE")
            try:
                outcomes = _complete(self._optimistic(raw, items))
                if outcomes is None:
                    db.execute("ROLLBACK")
                    db.execute("BEGIN IMMEDIATE")
                    outcomes = _complete(self._isolated(raw, items))
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return outcomes
        finally:
            if lock is not None:
                lock.release()


def _complete(coro: Coroutine[Any, Any, R]) -> R:
    """Run a coroutine that never suspends (statements on a synchronous connection) to its end,
    without the cost of an event loop per batch."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(R, done.value)
    coro.close()
    raise RuntimeError("a group-commit batch on SQLite suspended; its work must not await I/O")
