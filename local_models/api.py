"""``/health``, ``/v1/models`` and ``/v1/embeddings``, and the route table of the server."""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import numpy as np

from local_models import EMBEDDING_MODEL_ID, metrics
from local_models.asgi import JsonResponse, Request, Response, Route
from local_models.chat import chat_completions, completions
from local_models.embeddings import DIMENSIONS, MAX_SEQ_LENGTH
from local_models.errors import ApiError, bad_request
from local_models.generation import check_model, tenant_of
from local_models.schemas import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage, ModelCard, ModelList
from local_models.state import KNOWN_MODELS, ServerState

__all__ = ["MAX_EMBEDDING_INPUTS", "routes"]

# OpenAI's own limit per request. The work of a request is bounded by its tokens instead
# (ServerState.max_embedding_tokens): 2,048 short inputs pass, 2,048 long ones do not.
MAX_EMBEDDING_INPUTS = 2048

_encode = msgspec.json.encode


async def health(request: Request, state: ServerState) -> Response:
    # `admitted`: requests running or queued per model, to watch the bounded queue fill and drain;
    # `queues`: the same with the tenants sharing each queue and the jobs waiting (fairqueue.py).
    body: dict[str, Any] = {"status": "ok", "models": state.statuses(), "admitted": state.admitted(),
                            "queues": state.queues()}
    if state.load_errors:
        body["errors"] = state.load_errors
    return JsonResponse(_encode(body))


def _cards(state: ServerState) -> list[ModelCard]:
    # Only models that can answer: a router reading this list must not send traffic to a model
    # whose weights are missing (/health shows those as "unavailable").
    return [
        ModelCard(id=name, created=state.created)
        for name, status in state.statuses().items()
        if status == "ready"
    ]


async def list_models(request: Request, state: ServerState) -> Response:
    return JsonResponse(_encode(ModelList(data=_cards(state))))


async def get_model(request: Request, state: ServerState) -> Response:
    wanted = request.path.removeprefix("/v1/models/")
    for card in _cards(state):
        if card.id == wanted:
            return JsonResponse(_encode(card))
    raise ApiError(404, f"The model {wanted!r} does not exist.", param="model", code="model_not_found")


def _texts(raw: str | list[Any]) -> list[str]:
    texts = [raw] if isinstance(raw, str) else raw
    if not texts:
        raise bad_request("'input' must not be empty.", param="input")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise bad_request(f"At most {MAX_EMBEDDING_INPUTS} inputs per request.", param="input")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise bad_request(
                "'input' must be a string or a list of strings; token arrays are not supported.",
                param="input",
            )
        if not text:
            raise bad_request(f"'input[{index}]' is an empty string.", param="input")
    return texts


async def embeddings(request: Request, state: ServerState) -> Response:
    body: EmbeddingRequest = request.decode(EmbeddingRequest)
    check_model(body.model, EMBEDDING_MODEL_ID, state.embed, KNOWN_MODELS)
    model = state.embed
    assert model is not None
    if body.dimensions is not None and body.dimensions != DIMENSIONS:
        raise bad_request(
            f"This model has a fixed {DIMENSIONS} dimensions; 'dimensions' cannot change it.",
            param="dimensions",
        )
    encoding = body.encoding_format or "float"
    if encoding not in ("float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    texts = _texts(body.input)
    ticket = state.embed_worker.admit(tenant_of(request))  # 429 past the tenant's share, 503 when full
    try:
        # Tokenising is the cheap part (~1.5 ms per 1,000-character text) and tells the request's
        # work exactly; it runs off the event loop, and off the model's thread.
        batch = await asyncio.to_thread(model.tokenize, texts)
        if batch.tokens > state.max_embedding_tokens:
            raise bad_request(
                f"This request would make the model read {batch.tokens:,} tokens ({len(texts):,} inputs); "
                f"at most {state.max_embedding_tokens:,} tokens per request (inputs x length, each input "
                f"truncated at {MAX_SEQ_LENGTH} tokens). Split it into smaller requests.",
                param="input", code="request_too_large")
        # One job per sub-batch: another organization's request overtakes the rest of this one.
        futures = [ticket.submit(functools.partial(model.run, rows), float(sum(map(len, rows))))
                   for _, rows in batch.chunks]
    finally:
        ticket.close()
    request.on_disconnect(ticket.cancel)  # a client gone: the chunks not started are dropped
    try:
        parts = await asyncio.gather(*futures)
    except asyncio.CancelledError:
        ticket.cancel()
        if request.disconnected.is_set():  # nobody to answer; the status only reaches the log
            raise ApiError(499, "The client closed the request.") from None
        raise
    except Exception:
        ticket.cancel()  # a failed chunk: the others not started are dropped
        raise
    vectors = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
    for (indices, _), part in zip(batch.chunks, parts, strict=True):
        vectors[indices] = part
    if encoding == "base64":
        # OpenAI's base64 format: the raw little-endian float32 bytes of each vector.
        rows32 = vectors.astype("<f4", copy=False)
        data = [
            Embedding(index=i, embedding=base64.b64encode(row.tobytes()).decode())
            for i, row in enumerate(rows32)
        ]
    else:
        floats: list[list[float]] = vectors.astype(np.float64).tolist()
        data = [Embedding(index=i, embedding=vector) for i, vector in enumerate(floats)]
    tokens = batch.tokens
    return JsonResponse(
        _encode(
            EmbeddingList(
                data=data, model=body.model, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
            )
        )
    )


Endpoint = Callable[[Request, ServerState], Awaitable[Response]]


def routes(state: ServerState) -> list[Route]:
    def bind(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            return await endpoint(request, state)

        return handler

    return [
        Route("GET", "/health", bind(health)),
        Route("GET", "/metrics", bind(metrics.endpoint)),
        Route("GET", "/v1/models", bind(list_models)),
        Route("GET", "/v1/models/", bind(get_model), prefix=True),
        Route("POST", "/v1/chat/completions", bind(chat_completions)),
        Route("POST", "/v1/completions", bind(completions)),
        Route("POST", "/v1/embeddings", bind(embeddings)),
    ]
