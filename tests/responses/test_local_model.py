"""The seed example against the real local text model (Gemma 3 270M, Chat Completions only, so
/v1/responses is translated), through the real edge with the bootstrap key."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from local_models import EMBEDDING_MODEL_FILE, EMBEDDING_TOKENIZER_FILE, TEXT_MODEL_FILE
from tests.harness import ROOT, Platform
from tests.responses.oas import validate, validate_events
from tests.responses.sse import read_stream

SEED = {"model": "orion-reason", "input": "Draft a migration checklist for a fintech API."}


def _weights() -> Path:
    path = ROOT / "data" / "models"
    if all((path / f).is_file() for f in (TEXT_MODEL_FILE, EMBEDDING_MODEL_FILE, EMBEDDING_TOKENIZER_FILE)):
        return path
    result = subprocess.run(
        [sys.executable, "-m", "local_models.fetch", "--dest", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"local model weights absent and could not be fetched: {result.stderr.strip()[-300:]}")
    return path


@pytest.fixture(scope="module")
async def local_platform() -> AsyncIterator[Platform]:
    weights = _weights()
    with tempfile.TemporaryDirectory(prefix="nx-resp-local-") as data:
        (Path(data) / "models").symlink_to(weights, target_is_directory=True)
        p = Platform(
            extra_env={"NX_DATA_DIR": data, "NX_LOCAL_MODELS_ENABLED": "true"},
            names=(*Platform().names, "local-models"),
        )
        await p.start()
        try:
            yield p
        finally:
            await p.stop()


async def test_seed_example_plain_post(local_platform: Platform) -> None:
    async with local_platform.client() as http:
        http.timeout = httpx.Timeout(120)
        reply = await http.post("/v1/responses", json={**SEED, "max_output_tokens": 48})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        validate(body, "Response")
        assert body["status"] in ("completed", "incomplete") and body["model"] == "orion-reason"
        text = "".join(p["text"] for item in body["output"] for p in item["content"])
        assert text.strip() and body["usage"]["output_tokens"] > 0
        assert reply.headers["x-model"] == "local/gemma-3-270m"
        assert int(reply.headers["x-output-tokens"]) == body["usage"]["output_tokens"]
        # The same seed, streamed and continued with previous_response_id.
        _, events, meta = await read_stream(
            http, "POST", "/v1/responses", json={**SEED, "max_output_tokens": 24, "stream": True}
        )
        validate_events(events)
        assert events[-1]["type"] in ("response.completed", "response.incomplete") and meta is not None
    sdk = openai.AsyncOpenAI(
        base_url=f"{local_platform.edge}/v1", api_key=local_platform.key, max_retries=0, timeout=120
    )
    follow = await sdk.responses.create(
        model="orion-reason", input="Step two:", previous_response_id=body["id"], max_output_tokens=16
    )
    assert follow.previous_response_id == body["id"] and follow.usage is not None
    assert follow.usage.input_tokens > body["usage"]["input_tokens"]  # the first turn was replayed
    with pytest.raises(openai.BadRequestError) as err:  # the catalog grants this model no vision
        await sdk.responses.create(
            model="orion-reason",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"},
                    ],
                }
            ],
        )
    assert err.value.code == "unsupported_capability" and err.value.param == "input[0].content[1]"
