"""The systems under test: the provider simulator, plain Envoy in front of it, and the full platform.

The platform is the one `tests/harness.py` starts (Envoy, sidecar, control plane, adapter, worker),
wired to the simulator through a bench catalog. Its organization is moved to a `bench` plan with
limits far above anything the bench sends, so that rate limits never throttle a lane: the figures
then measure the cost of checking limits, not the limits themselves (the default plan is 6000 rpm).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text

from bench.envoy_plain import PlainEnvoy
from core.db import make_engine, write_tx
from tests.harness import ROOT, Platform, free_port
from tests.inference.support import start_local_models
from tests.simulator.server import SimulatorProcess

__all__ = ["EMBED_MODEL", "MODEL", "Stack", "models_present", "start_stack"]

MODEL = "sim/chat"
EMBED_MODEL = "local/all-minilm-l6-v2"
GRANT_NANOS = 1_000 * 10**9
"""Credit granted to the bench organization on top of the bootstrap credit ($1,000)."""

_CATALOG = """
[[backends]]
id = "sim"
protocol = "openai"
base_url = "{sim}/v1"
api_key_env = "NX_BENCH_SIM_KEY"
timeout_ms = 60000

[[backends]]
id = "local"
protocol = "openai_chat"
base_url = "http://127.0.0.1:{{local_models_port}}/v1"
timeout_ms = 120000

[[models]]
id = "sim/chat"
display_name = "Simulated chat (bench)"
backend = "sim"
upstream_name = "sim-chat-upstream"
kind = "text"
context_window = 8192
max_output_tokens = 1024
capabilities = {{ streaming = true }}
{price_chat}

[[models]]
id = "local/all-minilm-l6-v2"
display_name = "all-MiniLM-L6-v2 (local, int8)"
backend = "local"
upstream_name = "all-minilm-l6-v2"
kind = "embedding"
context_window = 256
max_output_tokens = 0
capabilities = {{ streaming = false, embeddings = true, dimensions = 384 }}
{price_embed}
"""


ENVOY_CONCURRENCY = os.environ.get("NX_ENVOY_CONCURRENCY", "2")
"""Envoy workers for both the plain Envoy and the platform's edge (the product default is 2)."""
_OWNED = {"NX_DATA_DIR", "NX_EDGE_PORT", "NX_ENVOY_ADMIN_PORT", "NX_SIDECAR_PORT", "NX_ADAPTER_PORT",
          "NX_CONTROL_PLANE_PORT", "NX_LOCAL_MODELS_PORT", "NX_CATALOG_PATH", "NX_LOCAL_MODELS_ENABLED"}


def tuning_env() -> dict[str, str]:
    """NX_* settings from the caller's environment (e.g. NX_SIDECAR_PROCESSES=2 with REDIS_URL), so a
    lane can be rerun with another configuration; ports, data dir and catalog stay the bench's."""
    env = {k: v for k, v in os.environ.items()
           if k.startswith("NX_") and k not in _OWNED and not k.startswith("NX_TEST_")}
    if os.environ.get("REDIS_URL"):
        env["REDIS_URL"] = os.environ["REDIS_URL"]
    env["NX_ENVOY_CONCURRENCY"] = ENVOY_CONCURRENCY
    return env


_PRICE_CHAT = ("price = { input_nanos_per_mtok = 1_000_000_000, cached_input_nanos_per_mtok = 500_000_000, "
               "output_nanos_per_mtok = 2_000_000_000, effective_at = 2026-01-01 }")
_PRICE_EMBED = ("price = { input_nanos_per_mtok = 5_000_000, cached_input_nanos_per_mtok = 1_000_000, "
                "output_nanos_per_mtok = 0, effective_at = 2026-01-01 }")


def models_dir() -> Path:
    return Path(os.environ.get("LOCAL_MODELS_DIR", ROOT / "data" / "models"))


