"""``POST /v1/chat/completions`` and ``POST /v1/completions`` on the local text model.

Both always report ``usage`` counted with the model's own tokenizer: the sidecar bills from it. When
streaming, usage goes out in a final chunk with empty ``choices`` if ``stream_options.include_usage``
is set, as OpenAI does.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from local_models import TEXT_MODEL_ID
from local_models.asgi import JsonResponse, Request, Response, StreamResponse
from local_models.errors import ApiError, bad_request, error_bytes
from local_models.generation import TextRun, check_context, check_model, sampling_params
from local_models.prompts import ROLE_STOPS, ToolMode, grammar_for, render_chat
from local_models.schemas import (
    ChatChoice,
    ChatChunk,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatDelta,
    Completion,
    CompletionChoice,
    CompletionRequest,
    FunctionCall,
    OutMessage,
    ToolCall,
    Usage,
)
from local_models.state import KNOWN_MODELS, ServerState
from local_models.text import GenerationResult, TextModel

__all__ = ["chat_completions", "completions"]

# Chat has no OpenAI default limit; a base model that misses every role marker would otherwise run
# to the end of its context, so the default is a bound, overridable per request.
DEFAULT_CHAT_MAX_TOKENS = 512
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's documented default for /v1/completions

_encode = msgspec.json.encode


def _usage(result: GenerationResult) -> Usage:
    return Usage(
        result.prompt_tokens, result.completion_tokens, result.prompt_tokens + result.completion_tokens
    )


def _text_model(state: ServerState, requested: str) -> TextModel:
    check_model(requested, TEXT_MODEL_ID, state.text, KNOWN_MODELS)
    assert state.text is not None  # check_model raised otherwise
    return state.text


def _tool_call(text: str, mode: ToolMode) -> ToolCall | None:
    """The call the model produced, or None if it answered in text (or ran out of tokens)."""
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or parsed.get("name") not in mode.names:
        return None
    arguments = json.dumps(parsed.get("arguments", {}))
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", function=FunctionCall(parsed["name"], arguments))


async def chat_completions(request: Request, state: ServerState) -> Response:
    body: ChatCompletionRequest = request.decode(ChatCompletionRequest)
    model = _text_model(state, body.model)
    if body.logprobs:
        raise bad_request("'logprobs' is not supported by the local model server.", param="logprobs")
    grammar, tool_mode = grammar_for(body.response_format, body.tools, body.tool_choice)
    prompt = render_chat(body.messages, body.tools if tool_mode else None)
    params = sampling_params(
        body,
        default_max_tokens=DEFAULT_CHAT_MAX_TOKENS,
        max_output_tokens=state.max_output_tokens,
        extra_stops=ROLE_STOPS,
        grammar=grammar,
    )
    tokens = model.tokenize(prompt)
    check_context(model, tokens, "messages")
    run = TextRun.start(model, state.text_worker, request, tokens, params)
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    include_usage = bool(body.stream and body.stream_options and body.stream_options.include_usage)
    if body.stream:
        return StreamResponse(_chat_events(run, completion_id, created, body.model, tool_mode, include_usage))
    result = await run.wait()
    # The transcript format puts a space after "Assistant:"; it belongs to the format, not the answer.
    text = result.text.lstrip()
    call = _tool_call(text, tool_mode) if tool_mode else None
    message = OutMessage(content=None, tool_calls=[call]) if call else OutMessage(content=text)
    finish = "tool_calls" if call else result.finish_reason
    return JsonResponse(
        _encode(
            ChatCompletion(
                id=completion_id,
                created=created,
                model=body.model,
                choices=[ChatChoice(index=0, message=message, finish_reason=finish)],
                usage=_usage(result),
            )
        )
    )


async def _chat_events(
    run: TextRun,
    completion_id: str,
    created: int,
    model: str,
    tool_mode: ToolMode | None,
    include_usage: bool,
) -> AsyncGenerator[bytes, None]:
    def chunk(delta: ChatDelta, finish: str | None = None) -> bytes:
        choice = ChatChunkChoice(index=0, delta=delta, finish_reason=finish)
        return _encode(ChatChunk(id=completion_id, created=created, model=model, choices=[choice]))

    yield chunk(ChatDelta(role="assistant", content=""))
    started = False
    buffered: list[str] = []
    async for piece in run.pieces():
        if not started:  # drop the transcript's space after "Assistant:" (see the non-stream path)
            piece = piece.lstrip()
            started = bool(piece)
        if not piece:
            continue
        if tool_mode:  # a call is only known to be a call once it parses: hold everything
            buffered.append(piece)
        else:
            yield chunk(ChatDelta(content=piece))
    try:
        result = await run.wait()
    except Exception as exc:
        yield error_bytes(_as_api_error(exc))
        return
    finish = result.finish_reason
    if tool_mode:
        text = "".join(buffered).rstrip()
        call = _tool_call(text, tool_mode)
        if call is not None:
            finish = "tool_calls"
            yield chunk(ChatDelta(tool_calls=[{"index": 0, **msgspec.to_builtins(call)}]))
        elif text:
            yield chunk(ChatDelta(content=text))
    yield chunk(ChatDelta(), finish)
    if include_usage:
        yield _encode(
            ChatChunk(id=completion_id, created=created, model=model, choices=[], usage=_usage(result))
        )


def _prompt_text(prompt: str | list[Any]) -> str:
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    if prompt and all(isinstance(p, str) for p in prompt):
        raise bad_request("Only one prompt per request is supported.", param="prompt")
    raise bad_request("'prompt' must be a string; token arrays are not supported.", param="prompt")


async def completions(request: Request, state: ServerState) -> Response:
    body: CompletionRequest = request.decode(CompletionRequest)
    model = _text_model(state, body.model)
    for name in ("echo", "suffix", "logprobs"):
        if getattr(body, name):
            raise bad_request(f"'{name}' is not supported by the local model server.", param=name)
    if body.best_of not in (None, 1):
        raise bad_request("Only best_of=1 is supported.", param="best_of")
    params = sampling_params(
        body, default_max_tokens=DEFAULT_COMPLETION_MAX_TOKENS, max_output_tokens=state.max_output_tokens
    )
    tokens = model.tokenize(_prompt_text(body.prompt))
    check_context(model, tokens, "prompt")
    run = TextRun.start(model, state.text_worker, request, tokens, params)
    completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamResponse(_completion_events(run, completion_id, created, body.model, include_usage))
    result = await run.wait()
    return JsonResponse(
        _encode(
            Completion(
                id=completion_id,
                created=created,
                model=body.model,
                choices=[CompletionChoice(index=0, text=result.text, finish_reason=result.finish_reason)],
                usage=_usage(result),
            )
        )
    )


async def _completion_events(
    run: TextRun, completion_id: str, created: int, model: str, include_usage: bool
) -> AsyncGenerator[bytes, None]:
    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> bytes:
        return _encode(
            Completion(id=completion_id, created=created, model=model, choices=choices, usage=usage)
        )

    async for piece in run.pieces():
        yield chunk([CompletionChoice(index=0, text=piece)])
    try:
        result = await run.wait()
    except Exception as exc:
        yield error_bytes(_as_api_error(exc))
        return
    yield chunk([CompletionChoice(index=0, text="", finish_reason=result.finish_reason)])
    if include_usage:
        yield chunk([], _usage(result))


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    return ApiError(500, f"Generation failed: {exc}", type="server_error")
