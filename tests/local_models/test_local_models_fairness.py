"""One tenant cannot block the local models for everyone (the real server, real models):

- an embeddings request past the per-request token budget (inputs x length) gets a 400 naming the
  limit at once, instead of holding the model for minutes;
- a text generation's output is capped whatever `max_tokens` asks;
- another tenant's small request overtakes a large batch already running (the order of the
  answers is asserted, never a duration; the wait itself is measured in bench/lane_fairness.py);
- a tenant past its share of the queue gets 429 with Retry-After while others are served.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.slow

WORDS = ("river", "stone", "cloud", "light", "night", "maple", "ocean", "ember", "quartz", "meadow")


def long_text(seed: int, chars: int = 1000) -> str:
    rng = random.Random(seed)
    text = ""
    while len(text) < chars:
        text += rng.choice(WORDS) + " "
    return text[:chars]


def tenant(name: str) -> dict[str, str]:
    return {"x-nx-tenant": name}


async def admitted(client: httpx.AsyncClient, model: str, at_least: int, waiting_jobs: int = 0) -> None:
    """Poll /health until `model`'s queue holds at least `at_least` requests (and jobs waiting)."""
    async with asyncio.timeout(60):
        while True:
            queue = (await client.get("/health")).json()["queues"][model]
            if queue["admitted"] >= at_least and queue["waiting_jobs"] >= waiting_jobs:
                return
            await asyncio.sleep(0.02)


async def test_an_embeddings_request_past_the_token_budget_is_refused_at_once(server: Any) -> None:
    texts = [long_text(i) for i in range(2048)]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        r = await client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": texts})
        assert r.status_code == 400, r.text[:300]
        error = r.json()["error"]
        assert error["param"] == "input" and error["code"] == "request_too_large"
        assert "32,768 tokens per request" in error["message"] and "2,048 inputs" in error["message"]
        # The same texts in a request within the budget are served.
        ok = await client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": texts[:8]})
        assert ok.status_code == 200 and len(ok.json()["data"]) == 8


async def test_text_output_is_capped_whatever_max_tokens_asks(models_dir: Path, launch: Any) -> None:
    server = launch(models_dir, "--max-output-tokens", "8")
    payload = {"model": "gemma-3-270m", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "temperature": 0,
               "max_tokens": 10**12}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        r = await client.post("/v1/completions", json=payload)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 8
        assert r.json()["choices"][0]["finish_reason"] == "length"
        chat = await client.post("/v1/chat/completions", json={
            "model": "gemma-3-270m", "messages": [{"role": "user", "content": "Count to one hundred."}],
            "max_completion_tokens": 10**12, "temperature": 0})
        assert chat.status_code == 200 and chat.json()["usage"]["completion_tokens"] <= 8


async def test_another_tenants_small_request_overtakes_a_large_batch(models_dir: Path, launch: Any) -> None:
    server = launch(models_dir, "--max-embedding-tokens", "1000000")
    big = [long_text(i, 1200) for i in range(192)]  # ~12 sub-batches of 4,096 tokens
    left_behind: dict[str, int] = {}

    async def embed(name: str, who: str, inputs: list[str]) -> None:
        r = await client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": inputs},
                              headers=tenant(who))
        assert r.status_code == 200, r.text[:300]
        # What was still waiting for the model when this answer came back (the large batch's rest).
        left_behind[name] = (await client.get("/health")).json()["queues"]["all-minilm-l6-v2"]["waiting_jobs"]

    async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as client:
        large = asyncio.create_task(embed("large", "org_a", big))
        await admitted(client, "all-minilm-l6-v2", 1, waiting_jobs=2)  # tokenised, one sub-batch running
        small = asyncio.create_task(embed("small", "org_b", ["a short question"]))
        await admitted(client, "all-minilm-l6-v2", 2)
        same = asyncio.create_task(embed("same-tenant", "org_a", ["a short question"]))
        await asyncio.gather(large, small, same)
    # org_b's request ran after the batch's current sub-batch, ahead of the rest of it (first in
    # first out, it would have waited for all of them); org_a's own small one waited behind its batch.
    assert left_behind["small"] >= 5, left_behind
    assert left_behind["same-tenant"] == 0, left_behind


async def test_a_tenant_past_its_share_gets_429_while_others_are_served(models_dir: Path, launch: Any) -> None:
    server = launch(models_dir, "--max-per-tenant", "1")
    long = {"model": "gemma-3-270m", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "temperature": 0,
            "max_tokens": 60}
    short = {**long, "max_tokens": 2}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        first = asyncio.create_task(client.post("/v1/completions", json=long, headers=tenant("org_a")))
        await admitted(client, "gemma-3-270m", 1)
        refused = await client.post("/v1/completions", json=short, headers=tenant("org_a"))
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert refused.json()["error"]["type"] == "rate_limit_error"
        assert int(refused.headers["retry-after"]) >= 1
        other = await client.post("/v1/completions", json=short, headers=tenant("org_b"))
        assert other.status_code == 200, other.text
        assert (await first).status_code == 200
        # The share is free again once the request ended.
        assert (await client.post("/v1/completions", json=short, headers=tenant("org_a"))).status_code == 200


async def test_the_adapter_names_the_organization_so_shares_are_per_organization(
        models_dir: Path, launch: Any) -> None:
    """Through the edge: the adapter tells the local server each call's organization, so one
    organization past its share gets 429 (with Retry-After, OpenAI-shaped) and another is served."""
    from tests.harness import Platform
    from tests.security.conftest import new_key, new_org

    local = launch(models_dir, "--max-per-tenant", "1")
    platform = Platform(extra_env={"NX_LOCAL_MODELS_PORT": local.base_url.rsplit(":", 1)[1]})
    try:
        await platform.start()
        org_a, org_b = await new_org(platform, "fair-a"), await new_org(platform, "fair-b")
        key_a, key_b = await new_key(platform, org_a), await new_key(platform, org_b)
        long = {"model": "local/gemma-3-270m", "temperature": 0, "max_tokens": 60,
                "messages": [{"role": "user", "content": "Count from one to one hundred."}]}
        short = {**long, "max_tokens": 2}
        async with platform.client(key_a, timeout=120) as a, platform.client(key_b, timeout=120) as b, \
                httpx.AsyncClient(base_url=local.base_url) as direct:
            first = asyncio.create_task(a.post("/v1/chat/completions", json=long))
            await admitted(direct, "gemma-3-270m", 1)
            refused = await a.post("/v1/chat/completions", json=short)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert int(refused.headers["retry-after"]) >= 1
            served = await b.post("/v1/chat/completions", json=short)
            assert served.status_code == 200, served.text
            assert (await first).status_code == 200
    finally:
        await platform.stop()