def models_present() -> bool:
    from local_models import EMBEDDING_MODEL_FILE, EMBEDDING_TOKENIZER_FILE

    return all((models_dir() / f).is_file() for f in (EMBEDDING_MODEL_FILE, EMBEDDING_TOKENIZER_FILE))


@dataclass
class Stack:
    sim: SimulatorProcess
    envoy: PlainEnvoy | None = None
    platform: Platform | None = None
    local: subprocess.Popen[bytes] | None = None
    tmp: tempfile.TemporaryDirectory[str] = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix="nx-bench-"))

    @property
    def key(self) -> str:
        assert self.platform is not None
        return self.platform.key

    def pids(self) -> dict[str, int]:
        """Process name -> pid of everything this stack runs (for RSS and profiles)."""
        out: dict[str, int] = {}
        if self.sim.proc is not None:
            out["simulator"] = self.sim.proc.pid
        if self.envoy is not None and self.envoy.proc is not None:
            out["plain-envoy"] = self.envoy.proc.pid
        if self.platform is not None:
            for child in self.platform.started:
                if child.proc is not None:
                    out[child.name] = child.proc.pid
        if self.local is not None:
            out["local-models"] = self.local.pid
        return out

    async def stop(self) -> None:
        if self.platform is not None:
            await self.platform.stop()
        if self.envoy is not None:
            self.envoy.stop()
        if self.local is not None:
            self.local.terminate()
            self.local.wait(timeout=15)
        self.sim.stop()
        self.tmp.cleanup()


async def _raise_limits(platform: Platform) -> None:
    """Put the bootstrap organization on a plan no lane can reach, and wait for the sidecar to see it."""
    assert platform.settings is not None and platform.boot is not None
    engine = make_engine(platform.settings)
    try:
        async with write_tx(engine) as conn:
            await conn.execute(text("INSERT INTO plans (id, rpm, tpm, concurrent) VALUES "
                                    "('bench', 100000000, 100000000000, 100000) ON CONFLICT (id) DO NOTHING"))
            await conn.execute(text("UPDATE organizations SET plan = 'bench' WHERE id = :o"),
                               {"o": platform.boot.org_id})
            await conn.execute(text("UPDATE config_version SET version = version + 1 WHERE id = 1"))
    finally:
        await engine.dispose()
    await asyncio.sleep(2.5)  # the sidecar and adapter poll config_version every second


async def _grant(platform: Platform) -> None:
    assert platform.boot is not None
    async with platform.admin() as admin:
        reply = await admin.post(f"/api/orgs/{platform.boot.org_id}/ledger/grants",
                                 headers={"idempotency-key": f"bench-{secrets.token_hex(8)}"},
                                 json={"amount_nanos": GRANT_NANOS, "reason": "benchmark credit"})
        if reply.status_code != 201:
            raise RuntimeError(f"grant failed: {reply.status_code} {reply.text[:300]}")


async def start_stack(*, plain_envoy: bool = False, platform: bool = False, local_models: bool = False,
                      extra_env: dict[str, str] | None = None) -> Stack:
    stack = Stack(sim=SimulatorProcess().start())
    try:
        if plain_envoy:
            stack.envoy = PlainEnvoy(Path(stack.tmp.name) / "envoy", stack.sim.port).start()
        if platform:
            local_port = free_port()
            if local_models:
                stack.local = start_local_models(local_port, models_dir(), Path(stack.tmp.name) / "local.log")
            catalog = Path(stack.tmp.name) / "catalog.toml"
            catalog.write_text(_CATALOG.format(sim=stack.sim.url, price_chat=_PRICE_CHAT, price_embed=_PRICE_EMBED))
            stack.platform = Platform(extra_env={
                "NX_CATALOG_PATH": str(catalog), "NX_BENCH_SIM_KEY": stack.sim.api_key,
                "NX_LOCAL_MODELS_PORT": str(local_port), **tuning_env(), **(extra_env or {})})
            await stack.platform.start()
            await _raise_limits(stack.platform)
            await _grant(stack.platform)
    except BaseException:
        await stack.stop()
        raise
    return stack
