"""Fan-out: turn committed outbox events into one pending delivery per matching endpoint.

Runs in the worker, not in the producer's transaction, so producers pay one INSERT and a crash
after their commit loses nothing: an event stays `fanned_out = 0` until a worker has created its
deliveries in the same transaction that flips the flag (conditional UPDATE, so two workers never
fan out the same event twice).
"""

from __future__ import annotations

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.db import write_tx
from core.events.catalog import OPT_IN_TYPES, SUBSCRIBABLE
from core.ids import new_id
from core.rows import columns, rows_as

__all__ = ["enqueue", "fan_out", "matches"]


def matches(event_types: list[str], endpoint_project: str | None, event_type: str,
            event_project: str | None) -> bool:
    """Does an endpoint subscribe to this event? `*` means every type except the opt-in ones;
    a project filter admits only events of that project (organization-wide events excluded)."""
    if endpoint_project is not None and endpoint_project != event_project:
        return False
    if event_type in event_types:
        return True
    return "*" in event_types and event_type in SUBSCRIBABLE and event_type not in OPT_IN_TYPES


async def enqueue(conn: AsyncConnection, org_id: str, endpoint_id: str, event_id: str, kind: str,
                  now: int) -> str:
    delivery_id = new_id("dlv")
    await conn.execute(
        text("INSERT INTO webhook_deliveries (id, org_id, endpoint_id, event_id, kind, status, attempts, "
             "next_attempt_at, created_at, updated_at) "
             "VALUES (:id, :o, :ep, :ev, :kind, 'pending', 0, :now, :now, :now)"),
        {"id": delivery_id, "o": org_id, "ep": endpoint_id, "ev": event_id, "kind": kind, "now": now})
    return delivery_id


async def fan_out(engine: AsyncEngine, now: int, batch: int = 500) -> int:
    """Fan out up to `batch` events; return how many were handled."""
    async with engine.connect() as conn:
        rows = (await conn.execute(
            text("SELECT id, org_id, project_id, type FROM events WHERE fanned_out = 0 "
                 "ORDER BY created_at, id LIMIT :n"), {"n": batch})).all()
    if not rows:
        return 0
    async with write_tx(engine) as conn:
        endpoints: dict[str, list[tuple[str, list[str], str | None]]] = {}
        for event_id, org_id, project_id, event_type in rows:
            claimed = await conn.execute(
                text("UPDATE events SET fanned_out = 1 WHERE id = :e AND fanned_out = 0"), {"e": event_id})
            if claimed.rowcount != 1:
                continue  # another worker got it
            if org_id not in endpoints:
                endpoints[org_id] = [
                    (e.id, list(msgspec.json.decode(e.event_types)), e.project_id)
                    for e in rows_as(_Subscriber, await conn.execute(
                        text(f"SELECT {columns(_Subscriber)} FROM webhook_endpoints WHERE org_id = :o "
                             "AND enabled = 1 AND deleted_at IS NULL"), {"o": org_id}))]
            for endpoint_id, types, endpoint_project in endpoints[org_id]:
                if matches(types, endpoint_project, str(event_type), project_id):
                    await enqueue(conn, str(org_id), endpoint_id, str(event_id), "event", now)
    return len(rows)


class _Subscriber(msgspec.Struct, frozen=True):
    id: str
    event_types: str
    project_id: str | None
