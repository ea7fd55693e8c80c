"""The worker's gauges: state that lives in the database, read every few seconds and exposed on
the worker's `/metrics` (NX_WORKER_METRICS_HOST:NX_WORKER_METRICS_PORT).

Why here: holds, webhook deliveries and background responses are rows every process writes; one
reader (the worker, one per deployment) keeps the scrape cheap and the numbers the same whichever
replica Prometheus asks. Each query reads through an index on `status`/`state`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import now_ms
from core.telemetry.metrics import (
    BACKGROUND_QUEUED,
    HOLDS_OPEN,
    HOLDS_OPEN_VALUE,
    HOLDS_OVERDUE,
    WEBHOOK_LAG,
    WEBHOOK_PENDING,
    WORKER_JOB_FAILURES,
    WORKER_JOB_SECONDS,
)

__all__ = ["GaugesJob", "timed"]

_HOLDS = text("SELECT COUNT(*), COALESCE(SUM(amount), 0), "
              "COALESCE(SUM(CASE WHEN expires_at < :now THEN 1 ELSE 0 END), 0) "
              "FROM ledger_holds WHERE status = 'open'")
_WEBHOOKS = text("SELECT COUNT(*), MIN(CASE WHEN COALESCE(next_attempt_at, created_at) <= :now "
                 "THEN COALESCE(next_attempt_at, created_at) END) FROM webhook_deliveries WHERE status = 'pending'")
_JOBS = text("SELECT state, COUNT(*) FROM response_jobs WHERE state IN ('queued', 'running') GROUP BY state")


class GaugesJob:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def __call__(self) -> None:
        now = now_ms()
        async with self.engine.connect() as conn:
            holds, value, overdue = (await conn.execute(_HOLDS, {"now": now})).one()
            pending, oldest_due = (await conn.execute(_WEBHOOKS, {"now": now})).one()
            jobs = {str(state): int(n) for state, n in await conn.execute(_JOBS)}
        HOLDS_OPEN.set(int(holds))
        HOLDS_OPEN_VALUE.set(int(value))
        HOLDS_OVERDUE.set(int(overdue))
        WEBHOOK_PENDING.set(int(pending))
        WEBHOOK_LAG.set(0 if oldest_due is None else max(0, now - int(oldest_due)) / 1000)
        for state in ("queued", "running"):
            BACKGROUND_QUEUED.labels(state).set(jobs.get(state, 0))


def timed(name: str, job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """A job whose runs are timed and whose failures are counted (then raised to the loop)."""
    seconds, failures = WORKER_JOB_SECONDS.labels(name), WORKER_JOB_FAILURES.labels(name)

    async def run() -> None:
        started = time.perf_counter()
        try:
            await job()
        except Exception:
            failures.inc()
            raise
        finally:
            seconds.observe(time.perf_counter() - started)

    return run
