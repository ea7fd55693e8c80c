"""The nonce store itself, with an injected clock: a nonce is refused for twice the signature skew,
per API key, then usable again, and the worker's prune forgets it."""

from __future__ import annotations

from sqlalchemy import text

from core import nonces as replay
from core.db import make_engine, write_tx
from tests.harness import Platform


async def test_nonces_expire_after_the_window_and_are_pruned(sec: Platform) -> None:
    """With an injected clock: a nonce is refused for twice the skew, then usable and prunable."""
    engine = make_engine(sec.s)
    now = [1_000_000.0]
    nonces = replay.DatabaseNonces(engine, clock=lambda: now[0])
    try:
        assert await nonces.first_use("key_clock", "n" * 16)
        assert not await nonces.first_use("key_clock", "n" * 16)
        assert await nonces.first_use("key_other", "n" * 16)  # per key
        now[0] += 2 * replay.SKEW_SECONDS - 1
        assert not await nonces.first_use("key_clock", "n" * 16)
        now[0] += 1
        assert await nonces.first_use("key_clock", "n" * 16)  # past the window: a new use
        async with write_tx(engine) as conn:
            assert await replay.prune(conn, int(now[0] * 1000) + replay.KEEP_MS) >= 2
            left = (await conn.execute(text("SELECT COUNT(*) FROM request_nonces WHERE key_id IN"
                                            " ('key_clock', 'key_other')"))).scalar_one()
        assert left == 0
    finally:
        await nonces.close()
        await engine.dispose()
