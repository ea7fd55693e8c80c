"""Embedding cache: latency of a hit vs a miss vs a bypass, through the real edge on 127.0.0.1.

    .venv/bin/python bench/embedding_cache.py [--requests 300] [--batch 32]
    NX_TEST_DATABASE=postgresql .venv/bin/python bench/embedding_cache.py

Starts the platform wired to the provider simulator (tests/inference/support.py), one tenant, and
sends requests one at a time (bounded: no load, this measures the path, not throughput):
- miss: inputs never seen (the adapter looks up, calls the simulator, stores, settles);
- hit: the same inputs again (the adapter looks up and settles; no backend call);
- bypass: `Cache-Control: no-store` (no lookup, no store: the pre-cache path).
The simulator answers in well under a millisecond, so a miss here is the platform's own cost; a
real provider adds its own latency (typically tens to hundreds of ms) to every miss and bypass.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.embeddings_cache.helpers import tenant
from tests.inference.support import start_sim_platform


def _summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)

    def p(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return (f"{name:<22} n={len(samples):<5} mean={statistics.fmean(samples):6.2f} ms  p50={p(0.5):6.2f}"
            f"  p95={p(0.95):6.2f}  p99={p(0.99):6.2f}")


async def main(requests: int, batch: int) -> None:
    sp = await start_sim_platform()
    try:
        _, key = await tenant(sp, 10**12)
        run = uuid.uuid4().hex[:8]
        async with sp.platform.client(key) as c:
            async def timed(inputs: list[str], headers: dict[str, str] | None = None) -> tuple[float, str]:
                start = time.perf_counter()
                r = await c.post("/v1/embeddings", json={"model": "sim/embed", "input": inputs},
                                 headers=headers)
                elapsed = (time.perf_counter() - start) * 1000
                assert r.status_code == 200, r.text
                return elapsed, r.headers["x-cache-status"]

            for _ in range(20):  # warm connections and pools
                await timed([f"warm {uuid.uuid4().hex}"])
            for size in (1, batch):
                texts = [[f"bench {run} {size} {i} {j} some words of text" for j in range(size)]
                         for i in range(requests)]
                results: dict[str, list[float]] = {"miss": [], "hit": [], "bypass": []}
                # Interleaved (miss, hit, bypass of the same inputs): a busy machine weighs on all alike.
                plan = (("miss", None), ("hit", None), ("bypass", {"cache-control": "no-store"}))
                for inputs in texts:
                    for name, headers in plan:
                        ms, status = await timed(inputs, headers)
                        assert status == name, (status, name)
                        results[name].append(ms)
                for name, samples in results.items():
                    print(_summary(f"{name} ({size} input{'s' if size > 1 else ''})", samples))
    finally:
        await sp.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(min(args.requests, 2000), min(args.batch, 2048)))
