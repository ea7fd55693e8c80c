"""The worker: periodic jobs that must not run inside a request.

Jobs run in one asyncio loop, each on its own interval, each failure logged and retried on the
next tick. Current jobs:
- `envoy_config`: when `config_version` moves (a routing change on any control-plane replica),
  re-render Envoy's clusters and routes on this node.
- `webhooks`: fan out outbox events and deliver due webhooks (core/events/delivery.py).
- `expire_holds`: release ledger holds whose request never settled (core/ledger/jobs.py).
- `prune_idempotency`: forget Idempotency-Keys older than 24 hours.
- `price_activation`: reload prices everywhere when a future-dated price card takes effect.
- `usage_rollups`: hourly and daily usage aggregates for /v1/usage (control_plane/usage/rollups.py).
- `embedding_cache`: evict embedding cache entries unused for 30 days or beyond the per-organization
  bound (core/embedding_cache.py).
- `identity`: send queued mail over SMTP when configured; prune ended sessions and spent tokens
  (control_plane/identity/jobs.py).
- `gauges`: open holds, pending webhooks, queued background responses for `/metrics`
  (control_plane/worker_metrics.py); every job's runs are timed and its failures counted there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.domain.keys import bump_config_version
from control_plane.envoy_config import write_dynamic
from control_plane.identity.jobs import IdentityJob
from control_plane.usage.rollups import RollupJob
from control_plane.worker_metrics import GaugesJob, timed
from core import idempotency, nonces
from core.datadir import owner_only
from core.db import checkpoint, make_engine, now_ms, write_tx
from core.embedding_cache import EvictJob
from core.events.delivery import Dispatcher
from core.ledger.jobs import ExpireHoldsJob
from core.migrations import exit_unless_current
from core.secrets import load_secrets
from core.settings import Settings, SettingsError, load_settings
from core.telemetry import configure, serve_metrics

log = logging.getLogger("nx.worker")

Job = Callable[[], Awaitable[None]]


class EnvoyConfigJob:
    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings, self.engine = settings, engine
        self.version: int | None = None

    async def __call__(self) -> None:
        async with self.engine.connect() as conn:
            version = int((await conn.execute(text("SELECT version FROM config_version WHERE id = 1"))).scalar_one())
        if version != self.version:
            async with write_tx(self.engine) as conn:
                await write_dynamic(self.settings, conn)
            self.version = version


class PriceActivationJob:
    """A price card dated in the future takes effect on its date: when one becomes effective,
    bump config_version so every sidecar and adapter reloads prices (they reload only on a bump)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.checked_until = now_ms()

    async def __call__(self) -> None:
        now = now_ms()
        # Read first: the write lock is taken only on the rare tick when a card comes into force.
        async with self.engine.connect() as conn:
            due = (await conn.execute(text(
                "SELECT 1 FROM price_cards WHERE effective_at > :since AND effective_at <= :now LIMIT 1"),
                {"since": self.checked_until, "now": now})).first()
        if due is not None:
            async with write_tx(self.engine) as conn:
                await bump_config_version(conn)
        self.checked_until = now


class PruneNoncesJob:
    """Forget signed requests' nonces once no request can carry them (core/nonces.py)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def __call__(self) -> None:
        async with write_tx(self.engine) as conn:
            await nonces.prune(conn, now_ms())


class PruneIdempotencyJob:
    """Forget Idempotency-Keys after their 24-hour retention (core/idempotency.py)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def __call__(self) -> None:
        async with write_tx(self.engine) as conn:
            await idempotency.prune(conn)


HEARTBEAT_FILE = "worker.heartbeat"
"""Touched by the worker's loop every few seconds under the data directory: the worker serves no
port, so this file's age is its health (compose's health check; `nx worker --healthy`)."""
HEARTBEAT_STALE_S = 30.0


async def _heartbeat(settings: Settings) -> None:
    (settings.data_path / HEARTBEAT_FILE).touch()


def healthy(settings: Settings, now: float | None = None) -> bool:
    """The worker's loop touched its heartbeat within HEARTBEAT_STALE_S."""
    try:
        age = (time.time() if now is None else now) - (settings.data_path / HEARTBEAT_FILE).stat().st_mtime
    except OSError:
        return False
    return age <= HEARTBEAT_STALE_S


async def _every(name: str, seconds: float, job: Job, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await job()
        except Exception:
            log.exception("job %s failed; retrying in %.1fs", name, seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)


async def run(settings: Settings) -> None:
    engine = make_engine(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    webhooks = Dispatcher(settings, engine, load_secrets(settings).key_pepper)
    jobs: list[tuple[str, float, Job]] = [("envoy_config", 1.0, EnvoyConfigJob(settings, engine)),
                                          ("webhooks", 0.25, webhooks)]
    jobs.append(("expire_holds", 2.0, ExpireHoldsJob(engine)))
    jobs.append(("heartbeat", 5.0, lambda: _heartbeat(settings)))
    jobs.append(("wal_checkpoint", 1.0, lambda: checkpoint(engine)))
    jobs.append(("prune_idempotency", 300.0, PruneIdempotencyJob(engine)))
    jobs.append(("prune_nonces", 60.0, PruneNoncesJob(engine)))
    jobs.append(("price_activation", 5.0, PriceActivationJob(engine)))
    jobs.append(("usage_rollups", 30.0, RollupJob(engine)))
    jobs.append(("embedding_cache", 60.0, EvictJob(engine)))
    jobs.append(("identity", 5.0, IdentityJob(settings, engine)))
    jobs.append(("gauges", 5.0, GaugesJob(engine)))
    serve_metrics(settings.worker_metrics_host, settings.worker_metrics_port)
    try:
        await asyncio.gather(*(_every(name, secs, timed(name, job), stop) for name, secs, job in jobs))
    finally:
        await webhooks.aclose()  # let in-flight attempts finish and record, within the timeout
        await engine.dispose()


def main(argv: list[str] | None = None) -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"nx worker: {exc}") from None
    if "--healthy" in (sys.argv[1:] if argv is None else argv):  # a health check: exit 0 or 1
        raise SystemExit(0 if healthy(settings) else 1)
    owner_only()  # the database, its WAL and anything else it creates: owner-only
    exit_unless_current(settings.effective_database_url, "worker")  # not on a schema it was not built for
    configure("worker", settings)  # JSON logs, traces when NX_OTEL_ENDPOINT is set (core/telemetry)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
