"""The `clerk` and `authjs` identity providers, on the control plane in this process (its database
as NX_TEST_DATABASE says), with keys, tokens and a JWKS endpoint the tests make themselves, and
Clerk's recorded webhook payloads (tests/data/clerk, source in its README) signed as Svix does."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from litestar.testing import AsyncTestClient
from sqlalchemy import text
from standardwebhooks.webhooks import Webhook

from control_plane.app import create_app
from core.db import apply_schema, make_engine
from core.settings import Settings, load_settings
from tests.harness import create_pg_database, drop_pg_database, use_postgres

DATA = Path(__file__).resolve().parents[1] / "data" / "clerk"
ISSUER = "https://clerk.example.test"
PARTY = "https://app.example.test"
CLERK_USER = "user_2pQxCjN8uYwKf4LrT6aHvB9eZ1D"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(n: int) -> str:
    return _b64(n.to_bytes((n.bit_length() + 7) // 8, "big"))


class Signer:
    def __init__(self, kid: str) -> None:
        self.kid, self.key = kid, rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, str]:
        pub = self.key.public_key().public_numbers()
        return {"kty": "RSA", "kid": self.kid, "use": "sig", "alg": "RS256", "n": _uint(pub.n), "e": _uint(pub.e)}

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "sub": CLERK_USER, "sid": "sess_2pQy", "azp": PARTY, "iat": now, "nbf": now - 5,
                "exp": now + 60, **claims}
        head = _b64(json.dumps({"alg": "RS256", "kid": self.kid, "typ": "JWT"}).encode())
        signing_input = f"{head}.{_b64(json.dumps(body).encode())}".encode()
        sig = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64(sig)}"


def hs256(secret: str | bytes, header: dict[str, Any] | None = None, **claims: Any) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    head = _b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{head}.{_b64(json.dumps(claims).encode())}".encode()
    return f"{signing_input.decode()}.{_b64(hmac.new(key, signing_input, hashlib.sha256).digest())}"


@contextmanager
def jwks_server(doc: dict[str, Any]) -> Iterator[str]:
    body = json.dumps(doc).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@asynccontextmanager
async def control_plane(**env: str) -> AsyncIterator[tuple[AsyncTestClient[Any], Settings]]:
    tmp = tempfile.TemporaryDirectory(prefix="nx-idp-")
    pg_name = None
    try:
        base = {"NX_DATA_DIR": tmp.name}
        if use_postgres():
            pg_name, base["DATABASE_URL"] = await create_pg_database()
        settings = load_settings({**base, **env})
        engine = make_engine(settings)
        try:
            await apply_schema(engine)
        finally:
            await engine.dispose()
        async with AsyncTestClient(create_app(settings), base_url="http://127.0.0.1") as client:
            yield client, settings
    finally:
        if pg_name:
            await drop_pg_database(pg_name)
        tmp.cleanup()


async def query(settings: Settings, statement: str, **params: Any) -> list[Any]:
    engine = make_engine(settings)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.fetchall()) if result.returns_rows else []
    finally:
        await engine.dispose()


WHSEC = "whsec_" + base64.b64encode(b"clerk-webhook-test-secret-32byte").decode()
signer, other = Signer("ins_key_1"), Signer("ins_key_1")  # `other`: same kid, a key Clerk never had


@pytest.fixture(scope="module")
async def clerk() -> AsyncIterator[tuple[AsyncTestClient[Any], Settings]]:
    with jwks_server({"keys": [signer.jwk()]}) as url:
        async with control_plane(NX_IDENTITY_PROVIDER="clerk", NX_CLERK_ISSUER=ISSUER, NX_CLERK_JWKS_URL=url,
                                 NX_CLERK_AUTHORIZED_PARTIES=f"{PARTY},https://other.example.test",
                                 NX_CLERK_WEBHOOK_SECRET=WHSEC) as app:
            yield app


def svix(payload: bytes, msg_id: str, at: datetime | None = None, secret: str = WHSEC) -> dict[str, str]:
    stamp = at or datetime.now(UTC)
    return {"svix-id": msg_id, "svix-timestamp": str(int(stamp.timestamp())),
            "svix-signature": Webhook(secret).sign(msg_id, stamp, payload.decode()),
            "content-type": "application/json"}


async def deliver(client: AsyncTestClient[Any], name: str, msg_id: str) -> dict[str, Any]:
    payload = (DATA / f"{name}.json").read_bytes()
    r = await client.post("/auth/webhooks/clerk", content=payload, headers=svix(payload, msg_id))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_clerk_webhooks_sync_users_orgs_and_memberships_once(
        clerk: tuple[AsyncTestClient[Any], Settings]) -> None:
    client, settings = clerk
    for name in ("user.created", "organization.created", "organizationMembership.created"):
        msg_id = f"msg_{secrets.token_hex(8)}"
        assert (await deliver(client, name, msg_id))["status"] == "applied"
        assert (await deliver(client, name, msg_id))["status"] == "duplicate"  # Svix's retry: applied once
    users = await query(settings, "SELECT u.id, u.email, u.name, u.email_verified_at FROM users u JOIN accounts a"
                                  " ON a.user_id = u.id WHERE a.provider = 'clerk' AND a.provider_account_id = :s",
                        s=CLERK_USER)
    assert len(users) == 1 and users[0][1] == "grace.hopper@example.com" and users[0][2] == "Grace Hopper"
    assert users[0][3] is not None
    orgs = await query(settings, "SELECT o.id, o.name FROM organizations o JOIN external_organizations x"
                                 " ON x.org_id = o.id WHERE x.provider = 'clerk'")
    assert [o[1] for o in orgs] == ["Compilers Inc"]
    members = await query(settings, "SELECT user_id, role FROM memberships WHERE org_id = :o", o=orgs[0][0])
    assert members == [(users[0][0], "admin")]
    assert len(await query(settings, "SELECT id FROM projects WHERE org_id = :o", o=orgs[0][0])) == 1
    # a new message id with the same content is a new delivery: still one user, one membership
    assert (await deliver(client, "user.created", f"msg_{secrets.token_hex(8)}"))["status"] == "applied"
    assert len(await query(settings, "SELECT id FROM users WHERE email = 'grace.hopper@example.com'")) == 1


async def test_clerk_webhook_signatures(clerk: tuple[AsyncTestClient[Any], Settings]) -> None:
    client, settings = clerk
    payload = (DATA / "user.created.json").read_bytes()
    wrong = "whsec_" + base64.b64encode(b"not-the-secret-not-the-secret-00").decode()
    for headers in (svix(payload, "msg_a", secret=wrong), svix(payload, "msg_b", at=datetime.fromtimestamp(
            time.time() - 3600, UTC)), {"content-type": "application/json"}):
        r = await client.post("/auth/webhooks/clerk", content=payload, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "webhook_signature_invalid", r.text
    tampered = svix(payload, "msg_c")
    r = await client.post("/auth/webhooks/clerk", content=payload.replace(b"Grace", b"Mallory"), headers=tampered)
    assert r.status_code == 401
    assert await query(settings, "SELECT 1 FROM processed_webhooks WHERE message_id IN ('msg_a', 'msg_b', 'msg_c')") == []


async def test_clerk_session_jwts(clerk: tuple[AsyncTestClient[Any], Settings]) -> None:
    client, _settings = clerk
    await deliver(client, "user.created", f"msg_{secrets.token_hex(8)}")  # the user exists here

    async def status(token: str, cookie: bool = False) -> int:
        if cookie:
            client.cookies.set("__session", token)
            try:
                return (await client.get("/auth/session")).status_code
            finally:
                client.cookies.clear()
        return (await client.get("/auth/session", headers={"authorization": f"Bearer {token}"})).status_code

    r = await client.get("/auth/session", headers={"authorization": f"Bearer {signer.token()}"})
    assert r.status_code == 200, r.text
    assert r.json()["provider"] == "clerk" and r.json()["user"]["email"] == "grace.hopper@example.com"
    assert await status(signer.token(), cookie=True) == 200
    now = int(time.time())
    refused = {
        "wrong issuer": signer.token(iss="https://evil.example.test"),
        "wrong authorized party": signer.token(azp="https://evil.example.test"),
        "expired": signer.token(exp=now - 60, iat=now - 120),
        "not yet valid": signer.token(nbf=now + 600),
        "wrong signature": other.token(),
        "unknown key": Signer("ins_key_2").token(),
        "unknown user": signer.token(sub="user_nobody"),
        "alg none": ".".join([_b64(b'{"alg":"none","kid":"ins_key_1"}'), signer.token().split(".")[1], ""]),
        "HS256 keyed with the public key": hs256(json.dumps(signer.jwk()),
                                                 {"alg": "HS256", "kid": "ins_key_1"}, iss=ISSUER, sub=CLERK_USER,
                                                 azp=PARTY, exp=now + 60),
    }
    for why, token in refused.items():
        assert await status(token) == 401, why
    # local passwords are not this platform's door when Clerk signs customers in
    assert (await client.post("/auth/signin", json={"email": "grace.hopper@example.com",
                                                    "password": "whatever it is 1"})).status_code == 404


async def test_clerk_audience_when_configured() -> None:
    with jwks_server({"keys": [signer.jwk()]}) as url:
        async with control_plane(NX_IDENTITY_PROVIDER="clerk", NX_CLERK_ISSUER=ISSUER, NX_CLERK_JWKS_URL=url,
                                 NX_CLERK_AUDIENCE="nx-platform", NX_CLERK_WEBHOOK_SECRET=WHSEC) as (client, _s):
            await deliver(client, "user.created", "msg_aud")
            for aud, status in (("nx-platform", 200), (["other", "nx-platform"], 200), ("other", 401), (None, 401)):
                token = signer.token(aud=aud) if aud is not None else signer.token()
                r = await client.get("/auth/session", headers={"authorization": f"Bearer {token}"})
                assert r.status_code == status, (aud, r.text)


async def test_authjs_jwt_and_shared_database_sessions() -> None:
    secret = secrets.token_urlsafe(32)
    async with control_plane(NX_IDENTITY_PROVIDER="authjs", NX_AUTHJS_SECRET=secret,
                             NX_AUTHJS_ISSUER="https://auth.example.test") as (client, settings):
        now_ms = int(time.time() * 1000)
        await query(settings, "INSERT INTO users (id, email, name, created_at) VALUES ('user_authjs1', 'a@example.com',"
                              " 'A', :n)", n=now_ms)
        good = {"iss": "https://auth.example.test", "sub": "user_authjs1", "exp": int(time.time()) + 60}
        r = await client.get("/auth/session", headers={"authorization": f"Bearer {hs256(secret, **good)}"})
        assert r.status_code == 200 and r.json()["provider"] == "authjs", r.text
        client.cookies.set("authjs.session-token", hs256(secret, **good))
        assert (await client.get("/auth/session")).status_code == 200
        # a cookie-authenticated write from a provider's cookie needs a same-origin request
        assert (await client.post("/auth/signout_all")).json()["error"]["code"] == "csrf_failed"
        client.cookies.clear()
        for why, claims, key in (("wrong secret", good, "x" * 32), ("expired", {**good, "exp": 1}, secret),
                                 ("wrong issuer", {**good, "iss": "https://evil.example.test"}, secret),
                                 ("unknown user", {**good, "sub": "user_nobody"}, secret)):
            r = await client.get("/auth/session", headers={"authorization": f"Bearer {hs256(key, **claims)}"})
            assert r.status_code == 401, why
        # a database session written by the Auth.js app (its adapter stores the token's SHA-256)
        token = secrets.token_urlsafe(24)
        await query(settings, "INSERT INTO sessions (id, session_token_hash, user_id, provider, expires, idle_expires,"
                              " last_seen_at, created_at) VALUES ('sess_authjs1', :h, 'user_authjs1', 'authjs', :exp,"
                              " :exp, :n, :n)", h=hashlib.sha256(token.encode()).hexdigest(), exp=now_ms + 60_000,
                    n=now_ms)
        client.cookies.set("authjs.session-token", token)
        r = await client.get("/auth/session")
        assert r.status_code == 200 and r.json()["id"] == "sess_authjs1", r.text
        client.cookies.clear()
        client.cookies.set("authjs.session-token", "not-a-session")
        assert (await client.get("/auth/session")).status_code == 401


def test_provider_settings_are_checked_at_start() -> None:
    from core.settings import SettingsError

    for env in ({"NX_IDENTITY_PROVIDER": "clerk"}, {"NX_IDENTITY_PROVIDER": "clerk", "NX_CLERK_ISSUER": "http://x"},
                {"NX_SESSION_IDLE_SECONDS": "90000", "NX_SESSION_ABSOLUTE_SECONDS": "3600"}):
        with pytest.raises(SettingsError):
            load_settings(env)
    assert load_settings({"NX_IDENTITY_PROVIDER": "clerk", "NX_CLERK_ISSUER": ISSUER}).identity_provider == "clerk"


async def test_clerk_user_update_never_takes_another_users_email(clerk: tuple[AsyncTestClient[Any], Settings]) -> None:
    client, settings = clerk
    await deliver(client, "user.created", f"msg_{secrets.token_hex(8)}")
    await query(settings, "INSERT INTO users (id, email, name, created_at) VALUES ('user_local9', 'taken@example.com',"
                          " 'L', 1)")
    event = json.loads((DATA / "user.created.json").read_text())
    event["type"] = "user.updated"
    event["data"]["email_addresses"][0]["email_address"] = "taken@example.com"
    event["data"]["first_name"] = "Amazing Grace"
    payload = json.dumps(event).encode()
    r = await client.post("/auth/webhooks/clerk", content=payload, headers=svix(payload, "msg_update_taken"))
    assert r.status_code == 200 and r.json()["status"] == "applied", r.text
    rows = await query(settings, "SELECT u.email, u.name FROM users u JOIN accounts a ON a.user_id = u.id"
                                 " WHERE a.provider = 'clerk' AND a.provider_account_id = :s", s=CLERK_USER)
    assert rows == [("grace.hopper@example.com", "Amazing Grace Hopper")]
