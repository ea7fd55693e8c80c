"""CPU per request of the hot path's observability hooks, in process: the sidecar's `begin` and
`observe`, the adapter's settlement wrapper (`observed`, its commit replaced by a no-op) and the
group commit's per-item timing, with metrics off, on, and with tracing sampled and not sampled.

Why beside the end-to-end lane: on a machine shared with other work, end-to-end throughput moves
by more than the few microseconds these hooks cost; `time.process_time` over many calls of the
real functions measures them directly (the spans' export, in the SDK's thread, is included).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace
from typing import Any

from core.settings import load_settings
from core.telemetry import metrics as m
from core.telemetry import tracing
from proxy_plugins.adapter import telemetry as adapter
from proxy_plugins.sidecar import telemetry as sidecar
from proxy_plugins.sidecar.authz import Decision

__all__ = ["measure"]

N = 20_000
_OK = Decision(status=200, headers=[("x-nx-org", "org_1"), ("x-nx-project", "proj_1"), ("x-nx-model", "m/1")])
_HEADERS = [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), (b"x-request-id", b"req_1")]


async def _commit(*_: Any) -> list[tuple[bytes, bytes]]:
    return []


async def chat(*_: Any) -> None:
    """Stands for chat.handle: `observed` names the endpoint after the handler's module."""


def _ctx() -> Any:
    now = time.monotonic_ns()
    return SimpleNamespace(
        request_id="req_1", org_id="org_1", project_id="proj_1", requested_model="m-1", hold_price=None,
        model=SimpleNamespace(id="m/1"), backend=SimpleNamespace(id="b1", protocol="openai"), received_ns=now,
        first_byte_ns=now, charged=1234, attempts=[],
        usage=SimpleNamespace(input_tokens=10, cached_tokens=0, output_tokens=20))


def _per_call_us(fn: Any, n: int = N) -> float:
    started = time.process_time()
    for _ in range(0, n, 500):
        fn(500)
        if tracing._provider is not None:
            tracing._provider.force_flush()  # the export's CPU counts, in its thread
    return (time.process_time() - started) / n * 1e6


def _sidecar(n: int) -> None:
    for _ in range(n):
        sidecar.observe("/v1/chat/completions", _OK, sidecar.begin("req_1", _HEADERS, "/v1/chat/completions"))


def _adapter(n: int) -> None:
    settle = adapter.observed(_commit, chat)
    ctx = _ctx()

    async def loop() -> None:
        for _ in range(n):
            with adapter.request(ctx, chat, dict(_HEADERS)):
                await settle(ctx, 200, b"", list)

    asyncio.run(loop())


def _groupcommit(n: int) -> None:
    latency = m.group_latency("bench")
    for _ in range(n):
        with latency():
            pass
        m.observe_batch("bench", 1, 0.001)


_RECEIVER = ("from tests.observability.otlp import Receiver; import time; r = Receiver().start(); "
             "print(r.url, flush=True); time.sleep(3600)")


def measure() -> dict[str, dict[str, float]]:
    """Microseconds of CPU per request for each part, in each configuration (this process's
    threads: the spans' batching and export included; the receiver runs in its own process)."""
    receiver = subprocess.Popen([sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE)
    try:
        assert receiver.stdout is not None
        url = receiver.stdout.readline().decode().strip()
        return _measure(url)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


def _measure(url: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for config, env in (("off", {"NX_METRICS_ENABLED": "false"}), ("metrics", {}),
                        ("traces_not_sampled", {"NX_OTEL_ENDPOINT": url, "NX_TRACE_SAMPLE_RATIO": "0"}),
                        ("traces_sampled", {"NX_OTEL_ENDPOINT": url, "NX_TRACE_SAMPLE_RATIO": "1"})):
        settings = load_settings({"NX_DATA_DIR": tempfile.gettempdir(), **env})
        m.Switch.on = settings.metrics_enabled
        tracing.shutdown()
        tracing._tracer = tracing._provider = None
        tracing.setup("bench", settings)
        if config == "traces_not_sampled":  # the caller's traceparent says: not sampled
            global _HEADERS
            _HEADERS = [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00")]
        n = N if config != "traces_sampled" else N // 10  # within the span queue (2,048) per flush
        parts = {"sidecar": _per_call_us(_sidecar, n), "adapter": _per_call_us(_adapter, n),
                 "groupcommit": _per_call_us(_groupcommit, n)}
        parts["total"] = sum(parts.values())
        out[config] = {k: round(v, 2) for k, v in parts.items()}
        if config == "traces_not_sampled":
            _HEADERS = [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]
    tracing.shutdown()
    tracing._tracer = tracing._provider = None
    m.Switch.on = True
    return out


if __name__ == "__main__":
    for name, parts in measure().items():
        print(f"{name:20s} {parts}")
