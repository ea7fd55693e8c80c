"""Identity providers: who signs customers in (`NX_IDENTITY_PROVIDER`).

Each turns a request into a `SignedIn` (our user id, a session id) or None:
- `local` (default): the platform's own email-and-password accounts and sessions (sessions.py).
- `clerk`: a Clerk session JWT (`Authorization: Bearer` or Clerk's `__session` cookie) verified
  against Clerk's JWKS; users, organizations and memberships synced from Clerk's webhooks (clerk.py).
- `authjs`: an Auth.js app sharing the database (its session cookie, looked up in `sessions`) or
  a JWT it signed (authjs.py).
External identities map onto our users through `accounts(provider, provider_account_id)`.
"""

from __future__ import annotations

from typing import Any, Protocol

from litestar import Request
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.identity.sessions import SESSION_COOKIE, SignedIn, lookup_session

__all__ = ["IdentityProvider", "LocalProvider", "provider_of"]


class IdentityProvider(Protocol):
    name: str

    @property
    def passwords(self) -> bool:
        """Whether this provider's users sign up and in here with a password."""
        ...

    async def authenticate(self, request: Request[Any, Any, Any],
                           conn: AsyncConnection | None = None) -> SignedIn | None:
        """`conn`: the route's transaction, if it holds one (sessions.lookup_session)."""
        ...


class LocalProvider:
    name = "local"
    passwords = True

    def __init__(self, state: State) -> None:
        self.state = state

    async def authenticate(self, request: Request[Any, Any, Any],
                           conn: AsyncConnection | None = None) -> SignedIn | None:
        token = request.cookies.get(SESSION_COOKIE, "")
        found = await lookup_session(self.state.engine, token, self.state.settings, conn)
        if found is None:
            return None
        return SignedIn(user_id=found.user_id, session_id=found.id, provider="local", via="cookie", token=token)


def provider_of(state: State) -> IdentityProvider:
    """The configured provider, made once per process."""
    made: IdentityProvider | None = getattr(state, "identity_provider", None)
    if made is None:
        made = _make(state)
        state.identity_provider = made
    return made


def _make(state: State) -> IdentityProvider:
    kind = state.settings.identity_provider
    if kind == "clerk":
        from control_plane.identity.providers.clerk import ClerkProvider

        return ClerkProvider(state)
    if kind == "authjs":
        from control_plane.identity.providers.authjs import AuthjsProvider

        return AuthjsProvider(state)
    return LocalProvider(state)
