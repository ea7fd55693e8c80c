"""The delivery job: sign and POST due deliveries, log every attempt, retry on the schedule.

Each tick fans out new outbox events, then picks due deliveries fairly across endpoints
(`schedule.py`: per endpoint, round-robin, least recently served first, never more than an
endpoint's in-flight bound) and claims them with a lease (a conditional UPDATE, so several workers
never send the same attempt; a crashed worker's lease simply runs out). The claim also writes the
attempt's row in the delivery log, so an attempt cut short by a crash is still on record. Sends
run as background tasks; concurrency is bounded overall and per endpoint. Ordering per endpoint is
not promised. The clock and the jitter source are injectable for tests.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Callable

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import now_ms, write_tx
from core.events import backoff
from core.events.attempts import Outcome, cancel_attempt, record_outcome, start_attempt
from core.events.fanout import fan_out
from core.events.schedule import Fairness, due_endpoints, heads
from core.events.signing import signature_header, unseal
from core.events.ssrf import UnsafeUrl, check_url, resolve
from core.settings import Settings
from core.telemetry.metrics import observe_webhook

__all__ = ["Dispatcher"]

log = logging.getLogger("nx.webhooks")

EXCERPT_BYTES = 1024
LEASE_MS = 60_000
"""Longer than one attempt can take (15 s timeout), so a live lease is never stolen."""


class Dispatcher:
    def __init__(self, settings: Settings, engine: AsyncEngine, pepper: str, *,
                 clock: Callable[[], int] = now_ms, rng: random.Random | None = None,
                 max_in_flight: int = 32, per_endpoint: int = 4) -> None:
        self.settings, self.engine, self.pepper = settings, engine, pepper
        self.clock, self.rng = clock, rng or random.Random()
        self.max_in_flight, self.per_endpoint = max_in_flight, per_endpoint
        self.busy: collections.Counter[str] = collections.Counter()
        self.fairness = Fairness()
        self.tasks: set[asyncio.Task[None]] = set()
        # trust_env=False: an HTTP(S)_PROXY in the environment must not reroute vetted traffic.
        self.client = httpx.AsyncClient(
            follow_redirects=False, trust_env=False, timeout=httpx.Timeout(backoff.ATTEMPT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight))

    async def __call__(self) -> None:
        """One worker tick: fan out, then start what is due; returns without waiting for sends."""
        await fan_out(self.engine, self.clock())
        await self.dispatch()

    async def dispatch(self) -> int:
        """Claim due deliveries fairly across endpoints (`schedule.py`) and start them."""
        free = self.max_in_flight - len(self.tasks)
        if free <= 0:
            return 0
        now = self.clock()
        async with self.engine.connect() as conn:
            order = [e for e in self.fairness.order(await due_endpoints(conn, now))
                     if self.busy[e] < self.per_endpoint][:free]
            found = await heads(conn, {e: min(self.per_endpoint - self.busy[e], free) for e in order}, now)
        chosen = self.fairness.pick(order, found, free)
        if not chosen:
            return 0
        async with write_tx(self.engine) as conn:
            claimed = [due for due in chosen if await start_attempt(conn, due, now, now + LEASE_MS)]
        for delivery_id, endpoint_id, attempts in claimed:
            self.busy[endpoint_id] += 1
            task = asyncio.create_task(self._run(delivery_id, endpoint_id, attempts + 1))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return len(claimed)

    async def drain(self) -> None:
        """Wait for every started attempt (tests, shutdown)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def aclose(self, grace_s: float = 5.0) -> None:
        try:
            await asyncio.wait_for(self.drain(), timeout=grace_s)
        except TimeoutError:
            for task in list(self.tasks):
                task.cancel()  # leases expire and another tick retries them
        await self.client.aclose()

    async def _run(self, delivery_id: str, endpoint_id: str, attempt: int) -> None:
        try:
            await self.attempt(delivery_id, attempt)
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly; its lease will expire", delivery_id)
        finally:
            self.busy[endpoint_id] -= 1
            if self.busy[endpoint_id] <= 0:
                del self.busy[endpoint_id]

    async def attempt(self, delivery_id: str, attempt: int) -> None:
        """Send attempt number `attempt` of a claimed (started) delivery and record what happened."""
        now = self.clock()
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                text("SELECT d.event_id, ev.payload, e.id, e.url, e.secret_enc, e.enabled, e.deleted_at "
                     "FROM webhook_deliveries d JOIN events ev ON ev.id = d.event_id "
                     "JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.id = :d"),
                {"d": delivery_id})).one()
            event_id, payload, endpoint_id, url, secret_enc, enabled, deleted = row
            # Every secret a rotation replaced signs too, until its own expiry (newest first).
            sealed = [str(secret_enc), *(str(r[0]) for r in await conn.execute(
                text("SELECT secret_enc FROM webhook_endpoint_secrets WHERE endpoint_id = :e "
                     "AND expires_at > :now ORDER BY expires_at DESC"), {"e": endpoint_id, "now": now}))]
        if not enabled or deleted is not None:
            # Disabled since the claim: nothing was sent, so the attempt is taken back; the delivery
            # stays pending and resumes if the endpoint is re-enabled.
            await cancel_attempt(self.engine, delivery_id, attempt)
            return
        secrets = [unseal(s, self.pepper) for s in sealed]
        outcome = await self._send(str(url), str(event_id), str(payload).encode(), secrets, now)
        observe_webhook(outcome.status_code, attempt, outcome.latency_ms)  # core/telemetry
        await record_outcome(self.engine, delivery_id, attempt, outcome, self.clock(), self.rng)

    async def _send(self, url: str, event_id: str, body: bytes, secrets: list[str], now: int) -> Outcome:
        timestamp = now // 1000
        started = time.monotonic()
        try:
            target = check_url(url, self.settings)
            ip = (await resolve(target, self.settings.webhooks_allow_private))[0]
        except UnsafeUrl as exc:
            return Outcome(started_at=now, latency_ms=0, error=f"refused: {exc}")
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        name = f"[{target.host}]" if ":" in target.host else target.host
        default_port = target.port == (443 if target.scheme == "https" else 80)
        headers = {
            "host": name if default_port else f"{name}:{target.port}",
            "content-type": "application/json", "user-agent": "nx-webhooks/1",
            "webhook-id": event_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, event_id, timestamp, body),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        request = self.client.build_request("POST", f"{target.scheme}://{host}:{target.port}{target.path}",
                                            content=body, headers=headers, extensions=extensions)
        try:
            async with asyncio.timeout(backoff.ATTEMPT_TIMEOUT_S):
                response = await self.client.send(request, stream=True)
                try:
                    excerpt = bytearray()
                    async for chunk in response.aiter_raw():
                        excerpt += chunk
                        if len(excerpt) >= EXCERPT_BYTES:
                            break
                finally:
                    await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            return Outcome(started_at=now, latency_ms=_ms(started),
                           error=f"timed out after {backoff.ATTEMPT_TIMEOUT_S:.0f}s")
        except httpx.HTTPError as exc:
            return Outcome(started_at=now, latency_ms=_ms(started),
                           error=f"{type(exc).__name__}: {exc}"[:500])
        retry_after = backoff.parse_retry_after(response.headers.get("retry-after"), now / 1000)
        return Outcome(started_at=now, latency_ms=_ms(started), status_code=response.status_code,
                       excerpt=bytes(excerpt[:EXCERPT_BYTES]).decode("utf-8", "replace"),
                       retry_after_s=retry_after)


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
