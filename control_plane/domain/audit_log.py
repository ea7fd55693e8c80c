"""An organization's audit log as its owners and admins read it: newest first, paginated by id
(ids sort by creation time), filterable by action. Rows are append-only (schema.sql)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["AuditActor", "AuditEntry", "list_audit"]


class AuditActor(msgspec.Struct, kw_only=True):
    type: Literal["user", "admin_key", "operator", "system"]
    id: str | None
    ip_address: str | None


class AuditEntry(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["organization.audit_log"] = "organization.audit_log"
    type: str
    """What happened: `key.created`, `member.removed`, `invite.accepted`, ..."""
    effective_at: int
    actor: AuditActor
    target: str
    details: dict[str, Any]


def _actor(actor: str, ip: object) -> AuditActor:
    kind, _sep, ident = actor.partition(":")
    address = None if ip is None else str(ip)
    if kind in ("user", "admin_key") and ident:
        return AuditActor(type=kind, id=ident, ip_address=address)  # type: ignore[arg-type]
    if actor.startswith("user_"):  # written before actors carried their kind (bootstrap)
        return AuditActor(type="user", id=actor, ip_address=address)
    return AuditActor(type="operator" if actor == "admin" else "system", id=None, ip_address=address)


async def list_audit(conn: AsyncConnection, org_id: str, limit: int, after: str | None,
                     action: str | None) -> tuple[list[AuditEntry], bool]:
    """(one page, whether more follow)."""
    where = ["org_id = :o"]
    params: dict[str, object] = {"o": org_id, "n": limit + 1}
    if after:
        where.append("id < :after")
        params["after"] = after
    if action:
        where.append("action = :action")
        params["action"] = action
    rows = (await conn.execute(text("SELECT id, action, created_at, actor, ip, target, details FROM audit_log"
                                    f" WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :n"), params)).all()
    entries = [AuditEntry(id=str(r[0]), type=str(r[1]), effective_at=int(r[2]) // 1000, actor=_actor(str(r[3]), r[4]),
                          target=str(r[5]), details=msgspec.json.decode(str(r[6]))) for r in rows[:limit]]
    return entries, len(rows) > limit
