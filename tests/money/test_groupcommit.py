"""GroupCommit with a batch-level `work_many`: one call per batch, an exception *value* refuses
one item (which wrote nothing) without touching the others, and an exception *raised* (the
transaction is broken) reruns the items one by one in savepoints, so only the bad one fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from core.db import make_engine, write_tx
from core.groupcommit import GroupCommit
from core.rawsql import sql
from core.settings import load_settings

calls: list[int] = []
"""The size of every `work_many` call, in order."""


async def _batch(conn: AsyncConnection, items: list[int]) -> list[int | BaseException]:
    """Insert every item; refuse odd ones without writing; a negative one breaks the statement."""
    calls.append(len(items))
    out: list[int | BaseException] = []
    for x in items:
        if x > 0 and x % 2:
            out.append(ValueError(f"odd {x}"))
            continue
        await conn.execute(sql("INSERT INTO gc_probe (x) VALUES (:x)"), {"x": x})
        out.append(x)
    return out


async def test_work_many_refuses_items_and_isolates_a_broken_one(tmp_path: Path) -> None:
    engine = make_engine(load_settings({"NX_DATA_DIR": str(tmp_path)}))
    async with write_tx(engine) as conn:
        await conn.execute(text("CREATE TABLE gc_probe (x INTEGER NOT NULL CHECK (x >= 0))"))
    commits: GroupCommit[int, int] = GroupCommit(engine, work_many=_batch)
    calls.clear()
    try:
        # Submitted together: one batch, one work_many call; 3 is refused, the rest commit.
        results = await asyncio.gather(*(commits.submit(x) for x in (2, 3, 4)), return_exceptions=True)
        assert results[0] == 2 and results[2] == 4 and isinstance(results[1], ValueError)
        assert calls == [3] and commits.batches == 1
        # -2 violates the CHECK: the batch call raises, so every item reruns alone in a savepoint.
        calls.clear()
        results = await asyncio.gather(*(commits.submit(x) for x in (6, -2, 8)), return_exceptions=True)
        assert results[0] == 6 and results[2] == 8 and isinstance(results[1], Exception)
        assert calls == [3, 1, 1, 1]
        async with engine.connect() as conn:
            rows = [r[0] for r in (await conn.execute(text("SELECT x FROM gc_probe ORDER BY x"))).all()]
        assert rows == [2, 4, 6, 8]
    finally:
        await commits.close()
        await engine.dispose()


def test_some_kind_of_work(tmp_path: Path) -> None:
    engine = make_engine(load_settings({"NX_DATA_DIR": str(tmp_path)}))
    with pytest.raises(TypeError):
        GroupCommit(engine)


async def test_a_batch_that_raises_reruns_item_by_item_with_work(tmp_path: Path) -> None:
    """Given both, `work_many` is the optimistic batch and `work` what each item reruns with."""
    engine = make_engine(load_settings({"NX_DATA_DIR": str(tmp_path)}))
    async with write_tx(engine) as conn:
        await conn.execute(text("CREATE TABLE gc_probe (x INTEGER NOT NULL CHECK (x >= 0))"))
    singles: list[int] = []

    async def single(conn: AsyncConnection, x: int) -> int:
        singles.append(x)
        await conn.execute(sql("INSERT INTO gc_probe (x) VALUES (:x)"), {"x": x})
        return x

    commits: GroupCommit[int, int] = GroupCommit(engine, single, work_many=_batch)
    calls.clear()
    try:
        results = await asyncio.gather(*(commits.submit(x) for x in (6, -2, 8)), return_exceptions=True)
        assert results[0] == 6 and results[2] == 8 and isinstance(results[1], Exception)
        assert calls == [3] and singles == [6, -2, 8]
        async with engine.connect() as conn:
            rows = [r[0] for r in (await conn.execute(text("SELECT x FROM gc_probe ORDER BY x"))).all()]
        assert rows == [6, 8]
    finally:
        await commits.close()
        await engine.dispose()


async def _one(conn: AsyncConnection, x: int) -> int:
    return x
