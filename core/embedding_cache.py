"""The embedding cache: vectors already computed for an organization, served without a backend call.

Key. One entry per (organization, project, model, input, dimensions). The model part is the canonical model
id together with its backend and upstream name, so re-pointing a model at another backend never
serves the old backend's vectors. `dimensions` is the width actually produced (the requested one,
else the catalog's native width), so `dimensions: 8` and no `dimensions` share entries on an
8-wide model. Strings and token-id arrays are keyed apart. The key is a SHA-256 digest: the input
text itself is never stored.

Isolation. Entries are scoped to the organization (`org_id` is part of the primary key) and to
the project the request acts for (part of the key's digest). A shared cache would be a side
channel: a fast, cheap `hit` tells the caller that some other tenant embedded exactly that text;
a key limited to project P2 must not learn that about project P1 either.

Value. The vector as little-endian float32 bytes (base64 TEXT, portable across SQLite and
PostgreSQL), independent of the encoding the client asked for: a float request and a base64
request are served from the same entry, and hits and misses give byte-identical vectors.

Token counts. Each entry stores its input's token count, so a hit is billed at the cached-input
price for exactly those tokens. A backend reports one total per call: a single uncached input gets
that total; several split it by `apportion` (documented there), which sums exactly to the total,
so the input tokens billed for a request always equal the backend's total for what it computed plus
the stored counts of what the cache served.

Storage is the database only (REDIS_URL does not change it). Eviction: the worker's
`embedding_cache` job (`EvictJob`) drops entries unused for `TTL_MS` and keeps each organization
under `MAX_ENTRIES_PER_ORG`, least recently used first. A hit refreshes `last_used_at` at most once
per `TOUCH_EVERY_MS`, so the hit path normally writes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import struct

import msgspec
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.db import now_ms, read_tx, write_tx
from core.snapshot import ModelRecord

__all__ = ["MAX_ENTRIES_PER_ORG", "TTL_MS", "Entry", "EvictJob", "Input", "apportion", "entry_key", "evict",
           "lookup", "no_store", "pack", "stale", "store", "touch", "weight"]

log = logging.getLogger("nx.adapter.embedding_cache")

TTL_MS = 30 * 24 * 3600 * 1000
"""Entries unused for 30 days are evicted."""
MAX_ENTRIES_PER_ORG = 50_000
"""At most this many entries per organization (a 1536-wide vector is ~8 KB of base64)."""
TOUCH_EVERY_MS = 3600 * 1000
"""`last_used_at` resolution: a hit writes only when its entry was last touched over an hour ago."""
_EVICT_BATCH = 5_000
"""Rows deleted per statement, so eviction never holds the write lock long."""

Input = str | list[int]


class Entry(msgspec.Struct, frozen=True):
    vector: bytes
    """Little-endian float32."""
    tokens: int
    last_used_at: int = 0


def no_store(cache_control: str) -> bool:
    """True when the request's Cache-Control has the `no-store` directive (case-insensitive)."""
    return any(part.split("=", 1)[0].strip().lower() == "no-store" for part in cache_control.split(","))


def entry_key(model: ModelRecord, dimensions: int, item: Input, *, project: str) -> str:
    """Hex SHA-256 of the length-prefixed key parts (length prefixes: no two keys concatenate alike)."""
    if isinstance(item, str):
        payload = b"s" + item.encode("utf-8", "surrogatepass")
    else:
        payload = b"t" + msgspec.json.encode(item)
    digest = hashlib.sha256()
    for part in (b"nx-embedding-v2", project.encode(), model.id.encode(), model.backend_id.encode(),
                 model.upstream_name.encode(), str(dimensions).encode(), payload):
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def pack(vector: list[float] | str) -> bytes:
    """A backend's vector (floats, or base64 of little-endian float32) as little-endian float32."""
    if isinstance(vector, str):
        return base64.b64decode(vector, validate=True)
    return struct.pack(f"<{len(vector)}f", *vector)


