"""Synthetic usage records in bulk, for the streaming test and bench/usage_query.py.

Written straight into usage_records (not through the ledger: these tests are about volume, not
money) with the driver's fastest path: `COPY` on PostgreSQL, one `executemany` transaction on SQLite.
The shape is plausible traffic: a few projects, keys bound to projects, embedding models answering
the embeddings endpoint, ~3% errors, log-normal latencies.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

COLUMNS = ("request_id", "org_id", "project_id", "key_id", "model_id", "backend_id", "endpoint", "status",
           "input_tokens", "cached_tokens", "output_tokens", "cost_nanos", "price_version", "txn_id",
           "hold_id", "ttft_ms", "latency_ms", "cache_status", "client_ip", "created_at")
TEXT_MODELS = ("bench/large", "bench/medium", "bench/small", "bench/mini", "bench/reasoning", "bench/vision")
EMBED_MODELS = ("bench/embed-large", "bench/embed-small")


def rows(org_id: str, n: int, start_ms: int, span_ms: int, *, projects: int = 10, keys: int = 50,
         seed: int = 7) -> Iterator[tuple[Any, ...]]:
    rnd = random.Random(seed)
    project_ids = [f"proj_bench{i:03d}" for i in range(projects)]
    key_ids = [f"key_bench{i:03d}" for i in range(keys)]
    prefix = f"req_{org_id[-8:]}_{seed}_"
    for i in range(n):
        k = rnd.randrange(keys)
        if rnd.random() < 0.2:
            model, endpoint = rnd.choice(EMBED_MODELS), "embeddings"
            inp, out = rnd.randrange(1, 2000), 0
        else:
            model, endpoint = rnd.choice(TEXT_MODELS), rnd.choice(("responses", "chat"))
            inp, out = rnd.randrange(1, 8000), rnd.randrange(0, 2000)
        roll = rnd.random()
        status = 200 if roll < 0.97 else (429 if roll < 0.99 else 500)
        if status != 200:
            inp = out = 0
        cached = inp // 4 if rnd.random() < 0.3 else 0
        latency = int(rnd.lognormvariate(6.5, 0.9))
        cost = (inp * 3 + out * 12) * 1000
        yield (f"{prefix}{i}", org_id, project_ids[k % projects], key_ids[k], model, "be_bench", endpoint,
               status, inp, cached, out, cost, 1, None, None, latency // 3, latency, None, "127.0.0.1",
               start_ms + (i * span_ms) // n + rnd.randrange(0, max(1, span_ms // n)))


async def insert(engine: AsyncEngine, org_id: str, n: int, start_ms: int, span_ms: int, *, seed: int = 7,
                 batch: int = 100_000, **kw: int) -> None:
    source = rows(org_id, n, start_ms, span_ms, seed=seed, **kw)
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        if engine.dialect.name == "postgresql":
            while chunk := [r for _, r in zip(range(batch), source, strict=False)]:
                await driver.copy_records_to_table("usage_records", records=chunk, columns=list(COLUMNS))
            return
        sql = (f"INSERT INTO usage_records ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})")
        await driver.execute("BEGIN IMMEDIATE")
        try:
            while chunk := [r for _, r in zip(range(batch), source, strict=False)]:
                await driver.executemany(sql, chunk)
            await driver.execute("COMMIT")
        except BaseException:
            await driver.execute("ROLLBACK")
            raise
