"""POST /v1/chat/completions through the real edge against the provider simulator."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from tests.inference.support import SimPlatform

pytestmark = pytest.mark.asyncio(loop_scope="session")

META = ("x-request-id", "x-model", "x-input-tokens", "x-output-tokens", "x-cache-status", "x-wallet-debit")


def marker() -> str:
    return f"m-{uuid.uuid4().hex[:12]}"


def chat_body(text: str, model: str = "sim-chat", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


async def read_sse(resp: httpx.Response) -> tuple[list[Any], list[str], bool]:
    """(decoded data events, comment lines, saw [DONE])."""
    events: list[Any] = []
    comments: list[str] = []
    done = False
    async for line in resp.aiter_lines():
        if line.startswith(":"):
            comments.append(line)
        elif line.startswith("data: "):
            if line == "data: [DONE]":
                done = True
            else:
                events.append(json.loads(line[6:]))
    return events, comments, done


async def test_non_stream_rewrites_model_both_ways_and_keeps_keys_apart(sp: SimPlatform) -> None:
    m = marker()
    async with sp.platform.client() as c:
        r = await c.post("/v1/chat/completions", json=chat_body(f"hello {m}"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "sim-chat"
    assert body["choices"][0]["message"]["content"] == "Hello from the"
    assert body["usage"]["prompt_tokens"] == 2 and body["usage"]["completion_tokens"] == 3
    for name in META:
        assert r.headers.get(name), name
    assert r.headers["x-model"] == "sim/chat"
    assert r.headers["x-request-id"].startswith("req_")
    assert (r.headers["x-input-tokens"], r.headers["x-output-tokens"]) == ("2", "3")
    # 2 input x $1/Mtok + 3 output x $2/Mtok = 8e-6 USD = 8000 nano-dollars
    assert r.headers["x-wallet-debit"] == "0.000008"
    [seen] = sp.sim.requests(m)
    assert seen["body"]["model"] == "sim-chat-upstream"
    assert seen["headers"]["authorization"] == f"Bearer {sp.sim.api_key}"
    assert sp.platform.key not in json.dumps(seen)
    assert not any(k.startswith("x-nx") for k in seen["headers"])
