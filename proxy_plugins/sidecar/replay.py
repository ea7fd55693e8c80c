"""Replay protection for keys that require signed requests.

The client signs method, path, timestamp, nonce and the body's SHA-256 with the key's signing
secret (scheme in nx_client/signing.py). The sidecar refuses, each with its own error code: a
missing signature, a timestamp more than 300 s from its clock, a bad signature, and a nonce already
seen within the window. The nonce is recorded only after the signature verifies, so forged
requests cannot burn a legitimate client's nonces.

Nonces are kept in the database for the whole window, across restarts of the sidecar and of
Redis alike (core/nonces.py).
"""

from __future__ import annotations

import hmac
import re
from typing import Protocol

from core.nonces import SKEW_SECONDS
from nx_client.signing import canonical_string

__all__ = ["SKEW_SECONDS", "NonceStore", "verify_signature"]

_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class NonceStore(Protocol):
    async def first_use(self, key_id: str, nonce: str) -> bool:
        """True the first time (key, nonce) is seen within the window, False afterwards."""


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
