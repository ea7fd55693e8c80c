"""A platform wired to the provider simulator for the security tests, and tenants to attack it with.

`world` builds two organizations: A with projects P1 and P2, a key limited to each and an
unlimited key; B with one key. The isolation tests create resources with A's P1 key and try them
with every other key.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import Platform
from tests.simulator.server import SimulatorProcess

PRICE = ("price = { input_nanos_per_mtok = 1_000_000_000, cached_input_nanos_per_mtok = 500_000_000,"
         " output_nanos_per_mtok = 2_000_000_000, effective_at = 2026-01-01 }")

CATALOG = """
[[backends]]
id = "sim"
protocol = "openai"
base_url = "{sim}/v1"
api_key_env = "NX_TEST_SIM_KEY"
timeout_ms = 10000

[[models]]
id = "sim/chat"
display_name = "Simulated chat"
backend = "sim"
upstream_name = "sim-chat-upstream"
kind = "text"
context_window = 8192
max_output_tokens = 512
capabilities = {{ streaming = true }}
{price}

[[models]]
id = "sim/embed"
display_name = "Simulated embeddings"
backend = "sim"
upstream_name = "sim-embed-upstream"
kind = "embedding"
context_window = 8192
max_output_tokens = 0
capabilities = {{ streaming = false, embeddings = true, dimensions = 8, custom_dimensions = true }}
{price}
"""


@dataclass
class World:
    org_a: str
    p1: str
    p2: str
    key_p1: str
    key_p2: str
    key_a: str
    """Organization A's key without a project scope."""
    org_b: str
    key_b: str


@asynccontextmanager
async def sim_platform(**extra_env: str) -> AsyncIterator[Platform]:
    """A platform whose catalog points at a fresh provider simulator; stopped on exit."""
    sim = SimulatorProcess().start()
    tmp = tempfile.TemporaryDirectory(prefix="nx-sec-catalog-")
    try:
        catalog = Path(tmp.name) / "catalog.toml"
        catalog.write_text(CATALOG.format(sim=sim.url, price=PRICE))
        p = Platform(extra_env={"NX_CATALOG_PATH": str(catalog), "NX_TEST_SIM_KEY": sim.api_key,
                                "NX_WEBHOOKS_ALLOW_HTTP": "true", "NX_WEBHOOKS_ALLOW_PRIVATE": "true",
                                **extra_env})
        try:
            await p.start()
            yield p
        finally:
            await p.stop()
    finally:
        sim.stop()
        tmp.cleanup()


@pytest.fixture(scope="session")
async def sec() -> AsyncIterator[Platform]:
    async with sim_platform() as p:
        yield p


async def new_org(platform: Platform, name: str) -> str:
    async with platform.admin() as admin:
        org = (await admin.post("/api/orgs", json={"name": f"{name}-{secrets.token_hex(4)}"})).json()["id"]
        r = await admin.post(f"/api/orgs/{org}/ledger/grants", json={"amount_nanos": 10**9},
                             headers={"idempotency-key": secrets.token_hex(8)})
        assert r.status_code == 201, r.text
    return str(org)


async def new_key(platform: Platform, org: str, **scopes: object) -> str:
    async with platform.admin() as admin:
        r = await admin.post(f"/api/orgs/{org}/keys", json={"name": "sec", **scopes})
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


async def new_project(platform: Platform, org: str, name: str) -> str:
    async with platform.admin() as admin:
        r = await admin.post(f"/api/orgs/{org}/projects", json={"name": name})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@pytest.fixture(scope="session")
async def world(sec: Platform) -> World:
    org_a, org_b = await new_org(sec, "a"), await new_org(sec, "b")
    p1, p2 = await new_project(sec, org_a, "p1"), await new_project(sec, org_a, "p2")
    return World(org_a=org_a, p1=p1, p2=p2, key_p1=await new_key(sec, org_a, projects=[p1]),
                 key_p2=await new_key(sec, org_a, projects=[p2]), key_a=await new_key(sec, org_a),
                 org_b=org_b, key_b=await new_key(sec, org_b))
