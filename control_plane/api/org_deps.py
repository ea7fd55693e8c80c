"""What every customer REST route (`/v1/organization/...`) shares: the caller as a Principal, the
permission check, pagination, and the deleted-object answer.

The caller is resolved once per request (control_plane/identity/principal.py) on the request's
own transaction; `record_origin` puts the client address where the audit log finds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.params import Parameter
from litestar.types import ASGIApp, Receive, Scope, Send
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.deps import provide_tx
from control_plane.api.guards import client_address
from control_plane.api.lists import Page, page
from control_plane.identity.policy import Permission, require
from control_plane.identity.principal import Credentials, Principal, resolve_principal
from control_plane.identity.sessions import check_csrf, signed_in
from core.apikeys import ADMIN_KEY_PREFIX
from core.audit import audit_origin
from core.errors import ApiError

__all__ = ["ORG_DEPENDENCIES", "After", "Deleted", "Limit", "allowed", "paginate", "provide_principal",
           "record_origin", "session_user"]

Limit = Annotated[int, Parameter(ge=1, le=100, description="Items per page (1-100).")]
After = Annotated[str | None, Parameter(description="The last id of the previous page.", max_length=100)]


_SAFE = ("GET", "HEAD", "OPTIONS")


class Deleted(msgspec.Struct, kw_only=True):
    id: str
    object: str
    deleted: Literal[True] = True


async def session_user(request: Request[Any, Any, Any], conn: AsyncConnection, write: bool) -> str | None:
    """The signed-in user of the request's session cookie (identity's sessions), if any; a write
    with a cookie must pass the CSRF check."""
    who = await signed_in(request, conn)
    if who is not None and write:
        check_csrf(request, who)
    return None if who is None else who.user_id


async def provide_principal(request: Request[Any, Any, Any], state: State, conn: AsyncConnection) -> Principal:
    """An `nx_admin_` bearer token is an admin key; anything else is the identity provider's (a
    session cookie, or a Clerk or Auth.js bearer token)."""
    headers = request.headers
    authorization = headers.get("authorization", "")
    scheme, _sep, token = authorization.partition(" ")
    admin_key = scheme.lower() == "bearer" and token.strip().startswith(ADMIN_KEY_PREFIX)
    user = None if admin_key else await session_user(request, conn, write=request.method not in _SAFE)
    creds = Credentials(authorization=authorization, organization=headers.get("openai-organization", "").strip(),
                        client=client_address(request), session_user_id=user)
    return await resolve_principal(conn, creds, state.secrets.key_pepper, state.org_throttle)


ORG_DEPENDENCIES = {"conn": Provide(provide_tx), "who": Provide(provide_principal)}


def allowed(who: Principal, permission: Permission) -> Principal:
    require(who.role, permission)
    return who


def paginate(items: Sequence[Any], limit: int, after: str | None) -> Page[Any]:
    """Items sorted by id (ids sort by creation time); the page after `after`."""
    rest = [i for i in items if after is None or i.id > after]
    return page(rest[:limit], has_more=len(rest) > limit)


def record_origin(app: ASGIApp) -> ASGIApp:
    """Middleware: the client address of every request, for the audit rows it writes (core/audit.py)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        token = audit_origin.set(client_address(ASGIConnection(scope)))
        try:
            await app(scope, receive, send)
        finally:
            audit_origin.reset(token)

    return middleware


def not_found(what: str, ident: str) -> ApiError:
    return ApiError("not_found", f"No {what} {ident!r}")
