"""Guards for the two doors of the control plane (see control_plane/app.py)."""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from core.errors import ApiError

__all__ = ["admin_guard", "edge_guard"]


def edge_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    token = connection.headers.get("x-nx-internal", "")
    if not hmac.compare_digest(token.encode(), connection.app.state.secrets.internal_token.encode()) or \
            not connection.headers.get("x-nx-org"):
        # Only the edge may call /v1 here; anything else looks like a missing key.
        raise ApiError("invalid_api_key", "Requests must come through the API edge.")


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), connection.app.state.secrets.admin_token.encode()):
        raise ApiError("invalid_api_key", "The management API needs 'Authorization: Bearer <admin token>'.")
