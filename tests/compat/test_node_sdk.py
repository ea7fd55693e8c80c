"""The official `openai` npm SDK (pinned in tests/compat/node) as a real client against the edge."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.compat.openapi_schema import validate
from tests.inference.support import SimPlatform

pytestmark = pytest.mark.asyncio(loop_scope="session")

NODE_DIR = Path(__file__).resolve().parent / "node"


def _install() -> None:
    if (NODE_DIR / "node_modules" / "openai" / "package.json").is_file():
        return
    npm = shutil.which("npm")
    assert npm, "npm is required for the Node SDK compatibility suite"
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=600)


@pytest.fixture(scope="module")
async def node_run(sp: SimPlatform) -> dict[str, Any]:
    _install()
    node = shutil.which("node")
    assert node, "node is required for the Node SDK compatibility suite"
    env = {**os.environ, "OPENAI_BASE_URL": f"{sp.platform.edge}/v1", "OPENAI_API_KEY": sp.platform.key}
    proc = await asyncio.create_subprocess_exec(node, "compat.mjs", cwd=NODE_DIR, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    result: dict[str, Any] = json.loads(stdout)
    return result


async def test_chat_and_metadata_headers(node_run: dict[str, Any]) -> None:
    assert node_run["chat"] == "Hello from the"
    headers = node_run["headers"]
    assert headers["x-request-id"].startswith("req_") and headers["x-model"] == "sim/chat"
    assert headers["x-output-tokens"] == "3" and headers["x-cache-status"] == "bypass"
    assert headers["x-wallet-debit"] == "0.000007"  # 1 input x $1/Mtok + 3 output x $2/Mtok


async def test_stream_assembles_text_and_usage(node_run: dict[str, Any]) -> None:
    stream = node_run["stream"]
    assert stream["text"] == "Hello from the simulator"
    assert stream["usage"]["completion_tokens"] == 4
    assert stream["xnx"]["x-output-tokens"] == "4"


async def test_embeddings_default_base64_decodes_to_the_float_vectors(node_run: dict[str, Any]) -> None:
    emb = node_run["embeddings"]
    assert emb["indexes"] == [0, 1]
    for decoded, floats in zip(emb["default"], emb["float"], strict=True):
        assert len(decoded) == 8
        assert decoded == pytest.approx(floats, abs=1e-6)


async def test_models_list(node_run: dict[str, Any]) -> None:
    assert {"sim/chat", "sim/embed"} <= set(node_run["models"])
    validate({"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "x"}
                                         for m in node_run["models"]]}, "ListModelsResponse")


@pytest.mark.parametrize(("case", "name", "status", "code"), [
    ("rate_limited", "RateLimitError", 429, "rate_limit_exceeded"),
    ("upstream_5xx", "InternalServerError", 502, "upstream_error"),
    ("capability", "BadRequestError", 400, "unsupported_capability"),
    ("unknown_model", "NotFoundError", 404, "model_not_found"),
    ("bad_key", "AuthenticationError", 401, "invalid_api_key"),
])
async def test_errors_raise_the_matching_exception_with_request_id(node_run: dict[str, Any], case: str, name: str,
                                                                   status: int, code: str) -> None:
    error = node_run["errors"][case]
    assert error is not None, f"{case} did not raise"
    assert (error["name"], error["status"], error["code"]) == (name, status, code)
    assert error["request_id"] and error["request_id"].startswith("req_")


async def test_cut_stream_raises(node_run: dict[str, Any]) -> None:
    error = node_run["errors"]["cut"]
    assert error is not None and error["name"] == "APIError"
    assert "cut off" in error["message"] or "ended before" in error["message"]
