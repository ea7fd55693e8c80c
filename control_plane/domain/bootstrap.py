"""First-run bootstrap: secrets, an owner user, a default organization and project, one API key.

Idempotent: the key secret is returned only by the run that created it; later runs return the
display prefix. Secrets that the operator did not set are generated once into
`<data_dir>/secrets.toml` (mode 0600) so that restarts keep verifying the same keys.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.domain.keys import KeyScopes, create_key
from core import ledger
from core.audit import audit
from core.db import now_ms
from core.ids import new_id

__all__ = ["BootstrapResult", "bootstrap",]

OWNER_EMAIL = "owner@localhost"








class BootstrapResult(msgspec.Struct, kw_only=True):
    org_id: str
    project_id: str
    key_id: str
    key_prefix: str
    secret: str | None
    """Set only on the run that created the key."""


async def bootstrap(conn: AsyncConnection, pepper: str, credit_nanos: int = 0) -> BootstrapResult:
    existing = (await conn.execute(text(
        "SELECT o.id, p.id FROM organizations o JOIN projects p ON p.org_id = o.id"
        " ORDER BY o.created_at, p.created_at LIMIT 1"))).first()
    if existing is not None:
        org_id, project_id = str(existing[0]), str(existing[1])
        key = (await conn.execute(text(
            "SELECT id, prefix FROM api_keys WHERE org_id = :o ORDER BY created_at LIMIT 1"),
            {"o": org_id})).first()
        return BootstrapResult(org_id=org_id, project_id=project_id,
                               key_id=str(key[0]) if key else "", key_prefix=str(key[1]) if key else "",
                               secret=None)
    now = now_ms()
    user_id, org_id, project_id = new_id("user"), new_id("org"), new_id("proj")
    await conn.execute(text("INSERT INTO users (id, email, name, is_platform_admin, created_at)"
                            " VALUES (:id, :e, 'Owner', 1, :now)"), {"id": user_id, "e": OWNER_EMAIL, "now": now})
    await conn.execute(text("INSERT INTO organizations (id, name, created_at) VALUES (:id, 'Default', :now)"),
                       {"id": org_id, "now": now})
    await conn.execute(text("INSERT INTO memberships (id, org_id, user_id, role, created_at)"
                            " VALUES (:id, :o, :u, 'owner', :now)"),
                       {"id": new_id("mem"), "o": org_id, "u": user_id, "now": now})
    await conn.execute(text("INSERT INTO projects (id, org_id, name, created_at)"
                            " VALUES (:id, :o, 'Default project', :now)"),
                       {"id": project_id, "o": org_id, "now": now})
    await audit(conn, org_id, "system", "bootstrap", org_id, {"owner": OWNER_EMAIL})
    created = await create_key(conn, org_id, KeyScopes(name="bootstrap"), pepper, actor=user_id)
    if credit_nanos:
        await ledger.grant(conn, org_id, credit_nanos, idempotency_key="bootstrap", actor="system",
                           reason="first-start credit", promotional=True)
    return BootstrapResult(org_id=org_id, project_id=project_id, key_id=created.key.id,
                           key_prefix=created.key.prefix, secret=created.secret)
