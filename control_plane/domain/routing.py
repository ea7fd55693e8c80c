"""Routing management: backends, models, price cards and aliases, as platform teams change them.

Every change runs in the caller's transaction together with an audit row and a `config_version`
bump, so a sidecar or worker that sees the new version also sees the whole change. After the
commit the caller runs `publish` (re-render Envoy's files, tell this node's sidecar at once);
other nodes follow the version within a second.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_plane.domain.catalog import BackendId, Positive
from control_plane.domain.keys import bump_config_version
from control_plane.domain.route_groups import RouteSet, RouteView, save_route, view
from control_plane.envoy_config import write_dynamic
from core.audit import audit
from core.db import now_ms, read_tx
from core.errors import ApiError
from core.notify import Notifier
from core.rows import columns, row_as
from core.settings import Settings

__all__ = [
    "BackendCreate",
    "BackendPatch",
    "BackendView",
    "RouteSet",
    "RouteView",
    "changed",
    "check_base_url",
    "create_backend",
    "delete_route",
    "disable_backend",
    "ensure_model",
    "get_backend",
    "list_backends",
    "list_routes",
    "publish",
    "set_route",
    "update_backend",
]

Protocol = Literal["openai", "openai_chat", "anthropic"]
EnvName = Annotated[str, msgspec.Meta(pattern=r"^[A-Z_][A-Z0-9_]{0,99}$")]
# The adapter sends the named variable's value to the backend as its credential; naming one of the
# platform's own secrets would hand it to whoever controls the backend URL.
_FORBIDDEN_ENV = re.compile(r"^(NX_.*|DATABASE_URL|REDIS_URL|PG.*|AWS_SECRET.*)$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")


class BackendCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: BackendId
    protocol: Protocol
    base_url: str
    api_key_env: EnvName | None = None
    timeout_ms: Positive = 300_000
    connect_timeout_ms: Positive = 5_000


class BackendPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    protocol: Protocol | None = None
    base_url: str | None = None
    api_key_env: EnvName | msgspec.UnsetType | None = msgspec.UNSET
    timeout_ms: Positive | None = None
    connect_timeout_ms: Positive | None = None
    enabled: bool | None = None


class BackendView(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["backend"] = "backend"
    protocol: str
    base_url: str
    api_key_env: str | None
    """The variable's name only; its value is read by the adapter and never stored or shown."""
    timeout_ms: int
    connect_timeout_ms: int
    enabled: bool
    created_at: int
    updated_at: int


def _invalid(param: str, message: str) -> ApiError:
    return ApiError("invalid_request_error", f"{param}: {message}", param=param)


