"""One platform wired to the simulator with every observability output on: debug JSON logs kept
per process, traces sampled at 100 % to a local OTLP receiver (Envoy's tracer included)."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.inference.support import SimPlatform, start_sim_platform
from tests.observability.otlp import Receiver


@dataclass
class Observed:
    sp: SimPlatform
    receiver: Receiver
    logs: Path


@pytest.fixture(scope="package")
async def observed() -> AsyncIterator[Observed]:
    receiver = Receiver().start()
    logs = tempfile.TemporaryDirectory(prefix="nx-logs-")
    try:
        sp = await start_sim_platform(log_dir=Path(logs.name), env={
            "NX_LOG_LEVEL": "debug", "NX_OTEL_ENDPOINT": receiver.url, "NX_TRACE_SAMPLE_RATIO": "1.0"})
        try:
            yield Observed(sp, receiver, Path(logs.name))
        finally:
            await sp.stop()
    finally:
        receiver.stop()
        logs.cleanup()
