"""The check's fast paths give the same answers as the straightforward code they replaced.

One body decode serves the model and the estimate; bucket lists are built once per key record and
snapshot; a batch of finish reports is one store call. Each is compared here with what the
separate steps give.
"""

from __future__ import annotations

from typing import Any, cast

import msgspec
import pytest

from core.snapshot import KeyRecord, Limits, ModelRecord, PriceRecord, Snapshot
from proxy_plugins.sidecar.authz import Checker, Decision
from proxy_plugins.sidecar.estimate import Estimate, estimate, estimate_from
from proxy_plugins.sidecar.limits import buckets_for
from proxy_plugins.sidecar.ratelimit import Bucket, MemoryStore

MODEL = ModelRecord(id="m/chat", backend_id="b", upstream_name="u", kind="text", context_window=8192,
                    max_output_tokens=1024, capabilities={}, status="active", price=PriceRecord(1, 10, 5, 20))


NO_LIMITS = Limits()
ORG_LIMITS = Limits(rpm=10, tpm=1000, concurrent=2)


def _key(limits: Limits = NO_LIMITS, patterns: tuple[str, ...] = ("*",)) -> KeyRecord:
    return KeyRecord(id="key_1", org_id="org_1", projects=frozenset(), model_patterns=patterns,
                     endpoints=frozenset({"chat"}), networks=(), monthly_budget_nanos=None, expires_at_ms=None,
                     disabled=False, revoked=False, limits=limits)


def _snap(org: Limits = ORG_LIMITS) -> Snapshot:
    return Snapshot(version=1, models={MODEL.id: MODEL}, aliases={}, backends={}, org_projects={"org_1": frozenset()},
                    default_project={}, project_limits={"proj_1": Limits(rpm=5)}, org_limits={"org_1": org})


def _checker() -> Checker:
    none = cast(Any, None)
    return Checker("pepper", "token", none, _snap, none, none, none, none, none)


BODIES = [
    b'{"model":"m/chat","max_tokens":50,"messages":[]}',
    b'{"model":"m/chat","max_tokens":"many"}',  # a mistyped cap: the estimate takes its defaults
    b'{"model":"m/chat","previous_response_id":"resp_1","max_output_tokens":7}',
    b'{"model":"m/chat","max_completion_tokens":-3}',
    b'{"model":"m/chat","previous_response_id":5}',
]


@pytest.mark.parametrize("body", BODIES)
def test_one_decode_estimates_as_the_separate_decode(body: bytes) -> None:
    resolved = _checker()._model(_key(), _snap(), body, "chat")
    assert not isinstance(resolved, Decision)
    model, fields, name = resolved
    assert model is MODEL and name == "m/chat"
    assert estimate_from(fields, len(body), model) == estimate(body, model)


@pytest.mark.parametrize(("body", "code"), [(b'{"model":5}', "invalid_request_error"),
                                            (b'{"model":5,"max_tokens":"x"}', "invalid_request_error"),
                                            (b'[1]', "invalid_request_error"), (b"{", "invalid_json"),
                                            (b"", "missing_required_parameter")])
def test_bad_bodies_are_refused_as_before(body: bytes, code: str) -> None:
    resolved = _checker()._model(_key(), _snap(), body, "chat")
    assert isinstance(resolved, Decision)
    assert msgspec.json.decode(resolved.body)["error"]["code"] == code


def test_embedding_estimate_ignores_the_context_window() -> None:
    embed = msgspec.structs.replace(MODEL, kind="embedding", context_window=16)
    body = b'{"model":"m/chat","input":"' + b"x" * 100 + b'"}'
    assert estimate(body, embed) == Estimate(len(body) + 256, 0)


def test_bucket_plans_follow_key_snapshot_and_tokens() -> None:
    key, snap = _key(Limits(rpm=3)), _snap()
    first = buckets_for(key, "proj_1", snap, inference=True, tokens=40)
    assert [(b.key, b.kind, b.limit, b.weight) for b in first] == [
        ("rl:key:key_1:requests", "requests", 3, 1), ("rl:project:proj_1:requests", "requests", 5, 1),
        ("rl:organization:org_1:requests", "requests", 10, 1), ("rl:organization:org_1:tokens", "tokens", 1000, 40),
        ("rl:organization:org_1:concurrent", "concurrent", 2, 1)]
    assert buckets_for(key, "proj_1", snap, inference=True, tokens=7)[3].weight == 7
    assert [b.kind for b in buckets_for(key, "proj_1", snap, inference=False, tokens=0)] == ["requests"] * 3
    # A reloaded key record or a new snapshot is seen at once.
    assert buckets_for(_key(Limits(rpm=9)), "proj_1", snap, inference=True, tokens=1)[0].limit == 9
    assert len(buckets_for(key, "proj_1", _snap(Limits()), inference=True, tokens=1)) == 2


async def test_finish_batch_equals_release_then_adjust() -> None:
    clock = [1000.0]
    one, batch = MemoryStore(lambda: clock[0]), MemoryStore(lambda: clock[0])
    buckets = [Bucket("rl:t", "tokens", "key", 1000, 300), Bucket("rl:c", "concurrent", "key", 5, 1),
               Bucket("rl:r", "requests", "key", 10, 1)]
    for store in (one, batch):
        for rid in ("a", "b", "c"):
            assert (await store.acquire(rid, buckets)).allowed
    for rid, actual in (("a", 12), ("b", None)):
        await one.release(rid, buckets)
        if actual is not None:
            await one.adjust(rid, buckets[0], actual)
    await batch.finish([("a", buckets, 12), ("b", buckets, None), ("gone", buckets, 1)])
    after_one, after_batch = await one.acquire("d", buckets), await batch.acquire("d", buckets)
    assert after_one == after_batch
    assert [u.remaining for u in after_batch.usage] == [1000 - 12 - 300 - 300 - 300, 5 - 2, 10 - 4]


def test_allow_all_pattern_matches_like_fnmatch() -> None:
    assert _key().allows_model("anything/at-all", "m/chat")
    assert not _key(patterns=("m/*",)).allows_model("other/x")
    assert _key(patterns=("m/*",)).allows_model("m/chat")
