"""The chat stream fast path (proxy_plugins/adapter/chat_chunk.py) against the full path it stands
in for: whenever it accepts a chunk, its event means exactly what `_tidy` + encode would send."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from proxy_plugins.adapter import chat_chunk
from proxy_plugins.adapter.chat import _tidy

MODEL = "sim/chat"
MODEL_JSON = msgspec.json.encode(MODEL)


def _chunk(delta: Any, **top: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}], **top}


def _full(data: bytes) -> Any:
    obj = msgspec.json.decode(data)
    _tidy(obj, MODEL)
    return obj


def _fast(data: bytes) -> tuple[Any, bool] | None:
    out = chat_chunk.relay(data, MODEL_JSON)
    if out is None:
        return None
    event, produced = out
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    return msgspec.json.decode(event[6:-2]), produced


def test_content_chunk_keeps_its_bytes_apart_from_the_model() -> None:
    data = msgspec.json.encode(_chunk({"content": "hi"}, system_fingerprint="fp_1", obfuscation="x"))
    out = chat_chunk.relay(data, MODEL_JSON)
    assert out is not None
    assert out[0] == b"data: " + data.replace(b'"up-model"', MODEL_JSON) + b"\n\n"
    assert out[1] is True


def test_accepted_chunks_match_the_full_path() -> None:
    cases = [
        _chunk({"role": "assistant", "content": "", "refusal": None}),
        _chunk({"content": 'say "model" \\ \n é'}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\": 1}"}}]}),
        _chunk({}, usage=None, service_tier="default"),
        {**_chunk({}), "choices": []},
    ]
    for case in cases:
        data = msgspec.json.encode(case)
        fast = _fast(data)
        assert fast is not None, case
        assert fast[0] == _full(data)
    assert _fast(msgspec.json.encode(cases[0])) == (_full(msgspec.json.encode(cases[0])), False)
    assert _fast(msgspec.json.encode(cases[2]))[1] is True  # type: ignore[index]


def test_everything_else_takes_the_full_path() -> None:
    refused = [
        _chunk({"content": "x", "tool_calls": None}),  # a null the schema forbids
        _chunk({"role": None, "content": "x"}),
        _chunk({"content": "x", "reasoning_content": "y"}),  # a delta key not known here
        _chunk({"content": "x"}, system_fingerprint=None),
        _chunk({"content": "x"}, usage={"prompt_tokens": 1, "completion_tokens": 1}),
        _chunk({"content": "x"}, error={"message": "boom"}),
        _chunk({"content": "model"}, x={"model": "up-model"}),  # a second "model"
        _chunk({"content": "\u00e9"}) | {"id": "a\\u00e9"},
        {"id": "c", "choices": [{"index": 0, "message": {"content": "x"}}], "model": "up-model"},
        {"id": "c", "choices": [{"delta": {"content": "x"}}]},  # no model to rewrite
        {"id": "c", "choices": None, "model": "up-model"},
        [1, 2],
    ]
    for case in refused:
        assert _fast(msgspec.json.encode(case)) is None, case
    for raw in (b'{"model" : "up-model", "choices": []}', b"not json", b'{"model":"up\\u002dmodel"}'):
        assert chat_chunk.relay(raw, MODEL_JSON) is None


@given(st.text(), st.sampled_from(["up-model", 'm"odel', "model", "x\\y", "\u00e9"]), st.booleans())
def test_any_text_and_model_name(text: str, upstream: str, python_json: bool) -> None:
    obj = _chunk({"content": text}) | {"model": upstream}
    import json

    # Python's json module writes ", " and \u escapes: a spelling the fast path must not misread.
    data = json.dumps(obj).encode() if python_json else msgspec.json.encode(obj)
    fast = _fast(data)
    if fast is not None:
        assert fast == (_full(data), bool(text))
