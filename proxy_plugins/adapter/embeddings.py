"""POST /v1/embeddings on OpenAI-protocol backends.

`encoding_format` is passed to the backend as the client asked; whichever form comes back, the
client gets the one it asked for (base64 = little-endian float32, what both SDKs decode).
`dimensions` is accepted only where the catalog says the model can shorten its vectors
(`custom_dimensions`), or when it equals the model's native width. Results go out ordered by index.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import msgspec

from control_plane.errors import ApiError
from proxy_plugins.adapter.context import RequestContext, Usage
from proxy_plugins.adapter.exchange import Exchange
from proxy_plugins.adapter.services import Services

__all__ = ["MAX_INPUTS", "handle", "to_base64", "from_base64"]

MAX_INPUTS = 2048
"""OpenAI's documented maximum number of inputs per request."""
_encode = msgspec.json.encode


class _Request(msgspec.Struct):
    input: Any = None
    """A string, or an array of strings, of token ids, or of token-id arrays (checked in _inputs)."""
    encoding_format: str | None = None
    dimensions: int | None = None


class _Item(msgspec.Struct):
    index: int
    embedding: list[float] | str


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    total_tokens: int = 0


class _Reply(msgspec.Struct):
    data: list[_Item]
    usage: _Usage | None = None


def to_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def from_base64(text: str) -> list[float]:
    raw = base64.b64decode(text)
    if len(raw) % 4:
        raise ApiError("upstream_error", "The model backend sent a malformed base64 embedding.")
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _inputs(items: Any) -> None:
    if items is None:
        raise ApiError("missing_required_parameter", "Missing required parameter: 'input'.", "input")
    if isinstance(items, str):
        if not items:
            raise ApiError("invalid_request_error", "'input' must not be an empty string.", "input")
        return
    if not isinstance(items, list) or not items:
        raise ApiError("invalid_request_error", "'input' must be a string or a non-empty array.", "input")
    if len(items) > MAX_INPUTS:
        raise ApiError("invalid_request_error",
                       f"'input' has {len(items)} items; at most {MAX_INPUTS} are allowed per request.", "input")
    if _is_tokens(items) or all(isinstance(i, str) and i for i in items) \
            or all(_is_tokens(i) and i for i in items):
        return
    raise ApiError("invalid_request_error", "'input' must be a string, an array of non-empty strings, an "
                   "array of token ids or an array of token-id arrays.", "input")


def _validate(ctx: RequestContext, body: bytes) -> tuple[dict[str, Any], _Request]:
    try:
        raw = msgspec.json.decode(body)
        request = msgspec.convert(raw, _Request)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: caught first
        param = "dimensions" if "dimensions" in str(exc) else "encoding_format" \
            if "encoding_format" in str(exc) else "input"
        raise ApiError("invalid_request_error", f"Invalid '{param}': {exc}.", param) from None
    except msgspec.DecodeError:
        raise ApiError("invalid_json", "We could not parse the JSON body of your request.") from None
    _inputs(request.input)
    if request.encoding_format not in (None, "float", "base64"):
        raise ApiError("invalid_request_error", "'encoding_format' must be 'float' or 'base64'.",
                       "encoding_format")
    if request.dimensions is not None:
        native = ctx.model.capabilities.get("dimensions")
        if request.dimensions < 1:
            raise ApiError("invalid_request_error", "'dimensions' must be at least 1.", "dimensions")
        if request.dimensions != native:
            if not ctx.can("custom_dimensions"):
                raise ApiError("unsupported_parameter",
                               f"The model '{ctx.requested_model}' does not support 'dimensions' "
                               f"(its vectors have {native} dimensions).", "dimensions")
            if isinstance(native, int) and request.dimensions > native:
                raise ApiError("invalid_request_error",
                               f"'dimensions' must be at most {native} for '{ctx.requested_model}'.",
                               "dimensions")
    assert isinstance(raw, dict)  # convert() into a Struct succeeded
    return raw, request


async def handle(svc: Services, ctx: RequestContext, body: bytes, exchange: Exchange) -> None:
    if not ctx.can("embeddings") or ctx.backend.protocol == "anthropic":
        raise ApiError("unsupported_capability", f"The model '{ctx.requested_model}' cannot make embeddings.",
                       "model")
    raw, request = _validate(ctx, body)
    raw["model"] = ctx.model.upstream_name
    if request.dimensions is not None and request.dimensions == ctx.model.capabilities.get("dimensions") \
            and not ctx.can("custom_dimensions"):
        del raw["dimensions"]  # the native width: a backend that rejects the parameter gets none
    reply = await svc.backends.post(ctx.backend, "embeddings", _encode(raw))
    try:
        upstream = msgspec.json.decode(reply.body, type=_Reply)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ApiError("upstream_error", "The model backend sent a malformed embeddings answer.") from None
    want_base64 = request.encoding_format == "base64"
    data = []
    for item in sorted(upstream.data, key=lambda i: i.index):
        vector: list[float] | str = item.embedding
        if want_base64 and isinstance(vector, list):
            vector = to_base64(vector)
        elif not want_base64 and isinstance(vector, str):
            vector = from_base64(vector)
        data.append({"object": "embedding", "index": item.index, "embedding": vector})
    prompt_tokens = upstream.usage.prompt_tokens if upstream.usage else 0
    ctx.usage = Usage(input_tokens=prompt_tokens)
    await exchange.json(_encode({"object": "list", "data": data, "model": ctx.requested_model,
                                 "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}))
