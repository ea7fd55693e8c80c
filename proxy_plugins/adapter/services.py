"""What every handler can use: settings, the database, the backends and the current snapshot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from core.settings import Settings
from core.snapshot import Snapshot
from proxy_plugins.adapter.backends import Backends
from proxy_plugins.adapter.context import RequestContext
from proxy_plugins.adapter.exchange import Exchange

__all__ = ["Handler", "Services"]


@dataclass(eq=False)
class Services:
    settings: Settings
    engine: AsyncEngine
    backends: Backends
    snapshot: Callable[[], Snapshot]


Handler = Callable[[Services, RequestContext, bytes, Exchange], Awaitable[None]]
"""`async def handle(svc, ctx, body, exchange) -> None`: one endpoint (see the package docstring)."""
