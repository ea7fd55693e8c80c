"""A platform for the identity tests, and customers made through `/auth` at its edge.

Inference is served by the provider simulator. Its edge trusts one X-Forwarded-For hop, so each test signs in from client addresses of its own
(the per-address lockout of one test never blocks another). Sign-up grants `CREDIT` nanos of
promotional credit, so the tests can see that it is granted once, at verification, and never
before.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from core.db import make_engine
from tests.harness import Platform
from tests.security.conftest import sim_platform

__all__ = ["CREDIT", "PASSWORD", "Customer", "idp", "mail_token", "new_client", "new_email", "signed_up", "sql"]

CREDIT = 100_000_000  # $0.10: enough for a few simulated calls
PASSWORD = "tangerine orbit lantern 42"
_ips = itertools.count(1)


@pytest.fixture(scope="session")
async def idp() -> AsyncIterator[Platform]:
    """Inference goes to the provider simulator (tests/security's catalog: `sim/chat`)."""
    async with sim_platform(NX_XFF_TRUSTED_HOPS="1", NX_SIGNUP_CREDIT_NANOS=str(CREDIT)) as p:
        yield p


def new_email(tag: str = "user") -> str:
    return f"{tag}-{secrets.token_hex(5)}@example.com"


def new_client(p: Platform, ip: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
    """A browser-like client from its own address (cookies kept between its requests)."""
    address = ip or f"198.51.{(os.getpid() + next(_ips)) % 250}.{next(_ips) % 250 + 1}"
    return httpx.AsyncClient(base_url=p.edge, timeout=30, headers={"x-forwarded-for": address}, **kwargs)


async def sql(p: Platform, statement: str, **params: Any) -> list[Any]:
    engine = make_engine(p.s)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.fetchall()) if result.returns_rows else []
    finally:
        await engine.dispose()


async def mail_token(p: Platform, email: str, subject: str) -> str:
    """The token of the newest mail with this subject to `email`, read from the outbox."""
    rows = await sql(p, "SELECT body FROM mail_outbox WHERE to_address = :e AND subject = :s"
                        " ORDER BY created_at DESC, id DESC LIMIT 1", e=email, s=subject)
    assert rows, f"no mail {subject!r} to {email}"
    match = re.search(r'"token": "([^"]+)"', str(rows[0][0]))
    assert match, rows[0][0]
    return match.group(1)


class Customer:
    def __init__(self, email: str, client: httpx.AsyncClient, session: dict[str, Any]) -> None:
        self.email, self.client, self.session = email, client, session

    @property
    def csrf(self) -> dict[str, str]:
        return {"x-csrf-token": str(self.session["csrf_token"])}


async def signed_up(p: Platform, client: httpx.AsyncClient, email: str | None = None) -> Customer:
    """A verified, signed-in customer on `client`."""
    email = email or new_email()
    r = await client.post("/auth/signup", json={"email": email, "password": PASSWORD, "name": "Test"})
    assert r.status_code == 202, r.text
    r = await client.post("/auth/verify", json={"token": await mail_token(p, email, "Verify your email")})
    assert r.status_code == 200, r.text
    r = await client.post("/auth/signin", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return Customer(email, client, r.json())
