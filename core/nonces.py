"""Nonces of signed requests, kept in the database (table `request_nonces`).

The database is the one store every sidecar replica shares that also outlives a restart of any
process: a nonce kept only in memory was forgotten when the sidecar restarted, and one kept only in
Redis when Redis restarted (compose runs it without persistence), and a captured request was then
accepted, and charged, a second time. A nonce is kept for twice the signature skew, past the
moment no request carrying it can pass the timestamp check (proxy_plugins/sidecar/replay.py); the
worker deletes expired rows (`prune`). Recording goes through a group commit, so concurrent signed
requests share one transaction. The caller fails closed: a nonce that cannot be recorded refuses
the request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.groupcommit import GroupCommit
from core.rawsql import sql

__all__ = ["KEEP_MS", "SKEW_SECONDS", "DatabaseNonces", "prune"]

SKEW_SECONDS = 300
"""A signed request's timestamp may be this far from the server's clock, either way."""
KEEP_MS = 2 * SKEW_SECONDS * 1000
"""A timestamp can be up to SKEW early or late, so a nonce first seen now must outlive both."""


class _Nonce(msgspec.Struct, frozen=True):
    key_id: str
    nonce: str
    now_ms: int


# Inserted, or taking over an expired row of the same nonce: one row changed means first use.
_RECORD = sql(
    "INSERT INTO request_nonces (key_id, nonce, expires_at) VALUES (:k, :n, :exp)"
    " ON CONFLICT (key_id, nonce) DO UPDATE SET expires_at = excluded.expires_at"
    " WHERE request_nonces.expires_at <= :now")


async def _record(conn: AsyncConnection, item: _Nonce) -> bool:
    result = await conn.execute(_RECORD, {"k": item.key_id, "n": item.nonce, "exp": item.now_ms + KEEP_MS,
                                          "now": item.now_ms})
    return bool(result.rowcount)


class DatabaseNonces:
    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        self.commits: GroupCommit[_Nonce, bool] = GroupCommit(engine, _record)
        self.clock = clock

    async def first_use(self, key_id: str, nonce: str) -> bool:
        """True the first time (key, nonce) is seen within the window, False afterwards."""
        return await self.commits.submit(_Nonce(key_id, nonce, int(self.clock() * 1000)))

    async def close(self) -> None:
        await self.commits.close()


async def prune(conn: AsyncConnection, now_ms: int) -> int:
    """Forget nonces no request can carry any more (the worker, every minute)."""
    result = await conn.execute(sql("DELETE FROM request_nonces WHERE expires_at <= :now"), {"now": now_ms})
    return int(result.rowcount)
