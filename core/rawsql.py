"""The hot path's statements on the database driver itself, without SQLAlchemy's per-call layers.

The domain code (ledger, idempotency, outbox) is written against the small slice of
`AsyncConnection` it needs: `execute(text(...), params)` returning a result with `first()`,
`one()`, `rowcount` and iteration, `begin_nested()` and `dialect.name`. Inside a group-commit
batch (core/groupcommit.py) that slice is served here straight from the driver:

- SQLite: the `sqlite3` connection in the batch's worker thread. `sqlite3` binds `:name`
  parameters itself, so the statement text is used unchanged.
- PostgreSQL: the asyncpg connection under SQLAlchemy's pool. `:name` is rewritten to `$n` once
  per statement text (cached) and asyncpg keeps the prepared statement.

Why: SQLAlchemy Core costs about 40-80 us of CPU per statement (compilation cache look-ups,
result metadata, on PostgreSQL a greenlet switch), the driver about 5-10 us on SQLite; a
settlement runs about fifteen statements. Everything else (the transaction, its savepoints, the
isolation level) is unchanged, so the statements mean exactly what they mean elsewhere.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import TextClause, text

__all__ = ["AsyncpgConnection", "RawResult", "SqliteConnection", "execute_many", "facts_of", "memo_of", "sql"]

_BIND = re.compile(r"(?<![:\w]):(\w+)")


class RawResult:
    """Rows already fetched (statements on the hot path return a handful), plus `rowcount`."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: Sequence[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def one(self) -> tuple[Any, ...]:
        if len(self._rows) != 1:
            raise LookupError(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def all(self) -> list[tuple[Any, ...]]:
        return list(self._rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


class _Dialect:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


class _Savepoint:
    """`async with conn.begin_nested():` on a raw connection: released on success, rolled back
    to on an exception (which then propagates, as SQLAlchemy's nested transaction does)."""

    __slots__ = ("_conn", "_name")

    def __init__(self, conn: SqliteConnection | AsyncpgConnection, name: str) -> None:
        self._conn = conn
        self._name = name

    async def __aenter__(self) -> None:
        await self._conn.run(f"SAVEPOINT {self._name}")

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            await self._conn.run(f"RELEASE SAVEPOINT {self._name}")
        else:
            await self._conn.run(f"ROLLBACK TO SAVEPOINT {self._name}")
            await self._conn.run(f"RELEASE SAVEPOINT {self._name}")


def _sql(statement: Any) -> str:
    return statement if isinstance(statement, str) else str(statement.text)


class SqliteConnection:
    """Statements on a `sqlite3` connection whose transaction the caller has begun. Its coroutines
    never suspend: a whole batch runs to completion inside the worker thread that owns it."""

    def __init__(self, dbapi: sqlite3.Connection, facts: dict[tuple[Any, ...], Any] | None = None) -> None:
        self._db = dbapi
        self.dialect = _Dialect("sqlite")
        self._savepoints = 0
        self.memo: dict[tuple[Any, ...], Any] = {}
        self.facts = facts

    async def run(self, sql: str) -> None:
        self._db.execute(sql)

    async def execute(self, statement: Any, parameters: dict[str, Any] | None = None) -> RawResult:
        cursor = self._db.execute(_sql(statement), parameters or {})
        rows = cursor.fetchall() if cursor.description is not None else []
        # sqlite3 knows the row count of an UPDATE ... RETURNING only once its rows are read.
        return RawResult(rows, cursor.rowcount if cursor.rowcount >= 0 else len(rows))

    async def execute_many(self, statement: str, rows: Sequence[dict[str, Any]]) -> None:
        self._db.executemany(statement, rows)

    def begin_nested(self) -> _Savepoint:
        self._savepoints += 1
        return _Savepoint(self, f"nx_sp{self._savepoints}")


class AsyncpgConnection:
    """Statements on an asyncpg connection whose transaction the caller has begun."""

    _positional: dict[str, tuple[str, tuple[str, ...], bool]] = {}

    def __init__(self, driver: Any, facts: dict[tuple[Any, ...], Any] | None = None) -> None:
        self._pg = driver
        self.dialect = _Dialect("postgresql")
        self._savepoints = 0
        self.memo: dict[tuple[Any, ...], Any] = {}
        self.facts = facts

    async def run(self, sql: str) -> None:
        await self._pg.execute(sql)

    @classmethod
    def _convert(cls, sql: str) -> tuple[str, tuple[str, ...], bool]:
        found = cls._positional.get(sql)
        if found is None:
            names: list[str] = []

            def number(match: re.Match[str]) -> str:
                if match.group(1) not in names:
                    names.append(match.group(1))
                return f"${names.index(match.group(1)) + 1}"

            head = sql.lstrip()[:6].upper()
            returns_rows = head in ("SELECT", "WITH") or " RETURNING " in sql.upper()
            found = cls._positional[sql] = (_BIND.sub(number, sql), tuple(names), returns_rows)
        return found

    async def execute(self, statement: Any, parameters: dict[str, Any] | None = None) -> RawResult:
        sql, names, returns_rows = self._convert(_sql(statement))
        args = [(parameters or {})[name] for name in names]
        # Both calls go through asyncpg's own prepared-statement cache.
        if returns_rows:
            rows = await self._pg.fetch(sql, *args)
            return RawResult([tuple(r) for r in rows], len(rows))
        status: str = await self._pg.execute(sql, *args)  # e.g. "UPDATE 1", "INSERT 0 1"
        return RawResult([], int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0)

    async def execute_many(self, statement: str, rows: Sequence[dict[str, Any]]) -> None:
        sql, names, _ = self._convert(statement)
        # asyncpg pipelines the rows: one round trip for the whole list, not one per row.
        await self._pg.executemany(sql, [[row[name] for name in names] for row in rows])

    def begin_nested(self) -> _Savepoint:
        self._savepoints += 1
        return _Savepoint(self, f"nx_sp{self._savepoints}")


async def execute_many(conn: object, statement: str, rows: Sequence[dict[str, Any]]) -> None:
    """One statement for many rows (INSERTs whose results nobody reads): on PostgreSQL one round
    trip for the whole list instead of one per row. An error (e.g. a unique index) raises; there is
    no per-row count."""
    if not rows:
        return
    if isinstance(conn, SqliteConnection | AsyncpgConnection):
        await conn.execute_many(statement, rows)
    else:  # a SQLAlchemy connection (callers outside a group commit): its executemany
        await conn.execute(sql(statement), list(rows))  # type: ignore[attr-defined]


def facts_of(conn: object) -> dict[tuple[Any, ...], Any] | None:
    """A group commit's memo of rows that never change once written (a price card by model and
    version: price cards are append-only), kept across its batches; None for any other connection.
    On PostgreSQL each read it saves is a round trip on the hot path."""
    facts = getattr(conn, "facts", None)
    return facts if isinstance(facts, dict) else None


def memo_of(conn: object) -> dict[tuple[Any, ...], Any] | None:
    """A batch connection's memo: answers that cannot change within its one transaction (a price
    card in force, whether an organization subscribes to an event type), read once per batch
    instead of once per item. None for any other connection."""
    memo = getattr(conn, "memo", None)
    return memo if isinstance(memo, dict) else None


@functools.lru_cache(maxsize=1024)
def sql(statement: str) -> TextClause:
    """`sqlalchemy.text`, built once per statement text: the hot path's statements are a fixed
    set, and parsing a statement's binds on every call cost more than running it on SQLite."""
    return text(statement)
