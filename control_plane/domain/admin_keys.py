"""Admin keys (`nx_admin_...`): credentials for an organization's own REST API, made by its owners
and admins, acting as an `admin` of that one organization (control_plane/identity/principal.py).

Hashed like API keys (HMAC-SHA256 with the server's pepper); the secret is answered once, at
creation. Deleting one revokes it: the row stays, so the audit log and `created_by` records keep
their meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.identity.principal import Principal
from core.apikeys import ADMIN_KEY_PREFIX, display_prefix, generate_key, hash_key
from core.audit import audit
from core.db import now_ms
from core.errors import ApiError
from core.ids import new_id
from core.rows import columns, row_as

__all__ = ["AdminKeyCreate", "AdminKeyView", "CreatedAdminKey", "create_admin_key", "get_admin_key",
           "list_admin_keys", "revoke_admin_key"]


class AdminKeyCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class AdminKeyView(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["organization.admin_api_key"] = "organization.admin_api_key"
    name: str
    redacted_value: str
    created_by: str
    created_at: int
    last_used_at: int | None
    revoked_at: int | None


class CreatedAdminKey(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["organization.admin_api_key"] = "organization.admin_api_key"
    name: str
    redacted_value: str
    value: str
    """Shown once; only its hash is stored."""
    created_at: int


class _Row(msgspec.Struct, frozen=True):
    """An admin key as stored: its display prefix, never its hash; times in milliseconds."""

    id: str
    name: str
    prefix: str
    created_by: str
    created_at: int
    last_used_at: int | None
    revoked_at: int | None


_COLS = columns(_Row)


def _view(row: Sequence[object]) -> AdminKeyView:
    r = row_as(_Row, row, seconds=("created_at", "last_used_at", "revoked_at"))
    return AdminKeyView(id=r.id, name=r.name, redacted_value=f"{r.prefix}...", created_by=r.created_by,
                        created_at=r.created_at, last_used_at=r.last_used_at, revoked_at=r.revoked_at)


async def create_admin_key(conn: AsyncConnection, org_id: str, actor: str, data: AdminKeyCreate,
                           pepper: str) -> CreatedAdminKey:
    """By an owner or admin of the organization, or by the operator (`/api`, actor `admin`)."""
    secret, key_id, now = generate_key(ADMIN_KEY_PREFIX), new_id("akey"), now_ms()
    await conn.execute(text("INSERT INTO admin_api_keys (id, org_id, name, prefix, key_hash, created_by, created_at)"
                            " VALUES (:id, :o, :n, :p, :h, :by, :now)"),
                       {"id": key_id, "o": org_id, "n": data.name, "p": display_prefix(secret),
                        "h": hash_key(secret, pepper), "by": actor, "now": now})
    await audit(conn, org_id, actor, "admin_key.created", key_id, {"prefix": display_prefix(secret)})
    return CreatedAdminKey(id=key_id, name=data.name, redacted_value=f"{display_prefix(secret)}...", value=secret,
                           created_at=now // 1000)


async def list_admin_keys(conn: AsyncConnection, org_id: str) -> list[AdminKeyView]:
    rows = await conn.execute(text(f"SELECT {_COLS} FROM admin_api_keys WHERE org_id = :o ORDER BY id"),
                              {"o": org_id})
    return [_view(r) for r in rows]


async def get_admin_key(conn: AsyncConnection, org_id: str, key_id: str) -> AdminKeyView:
    row = (await conn.execute(text(f"SELECT {_COLS} FROM admin_api_keys WHERE id = :k AND org_id = :o"),
                              {"k": key_id, "o": org_id})).first()
    if row is None:
        raise ApiError("not_found", f"No admin API key {key_id!r}")
    return _view(row)


async def revoke_admin_key(conn: AsyncConnection, who: Principal, key_id: str) -> AdminKeyView:
    current = await get_admin_key(conn, who.org_id, key_id)
    if current.revoked_at is None:
        await conn.execute(text("UPDATE admin_api_keys SET revoked_at = :now WHERE id = :k AND org_id = :o"),
                           {"now": now_ms(), "k": key_id, "o": who.org_id})
        await audit(conn, who.org_id, who.actor, "admin_key.revoked", key_id, {})
    return await get_admin_key(conn, who.org_id, key_id)