def apportion(total: int, weights: list[int]) -> list[int]:
    """Split a batch's token `total` over its inputs; the parts always sum to exactly `total`.

    The rule: when the total allows it, every input gets 1 token (no real input is free), and the
    rest is shared in proportion to the inputs' weights (UTF-8 bytes of a string, length of a
    token-id array), by largest remainder, ties to the earlier input. A backend that reports fewer
    tokens than inputs gets the whole total shared that way, without the floor."""
    n = len(weights)
    if n == 0:
        return []
    base = 1 if total >= n else 0
    rest = total - base * n
    weights = [max(w, 1) for w in weights]
    whole = sum(weights)
    shares = [rest * w // whole for w in weights]
    order = sorted(range(n), key=lambda i: (-(rest * weights[i] % whole), i))
    for i in order[: rest - sum(shares)]:
        shares[i] += 1
    return [base + s for s in shares]


def weight(item: Input) -> int:
    return len(item.encode("utf-8", "surrogatepass")) if isinstance(item, str) else len(item)


_LOOKUP = text("SELECT entry_key, tokens, vector, last_used_at FROM embedding_cache WHERE org_id = :org"
               " AND entry_key IN :keys").bindparams(bindparam("keys", expanding=True))
_TOUCH = text("UPDATE embedding_cache SET last_used_at = :now WHERE org_id = :org AND entry_key IN :keys"
              " AND last_used_at < :stale").bindparams(bindparam("keys", expanding=True))
_INSERT = text("INSERT INTO embedding_cache (org_id, entry_key, model_id, tokens, vector, created_at,"
               " last_used_at) VALUES (:org, :key, :model, :tokens, :vector, :now, :now)"
               " ON CONFLICT (org_id, entry_key) DO NOTHING")


async def lookup(engine: AsyncEngine, org_id: str, keys: list[str]) -> dict[str, Entry]:
    """The entries among `keys` this organization has."""
    unique = sorted(set(keys))
    if not unique:
        return {}
    async with read_tx(engine) as conn:
        rows = (await conn.execute(_LOOKUP, {"org": org_id, "keys": unique})).all()
    return {str(key): Entry(base64.b64decode(vector), int(tokens), int(used))
            for key, tokens, vector, used in rows}


def stale(found: dict[str, Entry], now: int) -> list[str]:
    """The entries whose recency is worth a write (see TOUCH_EVERY_MS)."""
    return sorted(key for key, entry in found.items() if entry.last_used_at < now - TOUCH_EVERY_MS)


async def touch(engine: AsyncEngine, org_id: str, keys: list[str]) -> None:
    """Mark entries as used now (for eviction); callers pass only `stale` ones, so the hit path
    normally takes no write lock at all."""
    if not keys:
        return
    now = now_ms()
    try:
        async with write_tx(engine) as conn:
            await conn.execute(_TOUCH, {"org": org_id, "keys": keys, "now": now,
                                        "stale": now - TOUCH_EVERY_MS})
    except Exception:  # recency is a hint for eviction; the answer does not depend on it
        log.exception("could not refresh embedding cache entries")


async def store(engine: AsyncEngine, org_id: str, model_id: str, entries: dict[str, Entry]) -> None:
    """Insert new entries; an entry another request stored meanwhile is kept as it is."""
    if not entries:
        return
    now = now_ms()
    rows = [{"org": org_id, "key": key, "model": model_id, "tokens": e.tokens,
             "vector": base64.b64encode(e.vector).decode(), "now": now} for key, e in sorted(entries.items())]
    try:
        async with write_tx(engine) as conn:
            await conn.execute(_INSERT, rows)
    except Exception:  # the answer is already computed and billed correctly without the cache
        log.exception("could not store %d embedding cache entries", len(rows))


async def evict(conn: AsyncConnection, now: int, *, ttl_ms: int = TTL_MS,
                max_per_org: int = MAX_ENTRIES_PER_ORG) -> int:
    """Delete entries unused for `ttl_ms`, then each organization's least recently used ones beyond
    `max_per_org`. Returns how many rows went (at most a few batches per call)."""
    gone = 0
    expired = (await conn.execute(text(
        "DELETE FROM embedding_cache WHERE (org_id, entry_key) IN (SELECT org_id, entry_key"
        " FROM embedding_cache WHERE last_used_at < :cutoff LIMIT :n)"),
        {"cutoff": now - ttl_ms, "n": _EVICT_BATCH})).rowcount
    gone += max(expired, 0)
    crowded = (await conn.execute(text("SELECT org_id FROM embedding_cache GROUP BY org_id"
                                       " HAVING COUNT(*) > :max"), {"max": max_per_org})).all()
    for (org_id,) in crowded:
        # The newest entry past the bound, in (last_used_at, entry_key) order: it and everything
        # older goes, so exactly `max_per_org` stay even when many share a millisecond.
        edge = (await conn.execute(text(
            "SELECT last_used_at, entry_key FROM embedding_cache WHERE org_id = :org"
            " ORDER BY last_used_at DESC, entry_key DESC LIMIT 1 OFFSET :max"),
            {"org": org_id, "max": max_per_org})).first()
        if edge is None:
            continue
        deleted = (await conn.execute(text(
            "DELETE FROM embedding_cache WHERE org_id = :org AND (last_used_at < :used"
            " OR (last_used_at = :used AND entry_key <= :key))"),
            {"org": org_id, "used": edge[0], "key": edge[1]})).rowcount
        gone += max(deleted, 0)
    return gone


class EvictJob:
    """The worker's `embedding_cache` job (control_plane/worker.py)."""

    def __init__(self, engine: AsyncEngine, *, ttl_ms: int = TTL_MS,
                 max_per_org: int = MAX_ENTRIES_PER_ORG) -> None:
        self.engine, self.ttl_ms, self.max_per_org = engine, ttl_ms, max_per_org

    async def __call__(self) -> None:
        async with write_tx(self.engine) as conn:
            gone = await evict(conn, now_ms(), ttl_ms=self.ttl_ms, max_per_org=self.max_per_org)
        if gone:
            log.info("embedding cache: evicted %d entries", gone)
