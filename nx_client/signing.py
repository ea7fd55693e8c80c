"""Sign requests for API keys that require signed requests (replay protection).

The scheme (verified by the sidecar, proxy_plugins/sidecar/replay.py):

    canonical = METHOD + "\\n" + PATH_WITH_QUERY + "\\n" + TIMESTAMP + "\\n" + NONCE + "\\n" + hex(sha256(BODY))
    x-nx-timestamp: TIMESTAMP   (unix seconds; refused more than 300 s from the server's clock)
    x-nx-nonce:     NONCE       (16-128 of [A-Za-z0-9_-]; refused if seen within the window)
    x-nx-signature: v1=hex(HMAC-SHA256(signing_secret, canonical))

Usage with httpx (the official `openai` SDK accepts an `http_client`):

    client = httpx.Client(auth=SignedRequests("nxsig_..."))
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Generator

import httpx

__all__ = ["NONCE_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "SignedRequests", "canonical_string", "sign_headers"]

TIMESTAMP_HEADER = "x-nx-timestamp"
NONCE_HEADER = "x-nx-nonce"
SIGNATURE_HEADER = "x-nx-signature"


def canonical_string(method: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    return "\n".join([method.upper(), path, timestamp, nonce, hashlib.sha256(body).hexdigest()])


def sign_headers(signing_secret: str, method: str, path: str, body: bytes,
                 timestamp: int | None = None, nonce: str | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_urlsafe(18)
    mac = hmac.new(signing_secret.encode(), canonical_string(method, path, ts, nonce, body).encode(),
                   hashlib.sha256).hexdigest()
    return {TIMESTAMP_HEADER: ts, NONCE_HEADER: nonce, SIGNATURE_HEADER: f"v1={mac}"}


class SignedRequests(httpx.Auth):
    """httpx auth hook: signs every request's method, path+query and exact body bytes."""

    requires_request_body = True

    def __init__(self, signing_secret: str) -> None:
        self.signing_secret = signing_secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        path = request.url.raw_path.decode("ascii")
        request.headers.update(sign_headers(self.signing_secret, request.method, path, request.content))
        yield request
