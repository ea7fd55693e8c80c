"""Both rate-limit stores obey the same contract (the Redis one against a real Redis)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest

from proxy_plugins.sidecar.ratelimit import WINDOW_MS, Bucket, LimitStore, MemoryStore
from proxy_plugins.sidecar.ratelimit_redis import RedisStore

REDIS_URL = os.environ.get("NX_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LimitStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    s = RedisStore(REDIS_URL)
    yield s
    await s.close()


def bucket(kind: str = "requests", limit: int = 5, weight: int = 1, scope: str = "key") -> Bucket:
    return Bucket(key=f"t:{secrets.token_hex(6)}:{kind}", kind=kind, scope=scope, limit=limit,  # type: ignore[arg-type]
                  weight=weight)


async def test_admitted_never_exceeds_limit(store: LimitStore) -> None:
    b = bucket(limit=5)
    results = [await store.acquire(f"r{i}", [b]) for i in range(20)]
    assert sum(v.allowed for v in results) == 5
    denial = results[-1].denial
    assert denial is not None and denial.bucket == b and 1 <= denial.retry_after_ms <= WINDOW_MS


async def test_refused_by_one_limit_takes_none_of_the_others(store: LimitStore) -> None:
    wide, narrow = bucket(limit=10, scope="organization"), bucket(limit=1, scope="key")
    assert (await store.acquire("a", [wide, narrow])).allowed
    second = await store.acquire("b", [wide, narrow])
    assert second.denial is not None and second.denial.bucket == narrow
    # The wide bucket still has 9 left: the refused request took nothing from it.
    third = await store.acquire("c", [wide])
    assert third.allowed and third.usage[0].remaining == 8


async def test_concurrency_slot_released(store: LimitStore) -> None:
    c = bucket(kind="concurrent", limit=2)
    assert (await store.acquire("a", [c])).allowed
    assert (await store.acquire("b", [c])).allowed
    assert not (await store.acquire("c", [c])).allowed
    await store.release("a", [c])
    assert (await store.acquire("d", [c])).allowed


async def test_token_estimate_corrected_on_settle(store: LimitStore) -> None:
    t = bucket(kind="tokens", limit=100, weight=80)
    assert (await store.acquire("a", [t])).allowed
    t30 = Bucket(key=t.key, kind="tokens", scope="key", limit=100, weight=30)
    assert not (await store.acquire("b", [t30])).allowed
    await store.adjust("a", t, 50)  # the request used fewer tokens than its hold estimated
    assert (await store.acquire("c", [t30])).allowed


async def test_request_heavier_than_limit_is_refused_with_full_window(store: LimitStore) -> None:
    t = bucket(kind="tokens", limit=100, weight=101)
    verdict = await store.acquire("a", [t])
    assert verdict.denial is not None and verdict.denial.retry_after_ms == WINDOW_MS


async def test_no_burst_at_window_boundary() -> None:
    now = [1_000_000.0]
    store = MemoryStore(clock=lambda: now[0])
    b = bucket(limit=5)
    now[0] += 59.9
    assert all([(await store.acquire(f"a{i}", [b])).allowed for i in range(5)])
    now[0] += 0.2  # a fixed window would have reset here
    assert not any([(await store.acquire(f"b{i}", [b])).allowed for i in range(5)])
    now[0] += 59.9  # the first five are now a full window old
    assert (await store.acquire("c", [b])).allowed


async def test_a_renewal_extends_a_running_slot_and_never_takes_a_released_one_back(store: LimitStore) -> None:
    b = bucket("concurrent", limit=1)
    assert (await store.acquire("r1", [b])).allowed
    await store.renew([("r1", [b])])
    assert not (await store.acquire("r2", [b])).allowed  # still held: renewed, not released
    await store.finish([("r1", [b], None)])
    await store.renew([("r1", [b])])  # a late renewal of a request that ended
    assert (await store.acquire("r3", [b])).allowed
