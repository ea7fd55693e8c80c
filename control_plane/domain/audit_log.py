"""An organization's audit log as its owners and admins read it: newest first, paginated by id
(ids sort by creation time), filterable by action. Rows are append-only (schema.sql)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.rows import columns, rows_as

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
    rows = rows_as(_Row, (await conn.execute(text(
        f"SELECT {columns(_Row)} FROM audit_log WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT :n"),
        params)).all(), seconds=("created_at",))
    entries = [AuditEntry(id=r.id, type=r.action, effective_at=r.created_at, actor=_actor(r.actor, r.ip),
                          target=r.target, details=msgspec.json.decode(r.details)) for r in rows[:limit]]
    return entries, len(rows) > limit


class _Row(msgspec.Struct, frozen=True):
    id: str
    action: str
    created_at: int
    actor: str
    ip: str | None
    target: str
    details: str
