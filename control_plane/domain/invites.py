"""Invitations to an organization, by email, with a role and optionally some projects.

Life cycle: `pending` -> `accepted` (once: the token is single use) or `revoked`; a pending
invitation older than 7 days is `expired` (computed, not stored, so no job has to flip it). Only
the token's HMAC is stored (pepper of core/secrets.py, as API keys): the token itself goes to the
invitee by email and nowhere else, so the inviter cannot accept in the invitee's name.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.domain.members import set_projects
from control_plane.domain.orgs import Email
from control_plane.identity.policy import Role
from control_plane.identity.principal import Principal
from core.apikeys import hash_key
from core.audit import audit
from core.db import now_ms
from core.errors import ApiError
from core.ids import new_id
from core.rows import columns, row_as

__all__ = ["INVITE_TTL_MS", "InviteAccept", "InviteCreate", "InviteView", "NewInvite", "accept_invite",
           "create_invite", "get_invite", "list_invites", "revoke_invite"]

INVITE_TTL_MS = 7 * 24 * 3600 * 1000
TOKEN_PREFIX = "nxinv_"  # noqa: S105  (a prefix, not a secret)


class InviteCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Email
    role: Role
    projects: list[str] | None = None
    """Narrow the new member to these projects; null: every project."""


class InviteView(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["organization.invite"] = "organization.invite"
    email: str
    role: str
    status: Literal["pending", "accepted", "revoked", "expired"]
    projects: list[str] | None
    invited_at: int
    expires_at: int
    accepted_at: int | None


class NewInvite(msgspec.Struct, kw_only=True):
    invite: InviteView
    token: str
    """For the invitation email only; never answered to the inviter."""


class InviteAccept(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: str


class _Row(msgspec.Struct, frozen=True):
    """An invitation as stored (projects as JSON text, times in milliseconds), with its organization."""

    id: str
    email: str
    role: str
    status: str
    projects: str | None
    created_at: int
    expires_at: int
    accepted_at: int | None
    org_id: str


_COLS = columns(_Row)


def _view(row: Sequence[object], now: int) -> InviteView:
    return _view_of(row_as(_Row, row), now)


def _view_of(r: _Row, now: int) -> InviteView:
    status = "expired" if r.status == "pending" and r.expires_at <= now else r.status
    return InviteView(id=r.id, email=r.email, role=r.role, status=status,  # type: ignore[arg-type]
                      projects=None if r.projects is None else msgspec.json.decode(r.projects),
                      invited_at=r.created_at // 1000, expires_at=r.expires_at // 1000,
                      accepted_at=None if r.accepted_at is None else r.accepted_at // 1000)


async def create_invite(conn: AsyncConnection, who: Principal, data: InviteCreate, pepper: str) -> NewInvite:
    if data.role == "owner" and who.role != "owner":
        raise ApiError("permission_denied", "Only an owner may invite an owner.")
    email = data.email.strip().lower()
    member = (await conn.execute(text("SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id"
                                      " WHERE m.org_id = :o AND u.email = :e"), {"o": who.org_id, "e": email})).first()
    if member is not None:
        raise ApiError("conflict", f"{email!r} is already a member of this organization", param="email")
    now = now_ms()
    pending = (await conn.execute(text("SELECT 1 FROM invitations WHERE org_id = :o AND email = :e AND "
                                       "status = 'pending' AND expires_at > :now"),
                                  {"o": who.org_id, "e": email, "now": now})).first()
    if pending is not None:
        raise ApiError("conflict", f"{email!r} already has a pending invitation", param="email")
    if data.projects is not None:
        if not data.projects:
            raise ApiError("invalid_request_error", "projects: name at least one project, or null for every one",
                           param="projects")
        for project in data.projects:
            if (await conn.execute(text("SELECT 1 FROM projects WHERE id = :p AND org_id = :o"),
                                   {"p": project, "o": who.org_id})).first() is None:
                raise ApiError("invalid_request_error", f"projects: no project {project!r}", param="projects")
    token, invite_id = TOKEN_PREFIX + secrets.token_urlsafe(32), new_id("inv")
    await conn.execute(text(
        "INSERT INTO invitations (id, org_id, email, role, projects, token_hash, invited_by, created_at, expires_at)"
        " VALUES (:id, :o, :e, :r, :p, :h, :by, :now, :exp)"),
        {"id": invite_id, "o": who.org_id, "e": email, "r": data.role,
         "p": None if data.projects is None else msgspec.json.encode(sorted(set(data.projects))).decode(),
         "h": hash_key(token, pepper), "by": who.actor, "now": now, "exp": now + INVITE_TTL_MS})
    await audit(conn, who.org_id, who.actor, "invite.created", invite_id, {"email": email, "role": data.role})
    return NewInvite(invite=await get_invite(conn, who.org_id, invite_id), token=token)


async def list_invites(conn: AsyncConnection, org_id: str) -> list[InviteView]:
    now = now_ms()
    rows = await conn.execute(text(f"SELECT {_COLS} FROM invitations WHERE org_id = :o ORDER BY id"), {"o": org_id})
    return [_view(r, now) for r in rows]


async def get_invite(conn: AsyncConnection, org_id: str, invite_id: str) -> InviteView:
    row = (await conn.execute(text(f"SELECT {_COLS} FROM invitations WHERE id = :i AND org_id = :o"),
                              {"i": invite_id, "o": org_id})).first()
    if row is None:
        raise ApiError("not_found", f"No invite {invite_id!r}")
    return _view(row, now_ms())


async def revoke_invite(conn: AsyncConnection, who: Principal, invite_id: str) -> InviteView:
    current = await get_invite(conn, who.org_id, invite_id)
    if current.status == "accepted":
        raise ApiError("conflict", f"Invite {invite_id!r} was accepted; remove the member instead")
    if current.status != "revoked":
        await conn.execute(text("UPDATE invitations SET status = 'revoked', revoked_at = :now"
                                " WHERE id = :i AND org_id = :o AND status = 'pending'"),
                           {"now": now_ms(), "i": invite_id, "o": who.org_id})
        await audit(conn, who.org_id, who.actor, "invite.revoked", invite_id, {"email": current.email})
    return await get_invite(conn, who.org_id, invite_id)


async def accept_invite(conn: AsyncConnection, token: str, user_id: str, pepper: str) -> InviteView:
    """The signed-in user `user_id` accepts: the invitation must be pending, unexpired and addressed
    to their email. The membership and the acceptance are one transaction, and the guarded UPDATE
    makes a second use (even a concurrent one) find nothing pending."""
    row = (await conn.execute(text(f"SELECT {_COLS} FROM invitations WHERE token_hash = :h"),
                              {"h": hash_key(token, pepper)})).first()
    if row is None:
        raise ApiError("not_found", "No such invitation")
    found = row_as(_Row, row)
    view, org_id = _view_of(found, now_ms()), found.org_id
    email = (await conn.execute(text("SELECT email FROM users WHERE id = :u"), {"u": user_id})).scalar_one_or_none()
    if email is None or str(email).lower() != view.email:
        raise ApiError("not_found", "No such invitation")  # another user's invitation: as if there were none
    if view.status != "pending":
        raise ApiError("conflict", f"This invitation is {view.status}")
    now = now_ms()
    taken = await conn.execute(text("UPDATE invitations SET status = 'accepted', accepted_at = :now, accepted_by = :u"
                                    " WHERE id = :i AND status = 'pending' AND expires_at > :now"),
                               {"now": now, "u": user_id, "i": view.id})
    if taken.rowcount != 1:
        raise ApiError("conflict", "This invitation was used already")
    already = (await conn.execute(text("SELECT 1 FROM memberships WHERE org_id = :o AND user_id = :u"),
                                  {"o": org_id, "u": user_id})).first()
    if already is not None:
        raise ApiError("conflict", "You are already a member of this organization")
    await conn.execute(text("INSERT INTO memberships (id, org_id, user_id, role, created_at)"
                            " VALUES (:id, :o, :u, :r, :now)"),
                       {"id": new_id("mem"), "o": org_id, "u": user_id, "r": view.role, "now": now})
    await set_projects(conn, org_id, user_id, view.projects)
    await audit(conn, org_id, f"user:{user_id}", "invite.accepted", view.id, {"role": view.role})
    return await get_invite(conn, org_id, view.id)
