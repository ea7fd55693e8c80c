"""Database access: one async SQLAlchemy engine per process, SQLite (WAL) or PostgreSQL.

SQLite: WAL, `busy_timeout` 5 s and `BEGIN IMMEDIATE` for writes (`write_tx`), because a plain
`BEGIN` followed by a read upgrades to a write lock late and fails under contention (measured in
`stack-measurements.md`). Writers of this platform's processes queue on a lock file first
(`WriteLock`), so they meet SQLite's write lock free: SQLite's own busy handler waits by sleeping
1, 2, 5, 10 ... ms, far longer than the sub-millisecond transactions of the hot path hold the
lock. PostgreSQL: READ COMMITTED with conditional UPDATEs.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from core.settings import Settings

__all__ = ["WriteLock", "apply_schema", "checkpoint", "make_engine", "now_ms", "read_tx", "sqlite_connect",
           "write_lock_path", "write_tx"]


def now_ms() -> int:
    return int(time.time() * 1000)


def make_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        Path(url.removeprefix("sqlite+aiosqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 5.0}, **kwargs)
        _sqlite_pragmas(engine.sync_engine)
        return engine
    # Each process keeps few connections: the hot path's writes are group-committed, and a
    # PostgreSQL server's connection budget is shared by every process of every replica.
    kwargs.setdefault("pool_size", settings.database_pool_size)
    kwargs.setdefault("max_overflow", settings.database_pool_size)
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


WAL_AUTOCHECKPOINT_PAGES = 20_000
_PRAGMAS = ("journal_mode=WAL", "busy_timeout=5000", "foreign_keys=ON", "synchronous=NORMAL",
            # Checkpoints (copying the WAL into the database file, with an fsync) are the worker's
            # job, every second (control_plane/worker.py); a writer checkpoints on its own only if
            # the WAL passes ~80 MB, e.g. while no worker runs. SQLite's default, 1,000 pages, put
            # an fsync inside a request's commit about every 25 requests.
            f"wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")


def sqlite_connection(engine: AsyncEngine) -> sqlite3.Connection:
    """A plain `sqlite3` connection to the engine's file, with the engine's pragmas, for work that
    runs a whole batch of statements synchronously (core/groupcommit.py): aiosqlite hops
    threads on every cursor call, which made a settlement's dozen statements cost milliseconds.
    Autocommit mode: the caller issues BEGIN IMMEDIATE and COMMIT itself."""
    return sqlite_connect(engine.url.database or ":memory:")


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A plain `sqlite3` connection in autocommit mode with the platform's pragmas."""
    db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    for pragma in _PRAGMAS:
        db.execute(f"PRAGMA {pragma}")
    return db


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy not emit BEGIN itself: write_tx issues BEGIN IMMEDIATE explicitly.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for pragma in _PRAGMAS:
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def write_lock_path(engine: AsyncEngine | Engine) -> Path | None:
    """The lock file SQLite writers queue on; None for PostgreSQL or an in-memory database."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database + "-writelock")


class WriteLock:
    """A queue for the writers of one SQLite file, across processes: `flock` on a lock file.

    A blocked `flock` wakes the moment the holder releases it, where SQLite's busy handler would
    sleep for milliseconds. Every writer takes it before `BEGIN IMMEDIATE` and releases it after
    COMMIT, so it never waits for it while holding SQLite's lock (no deadlock). A writer that does
    not take it (a tool, a test) still meets SQLite's own lock, which stays the authority."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def acquire(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def try_acquire(self) -> bool:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


class _AsyncWriters:
    """The async writers of one process for one file: in turn (a lock file descriptor is one
    `flock` owner, so its holders must not overlap), then across processes on the lock file."""

    def __init__(self, path: Path) -> None:
        self.mutex = asyncio.Lock()
        self.file = WriteLock(path)
        self.loop = asyncio.get_running_loop()


_writers: dict[Path, _AsyncWriters] = {}


@asynccontextmanager
async def _queued(engine: AsyncEngine) -> AsyncIterator[None]:
    path = write_lock_path(engine)
    if path is None:
        yield
        return
    writers = _writers.get(path)
    if writers is None or writers.loop is not asyncio.get_running_loop():
        writers = _writers[path] = _AsyncWriters(path)
    async with writers.mutex:
        # Polled rather than blocking in a thread: a task cancelled while waiting must not go
        # on to take the lock with nobody left to release it.
        while not writers.file.try_acquire():
            await asyncio.sleep(0.0005)
        try:
            yield
        finally:
            writers.file.release()


@asynccontextmanager
async def write_tx(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that takes the write lock up front on SQLite; commits on success."""
    async with _queued(engine), engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
        async with conn.begin():
            yield conn


async def checkpoint(engine: AsyncEngine) -> None:
    """Copy what the WAL holds into the SQLite file (PASSIVE: never waits for readers or writers)."""
    if engine.dialect.name == "sqlite":
        async with engine.connect() as conn:
            await conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")


@asynccontextmanager
async def read_tx(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn, conn.begin():
        yield conn


async def apply_schema(engine: AsyncEngine) -> None:
    """Bring the engine's database to this code's schema: a fresh install from schema.sql, or the
    pending migrations (core/migrations). For tests and benchmarks; operators run `nx db upgrade`
    (or `nx up` / `nx init`), which also takes a backup first."""
    from core.migrations import upgrade

    await upgrade(engine.url.render_as_string(hide_password=False))
