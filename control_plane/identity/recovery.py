"""Password change (signed in) and password reset (by a mailed, single-use token).

A change needs the current password (a borrowed session alone cannot take the account over), ends
every other session of the user and gives the current one a new token. A reset ends every session,
and counts as proof of the mailbox (the email becomes verified). The reset request answers the same
whether or not the email has an account; only an existing one gets a mail.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.identity import throttle, tokens
from control_plane.identity.accounts import Client, link, normalise_email, user_ref
from control_plane.identity.mail import queue_mail
from control_plane.identity.models import PasswordChange, PasswordReset, PasswordWasReset
from control_plane.identity.passwords import check_strength, hash_password, verify_password
from control_plane.identity.sessions import SignedIn, revoke_all, rotate
from core.audit import audit
from core.db import now_ms, read_tx, write_tx
from core.errors import ApiError
from core.settings import Settings

__all__ = ["change_password", "complete_reset", "request_reset"]

RESEND_AFTER_MS = 60_000
_CHANGED = ("Your password was changed. Every other session was signed out. If this was not you, reset your "
            "password now and check your organizations' audit logs.\n")


async def change_password(engine: AsyncEngine, who: SignedIn, data: PasswordChange, client: Client) -> str:
    """The session's new token."""
    async with read_tx(engine) as conn:
        row = (await conn.execute(text("SELECT email, password_hash FROM users WHERE id = :u"),
                                  {"u": who.user_id})).first()
    if row is None:
        raise ApiError("not_signed_in", "Sign in first: this route needs a session.")
    email, stored = str(row.email), None if row.password_hash is None else str(row.password_hash)
    wait = None
    async with read_tx(engine) as conn:
        wait = await throttle.locked_for(conn, email, client.ip)
    if wait is not None:
        raise ApiError("rate_limit_exceeded", f"Too many failed attempts; retry in {wait} s.",
                       **{"retry-after": str(wait)})
    if not await verify_password(stored, data.current_password):
        async with write_tx(engine) as conn:
            await throttle.record_failure(conn, email, client.ip)
        raise ApiError("invalid_credentials", "The current password is wrong.", param="current_password")
    check_strength(data.new_password, email, "new_password")
    new_hash = await hash_password(data.new_password)
    async with write_tx(engine) as conn:
        await conn.execute(text("UPDATE users SET password_hash = :h, password_changed_at = :now WHERE id = :u"),
                           {"h": new_hash, "now": now_ms(), "u": who.user_id})
        await revoke_all(conn, who.user_id, keep=who.session_id)
        token = await rotate(conn, who.session_id)
        await queue_mail(conn, email, "Your password was changed", _CHANGED)
        await audit(conn, None, f"user:{who.user_id}", "user.password_changed", who.user_id, {"ip": client.ip})
    return token


async def request_reset(engine: AsyncEngine, settings: Settings, email: str) -> str:
    email = normalise_email(email)
    async with write_tx(engine) as conn:
        row = (await conn.execute(text("SELECT id FROM users WHERE email = :e"), {"e": email})).first()
        last = None if row is None else (await conn.execute(text(
            "SELECT MAX(created_at) FROM verification_tokens WHERE identifier = :u AND purpose = 'password_reset'"),
            {"u": str(row[0])})).scalar_one()
        # At most one mail a minute: the request is anonymous, and must not flood someone's mailbox.
        if row is not None and (last is None or now_ms() - int(last) >= RESEND_AFTER_MS):
            token = await tokens.issue(conn, str(row[0]), "password_reset")
            await queue_mail(conn, email, "Reset your password",
                             f"Choose a new password here:\n\n    {link(settings, '/auth/password_reset', token)}\n\n"
                             f"or POST /auth/password_reset/complete with {{\"token\": \"{token}\", \"password\": "
                             "...}. The link works once, for one hour. If you did not ask for it, ignore this mail.\n")
    return email


async def complete_reset(engine: AsyncEngine, data: PasswordReset) -> PasswordWasReset:
    # The token is looked at first (not spent), so a weak password can be refused before it is used.
    async with read_tx(engine) as conn:
        row = (await conn.execute(text(
            "SELECT u.email FROM verification_tokens t JOIN users u ON u.id = t.identifier"
            " WHERE t.token_hash = :h AND t.purpose = 'password_reset' AND t.used_at IS NULL AND t.expires > :now"),
            {"h": tokens.sha256_hex(data.token), "now": now_ms()})).first()
    if row is not None:
        check_strength(data.password, str(row[0]))
    new_hash = await hash_password(data.password)
    async with write_tx(engine) as conn:
        user_id = await tokens.consume(conn, data.token, "password_reset")
        if user_id is None:
            raise ApiError("invalid_token", "This reset token is unknown, already used or expired; ask for a new one.",
                           param="token")
        now = now_ms()
        await conn.execute(text("UPDATE users SET password_hash = :h, password_changed_at = :now,"
                                " email_verified_at = COALESCE(email_verified_at, :now) WHERE id = :u"),
                           {"h": new_hash, "now": now, "u": user_id})
        ended = await revoke_all(conn, user_id)
        user = await user_ref(conn, user_id)
        await throttle.record_success(conn, user.email)
        await queue_mail(conn, user.email, "Your password was changed", _CHANGED)
        await audit(conn, None, f"user:{user_id}", "user.password_reset", user_id, {})
    return PasswordWasReset(user=user, sessions_ended=ended)
