"""A request's `provider` preferences narrow or reorder its route plan, never widen it."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.inference.helpers import chat_body
from tests.inference.support import SimPlatform
from tests.routing.conftest import put_route


def _tried(r: httpx.Response) -> list[str]:
    return [a["target"] for a in json.loads(r.headers["x-route-attempts"])]


async def _ask(rp: SimPlatform, alias: str, provider: Any) -> httpx.Response:
    async with rp.platform.client() as c:
        return await c.post("/v1/chat/completions", json=chat_body("hi", alias, provider=provider))


async def test_provider_preferences(rp: SimPlatform) -> None:
    await put_route(rp, "prefs", targets=[{"model": "r/dead"}, {"model": "r/q3", "priority": 1},
                                          {"model": "r/q2", "priority": 2}])
    r = await _ask(rp, "prefs", {"ignore": ["dead"]})
    assert r.status_code == 200 and _tried(r) == ["r/q3"], (r.text, r.headers)
    r = await _ask(rp, "prefs", {"order": ["sim"], "allow_fallbacks": False})
    assert r.status_code == 200 and _tried(r)[0] in ("r/q2", "r/q3") and "r/dead" not in _tried(r)
    r = await _ask(rp, "prefs", {"sort": "price", "only": ["sim"]})
    assert r.status_code == 200 and _tried(r) == ["r/q2"], "the cheapest target first"
    r = await _ask(rp, "prefs", {"max_price": {"completion": 5}, "ignore": ["dead"]})
    assert r.status_code == 200 and _tried(r) == ["r/q2"], "r/q3 costs 10 USD per million output tokens"
    r = await _ask(rp, "prefs", {"sort": "latency", "only": ["sim"]})
    assert r.status_code == 200 and set(_tried(r)) <= {"r/q2", "r/q3"}
    for bad in ({"only": ["nowhere"]}, {"sort": "bogus"}, {"order": "sim"}):
        r = await _ask(rp, "prefs", bad)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "provider"
