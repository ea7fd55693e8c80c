"""One platform for the hostile-input tests: the real edge, sidecar, adapter, control plane and
worker, with the provider simulator behind the inference routes (no local models: their queue is
not what these tests are about, and they are slow)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness import Platform, free_port
from tests.inference.support import CATALOG, PRICE
from tests.simulator.server import SimulatorProcess


@dataclass
class Hostile:
    p: Platform
    sim: SimulatorProcess
    tmp: tempfile.TemporaryDirectory[str] = field(repr=False)

    async def stop(self) -> None:
        try:
            await self.p.stop()
        finally:
            self.sim.stop()
            self.tmp.cleanup()


async def start_hostile() -> Hostile:
    sim = SimulatorProcess().start()
    tmp = tempfile.TemporaryDirectory(prefix="nx-hostile-")
    catalog = Path(tmp.name) / "catalog.toml"
    catalog.write_text(CATALOG.format(sim=sim.url, dead_port=free_port(), price=PRICE))
    running = Hostile(Platform(extra_env={"NX_CATALOG_PATH": str(catalog), "NX_TEST_SIM_KEY": sim.api_key,
                                          "NX_TEST_SIM_ANT_KEY": sim.anthropic_key}), sim, tmp)
    try:
        await running.p.start()
    except BaseException:
        await running.stop()
        raise
    return running


@pytest.fixture(scope="session")
async def hp() -> AsyncIterator[Hostile]:
    running = await start_hostile()
    try:
        yield running
    finally:
        await running.stop()
