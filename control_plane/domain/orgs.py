"""Organizations, users and memberships (roles: control_plane/identity/policy.py); projects are in
domain/projects.py. This is the operator's view (`/api/...`); members as an organization manages
them itself are in domain/members.py.

Everything below an organization is looked up by (org, id) together, so another organization's
member id gets the same 404 as a made-up one. An organization always keeps at least one owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.domain.projects import ProjectCreate, create_project
from control_plane.identity.policy import Role, gains
from control_plane.identity.sessions import revoke_all
from core.audit import audit
from core.db import now_ms
from core.errors import ApiError
from core.ids import new_id
from core.rows import columns, row_as

__all__ = ["MemberCreate", "MemberPatch", "MemberView", "OrgCreate", "OrgPatch", "OrgView",
           "UserCreate", "UserView", "add_member", "create_org", "create_user", "get_member",
           "get_org", "get_user", "keep_an_owner", "list_members", "list_orgs", "list_users",
           "remove_member", "update_member", "update_org"]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Email = Annotated[str, msgspec.Meta(pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}$", max_length=320)]
OperatorRole = Role | Literal["member"]
"""The release's `member` is still accepted from the operator and stored as `developer` (migration 0005)."""


def _role(role: OperatorRole) -> Role:
    return "developer" if role == "member" else role


class OrgCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    plan: Name = "default"
    owner_email: Email | None = None
    """Made the organization's first owner (created as a user when new)."""


class OrgPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name | None = None
    plan: Name | None = None


