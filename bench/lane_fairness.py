"""Fairness lane: how long a small request waits on the local models while another organization's
large request is queued or running, against the first-come-first-served order the server had
before (reproduced by sending the small request as the same organization, which the fair queue
orders behind its own work); and how fast an over-budget request is refused.

Talks to the local model server directly (`x-nx-tenant` is what the adapter sets for the
organization), started here with a token budget large enough for the batch; the real model does
the work. Each figure is the median (and the worst) of a few repetitions.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.gate import busy_cores, wait_quiet
from bench.stack import models_present
from tests.harness import ROOT, free_port
from tests.inference.support import models_dir

__all__ = ["run"]

EMBED, TEXT = "all-minilm-l6-v2", "gemma-3-270m"
WORDS = ("river", "stone", "cloud", "light", "night", "maple", "ocean", "ember", "quartz", "meadow")


def _text(seed: int, chars: int = 1000) -> str:
    rng = random.Random(seed)
    out = ""
    while len(out) < chars:
        out += rng.choice(WORDS) + " "
    return out[:chars]


def _start(log: Path, *flags: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "local_models.server", "--host", "127.0.0.1", "--port",
                                 str(port), "--models-dir", str(models_dir()), *flags],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"local model server did not start: {log.read_text()[-2000:]}")


async def _queued(client: httpx.AsyncClient, model: str, admitted: int, waiting: int = 0) -> None:
    async with asyncio.timeout(120):
        while True:
            q = (await client.get("/health")).json()["queues"][model]
            if q["admitted"] >= admitted and q["waiting_jobs"] >= waiting:
                return
            await asyncio.sleep(0.01)


async def _timed(client: httpx.AsyncClient, path: str, body: dict[str, Any], tenant: str) -> float:
    t0 = time.perf_counter()
    r = await client.post(path, json=body, headers={"x-nx-tenant": tenant})
    assert r.status_code == 200, r.text[:300]
    return (time.perf_counter() - t0) * 1000


def _summary(samples: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(samples), 1), "max_ms": round(max(samples), 1),
            "n": len(samples)}


async def _embeddings(client: httpx.AsyncClient, reps: int, batch: int) -> dict[str, Any]:
    small = {"model": EMBED, "input": ["how do I reset my password?"]}
    large = {"model": EMBED, "input": [_text(i) for i in range(batch)]}
    alone = [await _timed(client, "/v1/embeddings", small, "org_b") for _ in range(reps)]
    out: dict[str, Any] = {"batch_inputs": batch, "alone": _summary(alone)}
    for label, who in (("other_org_fair", "org_b"), ("same_org_fifo", "org_a")):
        waits, batches = [], []
        for _ in range(reps):
            big = asyncio.create_task(_timed(client, "/v1/embeddings", large, "org_a"))
            await _queued(client, EMBED, 1, waiting=2)  # tokenised; its first sub-batch running
            waits.append(await _timed(client, "/v1/embeddings", small, who))
            batches.append(await big)
        out[label] = {"small": _summary(waits), "batch": _summary(batches)}
    return out


async def _text_model(client: httpx.AsyncClient, reps: int, long_tokens: int) -> dict[str, Any]:
    prompt = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"
    small = {"model": TEXT, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    long = {"model": TEXT, "prompt": prompt, "max_tokens": long_tokens, "temperature": 0}
    alone = [await _timed(client, "/v1/completions", small, "org_b") for _ in range(reps)]
    out: dict[str, Any] = {"long_max_tokens": long_tokens, "alone": _summary(alone)}
    for label, who in (("other_org_fair", "org_b"), ("same_org_fifo", "org_a")):
        waits = []
        for _ in range(reps):
            # org_a: one long generation running and one queued behind it.
            longs = [asyncio.create_task(_timed(client, "/v1/completions", long, "org_a")) for _ in range(2)]
            await _queued(client, TEXT, 2)
            waits.append(await _timed(client, "/v1/completions", small, who))
            await asyncio.gather(*longs)
        out[label] = {"small": _summary(waits)}
    return out


async def _refusal(client: httpx.AsyncClient) -> dict[str, Any]:
    """The issue's request (2,048 inputs of 1,000 characters) against the default budget."""
    body = {"model": EMBED, "input": [_text(i) for i in range(2048)]}
    t0 = time.perf_counter()
    r = await client.post("/v1/embeddings", json=body, headers={"x-nx-tenant": "org_a"})
    return {"status": r.status_code, "ms": round((time.perf_counter() - t0) * 1000, 1),
            "message": r.json()["error"]["message"] if r.status_code != 200 else None}


async def run(quick: bool) -> dict[str, Any]:
    if not models_present():
        return {"skipped": "local weights are not in data/models (python -m local_models.fetch --dest data/models)"}
    reps = 2 if quick else 5
    with tempfile.TemporaryDirectory(prefix="nx-bench-fair-") as tmp:
        # A budget large enough for the batch; the refusal below runs against the default one.
        proc, port = _start(Path(tmp) / "local.log", "--max-embedding-tokens", "1000000")
        try:
            quiet = wait_quiet()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                await _timed(client, "/v1/embeddings", {"model": EMBED, "input": ["warm up"]}, "warm")
                await _timed(client, "/v1/completions", {"model": TEXT, "prompt": "Hi", "max_tokens": 2}, "warm")
                result: dict[str, Any] = {
                    "gate": quiet, "other_cores_before": round(busy_cores(0.5), 2),
                    "embeddings": await _embeddings(client, reps, 64 if quick else 256),
                    "text": await _text_model(client, reps, 32 if quick else 128)}
        finally:
            proc.terminate()
            proc.wait(timeout=15)
        proc, port = _start(Path(tmp) / "default.log")
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                result["oversized_refusal"] = await _refusal(client)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    return result
