"""Signatures verify with the reference `standardwebhooks` library and with nx_client's helper, and
both reject every tampering the Standard Webhooks test list names."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any

import pytest
import standardwebhooks
from cryptography.exceptions import InvalidTag

from core.events.signing import new_secret, seal, sign, signature_header, unseal
from nx_client.webhooks import WebhookVerificationError, verify

BODY = b'{"id":"evt_1","type":"key.revoked","data":{"key_id":"key_1"}}'


def _headers(secret: str, msg_id: str = "evt_1", ts: int | None = None, body: bytes = BODY) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts),
            "webhook-signature": signature_header([secret], msg_id, ts, body)}


def _reference(secret: str, body: bytes, headers: dict[str, str]) -> Any:
    return standardwebhooks.Webhook(secret).verify(body, headers)


def _ours(secret: str, body: bytes, headers: dict[str, str]) -> Any:
    return verify(secret, body, headers)


VERIFIERS: list[Callable[[str, bytes, dict[str, str]], Any]] = [_reference, _ours]
ERRORS = (standardwebhooks.WebhookVerificationError, WebhookVerificationError)


def test_secret_format() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert new_secret() != secret
    assert unseal(seal(secret, "pepper"), "pepper") == secret
    with pytest.raises(InvalidTag):
        unseal(seal(secret, "pepper"), "other pepper")


@pytest.mark.parametrize("check", VERIFIERS)
def test_valid_signature_verifies(check: Callable[[str, bytes, dict[str, str]], Any]) -> None:
    secret = new_secret()
    assert check(secret, BODY, _headers(secret))["type"] == "key.revoked"


@pytest.mark.parametrize("check", VERIFIERS)
def test_tampering_is_rejected(check: Callable[[str, bytes, dict[str, str]], Any]) -> None:
    secret = new_secret()
    good = _headers(secret)
    cases = [
        (BODY.replace(b"key_1", b"key_2"), good),                               # body
        (BODY, {**good, "webhook-id": "evt_2"}),                                 # id
        (BODY, {**good, "webhook-timestamp": str(int(good["webhook-timestamp"]) + 1)}),  # timestamp
        (BODY, _headers(secret, ts=int(time.time()) - 301)),                     # > 5 min old
        (BODY, _headers(secret, ts=int(time.time()) + 301)),                     # > 5 min ahead
        (BODY, {**good, "webhook-signature": good["webhook-signature"][:-8]}),   # partial signature
        (BODY, {**good, "webhook-signature": "v1,"}),                            # empty signature
        (BODY, _headers(new_secret())),                                          # another secret
        (BODY, {k: v for k, v in good.items() if k != "webhook-signature"}),     # missing header
    ]
    for body, headers in cases:
        with pytest.raises(ERRORS):
            check(secret, body, headers)


@pytest.mark.parametrize("check", VERIFIERS)
def test_rotation_overlap_both_secrets_verify(check: Callable[[str, bytes, dict[str, str]], Any]) -> None:
    old, new = new_secret(), new_secret()
    ts = int(time.time())
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(ts),
               "webhook-signature": signature_header([new, old], "evt_1", ts, BODY)}
    assert headers["webhook-signature"].count("v1,") == 2
    check(old, BODY, headers)
    check(new, BODY, headers)
    with pytest.raises(ERRORS):
        check(new_secret(), BODY, headers)


def test_signature_matches_spec_example() -> None:
    # The Standard Webhooks reference test vector (libraries' test suites).
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # noqa: S105 (public test vector)
    body = b'{"test": 2432232314}'
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == \
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
