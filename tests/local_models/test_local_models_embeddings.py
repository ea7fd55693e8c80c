"""Real all-MiniLM-L6-v2 embeddings through the server: shapes, encodings, usage, similarity, limits."""

from __future__ import annotations

import base64
import math
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest

from local_models import EMBEDDING_TOKENIZER_FILE

pytestmark = pytest.mark.slow

MODEL = "all-minilm-l6-v2"


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


async def _embed(server: Any, **payload: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        return await client.post("/v1/embeddings", json={"model": MODEL, **payload})


async def test_float_embeddings_are_normalised_ordered_and_counted(server: Any, models_dir: Path) -> None:
    from tokenizers import Tokenizer

    texts = ["The cat sits on the mat.", "Stock markets fell sharply today.", "Bonjour"]
    response = await _embed(server, input=texts)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list" and body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    for item in body["data"]:
        assert item["object"] == "embedding" and len(item["embedding"]) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in item["embedding"])), 1.0, abs_tol=1e-4)
    tokenizer = Tokenizer.from_file(str(models_dir / EMBEDDING_TOKENIZER_FILE))
    tokenizer.no_padding()  # the shipped file pads to 128; padding is not input
    expected = sum(len(tokenizer.encode(t).ids) for t in texts)  # [CLS] and [SEP] included
    assert body["usage"] == {"prompt_tokens": expected, "total_tokens": expected}
    single = (await _embed(server, input=texts[1])).json()
    assert _cosine(single["data"][0]["embedding"], body["data"][1]["embedding"]) > 0.9999


async def test_base64_decodes_to_the_float_vectors(server: Any) -> None:
    texts = ["first text", "second text"]
    floats = (await _embed(server, input=texts)).json()["data"]
    encoded = (await _embed(server, input=texts, encoding_format="base64")).json()["data"]
    for as_float, as_b64 in zip(floats, encoded, strict=True):
        raw = base64.b64decode(as_b64["embedding"])
        assert len(raw) == 384 * 4
        decoded = struct.unpack("<384f", raw)
        assert max(abs(a - b) for a, b in zip(decoded, as_float["embedding"], strict=True)) < 1e-6


async def test_similar_sentences_are_closer_than_unrelated(server: Any) -> None:
    texts = [
        "A man is playing a guitar.",
        "Someone plays an acoustic guitar.",
        "The central bank raised interest rates.",
    ]
    vectors = [d["embedding"] for d in (await _embed(server, input=texts)).json()["data"]]
    similar, unrelated = _cosine(vectors[0], vectors[1]), _cosine(vectors[0], vectors[2])
    assert similar > 0.5 > unrelated
    assert similar > unrelated + 0.3


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"input": "x", "dimensions": 256}, "dimensions"),
        ({"input": [[1, 2, 3]]}, "input"),
        ({"input": [1, 2, 3]}, "input"),
        ({"input": []}, "input"),
        ({"input": ["ok", ""]}, "input"),
        ({"input": ["x"] * 2049}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
async def test_embedding_refusals(server: Any, payload: Any, param: str) -> None:
    response = await _embed(server, **payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


async def test_embeddings_with_text_model_or_unknown_model(server: Any) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        wrong = await client.post("/v1/embeddings", json={"model": "gemma-3-270m", "input": "x"})
        unknown = await client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "model"
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
