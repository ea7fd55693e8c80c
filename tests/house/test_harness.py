"""tests/harness.py and tests/inference/support.py: a start that fails half-way stops what it had
started, every port is a free one, and the simulator platform starts no local model server unless a
test asks for one."""

from __future__ import annotations

import socket
from pathlib import Path

import asyncpg
import pytest

from core.settings import Settings
from tests.harness import Platform, ephemeral_ports, pg_admin_dsn, use_postgres
from tests.inference import support
from tests.inference.support import start_sim_platform
from tests.leakcheck import descendants


def _running(*needles: str) -> set[int]:
    """Our descendants whose command line has one of `needles` (other platforms of this session too)."""
    return {p.pid for p in descendants() if any(n in p.cmdline for n in needles)}


def _of(platform: Platform) -> list[str]:
    """The processes that run with this platform's data directory."""
    mine = f"NX_DATA_DIR={platform.env['NX_DATA_DIR']}".encode()
    out = []
    for p in descendants():
        try:
            if mine in Path(f"/proc/{p.pid}/environ").read_bytes().split(b"\0"):
                out.append(p.cmdline)
        except OSError:
            pass
    return out


def test_every_port_setting_gets_a_free_port() -> None:
    ports = ephemeral_ports()
    fields = {f"NX_{n.upper()}" for n in Settings.__struct_fields__ if n.endswith("_port")}
    assert set(ports) == fields and "NX_LOCAL_MODELS_PORT" in fields
    defaults = Settings()
    assert all(int(ports[f"NX_{n.upper()}"]) != getattr(defaults, n) for n in Settings.__struct_fields__
               if n.endswith("_port"))


async def test_a_start_that_fails_half_way_leaves_nothing() -> None:
    """The adapter cannot bind its port (something holds it): the sidecar and control plane that
    started before it are stopped, the database dropped and the data directory removed."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        p = Platform(extra_env={"NX_ADAPTER_PORT": str(taken.getsockname()[1])})
        with pytest.raises(RuntimeError, match="adapter"):
            await p.start()
    assert [c.name for c in p.started] == []
    assert not _of(p)
    assert not Path(p.env["NX_DATA_DIR"]).exists()
    if use_postgres():
        database = p.env["DATABASE_URL"].rsplit("/", 1)[1]
        conn = await asyncpg.connect(pg_admin_dsn())
        try:
            assert await conn.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", database) == 0
        finally:
            await conn.close()
    await p.stop()  # and stopping again is harmless


async def test_the_simulator_platform_starts_no_local_models_unless_asked() -> None:
    before = _running("local_models.server")
    sp = await start_sim_platform()
    try:
        assert _running("local_models.server") == before
        assert sp.platform.env["NX_LOCAL_MODELS_PORT"] == str(sp.local_port)
        assert _running(f"tests.simulator --port {sp.sim.port}")
    finally:
        await sp.stop()
    assert not _running(f"tests.simulator --port {sp.sim.port}")


async def test_a_failed_simulator_platform_stops_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fail(self: Platform) -> None:
        raise RuntimeError("the platform did not start")

    monkeypatch.setattr(support.Platform, "_start", fail)
    before = _running("tests.simulator")
    with pytest.raises(RuntimeError, match="did not start"):
        await start_sim_platform()
    assert _running("tests.simulator") <= before
