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

from core import embedding_cache
from core.db import now_ms
from core.errors import ApiError
from core.jsonbody import decode
from proxy_plugins.adapter.context import RequestContext, Usage
from proxy_plugins.adapter.exchange import Exchange
from proxy_plugins.adapter.services import Services

__all__ = ["MAX_INPUTS", "from_base64", "handle", "to_base64"]

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
                       f"'input' has {len(items)} items; at most {MAX_INPUTS} are allowed per request.",
                       "input")
    if _is_tokens(items) or all(isinstance(i, str) and i for i in items) \
            or all(_is_tokens(i) and i for i in items):
        return
    raise ApiError("invalid_request_error", "'input' must be a string, an array of non-empty strings, an "
                   "array of token ids or an array of token-id arrays.", "input")


def _validate(ctx: RequestContext, body: bytes) -> tuple[dict[str, Any], _Request]:
    try:
        raw = decode(body)
    except msgspec.DecodeError:  # a number out of range included (a ValidationError)
        raise ApiError("invalid_json", "We could not parse the JSON body of your request.") from None
    if not isinstance(raw, dict):
        raise ApiError("invalid_request_error", "The request body must be a JSON object.")
    try:
        request = msgspec.convert(raw, _Request)
    except msgspec.ValidationError as exc:
        param = "dimensions" if "dimensions" in str(exc) else "encoding_format" \
            if "encoding_format" in str(exc) else "input"
        raise ApiError("invalid_request_error", f"Invalid '{param}': {exc}.", param) from None
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
    return raw, request


async def handle(svc: Services, ctx: RequestContext, body: bytes, exchange: Exchange) -> None:
    # Runs to its end even if the client leaves: what the backend computed is charged, not lost.
    exchange.detached = True
    if not ctx.can("embeddings") or ctx.backend.protocol == "anthropic":
        raise ApiError("unsupported_capability", f"The model '{ctx.requested_model}' cannot make embeddings.",
                       "model")
    raw, request = _validate(ctx, body)
    raw["model"] = ctx.model.upstream_name
    for routing_only in ("models", "provider"):  # the platform's routing fields (docs/routing.md)
        raw.pop(routing_only, None)
    if request.dimensions is not None and request.dimensions == ctx.model.capabilities.get("dimensions") \
            and not ctx.can("custom_dimensions"):
        del raw["dimensions"]  # the native width: a backend that rejects the parameter gets none
    if embedding_cache.no_store(ctx.cache_control):
        await _bypass(svc, ctx, raw, request, exchange)
    else:
        await _through_cache(svc, ctx, raw, request, exchange)


async def _call(svc: Services, ctx: RequestContext, raw: dict[str, Any]) -> _Reply:
    reply = await svc.backends.post(ctx.backend, "embeddings", _encode(raw), ctx.org_id)
    try:
        return msgspec.json.decode(reply.body, type=_Reply)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise ApiError("upstream_error", "The model backend sent a malformed embeddings answer.") from None


async def _answer(ctx: RequestContext, exchange: Exchange, data: list[dict[str, Any]]) -> None:
    """`usage.prompt_tokens_details.cached_tokens` mirrors Chat Completions' usage (the embeddings
    schema allows extra usage fields); `x-cached-tokens` says the same in a header."""
    usage = ctx.usage
    await exchange.json(_encode({"object": "list", "data": data, "model": ctx.requested_model, "usage": {
        "prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}}),
        headers=[(b"x-cached-tokens", str(usage.cached_tokens).encode())])


async def _bypass(svc: Services, ctx: RequestContext, raw: dict[str, Any], request: _Request,
                  exchange: Exchange) -> None:
    """`Cache-Control: no-store`: the backend computes everything; nothing is read or written."""
    ctx.cache_status = "bypass"
    upstream = await _call(svc, ctx, raw)
    want_base64 = request.encoding_format == "base64"
    data = []
    for item in sorted(upstream.data, key=lambda i: i.index):
        vector: list[float] | str = item.embedding
        if want_base64 and isinstance(vector, list):
            vector = to_base64(vector)
        elif not want_base64 and isinstance(vector, str):
            vector = from_base64(vector)
        data.append({"object": "embedding", "index": item.index, "embedding": vector})
    ctx.usage = Usage(input_tokens=upstream.usage.prompt_tokens if upstream.usage else 0)
    await _answer(ctx, exchange, data)


async def _through_cache(svc: Services, ctx: RequestContext, raw: dict[str, Any], request: _Request,
                         exchange: Exchange) -> None:
    """Cached inputs from the cache, the rest in ONE backend call, answered in the request's order."""
    items: list[embedding_cache.Input] = [request.input] if isinstance(request.input, str) \
        or _is_tokens(request.input) else list(request.input)
    native = ctx.model.capabilities.get("dimensions")
    width = request.dimensions or (native if isinstance(native, int) else 0)
    keys = [embedding_cache.entry_key(ctx.model, width, item, project=ctx.project_id) for item in items]
    found = await embedding_cache.lookup(svc.engine, ctx.org_id, keys)
    vectors = {i: found[k].vector for i, k in enumerate(keys) if k in found}
    cached_tokens = sum(found[keys[i]].tokens for i in vectors)
    missing = [i for i in range(len(items)) if i not in vectors]
    computed = 0
    if missing:
        if len(missing) < len(items):
            raw["input"] = [items[i] for i in missing]
        upstream = await _call(svc, ctx, raw)
        got = sorted(upstream.data, key=lambda i: i.index)
        if [item.index for item in got] != list(range(len(missing))):
            raise ApiError("upstream_error", "The model backend answered a different number of embeddings "
                           "than it was asked for.")
        computed = upstream.usage.prompt_tokens if upstream.usage else 0
        counts = embedding_cache.apportion(computed, [embedding_cache.weight(items[i]) for i in missing])
        fresh: dict[str, embedding_cache.Entry] = {}
        for position, item, count in zip(missing, got, counts, strict=True):
            vectors[position] = _packed(item.embedding)
            if not width or len(vectors[position]) == 4 * width:  # never cache a vector of the wrong width
                fresh[keys[position]] = embedding_cache.Entry(vectors[position], count)
        await embedding_cache.store(svc.engine, ctx.org_id, ctx.model.id, fresh)
    ctx.cache_status = "miss" if len(missing) == len(items) else "partial" if missing else "hit"
    ctx.usage = Usage(input_tokens=computed + cached_tokens, cached_tokens=cached_tokens)
    want_base64 = request.encoding_format == "base64"
    await _answer(ctx, exchange, [
        {"object": "embedding", "index": i,
         "embedding": base64.b64encode(vectors[i]).decode() if want_base64 else _unpacked(vectors[i])}
        for i in range(len(items))])
    stale = embedding_cache.stale(found, now_ms())
    if stale:  # after the answer went out (recency only matters to eviction)
        await embedding_cache.touch(svc.engine, ctx.org_id, stale)


def _packed(vector: list[float] | str) -> bytes:
    try:
        packed: bytes | None = embedding_cache.pack(vector)
    except (ValueError, struct.error):  # binascii.Error is a ValueError
        packed = None
    if packed is None or len(packed) % 4:
        raise ApiError("upstream_error", "The model backend sent a malformed embedding.")
    return packed


def _unpacked(vector: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(vector) // 4}f", vector))
