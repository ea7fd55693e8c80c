"""OpenAI-shaped errors: every non-2xx answer is ``{"error": {"message", "type", "param", "code"}}``.

Clients (the official SDKs, the sidecar's usage reader) parse this shape, so handlers raise
:class:`ApiError` and the ASGI layer is the only place that turns it into bytes.
"""

from __future__ import annotations

import msgspec

__all__ = ["ApiError", "ErrorBody", "ErrorDetail", "bad_request", "error_bytes"]


class ErrorDetail(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


class ApiError(Exception):
    """An error with its HTTP status, rendered in OpenAI's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(message=message, type=type, param=param, code=code)
        self.headers = headers or {}
        """Extra response headers (``Retry-After`` on a 429)."""


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def error_bytes(error: ApiError) -> bytes:
    return msgspec.json.encode(ErrorBody(error=error.detail))
