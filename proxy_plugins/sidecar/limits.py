"""Which rate-limit buckets a request touches, and the `x-ratelimit-*` headers it gets back.

Every request is counted at three scopes, each with its own limits: the key (its own settings),
the project (project settings) and the organization (its plan's defaults). A scope without a
configured limit is not counted. Headers report the most specific scope that has a limit of that
kind, in that precedence: key, then project, then organization.
"""

from __future__ import annotations

from core.snapshot import KeyRecord, Limits, Snapshot
from proxy_plugins.sidecar.ratelimit import Bucket, Denial, Usage, retry_after_seconds

__all__ = ["buckets_for", "denial_message", "limit_headers", "token_buckets"]

_KIND_FIELD = {"requests": "rpm", "tokens": "tpm", "concurrent": "concurrent"}
_LABEL = {"requests": "requests per minute", "tokens": "tokens per minute",
          "concurrent": "concurrent requests"}


_Plan = tuple[KeyRecord, tuple[Bucket, ...], tuple[int, ...]]
_plans: dict[tuple[str, str, bool], _Plan] = {}
"""(key id, project, inference) -> the buckets a request of that key and project touches, built once
per key record (a reloaded record: rebuilt) and per snapshot (a new one empties the cache), with the
positions of the tokens buckets, whose weight is each request's own. Bounded like the key cache."""
_plans_snapshot: list[Snapshot | None] = [None]
_MAX_PLANS = 100_000


def _plan(key: KeyRecord, project: str, snap: Snapshot, inference: bool) -> _Plan:
    scopes: list[tuple[str, str, Limits | None]] = [
        ("key", key.id, key.limits),
        ("project", project, snap.project_limits.get(project)),
        ("organization", key.org_id, snap.org_limits.get(key.org_id)),
    ]
    # Concurrency slots and tokens are only for inference: other /v1 calls are short and tokenless.
    kinds = ("requests", "tokens", "concurrent") if inference else ("requests",)
    out: list[Bucket] = []
    for scope, ident, limits in scopes:
        if limits is None:
            continue
        for kind in kinds:
            limit = getattr(limits, _KIND_FIELD[kind])
            if limit is not None:
                out.append(Bucket(key=f"rl:{scope}:{ident}:{kind}", kind=kind, scope=scope,  # type: ignore[arg-type]
                                  limit=int(limit), weight=1))
    return key, tuple(out), tuple(i for i, b in enumerate(out) if b.kind == "tokens")


def buckets_for(key: KeyRecord, project: str, snap: Snapshot, *, inference: bool,
                tokens: int) -> list[Bucket]:
    if _plans_snapshot[0] is not snap or len(_plans) >= _MAX_PLANS:
        _plans.clear()
        _plans_snapshot[0] = snap
    cache_key = (key.id, project, inference)
    plan = _plans.get(cache_key)
    if plan is None or plan[0] is not key:
        plan = _plans[cache_key] = _plan(key, project, snap, inference)
    out = list(plan[1])
    for i in plan[2]:
        b = out[i]
        out[i] = Bucket(key=b.key, kind=b.kind, scope=b.scope, limit=b.limit, weight=tokens)
    return out


def token_buckets(buckets: list[Bucket]) -> list[Bucket]:
    return [b for b in buckets if b.kind == "tokens"]


def _duration(ms: int) -> str:
    """OpenAI's reset format: `1s`, `6m0s`, `250ms`."""
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.3g}s"
    return f"{int(seconds // 60)}m{int(seconds % 60)}s"


def limit_headers(usage: list[Usage]) -> list[tuple[str, str]]:
    requests = tokens = None
    for u in usage:  # usage is in precedence order: the first of each kind is the one reported
        kind = u.bucket.kind
        if kind == "requests":
            if requests is None:
                requests = u
        elif kind == "tokens" and tokens is None:
            tokens = u
    headers: list[tuple[str, str]] = []
    if requests is not None:
        headers += [("x-ratelimit-limit-requests", str(requests.bucket.limit)),
                    ("x-ratelimit-remaining-requests", str(requests.remaining)),
                    ("x-ratelimit-reset-requests", _duration(requests.reset_ms))]
    if tokens is not None:
        headers += [("x-ratelimit-limit-tokens", str(tokens.bucket.limit)),
                    ("x-ratelimit-remaining-tokens", str(tokens.remaining)),
                    ("x-ratelimit-reset-tokens", _duration(tokens.reset_ms))]
    return headers


def denial_message(denial: Denial) -> str:
    b = denial.bucket
    if b.kind == "tokens" and b.weight > b.limit:
        return (f"Request too large: it may use up to {b.weight} tokens, over the {b.scope}'s limit of "
                f"{b.limit} {_LABEL[b.kind]}. Lower max_output_tokens or the input size.")
    return (f"Rate limit reached for {_LABEL[b.kind]} ({b.scope} limit {b.limit}). "
            f"Please try again in {retry_after_seconds(denial.retry_after_ms)}s.")
