"""Guards for the two doors of the control plane (see control_plane/app.py).

Both compare a shared secret in constant time and throttle failures per client address
(control_plane/auth_attempts.py): the admin token on `/api`, and the internal token the sidecar
adds to `/v1` requests, which a request reaching `/v1` here without passing the edge's check
(a path variant the edge did not route, a caller on the internal network) does not carry.
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from core.auth_attempts import FailureThrottle, same_secret
from core.contract import Header
from core.errors import ApiError
from core.ipnet import Network, canonical_address

__all__ = ["admin_guard", "client_address", "edge_guard"]


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The client as the edge saw it. Envoy overwrites `x-nx-client-ip` on every request (a client
    cannot set it through the edge), so the header is believed only from a peer inside
    `NX_TRUSTED_PROXIES` (the edge's own address); any other caller of this port is known by its
    socket address, whatever it sends."""
    peer = connection.client.host if connection.client else ""
    text = peer
    stated = connection.headers.get(Header.CLIENT_IP)
    if stated and _trusted(peer, connection.app.state.trusted_proxies):
        text = stated
    try:
        return str(canonical_address(text))
    except ValueError:
        return text[:64]


def _trusted(peer: str, proxies: tuple[Network, ...]) -> bool:
    try:
        address = canonical_address(peer)
    except ValueError:  # no socket address (an in-process caller): nothing to vouch for it
        return False
    return any(address.version == n.version and address in n for n in proxies)


def _checked(connection: ASGIConnection[Any, Any, Any, Any], throttle: FailureThrottle, ok: bool,
             error: ApiError) -> None:
    client = client_address(connection)
    wait = throttle.retry_after(client)
    if wait is not None:  # not compared while blocked: a right guess answers like a wrong one
        raise ApiError("rate_limit_exceeded", f"Too many failed authentication attempts from {client}; "
                       f"retry in {wait} s.", **{"retry-after": str(wait)})
    if not ok:
        throttle.failed(client)
        raise error
    throttle.succeeded(client)


def edge_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    state = connection.app.state
    token = connection.headers.get(Header.INTERNAL, "")
    ok = same_secret(token.encode(), state.secrets.internal_token.encode()) and bool(connection.headers.get(Header.ORG))
    # Only the edge may call /v1 here; anything else looks like a missing key.
    _checked(connection, state.edge_throttle, ok,
             ApiError("invalid_api_key", "Requests must come through the API edge."))


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    state = connection.app.state
    scheme, _sep, token = connection.headers.get("authorization", "").partition(" ")
    ok = scheme.lower() == "bearer" and same_secret(token.strip().encode(), state.secrets.admin_token.encode())
    _checked(connection, state.admin_throttle, ok,
             ApiError("invalid_api_key", "The management API needs 'Authorization: Bearer <admin token>'."))
