"""The official `openai` npm SDK (pinned in tests/compat/node, shared with tests/compat) on
/v1/responses: create and stream on every protocol, a tool round trip, background polling and a
refused capability."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Platform

NODE_DIR = Path(__file__).resolve().parents[1] / "compat" / "node"


@pytest.fixture(scope="module")
async def node_out(sim_platform: Platform) -> dict[str, Any]:
    npm, node = shutil.which("npm"), shutil.which("node")
    assert npm and node, "node and npm are required for the Node SDK compatibility suite"
    if not (NODE_DIR / "node_modules" / "openai" / "package.json").is_file():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=600)
    env = {**os.environ, "OPENAI_BASE_URL": f"{sim_platform.edge}/v1", "OPENAI_API_KEY": sim_platform.key}
    proc = await asyncio.create_subprocess_exec(
        node,
        "responses.mjs",
        cwd=NODE_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    result: dict[str, Any] = json.loads(stdout)
    return result


@pytest.mark.parametrize("model", ["sim/chat", "sim/openai", "sim/claude"])
async def test_create_and_stream(node_out: dict[str, Any], model: str) -> None:
    seen = node_out["models"][model]
    assert seen["create"]["status"] == "completed" and seen["create"]["text"] == "Hello from the"
    assert seen["create"]["id"].startswith("resp_")
    assert seen["stream"] == {
        "status": "completed",
        "text": "Hello from the simulator.",
        "deltas": "Hello from the simulator.",
    }


async def test_tool_round_trip_background_and_errors(node_out: dict[str, Any]) -> None:
    assert node_out["tools"] == {
        "name": "get_weather",
        "arguments": {"city": "simulated"},
        "second": "completed",
        "previous": True,
    }
    assert node_out["background"] == {
        "first": "queued",
        "last": "completed",
        "text": "Hello from the simulator",
    }
    capability = node_out["capability"]
    assert capability["status"] == 400 and capability["code"] == "unsupported_capability"
    assert capability["param"] == "tools" and capability["request_id"].startswith("req_")
