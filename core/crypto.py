"""Secrets the platform must read back later (per-key request-signing secrets), sealed at rest.

AES-GCM under a key derived from the server pepper and a purpose label, so a database dump alone
reveals nothing and a value sealed for one purpose does not open for another.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["seal", "unseal"]


def _aead(pepper: str, purpose: str) -> AESGCM:
    return AESGCM(hashlib.sha256(f"nx-secretbox\x00{purpose}\x00{pepper}".encode()).digest())


def seal(value: str, pepper: str, purpose: str) -> str:
    nonce = os.urandom(12)
    sealed = _aead(pepper, purpose).encrypt(nonce, value.encode(), purpose.encode())
    return "v1:" + base64.b64encode(nonce + sealed).decode()


def unseal(sealed: str, pepper: str, purpose: str) -> str:
    raw = base64.b64decode(sealed.removeprefix("v1:"))
    return _aead(pepper, purpose).decrypt(raw[:12], raw[12:], purpose.encode()).decode()


SIGNING_PURPOSE = "request-signing"
"""Purpose label under which per-key signing secrets are sealed (core/crypto.py)."""
