"""The attempt loop of a routed request: try its targets in turn until one answers.

Only requests the sidecar gave a plan (`x-nx-plan`: a route group, or a `models` array) come
here; the hold already covers the priciest target of the plan. Rules (issue 16):
- A retry happens only before the first byte reaches the client. The handler runs once per
  attempt with the context pointed at the target (model, backend, price card); once it has
  started its answer (a stream's head, a JSON answer), whatever happens is that answer's: a
  stream cut midway ends with its error event and is billed for what it produced (meter.py), and
  is never replayed on another target.
- Retriable: connect errors, timeouts, a cut before any byte, 429, 408, 5xx except 501, and the
  backend refusing the platform's credentials or account (401/402/403: that target is
  misconfigured, another may not be). Deterministic refusals (400, 404, 409, 413, 422, 501,
  content refusals) end the request with that error and call nothing else; a context-length
  refusal moves on to a target with a larger window when the route says `context_fallback`.
- Each target (a backend and upstream model) at most once per request, at most `max_attempts`
  backend calls, and no new attempt once `max_added_ms` has passed since the first call began.
- Between attempts a jittered back-off (full jitter, 25 ms doubling to 400 ms, within the
  budget). A 429's Retry-After ejects its target for that long (health.py), so no request calls
  it again before then; it is not waited for, since the next attempt goes elsewhere.
- Failed attempts cost nothing: the charge is the answering target's price for its usage, once
  (commit.py passes its card to settlement). Every attempt is recorded on the context, for
  `x-route-attempts`, the final stream event and the usage record.
- A target the handler refuses before any backend call (a capability the model lacks) is skipped
  without counting as an attempt; if no target could take the request, that refusal is answered.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time

from core.errors import ApiError
from core.routeplan import MAX_TARGETS, RoutePolicy
from core.snapshot import Snapshot
from proxy_plugins.adapter.backends import UpstreamFailure
from proxy_plugins.adapter.balance import Balancer, weights_of
from proxy_plugins.adapter.context import Attempt, RequestContext
from proxy_plugins.adapter.exchange import Exchange
from proxy_plugins.adapter.services import Handler, Services

__all__ = ["Router", "retriable"]

log = logging.getLogger("nx.adapter.attempts")

BACKOFF_BASE_S = 0.025
BACKOFF_CAP_S = 0.4
_UPSTREAM_CODES = frozenset({"upstream_error", "upstream_timeout", "upstream_unavailable"})
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})


def retriable(exc: ApiError) -> bool:
    """True when another target may well answer where this one failed."""
    if isinstance(exc, UpstreamFailure) and exc.upstream is not None:
        status = exc.upstream
        return status in (401, 402, 403, 408, 429) or (status >= 500 and status != 501)
    return exc.code in _UPSTREAM_CODES  # transport failures, malformed answers, stalls before any byte


def _context_length(exc: ApiError) -> bool:
    return isinstance(exc, UpstreamFailure) and (
        exc.upstream_code in _CONTEXT_CODES or "context length" in exc.message.lower()
        or "context_length" in exc.message.lower())


def _retry_after_s(exc: ApiError) -> float | None:
    ms, s = exc.headers.get("retry-after-ms"), exc.headers.get("retry-after")
    try:
        return float(ms) / 1000 if ms else float(s) if s else None
    except ValueError:
        return None  # an HTTP date: the ordinary ejection applies


class Router:
    def __init__(self, balancer: Balancer, rng: random.Random | None = None) -> None:
        self.balancer = balancer
        self.health = balancer.health
        self.rng = rng or random.Random()

    async def run(self, handler: Handler, svc: Services, ctx: RequestContext, body: bytes,
                  exchange: Exchange, snap: Snapshot) -> None:
        assert ctx.plan is not None
        policy = snap.routes.get(ctx.requested_model) or RoutePolicy(
            max_attempts=min(MAX_TARGETS, sum(len(t) for t in ctx.plan)))
        weights, strategies = weights_of(ctx.requested_model, snap.routes)
        if ctx.plan_by_latency:
            strategies = dict.fromkeys(strategies.keys() | {m for t in ctx.plan for m in t}, "latency")
        order = self.balancer.order(ctx.plan, strategies, weights, time.time())
        primary_id, primary_price = ctx.model.id, ctx.hold_price
        began = time.monotonic()
        calls = 0
        refused: ApiError | None = None  # the first target-local refusal (no backend was called)
        last: ApiError | None = None
        smallest_window = 0
        for model_id in order:
            model = snap.usable(model_id)
            backend = snap.backends.get(model.backend_id) if model is not None else None
            if model is None or backend is None or model.status == "unavailable":
                continue
            if calls >= policy.max_attempts or (calls and (time.monotonic() - began) * 1000 > policy.max_added_ms):
                break
            if smallest_window and model.context_window <= smallest_window:
                continue  # a context-length refusal: only a larger window can help
            if calls:
                await self._backoff(calls, policy, began)
            ctx.model, ctx.backend = model, backend
            ctx.hold_price = primary_price if model.id == primary_id else model.price
            self.balancer.started(model.id)
            start = time.monotonic()
            exchange.on_start = functools.partial(self._answered, ctx, model.id, backend.id, start)
            try:
                await handler(svc, ctx, body, exchange)
            except ApiError as exc:
                ms = int((time.monotonic() - start) * 1000)
                upstream = isinstance(exc, UpstreamFailure) or exc.code in _UPSTREAM_CODES
                if exchange.started:
                    # The answer began: never replayed; the handler ended it in its own protocol.
                    ctx.attempts[-1].status, ctx.attempts[-1].error = exc.status, exc.code
                    if upstream:
                        self.health.failure(model.id, exc.code)
                    raise
                if not upstream:
                    refused = refused or exc
                    continue
                calls += 1
                last = exc
                self._attempt(ctx, model.id, backend.id, exc.status, ms, exc.code)
                if retriable(exc):
                    self.health.failure(model.id, exc.code, _retry_after_s(exc))
                    continue
                if policy.context_fallback and _context_length(exc):
                    smallest_window = model.context_window
                    continue
                raise  # deterministic: the same request fails the same way anywhere
            else:
                if exchange.started and ctx.attempts[-1].status < 500:
                    self.health.success(model.id)
                    self.balancer.measured(model.id, ctx.attempts[-1].ms)
                return
            finally:
                exchange.on_start = None
                self.balancer.ended(model.id)
        if last is not None:
            raise last
        raise refused or ApiError("model_unavailable", f"No target of '{ctx.requested_model}' is available "
                                  "right now.", "model")

    @staticmethod
    def _answered(ctx: RequestContext, target: str, backend: str, start: float, status: int) -> None:
        """The answer's first byte: its attempt is recorded before any header is rendered."""
        Router._attempt(ctx, target, backend, status, int((time.monotonic() - start) * 1000), None)

    @staticmethod
    def _attempt(ctx: RequestContext, target: str, backend: str, status: int, ms: int, error: str | None) -> None:
        ctx.attempts.append(Attempt(target=target, backend=backend, status=status, ms=ms, error=error))

    async def _backoff(self, calls: int, policy: RoutePolicy, began: float) -> None:
        left = policy.max_added_ms / 1000 - (time.monotonic() - began)
        delay = self.rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (calls - 1)))
        if left > 0 and delay > 0:
            await asyncio.sleep(min(delay, left))
