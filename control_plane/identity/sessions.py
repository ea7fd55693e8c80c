"""Sign-in sessions: server-side rows, a cookie holding only a random token, CSRF for writes.

The cookie `__Host-nx_session` is HttpOnly, SameSite=Lax, Path=/, without Domain, and Secure unless
the request came to a loopback host over plain HTTP (the embedded default). The database keeps the
token's SHA-256. A session ends at its absolute expiry (`expires`) or when unused for the idle
time (`idle_expires`, moved forward at most once a minute, so reads rarely write); signing in,
changing the password and any privilege change issue a new token (`rotate`), so a token planted
before sign-in (session fixation) never becomes a signed-in one.

CSRF: every cookie-authenticated write sends `X-CSRF-Token`, an HMAC of the session token under a
server secret, handed out by sign-in and `GET /auth/session` and as the readable cookie
`__Host-nx_csrf` (double-submit). Another site can make the browser send the session cookie, but
cannot read or compute that value. Requests authenticated by an `Authorization` header (a provider's
bearer JWT) carry no ambient credential and need none.

For the customer routes (`require_user`, `check_csrf`, `signed_in`): any identity provider's
session resolves to the same `SignedIn` (control_plane/identity/providers/).
"""

from __future__ import annotations

import hmac
from hashlib import sha256
from typing import Any, Literal

import msgspec
from litestar import Request
from litestar.datastructures import Cookie
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_plane.identity.tokens import new_secret, sha256_hex
from core.db import now_ms, read_tx, write_tx
from core.errors import ApiError
from core.ids import new_id
from core.ipnet import canonical_address
from core.rows import columns, row_as
from core.settings import Settings

__all__ = ["CSRF_COOKIE", "CSRF_HEADER", "SESSION_COOKIE", "SignedIn", "check_csrf", "cleared_cookies",
           "create_session", "csrf_token", "lookup_session", "require_user", "revoke_all", "revoke_session",
           "rotate", "session_cookies", "signed_in"]

SESSION_COOKIE = "__Host-nx_session"
CSRF_COOKIE = "__Host-nx_csrf"
CSRF_HEADER = "x-csrf-token"
TOUCH_EVERY_MS = 60_000
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class SignedIn(msgspec.Struct, frozen=True, kw_only=True):
    """Who a request is signed in as: our user id, the session's id, and how it was presented."""

    user_id: str
    session_id: str
    provider: str
    via: Literal["cookie", "bearer"]
    token: str = ""
    """The presented session token (local sessions), from which the CSRF token is derived."""


class SessionRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    expires: int
    idle_expires: int
    last_seen_at: int


def csrf_token(secret: str, session_token: str) -> str:
    return hmac.new(secret.encode(), b"nx-csrf:" + session_token.encode(), sha256).hexdigest()


