"""Read a Responses SSE stream as raw events (and the `: x-nx` metadata comment) over httpx."""

from __future__ import annotations

import json
from typing import Any

import httpx


async def read_stream(
    client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
) -> tuple[httpx.Response, list[dict[str, Any]], dict[str, str] | None]:
    """(response, events, metadata from the trailing `: x-nx {...}` comment)."""
    events: list[dict[str, Any]] = []
    meta: dict[str, str] | None = None
    async with client.stream(method, url, **kwargs) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return resp, events, None
        buf = ""
        async for chunk in resp.aiter_text():
            buf += chunk
            while "\n\n" in buf:
                block, buf = buf.split("\n\n", 1)
                kind, data = None, []
                for line in block.split("\n"):
                    if line.startswith(": x-nx "):
                        meta = json.loads(line[len(": x-nx ") :])
                    elif line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                if data:
                    event = json.loads("\n".join(data))
                    assert kind == event["type"], f"event line {kind!r} != type {event['type']!r}"
                    events.append(event)
    return resp, events, meta
