"""The one error-code table: every domain error maps to an HTTP status and OpenAI's error shape.

`/v1` responses use `{"error": {"message", "type", "param", "code"}}`. The control plane, the
sidecar and Envoy's own local replies (rendered from this table into the Envoy config) all draw
from `ERRORS`, so one code never means two statuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from core.ledger.errors import LedgerError

__all__ = ["ERRORS", "ApiError", "ErrorBody", "ErrorSpec", "error_body", "refusal"]


class ErrorSpec(msgspec.Struct, frozen=True):
    status: int
    type: str


ERRORS: dict[str, ErrorSpec] = {
    # 400
    "invalid_request_error": ErrorSpec(400, "invalid_request_error"),
    "invalid_json": ErrorSpec(400, "invalid_request_error"),
    "missing_required_parameter": ErrorSpec(400, "invalid_request_error"),
    "unsupported_parameter": ErrorSpec(400, "invalid_request_error"),
    "unsupported_capability": ErrorSpec(400, "invalid_request_error"),
    "weak_password": ErrorSpec(400, "invalid_request_error"),
    "invalid_token": ErrorSpec(400, "invalid_request_error"),
    "invalid_path": ErrorSpec(400, "invalid_request_error"),
    # 401
    "missing_api_key": ErrorSpec(401, "authentication_error"),
    "invalid_api_key": ErrorSpec(401, "authentication_error"),
    "signature_required": ErrorSpec(401, "authentication_error"),
    "signature_timestamp_invalid": ErrorSpec(401, "authentication_error"),
    "signature_nonce_invalid": ErrorSpec(401, "authentication_error"),
    "signature_invalid": ErrorSpec(401, "authentication_error"),
    "nonce_reused": ErrorSpec(401, "authentication_error"),
    "invalid_credentials": ErrorSpec(401, "authentication_error"),
    "not_signed_in": ErrorSpec(401, "authentication_error"),
    "webhook_signature_invalid": ErrorSpec(401, "authentication_error"),
    # 402
    "insufficient_quota": ErrorSpec(402, "insufficient_quota"),
    # 403
    "scope_denied": ErrorSpec(403, "permission_error"),
    "ip_not_allowed": ErrorSpec(403, "permission_error"),
    "model_not_allowed": ErrorSpec(403, "permission_error"),
    "endpoint_not_allowed": ErrorSpec(403, "permission_error"),
    "project_not_allowed": ErrorSpec(403, "permission_error"),
    "internal_auth_failed": ErrorSpec(403, "permission_error"),
    "permission_denied": ErrorSpec(403, "permission_error"),
    "email_not_verified": ErrorSpec(403, "permission_error"),
    "csrf_failed": ErrorSpec(403, "permission_error"),
    # 404
    "not_found": ErrorSpec(404, "invalid_request_error"),
    "model_not_found": ErrorSpec(404, "invalid_request_error"),
    "model_not_priced": ErrorSpec(404, "invalid_request_error"),
    # 405/409/413/422/429
    "method_not_allowed": ErrorSpec(405, "invalid_request_error"),
    "conflict": ErrorSpec(409, "invalid_request_error"),
    "idempotency_key_in_use": ErrorSpec(409, "invalid_request_error"),
    "hold_already_resolved": ErrorSpec(409, "invalid_request_error"),
    "request_too_large": ErrorSpec(413, "invalid_request_error"),
    "headers_too_large": ErrorSpec(431, "invalid_request_error"),
    "idempotency_key_reused": ErrorSpec(422, "invalid_request_error"),
    "unprocessable_entity": ErrorSpec(422, "invalid_request_error"),
    "rate_limit_exceeded": ErrorSpec(429, "rate_limit_error"),
    # 5xx
    "internal_error": ErrorSpec(500, "server_error"),
    "upstream_error": ErrorSpec(502, "server_error"),
    "upstream_unavailable": ErrorSpec(503, "server_error"),
    "model_unavailable": ErrorSpec(503, "server_error"),
    "server_busy": ErrorSpec(503, "server_error"),
    "sidecar_unavailable": ErrorSpec(503, "server_error"),
    "billing_unavailable": ErrorSpec(503, "server_error"),
    "signature_check_unavailable": ErrorSpec(503, "server_error"),
    "upstream_timeout": ErrorSpec(504, "server_error"),
}


class ErrorDetail(msgspec.Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None
    code: str


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


class ApiError(Exception):
    """Raise anywhere in a handler or service; rendered through the table."""

    def __init__(self, code: str, message: str, param: str | None = None, **headers: str) -> None:
        if code not in ERRORS:
            raise KeyError(f"error code {code!r} is not in the table")
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers

    @property
    def status(self) -> int:
        return ERRORS[self.code].status

    def body(self) -> ErrorBody:
        return error_body(self.code, self.message, self.param)


def refusal(exc: LedgerError) -> ApiError:
    """A domain refusal (the ledger's own exceptions, core/ledger/errors.py) as a boundary answers it:
    the refusal names its code, this table gives the status and the error type."""
    return ApiError(exc.code, exc.message, exc.param)


def error_body(code: str, message: str, param: str | None = None) -> ErrorBody:
    spec = ERRORS[code]
    return ErrorBody(ErrorDetail(message=message, type=spec.type, param=param, code=code))


def error_json(code: str, message: str, param: str | None = None) -> bytes:
    return msgspec.json.encode(error_body(code, message, param))


def as_dict(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return msgspec.to_builtins(error_body(code, message, param))  # type: ignore[no-any-return]
