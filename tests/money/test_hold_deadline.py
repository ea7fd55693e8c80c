"""The sidecar's hold step under overload: a hold whose check Envoy has already given up on is
refused instead of placed, so no money stays reserved for a request that was never run."""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.errors import ApiError
from core.snapshot import KeyRecord, ModelRecord, PriceRecord
from proxy_plugins.sidecar.estimate import Estimate
from proxy_plugins.sidecar.hold import Holds, _Item
from tests.money.conftest import MODEL, PRICE, Tenant
from tests.money.helpers import grant


def item(t: Tenant, request_id: str, place_by: float) -> _Item:
    key = KeyRecord(id=t.key_id, org_id=t.org_id, projects=frozenset(), model_patterns=("*",),
                    endpoints=frozenset(), networks=(), monthly_budget_nanos=None, expires_at_ms=None,
                    disabled=False, revoked=False)
    model = ModelRecord(id=MODEL, backend_id="be_test", upstream_name=MODEL, kind="text", context_window=8192,
                        max_output_tokens=4096, capabilities={}, status="active", price=PriceRecord(1, *PRICE))
    return _Item(key=key, project=t.project_id, model=model, endpoint="chat", request_id=request_id,
                 client_ip="", est=Estimate(100, 100), expires_at_ms=int(time.time() * 1000) + 60_000,
                 place_by=place_by)


async def held(engine: AsyncEngine, request_id: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT COUNT(*) FROM ledger_holds WHERE request_id = :r"),
                                       {"r": request_id})).scalar_one())


async def test_a_hold_past_its_deadline_is_refused_not_placed(engine: AsyncEngine, tenant: Tenant) -> None:
    await grant(engine, tenant, 10**12)
    holds = Holds(engine)
    try:
        late = await holds.commits.submit(item(tenant, "req_late", time.monotonic() - 0.01))
    except ApiError as exc:
        assert exc.code == "server_busy" and exc.status == 503
    else:
        raise AssertionError(f"a late hold was placed: {late}")
    assert await held(engine, "req_late") == 0
    on_time = await holds.commits.submit(item(tenant, "req_on_time", time.monotonic() + 10))
    assert on_time.startswith("1,") and await held(engine, "req_on_time") == 1
    await holds.close()


def test_the_deadline_is_inside_envoys_timeout() -> None:
    from control_plane.envoy_config import render_bootstrap
    from core.settings import load_settings
    from proxy_plugins.sidecar.hold import PLACE_WITHIN_S

    authz = next(f for f in render_bootstrap(load_settings({}))["static_resources"]["listeners"][0]
                 ["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
                 if f["name"] == "envoy.filters.http.ext_authz")
    timeout = float(authz["typed_config"]["http_service"]["server_uri"]["timeout"].rstrip("s"))
    assert PLACE_WITHIN_S < timeout


