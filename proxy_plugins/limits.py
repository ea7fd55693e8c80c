"""Which rate-limit buckets a request touches, and the `x-ratelimit-*` headers it gets back.

Every request is counted at three scopes, each with its own limits: the key (its own settings),
the project (project settings) and the organization (its plan's defaults). A scope without a
configured limit is not counted. Headers report the most specific scope that has a limit of that
kind, in that precedence: key, then project, then organization.
"""

from __future__ import annotations

from proxy_plugins.ratelimit import Bucket, Denial, Usage, retry_after_seconds
from proxy_plugins.snapshot import KeyRecord, Limits, Snapshot

__all__ = ["buckets_for", "denial_message", "limit_headers", "token_buckets"]

_KIND_FIELD = {"requests": "rpm", "tokens": "tpm", "concurrent": "concurrent"}
_LABEL = {"requests": "requests per minute", "tokens": "tokens per minute",
          "concurrent": "concurrent requests"}


def buckets_for(key: KeyRecord, project: str, snap: Snapshot, *, inference: bool,
                tokens: int) -> list[Bucket]:
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
                weight = tokens if kind == "tokens" else 1
                out.append(Bucket(key=f"rl:{scope}:{ident}:{kind}", kind=kind, scope=scope,  # type: ignore[arg-type]
                                  limit=int(limit), weight=weight))
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
    headers: list[tuple[str, str]] = []
    for kind, suffix in (("requests", "requests"), ("tokens", "tokens")):
        first = next((u for u in usage if u.bucket.kind == kind), None)  # usage is in precedence order
        if first is not None:
            headers += [(f"x-ratelimit-limit-{suffix}", str(first.bucket.limit)),
                        (f"x-ratelimit-remaining-{suffix}", str(first.remaining)),
                        (f"x-ratelimit-reset-{suffix}", _duration(first.reset_ms))]
    return headers


def denial_message(denial: Denial) -> str:
    b = denial.bucket
    if b.kind == "tokens" and b.weight > b.limit:
        return (f"Request too large: it may use up to {b.weight} tokens, over the {b.scope}'s limit of "
                f"{b.limit} {_LABEL[b.kind]}. Lower max_output_tokens or the input size.")
    return (f"Rate limit reached for {_LABEL[b.kind]} ({b.scope} limit {b.limit}). "
            f"Please try again in {retry_after_seconds(denial.retry_after_ms)}s.")
