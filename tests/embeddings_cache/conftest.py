"""One platform wired to the provider simulator (and the real local model) for the embedding cache
tests, plus an engine on its database to look at the cache table and run the eviction job."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import make_engine
from tests.inference.support import SimPlatform, start_sim_platform


@pytest.fixture(scope="session")
async def sp() -> AsyncIterator[SimPlatform]:
    running = await start_sim_platform()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="session")
async def engine(sp: SimPlatform) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(sp.platform.s)
    try:
        yield eng
    finally:
        await eng.dispose()
