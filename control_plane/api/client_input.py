"""What the control plane refuses before a handler sees a request, for both doors (`/v1`, `/api`).

- A path or query string with NUL (`%00`) is refused: PostgreSQL text cannot hold it, so an id
  or cursor carrying one would fail in the database (a 500) instead of being "not found".
- `ClientRequest.json` decodes bodies through control_plane/jsonbody.py, so nesting deeper than
  the parser's limit and invalid UTF-8 are 400 `invalid_json` (Litestar lets them escape as
  exceptions, a 500), and refuses what cannot be stored as it came: NUL in a string, integers
  beyond 64 bits, nesting beyond `MAX_STORED_DEPTH` (control-plane bodies are stored objects).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from core.errors import ApiError, error_json
from core.jsonbody import decode, storable_refusal

__all__ = ["ClientRequest", "refuse_nul_in_url"]

_NUL_REFUSAL = error_json("invalid_request_error", "The request path and query must not contain NUL (%00).")


def refuse_nul_in_url(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and (
                "\x00" in scope["path"] or b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]):
            start: HTTPResponseStartEvent = {
                "type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(_NUL_REFUSAL)).encode())]}
            await send(start)
            body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": _NUL_REFUSAL, "more_body": False}
            await send(body)
            return
        await app(scope, receive, send)

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
