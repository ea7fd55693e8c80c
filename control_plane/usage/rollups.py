"""Usage rollups: hourly and daily aggregates of usage_records, maintained by the worker.

Per (organization, project, key, model, endpoint, status) and hour (or UTC day): requests, errors
(status >= 400), token sums, the spend in nano-dollars and a latency histogram (histogram.py).

Incremental and watermark-based: `usage_rollup_state.watermark` (unix ms, exclusive) says that
every record created before it is in the grain's rows. A step locks the state row (PostgreSQL
`FOR UPDATE`; SQLite's write lock via BEGIN IMMEDIATE), aggregates the next whole hours (days)
with one `INSERT ... SELECT ... GROUP BY`, upserts them and moves the watermark, all in one
transaction: two workers never roll the same interval twice, a crash rolls nothing back halfway,
and the upsert overwrites (never adds) so replaying an interval is harmless.

Hours are rolled only once they closed `lag_ms` ago: a usage record is stamped inside its
settlement transaction, which commits within seconds, so a record stamped before the watermark
but committed after it could only come from a transaction open longer than the lag (2 minutes by
default). Queries (query.py) read raw records above the watermark, so results never wait for the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_plane.usage.histogram import COLUMNS, raw_bin_sums
from core.db import now_ms, write_tx

__all__ = ["DAY_MS", "DIMENSIONS", "GRAIN_MS", "HOUR_MS", "RollupJob", "roll_step", "watermarks"]

log = logging.getLogger("nx.worker.usage")

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
GRAIN_MS = {"hour": HOUR_MS, "day": DAY_MS}
DIMENSIONS = ("org_id", "project_id", "key_id", "model_id", "endpoint", "status")
METRICS = ("requests", "errors", "input_tokens", "cached_tokens", "output_tokens", "cost_nanos")
# How many hours (days) one transaction rolls at most, so a catch-up never holds a lock for long.
CHUNK = {"hour": 24, "day": 31}

_DIMS = ", ".join(DIMENSIONS)
_ALL = ("grain", "bucket_start", *DIMENSIONS, *METRICS, *COLUMNS)
_UPSERT = (f"INSERT INTO usage_rollups ({', '.join(_ALL)}) {{select}}"
           f" ON CONFLICT (grain, org_id, bucket_start, project_id, key_id, model_id, endpoint, status)"
           f" DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in (*METRICS, *COLUMNS))}")
_FROM_RAW = (f"SELECT 'hour', (created_at / {HOUR_MS}) * {HOUR_MS} AS b, {_DIMS}, COUNT(*),"
             " SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(input_tokens), SUM(cached_tokens),"
             f" SUM(output_tokens), SUM(cost_nanos), {raw_bin_sums()} FROM usage_records"
             f" WHERE created_at >= :lo AND created_at < :hi GROUP BY b, {_DIMS}")
_FROM_HOURS = (f"SELECT 'day', (bucket_start / {DAY_MS}) * {DAY_MS} AS b, {_DIMS},"
               f" {', '.join(f'SUM({c})' for c in (*METRICS, *COLUMNS))} FROM usage_rollups"
               f" WHERE grain = 'hour' AND bucket_start >= :lo AND bucket_start < :hi GROUP BY b, {_DIMS}")


async def watermarks(conn: AsyncConnection) -> dict[str, int]:
    """Each grain's watermark; a grain never rolled is complete below 0 (i.e. not at all)."""
    rows = await conn.execute(text("SELECT grain, watermark FROM usage_rollup_state"))
    found = {str(grain): int(mark) for grain, mark in rows}
    return {grain: found.get(grain, 0) for grain in GRAIN_MS}


async def _lock_state(conn: AsyncConnection, grain: str, target: int, now: int) -> int:
    lock = " FOR UPDATE" if conn.dialect.name == "postgresql" else ""
    select = text(f"SELECT watermark FROM usage_rollup_state WHERE grain = :g{lock}")
    row = (await conn.execute(select, {"g": grain})).first()
    if row is None:  # first run: start at the first record (a racing worker's insert wins, same value)
        await conn.execute(text(
            "INSERT INTO usage_rollup_state (grain, watermark, updated_at) VALUES (:g, :w, :n)"
            " ON CONFLICT (grain) DO NOTHING"),
            {"g": grain, "w": await _initial(conn, grain, target), "n": now})
        row = (await conn.execute(select, {"g": grain})).one()
    return int(row[0])


async def _initial(conn: AsyncConnection, grain: str, target: int) -> int:
    """Where a grain starts: the first record's hour (day), or `target` when there is nothing yet."""
    if grain == "hour":
        first = (await conn.execute(text("SELECT MIN(created_at) FROM usage_records"))).scalar()
    else:
        first = (await conn.execute(text(
            "SELECT MIN(bucket_start) FROM usage_rollups WHERE grain = 'hour'"))).scalar()
    width = GRAIN_MS[grain]
    return target if first is None else min(target, int(first) // width * width)


async def roll_step(conn: AsyncConnection, grain: str, *, now: int | None = None,
                    lag_ms: int = 120_000) -> bool:
    """Roll the next chunk of `grain` in the caller's write transaction; True if more is due."""
    now = now_ms() if now is None else now
    width = GRAIN_MS[grain]
    if grain == "hour":
        target = (now - lag_ms) // width * width
    else:  # days are built from complete hours only
        target = (await watermarks(conn))["hour"] // width * width
    mark = await _lock_state(conn, grain, target, now)
    if mark >= target:
        return False
    hi = min(target, mark + CHUNK[grain] * width)
    select = _FROM_RAW if grain == "hour" else _FROM_HOURS
    await conn.execute(text(_UPSERT.format(select=select)), {"lo": mark, "hi": hi})
    await conn.execute(text("UPDATE usage_rollup_state SET watermark = :w, updated_at = :n WHERE grain = :g"),
                       {"w": hi, "n": now, "g": grain})
    return hi < target


class RollupJob:
    """The worker job: brings the hour grain, then the day grain, up to date (chunk by chunk)."""

    def __init__(self, engine: AsyncEngine, lag_ms: int = 120_000, clock: Callable[[], int] = now_ms) -> None:
        self.engine, self.lag_ms, self.clock = engine, lag_ms, clock

    async def __call__(self) -> None:
        for grain in ("hour", "day"):
            steps = 0
            more = True
            while more:
                async with write_tx(self.engine) as conn:
                    more = await roll_step(conn, grain, now=self.clock(), lag_ms=self.lag_ms)
                steps += 1
            if steps > 1:
                log.info("usage rollups: %s grain caught up in %d steps", grain, steps)
