"""Holds of requests that ended without a settlement: released or cut short as soon as their end
is known, instead of waiting out `expires_at` (the backend's timeout + 5 min).

The sidecar calls these with what Envoy's access log says about a request that ended
(proxy_plugins/sidecar/ended.py):
- `release_unserved`: the request never reached the adapter (it was down: Envoy answered 503), so
  no settlement can ever come; the hold is given back now, untouched.
- `shorten`: the adapter died while it had the request; its successor may still settle what was
  served (from its journal), so the hold only loses the rest of its time: it expires
  `ORPHAN_GRACE_MS` from now.

Both are conditional on the hold being open, so neither touches a hold the adapter settled, and
both are idempotent (Envoy's log and the adapter's report may both arrive, in either order).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import now_ms
from core.ledger.holds import HOLD_COLUMNS, hold_from_row, unreserve
from core.ledger.model import Hold
from core.rawsql import sql

__all__ = ["release_unserved", "shorten"]


async def release_unserved(conn: AsyncConnection, request_ids: Sequence[str], *, now: int | None = None) -> int:
    """Release the open holds of these requests (none of them reached a backend); returns how many."""
    now = now_ms() if now is None else now
    released: list[Hold] = []
    for request_id in sorted(set(request_ids)):  # one lock order whoever calls
        r = (await conn.execute(sql(f"SELECT {HOLD_COLUMNS} FROM ledger_holds WHERE request_id = :r"
                                    " AND status = 'open'"), {"r": request_id})).first()
        if r is None:
            continue
        hold = hold_from_row(r)
        claimed = await conn.execute(sql(
            "UPDATE ledger_holds SET status = 'released', charged = 0, resolved_at = :now"
            " WHERE id = :id AND status = 'open'"), {"now": now, "id": hold.id})
        if claimed.rowcount == 1:  # a settlement that won the race keeps its hold
            released.append(hold)
    await unreserve(conn, released)
    return len(released)


async def shorten(conn: AsyncConnection, request_ids: Sequence[str], until_ms: int) -> int:
    """Let these requests' open holds expire at `until_ms` at the latest; returns how many moved."""
    moved = 0
    for request_id in sorted(set(request_ids)):
        result = await conn.execute(sql(
            "UPDATE ledger_holds SET expires_at = :until WHERE request_id = :r AND status = 'open'"
            " AND expires_at > :until"), {"until": until_ms, "r": request_id})
        moved += int(result.rowcount)
    return moved
