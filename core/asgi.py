"""Small pieces shared by the bare-ASGI processes (the sidecar and the adapter)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["Receive", "Send", "serve_lifespan"]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def serve_lifespan(receive: Receive, send: Send, start: Callable[[], Awaitable[None]],
                         stop: Callable[[], Awaitable[None]]) -> None:
    """Run `start` on the server's startup and `stop` on its shutdown (after in-flight requests)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
