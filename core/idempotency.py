"""Idempotency keys: a retried POST never runs or bills twice.

Scope: (organization, API key, method, path, `Idempotency-Key`). The sidecar claims the key before
the request runs (`claim`); whoever produces the answer stores it (`complete`) — the adapter in the
same transaction as the charge, so "charged" and "answer stored" commit together — or gives the
claim back when the request failed on the server side (`release`: a retry should run again,
nothing was charged).

Outcomes of a claim:
- new (or the previous run's lease expired without a stored answer): run it;
- completed with the same body: replay the stored status, headers and body byte for byte;
- completed or in flight with a different body: 422 `idempotency_key_reused`;
- in flight: 409 `idempotency_key_in_use` (SDKs retry 409 later; 422 stops them).

Answers that may carry a secret (the control plane's: a webhook endpoint's `secret` at creation
and rotation) are stored sealed (`complete(..., pepper=...)`, AES-GCM, control_plane/crypto.py),
so the 24 hours a replayable answer is kept never leave a secret readable in the database;
`stored_body` opens either form.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Literal

import msgspec
from sqlalchemy.ext.asyncio import AsyncConnection

from core.crypto import seal, unseal
from core.db import now_ms
from core.ids import new_id
from core.rawsql import sql

__all__ = [
    "LEASE_MS",
    "MAX_KEY_LENGTH",
    "RETENTION_MS",
    "Claim",
    "StoredResponse",
    "claim",
    "complete",
    "prune",
    "release",
    "release_request",
    "release_run",
    "shorten_lease",
    "stored_body",
    "valid_key",
]

RETENTION_MS = 24 * 3600 * 1000
LEASE_MS = 10 * 60 * 1000
"""Longest a request may run before a retry may take over its key: above the longest backend
timeout of an inference call, so a slow answer is never run twice, yet far below the 24 h window."""
MAX_KEY_LENGTH = 255
ANSWER_PURPOSE = "idempotent-answer"
"""Purpose label of sealed stored answers (control_plane/crypto.py)."""


class StoredResponse(msgspec.Struct, frozen=True):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Claim(msgspec.Struct, frozen=True):
    outcome: Literal["run", "replay", "in_use", "mismatch"]
    record_id: str = ""


def valid_key(value: str) -> bool:
    return 0 < len(value) <= MAX_KEY_LENGTH and value.isprintable() and value.isascii()


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


async def claim(conn: AsyncConnection, *, org_id: str, key_id: str, method: str, path: str,
                idem_key: str, body: bytes, request_id: str, now: int | None = None) -> Claim:
    """Call inside a write transaction (BEGIN IMMEDIATE on SQLite; the unique index on PostgreSQL)."""
    now = now_ms() if now is None else now
    scope = {"o": org_id, "k": key_id, "m": method, "p": path, "i": idem_key}
    digest = body_hash(body)
    new = new_id("idem")
    inserted = await conn.execute(sql(
        "INSERT INTO idempotency_keys (id, org_id, key_id, method, path, idem_key, request_hash, request_id,"
        " state, lease_expires_at, created_at) VALUES (:id, :o, :k, :m, :p, :i, :h, :r, 'in_flight', :lease,"
        " :now) ON CONFLICT (org_id, key_id, method, path, idem_key) DO NOTHING"),
        {**scope, "id": new, "h": digest, "r": request_id, "lease": now + LEASE_MS, "now": now})
    if inserted.rowcount == 1:
        return Claim(outcome="run", record_id=new)
    row = (await conn.execute(sql(
        "SELECT id, request_hash, state, lease_expires_at, created_at FROM idempotency_keys"
        " WHERE org_id = :o AND key_id = :k AND method = :m AND path = :p AND idem_key = :i"), scope)).one()
    record_id, stored_hash, state, lease, created = row
    expired = int(created) + RETENTION_MS <= now
    if expired or (state == "in_flight" and int(lease) <= now):
        # A reuse after the retention window runs as new; so does a run whose process died.
        await conn.execute(sql(
            "UPDATE idempotency_keys SET request_hash = :h, request_id = :r, state = 'in_flight',"
            " lease_expires_at = :lease, response_status = NULL, response_headers = NULL, response_body = NULL,"
            " created_at = CASE WHEN :expired = 1 THEN :now ELSE created_at END, completed_at = NULL"
            " WHERE id = :id"),
            {"h": digest, "r": request_id, "lease": now + LEASE_MS, "now": now, "id": record_id,
             "expired": int(expired)})
        return Claim(outcome="run", record_id=str(record_id))
    if stored_hash != digest:
        return Claim(outcome="mismatch", record_id=str(record_id))
    if state == "in_flight":
        return Claim(outcome="in_use", record_id=str(record_id))
    # The adapter serves the stored answer itself (proxy_plugins/adapter/replay.py).
    return Claim(outcome="replay", record_id=str(record_id))


async def complete(conn: AsyncConnection, record_id: str, response: StoredResponse,
                   pepper: str | None = None) -> None:
    """Store the answer in the caller's transaction (the adapter: the one that posts the charge);
    sealed when `pepper` is given (an answer that may carry a secret)."""
    body = base64.b64encode(response.body).decode()
    if pepper is not None:
        body = seal(body, pepper, ANSWER_PURPOSE)  # "v1:...": ':' never occurs in base64
    await conn.execute(sql(
        "UPDATE idempotency_keys SET state = 'completed', response_status = :s, response_headers = :h,"
        " response_body = :b, completed_at = :now WHERE id = :id AND state = 'in_flight'"),
        {"s": response.status, "h": msgspec.json.encode(response.headers).decode(), "b": body,
         "now": now_ms(), "id": record_id})


def stored_body(value: str, pepper: str) -> bytes:
    """A stored answer's body, sealed or not."""
    if value.startswith("v1:"):
        value = unseal(value, pepper, ANSWER_PURPOSE)
    return base64.b64decode(value)


