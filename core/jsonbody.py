"""Client JSON, decoded so that hostile input is a 400 from the error table and never a crash.

Every process that reads a client's body (sidecar, adapter, control plane) decodes it through
`decode`, because msgspec signals three kinds of bad input outside its own error classes:
- nesting deeper than the interpreter's recursion limit raises `RecursionError` (the limit is
  shared with the caller's stack, so the same body can pass one process and fail the next);
- invalid UTF-8 inside a string it materialises raises `UnicodeDecodeError` (JSON text must be
  UTF-8; a string in a field the target type skips is not checked, hence `utf8_refusal`);
- a number beyond float range or an integer beyond 64 bits raises `ValidationError` even without a
  target type.
`storable_refusal` adds what the databases cannot hold (NUL in text on PostgreSQL, integers
beyond 64 bits on both) for bodies whose values are stored as they come (the control plane).
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

import msgspec

from core.errors import ApiError

__all__ = ["MAX_STORED_DEPTH", "decode", "storable_refusal", "too_deep", "utf8_refusal"]

T = TypeVar("T")

MAX_STORED_DEPTH = 32
"""Nesting allowed in a body whose values are stored (management objects, webhook endpoints)."""
_INT64 = (-(2**63), 2**63 - 1)


def too_deep() -> ApiError:
    return ApiError("invalid_json", "The JSON body is nested too deeply.")


def utf8_refusal(body: bytes) -> ApiError | None:
    """JSON text must be UTF-8; the check is a single pass in C (ASCII bodies skip the decode)."""
    if body.isascii():
        return None
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ApiError("invalid_json", f"The request body is not valid UTF-8 (byte {exc.start}).")
    return None


@overload
def decode(body: bytes, *, type: type[T]) -> T: ...


@overload
def decode(body: bytes, *, type: Any = ...) -> Any: ...


def decode(body: bytes, *, type: Any = Any) -> Any:
    """`msgspec.json.decode`, with nesting and encoding errors raised as ApiError `invalid_json`.

    `msgspec.ValidationError` (the body is JSON but not of `type`) still reaches the caller, which
    knows which parameter to name; it is a subclass of `msgspec.DecodeError`, so a caller catching
    only the latter treats it as malformed JSON.
    """
    try:
        return msgspec.json.decode(body, type=type)
    except RecursionError:
        raise too_deep() from None
    except UnicodeDecodeError as exc:
        raise ApiError("invalid_json", f"The request body is not valid UTF-8 (byte {exc.start}).") from None


def storable_refusal(value: Any, limit: int = MAX_STORED_DEPTH) -> ApiError | None:
    """Why a decoded body cannot be stored as it is (NUL in a string or key, an integer beyond
    64 bits, nesting beyond `limit`), or None. Iterative, so depth costs no stack."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return ApiError("invalid_request_error", "Strings must not contain NUL (\\u0000) characters.")
        elif isinstance(item, int):
            if not _INT64[0] <= item <= _INT64[1]:
                return ApiError("invalid_request_error", "Integers must fit in 64 bits.")
        elif isinstance(item, dict | list):
            if depth > limit:
                return ApiError("invalid_json", f"The JSON body is nested more than {limit} levels deep.")
            if isinstance(item, dict):
                stack.extend((key, depth) for key in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return None
