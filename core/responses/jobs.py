"""Background response jobs and their stored stream events (see core/responses/store.py).

A job is claimed under a lease with a conditional UPDATE (safe on SQLite's single writer and
PostgreSQL READ COMMITTED alike); a job whose lease expired, because its worker died, is claimed
again and restarts from `base_seq`: the lost attempt's events past the queued prefix are replaced.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.db import now_ms, read_tx
from core.rows import row_as, rows_as

__all__ = [
    "TERMINAL_EVENTS",
    "append_events",
    "claim",
    "due",
    "enqueue",
    "events_after",
    "hand_back",
    "release",
    "renew",
    "status_of",
    "tail",
]

TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})


async def enqueue(conn: AsyncConnection, response_id: str, events: list[dict[str, Any]]) -> None:
    now = now_ms()
    await append_events(conn, response_id, events)
    await conn.execute(
        text(
            "INSERT INTO response_jobs (response_id, state, attempts, base_seq, created_at, updated_at)"
            " VALUES (:r, 'queued', 0, :b, :now, :now)"
        ),
        {"r": response_id, "b": len(events), "now": now},
    )


_DUE = "(state = 'queued' OR (state = 'running' AND lease_until < :now))"


async def due(conn: AsyncConnection) -> bool:
    """Whether any job is claimable now: a read, so the claim's write transaction (on SQLite the
    write lock every group commit also queues on) is taken only when there is something to claim.
    Only a hint: `claim` checks again under its own lock."""
    return (await conn.execute(text(f"SELECT 1 FROM response_jobs WHERE {_DUE} LIMIT 1"),
                               {"now": now_ms()})).first() is not None


async def claim(conn: AsyncConnection, owner: str, lease_ms: int) -> tuple[str, int] | None:
    """Take the oldest queued job, or one whose worker's lease expired: (response id, base_seq)."""
    now = now_ms()
    row = (
        await conn.execute(
            text(
                f"UPDATE response_jobs SET state = 'running', lease_owner = :owner, lease_until = :until,"
                f" attempts = attempts + 1, updated_at = :now WHERE response_id = (SELECT response_id FROM"
                f" response_jobs WHERE {_DUE} ORDER BY created_at LIMIT 1) AND {_DUE}"
                " RETURNING response_id, base_seq"
            ),
            {"owner": owner, "until": now + lease_ms, "now": now},
        )
    ).first()
    if row is None:
        return None
    # A previous attempt's events past the queued prefix are replaced by this attempt's.
    job = row_as(_Claimed, row)
    await conn.execute(
        text("DELETE FROM response_events WHERE response_id = :r AND seq >= :b"),
        {"r": job.response_id, "b": job.base_seq},
    )
    return job.response_id, job.base_seq


class _Claimed(msgspec.Struct, frozen=True):
    response_id: str
    base_seq: int


async def renew(conn: AsyncConnection, response_id: str, owner: str, lease_ms: int) -> bool:
    """Extend the lease; False when another worker took the job over."""
    result = await conn.execute(
        text(
            "UPDATE response_jobs SET lease_until = :until, updated_at = :now WHERE response_id = :r"
            " AND lease_owner = :owner AND state = 'running'"
        ),
        {"until": now_ms() + lease_ms, "now": now_ms(), "r": response_id, "owner": owner},
    )
    return bool(result.rowcount)


async def release(conn: AsyncConnection, response_id: str, owner: str) -> None:
    await conn.execute(
        text(
            "UPDATE response_jobs SET state = 'done', lease_until = NULL, updated_at = :now"
            " WHERE response_id = :r AND lease_owner = :owner"
        ),
        {"now": now_ms(), "r": response_id, "owner": owner},
    )


async def hand_back(conn: AsyncConnection, owner: str) -> None:
    await conn.execute(
        text(
            "UPDATE response_jobs SET state = 'queued', lease_owner = NULL, lease_until = NULL,"
            " updated_at = :now"
            " WHERE lease_owner = :owner AND state = 'running'"
        ),
        {"now": now_ms(), "owner": owner},
    )


async def status_of(conn: AsyncConnection, response_id: str) -> str | None:
    row = (await conn.execute(text("SELECT status FROM responses WHERE id = :r"), {"r": response_id})).first()
    return str(row[0]) if row else None


async def append_events(conn: AsyncConnection, response_id: str, events: list[dict[str, Any]]) -> None:
    if events:
        now = now_ms()
        await conn.execute(
            text(
                "INSERT INTO response_events (response_id, seq, type, data, created_at)"
                " VALUES (:r, :s, :t, :d, :now)"
            ),
            [
                {
                    "r": response_id,
                    "s": int(e["sequence_number"]),
                    "t": str(e["type"]),
                    "d": msgspec.json.encode(e).decode(),
                    "now": now,
                }
                for e in events
            ],
        )


async def events_after(conn: AsyncConnection, response_id: str, after: int) -> list[tuple[str, str]]:
    rows = await conn.execute(
        text("SELECT type, data FROM response_events WHERE response_id = :r AND seq > :a ORDER BY seq"),
        {"r": response_id, "a": after},
    )
    return [(e.type, e.data) for e in rows_as(_Event, rows)]


class _Event(msgspec.Struct, frozen=True):
    type: str
    data: str


async def tail(
    engine: AsyncEngine, response_id: str, after: int, poll_s: float = 0.2
) -> AsyncIterator[bytes]:
    """SSE frames of a background response's events after `after`, as the worker stores them,
    until its terminal event (or the response is deleted)."""
    while True:
        async with read_tx(engine) as conn:
            events = await events_after(conn, response_id, after)
            alive = bool(events) or await status_of(conn, response_id) is not None
        for kind, data in events:
            after = int(msgspec.json.decode(data)["sequence_number"])
            yield f"event: {kind}\ndata: {data}\n\n".encode()
            if kind in TERMINAL_EVENTS:
                return
        if not alive:
            return
        if not events:
            await asyncio.sleep(poll_s)
