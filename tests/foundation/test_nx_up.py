"""`nx up`, the README's first command, as a newcomer runs it: it prints a key and a curl that works,
stops cleanly on SIGTERM and keeps its data across restarts (a process that dies under it is
restarted: tests/faults/test_supervision.py).

Every `nx up` runs in a session of its own on free ports; the `up` fixture stops whatever is still
running when a test ends, passed or failed (SIGTERM to `nx up`, which stops its children; then
SIGKILL to the whole session)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from core.secrets import load_secrets
from core.settings import load_settings
from tests.harness import ROOT, create_pg_database, drop_pg_database, ephemeral_ports, eventually, use_postgres


class Up:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.output: list[str] = []

    async def start(self, until: tuple[str, ...] = ("curl -s", "bootstrap key"), timeout: float = 90) -> str:
        self.output = []
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "control_plane.cli", "up", env=self.env, cwd=str(ROOT),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        return await self.read_until(until, timeout)

    async def stop(self) -> None:
        """Whatever state it is in: SIGTERM and up to 40 s to stop its children, then SIGKILL to all."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.communicate(), 40)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its session: children it failed to stop
        if self.proc.returncode is None:
            await self.proc.wait()

    async def read_until(self, needles: tuple[str, ...], timeout: float = 90) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.proc.stdout.readline()).decode()
                if not line:
                    raise AssertionError(f"nx up ended before {needles!r}:\n{''.join(self.output)}")
                self.output.append(line)
                if any(n in line for n in needles):
                    return "".join(self.output)

    async def rest(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        self.output.append((await self.proc.stdout.read()).decode())
        return "".join(self.output)


@pytest.fixture
async def env() -> AsyncIterator[dict[str, str]]:
    with tempfile.TemporaryDirectory(prefix="nx-up-") as tmp:
        values = {
            "NX_DATA_DIR": tmp, **ephemeral_ports(), "NX_LOCAL_MODELS_ENABLED": "false",
            "NX_ENVOY_CONCURRENCY": "1", "PYTHONPATH": str(ROOT),
        }
        pg = None
        if use_postgres():
            pg, values["DATABASE_URL"] = await create_pg_database()
        base = {k: v for k, v in os.environ.items() if not k.startswith("NX_") and k not in ("DATABASE_URL",
                                                                                           "REDIS_URL")}
        try:
            yield {**base, **values}
        finally:
            if pg:
                await drop_pg_database(pg)


@pytest.fixture
async def nx_up() -> AsyncIterator[Callable[[dict[str, str]], Up]]:
    """Makes `Up`s, and stops every one of them after the test, passed or failed."""
    made: list[Up] = []

    def make(env: dict[str, str]) -> Up:
        made.append(Up(env))
        return made[-1]

    try:
        yield make
    finally:
        for one in made:
            await one.stop()


async def test_first_start_prints_a_working_curl_then_stops_cleanly(
        env: dict[str, str], nx_up: Callable[[dict[str, str]], Up]) -> None:
    up = nx_up(env)
    banner = await up.start()
    key = re.search(r"\b(nx_live_[0-9A-Za-z]+)\b", banner)
    curl = re.search(r"curl -s (\S+) -H 'Authorization: Bearer (\S+)'", banner)
    assert key and curl, banner
    assert curl.group(2) == key.group(1)
    async with httpx.AsyncClient() as c:
        r = await c.get(curl.group(1), headers={"authorization": f"Bearer {key.group(1)}"})
        assert r.status_code == 200 and any(m["id"] == "orion-reason" for m in r.json()["data"])
        # The seed example's model answers through the edge even with local models switched off:
        # unavailable, in OpenAI's error shape, never a hang.
        seed = await c.post(curl.group(1).replace("/v1/models", "/v1/responses"),
                            headers={"authorization": f"Bearer {key.group(1)}"},
                            json={"model": "orion-reason", "input": "Draft a migration checklist."})
        assert seed.status_code in (502, 503) and "error" in seed.json()
        # The operator API answers on its own listener, named in the banner, and not on the edge.
        operator = re.search(r"operator API .* listens on (\S+)", banner)
        assert operator, banner
        admin = {"authorization": f"Bearer {load_secrets(load_settings(env)).admin_token}"}
        assert (await c.get(operator.group(1) + "/api/orgs", headers=admin)).status_code == 200
        assert (await c.get(curl.group(1).replace("/v1/models", "/api/orgs"), headers=admin)).status_code == 404
        # Issue 19: `nx up` exposes every process's metrics at the addresses its banner names.
        metrics = re.search(r"Prometheus metrics: (\S+) \(Envoy\), /metrics on (.*) \(docs/observability.md\)", banner)
        assert metrics, banner
        assert "envoy_http_downstream_rq_total" in (await c.get(metrics.group(1))).text
        for base in metrics.group(2).split(", "):
            async def answers(url: str = base + "/metrics") -> bool:  # the worker may still be importing
                try:
                    return (await c.get(url)).status_code == 200
                except httpx.ConnectError:
                    return False

            await eventually(answers, f"{base}/metrics answers")
    assert up.proc is not None
    up.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(up.proc.wait(), 40) == 0
    assert "nx: stopping" in await up.rest()

    again = nx_up(env)
    banner = await again.start()
    assert key.group(1) not in banner and key.group(1)[:14] in banner  # only the prefix now
    async with httpx.AsyncClient() as c:  # the data (and so the key) survived the restart
        assert (await c.get(curl.group(1), headers={"authorization": f"Bearer {key.group(1)}"})).status_code == 200
    assert again.proc is not None
    again.proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(again.proc.wait(), 40) == 0


def test_every_port_setting_is_a_free_one(env: dict[str, str]) -> None:
    """No `nx up` of these tests takes a default port (9300 for local models was one): each
    `*_port` setting is set, none to its default."""
    from core.settings import Settings

    defaults = Settings()
    for name in (n for n in Settings.__struct_fields__ if n.endswith("_port")):
        value = env.get(f"NX_{name.upper()}")
        assert value is not None and int(value) != getattr(defaults, name), name
