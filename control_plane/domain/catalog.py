"""The model catalog: backends, models, prices and aliases declared in a TOML file.

At start the file is validated (a bad file stops the process naming the field) and synced into the
database: backends and models are upserted, a changed price becomes a new price-card version, and
aliases are created only when absent so that an operator's re-pointing through the API survives a
restart. Route groups (`[[routes]]`: an alias with weighted, prioritised targets and fallbacks,
core/routeplan.py) likewise: created when absent, then managed by the API and CLI, live. Models
and routes created through the API are left alone.
"""

from __future__ import annotations

import re
import tomllib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from control_plane.domain.keys import bump_config_version
from core.db import now_ms
from core.ids import new_id
from core.routeplan import RoutePolicy, Strategy, Target, check_graph
from core.settings import Settings

__all__ = ["Capabilities", "Catalog", "CatalogError", "Price", "load_catalog", "sync_catalog"]

ModelId = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._:-]*$")]
Alias = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")]
BackendId = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
Nanos = Annotated[int, msgspec.Meta(ge=0, le=10**15)]
Positive = Annotated[int, msgspec.Meta(gt=0)]


class Capabilities(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    streaming: bool = True
    tools: bool = False
    json_schema: bool = False
    json_object: bool = False
    vision: bool = False
    embeddings: bool = False
    dimensions: int | None = None
    """Embedding width; `custom_dimensions` says whether a request may ask for fewer."""
    custom_dimensions: bool = False


class Price(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Integer nano-dollars per million tokens (1 USD = 10^9)."""

    input_nanos_per_mtok: Nanos
    cached_input_nanos_per_mtok: Nanos
    output_nanos_per_mtok: Nanos
    effective_at: date


class BackendDecl(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: BackendId
    protocol: Literal["openai", "openai_chat", "anthropic"]
    base_url: str
    api_key_env: str | None = None
    timeout_ms: Positive = 300_000
    connect_timeout_ms: Positive = 5_000


class ModelDecl(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    id: ModelId
    display_name: str
    backend: BackendId
    upstream_name: str
    kind: Literal["text", "embedding"]
    context_window: Positive
    max_output_tokens: Annotated[int, msgspec.Meta(ge=0)]
    description: str = ""
    capabilities: Capabilities = msgspec.field(default_factory=Capabilities)
    price: Price | None = None
    aliases: list[Alias] = msgspec.field(default_factory=list)


class RouteDecl(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    alias: Alias
    targets: list[Target]
    strategy: Strategy = "weighted"
    fallbacks: list[str] = msgspec.field(default_factory=list)
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=16)] = 3
    max_added_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 10_000
    context_fallback: bool = False


class Catalog(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    backends: list[BackendDecl]
    models: list[ModelDecl] = msgspec.field(default_factory=list)
    routes: list[RouteDecl] = msgspec.field(default_factory=list)


class CatalogError(Exception):
    pass


def load_catalog(path: str | Path, settings: Settings) -> Catalog:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"catalog {path}: file not found (setting NX_CATALOG_PATH)") from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"catalog {path}: {exc}") from None
    try:
        catalog = msgspec.convert(raw, Catalog)
    except msgspec.ValidationError as exc:
        raise CatalogError(f"catalog {path}: {_field_path(str(exc), raw)}") from None
    backends = {b.id for b in catalog.backends}
    seen: set[str] = set()
    for i, model in enumerate(catalog.models):
        if model.backend not in backends:
            raise CatalogError(f"catalog {path}: models[{i}].backend: unknown backend {model.backend!r}")
        for name in (model.id, *model.aliases):
            if name in seen:
                raise CatalogError(f"catalog {path}: models[{i}]: name {name!r} is declared twice")
            seen.add(name)
    _check_routes(path, catalog, seen)
    for b in catalog.backends:
        b.base_url = b.base_url.format(local_models_port=settings.local_models_port)
        if not re.match(r"^https?://[^/\s]+", b.base_url):
            raise CatalogError(f"catalog {path}: backends.{b.id}.base_url: not an http(s) URL")
    return catalog


def _check_routes(path: Path, catalog: Catalog, names: set[str]) -> None:
    models = {m.id for m in catalog.models}
    policies: dict[str, RoutePolicy] = {}
    for i, r in enumerate(catalog.routes):
        if r.alias in names:
            raise CatalogError(f"catalog {path}: routes[{i}].alias: name {r.alias!r} is declared twice")
        names.add(r.alias)
        for j, t in enumerate(r.targets):
            if t.model not in models:
                raise CatalogError(f"catalog {path}: routes[{i}].targets[{j}].model: unknown model {t.model!r}")
        policies[r.alias] = RoutePolicy(strategy=r.strategy, targets=tuple(r.targets), fallbacks=tuple(r.fallbacks),
                                        max_attempts=r.max_attempts, max_added_ms=r.max_added_ms,
                                        context_fallback=r.context_fallback)
    for i, r in enumerate(catalog.routes):
        for name in r.fallbacks:
            if name not in names:
                raise CatalogError(f"catalog {path}: routes[{i}].fallbacks: unknown name {name!r}")
        cyclic = check_graph(r.alias, policies[r.alias], policies)
        if cyclic is not None:
            raise CatalogError(f"catalog {path}: routes[{i}].fallbacks: {cyclic}")


def _field_path(message: str, raw: object) -> str:
    """Turn msgspec's `$.models[0].kind` into a readable `models[0] (id 'x').kind` hint."""
    match = re.search(r"`\$\.models\[(\d+)\]", message)
    if match and isinstance(raw, dict):
        models = raw.get("models") or []
        idx = int(match.group(1))
        if idx < len(models) and isinstance(models[idx], dict) and "id" in models[idx]:
            return f"{message} (model {models[idx]['id']!r})"
    return message


async def sync_catalog(conn: AsyncConnection, catalog: Catalog) -> None:
    now = now_ms()
    for b in catalog.backends:
        params = {"id": b.id, "protocol": b.protocol, "url": b.base_url, "env": b.api_key_env,
                  "timeout": b.timeout_ms, "ctimeout": b.connect_timeout_ms, "now": now}
        await conn.execute(text(
            "INSERT INTO backends (id, protocol, base_url, api_key_env, timeout_ms, connect_timeout_ms,"
            " created_at, updated_at) VALUES (:id, :protocol, :url, :env, :timeout, :ctimeout, :now, :now)"
            " ON CONFLICT (id) DO UPDATE SET protocol = excluded.protocol, base_url = excluded.base_url,"
            " api_key_env = excluded.api_key_env, timeout_ms = excluded.timeout_ms,"
            " connect_timeout_ms = excluded.connect_timeout_ms, updated_at = excluded.updated_at"), params)
    for m in catalog.models:
        caps = msgspec.json.encode(m.capabilities).decode()
        await conn.execute(text(
            "INSERT INTO models (id, display_name, description, backend_id, upstream_name, kind,"
            " context_window, max_output_tokens, capabilities, created_at, updated_at) VALUES"
            " (:id, :dn, :desc, :b, :up, :kind, :cw, :mo, :caps, :now, :now) ON CONFLICT (id) DO UPDATE"
            " SET display_name = excluded.display_name, description = excluded.description,"
            " backend_id = excluded.backend_id, upstream_name = excluded.upstream_name,"
            " kind = excluded.kind, context_window = excluded.context_window,"
            " max_output_tokens = excluded.max_output_tokens, capabilities = excluded.capabilities,"
            " updated_at = excluded.updated_at"),
            {"id": m.id, "dn": m.display_name, "desc": m.description, "b": m.backend,
             "up": m.upstream_name, "kind": m.kind, "cw": m.context_window, "mo": m.max_output_tokens,
             "caps": caps, "now": now})
        if m.price is not None:
            await add_price_if_changed(conn, m.id, m.price)
        for alias in m.aliases:
            await conn.execute(text(
                "INSERT INTO routes (alias, model_id, created_at, updated_at) VALUES (:a, :m, :now, :now)"
                " ON CONFLICT (alias) DO NOTHING"), {"a": alias, "m": m.id, "now": now})
    # Imported here: route_groups takes the Alias type from this module.
    from control_plane.domain.route_groups import RouteSet, save_route
    for r in catalog.routes:
        if (await conn.execute(text("SELECT 1 FROM routes WHERE alias = :a"), {"a": r.alias})).first() is None:
            await save_route(conn, r.alias, RouteSet(
                targets=r.targets, strategy=r.strategy, fallbacks=r.fallbacks, max_attempts=r.max_attempts,
                max_added_ms=r.max_added_ms, context_fallback=r.context_fallback))
    await bump_config_version(conn)


async def add_price_if_changed(conn: AsyncConnection, model_id: str, price: Price) -> int:
    """Append a price-card version unless the latest one already has these figures; return it."""
    effective = int(datetime(price.effective_at.year, price.effective_at.month, price.effective_at.day,
                             tzinfo=UTC).timestamp() * 1000)
    latest = (await conn.execute(text(
        "SELECT version, input_nanos_per_mtok, cached_input_nanos_per_mtok, output_nanos_per_mtok,"
        " effective_at FROM price_cards WHERE model_id = :m ORDER BY version DESC LIMIT 1"),
        {"m": model_id})).first()
    figures = (price.input_nanos_per_mtok, price.cached_input_nanos_per_mtok,
               price.output_nanos_per_mtok, effective)
    if latest is not None and tuple(int(x) for x in latest[1:]) == figures:
        return int(latest[0])
    version = 1 if latest is None else int(latest[0]) + 1
    await conn.execute(text(
        "INSERT INTO price_cards (id, model_id, version, input_nanos_per_mtok,"
        " cached_input_nanos_per_mtok, output_nanos_per_mtok, effective_at, created_at) VALUES"
        " (:id, :m, :v, :i, :c, :o, :e, :now)"),
        {"id": new_id("price"), "m": model_id, "v": version, "i": figures[0], "c": figures[1],
         "o": figures[2], "e": effective, "now": now_ms()})
    return version
