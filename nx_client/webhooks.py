"""Verify the platform's webhooks in a receiver (Standard Webhooks, HMAC-SHA256 `v1`).

    from nx_client.webhooks import verify, WebhookVerificationError
    event = verify(secret, request_body_bytes, request_headers)   # raises if not authentic

Checks, in order: the three `webhook-*` headers are present; the timestamp is within
`tolerance_s` (5 minutes) of now, past or future; one of the space-delimited `v1,` signatures
matches HMAC-SHA256(secret, `id.timestamp.body`), compared in constant time. Use `event["id"]`
(equal to the `webhook-id` header) to drop duplicates: delivery is at least once.
The same checks are available from the `standardwebhooks` package (PyPI and npm).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["WebhookVerificationError", "verify"]


class WebhookVerificationError(Exception):
    """The delivery is not authentic or too old/new; answer 400 and do not act on it."""


def verify(secret: str, body: bytes, headers: Mapping[str, str], *, tolerance_s: int = 300,
           now: float | None = None) -> dict[str, Any]:
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id, stamp, signatures = (lower.get("webhook-id"), lower.get("webhook-timestamp"),
                                 lower.get("webhook-signature"))
    if not msg_id or not stamp or not signatures:
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("invalid webhook-timestamp") from None
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise WebhookVerificationError("message timestamp too old")
    if timestamp > current + tolerance_s:
        raise WebhookVerificationError("message timestamp too new")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise WebhookVerificationError("the secret is not valid base64") from None
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest())
    for candidate in signatures.split(" "):
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            decoded: dict[str, Any] = json.loads(body)
            return decoded
    raise WebhookVerificationError("no matching signature")
