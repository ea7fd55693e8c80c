"""Ledger hot path: holds and settlements per second, one commit per settlement vs group commit.

    .venv/bin/python -m bench.ledger_hot_path [--requests 2000] [--batch 64] [--postgresql]

Uses a throwaway database (SQLite in a temp dir, or a fresh PostgreSQL database that is dropped
afterwards). The first figures are sequential on one connection: the cost of the ledger's own
statements and commits, not contention. The last line is the hot path as the sidecar and the
adapter run it: `--concurrency` callers submitting holds, then settlements, through a
`GroupCommit` (core/groupcommit.py), with the process's CPU time per request.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core import ledger
from core.db import apply_schema, make_engine, now_ms, write_tx
from core.groupcommit import GroupCommit
from core.ids import new_id
from core.ledger import Usage
from core.settings import load_settings


async def _holds(engine: AsyncEngine, t: object, n: int) -> list[str]:
    from tests.money.conftest import MODEL

    ids = []
    for _ in range(n):
        async with write_tx(engine) as conn:
            h = await ledger.place_hold(conn, org_id=t.org_id, project_id=t.project_id,  # type: ignore[attr-defined]
                                        key_id=t.key_id, request_id=new_id("req"),  # type: ignore[attr-defined]
                                        model_id=MODEL, endpoint="responses", backend_id="be_test",
                                        max_input_tokens=1000, max_output_tokens=500,
                                        expires_at_ms=now_ms() + 600_000)
        ids.append(h.id)
    return ids


async def _group_commit(engine: AsyncEngine, t: object, n: int, concurrency: int, db: str) -> None:
    from tests.money.conftest import MODEL

    async def hold(conn: AsyncConnection, request_id: str) -> str:
        h = await ledger.place_hold(conn, org_id=t.org_id, project_id=t.project_id,  # type: ignore[attr-defined]
                                    key_id=t.key_id, request_id=request_id,  # type: ignore[attr-defined]
                                    model_id=MODEL, endpoint="chat", backend_id="be_test",
                                    max_input_tokens=1000, max_output_tokens=500,
                                    expires_at_ms=now_ms() + 600_000)
        return h.id

    async def settle(conn: AsyncConnection, request_id: str) -> int:
        return (await ledger.settle_hold(conn, request_id, Usage(input_tokens=800, output_tokens=300))).charged

    async def hold_many(conn: AsyncConnection, request_ids: list[str]) -> list[str | BaseException]:
        placed = await ledger.place_holds(conn, [ledger.HoldRequest(
            org_id=t.org_id, project_id=t.project_id, key_id=t.key_id,  # type: ignore[attr-defined]
            request_id=r, model_id=MODEL, endpoint="chat", backend_id="be_test", max_input_tokens=1000,
            max_output_tokens=500, expires_at_ms=now_ms() + 600_000) for r in request_ids])
        return [h if isinstance(h, BaseException) else h.id for h in placed]

    # As the sidecar runs them (proxy_plugins/sidecar/hold.py): set-based, hold by hold if refused.
    holds: GroupCommit[str, str] = GroupCommit(engine, hold, work_many=hold_many)
    async def settle_batch(conn: AsyncConnection, request_ids: list[str]) -> list[int | BaseException]:
        usage = Usage(input_tokens=800, output_tokens=300)
        return [s.charged for s in await ledger.settle_batch(conn, [(r, usage) for r in request_ids])]

    # As the adapter runs them (proxy_plugins/adapter/commit.py).
    settles: GroupCommit[str, int] = GroupCommit(engine, settle, work_many=settle_batch)
    ids = [new_id("req") for _ in range(n)]
    figures = []
    for commits in (holds, settles):
        queue = list(ids)
        cpu, wall = time.process_time(), time.perf_counter()

        async def caller(c: GroupCommit[str, Any]) -> None:
            while queue:
                await c.submit(queue.pop())

        await asyncio.gather(*(caller(commits) for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        figures.append(f"{n / wall:,.0f}/s, {cpu / n * 1e6:,.0f} us CPU each, "
                       f"{commits.items / max(commits.batches, 1):.1f} per batch")
        await commits.close()
    print(f"{db}: group commit, {concurrency} concurrent callers: holds {figures[0]}; settlements {figures[1]}")


async def main(requests: int, batch: int, postgresql: bool, concurrency: int = 32) -> None:
    from tests.harness import create_pg_database, drop_pg_database
    from tests.money import conftest

    tmp = tempfile.TemporaryDirectory(prefix="nx-bench-")
    env = {"NX_DATA_DIR": tmp.name}
    pg = None
    if postgresql:
        pg, env["DATABASE_URL"] = await create_pg_database()
    engine = make_engine(load_settings(env))
    try:
        await apply_schema(engine)
        await _seed(engine)
        t = await conftest.make_tenant(engine)
        async with write_tx(engine) as conn:
            await ledger.grant(conn, t.org_id, 10**15, idempotency_key="bench", actor="bench")
        usage = Usage(input_tokens=800, output_tokens=300, latency_ms=5)
        start = time.perf_counter()
        ids = await _holds(engine, t, requests)
        hold_s = time.perf_counter() - start
        start = time.perf_counter()
        for hold_id in ids:
            async with write_tx(engine) as conn:
                await ledger.settle_hold(conn, hold_id, usage)
        single_s = time.perf_counter() - start
        ids = await _holds(engine, t, requests)
        start = time.perf_counter()
        for i in range(0, len(ids), batch):
            async with write_tx(engine) as conn:
                await ledger.settle_many(conn, [(h, usage) for h in ids[i:i + batch]])
        batch_s = time.perf_counter() - start
        async with write_tx(engine) as conn:
            report = await ledger.reconcile(conn, t.org_id)
        db = "postgresql" if postgresql else "sqlite"
        print(f"{db}: {requests} requests; place_hold {requests / hold_s:,.0f}/s; "
              f"settle_hold (1 commit each) {requests / single_s:,.0f}/s; settle_many (batch {batch}) {requests / batch_s:,.0f}/s; "
              f"reconcile ok={report.ok}")
        await _group_commit(engine, t, requests, concurrency, db)
    finally:
        await engine.dispose()
        if pg:
            await drop_pg_database(pg)
        tmp.cleanup()


async def _seed(engine: AsyncEngine) -> None:
    from sqlalchemy import text

    from tests.money.conftest import MODEL, PRICE, add_price

    async with write_tx(engine) as conn:
        now = now_ms()
        await conn.execute(text("INSERT INTO backends (id, protocol, base_url, created_at, updated_at)"
                                " VALUES ('be_test', 'openai', 'http://127.0.0.1:9', :n, :n)"), {"n": now})
        await conn.execute(text(
            "INSERT INTO models (id, display_name, backend_id, upstream_name, kind, context_window,"
            " max_output_tokens, created_at, updated_at) VALUES (:m, :m, 'be_test', :m, 'text', 8192, 4096,"
            " :n, :n)"), {"m": MODEL, "n": now})
        await add_price(conn, MODEL, 1, PRICE, effective_at=0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--postgresql", action="store_true")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(min(args.requests, 20_000), args.batch, args.postgresql, args.concurrency))
