"""Sign-in lockout: exponential back-off per account and per client address.

Failures are counted per account, keyed by the SHA-256 of the normalised email whether or not a user
has that email (so the answers never tell whether an account exists), and per client address (one
address guessing across many accounts). Past `FREE` failures each further one doubles the wait,
capped at `MAX_WAIT_S`; while locked the password is not even checked, so a right guess answers like
a wrong one. A sign-in's success clears its account's count, not its address's (one valid account
must not reset an attacker's address); counts older than `FORGET_AFTER_MS` start again from zero.

Sign-ups are counted per client address the same way (scope `signup`): each one creates an
organization, and with `NX_SIGNUP_CREDIT_NANOS` above 0 a verified one is granted credit, so one
address cannot make them by the thousand.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.identity.tokens import sha256_hex
from core.db import now_ms

__all__ = ["FREE", "locked_for", "record_failure", "record_signup", "record_success", "signup_wait"]

Scope = Literal["account", "ip", "signup"]
FREE: dict[Scope, int] = {"account": 5, "ip": 20, "signup": 10}
MAX_WAIT_S = 15 * 60
FORGET_AFTER_MS = 3600_000


def _subjects(email: str, ip: str) -> list[tuple[Scope, str]]:
    return [("account", sha256_hex(email)), ("ip", ip or "unknown")]


async def locked_for(conn: AsyncConnection, email: str, ip: str) -> int | None:
    """Seconds until either the account or the address may try again; None when both may now."""
    return await _wait(conn, _subjects(email, ip))


async def signup_wait(conn: AsyncConnection, ip: str) -> int | None:
    return await _wait(conn, [("signup", ip or "unknown")])


async def record_signup(conn: AsyncConnection, ip: str) -> None:
    await _count(conn, [("signup", ip or "unknown")])


async def _wait(conn: AsyncConnection, subjects: list[tuple[Scope, str]]) -> int | None:
    now, wait = now_ms(), 0
    for scope, subject in subjects:
        row = (await conn.execute(text("SELECT locked_until FROM signin_throttle WHERE scope = :s AND subject = :x"),
                                  {"s": scope, "x": subject})).first()
        if row is not None and int(row[0]) > now:
            wait = max(wait, -(-(int(row[0]) - now) // 1000))
    return wait or None


async def record_failure(conn: AsyncConnection, email: str, ip: str) -> None:
    await _count(conn, _subjects(email, ip))


async def _count(conn: AsyncConnection, subjects: list[tuple[Scope, str]]) -> None:
    now = now_ms()
    for scope, subject in subjects:
        failures = int((await conn.execute(text(
            "INSERT INTO signin_throttle (scope, subject, failures, locked_until, updated_at)"
            " VALUES (:s, :x, 1, 0, :now) ON CONFLICT (scope, subject) DO UPDATE SET"
            " failures = CASE WHEN signin_throttle.updated_at < :stale THEN 1"
            " ELSE signin_throttle.failures + 1 END, updated_at = :now RETURNING failures"),
            {"s": scope, "x": subject, "now": now, "stale": now - FORGET_AFTER_MS})).scalar_one())
        over = failures - FREE[scope]
        if over >= 0:
            wait_s = min(MAX_WAIT_S, 2 ** min(over, 20))
            await conn.execute(text("UPDATE signin_throttle SET locked_until = :until"
                                    " WHERE scope = :s AND subject = :x"),
                               {"until": now + wait_s * 1000, "s": scope, "x": subject})


async def record_success(conn: AsyncConnection, email: str) -> None:
    await conn.execute(text("DELETE FROM signin_throttle WHERE scope = 'account' AND subject = :x"),
                       {"x": sha256_hex(email)})
