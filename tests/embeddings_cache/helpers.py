"""Small helpers for the embedding cache tests: tenants, one-call wrappers, vector decoding."""

from __future__ import annotations

import base64
import secrets
import struct
from typing import Any

import httpx

from tests.inference.support import SimPlatform

IN, CACHED, OUT = 1_000_000_000, 500_000_000, 2_000_000_000  # the simulator models' card (support.PRICE)


async def tenant(sp: SimPlatform, credit_nanos: int = 10**9) -> tuple[str, str]:
    """A new organization with `credit_nanos` in its wallet and a key: (org id, key secret)."""
    async with sp.platform.admin() as admin:
        org = (await admin.post("/api/orgs", json={"name": f"ec-{secrets.token_hex(4)}"})).json()["id"]
        r = await admin.post(f"/api/orgs/{org}/ledger/grants", json={"amount_nanos": credit_nanos},
                             headers={"idempotency-key": secrets.token_hex(8)})
        assert r.status_code == 201, r.text
        key = (await admin.post(f"/api/orgs/{org}/keys", json={"name": "embed"})).json()["secret"]
    return org, key


async def embed(sp: SimPlatform, key: str, inputs: Any, *, model: str = "sim/embed",
                headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
    async with sp.platform.client(key) as c:
        r = await c.post("/v1/embeddings", json={"model": model, "input": inputs, **extra}, headers=headers)
    assert r.status_code == 200, r.text
    return r


def vectors(r: httpx.Response) -> list[bytes]:
    """The answer's vectors as little-endian float32 bytes, whichever encoding it used, by index."""
    out: list[bytes] = []
    for i, item in enumerate(r.json()["data"]):
        assert item["index"] == i
        emb = item["embedding"]
        out.append(base64.b64decode(emb) if isinstance(emb, str) else struct.pack(f"<{len(emb)}f", *emb))
    return out


def usage(r: httpx.Response) -> tuple[int, int]:
    """(input tokens, cached tokens), checked to agree between the body and the headers."""
    body = r.json()["usage"]
    cached = body["prompt_tokens_details"]["cached_tokens"]
    assert body["total_tokens"] == body["prompt_tokens"] == int(r.headers["x-input-tokens"])
    assert int(r.headers["x-cached-tokens"]) == cached
    return body["prompt_tokens"], cached


async def statement(sp: SimPlatform, org: str) -> list[dict[str, Any]]:
    async with sp.platform.admin() as admin:
        r = await admin.get(f"/api/orgs/{org}/ledger/statement")
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["data"]
    return rows
