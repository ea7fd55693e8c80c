"""Customer REST API: the organization's members (`/v1/organization/users`) and invitations
(`/v1/organization/invites`), in OpenAI's organization admin shapes. Thin handlers over
control_plane/domain/members.py and invites.py.

An invitation's token travels only by email (control_plane/identity/mail.py): the answer to its
creation does not carry it. The invitee, signed in, accepts with `POST /invites/accept`.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.deps import provide_tx
from control_plane.api.lists import Page
from control_plane.api.org_deps import ORG_DEPENDENCIES, After, Deleted, Limit, allowed, paginate
from control_plane.domain import invites, members
from control_plane.identity.accounts import link
from control_plane.identity.mail import queue_mail
from control_plane.identity.principal import Principal
from control_plane.identity.sessions import check_csrf, rotate, session_cookies, signed_in
from core.errors import ApiError

__all__ = ["InviteAcceptController", "InvitesController", "UsersController"]


class UsersController(Controller):
    path = "/v1/organization/users"
    dependencies = ORG_DEPENDENCIES

    @get("/")
    async def list_users(self, conn: AsyncConnection, who: Principal, limit: Limit = 20,
                         after: After = None) -> Page[members.OrgUser]:
        return paginate(await members.list_users(conn, allowed(who, "members.read").org_id), limit, after)

    @get("/{user_id:str}")
    async def retrieve_user(self, conn: AsyncConnection, who: Principal, user_id: str) -> members.OrgUser:
        return await members.get_user(conn, allowed(who, "members.read").org_id, user_id)

    @post("/{user_id:str}", status_code=200)
    async def update_user(self, conn: AsyncConnection, who: Principal, user_id: str,
                          data: members.OrgUserPatch) -> members.OrgUser:
        """Change a member's role or the projects they are narrowed to."""
        return await members.update_user(conn, allowed(who, "members.write"), user_id, data)

    @delete("/{user_id:str}", status_code=200)
    async def delete_user(self, conn: AsyncConnection, who: Principal, user_id: str) -> members.MemberRemoved:
        """Remove a member (or leave, with your own id): their sessions end, the organization's keys
        they created stay and are listed."""
        if user_id != who.user_id:
            allowed(who, "members.write")
        return await members.remove_user(conn, who, user_id)


class InvitesController(Controller):
    path = "/v1/organization/invites"
    dependencies = ORG_DEPENDENCIES

    @get("/")
    async def list_invites(self, conn: AsyncConnection, who: Principal, limit: Limit = 20,
                           after: After = None) -> Page[invites.InviteView]:
        return paginate(await invites.list_invites(conn, allowed(who, "invites.read").org_id), limit, after)

    @post("/", status_code=201)
    async def create_invite(self, conn: AsyncConnection, state: State, request: Request[Any, Any, Any],
                            who: Principal, data: invites.InviteCreate) -> invites.InviteView:
        created = await invites.create_invite(conn, allowed(who, "invites.write"), data, state.secrets.key_pepper)
        await send_invitation(conn, request, created)
        return created.invite

    @get("/{invite_id:str}")
    async def retrieve_invite(self, conn: AsyncConnection, who: Principal, invite_id: str) -> invites.InviteView:
        return await invites.get_invite(conn, allowed(who, "invites.read").org_id, invite_id)

    @delete("/{invite_id:str}", status_code=200)
    async def delete_invite(self, conn: AsyncConnection, who: Principal, invite_id: str) -> Deleted:
        """Revoke a pending invitation; an accepted one cannot be (remove the member instead)."""
        await invites.revoke_invite(conn, allowed(who, "invites.write"), invite_id)
        return Deleted(id=invite_id, object="organization.invite.deleted")


class InviteAcceptController(Controller):
    path = "/v1/organization/invites/accept"
    dependencies = {"conn": Provide(provide_tx)}

    @post("/", status_code=200)
    async def accept_invite(self, conn: AsyncConnection, state: State, request: Request[Any, Any, Any],
                            data: invites.InviteAccept) -> Response[invites.InviteView]:
        """The signed-in invitee joins the organization (the invitation must be addressed to their email).
        Joining is a privilege change: a local session gets a new token (a new cookie)."""
        who = await signed_in(request, conn)
        if who is None:
            raise ApiError("missing_api_key", "Sign in to accept an invitation.")
        check_csrf(request, who)
        accepted = await invites.accept_invite(conn, data.token, who.user_id, state.secrets.key_pepper)
        if who.provider != "local":
            return Response(accepted)
        token = await rotate(conn, who.session_id)
        return Response(accepted, cookies=session_cookies(request, token, state.settings))


async def send_invitation(conn: AsyncConnection, request: Request[Any, Any, Any], created: invites.NewInvite) -> None:
    """The invitation email with its accept link (control_plane/identity/mail.py)."""
    settings = request.app.state.settings
    org = (await conn.execute(text("SELECT o.name FROM organizations o JOIN invitations i ON i.org_id = o.id"
                                   " WHERE i.id = :i"), {"i": created.invite.id})).scalar_one()
    await queue_mail(conn, created.invite.email, f"You are invited to {org}",
                     f"You are invited to join {org} as {created.invite.role}. Sign up or sign in with this "
                     f"address, then accept:\n\n    {link(settings, '/invites/accept', created.token)}\n\n"
                     f"or POST /v1/organization/invites/accept with {{\"token\": \"{created.token}\"}}. "
                     "The invitation works once, for 7 days.\n")