async def release(conn: AsyncConnection, record_id: str) -> None:
    """The run failed before any side effect committed: the next retry runs it again."""
    await conn.execute(sql("DELETE FROM idempotency_keys WHERE id = :id AND state = 'in_flight'"),
                       {"id": record_id})


async def release_run(conn: AsyncConnection, record_id: str, request_id: str) -> int:
    """Give the claim back if this request still holds it (it never reached the adapter); a claim a
    retry has taken since, or one completed, is left alone."""
    result = await conn.execute(sql(
        "DELETE FROM idempotency_keys WHERE id = :id AND state = 'in_flight' AND request_id = :r"),
        {"id": record_id, "r": request_id})
    return int(result.rowcount)


async def release_request(conn: AsyncConnection, request_id: str) -> int:
    """Give back whatever claim this request still holds in flight (its check never answered)."""
    result = await conn.execute(sql(
        "DELETE FROM idempotency_keys WHERE request_id = :r AND state = 'in_flight'"), {"r": request_id})
    return int(result.rowcount)


async def shorten_lease(conn: AsyncConnection, record_id: str, request_id: str, until_ms: int) -> int:
    """The request's process died: a retry may take the key over from `until_ms` on."""
    result = await conn.execute(sql(
        "UPDATE idempotency_keys SET lease_expires_at = :until WHERE id = :id AND state = 'in_flight'"
        " AND request_id = :r AND lease_expires_at > :until"), {"until": until_ms, "id": record_id, "r": request_id})
    return int(result.rowcount)


async def prune(conn: AsyncConnection, now: int | None = None) -> int:
    now = now_ms() if now is None else now
    result = await conn.execute(sql(
        "DELETE FROM idempotency_keys WHERE created_at <= :cut AND (state = 'completed' OR lease_expires_at <= :now)"),
        {"cut": now - RETENTION_MS, "now": now})
    return int(result.rowcount)
