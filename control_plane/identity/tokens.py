"""Single-use, expiring tokens (email verification, password reset) and the hashing of secrets.

A token is 32 random bytes, URL-safe; the database keeps its SHA-256 only, so a read of the
database (a backup, a replica) cannot verify an email or reset a password. A token is spent by one
conditional UPDATE (unused and unexpired), so two concurrent uses cannot both succeed.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import now_ms

__all__ = ["Purpose", "consume", "issue", "new_secret", "sha256_hex"]

Purpose = Literal["verify_email", "password_reset"]
TTL_MS: dict[Purpose, int] = {"verify_email": 24 * 3600_000, "password_reset": 3600_000}


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


async def issue(conn: AsyncConnection, identifier: str, purpose: Purpose) -> str:
    """A new token for `identifier` (a user id); earlier unused ones of the same purpose stop working,
    so only the latest mail's link does."""
    now = now_ms()
    await conn.execute(text("UPDATE verification_tokens SET used_at = :now"
                            " WHERE identifier = :i AND purpose = :p AND used_at IS NULL"),
                       {"now": now, "i": identifier, "p": purpose})
    token = new_secret()
    await conn.execute(text("INSERT INTO verification_tokens (token_hash, identifier, purpose, expires, created_at)"
                            " VALUES (:h, :i, :p, :exp, :now)"),
                       {"h": sha256_hex(token), "i": identifier, "p": purpose, "exp": now + TTL_MS[purpose],
                        "now": now})
    return token


async def consume(conn: AsyncConnection, token: str, purpose: Purpose) -> str | None:
    """The identifier the token was issued for, spending it; None when it is unknown, used or expired."""
    if not token or len(token) > 200:
        return None
    now = now_ms()
    row = (await conn.execute(text(
        "UPDATE verification_tokens SET used_at = :now WHERE token_hash = :h AND purpose = :p"
        " AND used_at IS NULL AND expires > :now RETURNING identifier"),
        {"now": now, "h": sha256_hex(token), "p": purpose})).first()
    return None if row is None else str(row[0])
