"""The migration runner's own connection: the database driver itself, one connection, no pool.

Why not the platform's SQLAlchemy engine: a SQLite table rebuild needs `PRAGMA foreign_keys=OFF`
outside any transaction (the engine's connections begin one implicitly), and the upgrade holds one
session-level lock for its whole run (PostgreSQL's advisory lock belongs to a connection, so it
must be the connection every migration runs on). Statements use `?` placeholders on both drivers.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
from pathlib import Path
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]

__all__ = ["LOCK_KEY", "Db", "PgDb", "SqliteDb", "connect", "dsn_of"]

# The advisory lock key schema changes serialise on (the key earlier releases' start-up used too,
# so an old process applying its schema and a new one upgrading never overlap).
LOCK_KEY = 727274
_PARAM = re.compile(r"\?")


class Db(Protocol):
    dialect: str

    async def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]: ...

    async def execute(self, sql: str, *args: Any) -> None: ...

    async def execute_count(self, sql: str) -> int:
        """Run a data statement; how many rows it changed."""

    async def begin(self) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def lock(self) -> None:
        """Wait for the database-wide migration lock (held until `unlock` or `close`)."""

    async def unlock(self) -> None: ...

    async def close(self) -> None: ...


class SqliteDb:
    """A plain `sqlite3` connection in autocommit mode (BEGIN and COMMIT are issued explicitly)."""

    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        from core.db import sqlite_connect  # core.db imports this package lazily; keep it one-way here

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite_connect(path)
        self._lock_fd: int | None = None

    async def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql, args).fetchall()]

    async def execute(self, sql: str, *args: Any) -> None:
        self.conn.execute(sql, args)

    async def execute_count(self, sql: str) -> int:
        return int(self.conn.execute(sql).rowcount)

    async def begin(self) -> None:
        # IMMEDIATE: the write lock up front, so a concurrent writer waits rather than failing late.
        self.conn.execute("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        self.conn.execute("COMMIT")

    async def rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    async def lock(self) -> None:
        # A lock file beside the database, as the writers' queue (core/db.py::WriteLock). Polled so
        # that several upgrades in one event loop (tests) cannot block each other's thread.
        fd = os.open(self.path + "-migratelock", os.O_RDWR | os.O_CREAT, 0o600)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.01)
        self._lock_fd = fd

    async def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    async def close(self) -> None:
        await self.unlock()
        self.conn.close()


class PgDb:
    """One asyncpg connection; transactions are explicit BEGIN/COMMIT statements."""

    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self._locked = False

    @staticmethod
    def _numbered(sql: str) -> str:
        count = iter(range(1, 1 << 30))
        return _PARAM.sub(lambda _: f"${next(count)}", sql)

    async def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.conn.fetch(self._numbered(sql), *args)]

    async def execute(self, sql: str, *args: Any) -> None:
        if args:
            await self.conn.execute(self._numbered(sql), *args)
        else:  # the simple protocol: function bodies with `$$` and `?` inside them pass untouched
            await self.conn.execute(sql)

    async def execute_count(self, sql: str) -> int:
        status = str(await self.conn.execute(sql))  # e.g. "UPDATE 1000", "INSERT 0 1000"
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def begin(self) -> None:
        await self.conn.execute("BEGIN")

    async def commit(self) -> None:
        await self.conn.execute("COMMIT")

    async def rollback(self) -> None:
        if self.conn.is_in_transaction():
            await self.conn.execute("ROLLBACK")

    async def lock(self) -> None:
        await self.conn.execute(f"SELECT pg_advisory_lock({LOCK_KEY})")
        self._locked = True

    async def unlock(self) -> None:
        if self._locked:
            await self.conn.execute(f"SELECT pg_advisory_unlock({LOCK_KEY})")
            self._locked = False

    async def close(self) -> None:
        try:
            await self.unlock()
        finally:
            await self.conn.close()


def dsn_of(url: str) -> str:
    """A SQLAlchemy URL (`Settings.effective_database_url`) as the driver's own: a file path for
    SQLite, a `postgresql://` DSN for asyncpg."""
    if url.startswith("sqlite"):
        return url.split(":///", 1)[1]
    return "postgresql://" + url.split("://", 1)[1]


async def connect(url: str) -> SqliteDb | PgDb:
    if url.startswith("sqlite"):
        return SqliteDb(dsn_of(url))
    return PgDb(await asyncpg.connect(dsn_of(url)))
