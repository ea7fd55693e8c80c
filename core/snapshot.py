"""The sidecar's in-memory view of keys, models, aliases and prices.

Models, aliases, backends and prices are loaded whole and reloaded when `config_version` moves
(polled every second, or at once when the control plane calls /internal/invalidate). Keys are
looked up by hash on first use and cached for `key_cache_ttl_seconds`; revocation on this node
evicts at once, other nodes within the TTL (Redis fan-out shortens that when configured).
"""

from __future__ import annotations

import fnmatch
import time
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.ipnet import Network, canonical_address, canonical_network

__all__ = ["KeyCache", "KeyRecord", "ModelRecord", "Snapshot", "load_key", "load_snapshot"]

IPNetwork = Network


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Rate limits of one scope; None means no limit at that scope."""

    rpm: int | None = None
    tpm: int | None = None
    concurrent: int | None = None


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    org_id: str
    projects: frozenset[str]
    model_patterns: tuple[str, ...]
    endpoints: frozenset[str]
    networks: tuple[IPNetwork, ...]
    monthly_budget_nanos: int | None
    expires_at_ms: int | None
    disabled: bool
    revoked: bool
    limits: Limits = Limits()
    signing_secret_enc: str | None = None

    def allows_model(self, *names: str) -> bool:
        if "*" in self.model_patterns:  # the common allow-all: fnmatch's `*` matches every name
            return True
        return any(fnmatch.fnmatchcase(n, p) for p in self.model_patterns for n in names)

    def allows_ip(self, ip: str) -> bool:
        if not self.networks:
            return True
        try:
            addr = canonical_address(ip)  # ::ffff:10.0.0.1 is 10.0.0.1 for an allow-list
        except ValueError:
            return False
        return any(addr.version == n.version and addr in n for n in self.networks)


class PriceRecord(msgspec.Struct, frozen=True):
    version: int
    input_nanos_per_mtok: int
    cached_input_nanos_per_mtok: int
    output_nanos_per_mtok: int


class ModelRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    backend_id: str
    upstream_name: str
    kind: str
    context_window: int
    max_output_tokens: int
    capabilities: dict[str, Any]
    status: str
    price: PriceRecord | None


class BackendRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    protocol: str
    base_url: str
    api_key_env: str | None
    timeout_ms: int
    connect_timeout_ms: int = 5_000


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    models: dict[str, ModelRecord]
    aliases: dict[str, str]
    backends: dict[str, BackendRecord]
    org_projects: dict[str, frozenset[str]]
    default_project: dict[str, str]
    project_limits: dict[str, Limits]
    org_limits: dict[str, Limits]

    def resolve(self, name: str) -> ModelRecord | None:
        model = self.models.get(self.aliases.get(name, name))
        # A model without a price card is never served: it does not exist for clients.
        if model is None or model.price is None or model.status == "disabled":
            return None
        return model


async def current_version(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT version FROM config_version WHERE id = 1"))).first()
    return int(row[0]) if row else 0


async def load_snapshot(engine: AsyncEngine) -> Snapshot:
    async with engine.connect() as conn:
        version = int((await conn.execute(text("SELECT version FROM config_version WHERE id = 1"))).scalar_one())
        now = int(time.time() * 1000)
        prices: dict[str, PriceRecord] = {}
        # Latest version already in effect wins; rows arrive ordered so the last write is newest.
        for r in await conn.execute(text(
                "SELECT model_id, version, input_nanos_per_mtok, cached_input_nanos_per_mtok,"
                " output_nanos_per_mtok FROM price_cards WHERE effective_at <= :now"
                " ORDER BY model_id, effective_at, version"), {"now": now}):
            prices[str(r[0])] = PriceRecord(int(r[1]), int(r[2]), int(r[3]), int(r[4]))
        models = {
            str(r[0]): ModelRecord(
                id=str(r[0]), backend_id=str(r[1]), upstream_name=str(r[2]), kind=str(r[3]),
                context_window=int(r[4]), max_output_tokens=int(r[5]),
                capabilities=msgspec.json.decode(str(r[6])), status=str(r[7]), price=prices.get(str(r[0])))
            for r in await conn.execute(text(
                "SELECT id, backend_id, upstream_name, kind, context_window, max_output_tokens,"
                " capabilities, status FROM models"))
        }
        aliases = {str(r[0]): str(r[1]) for r in await conn.execute(text("SELECT alias, model_id FROM routes"))}
        backends = {
            str(r[0]): BackendRecord(id=str(r[0]), protocol=str(r[1]), base_url=str(r[2]),
                                     api_key_env=r[3], timeout_ms=int(r[4]), connect_timeout_ms=int(r[5]))
            for r in await conn.execute(text(
                "SELECT id, protocol, base_url, api_key_env, timeout_ms, connect_timeout_ms FROM backends"
                " WHERE enabled = 1"))
        }
        org_projects: dict[str, set[str]] = {}
        default_project: dict[str, str] = {}
        project_limits: dict[str, Limits] = {}
        for r in await conn.execute(text(
                "SELECT org_id, id, rate_limits FROM projects WHERE archived = 0 ORDER BY created_at, id")):
            org_projects.setdefault(str(r[0]), set()).add(str(r[1]))
            default_project.setdefault(str(r[0]), str(r[1]))
            project_limits[str(r[1])] = msgspec.json.decode(str(r[2]), type=Limits)
        org_limits = {
            str(r[0]): Limits(rpm=r[1], tpm=r[2], concurrent=r[3])
            for r in await conn.execute(text(
                "SELECT o.id, p.rpm, p.tpm, p.concurrent FROM organizations o JOIN plans p ON p.id = o.plan"))
        }
    return Snapshot(version=version, models=models, aliases=aliases, backends=backends,
                    org_projects={k: frozenset(v) for k, v in org_projects.items()},
                    default_project=default_project, project_limits=project_limits, org_limits=org_limits)


async def load_key(engine: AsyncEngine, key_hash: str) -> KeyRecord | None:
    async with engine.connect() as conn:
        r = (await conn.execute(text(
            "SELECT id, org_id, projects, models, endpoints, ip_ranges, monthly_budget_nanos, expires_at,"
            " disabled, revoked_at, rate_limits, signing_secret_enc FROM api_keys WHERE key_hash = :h"),
            {"h": key_hash})).first()
    if r is None:
        return None
    return KeyRecord(
        id=str(r[0]), org_id=str(r[1]), projects=frozenset(msgspec.json.decode(str(r[2]))),
        model_patterns=tuple(msgspec.json.decode(str(r[3]))),
        endpoints=frozenset(msgspec.json.decode(str(r[4]))),
        networks=tuple(canonical_network(c) for c in msgspec.json.decode(str(r[5]))),
        monthly_budget_nanos=None if r[6] is None else int(r[6]),
        expires_at_ms=None if r[7] is None else int(r[7]),
        disabled=bool(r[8]), revoked=r[9] is not None,
        limits=msgspec.json.decode(str(r[10]), type=Limits), signing_secret_enc=r[11])


class KeyCache:
    """hash -> (record or None, expiry). Bounded so a key-scanning client cannot grow it forever."""

    def __init__(self, ttl_seconds: float, max_entries: int = 100_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[str, tuple[KeyRecord | None, float]] = {}

    def get(self, key_hash: str) -> tuple[bool, KeyRecord | None]:
        hit = self._entries.get(key_hash)
        if hit is None or hit[1] < time.monotonic():
            return False, None
        return True, hit[0]

    def put(self, key_hash: str, record: KeyRecord | None) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key_hash] = (record, time.monotonic() + self.ttl)

    def evict_keys(self, key_ids: set[str]) -> None:
        for h, (rec, _) in list(self._entries.items()):
            if rec is not None and rec.id in key_ids:
                del self._entries[h]

    def clear(self) -> None:
        self._entries.clear()
