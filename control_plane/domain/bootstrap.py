"""First-run bootstrap: secrets, an owner user, a default organization and project, one API key.

Idempotent: the key secret is returned only by the run that created it; later runs return the
display prefix. Secrets that the operator did not set are generated once into
`<data_dir>/secrets.toml` (mode 0600) so that restarts keep verifying the same keys.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane import ledger
from control_plane.db import now_ms
from control_plane.domain.keys import KeyScopes, audit, create_key
from control_plane.ids import new_id
from control_plane.settings import Settings

__all__ = ["BootstrapResult", "Secrets", "bootstrap", "load_secrets"]

OWNER_EMAIL = "owner@localhost"


class Secrets(msgspec.Struct, frozen=True):
    key_pepper: str
    internal_token: str
    """Shared by the sidecar and the control plane: proves a /v1 request came through the edge."""
    admin_token: str
    """Bearer token of the platform operator for the management API (`/api/...`) and the CLI."""


def load_secrets(settings: Settings) -> Secrets:
    path = settings.data_path / "secrets.toml"
    stored: dict[str, str] = {}
    if path.exists():
        stored = {k: str(v) for k, v in tomllib.loads(path.read_text()).items()}
    wanted = {
        "key_pepper": settings.key_pepper or stored.get("key_pepper") or secrets.token_urlsafe(32),
        "internal_token": os.environ.get("NX_INTERNAL_TOKEN") or stored.get("internal_token")
        or secrets.token_urlsafe(32),
        "admin_token": os.environ.get("NX_ADMIN_TOKEN") or stored.get("admin_token")
        or "nxadm_" + secrets.token_urlsafe(32),
    }
    # An empty variable (as in a copied .env.example) means "not set": generate and keep one.
    from_env = {"key_pepper": bool(settings.key_pepper),
                "internal_token": bool(os.environ.get("NX_INTERNAL_TOKEN")),
                "admin_token": bool(os.environ.get("NX_ADMIN_TOKEN"))}
    missing = {k: v for k, v in wanted.items() if k not in stored and not from_env[k]}
    if missing:
        _write_secrets(path, {**stored, **missing})
    return Secrets(**wanted)


def _write_secrets(path: Path, values: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# Generated on first start. Keep private; losing key_pepper invalidates every key.\n")
        for k, v in sorted(values.items()):
            f.write(f'{k} = "{v}"\n')
    tmp.replace(path)


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
