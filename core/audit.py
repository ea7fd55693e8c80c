"""The audit log: who changed what, in the same transaction as the change."""

from __future__ import annotations

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import now_ms
from core.ids import new_id

__all__ = ["audit"]


async def audit(conn: AsyncConnection, org_id: str | None, actor: str, action: str, target: str,
                details: dict[str, object]) -> None:
    await conn.execute(
        text("INSERT INTO audit_log (id, org_id, actor, action, target, details, created_at) "
             "VALUES (:id, :o, :a, :act, :t, :d, :now)"),
        {"id": new_id("aud"), "o": org_id, "a": actor, "act": action, "t": target,
         "d": msgspec.json.encode(details).decode(), "now": now_ms()})
