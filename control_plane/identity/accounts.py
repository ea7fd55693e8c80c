"""Local accounts: sign-up (with its organization), email verification, sign-in.

Sign-up answers the same whether or not the email is taken (the owner of a taken one gets a mail
saying so instead of a link), and the sign-in refusals are one `invalid_credentials` for a wrong
password and an unknown email alike, at the same argon2 cost; only a right password learns that the
email is not verified yet. Password work runs outside the database transactions (see passwords.py).

Sign-up creates an organization with its default project and the user as its owner, and no key.
Its promotional credit (`NX_SIGNUP_CREDIT_NANOS`, default 0) is granted through the ledger once,
when the email is verified (idempotency key `signup:<org>`): an unverified address mints nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_plane.domain.orgs import MemberCreate, OrgCreate, add_member, create_org
from control_plane.identity import throttle, tokens
from control_plane.identity.mail import queue_mail
from control_plane.identity.models import OrganizationRef, SignUp, UserRef
from control_plane.identity.passwords import check_strength, hash_password, needs_rehash, verify_password
from control_plane.identity.sessions import create_session, revoke_session
from core import ledger
from core.audit import audit
from core.db import now_ms, read_tx, write_tx
from core.errors import ApiError
from core.ids import new_id
from core.settings import Settings

__all__ = ["Client", "link", "normalise_email", "organizations_of", "session_expires", "signin", "signup", "user_ref",
           "verify_email"]


REMAIL_AFTER_MS = 5 * 60_000


class Client:
    """Where a request came from, for the lockout, the session row and the audit log."""

    __slots__ = ("ip", "user_agent")

    def __init__(self, ip: str, user_agent: str) -> None:
        self.ip, self.user_agent = ip, user_agent


def normalise_email(email: str) -> str:
    return email.strip().lower()


def link(settings: Settings, path: str, token: str) -> str:
    return f"{settings.public_base_url or settings.edge_url}{path}?token={token}"


async def signup(engine: AsyncEngine, settings: Settings, data: SignUp, client: Client) -> str:
    """The normalised email; the user, organization, project and verification mail are committed."""
    email = normalise_email(data.email)
    check_strength(data.password, email)
    async with read_tx(engine) as conn:
        wait = await throttle.signup_wait(conn, client.ip)
    if wait is not None:
        raise ApiError("rate_limit_exceeded", f"Too many sign-ups from this address; retry in {wait} s.",
                       **{"retry-after": str(wait)})
    password_hash = await hash_password(data.password)
    try:
        async with write_tx(engine) as conn:
            await throttle.record_signup(conn, client.ip)
            if (await conn.execute(text("SELECT 1 FROM users WHERE email = :e"), {"e": email})).first():
                await queue_mail(conn, email, "Someone tried to sign up with your email",
                                 "Someone (maybe you) tried to create an account with this address, which already "
                                 "has one. Sign in, or reset your password if you forgot it. If it was not you, "
                                 "ignore this mail.\n")
                return email
            await _create_account(conn, settings, data, email, password_hash, client)
    except IntegrityError:  # the same email signed up concurrently: answer as for a taken one
        return email
    return email


async def _create_account(conn: AsyncConnection, settings: Settings, data: SignUp, email: str,
                          password_hash: str, client: Client) -> None:
    user_id, now = new_id("user"), now_ms()
    actor = f"user:{user_id}"
    await conn.execute(text("INSERT INTO users (id, email, name, password_hash, created_at, password_changed_at)"
                            " VALUES (:id, :e, :n, :h, :now, :now)"),
                       {"id": user_id, "e": email, "n": data.name, "h": password_hash, "now": now})
    await conn.execute(text("INSERT INTO accounts (id, user_id, type, provider, provider_account_id, created_at)"
                            " VALUES (:id, :u, 'credentials', 'local', :u, :now)"),
                       {"id": new_id("ident"), "u": user_id, "now": now})
    org_name = data.organization_name or f"{data.name.strip() or email.split('@')[0]}'s organization"
    org = await create_org(conn, OrgCreate(name=org_name[:200]), actor)
    await add_member(conn, org.id, MemberCreate(role="owner", user_id=user_id), actor)
    await conn.execute(text("UPDATE users SET signup_org_id = :o WHERE id = :u"), {"o": org.id, "u": user_id})
    await audit(conn, org.id, actor, "user.signed_up", user_id, {"email": email, "ip": client.ip})
    await _mail_verification(conn, settings, user_id, email)


async def _mail_verification(conn: AsyncConnection, settings: Settings, user_id: str, email: str) -> None:
    token = await tokens.issue(conn, user_id, "verify_email")
    await queue_mail(conn, email, "Verify your email",
                     f"Confirm this address to sign in:\n\n    {link(settings, '/auth/verify', token)}\n\n"
                     f"or POST /auth/verify with {{\"token\": \"{token}\"}}. The link works once, for 24 hours.\n")


async def _remail_verification(engine: AsyncEngine, settings: Settings, user_id: str, email: str) -> None:
    """A new link for a user who signs in unverified (the first may have expired or been lost); at
    most one every `REMAIL_AFTER_MS`, so sign-in attempts cannot flood the mailbox."""
    async with write_tx(engine) as conn:
        last = (await conn.execute(text("SELECT MAX(created_at) FROM verification_tokens WHERE identifier = :u"
                                        " AND purpose = 'verify_email'"), {"u": user_id})).scalar_one()
        if last is None or now_ms() - int(last) >= REMAIL_AFTER_MS:
            await _mail_verification(conn, settings, user_id, email)


async def verify_email(conn: AsyncConnection, settings: Settings, token: str) -> UserRef:
    user_id = await tokens.consume(conn, token, "verify_email")
    if user_id is None:
        raise ApiError("invalid_token", "This verification token is unknown, already used or expired; sign in to "
                       "get a new one.", param="token")
    now = now_ms()
    await conn.execute(text("UPDATE users SET email_verified_at = :now WHERE id = :u AND email_verified_at IS NULL"),
                       {"now": now, "u": user_id})
    row = (await conn.execute(text("SELECT signup_org_id FROM users WHERE id = :u"), {"u": user_id})).first()
    org_id = None if row is None or row[0] is None else str(row[0])
    if org_id is not None and settings.signup_credit_nanos > 0:
        await ledger.grant(conn, org_id, settings.signup_credit_nanos, idempotency_key=f"signup:{org_id}",
                           actor=f"user:{user_id}", reason="sign-up credit", promotional=True)
    await audit(conn, org_id, f"user:{user_id}", "user.email_verified", user_id, {})
    return await user_ref(conn, user_id)


async def user_ref(conn: AsyncConnection, user_id: str) -> UserRef:
    row = (await conn.execute(text("SELECT id, email, name, email_verified_at FROM users WHERE id = :u"),
                              {"u": user_id})).first()
    if row is None:
        raise ApiError("not_found", f"No user {user_id!r}")
    return UserRef(id=str(row.id), email=str(row.email), name=str(row.name),
                   email_verified=row.email_verified_at is not None)


async def session_expires(conn: AsyncConnection, session_id: str) -> int | None:
    """A stored session's absolute end (Unix seconds); None for a provider's token-only session."""
    row = (await conn.execute(text("SELECT expires FROM sessions WHERE id = :id"), {"id": session_id})).first()
    return None if row is None else int(row[0]) // 1000


async def organizations_of(conn: AsyncConnection, user_id: str) -> list[OrganizationRef]:
    rows = await conn.execute(text("SELECT o.id, o.name, m.role FROM memberships m JOIN organizations o"
                                   " ON o.id = m.org_id WHERE m.user_id = :u ORDER BY m.created_at, o.id"),
                              {"u": user_id})
    return [OrganizationRef(id=str(r.id), name=str(r.name), role=str(r.role)) for r in rows]


async def _locked(engine: AsyncEngine, email: str, ip: str) -> None:
    async with read_tx(engine) as conn:
        wait = await throttle.locked_for(conn, email, ip)
    if wait is not None:
        raise ApiError("rate_limit_exceeded", f"Too many failed sign-in attempts; retry in {wait} s.",
                       **{"retry-after": str(wait)})


async def signin(engine: AsyncEngine, settings: Settings, email: str, password: str, client: Client,
                 presented: str | None) -> tuple[str, str, str]:
    """(user id, session id, token) of a new session. Any session token the request presented is
    ended first: the signed-in session always has a token of its own (no fixation)."""
    email = normalise_email(email)
    await _locked(engine, email, client.ip)
    async with read_tx(engine) as conn:
        row: Any = (await conn.execute(text("SELECT id, password_hash, email_verified_at FROM users WHERE email = :e"),
                                       {"e": email})).first()
    stored = None if row is None or row.password_hash is None else str(row.password_hash)
    if not await verify_password(stored, password):
        async with write_tx(engine) as conn:
            await throttle.record_failure(conn, email, client.ip)
        raise ApiError("invalid_credentials", "Wrong email or password.")
    user_id = str(row.id)
    if row.email_verified_at is None:
        await _remail_verification(engine, settings, user_id, email)
        raise ApiError("email_not_verified", "Verify your email first: follow the link we mailed you (a new "
                       "one is on its way if the last is more than 5 minutes old).")
    rehashed = await hash_password(password) if stored and needs_rehash(stored) else None
    async with write_tx(engine) as conn:
        await throttle.record_success(conn, email)
        if presented:
            found = (await conn.execute(text("SELECT id FROM sessions WHERE session_token_hash = :h"),
                                        {"h": tokens.sha256_hex(presented)})).first()
            if found is not None:
                await revoke_session(conn, str(found[0]))
        if rehashed:
            await conn.execute(text("UPDATE users SET password_hash = :h WHERE id = :u"), {"h": rehashed, "u": user_id})
        session_id, token = await create_session(conn, user_id, settings, ip=client.ip, user_agent=client.user_agent)
        await audit(conn, None, f"user:{user_id}", "user.signed_in", session_id, {"ip": client.ip})
    return user_id, session_id, token
