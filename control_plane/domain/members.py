"""An organization's members as its own owners and admins manage them (the customer REST API):
roles, project narrowing, removal.

- Only an owner makes, changes or removes an owner; the last owner can neither leave nor be
  demoted (domain/orgs.py keeps that rule for the operator's API too).
- Narrowing: `projects` lists the projects a member may see and touch; null gives every project.
- Removal ends the membership and signs the user out everywhere (their sessions are the user's,
  not the organization's: a session would otherwise keep the removed role until it expires). The
  organization's keys stay: `created_by` is a record, not an owner. The answer lists what they
  created, so the remover can decide what to revoke.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.domain.orgs import keep_an_owner
from control_plane.identity.policy import Role, gains
from control_plane.identity.principal import Principal, member_projects
from control_plane.identity.sessions import revoke_all
from core.audit import audit
from core.errors import ApiError
from core.rows import columns, row_as, rows_as

__all__ = ["CreatedRecord", "MemberRemoved", "OrgUser", "OrgUserPatch", "get_user", "list_users",
           "remove_user", "update_user"]


class OrgUser(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["organization.user"] = "organization.user"
    email: str
    name: str
    role: str
    projects: list[str] | None
    """The projects this member is narrowed to; null: every project."""
    added_at: int


class OrgUserPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    role: Role | None = None
    projects: list[str] | msgspec.UnsetType | None = msgspec.UNSET
    """A list narrows the member to those projects; null lifts the narrowing."""


class CreatedRecord(msgspec.Struct, kw_only=True):
    id: str
    name: str
    prefix: str
    revoked: bool


class MemberRemoved(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["organization.user.deleted"] = "organization.user.deleted"
    deleted: bool = True
    api_keys: list[CreatedRecord]
    """The organization's API keys this member created: they keep working until revoked."""
    admin_api_keys: list[CreatedRecord]


class _Row(msgspec.Struct, frozen=True):
    id: str
    email: str
    name: str
    role: str
    added_at: int


_SQL = (f"SELECT {columns(_Row, 'u', role='m.role', added_at='m.created_at')} FROM memberships m"
        " JOIN users u ON u.id = m.user_id WHERE m.org_id = :o")


async def _user(conn: AsyncConnection, org_id: str, row: Sequence[object]) -> OrgUser:
    r = row_as(_Row, row, seconds=("added_at",))
    projects = await member_projects(conn, org_id, r.id)
    return OrgUser(id=r.id, email=r.email, name=r.name, role=r.role,
                   projects=None if projects is None else list(projects), added_at=r.added_at)


async def list_users(conn: AsyncConnection, org_id: str) -> list[OrgUser]:
    rows = (await conn.execute(text(_SQL + " ORDER BY u.id"), {"o": org_id})).all()
    return [await _user(conn, org_id, r) for r in rows]


async def get_user(conn: AsyncConnection, org_id: str, user_id: str) -> OrgUser:
    row = (await conn.execute(text(_SQL + " AND m.user_id = :u"), {"o": org_id, "u": user_id})).first()
    if row is None:
        raise ApiError("not_found", f"No user {user_id!r}")
    return await _user(conn, org_id, row)


def _owner_rule(who: Principal, current: str, wanted: str | None) -> None:
    if who.role != "owner" and (current == "owner" or wanted == "owner"):
        raise ApiError("permission_denied", "Only an owner may make, change or remove an owner.")


async def set_projects(conn: AsyncConnection, org_id: str, user_id: str, projects: list[str] | None) -> None:
    """Replace the member's narrowing; every project must be this organization's."""
    for project in projects or []:
        found = (await conn.execute(text("SELECT 1 FROM projects WHERE id = :p AND org_id = :o"),
                                    {"p": project, "o": org_id})).first()
        if found is None:
            raise ApiError("invalid_request_error", f"projects: no project {project!r}", param="projects")
    await conn.execute(text("DELETE FROM membership_projects WHERE org_id = :o AND user_id = :u"),
                       {"o": org_id, "u": user_id})
    for project in sorted(set(projects or [])):
        await conn.execute(text("INSERT INTO membership_projects (org_id, user_id, project_id) VALUES (:o, :u, :p)"),
                           {"o": org_id, "u": user_id, "p": project})


async def update_user(conn: AsyncConnection, who: Principal, user_id: str, patch: OrgUserPatch) -> OrgUser:
    current = await get_user(conn, who.org_id, user_id)
    _owner_rule(who, current.role, patch.role)
    changed: dict[str, object] = {}
    if patch.role is not None and patch.role != current.role:
        if current.role == "owner":
            await keep_an_owner(conn, who.org_id, user_id)
        await conn.execute(text("UPDATE memberships SET role = :r WHERE org_id = :o AND user_id = :u"),
                           {"r": patch.role, "o": who.org_id, "u": user_id})
        changed.update(role=patch.role, was=current.role)
        if gains(patch.role, current.role):  # the member signs in again: a new token (policy.gains)
            changed.update(sessions_ended=await revoke_all(conn, user_id))
    if patch.projects is not msgspec.UNSET:
        if patch.projects is not None and not patch.projects:
            raise ApiError("invalid_request_error", "projects: name at least one project, or null for every one",
                           param="projects")
        await set_projects(conn, who.org_id, user_id, patch.projects)
        changed["projects"] = patch.projects
    if changed:
        await audit(conn, who.org_id, who.actor, "member.updated", user_id, changed)
    return await get_user(conn, who.org_id, user_id)


async def _created(conn: AsyncConnection, table: str, org_id: str, user_id: str) -> list[CreatedRecord]:
    rows = rows_as(_Created, await conn.execute(
        text(f"SELECT {columns(_Created)} FROM {table} WHERE org_id = :o AND created_by IN (:u, :actor) ORDER BY id"),
        {"o": org_id, "u": user_id, "actor": f"user:{user_id}"}))
    return [CreatedRecord(id=r.id, name=r.name, prefix=r.prefix, revoked=r.revoked_at is not None) for r in rows]


class _Created(msgspec.Struct, frozen=True):
    id: str
    name: str
    prefix: str
    revoked_at: int | None


async def remove_user(conn: AsyncConnection, who: Principal, user_id: str) -> MemberRemoved:
    current = await get_user(conn, who.org_id, user_id)
    if user_id != who.user_id:  # leaving needs no permission; removing someone else does
        _owner_rule(who, current.role, None)
    if current.role == "owner":
        await keep_an_owner(conn, who.org_id, user_id)
    await conn.execute(text("DELETE FROM membership_projects WHERE org_id = :o AND user_id = :u"),
                       {"o": who.org_id, "u": user_id})
    await conn.execute(text("DELETE FROM memberships WHERE org_id = :o AND user_id = :u"),
                       {"o": who.org_id, "u": user_id})
    await revoke_all(conn, user_id)  # signed out everywhere: their role here ends now, not at expiry
    await audit(conn, who.org_id, who.actor, "member.removed", user_id, {"role": current.role})
    return MemberRemoved(id=user_id, api_keys=await _created(conn, "api_keys", who.org_id, user_id),
                         admin_api_keys=await _created(conn, "admin_api_keys", who.org_id, user_id))
