"""Rate limits enforced at the edge: headers on every response, 429 with retry-after, events."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy import text

from core.db import make_engine
from tests.harness import Platform


async def new_key(platform: Platform, **scopes: Any) -> str:
    assert platform.boot is not None
    async with platform.admin() as admin:
        r = await admin.post(f"/api/orgs/{platform.boot.org_id}/keys", json=scopes)
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


async def test_requests_per_minute_and_headers(platform: Platform) -> None:
    key = await new_key(platform, name="rpm", rate_limits={"rpm": 3})
    async with platform.client(key) as c:
        ok = [await c.get("/v1/models") for _ in range(3)]
        refused = await c.get("/v1/models")
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in ok] == ["2", "1", "0"]
    assert all(r.headers["x-ratelimit-limit-requests"] == "3" for r in ok)
    assert refused.status_code == 429
    err = refused.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and "requests per minute" in err["message"]
    assert "key limit 3" in err["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert int(refused.headers["retry-after-ms"]) >= 1
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-request-id"].startswith("req_")


async def test_rate_limited_event_at_most_once_per_minute(platform: Platform) -> None:
    key = await new_key(platform, name="rpm-event", rate_limits={"rpm": 1})
    async with platform.client(key) as c:
        statuses = [(await c.get("/v1/models")).status_code for _ in range(6)]
    assert statuses == [200, 429, 429, 429, 429, 429]
    engine = make_engine(platform.s)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT payload FROM events WHERE type = 'request.rate_limited'"))).all()
    finally:
        await engine.dispose()
    mine = [msgspec.json.decode(r[0]) for r in rows]
    async with platform.admin() as admin:
        assert platform.boot is not None
        keys = (await admin.get(f"/api/orgs/{platform.boot.org_id}/keys")).json()["data"]
    key_id = next(k["id"] for k in keys if k["name"] == "rpm-event")
    events = [e for e in mine if e["data"]["key_id"] == key_id]
    assert len(events) == 1
    assert events[0]["data"]["limit"] == "requests" and events[0]["data"]["limit_value"] == 1
