"""A platform whose catalog points at the provider simulator: one backend per protocol."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import openai
import pytest

from tests.harness import Platform
from tests.simulator.server import SimulatorProcess

SIM_KEY, SIM_ANTHROPIC_KEY = "sk-sim-upstream-secret-0001", "sk-ant-sim-upstream-secret-0002"
PRICE = (
    "price = { input_nanos_per_mtok = 1_000_000_000, cached_input_nanos_per_mtok = 500_000_000,"
    " output_nanos_per_mtok = 2_000_000_000, effective_at = 2026-01-01 }"
)
FULL = "{ streaming = true, tools = true, json_schema = true, json_object = true, vision = true }"


def catalog(sim_url: str) -> str:
    backends = [
        ("sim_chat", "openai_chat", "SIM_UPSTREAM_KEY"),
        ("sim_openai", "openai", "SIM_UPSTREAM_KEY"),
        ("sim_anthropic", "anthropic", "SIM_ANTHROPIC_KEY"),
    ]
    out = [
        f'[[backends]]\nid = "{b}"\nprotocol = "{p}"\nbase_url = "{sim_url}/v1"\napi_key_env = "{k}"\n'
        f"timeout_ms = 10000\n"
        for b, p, k in backends
    ]
    models = [
        ("sim/chat", "sim_chat", FULL),
        ("sim/openai", "sim_openai", FULL),
        (
            "sim/claude",
            "sim_anthropic",
            "{ streaming = true, tools = true, json_schema = true, vision = true }",
        ),
        ("sim/plain", "sim_chat", "{ streaming = false }"),
    ]
    for mid, backend, caps in models:
        out.append(
            f'[[models]]\nid = "{mid}"\ndisplay_name = "{mid}"\nbackend = "{backend}"\n'
            f'upstream_name = "sim-chat"\nkind = "text"\ncontext_window = 8192\nmax_output_tokens = 512\n'
            f"capabilities = {caps}\n{PRICE}\n"
        )
    return "\n".join(out)


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorProcess]:
    sim = SimulatorProcess(SIM_KEY, SIM_ANTHROPIC_KEY).start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture(scope="session")
async def sim_platform(simulator: SimulatorProcess) -> AsyncIterator[Platform]:
    with tempfile.TemporaryDirectory(prefix="nx-resp-cat-") as tmp:
        path = Path(tmp) / "catalog.toml"
        path.write_text(catalog(simulator.url))
        p = Platform(
            extra_env={
                "NX_CATALOG_PATH": str(path),
                "SIM_UPSTREAM_KEY": SIM_KEY,
                "SIM_ANTHROPIC_KEY": SIM_ANTHROPIC_KEY,
            }
        )
        await p.start()
        try:
            yield p
        finally:
            await p.stop()


@pytest.fixture
def sdk(sim_platform: Platform) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{sim_platform.edge}/v1", api_key=sim_platform.key, max_retries=0)
