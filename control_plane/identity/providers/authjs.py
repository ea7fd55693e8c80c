"""The `authjs` identity provider: an Auth.js app signs customers in, the platform accepts its sessions.

Two forms, as Auth.js's two session strategies:
- database sessions: the Auth.js app shares this database (its adapter writes `users`, `accounts`
  and `sessions`, storing the SHA-256 of the session token in `session_token_hash`; see
  docs/identity.md); the cookie `authjs.session-token` (or `__Secure-authjs.session-token`) is
  looked up like a local session, with the same expiry rules;
- JWT sessions: a token signed HS256 with the app's secret (`NX_AUTHJS_SECRET`; Auth.js's `jwt.encode`
  set to sign instead of encrypt), as the cookie or `Authorization: Bearer`; expiry checked, and
  `iss` when `NX_AUTHJS_ISSUER` is set. Its `sub` is the user id (the shared `users` table), or an
  `accounts(provider='authjs')` subject.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.identity.providers.clerk import account_user, presented
from control_plane.identity.providers.jwt import InvalidToken, check_claims, parse, verify_hs256
from control_plane.identity.sessions import SignedIn, lookup_session
from core.db import read_tx

__all__ = ["AuthjsProvider"]

log = logging.getLogger("nx.identity.authjs")
COOKIES = ("__Secure-authjs.session-token", "authjs.session-token")


class AuthjsProvider:
    name = "authjs"
    passwords = False

    def __init__(self, state: State) -> None:
        self.state = state
        self.secret = state.settings.authjs_secret
        self.issuer = state.settings.authjs_issuer or None

    async def authenticate(self, request: Request[Any, Any, Any],
                           conn: AsyncConnection | None = None) -> SignedIn | None:
        found = next((f for f in (presented(request, c) for c in COOKIES) if f is not None), None)
        if found is None:
            return None
        token, via = found
        if token.count(".") == 2:
            return await self._jwt(token, via)
        row = await lookup_session(self.state.engine, token, self.state.settings, conn)
        if row is None:
            return None
        return SignedIn(user_id=row.user_id, session_id=row.id, provider="authjs",
                        via="bearer" if via == "bearer" else "cookie")

    async def _jwt(self, token: str, via: str) -> SignedIn | None:
        if not self.secret:
            return None
        try:
            header, claims, signing_input, signature = parse(token)
            verify_hs256(header, signing_input, signature, self.secret)
            check_claims(claims, issuer=self.issuer)
        except InvalidToken as exc:
            log.info("Auth.js token refused: %s", exc)
            return None
        subject = str(claims["sub"])
        user_id = await account_user(self.state, "authjs", subject) or await self._user(subject)
        if user_id is None:
            return None
        return SignedIn(user_id=user_id, session_id=f"authjs:{claims.get('jti') or subject}", provider="authjs",
                        via="bearer" if via == "bearer" else "cookie")

    async def _user(self, user_id: str) -> str | None:
        from sqlalchemy import text

        async with read_tx(self.state.engine) as conn:
            row = (await conn.execute(text("SELECT id FROM users WHERE id = :u"), {"u": user_id})).first()
        return None if row is None else str(row[0])
