"""The `clerk` identity provider: Clerk signs customers in; the platform verifies its session JWTs.

A request carries Clerk's session token as `Authorization: Bearer <jwt>` or in Clerk's `__session`
cookie. It is verified against the JWKS of the Clerk instance (`NX_CLERK_JWKS_URL`, default
`<issuer>/.well-known/jwks.json`; cached, fetched again for an unknown `kid` at most once every
`REFETCH_S`), then: expiry and not-before, `iss` equal to `NX_CLERK_ISSUER`, `aud` when
`NX_CLERK_AUDIENCE` is set, and `azp` among `NX_CLERK_AUTHORIZED_PARTIES` when set (Clerk's
audience check). The subject (`user_...`) maps onto our user through `accounts(provider='clerk')`,
which the webhooks fill (clerk_webhooks.py); an unknown subject is not signed in.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
from litestar import Request
from litestar.datastructures import State
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.identity.providers.jwt import InvalidToken, check_claims, parse, verify_with_jwk
from control_plane.identity.sessions import SignedIn
from core.db import read_tx

__all__ = ["ClerkProvider", "Jwks"]

log = logging.getLogger("nx.identity.clerk")
REFETCH_S = 60.0
CACHE_S = 3600.0


class Jwks:
    """A JWKS document fetched over HTTPS and kept by key id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.keys: dict[str, dict[str, Any]] = {}
        self.fetched_at = 0.0

    async def _fetch(self) -> None:
        self.fetched_at = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(self.url)
            r.raise_for_status()
            doc = r.json()
        self.keys = {str(k.get("kid", "")): k for k in doc.get("keys", []) if isinstance(k, dict)}

    async def key(self, kid: str) -> dict[str, Any]:
        age = time.monotonic() - self.fetched_at
        if (kid not in self.keys and age > REFETCH_S) or age > CACHE_S:
            try:
                await self._fetch()
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("JWKS fetch from %s failed: %s", self.url, exc)
        if kid not in self.keys:
            raise InvalidToken(f"unknown key id {kid!r}")
        return self.keys[kid]


async def account_user(state: State, provider: str, subject: str) -> str | None:
    async with read_tx(state.engine) as conn:
        row = (await conn.execute(text("SELECT user_id FROM accounts WHERE provider = :p AND provider_account_id = :s"),
                                  {"p": provider, "s": subject})).first()
    return None if row is None else str(row[0])


def presented(request: Request[Any, Any, Any], cookie: str) -> tuple[str, str] | None:
    """(token, "bearer" | "cookie") from the Authorization header, else from the named cookie."""
    scheme, _sep, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip(), "bearer"
    value = request.cookies.get(cookie, "")
    return (value, "cookie") if value else None


class ClerkProvider:
    name = "clerk"
    passwords = False

    def __init__(self, state: State) -> None:
        s = state.settings
        self.state = state
        self.issuer = s.clerk_issuer.rstrip("/")
        self.jwks = Jwks(s.clerk_jwks_url or f"{self.issuer}/.well-known/jwks.json")
        self.audience = s.clerk_audience or None
        self.parties = frozenset(p.strip().rstrip("/") for p in s.clerk_authorized_parties.split(",") if p.strip())

    async def verify(self, token: str) -> dict[str, Any]:
        header, claims, signing_input, signature = parse(token)
        verify_with_jwk(header, signing_input, signature, await self.jwks.key(str(header.get("kid", ""))))
        check_claims(claims, issuer=self.issuer, audience=self.audience, parties=self.parties)
        return claims

    async def authenticate(self, request: Request[Any, Any, Any],
                           conn: AsyncConnection | None = None) -> SignedIn | None:
        found = presented(request, "__session")
        if found is None:
            return None
        token, via = found
        try:
            claims = await self.verify(token)
        except InvalidToken as exc:
            log.info("Clerk session token refused: %s", exc)
            return None
        user_id = await account_user(self.state, "clerk", str(claims["sub"]))
        if user_id is None:
            return None
        session = str(claims.get("sid") or claims.get("jti") or "")
        return SignedIn(user_id=user_id, session_id=f"clerk:{session}", provider="clerk",
                        via="bearer" if via == "bearer" else "cookie")
