"""API key format: `nx_live_` + base62(32 random bytes, 43 chars) + base62(CRC32, 6 chars).

The checksum lets the sidecar reject typos and scanner noise without a database read (the same
idea as GitHub's token checksums). Only HMAC-SHA256(pepper, secret) and a display prefix are
stored; the secret is shown once at creation.

Admin keys of the customer REST API (`/v1/organization/...`) have the same shape with the prefix
`nx_admin_`: the sidecar refuses them on inference routes by their prefix alone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib

__all__ = ["ADMIN_KEY_PREFIX", "KEY_PREFIX", "display_prefix", "generate_key", "hash_key", "is_well_formed"]

KEY_PREFIX = "nx_live_"
ADMIN_KEY_PREFIX = "nx_admin_"
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43  # ceil(256 / log2(62))
_SUM_LEN = 6  # 62**6 > 2**32
KEY_LENGTH = len(KEY_PREFIX) + _BODY_LEN + _SUM_LEN


def _b62(value: int, width: int) -> str:
    out = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        out.append(_B62[rem])
    return "".join(reversed(out))


def _checksum(body: str) -> str:
    return _b62(zlib.crc32(body.encode()), _SUM_LEN)


def generate_key(prefix: str = KEY_PREFIX) -> str:
    body = _b62(int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN)
    return f"{prefix}{body}{_checksum(body)}"


def is_well_formed(key: str, prefix: str = KEY_PREFIX) -> bool:
    """Cheap structural check: prefix, length, alphabet and checksum."""
    if len(key) != len(prefix) + _BODY_LEN + _SUM_LEN or not key.startswith(prefix):
        return False
    rest = key[len(prefix) :]
    if not all(c in _B62 for c in rest):
        return False
    body, given = rest[:_BODY_LEN], rest[_BODY_LEN:]
    return hmac.compare_digest(_checksum(body), given)


def hash_key(key: str, pepper: str) -> str:
    return hmac.new(pepper.encode(), key.encode(), hashlib.sha256).hexdigest()


def display_prefix(key: str) -> str:
    prefix = ADMIN_KEY_PREFIX if key.startswith(ADMIN_KEY_PREFIX) else KEY_PREFIX
    return key[: len(prefix) + 6]
