"""No secret is ever readable in the database: after creating keys (with signing secrets), rotating
a signing secret, creating a webhook endpoint and rotating its secret (both under an
Idempotency-Key, whose answers are kept 24 hours for replays), every text value of every table is
scanned for each secret, in plain text and in base64 at any alignment (stored answers are base64).
On SQLite the database file and its WAL are scanned byte for byte as well."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import make_engine
from core.secrets import load_secrets
from tests.harness import Platform, free_port
from tests.security.conftest import World, new_key


def plaintext_forms(secret: str) -> set[bytes]:
    """The secret itself, and its base64 at each of the three byte alignments it can have inside a
    longer base64-encoded text (only the 4-character groups made of the secret's bytes alone)."""
    raw = secret.encode()
    forms = {raw}
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw)
        forms.add(encoded[4 if pad else 0: 4 * ((pad + len(raw)) // 3)])
    return forms


async def table_values(engine: AsyncEngine) -> list[tuple[str, str, bytes]]:
    """(table, column, value) for every text or binary value in the database."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            tables = [str(r[0]) for r in await conn.execute(text(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))]
        else:
            tables = [str(r[0]) for r in await conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
                " AND table_type = 'BASE TABLE'"))]
        out: list[tuple[str, str, bytes]] = []
        for table in tables:
            result = await conn.execute(text(f'SELECT * FROM "{table}"'))
            columns = list(result.keys())
            for row in result:
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, str):
                        out.append((table, column, value.encode()))
                    elif isinstance(value, bytes | memoryview):
                        out.append((table, column, bytes(value)))
    assert {"api_keys", "webhook_endpoints", "idempotency_keys"} <= set(tables)
    return out


async def test_no_secret_is_stored_readable(sec: Platform, world: World) -> None:
    found: dict[str, str] = {"bootstrap API key": sec.key}
    stored = load_secrets(sec.s)
    found.update({"admin token": stored.admin_token, "internal token": stored.internal_token,
                  "key pepper": stored.key_pepper, "upstream provider key": sec.env["NX_TEST_SIM_KEY"]})
    async with sec.admin() as admin:
        r = await admin.post(f"/api/orgs/{world.org_a}/keys", json={"name": "signed", "signed_requests": True})
        assert r.status_code == 201, r.text
        found["API key"], found["signing secret"] = r.json()["secret"], r.json()["signing_secret"]
        r = await admin.post(f"/api/orgs/{world.org_a}/keys/{r.json()['key']['id']}/signing-secret")
        assert r.status_code == 200, r.text
        found["rotated signing secret"] = r.json()["signing_secret"]
    found["P1 key"] = world.key_p1
    found["another key"] = await new_key(sec, world.org_b)
    async with sec.client(world.key_p1) as c:
        create = {"url": f"http://127.0.0.1:{free_port()}/hook", "project": world.p1}
        idem = {"idempotency-key": secrets.token_hex(8)}
        r = await c.post("/v1/webhooks/endpoints", json=create, headers=idem)
        assert r.status_code == 200, r.text
        endpoint, found["webhook secret"] = r.json()["id"], r.json()["secret"]
        again = await c.post("/v1/webhooks/endpoints", json=create, headers=idem)
        assert again.headers.get("idempotent-replayed") == "true" and again.content == r.content
        idem = {"idempotency-key": secrets.token_hex(8)}
        r = await c.post(f"/v1/webhooks/endpoints/{endpoint}/rotate_secret", headers=idem)
        assert r.status_code == 200, r.text
        found["rotated webhook secret"] = r.json()["secret"]
        # A retry whose first answer was lost still learns the new secret: stored sealed, replayed whole.
        again = await c.post(f"/v1/webhooks/endpoints/{endpoint}/rotate_secret", headers=idem)
        assert again.headers.get("idempotent-replayed") == "true" and again.content == r.content
    assert found["webhook secret"].startswith("whsec_") and found["signing secret"].startswith("nxsig_")
    engine = make_engine(sec.s)
    try:
        values = await table_values(engine)
    finally:
        await engine.dispose()
    leaks = sorted({f"{name} in {table}.{column}" for name, secret in found.items()
                    for form in plaintext_forms(secret) for table, column, value in values if form in value})
    assert leaks == []
    if sec.s.is_sqlite:
        files = [p for p in Path(sec.s.data_dir).iterdir() if p.name.startswith("nx.db")]
        assert files
        raw = {p.name: p.read_bytes() for p in files}
        leaks = sorted({f"{name} in {file}" for name, secret in found.items()
                        for form in plaintext_forms(secret) for file, data in raw.items() if form in data})
        assert leaks == []


def test_plaintext_forms_find_a_secret_inside_base64() -> None:
    secret = "whsec_" + secrets.token_urlsafe(32)
    for prefix in ("", "x", "xy", '{"secret":"'):
        blob = base64.b64encode(f'{prefix}{secret}"}}'.encode())
        assert any(form in blob for form in plaintext_forms(secret)), prefix
