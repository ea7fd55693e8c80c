"""Standard Webhooks signatures and the endpoint secrets behind them.

Secrets are `whsec_` + base64 of 32 random bytes (the spec allows 24-64). The HMAC key is the
base64-decoded part, and the signed content is `msg_id.timestamp.body` over the exact bytes sent.
At rest a secret is encrypted with AES-GCM under a key derived from the platform pepper, so a
database dump alone cannot forge deliveries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["new_secret", "seal", "sign", "signature_header", "unseal"]

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(os.urandom(32)).decode()


def _key_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX), validate=True)


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of `msg_id.timestamp.body`."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Space-delimited signatures, one per live secret: the current one first, then every secret a
    rotation replaced that has not reached its own expiry yet."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets)


def _aead(pepper: str) -> AESGCM:
    return AESGCM(hashlib.sha256(b"nx-webhook-secrets\x00" + pepper.encode()).digest())


def seal(secret: str, pepper: str) -> str:
    nonce = os.urandom(12)
    return "v1:" + base64.b64encode(nonce + _aead(pepper).encrypt(nonce, secret.encode(), b"whsec")).decode()


def unseal(sealed: str, pepper: str) -> str:
    raw = base64.b64decode(sealed.removeprefix("v1:"))
    return _aead(pepper).decrypt(raw[:12], raw[12:], b"whsec").decode()
