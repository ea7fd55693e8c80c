"""Recording one attempt: the delivery log row, the delivery's next state, the endpoint's health.

An attempt is written to the log when it starts (`start_attempt`, in the claim's transaction) and
completed when it ends (`record_outcome`). A row that never completes was cut short by a worker
crash: the lease runs out, the delivery is claimed again as the next attempt, and the cut one is
marked `INTERRUPTED`. It counts as a failed attempt for the retry schedule.

Only 2xx is success (3xx too is a failure: redirects are not followed). `410 Gone` disables the
endpoint at once. Any other failure schedules the next attempt (`backoff.py`) until the schedule is
exhausted, and disables the endpoint once its attempts have failed without a success for
`DISABLE_AFTER_S`. Every disable records its reason on the endpoint and in the audit log.
"""

from __future__ import annotations

import random

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from core.audit import audit
from core.db import write_tx
from core.events import backoff

__all__ = ["INTERRUPTED", "Outcome", "cancel_attempt", "disable_endpoint", "record_outcome", "start_attempt"]

INTERRUPTED = "interrupted: the worker stopped before this attempt finished; it was sent again"


class Outcome(msgspec.Struct, kw_only=True, frozen=True):
    started_at: int
    latency_ms: int
    status_code: int | None = None
    excerpt: str = ""
    error: str | None = None
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        if self.error:
            return self.error
        return f"HTTP {self.status_code}"


async def start_attempt(conn: AsyncConnection, due: tuple[str, str, int], now: int, lease_until: int) -> bool:
    """Claim a delivery for attempt `attempts + 1` and log the attempt as started; False if lost.

    The claim is a conditional UPDATE on the attempt count seen by the scheduler, so a worker that
    read a stale row (another one claimed and finished it meanwhile) claims nothing.
    """
    delivery_id, endpoint_id, attempts = due
    result = await conn.execute(
        text("UPDATE webhook_deliveries SET lease_until = :lease, attempts = :n, updated_at = :now "
             "WHERE id = :d AND status = 'pending' AND attempts = :seen "
             "AND (lease_until IS NULL OR lease_until < :now)"),
        {"lease": lease_until, "n": attempts + 1, "now": now, "d": delivery_id, "seen": attempts})
    if result.rowcount != 1:
        return False
    if attempts:
        await conn.execute(
            text("UPDATE webhook_attempts SET error = :err WHERE delivery_id = :d AND latency_ms IS NULL"),
            {"err": INTERRUPTED, "d": delivery_id})
    await conn.execute(
        text("INSERT INTO webhook_attempts (delivery_id, attempt, endpoint_id, started_at, response_excerpt) "
             "VALUES (:d, :n, :e, :now, '')"),
        {"d": delivery_id, "n": attempts + 1, "e": endpoint_id, "now": now})
    return True


async def cancel_attempt(engine: AsyncEngine, delivery_id: str, attempt: int) -> None:
    """Take back a started attempt that sent nothing (the endpoint was disabled since the claim)."""
    async with write_tx(engine) as conn:
        await conn.execute(text("DELETE FROM webhook_attempts WHERE delivery_id = :d AND attempt = :n"),
                           {"d": delivery_id, "n": attempt})
        await conn.execute(text("UPDATE webhook_deliveries SET attempts = :prev, lease_until = NULL "
                                "WHERE id = :d AND attempts = :n"),
                           {"prev": attempt - 1, "d": delivery_id, "n": attempt})


async def record_outcome(engine: AsyncEngine, delivery_id: str, attempt: int, outcome: Outcome, now: int,
                         rng: random.Random) -> None:
    async with write_tx(engine) as conn:
        row = (await conn.execute(
            text("SELECT d.endpoint_id, d.org_id FROM webhook_deliveries d WHERE d.id = :d"),
            {"d": delivery_id})).one()
        endpoint_id, org_id = str(row.endpoint_id), str(row.org_id)
        next_at: int | None = None
        if outcome.ok:
            status, error = "succeeded", None
            await conn.execute(text("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = :e"),
                               {"e": endpoint_id})
        elif outcome.status_code == 410:
            status, error = "failed", "410 Gone: the endpoint was disabled"
            await disable_endpoint(conn, org_id, endpoint_id, "the receiver answered 410 Gone", now)
        else:
            delay = backoff.next_delay_ms(attempt, outcome.retry_after_s, rng)
            error = outcome.describe()
            if delay is None:
                status, error = "failed", f"gave up after {attempt} attempts; last: {error}"
            else:
                status, next_at = "pending", now + delay
            await _note_failure(conn, org_id, endpoint_id, now)
        await conn.execute(
            text("UPDATE webhook_attempts SET started_at = :at, status_code = :code, latency_ms = :lat, "
                 "error = :err, response_excerpt = :ex, next_attempt_at = :next "
                 "WHERE delivery_id = :d AND attempt = :n"),
            {"d": delivery_id, "n": attempt, "at": outcome.started_at,
             "code": outcome.status_code, "lat": outcome.latency_ms, "err": outcome.error,
             "ex": outcome.excerpt, "next": next_at})
        await conn.execute(
            text("UPDATE webhook_deliveries SET status = :s, attempts = :n, next_attempt_at = :next, "
                 "lease_until = NULL, last_error = :err, updated_at = :now WHERE id = :d"),
            {"s": status, "n": attempt, "next": next_at, "err": error, "now": now, "d": delivery_id})


async def _note_failure(conn: AsyncConnection, org_id: str, endpoint_id: str, now: int) -> None:
    await conn.execute(
        text("UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, :now) WHERE id = :e"),
        {"now": now, "e": endpoint_id})
    since = (await conn.execute(text("SELECT failing_since FROM webhook_endpoints WHERE id = :e"),
                                {"e": endpoint_id})).scalar_one()
    if now - int(since) >= backoff.DISABLE_AFTER_S * 1000:
        days = backoff.DISABLE_AFTER_S // 86400
        await disable_endpoint(conn, org_id, endpoint_id,
                               f"every delivery attempt failed for {days} days", now)


async def disable_endpoint(conn: AsyncConnection, org_id: str, endpoint_id: str, reason: str,
                           now: int) -> None:
    result = await conn.execute(
        text("UPDATE webhook_endpoints SET enabled = 0, disabled_reason = :r, disabled_at = :now, "
             "updated_at = :now WHERE id = :e AND enabled = 1"), {"r": reason, "now": now, "e": endpoint_id})
    if result.rowcount == 1:
        # The audit log is the owner's out-of-band trail; the endpoint itself shows the reason too.
        await audit(conn, org_id, "system", "webhook_endpoint.disabled", endpoint_id, {"reason": reason})