class OrgView(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["organization"] = "organization"
    name: str
    plan: str
    created_at: int


class UserCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Email
    name: str = ""


class UserView(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["user"] = "user"
    email: str
    name: str
    created_at: int


class MemberCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Either an existing user's id, or an email (the user is created when new)."""

    role: OperatorRole
    user_id: str | None = None
    email: Email | None = None
    name: str = ""


class MemberPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    role: OperatorRole


class MemberView(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["organization.member"] = "organization.member"
    organization: str
    user_id: str
    email: str
    name: str
    role: str
    created_at: int


def _conflict_if(found: object, message: str, param: str) -> None:
    if found is not None:
        raise ApiError("conflict", message, param=param)


async def create_org(conn: AsyncConnection, data: OrgCreate, actor: str) -> OrgView:
    """A new organization comes with a default project, so its keys have somewhere to act."""
    org_id, now = new_id("org"), now_ms()
    await conn.execute(text("INSERT INTO organizations (id, name, plan, created_at)"
                            " VALUES (:id, :n, :p, :now)"),
                       {"id": org_id, "n": data.name, "p": data.plan, "now": now})
    await audit(conn, org_id, actor, "org.created", org_id, {"name": data.name})
    await create_project(conn, org_id, ProjectCreate(name="Default project"), actor)
    if data.owner_email is not None:
        await add_member(conn, org_id, MemberCreate(role="owner", email=data.owner_email), actor)
    return await get_org(conn, org_id)


def _org(r: Sequence[object]) -> OrgView:
    return row_as(OrgView, r, seconds=("created_at",))


async def list_orgs(conn: AsyncConnection) -> list[OrgView]:
    return [_org(r) for r in await conn.execute(text(
        f"SELECT {columns(OrgView)} FROM organizations ORDER BY created_at, id"))]


async def get_org(conn: AsyncConnection, org_id: str) -> OrgView:
    row = (await conn.execute(text(f"SELECT {columns(OrgView)} FROM organizations WHERE id = :o"),
                              {"o": org_id})).first()
    if row is None:
        raise ApiError("not_found", f"No organization {org_id!r}")
    return _org(row)


async def update_org(conn: AsyncConnection, org_id: str, patch: OrgPatch, actor: str) -> OrgView:
    await get_org(conn, org_id)
    sets = {k: v for k, v in (("name", patch.name), ("plan", patch.plan)) if v is not None}
    if sets:
        assignments = ", ".join(f"{k} = :{k}" for k in sets)
        await conn.execute(text(f"UPDATE organizations SET {assignments} WHERE id = :o"),
                           {**sets, "o": org_id})
        await audit(conn, org_id, actor, "org.updated", org_id, {"fields": sorted(sets)})
    return await get_org(conn, org_id)


def _user(r: Sequence[object]) -> UserView:
    return row_as(UserView, r, seconds=("created_at",))


async def create_user(conn: AsyncConnection, data: UserCreate, actor: str) -> UserView:
    email = data.email.strip().lower()
    found = (await conn.execute(text("SELECT id FROM users WHERE email = :e"), {"e": email})).first()
    _conflict_if(found, f"A user with email {email!r} already exists", "email")
    user_id = new_id("user")
    await conn.execute(text("INSERT INTO users (id, email, name, created_at) VALUES (:id, :e, :n, :now)"),
                       {"id": user_id, "e": email, "n": data.name, "now": now_ms()})
    await audit(conn, None, actor, "user.created", user_id, {"email": email})
    return await get_user(conn, user_id)


async def list_users(conn: AsyncConnection) -> list[UserView]:
    return [_user(r) for r in await conn.execute(text(
        f"SELECT {columns(UserView)} FROM users ORDER BY created_at, id"))]


async def get_user(conn: AsyncConnection, user_id: str) -> UserView:
    row = (await conn.execute(text(f"SELECT {columns(UserView)} FROM users WHERE id = :u"),
                              {"u": user_id})).first()
    if row is None:
        raise ApiError("not_found", f"No user {user_id!r}")
    return _user(row)


_MEMBER_COLS = columns(MemberView, "m", organization="m.org_id", user_id="u.id", email="u.email", name="u.name")
_MEMBER_SQL = (f"SELECT {_MEMBER_COLS} FROM memberships m"
               " JOIN users u ON u.id = m.user_id WHERE m.org_id = :o")


def _member(r: Sequence[object]) -> MemberView:
    return row_as(MemberView, r, seconds=("created_at",))


async def add_member(conn: AsyncConnection, org_id: str, data: MemberCreate, actor: str) -> MemberView:
    await get_org(conn, org_id)
    if (data.user_id is None) == (data.email is None):
        raise ApiError("invalid_request_error", "Give exactly one of 'user_id' or 'email'", param="user_id")
    if data.user_id is not None:
        user_id = (await get_user(conn, data.user_id)).id
    else:
        assert data.email is not None
        row = (await conn.execute(text("SELECT id FROM users WHERE email = :e"),
                                  {"e": data.email.strip().lower()})).first()
        user_id = str(row[0]) if row else (await create_user(conn, UserCreate(email=data.email,
                                                                              name=data.name),
                                                             actor)).id
    found = (await conn.execute(text("SELECT id FROM memberships WHERE org_id = :o AND user_id = :u"),
                                {"o": org_id, "u": user_id})).first()
    _conflict_if(found, f"User {user_id!r} is already a member of this organization", "user_id")
    await conn.execute(text("INSERT INTO memberships (id, org_id, user_id, role, created_at)"
                            " VALUES (:id, :o, :u, :r, :now)"),
                       {"id": new_id("mem"), "o": org_id, "u": user_id, "r": _role(data.role), "now": now_ms()})
    await audit(conn, org_id, actor, "member.added", user_id, {"role": _role(data.role)})
    return await get_member(conn, org_id, user_id)


async def list_members(conn: AsyncConnection, org_id: str) -> list[MemberView]:
    await get_org(conn, org_id)
    return [_member(r) for r in await conn.execute(text(_MEMBER_SQL + " ORDER BY m.created_at, m.id"),
                                                   {"o": org_id})]


async def get_member(conn: AsyncConnection, org_id: str, user_id: str) -> MemberView:
    row = (await conn.execute(text(_MEMBER_SQL + " AND m.user_id = :u"), {"o": org_id, "u": user_id})).first()
    if row is None:
        raise ApiError("not_found", f"No member {user_id!r}")
    return _member(row)


async def keep_an_owner(conn: AsyncConnection, org_id: str, user_id: str) -> None:
    owners = (await conn.execute(text("SELECT COUNT(*) FROM memberships WHERE org_id = :o AND role = 'owner'"
                                      " AND user_id != :u"), {"o": org_id, "u": user_id})).scalar_one()
    if int(owners) == 0:
        raise ApiError("conflict", "An organization must keep at least one owner", param="role")


async def update_member(conn: AsyncConnection, org_id: str, user_id: str, patch: MemberPatch,
                        actor: str) -> MemberView:
    current = await get_member(conn, org_id, user_id)
    role = _role(patch.role)
    if current.role == "owner" and role != "owner":
        await keep_an_owner(conn, org_id, user_id)
    await conn.execute(text("UPDATE memberships SET role = :r WHERE org_id = :o AND user_id = :u"),
                       {"r": role, "o": org_id, "u": user_id})
    ended = await revoke_all(conn, user_id) if gains(role, current.role) else 0  # signs in again (policy.gains)
    await audit(conn, org_id, actor, "member.updated", user_id, {"role": role, "was": current.role,
                                                                 "sessions_ended": ended})
    return await get_member(conn, org_id, user_id)


async def remove_member(conn: AsyncConnection, org_id: str, user_id: str, actor: str) -> MemberView:
    current = await get_member(conn, org_id, user_id)
    if current.role == "owner":
        await keep_an_owner(conn, org_id, user_id)
    for table in ("membership_projects", "memberships"):
        await conn.execute(text(f"DELETE FROM {table} WHERE org_id = :o AND user_id = :u"),
                           {"o": org_id, "u": user_id})
    await revoke_all(conn, user_id)  # signed out everywhere: the removed role ends now, not at expiry
    await audit(conn, org_id, actor, "member.removed", user_id, {"role": current.role})
    return current
