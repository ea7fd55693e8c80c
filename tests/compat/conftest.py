"""A platform wired to the provider simulator, for the official SDKs as real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.inference.support import SimPlatform, start_sim_platform


@pytest.fixture(scope="session")
async def sp() -> AsyncIterator[SimPlatform]:
    running = await start_sim_platform()
    try:
        yield running
    finally:
        await running.stop()
