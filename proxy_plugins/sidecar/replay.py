"""Replay protection for keys that require signed requests.

The client signs method, path, timestamp, nonce and the body's SHA-256 with the key's signing
secret (scheme in nx_client/signing.py). The sidecar refuses, each with its own error code: a
missing signature, a timestamp more than 300 s from its clock, a bad signature, and a nonce already
seen within the window. The nonce is recorded only after the signature verifies, so forged
requests cannot burn a legitimate client's nonces.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis

from nx_client.signing import canonical_string

__all__ = ["SKEW_SECONDS", "MemoryNonces", "NonceStore", "RedisNonces", "verify_signature"]

SKEW_SECONDS = 300
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class NonceStore(Protocol):
    async def first_use(self, key_id: str, nonce: str) -> bool:
        """True the first time (key, nonce) is seen within the window, False afterwards."""


class MemoryNonces:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._clock = clock

    async def first_use(self, key_id: str, nonce: str) -> bool:
        now = self._clock()
        if len(self._seen) > 100_000:
            self._seen = {k: t for k, t in self._seen.items() if t > now}
        expires = self._seen.get((key_id, nonce))
        if expires is not None and expires > now:
            return False
        # Twice the skew: a timestamp can be 300 s early or late, so a nonce must outlive both.
        self._seen[(key_id, nonce)] = now + 2 * SKEW_SECONDS
        return True


class RedisNonces:
    """Shared by all sidecar replicas. Unlike rate limits this fails CLOSED: a replay check that
    cannot run refuses the request rather than letting a replay through."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client

    async def first_use(self, key_id: str, nonce: str) -> bool:
        return bool(await self.client.set(f"nonce:{key_id}:{nonce}", b"1", nx=True, ex=2 * SKEW_SECONDS))


def verify_signature(secret: str, method: str, path: str, body: bytes, timestamp: str, nonce: str,
                     signature: str, now: float) -> str | None:
    """None when valid, else the error code (the nonce is checked by the caller afterwards)."""
    if not (timestamp and nonce and signature):
        return "signature_required"
    if not timestamp.isdigit() or abs(int(timestamp) - now) > SKEW_SECONDS:
        return "signature_timestamp_invalid"
    if not _NONCE.match(nonce):
        return "signature_nonce_invalid"
    expected = hmac.new(secret.encode(), canonical_string(method, path, timestamp, nonce, body).encode(),
                        "sha256").hexdigest()
    if not hmac.compare_digest(signature.encode(), f"v1={expected}".encode()):
        return "signature_invalid"
    return None
