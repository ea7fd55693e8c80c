"""What the control plane refuses before a handler sees a request, for both doors (`/v1`, `/api`),
and the shape of every refusal.

- `guard_url`: a path or query string with NUL (`%00`) is refused (400): PostgreSQL text cannot
  hold it, so an id or cursor carrying one would fail in the database (a 500) instead of being
  "not found". A path segment over 255 characters is "not found" (404) at once: no id or name
  here is that long, and a file system refuses such a name with an error (the reference page's
  static files answered 500).
- `openai_errors`: an error answer that is not JSON (a framework's HTML page) is replaced by
  OpenAI's shape for its status, so every refusal has one shape, whoever produced it.
- `ClientRequest.json` decodes bodies through core/jsonbody.py, so nesting deeper than the
  parser's limit and invalid UTF-8 are 400 `invalid_json` (Litestar lets them escape as
  exceptions, a 500), and refuses what cannot be stored as it came: NUL in a string, integers
  beyond 64 bits, nesting beyond `MAX_STORED_DEPTH` (control-plane bodies are stored objects).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Message, Receive, Scope, Send

from core.errors import ApiError, error_json
from core.jsonbody import decode, storable_refusal

__all__ = ["ClientRequest", "guard_url", "openai_errors"]

MAX_SEGMENT = 255
_NUL = error_json("invalid_request_error", "The request path and query must not contain NUL (%00).")
_LONG = error_json("not_found", f"Unknown path: a path segment is longer than {MAX_SEGMENT} characters.")
_BY_STATUS = {400: "invalid_request_error", 401: "invalid_api_key", 403: "scope_denied", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "request_too_large", 422: "unprocessable_entity",
              429: "rate_limit_exceeded"}


async def _answer(send: Send, status: int, body: bytes) -> None:
    start: HTTPResponseStartEvent = {
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(end)


def guard_url(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            path, query = scope["path"], scope["query_string"]
            if "\x00" in path or b"%00" in query or b"\x00" in query:
                await _answer(send, 400, _NUL)
                return
            if len(path) > MAX_SEGMENT and any(len(segment) > MAX_SEGMENT for segment in path.split("/")):
                await _answer(send, 404, _LONG)
                return
        await app(scope, receive, send)

    return middleware


def openai_errors(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        replaced = False

        async def shaped(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] >= 400:
                kind = dict(message.get("headers", [])).get(b"content-type", b"")
                if not kind.startswith(b"application/json"):
                    replaced = True
                    status = int(message["status"])
                    code = _BY_STATUS.get(status, "internal_error" if status >= 500 else "invalid_request_error")
                    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
                    await _answer(send, status, error_json(code, f"{phrase}."))
                    return
            if replaced and message["type"] == "http.response.body":
                return  # the replaced answer's own body is dropped
            await send(message)

        await app(scope, receive, shaped)

    return middleware


class ClientRequest(Request[Any, Any, Any]):
    async def json(self) -> Any:
        """The body decoded (once: Litestar's data extraction is the only caller), or ApiError."""
        try:
            value = decode(await self.body() or b"null")
        except msgspec.DecodeError as exc:  # ValidationError included: a number beyond float range
            raise ApiError("invalid_json", f"We could not parse the JSON body of your request ({exc}).") from None
        refusal = storable_refusal(value)
        if refusal is not None:
            raise refusal
        return value
