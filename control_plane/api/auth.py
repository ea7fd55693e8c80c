"""Customer sign-up, sign-in and sessions: `/auth/...` (docs/identity.md).

Reached through the edge without an API key (Envoy routes `/auth/` to the control plane with its
ext_authz check off). Thin handlers over control_plane/identity/. Writes that act on a session
(`signout`, `signout_all`, `password`) are cookie-authenticated and need the CSRF header; the others
carry their own proof (a password, a mailed token, a provider's signature).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.api.deps import provide_tx
from control_plane.api.guards import client_address
from control_plane.identity import accounts, recovery
from control_plane.identity.models import (
    PasswordChange,
    PasswordReset,
    PasswordResetRequest,
    PasswordWasReset,
    ResetRequested,
    SessionView,
    SignedOut,
    SignIn,
    SignUp,
    SignUpAccepted,
    Verified,
    VerifyEmail,
)
from control_plane.identity.providers import clerk_webhooks, provider_of
from control_plane.identity.sessions import (
    SESSION_COOKIE,
    SignedIn,
    cleared_cookies,
    csrf_token,
    require_user,
    revoke_all,
    revoke_session,
    session_cookies,
)
from core.db import read_tx
from core.errors import ApiError

__all__ = ["AuthController"]


def _client(request: Request[Any, Any, Any]) -> accounts.Client:
    return accounts.Client(client_address(request), request.headers.get("user-agent", ""))


def _local_only(state: State) -> None:
    provider = provider_of(state)
    if not provider.passwords:
        raise ApiError("not_found", f"Accounts are managed by the '{provider.name}' identity provider here.")


async def _view(state: State, who: SignedIn, token: str | None = None) -> SessionView:
    async with read_tx(state.engine) as conn:
        user = await accounts.user_ref(conn, who.user_id)
        orgs = await accounts.organizations_of(conn, who.user_id)
        expires = await accounts.session_expires(conn, who.session_id)
    presented = token or who.token
    csrf = csrf_token(state.secrets.internal_token, presented) if presented else None
    return SessionView(id=who.session_id, provider=who.provider, user=user, organizations=orgs, expires_at=expires,
                       csrf_token=csrf)


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post("/signup", status_code=202)
    async def signup(self, state: State, request: Request[Any, Any, Any], data: SignUp) -> SignUpAccepted:
        _local_only(state)
        email = await accounts.signup(state.engine, state.settings, data, _client(request))
        return SignUpAccepted(email=email)

    @post("/verify", status_code=200, dependencies={"conn": Provide(provide_tx)})
    async def verify(self, state: State, conn: AsyncConnection, data: VerifyEmail) -> Verified:
        return Verified(user=await accounts.verify_email(conn, state.settings, data.token))

    @post("/signin", status_code=200)
    async def signin(self, state: State, request: Request[Any, Any, Any], data: SignIn) -> Response[SessionView]:
        _local_only(state)
        user_id, session_id, token = await accounts.signin(state.engine, state.settings, data.email, data.password,
                                                           _client(request), request.cookies.get(SESSION_COOKIE))
        who = SignedIn(user_id=user_id, session_id=session_id, provider="local", via="cookie", token=token)
        cookies = session_cookies(request, token, state.settings)
        return Response(await _view(state, who, token), cookies=cookies)

    @get("/session")
    async def session(self, state: State, request: Request[Any, Any, Any]) -> SessionView:
        """Who is signed in, their organizations and the CSRF token for writes."""
        return await _view(state, await require_user(request))

    @post("/signout", status_code=200, dependencies={"conn": Provide(provide_tx)})
    async def signout(self, request: Request[Any, Any, Any], conn: AsyncConnection) -> Response[SignedOut]:
        who = await require_user(request, conn)
        await revoke_session(conn, who.session_id)
        return Response(SignedOut(sessions_ended=1), cookies=cleared_cookies(request))

    @post("/signout_all", status_code=200, dependencies={"conn": Provide(provide_tx)})
    async def signout_all(self, request: Request[Any, Any, Any], conn: AsyncConnection) -> Response[SignedOut]:
        """End every session of the signed-in user, on every device."""
        who = await require_user(request, conn)
        ended = await revoke_all(conn, who.user_id)
        return Response(SignedOut(sessions_ended=ended), cookies=cleared_cookies(request))

    @post("/password", status_code=200)
    async def change_password(self, state: State, request: Request[Any, Any, Any],
                              data: PasswordChange) -> Response[SessionView]:
        """Change the password: the other sessions end, this one gets a new token."""
        _local_only(state)
        who = await require_user(request)
        token = await recovery.change_password(state.engine, who, data, _client(request))
        rotated = SignedIn(user_id=who.user_id, session_id=who.session_id, provider="local", via="cookie", token=token)
        return Response(await _view(state, rotated, token),
                        cookies=session_cookies(request, token, state.settings))

    @post("/password_reset", status_code=202)
    async def request_reset(self, state: State, data: PasswordResetRequest) -> ResetRequested:
        """Mail a reset link if an account has this email; the answer is the same either way."""
        _local_only(state)
        email = await recovery.request_reset(state.engine, state.settings, data.email)
        return ResetRequested(email=email)

    @post("/password_reset/complete", status_code=200)
    async def complete_reset(self, state: State, data: PasswordReset) -> PasswordWasReset:
        """Set a new password with a mailed token; every session of the user ends."""
        _local_only(state)
        return await recovery.complete_reset(state.engine, data)

    @post("/webhooks/clerk", status_code=200, dependencies={"conn": Provide(provide_tx)})
    async def clerk_webhook(self, state: State, request: Request[Any, Any, Any],
                            conn: AsyncConnection) -> clerk_webhooks.WebhookResult:
        """Users, organizations and memberships from Clerk (Svix-signed; each message applied once)."""
        secret = state.settings.clerk_webhook_secret
        if not secret:
            raise ApiError("not_found", "No Clerk webhook secret is configured here.")
        body = await request.body()
        msg_id = clerk_webhooks.verify_svix(secret, dict(request.headers), body)
        try:
            event = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise ApiError("invalid_json", "The webhook body is not JSON.") from exc
        if not isinstance(event, dict):
            raise ApiError("invalid_request_error", "The webhook body is not an event object.")
        return await clerk_webhooks.apply_event(conn, msg_id, event)
