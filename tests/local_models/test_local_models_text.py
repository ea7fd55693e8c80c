"""Real inference with Gemma 3 270M through the server: chat, completions, streaming, usage, grammars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from local_models import TEXT_MODEL_FILE

pytestmark = pytest.mark.slow

MODEL = "gemma-3-270m"


def _sse(body: str) -> list[Any]:
    events = [line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events[-3:]
    return [json.loads(e) for e in events[:-1]]


@pytest.fixture(scope="module")
def count_tokens(models_dir: Path) -> Any:
    """The model's own tokenizer, loaded independently of the server, to check reported usage."""
    import llama_cpp

    vocab = llama_cpp.Llama(str(models_dir / TEXT_MODEL_FILE), vocab_only=True, verbose=False)
    return lambda text: len(vocab.tokenize(text.encode(), add_bos=True, special=False))


async def test_health_and_models(server: Any) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        health = (await client.get("/health")).json()
        assert health["status"] == "ok" and health["admitted"] == {"gemma-3-270m": 0, "all-minilm-l6-v2": 0}
        assert health["models"] == {"gemma-3-270m": "ready", "all-minilm-l6-v2": "ready"}
        assert health["queues"]["gemma-3-270m"] == {"admitted": 0, "tenants": 0, "waiting_jobs": 0}
        models = (await client.get("/v1/models")).json()
        assert models["object"] == "list"
        assert {m["id"] for m in models["data"]} == {"gemma-3-270m", "all-minilm-l6-v2"}
        assert all(m["object"] == "model" for m in models["data"])
        assert (await client.get("/v1/models/gemma-3-270m")).json()["id"] == MODEL


async def test_chat_non_stream_reports_exact_usage(server: Any, count_tokens: Any) -> None:
    messages = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Name a colour."},
    ]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": messages, "max_tokens": 24, "temperature": 0},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert "\nUser:" not in choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] == count_tokens(
        "System: You answer briefly.\nUser: Name a colour.\nAssistant:"
    )
    assert 1 <= usage["completion_tokens"] <= 24
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_chat_stream_matches_non_stream_and_ends_with_usage(server: Any) -> None:
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a short sentence about rain."}],
        "max_completion_tokens": 30,
        "temperature": 0,
        "seed": 7,
    }
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        whole = (await client.post("/v1/chat/completions", json=request)).json()
        streamed = await client.post(
            "/v1/chat/completions",
            json={**request, "stream": True, "stream_options": {"include_usage": True}},
        )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = _sse(streamed.text)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    assert text == whole["choices"][0]["message"]["content"]


async def test_completions_length_stop_and_stream(server: Any, count_tokens: Any) -> None:
    prompt = "Once upon a time, in a small village,"
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        long = (
            await client.post(
                "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 12, "temperature": 0}
            )
        ).json()
        assert long["object"] == "text_completion"
        assert long["usage"]["prompt_tokens"] == count_tokens(prompt)
        if long["choices"][0]["finish_reason"] == "length":
            assert long["usage"]["completion_tokens"] == 12
        text = long["choices"][0]["text"]
        stop = text.strip().split()[1]  # a word the model is about to produce, deterministically
        stopped = (
            await client.post(
                "/v1/completions",
                json={"model": MODEL, "prompt": prompt, "max_tokens": 12, "temperature": 0, "stop": [stop]},
            )
        ).json()
        assert stopped["choices"][0]["finish_reason"] == "stop"
        assert stop not in stopped["choices"][0]["text"]
        assert text.startswith(stopped["choices"][0]["text"])
        streamed = await client.post(
            "/v1/completions",
            json={
                "model": MODEL,
                "prompt": prompt,
                "max_tokens": 12,
                "temperature": 0,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        )
    chunks = _sse(streamed.text)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == text
    assert chunks[-1]["usage"] == long["usage"]


async def test_json_schema_response_format_is_enforced(server: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Give the largest city of Japan as JSON."}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
                "max_tokens": 60,
                "temperature": 0,
            },
        )
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        if choice["finish_reason"] == "stop":
            parsed = json.loads(choice["message"]["content"])
            assert set(parsed) == {"city", "population"} and isinstance(parsed["population"], int)
        obj = (
            await client.post(
                "/v1/chat/completions",
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "A JSON object please."}],
                    "response_format": {"type": "json_object"},
                    "max_tokens": 60,
                    "temperature": 0,
                },
            )
        ).json()
        if obj["choices"][0]["finish_reason"] == "stop":
            assert isinstance(json.loads(obj["choices"][0]["message"]["content"]), dict)


async def test_forced_tool_call_is_grammar_constrained(server: Any) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        body = (
            await client.post(
                "/v1/chat/completions",
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                    "tools": [tool],
                    "tool_choice": "required",
                    "max_tokens": 40,
                    "temperature": 0,
                },
            )
        ).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls", body
    call = choice["message"]["tool_calls"][0]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)
    assert choice["message"]["content"] is None


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({"model": "nope", "messages": [{"role": "user", "content": "x"}]}, 404, "model"),
        ({"model": "all-minilm-l6-v2", "messages": [{"role": "user", "content": "x"}]}, 400, "model"),
        ({"model": MODEL}, 400, None),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "temperature": 3},
            400,
            "temperature",
        ),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "logprobs": True}, 400, "logprobs"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role"),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "xml"},
            },
            400,
            "response_format.type",
        ),
    ],
)
async def test_chat_errors_are_openai_shaped(
    server: Any, payload: Any, status: int, param: str | None
) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        response = await client.post("/v1/chat/completions", json=payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param


async def test_invalid_json_and_unknown_route(server: Any) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        bad = await client.post("/v1/chat/completions", content=b"{not json")
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        missing = await client.get("/v2/nothing")
        assert missing.status_code == 404 and "error" in missing.json()
