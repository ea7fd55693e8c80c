"""Embeddings lane: texts per second with the real local model (all-MiniLM-L6-v2 int8 on
onnxruntime) in batches of 1, 32 and 256, direct to the local model server and through the edge;
then the cache hit path, when the platform has an embedding cache.

Every request carries distinct texts (the generator's `__N__` counter), so the first part measures
the model, never a cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from bench.gate import Meter, wait_quiet
from bench.stack import EMBED_MODEL, models_present, start_stack
from bench.tools import BENCH, loadgen

__all__ = ["run"]

BATCHES = (1, 32, 256)
CONCURRENCY = 2


def _body(model: str, batch: int, unique: bool, tmp: Path) -> Path:
    tag = "__N__" if unique else "fixed"
    texts = [f"Benchmark sentence {tag}-{i}: the quick brown fox jumps over the lazy dog." for i in range(batch)]
    path = tmp / f"embed-{model.replace('/', '_')}-{batch}-{tag}.json"
    path.write_text(json.dumps({"model": model, "input": texts}))
    return path


def _cache_probe(url: str, headers: dict[str, str], body: Path) -> dict[str, Any]:
    with httpx.Client(timeout=60) as client:
        first = client.post(url, content=body.read_bytes(), headers={**headers, "content-type": "application/json"})
        second = client.post(url, content=body.read_bytes(), headers={**headers, "content-type": "application/json"})
    return {"first": first.headers.get("x-cache-status"), "second": second.headers.get("x-cache-status"),
            "status": [first.status_code, second.status_code]}


def _external_cache_bench() -> dict[str, Any] | None:
    """bench/embedding_cache.py (owned by the cache's engineer): hit vs miss vs bypass, if present."""
    script = BENCH / "embedding_cache.py"
    if not script.exists():
        return None
    out = subprocess.run([sys.executable, str(script), "--requests", "100"], capture_output=True, text=True,
                         timeout=600, check=False, cwd=BENCH.parent)
    return {"returncode": out.returncode, "stdout": out.stdout[-4000:], "stderr": out.stderr[-1500:]}


async def run(quick: bool) -> dict[str, Any]:
    if not models_present():
        return {"skipped": "local embedding weights are not in data/models "
                           "(python -m local_models.fetch --dest data/models)"}
    duration = 4.0 if quick else 10.0
    stack = await start_stack(platform=True, local_models=True)
    try:
        assert stack.platform is not None
        tmp = Path(stack.tmp.name)
        pids = stack.pids()
        local_url = f"http://127.0.0.1:{stack.platform.s.local_models_port}/v1/embeddings"
        edge_url = f"{stack.platform.edge}/v1/embeddings"
        targets = {"direct": (local_url, {}, "all-minilm-l6-v2"),
                   "pipeline": (edge_url, {"authorization": f"Bearer {stack.key}"}, EMBED_MODEL)}
        results: dict[str, Any] = {}
        for name, (url, headers, model) in targets.items():
            results[name] = {}
            for batch in BATCHES:
                body = _body(model, batch, True, tmp)
                loadgen(url, body, headers, duration=1, concurrency=1)  # warm up
                gate = wait_quiet()
                with Meter(pids) as meter:
                    r = loadgen(url, body, headers, duration=duration, concurrency=CONCURRENCY)
                r["texts_per_s"] = round(r["ok"] * batch / r["elapsed_s"], 1)
                r["cpu"], r["gate"] = meter.result, gate
                results[name][str(batch)] = r
                print(f"  {name:9s} batch {batch:3d}: {r['texts_per_s']:.0f} texts/s, p50 "
                      f"{r['latency_ms']['p50']} ms, statuses {r['statuses']}", flush=True)
        url, headers, model = targets["pipeline"]
        probe = _cache_probe(url, headers, _body(model, 32, False, tmp))
        cache: dict[str, Any] = {"probe": probe}
        if probe["second"] == "hit":
            body = _body(model, 32, False, tmp)
            hit = loadgen(url, body, headers, duration=duration, concurrency=CONCURRENCY)
            hit["texts_per_s"] = round(hit["ok"] * 32 / hit["elapsed_s"], 1)
            cache["hit_batch_32"] = hit
            print(f"  cache hit batch 32: {hit['texts_per_s']:.0f} texts/s p50 {hit['latency_ms']['p50']} ms")
        else:
            cache["note"] = f"no cache hit on a repeated request (x-cache-status {probe})"
            print(f"  cache: {cache['note']}", flush=True)
    finally:
        await stack.stop()
    cache["embedding_cache_py"] = _external_cache_bench()
    return {"duration_s": duration, "concurrency": CONCURRENCY, "targets": results, "cache": cache,
            "pids": pids}