def check_base_url(url: str, settings: Settings) -> str:
    """An http(s) URL with a host and no credentials, query or fragment, that is not one of the
    platform's own internal ports (the edge must not become a proxy to Envoy's admin or itself)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _invalid("base_url", f"not a valid URL ({exc})") from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not (_HOST.match(host) or _is_ip(host)):
        raise _invalid("base_url", "expected http(s)://host[:port][/path]")
    if parts.username or parts.password or parts.query or parts.fragment or len(url) > 2000:
        raise _invalid("base_url", "credentials, query strings and fragments are not allowed; "
                       "name the credential's environment variable in api_key_env")
    port = port or (443 if parts.scheme == "https" else 80)
    internal = {settings.edge_port, settings.operator_port, settings.envoy_admin_port, settings.control_plane_port,
                *settings.sidecar_ports, *settings.adapter_ports}
    if host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") and port in internal:  # noqa: S104
        raise _invalid("base_url", f"port {port} on this host belongs to the platform itself")
    return url.rstrip("/")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_env(name: str | None) -> None:
    if name is not None and _FORBIDDEN_ENV.match(name):
        raise _invalid("api_key_env", f"{name!r} is reserved for the platform's own secrets")


_BACKEND_COLS = columns(BackendView)


def _backend(r: Sequence[object]) -> BackendView:
    """A backend as stored (times in milliseconds) as shown (times in seconds)."""
    return row_as(BackendView, r, seconds=("created_at", "updated_at"))


async def changed(conn: AsyncConnection, actor: str, action: str, target: str, details: dict[str,
                                                                                             object]) -> None:
    await audit(conn, None, actor, action, target, details)
    await bump_config_version(conn)


async def list_backends(conn: AsyncConnection) -> list[BackendView]:
    rows = await conn.execute(text(f"SELECT {_BACKEND_COLS} FROM backends ORDER BY id"))
    return [_backend(r) for r in rows]


async def get_backend(conn: AsyncConnection, backend_id: str) -> BackendView:
    row = (await conn.execute(text(f"SELECT {_BACKEND_COLS} FROM backends WHERE id = :id"),
                              {"id": backend_id})).first()
    if row is None:
        raise ApiError("not_found", f"No backend {backend_id!r}")
    return _backend(row)


async def create_backend(conn: AsyncConnection, settings: Settings, data: BackendCreate,
                         actor: str) -> BackendView:
    url = check_base_url(data.base_url, settings)
    _check_env(data.api_key_env)
    if (await conn.execute(text("SELECT 1 FROM backends WHERE id = :id"), {"id": data.id})).first():
        raise ApiError("conflict", f"A backend {data.id!r} already exists", param="id")
    now = now_ms()
    await conn.execute(text(
        "INSERT INTO backends (id, protocol, base_url, api_key_env, timeout_ms, connect_timeout_ms,"
        " created_at, updated_at) VALUES (:id, :p, :u, :e, :t, :c, :now, :now)"),
        {"id": data.id, "p": data.protocol, "u": url, "e": data.api_key_env, "t": data.timeout_ms,
         "c": data.connect_timeout_ms, "now": now})
    await changed(conn, actor, "backend.created", data.id, {"base_url": url, "protocol": data.protocol})
    return await get_backend(conn, data.id)


async def update_backend(conn: AsyncConnection, settings: Settings, backend_id: str, patch: BackendPatch,
                         actor: str) -> BackendView:
    await get_backend(conn, backend_id)
    sets: dict[str, object] = {}
    if patch.base_url is not None:
        sets["base_url"] = check_base_url(patch.base_url, settings)
    if patch.api_key_env is not msgspec.UNSET:
        _check_env(patch.api_key_env)
        sets["api_key_env"] = patch.api_key_env
    for field in ("protocol", "timeout_ms", "connect_timeout_ms"):
        if getattr(patch, field) is not None:
            sets[field] = getattr(patch, field)
    if patch.enabled is False:
        await _refuse_if_serving(conn, backend_id)
    if patch.enabled is not None:
        sets["enabled"] = int(patch.enabled)
    if sets:
        assignments = ", ".join(f"{k} = :{k}" for k in sets)
        await conn.execute(text(f"UPDATE backends SET {assignments}, updated_at = :now"
                                " WHERE id = :id"), {**sets, "now": now_ms(), "id": backend_id})
        await changed(conn, actor, "backend.updated", backend_id, {"fields": sorted(sets)})
    return await get_backend(conn, backend_id)


async def _refuse_if_serving(conn: AsyncConnection, backend_id: str) -> None:
    # A disabled backend loses its Envoy cluster; active models on it would fail at request time.
    rows = await conn.execute(text("SELECT id FROM models WHERE backend_id = :b AND status = 'active'"
                                   " ORDER BY id"),
                              {"b": backend_id})
    active = [str(r[0]) for r in rows]
    if active:
        raise ApiError("conflict", f"Backend {backend_id!r} still serves active models {', '.join(active)}; "
                       "disable them or move them to another backend first")


async def disable_backend(conn: AsyncConnection, settings: Settings, backend_id: str,
                          actor: str) -> BackendView:
    return await update_backend(conn, settings, backend_id, BackendPatch(enabled=False), actor)


async def ensure_model(conn: AsyncConnection, model_id: str) -> None:
    if (await conn.execute(text("SELECT 1 FROM models WHERE id = :m"), {"m": model_id})).first() is None:
        raise ApiError("model_not_found", f"No model {model_id!r}", param="model")


class _RouteRow(msgspec.Struct, frozen=True):
    alias: str
    model_id: str
    policy: str
    updated_at: int


_ROUTE_COLS = columns(_RouteRow)


def _route(r: Sequence[object]) -> RouteView:
    row = row_as(_RouteRow, r)
    return view(row.alias, row.model_id, row.policy, row.updated_at)


async def list_routes(conn: AsyncConnection) -> list[RouteView]:
    return [_route(r) for r in await conn.execute(text(f"SELECT {_ROUTE_COLS} FROM routes ORDER BY alias"))]


async def set_route(conn: AsyncConnection, alias: str, data: RouteSet | str, actor: str) -> RouteView:
    """One model (`data` a model id, or a body with `model`) or a route group (`targets`)."""
    body = RouteSet(model=data) if isinstance(data, str) else data
    route, details = await save_route(conn, alias, body)
    await changed(conn, actor, "route.set", alias, details)
    return route


async def delete_route(conn: AsyncConnection, alias: str, actor: str) -> RouteView:
    row = (await conn.execute(text(f"SELECT {_ROUTE_COLS} FROM routes WHERE alias = :a"), {"a": alias})).first()
    if row is None:
        raise ApiError("not_found", f"No route {alias!r}")
    route = _route(row)
    await conn.execute(text("DELETE FROM routes WHERE alias = :a"), {"a": alias})
    await changed(conn, actor, "route.deleted", alias, {"model": route.model})
    return route


async def publish(settings: Settings, engine: AsyncEngine, notifier: Notifier) -> None:
    """After the commit: Envoy's files for this node, and the sidecar's snapshot, right now."""
    async with read_tx(engine) as conn:
        await write_dynamic(settings, conn)
    await notifier.invalidate(config=True)
