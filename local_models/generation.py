"""Validation shared by the text endpoints, and the bridge from the worker thread to asyncio.

:class:`TextRun` submits one generation to the text worker and exposes its output both as an async
stream of text pieces and as the final :class:`GenerationResult`; a client disconnect or an early
close of the stream sets the flag the token loop checks, so the worker is free for the next request
within one token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass

from local_models.asgi import Request
from local_models.errors import ApiError, bad_request
from local_models.fairqueue import FairQueue
from local_models.schemas import ChatCompletionRequest, CompletionRequest
from local_models.text import GenerationParams, GenerationResult, TextModel

__all__ = ["TENANT_HEADER", "TextRun", "check_context", "check_model", "sampling_params", "tenant_of"]

MAX_STOPS = 4
TENANT_HEADER = "x-nx-tenant"
"""Set by the platform's adapter to the organization a request is for (absent: one anonymous tenant)."""
PREFILL_PER_OUTPUT_TOKEN = 16
"""Prompt tokens llama.cpp reads in the time it samples one (batched prefill); sizes a job's cost."""


def tenant_of(request: Request) -> str:
    return request.headers.get(TENANT_HEADER, "")


def check_model(requested: str, expected: str, loaded: object | None, known: set[str]) -> None:
    if requested != expected:
        if requested in known:
            raise bad_request(
                f"Model {requested!r} does not support this endpoint; use {expected!r}.",
                param="model",
                code="model_not_supported",
            )
        raise ApiError(404, f"The model {requested!r} does not exist.", param="model", code="model_not_found")
    if loaded is None:
        raise ApiError(
            503,
            f"The model {requested!r} is unavailable on this server (weights not loaded).",
            type="server_error",
            param="model",
            code="model_unavailable",
        )


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS:
        raise bad_request(f"At most {MAX_STOPS} stop sequences are allowed.", param="stop")
    if any(s == "" for s in stops):
        raise bad_request("Stop sequences must not be empty.", param="stop")
    return tuple(stops)


def sampling_params(
    body: ChatCompletionRequest | CompletionRequest,
    *,
    default_max_tokens: int,
    max_output_tokens: int,
    extra_stops: tuple[str, ...] = (),
    grammar: str | None = None,
) -> GenerationParams:
    """`max_output_tokens` caps what a request may ask for (a larger ask is served up to the cap,
    ending with finish_reason "length"): one request must not hold the model for minutes."""
    if body.n not in (None, 1):
        raise bad_request("Only n=1 is supported.", param="n")
    if body.logit_bias:
        raise bad_request("'logit_bias' is not supported.", param="logit_bias")
    max_tokens = body.max_tokens
    if isinstance(body, ChatCompletionRequest) and body.max_completion_tokens is not None:
        max_tokens, param = body.max_completion_tokens, "max_completion_tokens"
    else:
        param = "max_tokens"
    if max_tokens is not None and max_tokens < 1:
        raise bad_request(f"'{param}' must be at least 1.", param=param)
    temperature = 1.0 if body.temperature is None else body.temperature
    if not 0.0 <= temperature <= 2.0:
        raise bad_request("'temperature' must be between 0 and 2.", param="temperature")
    top_p = 1.0 if body.top_p is None else body.top_p
    if not 0.0 <= top_p <= 1.0:
        raise bad_request("'top_p' must be between 0 and 1.", param="top_p")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(body, name)
        if value is not None and not -2.0 <= value <= 2.0:
            raise bad_request(f"'{name}' must be between -2 and 2.", param=name)
    return GenerationParams(
        max_tokens=min(max_tokens or default_max_tokens, max_output_tokens),
        # top_p=0 means "only the most likely token", which is greedy decoding.
        temperature=0.0 if top_p == 0.0 else temperature,
        top_p=top_p or 1.0,
        stop=_stops(body.stop) + extra_stops,
        seed=body.seed,
        presence_penalty=body.presence_penalty or 0.0,
        frequency_penalty=body.frequency_penalty or 0.0,
        grammar=grammar,
    )


def check_context(model: TextModel, prompt_tokens: list[int], param: str) -> None:
    if len(prompt_tokens) >= model.n_ctx:
        raise bad_request(
            f"The prompt is {len(prompt_tokens)} tokens; this model's context is {model.n_ctx} tokens.",
            param=param,
            code="context_length_exceeded",
        )


@dataclass(slots=True)
class TextRun:
    pieces_queue: asyncio.Queue[str | None]
    result: asyncio.Future[GenerationResult]
    cancelled: threading.Event

    @classmethod
    def start(
        cls,
        model: TextModel,
        worker: FairQueue,
        request: Request,
        prompt_tokens: list[int],
        params: GenerationParams,
    ) -> TextRun:
        """Queue the generation (429 past the tenant's share, 503 if the queue is full) and return
        at once."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(piece: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, piece)

        ticket = worker.admit(tenant_of(request))
        cost = min(params.max_tokens, model.n_ctx) + len(prompt_tokens) / PREFILL_PER_OUTPUT_TOKEN
        future = ticket.submit(lambda: model.generate(prompt_tokens, params, cancelled, emit), cost)
        ticket.close()
        # Done callbacks run after every emit already scheduled, so None really is the end.
        future.add_done_callback(lambda _: queue.put_nowait(None))
        request.on_disconnect(cancelled.set)
        return cls(queue, future, cancelled)

    async def pieces(self) -> AsyncIterator[str]:
        try:
            while (piece := await self.pieces_queue.get()) is not None:
                yield piece
        finally:
            if not self.result.done():
                self.cancelled.set()

    async def wait(self) -> GenerationResult:
        try:
            return await asyncio.shield(self.result)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
