"""The audit log: who changed what, when and from which client address, in the same transaction as
the change.

The address is the request's (`audit_origin`, set once per request by the control plane's
middleware) rather than a parameter of every domain function: the services that write audit rows
(keys, projects, members, ...) stay unaware of HTTP, and a change made by the CLI or a background
job records none.
"""

from __future__ import annotations

from contextvars import ContextVar

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import now_ms
from core.ids import new_id

__all__ = ["audit", "audit_origin"]

audit_origin: ContextVar[str | None] = ContextVar("audit_origin", default=None)
"""The client address of the request being served, if any."""


async def audit(conn: AsyncConnection, org_id: str | None, actor: str, action: str, target: str,
                details: dict[str, object]) -> None:
    await conn.execute(
        text("INSERT INTO audit_log (id, org_id, actor, action, target, details, created_at, ip) "
             "VALUES (:id, :o, :a, :act, :t, :d, :now, :ip)"),
        {"id": new_id("aud"), "o": org_id, "a": actor, "act": action, "t": target,
         "d": msgspec.json.encode(details).decode(), "now": now_ms(), "ip": audit_origin.get()})
