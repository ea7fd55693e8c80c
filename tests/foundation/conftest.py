"""Helpers for the foundation tests: keys and organizations made through the management API, a
private platform for tests that change routing (so the session platform's aliases stay as
shipped), and checks of OpenAI's error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.harness import Platform, eventually

__all__ = ["assert_error", "eventually", "make_key", "make_org"]


def assert_error(r: httpx.Response, status: int, code: str, *, mentions: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape with our code, and a request id stamped by the edge."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"]
    assert r.headers.get("x-request-id", "").startswith("req_"), dict(r.headers)
    if mentions is not None:
        assert mentions in err["message"], err["message"]
    return err  # type: ignore[no-any-return]


async def make_key(p: Platform, org_id: str | None = None, **scopes: Any) -> tuple[str, str]:
    """(key id, secret) for a new key in `org_id` (default: the bootstrap organization)."""
    assert p.boot is not None
    async with p.admin() as a:
        r = await a.post(f"/api/orgs/{org_id or p.boot.org_id}/keys", json=scopes)
    assert r.status_code == 201, r.text
    return r.json()["key"]["id"], r.json()["secret"]


async def make_org(p: Platform, name: str, **extra: Any) -> dict[str, Any]:
    async with p.admin() as a:
        r = await a.post("/api/orgs", json={"name": name, **extra})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
async def private() -> AsyncIterator[Platform]:
    """A platform of this module's own, for tests that re-point aliases or add backends."""
    p = Platform()
    try:
        await p.start()
        yield p
    finally:
        await p.stop()
