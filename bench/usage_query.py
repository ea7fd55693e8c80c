"""`/v1/usage` at scale: N usage records over D days in one organization, rollups, query times.

    .venv/bin/python bench/usage_query.py [--records 10000000] [--days 30] [--db sqlite|postgresql|both]

On a throwaway database (SQLite in a temp dir, or a fresh PostgreSQL database dropped afterwards):
bulk-insert the records (tests/usage/synthetic.py: COPY / executemany), build the hourly and daily
rollups with the worker's own `roll_step`, then time, through `run_query` (the handler's code, no
HTTP), each query `--repeat` times:
- the 30-day `1d` query grouped by model (goal: under 200 ms),
- `1h` grouped by project: one full page (168 hours) and the whole 30 days (5 pages),
- the same 30-day `1d` query before any rollup existed (raw records only), for comparison.
Writes bench/results/usage_query-<db>-<records>.json and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from control_plane.usage import parse_query, roll_step, run_query  # noqa: E402
from core.db import apply_schema, make_engine, read_tx, write_tx  # noqa: E402
from core.settings import load_settings  # noqa: E402
from tests.harness import create_pg_database, drop_pg_database  # noqa: E402
from tests.usage.synthetic import insert  # noqa: E402

DAY = 86_400_000
ORG = "org_bench0000000000000000"
START = 1_924_992_000_000  # 2031-01-01 UTC: day-aligned


async def _pages(engine: AsyncEngine, params: list[tuple[str, str]]) -> tuple[int, int]:
    """Walk every page; (pages, results)."""
    pages = results = 0
    page: str | None = None
    while True:
        q = parse_query([*params, *([("page", page)] if page else [])], now_ms=0)
        async with read_tx(engine) as conn:
            out = await run_query(conn, ORG, q, None)
        pages, results = pages + 1, results + sum(len(b.results) for b in out.data)
        if not out.has_more:
            return pages, results
        page = out.next_page


async def _timed(engine: AsyncEngine, params: list[tuple[str, str]], repeat: int) -> dict[str, Any]:
    times, shape = [], (0, 0)
    for _ in range(repeat):
        t = time.perf_counter()
        shape = await _pages(engine, params)
        times.append((time.perf_counter() - t) * 1000)
    return {"params": dict(params), "pages": shape[0], "results": shape[1],
            "median_ms": round(statistics.median(times), 1),
            "min_ms": round(min(times), 1), "max_ms": round(max(times), 1), "runs": repeat}


async def run(db: str, records: int, days: int, repeat: int) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="nx-bench-usage-")
    env = {"NX_DATA_DIR": tmp.name}
    pg_name = None
    if db == "postgresql":
        pg_name, env["DATABASE_URL"] = await create_pg_database()
    engine = make_engine(load_settings(env))
    try:
        await apply_schema(engine)
        span = days * DAY
        t = time.perf_counter()
        await insert(engine, ORG, records, START, span)
        if db == "postgresql":
            async with engine.connect() as conn:
                await conn.execute(text("COMMIT"))
                raw = await conn.get_raw_connection()
                await raw.driver_connection.execute("VACUUM ANALYZE usage_records")  # type: ignore[union-attr]
        insert_s = time.perf_counter() - t
        month = [("start_time", str(START // 1000)), ("end_time", str((START + span) // 1000))]
        by_model = [*month, ("bucket_width", "1d"), ("group_by", "model"), ("limit", "31")]
        raw_only = await _timed(engine, by_model, 1)
        t = time.perf_counter()
        steps = 0
        for grain in ("hour", "day"):
            more = True
            while more:
                async with write_tx(engine) as conn:
                    more = await roll_step(conn, grain, now=START + span + DAY, lag_ms=0)
                steps += 1
        rollup_s = time.perf_counter() - t
        async with read_tx(engine) as conn:
            counts = {str(r[0]): int(r[1]) for r in await conn.execute(text(
                "SELECT grain, COUNT(*) FROM usage_rollups GROUP BY grain"))}
        by_project = [("bucket_width", "1h"), ("group_by", "project_id"), ("limit", "168")]
        week = [("start_time", str(START // 1000)), ("end_time", str((START + 7 * DAY) // 1000))]
        return {
            "database": db, "records": records, "days": days, "insert_s": round(insert_s, 1),
            "insert_rows_per_s": round(records / insert_s), "rollup_build_s": round(rollup_s, 1),
            "rollup_steps": steps, "rollup_rows": counts,
            "queries": {
                "30d_1d_by_model": await _timed(engine, by_model, repeat),
                "7d_1h_by_project_one_page": await _timed(
                    engine, [*week, *by_project], repeat),
                "30d_1h_by_project_all_pages": await _timed(
                    engine, [*month, *by_project], repeat),
                "30d_1d_by_model_raw_only_before_rollups": raw_only,
            },
        }
    finally:
        await engine.dispose()
        if pg_name:
            await drop_pg_database(pg_name)
        tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    for db in (["sqlite", "postgresql"] if args.db == "both" else [args.db]):
        result = asyncio.run(run(db, args.records, args.days, args.repeat))
        path = out_dir / f"usage_query-{db}-{args.records}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2), flush=True)


if __name__ == "__main__":
    main()
