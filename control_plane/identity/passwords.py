"""Password hashing (argon2id) and the refusal of weak or breached-pattern passwords.

Parameters: argon2id, memory 19 MiB (19,456 KiB), 2 passes, 1 lane, 16-byte salt, 32-byte hash:
OWASP's first argon2id configuration (RFC 9106 lists it as within its recommendations for
memory-constrained servers). Measured on this project's 2-core machine: ~22 ms of one core per hash
or check; the 64 MiB RFC 9106 profile took ~157 ms and 64 MiB per concurrent sign-in, which lets a
burst of sign-ins exhaust memory. No pepper (the issue asks pepper-free: a stolen database plus a
leaked pepper is no worse than a database alone, and there is nothing to rotate). Stored hashes carry
their parameters, so raising them later rehashes each user at their next sign-in (`needs_rehash`).

Hashing runs in a worker thread (argon2 releases the GIL) under a semaphore, so sign-ins neither
block the event loop nor take more than `CONCURRENT` x 19 MiB at once.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from core.errors import ApiError

__all__ = ["MIN_LENGTH", "check_strength", "hash_password", "needs_rehash", "verify_password"]

TIME_COST, MEMORY_KIB, LANES = 2, 19_456, 1
CONCURRENT = 4
MIN_LENGTH, MAX_LENGTH = 10, 256

_limit = asyncio.Semaphore(CONCURRENT)
_hasher: Any = None
# A hash of nothing anyone knows: checked when the email matches no user, so a sign-in costs the
# same time whether or not the account exists.
_DUMMY = "$argon2id$v=19$m=19456,t=2,p=1$JWRqmbVWa1e9xOYDkZ8Aqw$wgsE8yN5b6rA3X696lbxJWV87G8J9GOMkscJq7U9lRw"


def _ph() -> Any:
    global _hasher
    if _hasher is None:
        # Imported on first use: only the control plane's sign-in path needs it.
        from argon2 import PasswordHasher, Type

        _hasher = PasswordHasher(time_cost=TIME_COST, memory_cost=MEMORY_KIB, parallelism=LANES,
                                 hash_len=32, salt_len=16, type=Type.ID)
    return _hasher


async def hash_password(password: str) -> str:
    async with _limit:
        return str(await asyncio.to_thread(_ph().hash, password))


def _verify(stored: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(_ph().verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches `stored`; with no stored hash, a check of the dummy (same cost)."""
    async with _limit:
        ok = await asyncio.to_thread(_verify, stored or _DUMMY, password)
    return ok and stored is not None


def needs_rehash(stored: str) -> bool:
    return bool(_ph().check_needs_rehash(stored))


# The most common passwords of public breach corpora (their stems: a password that is one of
# these plus digits or symbols is refused too).
_COMMON = frozenset((
    "password", "passw0rd", "p@ssword", "p@ssw0rd", "letmein", "welcome", "welcome1", "qwerty",
    "qwertyuiop", "asdfghjkl", "zxcvbnm", "iloveyou", "admin", "administrator", "login", "abc123", "monkey",
    "dragon", "football", "baseball", "sunshine", "princess", "master", "shadow", "superman", "batman",
    "trustno1", "whatever", "starwars", "freedom", "secret", "changeme", "default", "azerty", "hello",
    "hunter", "hunter2", "killer", "michael", "jennifer", "charlie", "jordan", "access", "computer",
    "internet", "mustang", "soccer", "hockey", "ranger", "harley", "cookie", "summer", "winter", "spring",
    "autumn", "password1", "qazwsx",
))
_SEQUENCES = ("01234567890", "09876543210", "abcdefghijklmnopqrstuvwxyz", "qwertyuiop", "asdfghjkl",
              "zxcvbnm", "1q2w3e4r5t", "qazwsxedc")


def _weakness(password: str, email: str) -> str | None:
    if len(password) < MIN_LENGTH:
        return f"it has fewer than {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"it has more than {MAX_LENGTH} characters"
    lowered = password.lower()
    stem = re.sub(r"[\d\W_]+$", "", re.sub(r"^[\d\W_]+", "", lowered))
    if lowered in _COMMON or stem in _COMMON or (len(stem) >= 4 and any(stem in w for w in _COMMON)
                                                   and len(stem) >= len(lowered) - 4):
        return "it is one of the most common passwords in breached-password lists"
    if len(set(lowered)) < 5:
        return "it repeats too few different characters"
    if any(lowered in s or (len(lowered) >= 6 and s.startswith(lowered[:6])) for s in _SEQUENCES):
        return "it is a keyboard or alphabet sequence"
    local = email.split("@", 1)[0].lower()
    if len(local) >= 4 and local in lowered:
        return "it contains your email address"
    return None


def check_strength(password: str, email: str, param: str = "password") -> None:
    """Refuse (400 `weak_password`) a password an attacker would try early, saying why."""
    reason = _weakness(password, email)
    if reason is not None:
        raise ApiError("weak_password", f"Choose another password: {reason}. Use at least {MIN_LENGTH} "
                       "characters, e.g. several unrelated words.", param=param)