def _is_loopback(request: Request[Any, Any, Any]) -> bool:
    host = (request.url.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return canonical_address(host).is_loopback
    except ValueError:
        return False


def session_cookies(request: Request[Any, Any, Any], token: str, settings: Settings) -> list[Cookie]:
    secure = not (_is_loopback(request) and request.url.scheme == "http")
    age = settings.session_absolute_seconds
    csrf = csrf_token(request.app.state.secrets.internal_token, token)
    return [Cookie(key=SESSION_COOKIE, value=token, path="/", httponly=True, secure=secure, samesite="lax",
                   max_age=age),
            Cookie(key=CSRF_COOKIE, value=csrf, path="/", httponly=False, secure=secure, samesite="lax",
                   max_age=age)]


def cleared_cookies(request: Request[Any, Any, Any]) -> list[Cookie]:
    secure = not (_is_loopback(request) and request.url.scheme == "http")
    return [Cookie(key=name, value="", path="/", httponly=name == SESSION_COOKIE, secure=secure, samesite="lax",
                   max_age=0) for name in (SESSION_COOKIE, CSRF_COOKIE)]


async def create_session(conn: AsyncConnection, user_id: str, settings: Settings, *, ip: str = "",
                         user_agent: str = "", provider: str = "local") -> tuple[str, str]:
    """(session id, token) of a new session; the token goes into the cookie and nowhere else."""
    now, token, session_id = now_ms(), new_secret(), new_id("sess")
    expires = now + settings.session_absolute_seconds * 1000
    await conn.execute(text(
        "INSERT INTO sessions (id, session_token_hash, user_id, provider, expires, idle_expires, last_seen_at,"
        " created_at, created_ip, user_agent) VALUES (:id, :h, :u, :p, :exp, :idle, :now, :now, :ip, :ua)"),
        {"id": session_id, "h": sha256_hex(token), "u": user_id, "p": provider, "exp": expires,
         "idle": min(expires, now + settings.session_idle_seconds * 1000), "now": now, "ip": ip[:64],
         "ua": user_agent[:300]})
    return session_id, token


async def rotate(conn: AsyncConnection, session_id: str) -> str:
    """A new token for the same session (privilege change, password change); the old one stops working."""
    token = new_secret()
    await conn.execute(text("UPDATE sessions SET session_token_hash = :h WHERE id = :id"),
                       {"h": sha256_hex(token), "id": session_id})
    return token


async def revoke_session(conn: AsyncConnection, session_id: str) -> None:
    await conn.execute(text("DELETE FROM sessions WHERE id = :id"), {"id": session_id})


async def revoke_all(conn: AsyncConnection, user_id: str, *, keep: str | None = None) -> int:
    """End every session of a user ("sign out everywhere", removal from an organization, a password
    reset), except `keep`. Returns how many ended."""
    result = await conn.execute(text("DELETE FROM sessions WHERE user_id = :u AND id <> :keep"),
                                {"u": user_id, "keep": keep or ""})
    return int(result.rowcount or 0)


async def lookup_session(engine: AsyncEngine, token: str, settings: Settings,
                         conn: AsyncConnection | None = None) -> SessionRow | None:
    """The live session of a token (expired ones are deleted on sight); moves its idle expiry.
    A route that already holds a transaction passes it as `conn`: the writes go there (on SQLite a
    second write transaction would wait for the route's own, for ever)."""
    if not token or len(token) > 200:
        return None
    if conn is not None:
        return await _lookup(conn, token, settings)
    async with read_tx(engine) as reader:
        found = await _read(reader, token)
    if found is None or not _needs_write(found):
        return found
    async with write_tx(engine) as writer:
        return await _lookup(writer, token, settings)


async def _read(conn: AsyncConnection, token: str) -> SessionRow | None:
    row = (await conn.execute(text(f"SELECT {columns(SessionRow)} FROM sessions WHERE session_token_hash = :h"),
                              {"h": sha256_hex(token)})).first()
    return None if row is None else row_as(SessionRow, row)


def _needs_write(found: SessionRow) -> bool:
    now = now_ms()
    return now >= found.expires or now >= found.idle_expires or now - found.last_seen_at >= TOUCH_EVERY_MS


async def _lookup(conn: AsyncConnection, token: str, settings: Settings) -> SessionRow | None:
    found = await _read(conn, token)
    if found is None or not _needs_write(found):
        return found
    now = now_ms()
    if now >= found.expires or now >= found.idle_expires:
        await revoke_session(conn, found.id)
        return None
    idle = min(found.expires, now + settings.session_idle_seconds * 1000)
    await conn.execute(text("UPDATE sessions SET last_seen_at = :now, idle_expires = :idle WHERE id = :id"),
                       {"now": now, "idle": idle, "id": found.id})
    return SessionRow(id=found.id, user_id=found.user_id, expires=found.expires, idle_expires=idle, last_seen_at=now)


async def signed_in(request: Request[Any, Any, Any], conn: AsyncConnection | None = None) -> SignedIn | None:
    """The signed-in user of this request, by the configured identity provider; None if nobody.
    Pass the route's transaction as `conn` when it holds one (see `lookup_session`)."""
    from control_plane.identity.providers import provider_of

    return await provider_of(request.app.state).authenticate(request, conn)


async def require_user(request: Request[Any, Any, Any], conn: AsyncConnection | None = None) -> SignedIn:
    """The signed-in user, or 401 `not_signed_in`; for a write (any method but GET/HEAD/OPTIONS) the
    CSRF check too. Pass the route's transaction as `conn` when it holds one."""
    who = await signed_in(request, conn)
    if who is None:
        raise ApiError("not_signed_in", "Sign in first: this route needs a session.")
    if request.method not in _SAFE:
        check_csrf(request, who)
    return who


def check_csrf(request: Request[Any, Any, Any], who: SignedIn) -> None:
    """Refuse (403 `csrf_failed`) a cookie-authenticated write without the session's CSRF token."""
    if who.via == "bearer":
        return
    sent = request.headers.get(CSRF_HEADER, "")
    if who.token:
        expected = csrf_token(request.app.state.secrets.internal_token, who.token)
        if hmac.compare_digest(sent.encode(), expected.encode()):
            return
    elif _same_origin(request):  # a provider's own cookie (Clerk, Auth.js): the browser's origin headers
        return
    raise ApiError("csrf_failed", f"Cookie-authenticated writes need the '{CSRF_HEADER}' header "
                   "(from sign-in, GET /auth/session, or the __Host-nx_csrf cookie).")


def _same_origin(request: Request[Any, Any, Any]) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is not None and origin.rstrip("/") == f"{request.url.scheme}://{request.url.netloc}"
