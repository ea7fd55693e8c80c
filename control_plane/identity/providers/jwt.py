"""JSON Web Token verification (RS256/ES256 against a JWKS, HS256 with a shared secret) on
`cryptography` alone, with the claim checks the providers need.

Only the algorithms a key allows are accepted (a JWKS key verifies RS/ES tokens only, a secret HS256
only), so an attacker cannot switch an RSA public key into an HMAC secret ("alg confusion"), and
`none` never verifies. Times are checked with `LEEWAY_S` of clock skew.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

__all__ = ["InvalidToken", "check_claims", "parse", "public_key_from_jwk", "verify_hs256", "verify_with_jwk"]

LEEWAY_S = 5
MAX_TOKEN_BYTES = 16_384


class InvalidToken(Exception):
    """Why a token is refused (logged, never sent to the client)."""


def _b64(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (ValueError, TypeError) as exc:
        raise InvalidToken("not base64url") from exc


def parse(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """(header, claims, signing input, signature), not yet verified."""
    if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        raise InvalidToken("not a compact JWS")
    head, body, sig = token.split(".")
    try:
        header, claims = json.loads(_b64(head)), json.loads(_b64(body))
    except ValueError as exc:
        raise InvalidToken("not JSON") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidToken("not a JSON object")
    return header, claims, f"{head}.{body}".encode(), _b64(sig)


def _int(jwk: dict[str, Any], name: str) -> int:
    return int.from_bytes(_b64(str(jwk.get(name, ""))), "big")


def public_key_from_jwk(jwk: dict[str, Any]) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    if jwk.get("kty") == "RSA":
        return rsa.RSAPublicNumbers(_int(jwk, "e"), _int(jwk, "n")).public_key()
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return ec.EllipticCurvePublicNumbers(_int(jwk, "x"), _int(jwk, "y"), ec.SECP256R1()).public_key()
    raise InvalidToken(f"unsupported key type {jwk.get('kty')!r}")


def verify_with_jwk(header: dict[str, Any], signing_input: bytes, signature: bytes, jwk: dict[str, Any]) -> None:
    key, alg = public_key_from_jwk(jwk), header.get("alg")
    try:
        if alg == "RS256" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "ES256" and isinstance(key, ec.EllipticCurvePublicKey) and len(signature) == 64:
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
        else:
            raise InvalidToken(f"algorithm {alg!r} does not match the key")
    except InvalidSignature as exc:
        raise InvalidToken("bad signature") from exc


def verify_hs256(header: dict[str, Any], signing_input: bytes, signature: bytes, secret: str) -> None:
    if header.get("alg") != "HS256":
        raise InvalidToken(f"algorithm {header.get('alg')!r} is not HS256")
    expected = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise InvalidToken("bad signature")


def check_claims(claims: dict[str, Any], *, issuer: str | None, audience: str | None = None,
                 parties: frozenset[str] = frozenset(), now: float | None = None) -> None:
    """Expiry (required), not-before, issuer, audience and authorized party (`azp`)."""
    t = time.time() if now is None else now
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or t > exp + LEEWAY_S:
        raise InvalidToken("expired or without exp")
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and t + LEEWAY_S < nbf:
        raise InvalidToken("not valid yet")
    if issuer is not None and claims.get("iss") != issuer:
        raise InvalidToken("wrong issuer")
    if audience:
        aud = claims.get("aud")
        if audience not in (aud if isinstance(aud, list) else [aud]):
            raise InvalidToken("wrong audience")
    if parties and claims.get("azp") not in parties:
        raise InvalidToken("authorized party not allowed")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidToken("no subject")
